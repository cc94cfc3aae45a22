//! The connection table: every open upstream connection of the targets, and per-host totals
//! of connections that came and went.

use std::{
    collections::{hash_map::Entry, BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

pub use super::conn::{ConnKey, Origin, UpstreamConn};
use super::site::{SiteRules, SiteTable};
use super::stream::StreamTable;
use super::{
    classify, tcp_state, ConnName, GoLayer, Input, KernelConn, KernelEvent, KernelEventKind,
    KernelStats, RecvQ, Sample, SocketSample, Target,
};

/// Totals per upstream host over the whole session, including connections already gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTotals {
    pub provider: Option<String>,
    pub remotes: BTreeSet<SocketAddr>,
    pub connections_total: u64,
    pub closed_unread_total: u64,
}

/// The table and everything else the model keeps between inputs.
#[derive(Debug, Default)]
pub struct ConnTable {
    conns: HashMap<ConnKey, UpstreamConn>,
    /// Keyed by host name (or address, for connections not named).
    hosts: BTreeMap<String, HostTotals>,
    /// Fallback names per address, from resolving the catalogue's hostnames.
    address_names: HashMap<IpAddr, ConnName>,
    /// Names of sockets not (yet) in the table, for when they arrive: by address, with the
    /// connect time of the socket they belong to. The kernel sends no event at connect, so a
    /// connection's name comes before it: its Close or the next sample's map read brings it.
    early_names: HashMap<u64, (u64, ConnName)>,
    /// When the last sample read the kernel map: names of sockets opened before it that
    /// neither it nor a Close claimed are dropped at the next sample.
    last_sample_ns: u64,
    /// The kernel hook used for each role.
    hooks: BTreeMap<String, String>,
    targets: Vec<Target>,
    stats: KernelStats,
    /// Sockets closed by TCP, with their connect time: late events and map entries of them
    /// must not resurrect the connection (a newer connect time is a new socket at the
    /// address).
    closed_sockets: HashMap<u64, u64>,
    /// Per address, the last older socket a newer one displaced there (`refresh_from_kernel`):
    /// its connect time and the host it counts under. Its events still queued then count it
    /// once, judge its end under that host, and touch nothing else.
    superseded: HashMap<u64, (u64, String, Option<String>)>,
    /// Targets that exited. The kernel keeps closing their sockets after they are gone
    /// (FIN_WAIT*, up to tcp_fin_timeout), so map entries and events of theirs still come;
    /// those must neither bring their connections back nor count them again.
    exited_pids: HashSet<u32>,
    /// Connected sockets of targets that no kernel record explains, by inode, with the
    /// number of consecutive scans that showed them: adopted as pre-existing at the second,
    /// so a traced socket closing between the socket dump and the map read is never adopted.
    /// By inode, not addresses: under churn the same addresses come back on other short-lived
    /// sockets, which two scans in a row would otherwise take for one long-lived socket.
    unexplained: HashMap<u64, u8>,
    /// The first scan's look at what was open before the tracer (see `FirstLook`).
    first_look: FirstLook,
    streams: StreamTable,
    go_layers: BTreeMap<u32, GoLayer>,
    /// Which code obtained each connection's last response and each HTTP/2 response.
    sites: SiteTable,
}

/// The first scan adopts the sockets no kernel record explains at once, as open before the
/// tracer (later scans want a second look), so the first snapshot shows them. One of them may
/// be a traced socket that closed after the scan saw it and before that sample read the
/// kernel map, its Close (the only event of a short connection) still to come: counted twice
/// then. So until the next sample (a drain later, when every Close from before that map read
/// has come), Closes are noted by addresses, and the adoptions they explain are undone.
#[derive(Debug)]
enum FirstLook {
    /// No scan yet: the addresses of the traced sockets closed so far.
    Before(HashSet<(SocketAddr, SocketAddr)>),
    /// The first scan's adoptions (inode, addresses), and the addresses closed so far.
    Adopted(
        Vec<(u64, (SocketAddr, SocketAddr))>,
        HashSet<(SocketAddr, SocketAddr)>,
    ),
    Done,
}

impl Default for FirstLook {
    fn default() -> Self {
        Self::Before(HashSet::new())
    }
}

impl FirstLook {
    fn note_closed(&mut self, local: SocketAddr, remote: SocketAddr) {
        if let Self::Before(closed) | Self::Adopted(_, closed) = self {
            // Bounded for a replay whose recording has no scan (live, the first comes
            // within a second): the review then sees less, nothing worse.
            if closed.len() >= 65_536 {
                closed.clear();
            }
            closed.insert((local, remote));
        }
    }
}

/// How long the call site of an HTTP/2 response whose stream no sample has shown is kept.
const RESPONSE_SITES_KEPT_NS: u64 = 10_000_000_000;

impl ConnTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, input: Input) {
        match input {
            Input::Kernel(event) => self.apply_event(&event),
            Input::Sample(sample) => self.apply_sample(&sample),
            Input::Targets(targets) => self.apply_targets(targets),
            Input::Named {
                sk,
                opened_ns,
                name,
            } => self.apply_name(sk, opened_ns, name),
            Input::AddressNames(names) => self.apply_address_names(names),
            Input::Hooks(hooks) => self.hooks = hooks.into_iter().collect(),
            Input::GoLayer(layer) => {
                self.go_layers.insert(layer.pid, layer);
            }
            Input::SiteStack(stack) => self.sites.apply_stack(stack),
            Input::Site(event) => {
                if !self.exited_pids.contains(&event.pid) {
                    self.sites.apply_event(&event);
                }
            }
            Input::SiteSeen(event) => {
                if !self.exited_pids.contains(&event.pid) {
                    self.sites.apply_seen(&event);
                }
            }
            Input::SiteRequests(counted) => self.sites.apply_requests(&counted),
            Input::SiteResponses(responses) => self.sites.apply_responses(&responses),
        }
    }

    /// The wrappers a call site looks through (`--site-skip`).
    pub fn set_site_rules(&mut self, rules: SiteRules) {
        self.sites.set_rules(rules);
    }

    /// Which code obtained the targets' responses (from the Go-aware probes).
    pub fn sites(&self) -> &SiteTable {
        &self.sites
    }

    /// The targets' open HTTP/2 streams (from the Go-aware probes).
    pub fn streams(&self) -> &StreamTable {
        &self.streams
    }

    /// What the Go-aware layer made of each target's binary.
    pub fn go_layers(&self) -> impl Iterator<Item = &GoLayer> {
        self.go_layers.values()
    }

    pub fn conns(&self) -> impl Iterator<Item = &UpstreamConn> {
        self.conns.values()
    }

    pub fn hosts(&self) -> &BTreeMap<String, HostTotals> {
        &self.hosts
    }

    pub fn hooks(&self) -> &BTreeMap<String, String> {
        &self.hooks
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn stats(&self) -> KernelStats {
        self.stats
    }

    /// The host and provider a connection counts under (see `UpstreamConn::host`).
    fn label(&self, name: Option<&ConnName>, remote: SocketAddr) -> (String, Option<String>) {
        match name.or_else(|| self.address_names.get(&remote.ip())) {
            Some(n) => (n.host.clone(), n.provider.clone()),
            None => (address_label(remote.ip()), None),
        }
    }

    /// Counts on the totals of `host` (made when it is new), noting `remote` and `provider`.
    fn count_host(
        &mut self,
        host: &str,
        provider: Option<String>,
        remote: SocketAddr,
        count: impl FnOnce(&mut HostTotals),
    ) {
        let update = |totals: &mut HostTotals| {
            if provider.is_some() {
                totals.provider = provider;
            }
            totals.remotes.insert(remote);
            count(totals);
        };
        // A host already counted is found without allocating its key.
        match self.hosts.get_mut(host) {
            Some(totals) => update(totals),
            None => update(self.hosts.entry(host.to_owned()).or_default()),
        }
    }

    fn track_new(&mut self, key: ConnKey, mut conn: UpstreamConn) {
        if let ConnKey::Socket(sk) = key {
            if let Some(name) = self.take_early_name(sk, conn.opened_ns) {
                conn.name = Some(name);
            }
        }
        (conn.host, conn.provider) = self.label(conn.name.as_ref(), conn.remote);
        self.count_host(&conn.host, conn.provider.clone(), conn.remote, |t| {
            t.connections_total += 1
        });
        self.conns.insert(key, conn);
    }

    /// Takes one connection off `host`'s count (it counts elsewhere, or was never one).
    fn uncount(&mut self, host: &str) {
        if let Some(totals) = self.hosts.get_mut(host) {
            totals.connections_total = totals.connections_total.saturating_sub(1);
            if totals.connections_total == 0 && totals.closed_unread_total == 0 {
                self.hosts.remove(host);
            }
        }
    }

    /// Moves a connection (and its count) to the host its best name now says.
    fn relabel(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        let (host, provider) = self.label(conn.name.as_ref(), conn.remote);
        if host == conn.host {
            return;
        }
        let (old, remote) = (conn.host.clone(), conn.remote);
        self.uncount(&old);
        self.count_host(&host, provider.clone(), remote, |t| {
            t.connections_total += 1
        });
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.host = host;
            conn.provider = provider;
        }
    }

    fn apply_name(&mut self, sk: u64, opened_ns: u64, name: ConnName) {
        let key = ConnKey::Socket(sk);
        let conn = match self.conns.get_mut(&key) {
            Some(conn) if conn.opened_ns == opened_ns => conn,
            // An older socket's name, queued when a sample showed the newer socket at the
            // address: not this one's.
            Some(conn) if conn.opened_ns > opened_ns => return,
            // Its Connect event was lost (or, at a held address, the held socket's Close):
            // the connection comes with the next sample, which takes this name (or drops it,
            // see `apply_sample`).
            _ => {
                if self.early_names.len() >= 65_536 {
                    self.early_names.clear();
                }
                self.early_names.insert(sk, (opened_ns, name));
                return;
            }
        };
        if conn.name.as_ref().is_some_and(|n| n.source <= name.source) {
            return;
        }
        conn.name = Some(name);
        self.relabel(key);
    }

    /// Takes the name waiting at address `sk` for the socket connected at `opened_ns`. A name
    /// of a newer socket there stays for it (its record is still to come); an older one's goes.
    fn take_early_name(&mut self, sk: u64, opened_ns: u64) -> Option<ConnName> {
        match self.early_names.remove(&sk) {
            Some((opened, name)) if opened == opened_ns => Some(name),
            Some(waiting) if waiting.0 > opened_ns => {
                self.early_names.insert(sk, waiting);
                None
            }
            _ => None,
        }
    }

    /// Drops the name waiting at address `sk` when the connect time of its socket passes
    /// `belongs_to_older`.
    fn drop_early_name(&mut self, sk: u64, belongs_to_older: impl Fn(u64) -> bool) {
        if let Entry::Occupied(waiting) = self.early_names.entry(sk) {
            if belongs_to_older(waiting.get().0) {
                waiting.remove();
            }
        }
    }

    fn apply_address_names(&mut self, names: Vec<(IpAddr, ConnName)>) {
        self.address_names = names.into_iter().collect();
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.relabel(key);
        }
    }

    fn apply_event(&mut self, event: &KernelEvent) {
        let key = ConnKey::Socket(event.sk);
        match event.kind {
            KernelEventKind::Connect | KernelEventKind::State => {
                if event.kind == KernelEventKind::Connect {
                    // One socket's events are ordered, so a Connect at a closed socket's
                    // address is a new socket that reuses the memory, and a name waiting for
                    // that address from before belonged to an older one.
                    self.closed_sockets.remove(&event.sk);
                    self.drop_early_name(event.sk, |opened| opened < event.conn.connect_ns);
                }
                if self.closed_sockets.contains_key(&event.sk)
                    || self.exited_pids.contains(&event.conn.pid)
                {
                    return;
                }
                self.refresh_from_kernel(event.sk, &event.conn);
            }
            KernelEventKind::Close => {
                self.first_look
                    .note_closed(event.conn.local, event.conn.remote);
                // Its name came before it (see `early_names`).
                let name = self.take_early_name(event.sk, event.conn.connect_ns);
                let remote = event.conn.remote;
                let held = self.conns.get(&key).map(|c| c.opened_ns);
                if held.is_some_and(|opened| opened > event.conn.connect_ns) {
                    // An older socket's Close, queued when a sample showed the newer socket
                    // at the address: the newer one stays open.
                    let (host, provider) = self.count_superseded(event.sk, &event.conn);
                    self.superseded.remove(&event.sk);
                    if classify::closed_unread(ending_of(event)) {
                        self.count_host(&host, provider, remote, |t| t.closed_unread_total += 1);
                    }
                    return;
                }
                // A held socket older than this Close's lost its own Close: it is gone, and
                // this one opened and closed between two looks.
                let held = self
                    .conns
                    .remove(&key)
                    .filter(|c| c.opened_ns == event.conn.connect_ns);
                let (host, provider) = match held {
                    Some(conn) => (conn.host, conn.provider),
                    None => {
                        let (host, provider) = self.label(name.as_ref(), remote);
                        if !self.exited_pids.contains(&event.conn.pid) {
                            // Opened and closed between two looks, or its Connect event was lost.
                            self.count_host(&host, provider.clone(), remote, |t| {
                                t.connections_total += 1
                            });
                        }
                        (host, provider)
                    }
                };
                // Kernel addresses are reused by new sockets; remember only recent closes.
                if self.closed_sockets.len() > 65_536 {
                    self.closed_sockets.clear();
                }
                self.closed_sockets.insert(event.sk, event.conn.connect_ns);
                if classify::closed_unread(ending_of(event)) {
                    self.count_host(&host, provider, remote, |t| t.closed_unread_total += 1);
                }
            }
        }
    }

    /// Applies the kernel's record of socket `sk`. A record with a later connect time than the
    /// connection held at that address is a new socket reusing the memory of one whose Close
    /// event was lost or is still queued: the old one is gone (judged only if that Close comes)
    /// and nothing of it (name, receive queue) carries over.
    fn refresh_from_kernel(&mut self, sk: u64, conn: &KernelConn) {
        let key = ConnKey::Socket(sk);
        match self.conns.get_mut(&key) {
            Some(existing) if existing.opened_ns == conn.connect_ns => {
                existing.update_from_kernel(conn)
            }
            // An older socket's record, still queued when a sample showed the newer socket
            // at the address (connect times only grow): it must not replace that one.
            Some(existing) if existing.opened_ns > conn.connect_ns => {
                self.count_superseded(sk, conn);
            }
            Some(existing) => {
                // It was counted when it came; its Close may still be queued.
                let held = (
                    existing.opened_ns,
                    existing.host.clone(),
                    existing.provider.clone(),
                );
                self.note_superseded(sk, held);
                self.conns.remove(&key);
                self.track_new(key, UpstreamConn::from_kernel(conn));
            }
            None => self.track_new(key, UpstreamConn::from_kernel(conn)),
        }
    }

    /// Remembers the counted socket displaced at `sk`: (connect time, host, provider).
    fn note_superseded(&mut self, sk: u64, held: (u64, String, Option<String>)) {
        if self.superseded.len() > 65_536 {
            self.superseded.clear();
        }
        self.superseded.insert(sk, held);
    }

    /// Counts the older socket `conn` at `sk` (a newer one holds the address) unless it is
    /// counted already; returns the host and provider it counts under.
    fn count_superseded(&mut self, sk: u64, conn: &KernelConn) -> (String, Option<String>) {
        if let Some((opened, host, provider)) = self.superseded.get(&sk) {
            if *opened == conn.connect_ns {
                return (host.clone(), provider.clone());
            }
        }
        let (host, provider) = self.label(None, conn.remote);
        if !self.exited_pids.contains(&conn.pid) {
            self.count_host(&host, provider.clone(), conn.remote, |t| {
                t.connections_total += 1
            });
        }
        let held = (conn.connect_ns, host.clone(), provider.clone());
        self.note_superseded(sk, held);
        (host, provider)
    }

    fn apply_sample(&mut self, sample: &Sample) {
        self.stats = sample.stats;
        self.streams.apply_sample(&sample.streams, sample.now_ns);
        // HTTP/2 responses join the streams open now (their call sites are kept while the
        // stream stays open); one no open stream has is kept for a while after it came (a
        // response's stream shows in the samples after it).
        let open: HashSet<(u32, u64)> = self
            .streams
            .open()
            .filter(|s| s.response != 0)
            .map(|s| (s.pid, s.response))
            .collect();
        self.sites
            .match_responses(&open, sample.now_ns.saturating_sub(RESPONSE_SITES_KEPT_NS));

        // Kernel-tracked sockets: refresh, adopt ones whose Connect event is still queued or
        // was lost, and forget ones the kernel dropped (their Close event was lost).
        let mut in_kernel = HashSet::with_capacity(sample.kernel.len());
        for (sk, conn) in &sample.kernel {
            if self.exited_pids.contains(&conn.pid) {
                continue;
            }
            // The entry of a socket whose Close came while the map was read (the kernel sends
            // the Close, then deletes the entry) is not a new connection.
            if self
                .closed_sockets
                .get(sk)
                .is_some_and(|closed| conn.connect_ns <= *closed)
            {
                continue;
            }
            in_kernel.insert(*sk);
            // A live entry at a recently closed address is a new socket.
            self.closed_sockets.remove(sk);
            self.refresh_from_kernel(*sk, conn);
        }
        // A name that came before its connection was for one adopted just now, for one whose
        // Close is still queued (closed after the map was read), or for a socket gone
        // unseen: names older than the previous sample had their chance and go, so none
        // waits for the next socket that reuses the address.
        let previous = std::mem::replace(&mut self.last_sample_ns, sample.now_ns);
        self.early_names
            .retain(|_, (opened_ns, _)| *opened_ns >= previous);
        self.conns.retain(|key, conn| match key {
            ConnKey::Socket(sk) if !in_kernel.contains(sk) => {
                conn.missing_samples += 1;
                conn.missing_samples < 2
            }
            _ => true,
        });

        self.review_first_look();
        if let Some(sockets) = &sample.sockets {
            // Dated from when the read of the socket table began, not from this sample: a
            // socket read late in a long scan may have been read by the process, and sampled
            // empty by the kernel, after the scan saw bytes waiting in it.
            let scanned_ns = sample
                .scanned_ns
                .map_or(sample.now_ns, |at| at.min(sample.now_ns));
            self.apply_socket_scan(sockets, scanned_ns);
        }
    }

    /// Undoes the first scan's adoptions of traced sockets: those a Close or a kernel record
    /// has explained since (see `FirstLook`).
    fn review_first_look(&mut self) {
        let (adopted, closed) = match std::mem::replace(&mut self.first_look, FirstLook::Done) {
            FirstLook::Adopted(adopted, closed) => (adopted, closed),
            other => {
                self.first_look = other;
                return;
            }
        };
        let traced = self.traced_by_addresses();
        for (inode, tuple) in adopted {
            if !closed.contains(&tuple) && !traced.contains_key(&tuple) {
                continue;
            }
            if let Some(conn) = self.conns.remove(&ConnKey::Inode(inode)) {
                self.uncount(&conn.host);
            }
        }
    }

    /// The kernel-tracked connections, by their addresses.
    fn traced_by_addresses(&self) -> HashMap<(SocketAddr, SocketAddr), ConnKey> {
        self.conns
            .iter()
            .filter(|(key, _)| matches!(key, ConnKey::Socket(_)))
            .map(|(key, c)| ((c.local, c.remote), *key))
            .collect()
    }

    /// Takes socket `s` as open before the tracer (or its process's targeting, or with its
    /// kernel record lost): judged from socket samples from now on.
    fn adopt_pre_existing(&mut self, s: &SocketSample, now_ns: u64) {
        let comm = self
            .targets
            .iter()
            .find(|t| t.pid == s.pid)
            .map(|t| std::sync::Arc::from(t.comm.as_str()))
            .unwrap_or_default();
        let conn = UpstreamConn::from_socket(s, now_ns, comm);
        self.track_new(ConnKey::Inode(s.inode), conn);
    }

    /// The targets' sockets as the kernel's socket table saw them at `now_ns`: the receive
    /// queues of tracked connections, pre-existing connections, and sockets no kernel record
    /// explains. Counts of "samples in a row" below count scans, not samples.
    fn apply_socket_scan(&mut self, sockets: &[SocketSample], now_ns: u64) {
        // The first scan's: the addresses closed before it, and what it adopts.
        let closed_before = match std::mem::replace(&mut self.first_look, FirstLook::Done) {
            FirstLook::Before(closed) => Some(closed),
            other => {
                self.first_look = other;
                None
            }
        };
        let mut first_look = Vec::new();
        let listening: HashSet<(u32, u16)> = sockets
            .iter()
            .filter(|s| s.state == tcp_state::LISTEN)
            .map(|s| (s.pid, s.local.port()))
            .collect();
        let by_tuple = self.traced_by_addresses();
        let mut seen_inodes = HashSet::new();
        let mut unexplained = HashMap::new();
        for s in sockets {
            if s.state == tcp_state::LISTEN || listening.contains(&(s.pid, s.local.port())) {
                // A listener, or a connection accepted from one: inbound, not upstream.
                continue;
            }
            seen_inodes.insert(s.inode);
            // A pre-existing connection is this very socket (same inode); a traced one is
            // matched by its addresses.
            let inode_key = ConnKey::Inode(s.inode);
            let key = if self.conns.contains_key(&inode_key) {
                Some(&inode_key)
            } else {
                by_tuple.get(&(s.local, s.remote))
            };
            match key {
                Some(key) => {
                    if let Some(conn) = self.conns.get_mut(key) {
                        let previous = conn.recv_q;
                        conn.set_recv_q(s.recv_q, now_ns);
                        if conn.fd.is_none() {
                            conn.fd = Some(s.fd);
                        }
                        if conn.origin == Origin::PreExisting {
                            note_read_from_samples(conn, previous, now_ns);
                            update_pre_existing(conn, s, now_ns);
                        }
                    }
                }
                None if is_connected(s.state) => {
                    // Open before we attached (or before its process became a target, or its
                    // kernel record was lost): judged from socket samples from now on. The
                    // first scan's at once (reviewed at the next sample, see `FirstLook`),
                    // later ones' at a second look.
                    if let Some(closed) = &closed_before {
                        if closed.contains(&(s.local, s.remote)) {
                            // Seen before its Close, which came first here.
                            continue;
                        }
                        first_look.push((s.inode, (s.local, s.remote)));
                    } else {
                        let seen = self.unexplained.get(&s.inode).copied().unwrap_or(0) + 1;
                        if seen < 2 {
                            unexplained.insert(s.inode, seen);
                            continue;
                        }
                    }
                    self.adopt_pre_existing(s, now_ns);
                }
                None => {}
            }
        }
        self.unexplained = unexplained;
        if let Some(closed) = closed_before {
            self.first_look = FirstLook::Adopted(first_look, closed);
        }
        // A pre-existing connection gone from the socket table was closed. A socket dump is
        // not atomic (sockets that come and go while it runs can hide others), so it takes
        // two samples in a row without it.
        self.conns.retain(|key, conn| match key {
            ConnKey::Inode(inode) if seen_inodes.contains(inode) => {
                conn.missing_samples = 0;
                true
            }
            ConnKey::Inode(_) => {
                conn.missing_samples += 1;
                conn.missing_samples < 2
            }
            ConnKey::Socket(_) => true,
        });
    }

    fn apply_targets(&mut self, targets: Vec<Target>) {
        let alive: HashSet<u32> = targets.iter().map(|t| t.pid).collect();
        if self.exited_pids.len() > 65_536 {
            self.exited_pids.clear();
        }
        self.exited_pids.extend(
            self.targets
                .iter()
                .map(|t| t.pid)
                .filter(|pid| !alive.contains(pid)),
        );
        // A pid listed again is a new process that got the number.
        self.exited_pids.retain(|pid| !alive.contains(pid));
        // Connections (and streams) of a process that exited went with it.
        self.conns.retain(|_, c| alive.contains(&c.pid));
        self.streams.retain_pids(&alive);
        self.sites.retain_pids(&alive);
        self.go_layers.retain(|pid, _| alive.contains(pid));
        self.targets = targets;
    }
}

