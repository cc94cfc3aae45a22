//! The targets' sockets as the kernel's socket table has them, read two ways:
//!
//! - a **full scan** lists every socket fd of every target (`/proc/PID/fd`) and dumps the TCP
//!   table of each of their network namespaces through sock_diag. It finds what nothing else
//!   tells us about: connections opened before tracing started (or before their process became
//!   a target), listeners (which tell accepted connections apart), and connections the kernel
//!   map lost. Its cost grows with the host: a dump walks every bucket of the TCP hash table,
//!   twice (IPv4 and IPv6), however few sockets the targets hold.
//! - a **refresh** looks up by address only the sockets already known: the targets' open
//!   connections in the kernel map and the connections the last full scan found, for what the
//!   kernel map cannot give, the receive queue as of now (the programs sample it only when the
//!   socket is read or changes state) and the state of connections no program follows. It
//!   costs in proportion to those sockets.
//!
//! A refresh answers, for every socket it looks up, what a full scan at that moment would
//! have (same states, the same socket by inode): the model takes both the same way. What it
//! cannot see is a socket nobody knew of, so full scans still run at start, whenever something
//! says such a socket may exist (`Schedule::want_full`: the targets changed, the kernel map
//! was full, or an entry left it with no Close event), and every `FULL_EVERY` regardless.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Result;
use tracer_common::tcp_state;

use super::{netns, procfs, sockdiag};
use crate::model::{KernelConn, SocketSample, Target};

/// Scans take at most 1/COST_SHARE of one CPU, whatever they find: the next one waits
/// COST_SHARE times as long as the last took.
const COST_SHARE: u32 = 20;
/// Sample ticks are not exact: a scan due "in a second" should not slip to the tick after.
const SLACK: Duration = Duration::from_millis(100);
/// A full scan runs at least this often even when nothing asks for one: the net under what
/// `want_full`'s reasons do not foresee (a socket passed to a target over a unix socket).
pub const FULL_EVERY: Duration = Duration::from_secs(30);

/// The states a scan reports. Listeners tell accepted (inbound) connections apart; TIME_WAIT
/// and other closing states, often the bulk of a busy host's sockets, are not needed.
const STATES: sockdiag::StateMask = sockdiag::StateMask::CONNECTED
    .with(tcp_state::SYN_SENT as u8)
    .with(tcp_state::LISTEN as u8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanKind {
    Full,
    Refresh,
}

/// When the socket table was read, each way, what that cost, and whether a full scan is
/// wanted before its time.
#[derive(Debug, Default)]
pub struct Schedule {
    /// The last full scan's start and duration.
    last_full: Option<(Instant, Duration)>,
    /// The last scan of either kind.
    last: Option<(Instant, Duration)>,
    full_wanted: bool,
}

impl Schedule {
    /// Asks for a full scan as soon as the cost share allows: a socket no refresh knows of
    /// may exist.
    pub fn want_full(&mut self) {
        self.full_wanted = true;
    }

    /// The scan to start at `now`, if any, for samples taken every `sample_every`. Each kind
    /// waits at least a sample, and `COST_SHARE` times what its last one took.
    pub fn next(&self, now: Instant, sample_every: Duration) -> Option<ScanKind> {
        let paced = |(at, cost): (Instant, Duration)| {
            now.saturating_duration_since(at) + SLACK >= sample_every.max(cost * COST_SHARE)
        };
        let Some(full) = self.last_full else {
            return Some(ScanKind::Full);
        };
        let full_due =
            self.full_wanted || now.saturating_duration_since(full.0) + SLACK >= FULL_EVERY;
        if full_due && paced(full) && self.last.is_none_or(paced) {
            return Some(ScanKind::Full);
        }
        match self.last {
            Some(last) if !paced(last) => None,
            _ => Some(ScanKind::Refresh),
        }
    }

    /// A scan of `kind` starts: a full one answers every `want_full` made until now.
    pub fn started(&mut self, kind: ScanKind) {
        if kind == ScanKind::Full {
            self.full_wanted = false;
        }
    }

    /// A scan of `kind` that started at `at` took `cost`.
    pub fn done(&mut self, kind: ScanKind, at: Instant, cost: Duration) {
        if kind == ScanKind::Full {
            self.last_full = Some((at, cost));
        }
        self.last = Some((at, cost));
    }
}

/// One socket to look up at a refresh, and whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub pid: u32,
    pub fd: i32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The inode a scan saw at these addresses: the socket found must be that one. `None` for
    /// a connection from the kernel map (its inode is not known; any open file's will do).
    pub inode: Option<u64>,
}

