//! The connection table: every open upstream connection of the targets, and per-host totals
//! of connections that came and went.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use super::{
    classify, tcp_state, unread_data, Input, KernelConn, KernelEvent, KernelEventKind, KernelStats,
    RecvQ, Sample, SocketSample, Target,
};

/// How a connection came to be in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Seen from its connect() on: full history.
    Traced,
    /// Already open when tracing started: found through sock_diag and /proc, judged from
    /// socket samples only (no read history, so never judged `abandoned`).
    PreExisting,
}

/// Identity of a connection in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnKey {
    /// The socket's kernel address.
    Socket(u64),
    /// (local, remote) of a pre-existing connection.
    Tuple(SocketAddr, SocketAddr),
}

/// One upstream connection of a target process.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConn {
    pub origin: Origin,
    pub pid: u32,
    pub fd: Option<i32>,
    pub comm: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u32,
    /// connect() time, or when first seen for a pre-existing connection.
    pub opened_ns: u64,
    pub established_ns: Option<u64>,
    /// When the upstream's FIN arrived (or CLOSE_WAIT was first seen).
    pub peer_fin_ns: Option<u64>,
    pub local_close_ns: Option<u64>,
    pub last_read_ns: Option<u64>,
    pub last_read_ret: Option<i64>,
    pub reads: u64,
    pub bytes_read: u64,
    pub reads_inflight: u32,
    /// Freshest receive-queue sample, from the kernel side or sock_diag.
    pub recv_q: Option<RecvQ>,
    /// Consecutive samples in which the kernel side no longer had this socket.
    missing_samples: u8,
}

impl UpstreamConn {
    /// Open from the process's point of view: not closed by it, not fully closed by TCP.
    pub fn is_open(&self) -> bool {
        self.local_close_ns.is_none()
            && matches!(
                self.state,
                tcp_state::SYN_SENT | tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT
            )
    }

    /// Response bytes waiting unread (an unread FIN is not counted).
    pub fn unread_bytes(&self) -> u32 {
        self.recv_q.map_or(0, |q| unread_data(q.bytes, self.state))
    }

    /// The raw receive queue (`ss` Recv-Q), FIN included.
    pub fn recv_q_bytes(&self) -> u32 {
        self.recv_q.map_or(0, |q| q.bytes)
    }

    /// The last sign that someone uses the connection: its last read, else its establishment,
    /// else its opening.
    pub fn last_activity_ns(&self) -> u64 {
        self.last_read_ns
            .or(self.established_ns)
            .unwrap_or(self.opened_ns)
            .max(self.opened_ns)
    }

    pub fn set_recv_q(&mut self, bytes: u32, at_ns: u64) {
        if self.recv_q.is_none_or(|q| q.at_ns <= at_ns) {
            self.recv_q = Some(RecvQ { bytes, at_ns });
        }
    }

    fn from_kernel(conn: &KernelConn) -> Self {
        let mut c = Self {
            origin: Origin::Traced,
            pid: conn.pid,
            fd: conn.fd,
            comm: conn.comm.clone(),
            local: conn.local,
            remote: conn.remote,
            state: conn.state,
            opened_ns: conn.connect_ns,
            established_ns: None,
            peer_fin_ns: None,
            local_close_ns: None,
            last_read_ns: None,
            last_read_ret: None,
            reads: 0,
            bytes_read: 0,
            reads_inflight: 0,
            recv_q: None,
            missing_samples: 0,
        };
        c.update_from_kernel(conn);
        c
    }

    /// The kernel record is always the newest truth for everything it tracks.
    fn update_from_kernel(&mut self, conn: &KernelConn) {
        self.state = conn.state;
        if conn.fd.is_some() {
            self.fd = conn.fd;
        }
        // The source port is chosen during connect(); the SYN_SENT record may predate it.
        if conn.local.port() != 0 {
            self.local = conn.local;
        }
        self.established_ns = conn.established_ns;
        self.peer_fin_ns = conn.peer_fin_ns;
        self.local_close_ns = conn.local_close_ns;
        self.last_read_ns = conn.last_read_ns;
        self.last_read_ret = (conn.reads > 0).then_some(conn.last_read_ret);
        self.reads = conn.reads;
        self.bytes_read = conn.bytes_read;
        self.reads_inflight = conn.reads_inflight;
        if let Some(q) = conn.recv_q {
            self.set_recv_q(q.bytes, q.at_ns);
        }
        self.missing_samples = 0;
    }