/// How the socket of a Close event ended, for `classify::closed_unread`.
fn ending_of(event: &KernelEvent) -> classify::Ending {
    let by_process = event.conn.closed_by_process
        || event.conn.local_close_ns.is_some()
        || (event.ctx_pid == event.conn.pid
            && matches!(
                event.old_state,
                tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT
            ));
    classify::Ending {
        recv_q: event.conn.recv_q.map_or(0, |q| q.bytes),
        state_before: event.old_state,
        closed_by_process: by_process,
        peer_fin: event.conn.peer_fin_at_close,
    }
}

fn is_connected(state: u32) -> bool {
    matches!(state, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT)
}

/// A pre-existing connection has no kernel record: its state and reads come from samples.
fn update_pre_existing(conn: &mut UpstreamConn, s: &SocketSample, now_ns: u64) {
    if s.state == tcp_state::CLOSE_WAIT && conn.peer_fin_ns.is_none() {
        conn.peer_fin_ns = Some(now_ns);
    }
    if !matches!(s.state, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT)
        && conn.local_close_ns.is_none()
    {
        // FIN_WAIT*, LAST_ACK, CLOSING: the process closed its side.
        conn.local_close_ns = Some(now_ns);
    }
    conn.state = s.state;
}

/// A shrinking receive queue between two samples means someone read.
fn note_read_from_samples(conn: &mut UpstreamConn, previous: Option<RecvQ>, now_ns: u64) {
    if let (Some(prev), Some(cur)) = (previous, conn.recv_q) {
        if cur.bytes < prev.bytes {
            conn.last_read_ns = Some(now_ns);
        }
    }
}