/// What the refreshes look up: the sockets the scans found and the kernel map's.
#[derive(Debug, Default)]
pub struct Book {
    /// The targets' outbound connections (ESTABLISHED, CLOSE_WAIT) the last full scan found,
    /// less those gone since: every pre-existing connection the model follows is one of them.
    scanned: Vec<Lookup>,
    /// (pid, local port) of the targets' listeners at the last full scan: a connection on such
    /// a port was accepted, not made (the model ignores those).
    listening: HashSet<(u32, u16)>,
    /// The targets' open connections (ESTABLISHED, CLOSE_WAIT) in the kernel map at the last
    /// sample.
    tracked: Vec<Lookup>,
}

impl Book {
    /// Takes what a full scan found.
    pub fn after_full(&mut self, sockets: &[SocketSample]) {
        self.listening = sockets
            .iter()
            .filter(|s| s.state == tcp_state::LISTEN)
            .map(|s| (s.pid, s.local.port()))
            .collect();
        self.scanned = sockets
            .iter()
            .filter(|s| is_connected(s.state) && !self.listening.contains(&(s.pid, s.local.port())))
            .map(|s| Lookup {
                pid: s.pid,
                fd: s.fd,
                local: s.local,
                remote: s.remote,
                inode: Some(s.inode),
            })
            .collect();
    }

    /// Forgets the scanned sockets a refresh no longer found (closed, or past the states a
    /// scan reports): they cannot come back.
    pub fn after_refresh(&mut self, found: &[SocketSample]) {
        let inodes: HashSet<u64> = found.iter().map(|s| s.inode).collect();
        self.scanned
            .retain(|s| s.inode.is_some_and(|inode| inodes.contains(&inode)));
    }

    /// Takes the kernel map as a sample read it: its open connections of live targets.
    pub fn note_kernel(&mut self, kernel: &[(u64, KernelConn)], targets: &BTreeMap<u32, Target>) {
        self.tracked = kernel
            .iter()
            .map(|(_, c)| c)
            .filter(|c| {
                is_connected(c.state) && c.local.port() != 0 && targets.contains_key(&c.pid)
            })
            .filter_map(|c| {
                // Without the fd a sample could not say whose socket it is; the next full scan
                // finds it.
                Some(Lookup {
                    pid: c.pid,
                    fd: c.fd?,
                    local: c.local,
                    remote: c.remote,
                    inode: None,
                })
            })
            .collect();
    }

    /// Every socket to look up at a refresh, once each. Accepted connections are left out, as
    /// the model would ignore them.
    pub fn lookups(&self) -> Vec<Lookup> {
        let scanned: HashSet<(SocketAddr, SocketAddr)> =
            self.scanned.iter().map(|s| (s.local, s.remote)).collect();
        let mut lookups = self.scanned.clone();
        lookups.extend(
            self.tracked
                .iter()
                .filter(|t| {
                    !scanned.contains(&(t.local, t.remote))
                        && !self.listening.contains(&(t.pid, t.local.port()))
                })
                .cloned(),
        );
        lookups
    }
}

/// Watches the kernel map for connections it lost: an entry that left the map with no Close
/// event (the LRU map evicted it, or its Close was dropped with the ring full), or a
/// connection the map could not take (`conn_map_full`). Their sockets are known to no refresh.
#[derive(Debug, Default)]
pub struct MapWatch {
    /// The map's keys at the last sample.
    keys: HashSet<u64>,
    /// Sockets whose Close event was drained since the last sample.
    closed_since: HashSet<u64>,
    /// Keys gone from the map at the last sample with no Close drained by then. Events are
    /// drained before each sample, so a Close not in by the next one will not come.
    gone_unclosed: Vec<u64>,
    map_full_seen: u64,
}

impl MapWatch {
    /// A Close event for the socket at `sk` was drained.
    pub fn closed(&mut self, sk: u64) {
        self.closed_since.insert(sk);
    }