    fn from_socket(s: &SocketSample, now_ns: u64, comm: String) -> Self {
        Self {
            origin: Origin::PreExisting,
            pid: s.pid,
            fd: Some(s.fd),
            comm,
            local: s.local,
            remote: s.remote,
            state: s.state,
            opened_ns: now_ns,
            established_ns: (s.state == tcp_state::ESTABLISHED
                || s.state == tcp_state::CLOSE_WAIT)
                .then_some(now_ns),
            peer_fin_ns: (s.state == tcp_state::CLOSE_WAIT).then_some(now_ns),
            local_close_ns: None,
            last_read_ns: None,
            last_read_ret: None,
            reads: 0,
            bytes_read: 0,
            reads_inflight: 0,
            recv_q: Some(RecvQ { bytes: s.recv_q, at_ns: now_ns }),
            missing_samples: 0,
        }
    }

    #[cfg(test)]
    pub fn for_test(origin: Origin) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], 40000));
        Self {
            origin,
            pid: 1,
            fd: Some(3),
            comm: "relay".into(),
            local: addr,
            remote: SocketAddr::from(([127, 0, 0, 12], 443)),
            state: tcp_state::ESTABLISHED,
            opened_ns: 0,
            established_ns: None,
            peer_fin_ns: None,
            local_close_ns: None,
            last_read_ns: None,
            last_read_ret: None,
            reads: 0,
            bytes_read: 0,
            reads_inflight: 0,
            recv_q: None,
            missing_samples: 0,
        }
    }
}

/// Totals per upstream host over the whole session, including connections already gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTotals {
    pub remotes: BTreeSet<SocketAddr>,
    pub connections_total: u64,
    pub closed_unread_total: u64,
}

/// The table and everything else the model keeps between inputs.
#[derive(Debug, Default)]
pub struct ConnTable {
    conns: HashMap<ConnKey, UpstreamConn>,
    hosts: BTreeMap<IpAddr, HostTotals>,
    targets: Vec<Target>,
    stats: KernelStats,
    samples_seen: u64,
    /// Sockets closed by TCP while their Connect event may still be queued: late events for
    /// them must not resurrect the connection.
    closed_sockets: HashSet<u64>,
}