/// The host an unnamed connection counts under: its address as text. IPv4 is written by hand,
/// digit by digit: through `Display` it was a tenth of the tracer's CPU with a new unnamed
/// connection per request.
fn address_label(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_labels_read_as_the_standard_formatting() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "100.99.9.255",
            "255.255.255.255",
            "1.10.100.200",
            "::1",
            "2001:db8::17",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert_eq!(address_label(ip), ip.to_string());
        }
        for octet in 0..=255u8 {
            let ip = IpAddr::from([octet, 255 - octet, octet / 3, 7]);
            assert_eq!(address_label(ip), ip.to_string());
        }
    }
    use crate::model::testkit::*;
    use tcp_state::{
        CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, LAST_ACK, LISTEN, SYN_SENT,
    };

    const UP: &str = "10.0.0.12:443";
    const UP_HOST: &str = "10.0.0.12";
    const OLD: &str = "10.0.0.20:80";
    const OLD_HOST: &str = "10.0.0.20";

    fn only(table: &ConnTable) -> &UpstreamConn {
        let conns: Vec<_> = table.conns().collect();
        assert_eq!(
            conns.len(),
            1,
            "expected exactly one connection: {conns:#?}"
        );
        conns[0]
    }

    fn conn_at(table: &ConnTable, local: SocketAddr) -> &UpstreamConn {
        table
            .conns()
            .find(|c| c.local == local)
            .unwrap_or_else(|| panic!("no connection from {local}"))
    }

    fn locals(table: &ConnTable) -> Vec<SocketAddr> {
        let mut locals: Vec<_> = table.conns().map(|c| c.local).collect();
        locals.sort();
        locals
    }

    fn totals(table: &ConnTable, host: &str) -> HostTotals {
        table
            .hosts()
            .get(host)
            .cloned()
            .unwrap_or_else(|| panic!("no totals for {host}"))
    }

    fn host(remotes: &[&str], connections_total: u64, closed_unread_total: u64) -> HostTotals {
        HostTotals {
            provider: None,
            remotes: remotes.iter().map(|r| addr(r)).collect(),
            connections_total,
            closed_unread_total,
        }
    }

    /// UP, connected at 1 s, established at 2 s, source port 40001.
    fn up() -> KernelConn {
        established(kconn(40001, UP, SEC), 2 * SEC)
    }

    // ---- kernel events ----

    #[test]
    fn connect_established_close_counts_one_connection_and_forgets_it() {
        let mut table = table_after([connect(1, kconn(0, UP, SEC))]);
        assert_eq!(only(&table).state, SYN_SENT);
        assert_eq!(only(&table).local, local(0));
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));

        table.apply(state(1, SYN_SENT, up()));
        let c = only(&table);
        assert_eq!(
            (c.state, c.local, c.opened_ns, c.established_ns, c.is_open()),
            (ESTABLISHED, local(40001), SEC, Some(2 * SEC), true)
        );
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));

        let closed = KernelConn {
            state: CLOSE,
            closed_by_process: true,
            local_close_ns: Some(3 * SEC),
            peer_fin_at_close: true,
            ..up()
        };
        table.apply(close(1, FIN_WAIT2, OTHER_PID, closed));
        assert_eq!(table.conns().count(), 0);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
        assert_eq!(table.hosts().len(), 1);
    }

    #[test]
    fn a_close_for_a_socket_never_seen_still_counts_a_connection() {
        let closed = KernelConn {
            state: CLOSE,
            peer_fin_at_close: true,
            ..up()
        };
        let table = table_after([close(9, FIN_WAIT2, OTHER_PID, closed)]);
        assert_eq!(table.conns().count(), 0);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
    }

    #[test]
    fn late_events_for_a_closed_socket_do_not_resurrect_it() {
        let closed = KernelConn {
            state: CLOSE,
            ..up()
        };
        let mut table = table_after([
            connect(1, kconn(0, UP, SEC)),
            close(1, ESTABLISHED, OTHER_PID, closed),
        ]);
        table.apply(state(1, SYN_SENT, up()));
        assert_eq!(table.conns().count(), 0);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
    }

    #[test]
    fn a_connect_at_a_recently_closed_address_is_a_new_socket() {
        // The kernel reuses a freed socket's memory at once: the ring buffer orders one
        // socket's events, so a Connect after a Close is always a new socket.
        let closed = KernelConn {
            state: CLOSE,
            ..up()
        };
        let mut table = table_after([
            connect(1, kconn(0, UP, SEC)),
            close(1, ESTABLISHED, OTHER_PID, closed),
        ]);
        table.apply(connect(1, kconn(0, UP, 5 * SEC)));
        assert_eq!(only(&table).opened_ns, 5 * SEC);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 2, 0));
        table.apply(Input::Named {
            sk: 1,
            opened_ns: 5 * SEC,
            name: named("api.openai.com", None, NameSource::Sni),
        });
        assert_eq!(only(&table).host, "api.openai.com");
    }

    #[test]
    fn a_name_that_comes_before_its_connection_is_kept_for_it() {
        let mut table = table_after([]);
        table.apply(Input::Named {
            sk: 3,
            opened_ns: SEC,
            name: named("api.anthropic.com", Some("anthropic"), NameSource::Sni),
        });
        table.apply(sample(
            2 * SEC,
            vec![(3, established(kconn(40003, UP, SEC), SEC))],
            vec![],
        ));
        assert_eq!(only(&table).host, "api.anthropic.com");
        assert!(table.hosts().get(UP_HOST).is_none());
        assert_eq!(totals(&table, "api.anthropic.com").connections_total, 1);
    }

    #[test]
    fn a_name_waits_one_sample_and_never_goes_to_a_later_socket_at_its_address() {
        let mut table = table_after([]);
        // Named, but its Connect and Close were lost: gone before the map was read.
        table.apply(Input::Named {
            sk: 3,
            opened_ns: SEC,
            name: named("soak-1.example", None, NameSource::HttpHost),
        });
        table.apply(sample(2 * SEC, vec![], vec![]));
        // A later socket at the same address, whose own Connect and name were lost.
        table.apply(sample(
            3 * SEC,
            vec![(3, established(kconn(40003, UP, 2 * SEC + 1), 2 * SEC + 1))],
            vec![],
        ));
        assert_eq!(only(&table).host, UP_HOST);
        assert!(table.hosts().get("soak-1.example").is_none());

        // A name waiting at an address is dropped by a Connect there (names follow their
        // socket's Connect, so it was the old socket's).
        table.apply(Input::Named {
            sk: 4,
            opened_ns: 3 * SEC,
            name: named("soak-2.example", None, NameSource::HttpHost),
        });
        table.apply(connect(4, kconn(40004, UP, 4 * SEC)));
        let conn = conn_at(&table, local(40004));
        assert_eq!(conn.host, UP_HOST);
    }

    #[test]
    fn a_record_with_another_connect_time_is_a_new_socket_at_a_reused_address() {
        let sk = 7;
        let old = established(kconn(40001, UP, SEC), SEC);
        let mut table = table_after([connect(sk, old.clone())]);
        table.apply(Input::Named {
            sk,
            opened_ns: SEC,
            name: named("soak-1.example", None, NameSource::HttpHost),
        });
        assert_eq!(only(&table).host, "soak-1.example");
        // Its Close was lost; a new socket got the same memory.
        let new = established(kconn(40002, "10.0.0.13:443", 3 * SEC), 3 * SEC);
        table.apply(sample(4 * SEC, vec![(sk, new)], vec![]));
        assert_eq!(locals(&table), vec![local(40002)]);
        assert_eq!(
            only(&table).host,
            "10.0.0.13",
            "the old socket's name stays with it"
        );
        assert_eq!(only(&table).opened_ns, 3 * SEC);
        // The same through an event.
        let newer = kconn(40003, UP, 5 * SEC);
        table.apply(connect(sk, newer));
        assert_eq!(locals(&table), vec![local(40003)]);
        assert_eq!(only(&table).host, UP_HOST);
        assert_eq!(totals(&table, UP_HOST).closed_unread_total, 0);
    }

    #[test]
    fn a_live_kernel_entry_at_a_closed_address_is_a_new_socket() {
        let closed = KernelConn {
            state: CLOSE,
            ..up()
        };
        let mut table = table_after([
            connect(1, kconn(0, UP, SEC)),
            close(1, ESTABLISHED, OTHER_PID, closed),
        ]);
        let reused = established(kconn(40002, UP, 5 * SEC), 6 * SEC);
        table.apply(sample(7 * SEC, vec![(1, reused)], vec![]));
        assert_eq!(only(&table).local, local(40002));
        assert_eq!(only(&table).opened_ns, 5 * SEC);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 2, 0));
        // Its events are its own again.
        let read = KernelConn {
            reads: 1,
            ..established(kconn(40002, UP, 5 * SEC), 6 * SEC)
        };
        table.apply(state(1, ESTABLISHED, read));
        assert_eq!(only(&table).reads, 1);
    }

    #[test]
    fn the_kernel_record_is_the_newest_truth_for_what_it_tracks() {
        let mut table = table_after([connect(1, kconn(0, UP, SEC))]);
        let base = UpstreamConn {
            origin: Origin::Traced,
            pid: PID,
            fd: None,
            comm: "relay".into(),
            local: local(0),
            remote: addr(UP),
            name: None,
            host: UP_HOST.into(),
            provider: None,
            state: SYN_SENT,
            opened_ns: SEC,
            established_ns: None,
            peer_fin_ns: None,
            local_close_ns: None,
            last_read_ns: None,
            last_read_ret: None,
            reads: 0,
            bytes_read: 0,
            reads_inflight: 0,
            recv_q: None,
            queue_empty_ns: None,
            missing_samples: 0,
        };
        assert_eq!(
            only(&table),
            &base,
            "no read seen: no last read return value"
        );

        let reading = KernelConn {
            fd: Some(12),
            last_read_ns: Some(3 * SEC),
            last_read_ret: 4096,
            reads: 2,
            bytes_read: 8192,
            reads_inflight: 1,
            recv_q: recv_q(100, 3 * SEC),
            ..up()
        };
        table.apply(state(1, SYN_SENT, reading.clone()));
        let read = UpstreamConn {
            fd: Some(12),
            local: local(40001),
            state: ESTABLISHED,
            established_ns: Some(2 * SEC),
            last_read_ns: Some(3 * SEC),
            last_read_ret: Some(4096),
            reads: 2,
            bytes_read: 8192,
            reads_inflight: 1,
            recv_q: recv_q(100, 3 * SEC),
            ..base.clone()
        };
        assert_eq!(only(&table), &read);

        // A record without the fd or the source port keeps them; an older queue sample loses.
        let partial = KernelConn {
            fd: None,
            local: local(0),
            recv_q: recv_q(50, 2 * SEC),
            ..reading
        };
        table.apply(state(1, ESTABLISHED, partial));
        assert_eq!(only(&table), &read);

        let fin = KernelConn {
            state: CLOSE_WAIT,
            peer_fin_ns: Some(4 * SEC),
            reads_inflight: 0,
            recv_q: recv_q(1, 4 * SEC),
            ..up()
        };
        table.apply(state(1, ESTABLISHED, fin));
        let c = only(&table);
        assert_eq!(
            (
                c.state,
                c.peer_fin_ns,
                c.recv_q,
                c.fd,
                c.reads_inflight,
                c.last_read_ret
            ),
            (
                CLOSE_WAIT,
                Some(4 * SEC),
                recv_q(1, 4 * SEC),
                Some(12),
                0,
                None
            )
        );
    }

    // ---- closed_unread ----

    /// The totals of UP's host after a traced connection ends with `closing`.
    fn closed_unread_after(old_state: u32, ctx_pid: u32, closing: KernelConn) -> u64 {
        let closing = KernelConn {
            state: CLOSE,
            ..closing
        };
        let table = table_after([
            connect(1, kconn(0, UP, SEC)),
            close(1, old_state, ctx_pid, closing),
        ]);
        assert_eq!(table.conns().count(), 0);
        let t = totals(&table, UP_HOST);
        assert_eq!(t.connections_total, 1);
        t.closed_unread_total
    }

    #[test]
    fn a_process_close_with_response_bytes_unread_counts_closed_unread() {
        // close() seen by the kernel side.
        let flagged = KernelConn {
            closed_by_process: true,
            recv_q: recv_q(130_048, 5 * SEC),
            ..up()
        };
        assert_eq!(closed_unread_after(ESTABLISHED, PID, flagged), 1);
        // TCP_CLOSE straight from ESTABLISHED or CLOSE_WAIT in the process's own context (its
        // sockets closed as it exits): the process closed it.
        let in_context = KernelConn {
            recv_q: recv_q(5, 5 * SEC),
            ..up()
        };
        assert_eq!(closed_unread_after(ESTABLISHED, PID, in_context), 1);
        let in_context = KernelConn {
            recv_q: recv_q(2, 5 * SEC),
            ..up()
        };
        assert_eq!(
            closed_unread_after(CLOSE_WAIT, PID, in_context),
            1,
            "one byte beyond the FIN"
        );
        // A local close time alone marks it too.
        let local_close = KernelConn {
            local_close_ns: Some(4 * SEC),
            recv_q: recv_q(300, 5 * SEC),
            ..up()
        };
        assert_eq!(closed_unread_after(ESTABLISHED, OTHER_PID, local_close), 1);
    }

    #[test]
    fn a_process_close_with_only_the_fin_unread_is_clean() {
        let fin_only = KernelConn {
            closed_by_process: true,
            recv_q: recv_q(1, 5 * SEC),
            ..up()
        };
        assert_eq!(closed_unread_after(CLOSE_WAIT, PID, fin_only), 0);
        let fin_only = KernelConn {
            recv_q: recv_q(1, 5 * SEC),
            ..up()
        };
        assert_eq!(closed_unread_after(CLOSE_WAIT, PID, fin_only), 0);
        let drained = KernelConn {
            closed_by_process: true,
            recv_q: recv_q(0, 5 * SEC),
            ..up()
        };
        assert_eq!(closed_unread_after(ESTABLISHED, PID, drained), 0);
        let no_sample = KernelConn {
            closed_by_process: true,
            recv_q: None,
            ..up()
        };
        assert_eq!(closed_unread_after(ESTABLISHED, PID, no_sample), 0);
    }

    #[test]
    fn an_upstream_abort_is_not_closed_unread() {
        let aborted = KernelConn {
            recv_q: recv_q(5000, 5 * SEC),
            ..up()
        };
        assert_eq!(
            closed_unread_after(ESTABLISHED, OTHER_PID, aborted.clone()),
            0
        );
        assert_eq!(closed_unread_after(CLOSE_WAIT, OTHER_PID, aborted), 0);
        // The process's context vouches only for closes from ESTABLISHED or CLOSE_WAIT.
        assert_eq!(closed_unread_after(FIN_WAIT2, PID, up()), 0);
    }

    #[test]
    fn ending_from_fin_wait_without_the_upstreams_fin_after_a_local_close_counts() {
        let aborted = KernelConn {
            local_close_ns: Some(4 * SEC),
            peer_fin_at_close: false,
            ..up()
        };
        assert_eq!(
            closed_unread_after(FIN_WAIT1, OTHER_PID, aborted.clone()),
            1
        );
        assert_eq!(
            closed_unread_after(FIN_WAIT2, OTHER_PID, aborted.clone()),
            1
        );
        let flagged = KernelConn {
            closed_by_process: true,
            peer_fin_at_close: false,
            ..up()
        };
        assert_eq!(closed_unread_after(FIN_WAIT1, OTHER_PID, flagged), 1);
        let normal = KernelConn {
            peer_fin_at_close: true,
            ..aborted
        };
        assert_eq!(
            closed_unread_after(FIN_WAIT2, OTHER_PID, normal.clone()),
            0,
            "a normal close"
        );
        assert_eq!(
            closed_unread_after(LAST_ACK, OTHER_PID, normal),
            0,
            "the upstream closed first"
        );
    }

    #[test]
    fn closed_unread_counts_for_a_socket_never_seen() {
        let closing = KernelConn {
            state: CLOSE,
            closed_by_process: true,
            recv_q: recv_q(700, 5 * SEC),
            ..up()
        };
        let table = table_after([close(3, ESTABLISHED, PID, closing)]);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 1));
    }

    // ---- samples of the kernel map ----

    #[test]
    fn a_sample_adopts_a_kernel_entry_before_its_connect_event() {
        let mut table = table_after([sample(3 * SEC, vec![(1, up())], vec![])]);
        let c = only(&table);
        assert_eq!(
            (c.origin, c.state, c.local, c.opened_ns, c.established_ns),
            (
                Origin::Traced,
                ESTABLISHED,
                local(40001),
                SEC,
                Some(2 * SEC)
            )
        );
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
        // The queued events follow.
        table.apply(connect(1, kconn(0, UP, SEC)));
        table.apply(state(1, SYN_SENT, up()));
        assert_eq!(only(&table).state, ESTABLISHED);
        assert_eq!(only(&table).local, local(40001));
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
        // And the next sample finds it again: still one.
        table.apply(sample(4 * SEC, vec![(1, up())], vec![]));
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
        assert_eq!(table.conns().count(), 1);
    }

    #[test]
    fn a_socket_missing_from_two_consecutive_samples_is_dropped() {
        let mut table = table_after([connect(1, kconn(0, UP, SEC)), state(1, SYN_SENT, up())]);
        table.apply(sample(3 * SEC, vec![], vec![]));
        assert_eq!(
            only(&table).missing_samples,
            1,
            "one missing sample is tolerated"
        );
        table.apply(sample(4 * SEC, vec![(1, up())], vec![]));
        assert_eq!(
            only(&table).missing_samples,
            0,
            "seen again: the count starts over"
        );
        table.apply(sample(5 * SEC, vec![], vec![]));
        assert_eq!(table.conns().count(), 1);
        table.apply(sample(6 * SEC, vec![], vec![]));
        assert_eq!(table.conns().count(), 0);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
    }

    #[test]
    fn sock_diag_recv_q_replaces_only_an_older_kernel_sample() {
        let sock = |q| socket(PID, 12, local(40001), UP, ESTABLISHED, q);
        let older = KernelConn {
            recv_q: recv_q(100, 5 * SEC),
            ..up()
        };
        let mut table = table_after([sample(6 * SEC, vec![(1, older)], vec![sock(300)])]);
        assert_eq!(only(&table).recv_q, recv_q(300, 6 * SEC));

        // The map is read after the clock: its sample can be newer than the socket's.
        let newer = KernelConn {
            recv_q: recv_q(400, 7 * SEC + 1),
            ..up()
        };
        table.apply(sample(7 * SEC, vec![(1, newer)], vec![sock(500)]));
        assert_eq!(only(&table).recv_q, recv_q(400, 7 * SEC + 1));

        let same_time = KernelConn {
            recv_q: recv_q(10, 8 * SEC),
            ..up()
        };
        table.apply(sample(8 * SEC, vec![(1, same_time)], vec![sock(20)]));
        assert_eq!(only(&table).recv_q, recv_q(20, 8 * SEC));
        assert_eq!(
            only(&table).last_read_ns,
            None,
            "a traced connection's reads come from the kernel"
        );
    }

    #[test]
    fn socket_samples_leave_a_traced_connections_state_and_reads_to_the_kernel() {
        let sock = |state, q| socket(PID, 12, local(40001), UP, state, q);
        let mut table = table_after([sample(
            6 * SEC,
            vec![(1, up())],
            vec![sock(ESTABLISHED, 300)],
        )]);
        table.apply(sample(7 * SEC, vec![(1, up())], vec![sock(CLOSE_WAIT, 50)]));
        let c = only(&table);
        assert_eq!(
            (c.state, c.peer_fin_ns, c.last_read_ns, c.recv_q),
            (ESTABLISHED, None, None, recv_q(50, 7 * SEC))
        );
    }

    #[test]
    fn the_socket_sample_fills_an_unknown_fd() {
        let mut table = table_after([sample(
            3 * SEC,
            vec![(1, up())],
            vec![socket(PID, 12, local(40001), UP, ESTABLISHED, 0)],
        )]);
        assert_eq!(only(&table).fd, Some(12));
        table.apply(sample(
            4 * SEC,
            vec![(1, up())],
            vec![socket(PID, 13, local(40001), UP, ESTABLISHED, 0)],
        ));
        assert_eq!(only(&table).fd, Some(12), "a known fd is kept");
        let known = KernelConn {
            fd: Some(15),
            ..up()
        };
        table.apply(sample(
            5 * SEC,
            vec![(1, known)],
            vec![socket(PID, 13, local(40001), UP, ESTABLISHED, 0)],
        ));
        assert_eq!(only(&table).fd, Some(15), "the kernel's fd wins");
    }

    #[test]
    fn a_sample_brings_the_kernel_counters() {
        let stats = KernelStats {
            events_sent: 10,
            events_lost: 2,
            conn_map_full: 1,
            reads_seen: 99,
        };
        let table = table_after([Input::Sample(Sample {
            now_ns: SEC,
            stats,
            ..Sample::default()
        })]);
        assert_eq!(table.stats(), stats);
    }

    #[test]
    fn a_long_scan_does_not_outrank_a_read_the_kernel_saw_during_it() {
        // The relay read the response (3000 bytes) at 9.5 s, to EAGAIN, and the kernel
        // record sampled the queue empty then. The socket-table read that carries this socket
        // began at 9.2 s and saw the bytes before that read; its sample is taken at 10 s.
        let read = KernelConn {
            last_read_ns: Some(9 * SEC + SEC / 2),
            last_read_ret: -11,
            reads: 3,
            bytes_read: 3000,
            recv_q: recv_q(0, 9 * SEC + SEC / 2),
            ..up()
        };
        let scan = Sample {
            now_ns: 10 * SEC,
            kernel: vec![(1, read)],
            sockets: Some(vec![socket(PID, 12, local(40001), UP, ESTABLISHED, 3000)]),
            scanned_ns: Some(9 * SEC + SEC / 5),
            ..Sample::default()
        };
        let graces = crate::model::Graces::default();
        let later = 10 * SEC + 10 * graces.unread.as_nanos() as u64;
        let table = table_after([Input::Sample(scan.clone())]);
        assert_eq!(only(&table).recv_q, recv_q(0, 9 * SEC + SEC / 2));
        assert_eq!(classify::judge(only(&table), later, &graces), None);
        // Dated from the sample instead (recordings before version 6), the scan's older view
        // wins, and a healthy pooled connection is a leak until its next scan.
        let table = table_after([Input::Sample(Sample {
            scanned_ns: None,
            ..scan
        })]);
        assert_eq!(only(&table).recv_q, recv_q(3000, 10 * SEC));
        assert_eq!(
            classify::judge(only(&table), later, &graces),
            Some(crate::model::LeakReason::Unread)
        );
    }

    // ---- pre-existing connections ----

    #[test]
    fn a_traced_socket_the_first_scan_saw_before_its_close_counts_once() {
        // CI's kernel matrix counted a short connection twice: the first scan (slow under
        // emulation) saw it open, and its Close came before that scan's sample.
        let closed = KernelConn {
            state: CLOSE,
            ..up()
        };
        let mut table = table_after([close(1, ESTABLISHED, PID, closed.clone())]);
        table.apply(sample(
            3 * SEC,
            vec![],
            vec![socket(PID, 12, local(40001), UP, ESTABLISHED, 0)],
        ));
        assert_eq!(table.conns().count(), 0);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));

        // Its Close after that sample (it closed after the drain, before the map read, and
        // a newer socket took the address): adopted at first, undone at the next sample.
        let newer = established(kconn(40002, UP, 2 * SEC), 2 * SEC);
        let mut table = table_after([]);
        table.apply(sample(
            3 * SEC,
            vec![(1, newer.clone())],
            vec![socket(PID, 12, local(40001), UP, ESTABLISHED, 0)],
        ));
        assert_eq!(locals(&table), vec![local(40001), local(40002)]);
        table.apply(close(1, ESTABLISHED, PID, closed));
        table.apply(map_only_sample(4 * SEC, vec![(1, newer)]));
        assert_eq!(locals(&table), vec![local(40002)]);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 2, 0));
    }

    #[test]
    fn first_sample_sockets_without_a_kernel_entry_are_pre_existing() {
        let table = table_after([sample(
            10 * SEC,
            vec![(1, up())],
            vec![
                socket(PID, 12, local(40001), UP, ESTABLISHED, 0),
                socket(PID, 20, local(50001), OLD, ESTABLISHED, 17),
                socket(PID, 21, local(50002), OLD, CLOSE_WAIT, 1),
                socket(PID, 22, local(50003), OLD, SYN_SENT, 0),
                socket(PID, 23, local(50004), OLD, FIN_WAIT1, 0),
            ],
        )]);
        assert_eq!(
            locals(&table),
            vec![local(40001), local(50001), local(50002)]
        );
        assert_eq!(conn_at(&table, local(40001)).origin, Origin::Traced);
        let established = UpstreamConn {
            origin: Origin::PreExisting,
            pid: PID,
            fd: Some(20),
            comm: "relay-7".into(),
            local: local(50001),
            remote: addr(OLD),
            name: None,
            host: OLD_HOST.into(),
            provider: None,
            state: ESTABLISHED,
            opened_ns: 10 * SEC,
            established_ns: Some(10 * SEC),
            peer_fin_ns: None,
            local_close_ns: None,
            last_read_ns: None,
            last_read_ret: None,
            reads: 0,
            bytes_read: 0,
            reads_inflight: 0,
            recv_q: recv_q(17, 10 * SEC),
            queue_empty_ns: None,
            missing_samples: 0,
        };
        assert_eq!(conn_at(&table, local(50001)), &established);
        let close_wait = UpstreamConn {
            fd: Some(21),
            local: local(50002),
            state: CLOSE_WAIT,
            peer_fin_ns: Some(10 * SEC),
            recv_q: recv_q(1, 10 * SEC),
            // Its FIN alone is queued: nothing unread.
            queue_empty_ns: Some(10 * SEC),
            ..established
        };
        assert_eq!(conn_at(&table, local(50002)), &close_wait);
        assert_eq!(totals(&table, OLD_HOST), host(&[OLD], 2, 0));
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
    }

    #[test]
    fn a_socket_no_kernel_record_explains_is_adopted_at_its_second_sample() {
        let unexplained = socket(PID, 20, local(50001), OLD, ESTABLISHED, 0);
        let mut table = table_after([
            sample(SEC, vec![], vec![]),
            sample(2 * SEC, vec![], vec![unexplained.clone()]),
        ]);
        // Once is not enough: a traced socket closing between the socket dump and the map
        // read looks like this for one sample.
        assert_eq!(table.conns().count(), 0);
        assert!(table.hosts().is_empty());
        table.apply(sample(3 * SEC, vec![], vec![]));
        table.apply(sample(4 * SEC, vec![], vec![unexplained.clone()]));
        assert_eq!(
            table.conns().count(),
            0,
            "the count restarts when it is not seen"
        );
        table.apply(sample(5 * SEC, vec![], vec![unexplained]));
        assert_eq!(locals(&table), vec![local(50001)]);
        assert_eq!(only(&table).origin, Origin::PreExisting);
        assert_eq!(only(&table).opened_ns, 5 * SEC);
        assert_eq!(totals(&table, OLD_HOST), host(&[OLD], 1, 0));
    }

    #[test]
    fn short_lived_sockets_reusing_addresses_are_never_adopted() {
        // Two scans each catch a different short-lived socket (closed before the map read,
        // so no kernel record explains it) at the same addresses.
        let first = socket(PID, 20, local(50001), OLD, CLOSE_WAIT, 1);
        let second = SocketSample {
            inode: first.inode + 7,
            ..first.clone()
        };
        let mut table = table_after([sample(SEC, vec![], vec![])]);
        table.apply(sample(2 * SEC, vec![], vec![first]));
        table.apply(sample(3 * SEC, vec![], vec![second]));
        assert_eq!(table.conns().count(), 0, "two sockets, each seen once");
        assert!(table.hosts().is_empty());
    }

    #[test]
    fn listeners_and_connections_accepted_from_them_are_never_upstream() {
        let table = table_after([sample(
            SEC,
            vec![],
            vec![
                socket(PID, 3, local(8080), "0.0.0.0:0", LISTEN, 0),
                socket(PID, 9, local(8080), "10.9.9.9:51000", ESTABLISHED, 40),
                socket(PID, 10, local(8080), "10.9.9.9:51001", CLOSE_WAIT, 1),
                socket(PID, 20, local(50001), OLD, ESTABLISHED, 0),
            ],
        )]);
        assert_eq!(locals(&table), vec![local(50001)]);
        assert_eq!(
            table
                .hosts()
                .keys()
                .map(|ip| ip.to_string())
                .collect::<Vec<_>>(),
            vec![OLD_HOST]
        );
    }

    #[test]
    fn a_pre_existing_connection_gone_from_a_later_sample_leaves_the_table() {
        let old = socket(PID, 20, local(50001), OLD, ESTABLISHED, 0);
        let other = socket(PID, 21, local(50002), OLD, ESTABLISHED, 0);
        let mut table = table_after([sample(SEC, vec![], vec![old.clone(), other])]);
        assert_eq!(table.conns().count(), 2);
        table.apply(sample(2 * SEC, vec![], vec![old.clone()]));
        assert_eq!(
            table.conns().count(),
            2,
            "one missing sample is tolerated (dumps are not atomic)"
        );
        table.apply(sample(3 * SEC, vec![], vec![old]));
        assert_eq!(
            locals(&table),
            vec![local(50001)],
            "gone two samples in a row"
        );
        table.apply(sample(4 * SEC, vec![], vec![]));
        assert_eq!(table.conns().count(), 1);
        table.apply(sample(5 * SEC, vec![], vec![]));
        assert_eq!(table.conns().count(), 0);
        assert_eq!(totals(&table, OLD_HOST), host(&[OLD], 2, 0));
    }

    #[test]
    fn a_pre_existing_connection_is_its_socket_not_its_addresses() {
        let old = socket(PID, 20, local(50001), OLD, CLOSE_WAIT, 1);
        let mut table = table_after([sample(SEC, vec![], vec![old.clone()])]);
        assert_eq!(only(&table).state, CLOSE_WAIT);
        // Closed, and a new socket of the process got the same addresses (another fd, inode).
        let reused = SocketSample {
            fd: 21,
            inode: old.inode + 1,
            state: ESTABLISHED,
            recv_q: 0,
            ..old
        };
        table.apply(sample(2 * SEC, vec![], vec![reused.clone()]));
        table.apply(sample(3 * SEC, vec![], vec![reused]));
        assert_eq!(table.conns().count(), 1);
        let conn = only(&table);
        assert_eq!(
            (conn.fd, conn.state, conn.opened_ns),
            (Some(21), ESTABLISHED, 3 * SEC),
            "the old connection left; the new socket was adopted as its own connection"
        );
        assert_eq!(totals(&table, OLD_HOST).connections_total, 2);
    }

    #[test]
    fn samples_without_a_socket_scan_leave_socket_judgements_alone() {
        let old = socket(PID, 20, local(50001), OLD, ESTABLISHED, 0);
        let unexplained = socket(PID, 21, local(50002), OLD, ESTABLISHED, 0);
        let mut table = table_after([sample(SEC, vec![], vec![old.clone()])]);
        table.apply(sample(
            2 * SEC,
            vec![],
            vec![old.clone(), unexplained.clone()],
        ));
        // Map-only samples in between neither drop the pre-existing connection nor reset the
        // unexplained socket's count: "in a row" counts scans.
        for at in 3..6 {
            table.apply(map_only_sample(at * SEC, vec![]));
        }
        assert_eq!(locals(&table), vec![local(50001)]);
        table.apply(sample(6 * SEC, vec![], vec![old, unexplained]));
        assert_eq!(locals(&table), vec![local(50001), local(50002)]);
        assert_eq!(conn_at(&table, local(50002)).opened_ns, 6 * SEC);
        for at in 7..10 {
            table.apply(map_only_sample(at * SEC, vec![]));
        }
        assert_eq!(table.conns().count(), 2);
        table.apply(sample(10 * SEC, vec![], vec![]));
        table.apply(map_only_sample(11 * SEC, vec![]));
        table.apply(sample(12 * SEC, vec![], vec![]));
        assert_eq!(table.conns().count(), 0, "gone from two scans in a row");
    }

    #[test]
    fn a_kernel_tracked_connection_is_refreshed_and_dropped_by_map_only_samples() {
        let sk = 0xffff_0000_0000_1000;
        let conn = established(kconn(40001, UP, SEC), SEC);
        let mut table = table_after([map_only_sample(2 * SEC, vec![(sk, conn.clone())])]);
        assert_eq!(locals(&table), vec![local(40001)]);
        let peer_closed = KernelConn {
            state: CLOSE_WAIT,
            peer_fin_ns: Some(3 * SEC),
            ..conn
        };
        table.apply(map_only_sample(3 * SEC, vec![(sk, peer_closed)]));
        assert_eq!(only(&table).state, CLOSE_WAIT);
        // Its Close event was lost: the map alone says it is gone.
        table.apply(map_only_sample(4 * SEC, vec![]));
        table.apply(map_only_sample(5 * SEC, vec![]));
        assert_eq!(table.conns().count(), 0);
    }

    #[test]
    fn close_wait_first_seen_later_dates_the_fin_at_that_sample() {
        let at = |state| socket(PID, 20, local(50001), OLD, state, 1);
        let mut table = table_after([sample(10 * SEC, vec![], vec![at(ESTABLISHED)])]);
        assert_eq!(only(&table).peer_fin_ns, None);
        table.apply(sample(12 * SEC, vec![], vec![at(CLOSE_WAIT)]));
        let c = only(&table);
        assert_eq!(
            (
                c.state,
                c.peer_fin_ns,
                c.established_ns,
                c.local_close_ns,
                c.is_open()
            ),
            (CLOSE_WAIT, Some(12 * SEC), Some(10 * SEC), None, true)
        );
        table.apply(sample(13 * SEC, vec![], vec![at(CLOSE_WAIT)]));
        assert_eq!(only(&table).peer_fin_ns, Some(12 * SEC));
    }

    #[test]
    fn a_pre_existing_connection_leaving_established_was_closed_by_the_process() {
        let at = |state| socket(PID, 20, local(50001), OLD, state, 0);
        let mut table = table_after([
            sample(10 * SEC, vec![], vec![at(ESTABLISHED)]),
            sample(12 * SEC, vec![], vec![at(FIN_WAIT1)]),
        ]);
        let c = only(&table);
        assert_eq!(
            (c.state, c.local_close_ns, c.is_open()),
            (FIN_WAIT1, Some(12 * SEC), false)
        );
        table.apply(sample(13 * SEC, vec![], vec![at(FIN_WAIT2)]));
        assert_eq!(
            (only(&table).state, only(&table).local_close_ns),
            (FIN_WAIT2, Some(12 * SEC))
        );
    }

    #[test]
    fn a_shrinking_receive_queue_is_a_read() {
        let queued = |q| socket(PID, 20, local(50001), OLD, ESTABLISHED, q);
        let mut table = table_after([sample(10 * SEC, vec![], vec![queued(500)])]);
        table.apply(sample(11 * SEC, vec![], vec![queued(500)]));
        assert_eq!(only(&table).last_read_ns, None, "same queue: no read");
        table.apply(sample(12 * SEC, vec![], vec![queued(800)]));
        assert_eq!(only(&table).last_read_ns, None, "a growing queue: no read");
        table.apply(sample(13 * SEC, vec![], vec![queued(799)]));
        assert_eq!(only(&table).last_read_ns, Some(13 * SEC));
        table.apply(sample(14 * SEC, vec![], vec![queued(799)]));
        assert_eq!(only(&table).last_read_ns, Some(13 * SEC));
        assert_eq!(only(&table).recv_q, recv_q(799, 14 * SEC));
        assert_eq!(
            only(&table).last_read_ret,
            None,
            "what a read returned is unknown"
        );
    }

    // ---- targets ----

    #[test]
    fn targets_drop_connections_of_pids_no_longer_listed() {
        let of_8 = KernelConn {
            pid: 8,
            ..established(kconn(40002, UP, SEC), 2 * SEC)
        };
        let mut table = ConnTable::new();
        for input in [
            targets(&[PID, 8]),
            connect(1, up()),
            connect(2, of_8.clone()),
            sample(
                3 * SEC,
                vec![(1, up()), (2, of_8)],
                vec![
                    socket(PID, 20, local(50001), OLD, ESTABLISHED, 0),
                    socket(8, 20, local(50002), OLD, ESTABLISHED, 0),
                ],
            ),
        ] {
            table.apply(input);
        }
        assert_eq!(table.conns().count(), 4);
        table.apply(targets(&[8]));
        assert_eq!(locals(&table), vec![local(40002), local(50002)]);
        assert!(table.conns().all(|c| c.pid == 8));
        assert_eq!(
            table.targets(),
            &[Target {
                pid: 8,
                comm: "relay-8".into()
            }]
        );
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 2, 0));
        assert_eq!(totals(&table, OLD_HOST), host(&[OLD], 2, 0));
    }

    #[test]
    fn the_closing_sockets_of_an_exited_target_are_not_counted_again() {
        // The process exits: the kernel closes its sockets (FIN_WAIT1) and keeps them, and
        // their records, until TCP is done with them, long after the process is gone.
        let closing = KernelConn {
            state: FIN_WAIT1,
            local_close_ns: Some(5 * SEC),
            ..up()
        };
        let mut table = table_after([
            connect(1, kconn(0, UP, SEC)),
            state(1, SYN_SENT, up()),
            targets(&[]),
        ]);
        assert_eq!(table.conns().count(), 0);
        table.apply(sample(6 * SEC, vec![(1, closing.clone())], vec![]));
        table.apply(state(
            1,
            FIN_WAIT1,
            KernelConn {
                state: FIN_WAIT2,
                ..closing.clone()
            },
        ));
        assert_eq!(
            table.conns().count(),
            0,
            "no connection of an exited process comes back"
        );
        table.apply(close(
            1,
            FIN_WAIT2,
            OTHER_PID,
            KernelConn {
                state: CLOSE,
                peer_fin_at_close: true,
                ..closing
            },
        ));
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));

        // Its pid reused by a new target is traced afresh.
        table.apply(targets(&[PID]));
        table.apply(connect(2, kconn(0, UP, 8 * SEC)));
        assert_eq!(only(&table).opened_ns, 8 * SEC);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 2, 0));
    }

    #[test]
    fn events_of_an_older_socket_never_touch_a_newer_one_at_the_same_address() {
        // The map sample is newer than the events still queued: it can show a new socket at
        // an address whose old socket's Connect and Close are still on their way.
        let sk = 7;
        let old = established(kconn(40001, UP, SEC), SEC);
        let mut table = table_after([]);
        let new = established(kconn(40002, "10.0.0.13:443", 3 * SEC), 3 * SEC);
        table.apply(sample(4 * SEC, vec![(sk, new.clone())], vec![]));
        assert_eq!(totals(&table, "10.0.0.13").connections_total, 1);
        // The old socket's Connect: it must not replace the newer one...
        table.apply(connect(sk, old.clone()));
        assert_eq!(locals(&table), vec![local(40002)]);
        // ...nor its name rename it...
        table.apply(Input::Named {
            sk,
            opened_ns: SEC,
            name: named("generativelanguage.googleapis.com", None, NameSource::Sni),
        });
        assert_eq!(only(&table).host, "10.0.0.13");
        assert!(table
            .hosts()
            .get("generativelanguage.googleapis.com")
            .is_none());
        // ...and its Close (with its response unread) ends it, not the newer one, and is
        // judged under its own address.
        let closing = KernelConn {
            state: CLOSE,
            recv_q: recv_q(5000, 2 * SEC),
            closed_by_process: true,
            ..old
        };
        table.apply(close(sk, ESTABLISHED, PID, closing));
        assert_eq!(locals(&table), vec![local(40002)]);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 1));
        assert_eq!(totals(&table, "10.0.0.13"), host(&["10.0.0.13:443"], 1, 0));
        // The newer socket's own Connect, queued behind, finds it: counted once.
        table.apply(connect(sk, new));
        assert_eq!(locals(&table), vec![local(40002)]);
        assert_eq!(totals(&table, "10.0.0.13").connections_total, 1);
        // A name of a socket newer than the one held waits for it.
        table.apply(Input::Named {
            sk,
            opened_ns: 5 * SEC,
            name: named("api.openai.com", None, NameSource::Sni),
        });
        assert_eq!(only(&table).host, "10.0.0.13");
        // A Close of a socket newer than the one held: the held one's Close was lost; the
        // newer one opened and closed between two looks, counted under the name it had.
        let newest = KernelConn {
            state: CLOSE,
            ..established(kconn(40003, UP, 5 * SEC), 5 * SEC)
        };
        table.apply(close(sk, ESTABLISHED, OTHER_PID, newest));
        assert!(locals(&table).is_empty());
        assert_eq!(totals(&table, UP_HOST).connections_total, 1);
        assert_eq!(totals(&table, "api.openai.com").connections_total, 1);
        assert_eq!(totals(&table, "10.0.0.13").connections_total, 1);
        table.apply(sample(
            6 * SEC,
            vec![(sk, established(kconn(40004, UP, 6 * SEC), 6 * SEC))],
            vec![],
        ));
        assert_eq!(only(&table).host, UP_HOST, "no name is left waiting");
    }

    use crate::model::NameSource;

    fn named(host: &str, provider: Option<&str>, source: NameSource) -> ConnName {
        ConnName {
            host: host.into(),
            provider: provider.map(Into::into),
            source,
        }
    }

    #[test]
    fn a_connection_named_by_its_first_bytes_moves_to_that_host_with_its_count() {
        let conn = established(kconn(40001, UP, SEC), 2 * SEC);
        let mut table = table_after([connect(1, conn.clone())]);
        assert_eq!(totals(&table, UP_HOST).connections_total, 1);
        table.apply(Input::Named {
            sk: 1,
            opened_ns: SEC,
            name: named("api.openai.com", Some("openai"), NameSource::Sni),
        });
        assert!(
            table.hosts().get(UP_HOST).is_none(),
            "the address entry is gone once empty"
        );
        let t = totals(&table, "api.openai.com");
        assert_eq!(
            (t.connections_total, t.provider.as_deref()),
            (1, Some("openai"))
        );
        assert_eq!(
            t.remotes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec![UP.to_string()]
        );
        // Closing counts closed_unread under the name, not the address.
        let closing = KernelConn {
            recv_q: recv_q(5000, 3 * SEC),
            closed_by_process: true,
            ..conn
        };
        table.apply(close(1, ESTABLISHED, PID, closing));
        let t = totals(&table, "api.openai.com");
        assert_eq!((t.connections_total, t.closed_unread_total), (1, 1));
        assert!(table.hosts().get(UP_HOST).is_none());
    }

    #[test]
    fn an_address_name_is_a_fallback_that_first_bytes_override() {
        let ip: IpAddr = UP_HOST.parse().expect("ip");
        let mut table = table_after([
            connect(1, established(kconn(40001, UP, SEC), 2 * SEC)),
            connect(2, established(kconn(40002, UP, SEC), 2 * SEC)),
        ]);
        table.apply(Input::AddressNames(vec![(
            ip,
            named("api.anthropic.com", Some("anthropic"), NameSource::Dns),
        )]));
        assert_eq!(totals(&table, "api.anthropic.com").connections_total, 2);
        // Its own SNI wins over the address book for connection 2 (a CDN address can front several).
        table.apply(Input::Named {
            sk: 2,
            opened_ns: SEC,
            name: named("api.openai.com", Some("openai"), NameSource::Sni),
        });
        assert_eq!(totals(&table, "api.anthropic.com").connections_total, 1);
        assert_eq!(totals(&table, "api.openai.com").connections_total, 1);
        // A weaker name never replaces a stronger one.
        table.apply(Input::Named {
            sk: 2,
            opened_ns: SEC,
            name: named("other.example", None, NameSource::Dns),
        });
        assert_eq!(totals(&table, "api.openai.com").connections_total, 1);
        // The address book forgets the address: connection 1 goes back to its address.
        table.apply(Input::AddressNames(vec![]));
        assert_eq!(totals(&table, UP_HOST).connections_total, 1);
        assert!(table.hosts().get("api.anthropic.com").is_none());
        assert_eq!(totals(&table, "api.openai.com").connections_total, 1);
    }

    #[test]
    fn a_connection_named_and_closed_between_samples_counts_under_its_name() {
        // No Connect event: the name comes first, then the Close with the whole record.
        let mut table = table_after([]);
        table.apply(Input::Named {
            sk: 5,
            opened_ns: SEC,
            name: named("api.openai.com", Some("openai"), NameSource::Sni),
        });
        let closed = KernelConn {
            state: CLOSE,
            closed_by_process: true,
            ..up()
        };
        table.apply(close(5, FIN_WAIT2, OTHER_PID, closed));
        assert_eq!(table.conns().count(), 0);
        assert_eq!(totals(&table, "api.openai.com").connections_total, 1);
        assert_eq!(
            totals(&table, "api.openai.com").provider.as_deref(),
            Some("openai")
        );
        assert!(table.hosts().get(UP_HOST).is_none());
    }

    #[test]
    fn a_name_waits_through_one_sample_for_a_close_still_queued() {
        let mut table = table_after([]);
        table.apply(Input::Named {
            sk: 5,
            opened_ns: SEC,
            name: named("api.openai.com", None, NameSource::Sni),
        });
        // Closed after the name and before this sample read the map; its Close comes after.
        table.apply(sample(2 * SEC, vec![], vec![]));
        let closed = KernelConn {
            state: CLOSE,
            ..up()
        };
        table.apply(close(5, FIN_WAIT2, OTHER_PID, closed));
        assert_eq!(totals(&table, "api.openai.com").connections_total, 1);
        assert!(table.hosts().get(UP_HOST).is_none());

        // A name no Close and no map entry claims is gone after the next sample.
        table.apply(Input::Named {
            sk: 6,
            opened_ns: 3 * SEC,
            name: named("gone.example", None, NameSource::Sni),
        });
        table.apply(sample(4 * SEC, vec![], vec![]));
        table.apply(sample(5 * SEC, vec![], vec![]));
        assert!(table.early_names.is_empty());
    }

    #[test]
    fn a_map_entry_read_after_its_close_is_not_a_new_connection() {
        let closed = KernelConn {
            state: CLOSE,
            ..up()
        };
        let mut table = table_after([close(1, FIN_WAIT2, OTHER_PID, closed)]);
        // The kernel sends the Close, then deletes the entry: a map read in between sees it.
        table.apply(sample(3 * SEC, vec![(1, up())], vec![]));
        assert_eq!(table.conns().count(), 0);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 1, 0));
        // A newer socket at that address is new.
        let reused = established(kconn(40002, UP, 4 * SEC), 4 * SEC);
        table.apply(sample(5 * SEC, vec![(1, reused)], vec![]));
        assert_eq!(only(&table).opened_ns, 4 * SEC);
        assert_eq!(totals(&table, UP_HOST), host(&[UP], 2, 0));
    }

    #[test]
    fn a_name_for_an_unknown_socket_is_ignored() {
        let mut table = table_after([]);
        table.apply(Input::Named {
            sk: 99,
            opened_ns: SEC,
            name: named("api.openai.com", None, NameSource::Sni),
        });
        assert!(table.hosts().is_empty());
    }
}