    /// Takes the map's keys as a sample read them and the kernel side's `conn_map_full`
    /// count; says why a full scan is wanted, if it is.
    pub fn observe(
        &mut self,
        keys: impl Iterator<Item = u64>,
        conn_map_full: u64,
    ) -> Option<&'static str> {
        let keys: HashSet<u64> = keys.collect();
        // One back in the map was only missed by a read (entry by entry, a read of a map that
        // changes meanwhile can skip keys).
        let lost = self
            .gone_unclosed
            .iter()
            .any(|sk| !self.closed_since.contains(sk) && !keys.contains(sk));
        self.gone_unclosed = self
            .keys
            .iter()
            .filter(|sk| !keys.contains(*sk) && !self.closed_since.contains(*sk))
            .copied()
            .collect();
        self.keys = keys;
        self.closed_since.clear();
        let full = conn_map_full > self.map_full_seen;
        self.map_full_seen = conn_map_full;
        if full {
            Some("the kernel map was full")
        } else if lost {
            Some("a connection left the kernel map with no Close event")
        } else {
            None
        }
    }
}

fn is_connected(state: u32) -> bool {
    matches!(state, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT)
}

/// Every TCP socket the targets `pids` hold, from sock_diag matched to their fds. Blocking,
/// and long on a host with many sockets: it runs on a thread of its own.
pub fn full(pids: &[u32]) -> Result<Vec<SocketSample>> {
    let started = Instant::now();
    let mut sockets = Vec::new();
    let mut inode_owner = HashMap::new();
    for pid in pids {
        // A target may exit between the scan and now; it is dropped at the next refresh.
        if let Ok(inodes) = procfs::socket_inodes(*pid) {
            for (inode, fd) in inodes {
                inode_owner.insert(inode, (*pid, fd));
            }
        }
    }
    // Only the targets' sockets are kept from the dumps (the fds were listed first, so a
    // socket opened in between waits for the next scan). One dump per network namespace the
    // targets are in (a relay in a container has its own); the addresses are the ones the
    // relay itself sees. Inodes are unique across namespaces, so the same addresses in two
    // containers never mix.
    let inodes: HashSet<u64> = inode_owner.keys().copied().collect();
    let mut all = Vec::new();
    for (ns, pid) in netns::group(pids) {
        match netns::dump_in_namespace_of(pid, STATES, inodes.clone()) {
            Ok(found) => all.extend(found),
            // One namespace that cannot be entered (a target exiting now, a missing
            // capability) must not blind the scan of the others.
            Err(e) => netns::warn_once(ns, &e),
        }
    }
    for s in all {
        if let Some((pid, fd)) = inode_owner.get(&s.inode).filter(|_| s.inode != 0) {
            sockets.push(sample_of(*pid, *fd, &s));
        }
    }
    log::debug!(
        "scan: full, {} target sockets of {} target inodes in {:?}",
        sockets.len(),
        inode_owner.len(),
        started.elapsed()
    );
    Ok(sockets)
}

/// The sockets of `lookups` as a full scan would show them now: found at their addresses in
/// their owner's network namespace, in a state a scan reports, the same socket (inode) as the
/// scan saw, and still open as a file. Blocking: it runs on a thread of its own.
pub fn refresh(lookups: Vec<Lookup>) -> Result<Vec<SocketSample>> {
    let started = Instant::now();
    let asked = lookups.len();
    // One lookup batch per network namespace, entered through one of its pids.
    let mut by_ns: BTreeMap<netns::NetNs, (u32, Vec<Lookup>)> = BTreeMap::new();
    // Each pid's namespace read once (a `stat` of /proc/PID/ns/net), not once per socket: a
    // relay that leaked 10k connections has 10k lookups and one pid.
    let mut ns_of: BTreeMap<u32, Option<netns::NetNs>> = BTreeMap::new();
    for lookup in lookups {
        let ns = *ns_of
            .entry(lookup.pid)
            .or_insert_with(|| netns::of_pid(lookup.pid));
        // A target that exited has no namespace: its sockets went with it.
        if let Some(ns) = ns {
            by_ns
                .entry(ns)
                .or_insert_with(|| (lookup.pid, Vec::new()))
                .1
                .push(lookup);
        }
    }
    let mut sockets = Vec::new();
    for (ns, (pid, lookups)) in by_ns {
        let wanted = lookups.iter().map(|l| (l.local, l.remote)).collect();
        match netns::lookup_in_namespace_of(pid, wanted) {
            Ok(found) => sockets.extend(
                lookups
                    .iter()
                    .zip(found)
                    .filter_map(|(lookup, info)| as_scanned(lookup, &info?)),
            ),
            Err(e) => netns::warn_once(ns, &e),
        }
    }
    log::debug!(
        "scan: refresh, {} of {asked} known sockets in {:?}",
        sockets.len(),
        started.elapsed()
    );
    Ok(sockets)
}