impl ConnTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply(&mut self, input: Input) {
        match input {
            Input::Kernel(event) => self.apply_event(&event),
            Input::Sample(sample) => self.apply_sample(&sample),
            Input::Targets(targets) => self.apply_targets(targets),
        }
    }

    pub fn conns(&self) -> impl Iterator<Item = &UpstreamConn> {
        self.conns.values()
    }

    pub fn hosts(&self) -> &BTreeMap<IpAddr, HostTotals> {
        &self.hosts
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn stats(&self) -> KernelStats {
        self.stats
    }

    fn host_mut(&mut self, remote: SocketAddr) -> &mut HostTotals {
        let host = self.hosts.entry(remote.ip()).or_default();
        host.remotes.insert(remote);
        host
    }

    fn track_new(&mut self, key: ConnKey, conn: UpstreamConn) {
        self.host_mut(conn.remote).connections_total += 1;
        self.conns.insert(key, conn);
    }

    fn apply_event(&mut self, event: &KernelEvent) {
        let key = ConnKey::Socket(event.sk);
        match event.kind {
            KernelEventKind::Connect | KernelEventKind::State => {
                if self.closed_sockets.contains(&event.sk) {
                    return;
                }
                match self.conns.get_mut(&key) {
                    Some(conn) => conn.update_from_kernel(&event.conn),
                    None => self.track_new(key, UpstreamConn::from_kernel(&event.conn)),
                }
            }
            KernelEventKind::Close => {
                if self.conns.remove(&key).is_none() {
                    // Opened and closed between two looks, or its Connect event was lost.
                    self.host_mut(event.conn.remote).connections_total += 1;
                }
                // Kernel addresses are reused by new sockets; remember only recent closes.
                if self.closed_sockets.len() > 65_536 {
                    self.closed_sockets.clear();
                }
                self.closed_sockets.insert(event.sk);
                let by_process = event.conn.closed_by_process
                    || event.conn.local_close_ns.is_some()
                    || (event.ctx_pid == event.conn.pid
                        && matches!(
                            event.old_state,
                            tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT
                        ));
                let ending = classify::Ending {
                    recv_q: event.conn.recv_q.map_or(0, |q| q.bytes),
                    state_before: event.old_state,
                    closed_by_process: by_process,
                    reset: event.conn.reset_at_close,
                };
                if classify::closed_unread(ending) {
                    self.host_mut(event.conn.remote).closed_unread_total += 1;
                }
            }
        }
    }

    fn apply_sample(&mut self, sample: &Sample) {
        self.stats = sample.stats;
        let first_sample = self.samples_seen == 0;
        self.samples_seen += 1;

        // Kernel-tracked sockets: refresh, adopt ones whose Connect event is still queued or
        // was lost, and forget ones the kernel dropped (their Close event was lost).
        let mut in_kernel = HashSet::with_capacity(sample.kernel.len());
        for (sk, conn) in &sample.kernel {
            in_kernel.insert(*sk);
            // A live entry at a recently closed address is a new socket.
            self.closed_sockets.remove(sk);
            let key = ConnKey::Socket(*sk);
            match self.conns.get_mut(&key) {
                Some(existing) => existing.update_from_kernel(conn),
                None => self.track_new(key, UpstreamConn::from_kernel(conn)),
            }
        }
        self.conns.retain(|key, conn| match key {
            ConnKey::Socket(sk) if !in_kernel.contains(sk) => {
                conn.missing_samples += 1;
                conn.missing_samples < 2
            }
            _ => true,
        });

        // Sockets as the kernel's socket table sees them right now.
        let listening: HashSet<(u32, u16)> = sample
            .sockets
            .iter()
            .filter(|s| s.state == tcp_state::LISTEN)
            .map(|s| (s.pid, s.local.port()))
            .collect();
        let by_tuple: HashMap<(SocketAddr, SocketAddr), ConnKey> = self
            .conns
            .iter()
            .map(|(key, c)| ((c.local, c.remote), *key))
            .collect();
        let mut seen_tuples = HashSet::new();
        for s in &sample.sockets {
            if s.state == tcp_state::LISTEN || listening.contains(&(s.pid, s.local.port())) {
                // A listener, or a connection accepted from one: inbound, not upstream.
                continue;
            }
            seen_tuples.insert((s.local, s.remote));
            match by_tuple.get(&(s.local, s.remote)) {
                Some(key) => {
                    if let Some(conn) = self.conns.get_mut(key) {
                        let previous = conn.recv_q;
                        conn.set_recv_q(s.recv_q, sample.now_ns);
                        if conn.fd.is_none() {
                            conn.fd = Some(s.fd);
                        }
                        if conn.origin == Origin::PreExisting {
                            note_read_from_samples(conn, previous, sample.now_ns);
                            update_pre_existing(conn, s, sample.now_ns);
                        }
                    }
                }
                None if first_sample && is_connected(s.state) => {
                    // Open before we attached: judge it from socket samples from now on.
                    let comm = self
                        .targets
                        .iter()
                        .find(|t| t.pid == s.pid)
                        .map(|t| t.comm.clone())
                        .unwrap_or_default();
                    let conn = UpstreamConn::from_socket(s, sample.now_ns, comm);
                    self.track_new(ConnKey::Tuple(s.local, s.remote), conn);
                }
                None => {}
            }
        }
        // A pre-existing connection gone from the socket table was closed.
        self.conns.retain(|key, _| match key {
            ConnKey::Tuple(local, remote) => seen_tuples.contains(&(*local, *remote)),
            ConnKey::Socket(_) => true,
        });
    }

    fn apply_targets(&mut self, targets: Vec<Target>) {
        let alive: HashSet<u32> = targets.iter().map(|t| t.pid).collect();
        // Connections of a process that exited went with it.
        self.conns.retain(|_, c| alive.contains(&c.pid));
        self.targets = targets;
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
    if !matches!(s.state, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT) && conn.local_close_ns.is_none() {
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