/// `info`, found for `lookup`, as a full scan would have shown it (`None`: it would not have).
fn as_scanned(lookup: &Lookup, info: &sockdiag::TcpSockInfo) -> Option<SocketSample> {
    let same_socket = match lookup.inode {
        Some(inode) => info.inode == inode,
        // A closed file's socket has no inode (TIME_WAIT, orphans): no fd holds it.
        None => info.inode != 0,
    };
    let reported = info.state != tcp_state::LISTEN as u8 && STATES.contains(info.state);
    (same_socket && reported).then(|| sample_of(lookup.pid, lookup.fd, info))
}

fn sample_of(pid: u32, fd: i32, s: &sockdiag::TcpSockInfo) -> SocketSample {
    SocketSample {
        pid,
        fd,
        local: s.local,
        remote: s.remote,
        state: u32::from(s.state),
        recv_q: s.recv_q,
        inode: s.inode,
    }
}

#[cfg(test)]
// A test fails by panicking, so unwrapping is how it reports.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::{TcpListener, TcpStream};

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_scan_is_full_then_refreshes_each_sample() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.next(t0, SEC), Some(ScanKind::Full));
        s.started(ScanKind::Full);
        s.done(ScanKind::Full, t0, 3 * MS);
        assert_eq!(s.next(t0 + 500 * MS, SEC), None, "not before a sample");
        assert_eq!(s.next(t0 + 950 * MS, SEC), Some(ScanKind::Refresh));
        s.started(ScanKind::Refresh);
        s.done(ScanKind::Refresh, t0 + SEC, MS);
        assert_eq!(s.next(t0 + 2 * SEC, SEC), Some(ScanKind::Refresh));
        // Nothing asks for a full scan: one every FULL_EVERY all the same.
        assert_eq!(
            s.next(t0 + FULL_EVERY - 2 * SEC, SEC),
            Some(ScanKind::Refresh)
        );
        assert_eq!(s.next(t0 + FULL_EVERY, SEC), Some(ScanKind::Full));
    }

    #[test]
    fn a_full_scan_asked_for_runs_at_the_next_sample_and_once() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.started(ScanKind::Full);
        s.done(ScanKind::Full, t0, 3 * MS);
        s.want_full();
        assert_eq!(s.next(t0 + 500 * MS, SEC), None);
        assert_eq!(s.next(t0 + SEC, SEC), Some(ScanKind::Full));
        s.started(ScanKind::Full);
        // Asked for again while it runs: the scan may have listed the fds before the reason.
        s.want_full();
        s.done(ScanKind::Full, t0 + SEC, 3 * MS);
        assert_eq!(s.next(t0 + 2 * SEC, SEC), Some(ScanKind::Full));
        s.started(ScanKind::Full);
        s.done(ScanKind::Full, t0 + 2 * SEC, 3 * MS);
        assert_eq!(s.next(t0 + 3 * SEC, SEC), Some(ScanKind::Refresh));
    }

    #[test]
    fn scans_keep_to_their_share_of_a_cpu() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.started(ScanKind::Full);
        // A host with 100k sockets: the dump took 400 ms, so the next read waits 8 s.
        s.done(ScanKind::Full, t0, 400 * MS);
        s.want_full();
        assert_eq!(s.next(t0 + 7 * SEC, SEC), None);
        assert_eq!(s.next(t0 + 8 * SEC, SEC), Some(ScanKind::Full));
        // Its share holds refreshes back too.
        s.started(ScanKind::Full);
        s.done(ScanKind::Full, t0 + 8 * SEC, 400 * MS);
        assert_eq!(s.next(t0 + 9 * SEC, SEC), None);
        assert_eq!(s.next(t0 + 16 * SEC, SEC), Some(ScanKind::Refresh));
        // A refresh of few sockets is cheap: the next one comes a sample later.
        s.started(ScanKind::Refresh);
        s.done(ScanKind::Refresh, t0 + 16 * SEC, MS);
        assert_eq!(s.next(t0 + 17 * SEC, SEC), Some(ScanKind::Refresh));
        s.want_full();
        assert_eq!(s.next(t0 + 17 * SEC, SEC), Some(ScanKind::Full));
    }

    #[test]
    fn a_map_entry_gone_without_its_close_asks_for_a_full_scan() {
        let mut w = MapWatch::default();
        assert_eq!(w.observe([1, 2, 3].into_iter(), 0), None);
        // 1 closed (its event came), 2 left and its Close is still queued.
        w.closed(1);
        assert_eq!(w.observe([3].into_iter(), 0), None);
        w.closed(2);
        assert_eq!(
            w.observe([3, 4].into_iter(), 0),
            None,
            "2's Close came late"
        );
        // 3 left and no Close by the sample after: the map lost it.
        assert_eq!(w.observe([4].into_iter(), 0), None);
        assert!(w.observe([4].into_iter(), 0).is_some());
        assert_eq!(w.observe([4].into_iter(), 0), None, "said once");
        // A read that missed 4 once, then found it again, lost nothing.
        assert_eq!(w.observe(std::iter::empty(), 0), None);
        assert_eq!(w.observe([4].into_iter(), 0), None);
        // The map could not take a connection.
        assert!(w.observe([4].into_iter(), 1).is_some());
        assert_eq!(w.observe([4].into_iter(), 1), None);
    }

    fn sample(
        pid: u32,
        fd: i32,
        local: &str,
        remote: &str,
        state: u32,
        inode: u64,
    ) -> SocketSample {
        SocketSample {
            pid,
            fd,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            recv_q: 0,
            inode,
        }
    }

    #[test]
    fn refreshes_look_up_outbound_connections_once_each() {
        let mut book = Book::default();
        book.after_full(&[
            sample(7, 3, "0.0.0.0:8080", "0.0.0.0:0", tcp_state::LISTEN, 10),
            // Accepted from the listener: inbound.
            sample(
                7,
                4,
                "10.0.0.1:8080",
                "10.0.0.9:5000",
                tcp_state::ESTABLISHED,
                11,
            ),
            // Pre-existing upstream connections.
            sample(
                7,
                5,
                "10.0.0.1:40000",
                "1.2.3.4:443",
                tcp_state::ESTABLISHED,
                12,
            ),
            sample(
                7,
                6,
                "10.0.0.1:40001",
                "1.2.3.4:443",
                tcp_state::CLOSE_WAIT,
                13,
            ),
            // Not yet connected: nothing a refresh would add.
            sample(
                7,
                8,
                "10.0.0.1:40003",
                "1.2.3.4:443",
                tcp_state::SYN_SENT,
                15,
            ),
        ]);
        let conn = |pid, fd, local: &str, state| {
            let mut c = crate::model::testkit::kconn(1, "1.2.3.4:443", 0);
            c.pid = pid;
            c.fd = fd;
            c.local = local.parse().unwrap();
            c.remote = "1.2.3.4:443".parse().unwrap();
            c.state = state;
            c
        };
        let targets: BTreeMap<u32, Target> = [(
            7,
            Target {
                pid: 7,
                comm: "relay".into(),
            },
        )]
        .into();
        book.note_kernel(
            &[
                // Traced, and in the scan too: looked up once, as the scan's socket.
                (
                    1,
                    conn(7, Some(5), "10.0.0.1:40000", tcp_state::ESTABLISHED),
                ),
                // Traced since the scan.
                (2, conn(7, Some(9), "10.0.0.1:40004", tcp_state::CLOSE_WAIT)),
                // Closing, connecting (no port yet), no fd, not a target's.
                (3, conn(7, Some(10), "10.0.0.1:40005", tcp_state::FIN_WAIT1)),
                (4, conn(7, Some(11), "0.0.0.0:0", tcp_state::SYN_SENT)),
                (5, conn(7, None, "10.0.0.1:40006", tcp_state::ESTABLISHED)),
                (
                    6,
                    conn(8, Some(3), "10.0.0.1:40007", tcp_state::ESTABLISHED),
                ),
            ],
            &targets,
        );
        let lookups = book.lookups();
        let got: Vec<(i32, Option<u64>)> = lookups.iter().map(|l| (l.fd, l.inode)).collect();
        assert_eq!(got, [(5, Some(12)), (6, Some(13)), (9, None)]);

        // A refresh that no longer finds inode 13 drops it for good.
        book.after_refresh(&[sample(
            7,
            5,
            "10.0.0.1:40000",
            "1.2.3.4:443",
            tcp_state::ESTABLISHED,
            12,
        )]);
        let got: Vec<i32> = book.lookups().iter().map(|l| l.fd).collect();
        assert_eq!(got, [5, 9]);
    }

    #[test]
    fn a_lookup_keeps_only_what_a_full_scan_would_show() {
        let lookup = |inode| Lookup {
            pid: 7,
            fd: 5,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "1.2.3.4:443".parse().unwrap(),
            inode,
        };
        let info = |state: u32, inode| sockdiag::TcpSockInfo {
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "1.2.3.4:443".parse().unwrap(),
            state: state as u8,
            recv_q: 219,
            send_q: 0,
            inode,
            cookie: 1,
            uid: 0,
        };
        let found = as_scanned(&lookup(Some(12)), &info(tcp_state::CLOSE_WAIT, 12)).unwrap();
        assert_eq!((found.pid, found.fd, found.recv_q), (7, 5, 219));
        assert_eq!(found.state, tcp_state::CLOSE_WAIT);
        // Another socket at the same addresses, a closing state, a closed file.
        assert_eq!(
            as_scanned(&lookup(Some(12)), &info(tcp_state::ESTABLISHED, 14)),
            None
        );
        assert_eq!(
            as_scanned(&lookup(Some(12)), &info(tcp_state::FIN_WAIT1, 12)),
            None
        );
        assert_eq!(
            as_scanned(&lookup(None), &info(tcp_state::ESTABLISHED, 0)),
            None
        );
        assert!(as_scanned(&lookup(None), &info(tcp_state::ESTABLISHED, 14)).is_some());
    }

    /// This process as a target: its outbound connections, refreshed, read as the full scan
    /// that found them reads them, receive queues included.
    #[test]
    fn a_refresh_matches_a_full_scan_of_the_same_sockets() {
        let me = std::process::id();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let clients: Vec<TcpStream> = (0..40)
            .map(|_| TcpStream::connect(listener.local_addr().unwrap()).unwrap())
            .collect();
        let mut servers: Vec<TcpStream> = (0..40).map(|_| listener.accept().unwrap().0).collect();
        for (i, server) in servers.iter_mut().enumerate() {
            server.write_all(&vec![0x5a; 100 + i]).unwrap();
        }
        // Loopback delivery is near-instant; let it land.
        std::thread::sleep(Duration::from_millis(100));
        let scanned = full(&[me]).unwrap();
        let mut book = Book::default();
        book.after_full(&scanned);
        let lookups = book.lookups();
        let outbound = |sockets: &[SocketSample]| {
            let mut v: Vec<SocketSample> = sockets
                .iter()
                .filter(|s| {
                    is_connected(s.state) && s.local.port() != listener.local_addr().unwrap().port()
                })
                .cloned()
                .collect();
            v.sort_by_key(|s| s.inode);
            v
        };
        let expected = outbound(&scanned);
        // Every client, none of the accepted sockets nor the listener.
        assert_eq!(expected.len(), clients.len(), "{scanned:?}");
        assert_eq!(lookups.len(), clients.len());
        assert!(expected.iter().any(|s| s.recv_q == 139));
        let refreshed = outbound(&refresh(lookups).unwrap());
        assert_eq!(refreshed, expected);

        // One client closed: the refresh no longer has it, and the book forgets it.
        drop(servers.pop());
        let gone = clients.last().unwrap().local_addr().unwrap();
        drop(clients);
        std::thread::sleep(Duration::from_millis(50));
        let refreshed = refresh(book.lookups()).unwrap();
        assert!(!refreshed.iter().any(|s| s.local == gone));
        assert!(refreshed.is_empty(), "every client closed: {refreshed:?}");
        book.after_refresh(&refreshed);
        assert!(book.lookups().is_empty());
    }
}
