//! Aggregates at one instant: per-host counts and the list of leaked connections. This is
//! what every output (table, JSON, CSV, Prometheus, the terminal UI) renders.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use super::{
    classify::{judge, judge_stream, Graces},
    leak::{ByKind, ByReason, LeakKind, LeakReason},
    site::{CallSite, StackSite},
    state_name,
    stream::H2Stream,
    table::{ConnTable, Origin, UpstreamConn},
    ConnId, GoLayer, KernelStats, Target,
};

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HostSummary {
    /// The upstream's hostname (TLS SNI, HTTP Host, or the catalogue name its address
    /// resolved from), else its IP address.
    pub host: String,
    /// The provider the catalogue gives for `host` ("openai", "anthropic", ...).
    pub provider: Option<String>,
    /// Every ip:port of this host seen in the session.
    pub remotes: Vec<String>,
    pub open: u64,
    /// Leaked connections and leaked HTTP/2 streams (`by_kind` tells them apart).
    pub leaked: u64,
    pub by_reason: ByReason,
    pub by_kind: ByKind,
    /// HTTP/2 streams open on this host's connections (from the Go-aware probes).
    pub open_streams: u64,
    /// Connections the process closed while response bytes were still unread.
    pub closed_unread_total: u64,
    /// Connections seen in the session (opened, or open when tracing started).
    pub connections_total: u64,
    /// Age in seconds of the oldest leaked connection.
    pub oldest_leak_age_s: Option<f64>,
}

/// A provider's hosts added up ("openai": api.openai.com and its Azure deployments, ...).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ProviderSummary {
    pub provider: String,
    pub hosts: Vec<String>,
    pub open: u64,
    pub leaked: u64,
    pub by_reason: ByReason,
    pub by_kind: ByKind,
    pub open_streams: u64,
    pub closed_unread_total: u64,
    pub connections_total: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Leak {
    pub pid: u32,
    pub fd: Option<i32>,
    pub comm: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub host: String,
    pub provider: Option<String>,
    pub state: &'static str,
    /// What leaked: a connection, or an HTTP/2 stream on the connection the other fields
    /// describe.
    pub kind: LeakKind,
    /// The HTTP/2 stream id of a leaked stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
    pub reason: LeakReason,
    /// Seconds since connect (or since first seen, for pre-existing connections); for a
    /// stream, since its request started.
    pub age_s: f64,
    /// Seconds since anything read it (or since it was established, when never read); for a
    /// stream, since its body was last read (or its response arrived).
    pub idle_s: f64,
    /// Response bytes waiting unread in the receive queue (an unread FIN not counted); 0 for
    /// a stream (its bytes wait in the relay's buffers, not the kernel's).
    pub unread_bytes: u32,
    /// Receive queue as `ss` shows it (Recv-Q, an unread FIN counted as 1); 0 for a stream.
    pub recv_q: u32,
    /// Bytes the process read: from the socket for a connection; from the body for a stream,
    /// when its response has a Content-Length (else 0).
    pub bytes_read: u64,
    /// Reads of the socket seen (0 for a stream: its reads are not counted one by one).
    pub reads: u64,
    /// For a stream: body bytes waiting in Go's stream buffer, unread by the application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffered_bytes: Option<u64>,
    /// Return value of the last read (-11 is EAGAIN), when a read was seen.
    pub last_read_ret: Option<i64>,
    pub origin: Origin,
    /// The relay's line that obtained the response that leaked (for a reused connection, its
    /// last request's), when the Go-aware probes saw it: the innermost frame outside Go's
    /// standard library and the `--site-skip` wrappers.
    pub call_site: Option<CallSite>,
    /// Up to 8 application frames from the call site outwards, "function file:line".
    pub stack: Vec<String>,
}

/// One line of the relay that obtains responses: its leaks now and its requests in all.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SiteSummary {
    #[serde(flatten)]
    pub call_site: CallSite,
    /// Requests it handed to the transport over the session (each obtained a response or
    /// failed): the fraction that leaks is the triage signal.
    pub requests_total: u64,
    pub leaked: u64,
    pub by_reason: ByReason,
    pub by_kind: ByKind,
    /// Hosts and providers of its leaks.
    pub hosts: Vec<String>,
    pub providers: Vec<String>,
    /// Its most frequent stack, every frame (the transport's too), innermost first.
    #[serde(skip)]
    pub frames: Vec<String>,
    /// Up to 8 application frames from the call site outwards.
    pub stack: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// The traced processes (the JSON line's `targets` lists their pids).
    #[serde(rename = "target_processes")]
    pub targets: Vec<Target>,
    pub hosts: Vec<HostSummary>,
    /// Hosts with a known provider, added up per provider (most leaks first).
    pub providers: Vec<ProviderSummary>,
    pub leaks: Vec<Leak>,
    /// Connections open right now across all hosts.
    pub open_total: u64,
    pub leaked_total: u64,
    pub kernel: KernelStats,
    /// The kernel hook used for each role (connect, state, read, close, first_write).
    pub hooks: BTreeMap<String, String>,
    /// What the Go-aware layer made of each target's binary (attached, or why not).
    pub go_layer: Vec<GoLayer>,
    /// Per call site of the relay: its leaks and requests (most leaks first). Empty without
    /// the Go-aware probes.
    pub sites: Vec<SiteSummary>,
}

/// The host a stream counts under when its connection is not known (the probes could not
/// follow it to a socket the tracer holds).
pub const UNKNOWN_CONNECTION_HOST: &str = "(unknown connection)";

/// A leaked stream, described by its connection where that is known.
fn stream_leak_of(
    stream: &H2Stream,
    conn: Option<&UpstreamConn>,
    comm: &str,
    reason: LeakReason,
    now_ns: u64,
) -> Leak {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    Leak {
        pid: stream.pid,
        fd: stream.fd,
        comm: conn.map_or_else(|| comm.to_owned(), |c| c.comm.to_string()),
        local: conn.map_or(unknown, |c| c.local),
        remote: conn.map_or(unknown, |c| c.remote),
        host: conn.map_or_else(|| UNKNOWN_CONNECTION_HOST.to_owned(), |c| c.host.clone()),
        provider: conn.and_then(|c| c.provider.clone()),
        state: conn.map_or("UNKNOWN", |c| state_name(c.state)),
        kind: LeakKind::H2Stream,
        stream_id: stream.stream_id,
        reason,
        age_s: secs(now_ns.saturating_sub(stream.opened_ns)),
        idle_s: secs(now_ns.saturating_sub(stream.last_activity_ns())),
        unread_bytes: 0,
        recv_q: 0,
        bytes_read: stream.bytes_read.unwrap_or(0),
        reads: 0,
        buffered_bytes: stream.buffered_bytes,
        last_read_ret: None,
        origin: conn.map_or(Origin::Traced, |c| c.origin),
        call_site: None,
        stack: Vec::new(),
    }
}

fn secs(ns: u64) -> f64 {
    // Millisecond precision is plenty for people and keeps the JSON short.
    (ns as f64 / 1e9 * 1000.0).round() / 1000.0
}

fn providers_of(hosts: &[HostSummary]) -> Vec<ProviderSummary> {
    let mut by_name: BTreeMap<&str, ProviderSummary> = BTreeMap::new();
    for h in hosts {
        let Some(name) = h.provider.as_deref() else {
            continue;
        };
        let p = by_name.entry(name).or_insert_with(|| ProviderSummary {
            provider: name.to_owned(),
            ..ProviderSummary::default()
        });
        p.hosts.push(h.host.clone());
        p.open += h.open;
        p.leaked += h.leaked;
        p.by_reason.merge(&h.by_reason);
        p.by_kind.merge(&h.by_kind);
        p.open_streams += h.open_streams;
        p.closed_unread_total += h.closed_unread_total;
        p.connections_total += h.connections_total;
    }
    let mut providers: Vec<ProviderSummary> = by_name.into_values().collect();
    providers.sort_by(|a, b| {
        b.leaked
            .cmp(&a.leaked)
            .then_with(|| a.provider.cmp(&b.provider))
    });
    providers
}

fn leak_of(conn: &UpstreamConn, reason: LeakReason, now_ns: u64) -> Leak {
    Leak {
        pid: conn.pid,
        fd: conn.fd,
        comm: conn.comm.to_string(),
        local: conn.local,
        remote: conn.remote,
        host: conn.host.clone(),
        provider: conn.provider.clone(),
        state: state_name(conn.state),
        kind: LeakKind::Connection,
        stream_id: None,
        reason,
        age_s: secs(now_ns.saturating_sub(conn.opened_ns)),
        idle_s: secs(now_ns.saturating_sub(conn.last_activity_ns())),
        unread_bytes: conn.unread_bytes(),
        recv_q: conn.recv_q_bytes(),
        bytes_read: conn.bytes_read,
        reads: conn.reads,
        buffered_bytes: None,
        last_read_ret: conn.last_read_ret,
        origin: conn.origin,
        call_site: None,
        stack: Vec::new(),
    }
}

impl Leak {
    fn with_site(mut self, site: Option<&StackSite>) -> Self {
        if let Some(site) = site {
            self.call_site = site.call_site.clone();
            self.stack = site.stack.clone();
        }
        self
    }
}

/// The site of a connection's last request.
fn site_of_conn<'t>(table: &'t ConnTable, conn: &UpstreamConn) -> Option<&'t StackSite> {
    let opened = (conn.origin == Origin::Traced).then_some(conn.opened_ns);
    table.sites().for_connection(conn.pid, conn.fd?, opened)
}

/// The HTTP/2 response a stream's request obtained (its `clientStream.res`, read from the
/// relay's memory with the stream), once its headers arrived.
fn response_of(stream: &H2Stream) -> Option<u64> {
    (stream.response != 0).then_some(stream.response)
}

/// Sums leaks per call site, and adds every site that obtained responses without leaking.
fn sites_of(table: &ConnTable, leaks: &[Leak]) -> Vec<SiteSummary> {
    let mut by_site: BTreeMap<CallSite, SiteSummary> = BTreeMap::new();
    let new = |call_site: &CallSite| {
        let stack = table.sites().stack_of(call_site);
        SiteSummary {
            call_site: call_site.clone(),
            requests_total: 0,
            leaked: 0,
            by_reason: ByReason::default(),
            by_kind: ByKind::default(),
            hosts: Vec::new(),
            providers: Vec::new(),
            frames: stack.map_or_else(Vec::new, |s| {
                s.frames.iter().map(ToString::to_string).collect()
            }),
            stack: stack.map_or_else(Vec::new, |s| s.stack.clone()),
        }
    };
    for (call_site, requests) in table.sites().requests_by_site() {
        let mut summary = new(&call_site);
        summary.requests_total = requests;
        by_site.insert(call_site, summary);
    }
    for leak in leaks {
        let Some(call_site) = &leak.call_site else {
            continue;
        };
        let summary = by_site
            .entry(call_site.clone())
            .or_insert_with(|| new(call_site));
        summary.leaked += 1;
        summary.by_reason.add(leak.reason);
        summary.by_kind.add(leak.kind);
        if !summary.hosts.contains(&leak.host) {
            summary.hosts.push(leak.host.clone());
        }
        if let Some(provider) = &leak.provider {
            if !summary.providers.contains(provider) {
                summary.providers.push(provider.clone());
            }
        }
    }
    let mut sites: Vec<SiteSummary> = by_site.into_values().collect();
    for site in &mut sites {
        site.hosts.sort();
        site.providers.sort();
    }
    sites.sort_by(|a, b| {
        b.leaked
            .cmp(&a.leaked)
            .then(b.requests_total.cmp(&a.requests_total))
            .then_with(|| a.call_site.cmp(&b.call_site))
    });
    sites
}

impl Leak {
    pub fn id(&self) -> ConnId {
        ConnId {
            pid: self.pid,
            local: self.local,
            remote: self.remote,
        }
    }
}

impl Snapshot {
    /// Judges every open connection at `now_ns` and aggregates per host.
    pub fn take(table: &ConnTable, now_ns: u64, graces: &Graces) -> Self {
        #[derive(Default)]
        struct Live {
            open: u64,
            open_streams: u64,
            by_reason: ByReason,
            by_kind: ByKind,
            oldest_leak_ns: Option<u64>,
        }
        impl Live {
            fn leaked(&mut self, kind: LeakKind, reason: LeakReason, age_ns: u64) {
                self.by_reason.add(reason);
                self.by_kind.add(kind);
                self.oldest_leak_ns = Some(self.oldest_leak_ns.map_or(age_ns, |a| a.max(age_ns)));
            }
        }
        let mut live: BTreeMap<&str, Live> = BTreeMap::new();
        let mut leaks = Vec::new();
        // A stream's connection is the open one of its process with its fd.
        let mut by_fd: HashMap<(u32, i32), &UpstreamConn> = HashMap::new();
        for conn in table.conns().filter(|c| c.is_open()) {
            if let Some(fd) = conn.fd {
                by_fd.insert((conn.pid, fd), conn);
            }
            let host = live.entry(conn.host.as_str()).or_default();
            host.open += 1;
            if let Some(reason) = judge(conn, now_ns, graces) {
                host.leaked(
                    LeakKind::Connection,
                    reason,
                    now_ns.saturating_sub(conn.opened_ns),
                );
                leaks.push(leak_of(conn, reason, now_ns).with_site(site_of_conn(table, conn)));
            }
        }
        for stream in table.streams().open() {
            let conn = stream
                .fd
                .and_then(|fd| by_fd.get(&(stream.pid, fd)).copied());
            let host_name = conn.map_or(UNKNOWN_CONNECTION_HOST, |c| c.host.as_str());
            let host = live.entry(host_name).or_default();
            host.open_streams += 1;
            if let Some(reason) = judge_stream(stream, now_ns, graces) {
                host.leaked(
                    LeakKind::H2Stream,
                    reason,
                    now_ns.saturating_sub(stream.opened_ns),
                );
                let comm = table
                    .targets()
                    .iter()
                    .find(|t| t.pid == stream.pid)
                    .map_or("", |t| t.comm.as_str());
                let site =
                    response_of(stream).and_then(|res| table.sites().for_response(stream.pid, res));
                leaks.push(stream_leak_of(stream, conn, comm, reason, now_ns).with_site(site));
            }
        }
        let mut hosts: Vec<HostSummary> = table
            .hosts()
            .iter()
            .map(|(name, totals)| {
                let l = live.remove(name.as_str()).unwrap_or_default();
                let leaked = l.by_reason.total();
                HostSummary {
                    host: name.clone(),
                    provider: totals.provider.clone(),
                    remotes: totals.remotes.iter().map(|r| r.to_string()).collect(),
                    open: l.open,
                    leaked,
                    by_reason: l.by_reason,
                    by_kind: l.by_kind,
                    open_streams: l.open_streams,
                    closed_unread_total: totals.closed_unread_total,
                    connections_total: totals.connections_total,
                    oldest_leak_age_s: l.oldest_leak_ns.map(secs),
                }
            })
            .collect();
        // Streams whose connection is not known count under a host of their own.
        for (name, l) in live {
            hosts.push(HostSummary {
                host: name.to_owned(),
                provider: None,
                remotes: Vec::new(),
                open: l.open,
                leaked: l.by_reason.total(),
                by_reason: l.by_reason,
                by_kind: l.by_kind,
                open_streams: l.open_streams,
                closed_unread_total: 0,
                connections_total: 0,
                oldest_leak_age_s: l.oldest_leak_ns.map(secs),
            });
        }
        // Most leaks first; ties by name so the order is stable between refreshes.
        hosts.sort_by(|a, b| b.leaked.cmp(&a.leaked).then_with(|| a.host.cmp(&b.host)));
        leaks.sort_by(|a, b| {
            a.host
                .cmp(&b.host)
                .then(b.age_s.total_cmp(&a.age_s))
                .then(a.local.cmp(&b.local))
        });
        let providers = providers_of(&hosts);
        let sites = sites_of(table, &leaks);
        Snapshot {
            targets: table.targets().to_vec(),
            providers,
            open_total: hosts.iter().map(|h| h.open).sum(),
            leaked_total: hosts.iter().map(|h| h.leaked).sum(),
            hosts,
            leaks,
            kernel: table.stats(),
            hooks: table.hooks().clone(),
            go_layer: table.go_layers().cloned().collect(),
            sites,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{leak::ByKind, StreamSample};
    use crate::model::{
        tcp_state::{CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT2, LAST_ACK},
        testkit::*,
        Input, KernelConn, Sample,
    };

    /// Distinct from the defaults, so a test fails if `take` does not use the ones it is given.
    const GRACES: Graces = Graces {
        close_wait: Duration::from_secs(2),
        unread: Duration::from_secs(3),
        abandon: Duration::from_secs(7),
    };

    /// Healthy: established at `connect_ns`, its last read returned EAGAIN.
    fn pooled(port: u16, remote: &str, connect_ns: u64) -> KernelConn {
        KernelConn {
            last_read_ns: Some(connect_ns + SEC),
            last_read_ret: -11,
            reads: 2,
            ..established(kconn(port, remote, connect_ns), connect_ns)
        }
    }

    /// The upstream closed 1 ms after the connection was established; nothing was read since.
    fn close_wait(port: u16, remote: &str, connect_ns: u64) -> KernelConn {
        KernelConn {
            state: CLOSE_WAIT,
            peer_fin_ns: Some(connect_ns + MS),
            recv_q: recv_q(1, connect_ns + MS),
            ..established(kconn(port, remote, connect_ns), connect_ns)
        }
    }

    fn host(
        host: &str,
        remotes: &[&str],
        (open, leaked): (u64, u64),
        by_reason: ByReason,
        (closed_unread_total, connections_total): (u64, u64),
        oldest_leak_age_s: Option<f64>,
    ) -> HostSummary {
        HostSummary {
            host: host.into(),
            provider: None,
            remotes: remotes.iter().map(|r| r.to_string()).collect(),
            open,
            leaked,
            by_reason,
            by_kind: ByKind::connections(leaked),
            open_streams: 0,
            closed_unread_total,
            connections_total,
            oldest_leak_age_s,
        }
    }

    fn reasons(close_wait: u64, unread: u64, abandoned: u64) -> ByReason {
        ByReason::of([close_wait, unread, abandoned])
    }

    fn leak_list(snapshot: &Snapshot) -> Vec<(String, String, LeakReason)> {
        snapshot
            .leaks
            .iter()
            .map(|l| (l.host.clone(), l.local.to_string(), l.reason))
            .collect()
    }

    fn owned(expected: Vec<(&str, &str, LeakReason)>) -> Vec<(String, String, LeakReason)> {
        expected
            .into_iter()
            .map(|(host, local, reason)| (host.to_owned(), local.to_owned(), reason))
            .collect()
    }

    #[test]
    fn hosts_aggregate_open_leaked_reasons_and_session_totals() {
        let now = 100 * SEC;
        let a_close_wait = KernelConn {
            peer_fin_ns: Some(10 * SEC),
            recv_q: recv_q(1, 10 * SEC),
            ..close_wait(40001, "10.0.0.12:443", SEC)
        };
        let a_unread = KernelConn {
            last_read_ns: Some(20 * SEC),
            last_read_ret: 4096,
            reads: 1,
            bytes_read: 4096,
            recv_q: recv_q(5000, 20 * SEC),
            ..established(kconn(40002, "10.0.0.12:80", 3 * SEC), 3 * SEC)
        };
        // Older than both leaks: the oldest leak's age is not the oldest connection's.
        let a_pooled = pooled(40003, "10.0.0.12:443", SEC / 2);
        let c_abandoned = KernelConn {
            last_read_ns: Some(50 * SEC),
            last_read_ret: 295,
            reads: 1,
            bytes_read: 295,
            ..established(kconn(40005, "10.0.0.30:443", 2 * SEC), 2 * SEC)
        };
        let a_closed_unread = KernelConn {
            state: CLOSE,
            closed_by_process: true,
            recv_q: recv_q(300, 7 * SEC),
            ..established(kconn(40004, "10.0.0.12:443", 6 * SEC), 6 * SEC)
        };
        let d_closed = KernelConn {
            state: CLOSE,
            local_close_ns: Some(8 * SEC),
            peer_fin_at_close: true,
            ..established(kconn(40006, "10.0.0.40:443", 6 * SEC), 6 * SEC)
        };
        let table = table_after([
            sample(
                now,
                vec![
                    (1, a_close_wait),
                    (2, a_unread),
                    (3, a_pooled),
                    (5, c_abandoned),
                ],
                vec![socket(
                    PID,
                    20,
                    local(50001),
                    "10.0.0.20:80",
                    ESTABLISHED,
                    0,
                )],
            ),
            close(4, ESTABLISHED, PID, a_closed_unread),
            close(6, FIN_WAIT2, OTHER_PID, d_closed),
        ]);
        let snapshot = Snapshot::take(&table, now, &Graces::default());
        assert_eq!(
            snapshot.hosts,
            vec![
                host(
                    "10.0.0.12",
                    &["10.0.0.12:80", "10.0.0.12:443"],
                    (3, 2),
                    reasons(1, 1, 0),
                    (1, 4),
                    Some(99.0)
                ),
                host(
                    "10.0.0.30",
                    &["10.0.0.30:443"],
                    (1, 1),
                    reasons(0, 0, 1),
                    (0, 1),
                    Some(98.0)
                ),
                host(
                    "10.0.0.20",
                    &["10.0.0.20:80"],
                    (1, 0),
                    reasons(0, 0, 0),
                    (0, 1),
                    None
                ),
                host(
                    "10.0.0.40",
                    &["10.0.0.40:443"],
                    (0, 0),
                    reasons(0, 0, 0),
                    (0, 1),
                    None
                ),
            ]
        );
        assert_eq!((snapshot.open_total, snapshot.leaked_total), (5, 3));
        assert_eq!(
            leak_list(&snapshot),
            owned(vec![
                ("10.0.0.12", "10.1.0.5:40001", LeakReason::CloseWait),
                ("10.0.0.12", "10.1.0.5:40002", LeakReason::Unread),
                ("10.0.0.30", "10.1.0.5:40005", LeakReason::Abandoned),
            ])
        );
    }

    #[test]
    fn hosts_sort_by_leaks_then_name_and_leaks_by_host_then_age_then_local() {
        let table = table_after([sample(
            60 * SEC,
            vec![
                (1, close_wait(40010, "10.0.0.8:443", SEC)),
                (2, close_wait(40009, "10.0.0.8:443", SEC)),
                (3, close_wait(40001, "10.0.0.8:443", 2 * SEC)),
                (4, close_wait(40020, "10.0.0.9:443", SEC)),
                (5, close_wait(40030, "10.0.0.10:443", SEC)),
                (6, pooled(40040, "10.0.0.7:443", SEC)),
            ],
            vec![],
        )]);
        let snapshot = Snapshot::take(&table, 60 * SEC, &GRACES);
        let order: Vec<_> = snapshot
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), h.leaked))
            .collect();
        assert_eq!(
            order,
            vec![
                ("10.0.0.8", 3),
                ("10.0.0.10", 1),
                ("10.0.0.9", 1),
                ("10.0.0.7", 0)
            ]
        );
        assert_eq!(
            leak_list(&snapshot),
            owned(vec![
                ("10.0.0.10", "10.1.0.5:40030", LeakReason::CloseWait),
                ("10.0.0.8", "10.1.0.5:40009", LeakReason::CloseWait),
                ("10.0.0.8", "10.1.0.5:40010", LeakReason::CloseWait),
                ("10.0.0.8", "10.1.0.5:40001", LeakReason::CloseWait),
                ("10.0.0.9", "10.1.0.5:40020", LeakReason::CloseWait),
            ])
        );
    }

    #[test]
    fn a_leak_shows_its_connection_in_seconds_and_bytes() {
        let leaking = KernelConn {
            fd: Some(12),
            state: CLOSE_WAIT,
            peer_fin_ns: Some(3 * SEC),
            last_read_ns: Some(2_345_678_901),
            last_read_ret: -11,
            reads: 3,
            bytes_read: 4096,
            recv_q: recv_q(219, 3 * SEC),
            ..established(kconn(40001, "10.0.0.12:443", SEC), 1_200 * MS)
        };
        let now = 12_345_999_999;
        let table = table_after([sample(now, vec![(1, leaking)], vec![])]);
        let snapshot = Snapshot::take(&table, now, &GRACES);
        assert_eq!(
            snapshot.leaks,
            vec![Leak {
                pid: PID,
                fd: Some(12),
                comm: "relay".into(),
                local: addr("10.1.0.5:40001"),
                remote: addr("10.0.0.12:443"),
                host: "10.0.0.12".into(),
                provider: None,
                state: "CLOSE_WAIT",
                kind: LeakKind::Connection,
                stream_id: None,
                reason: LeakReason::CloseWait,
                // 11.345999999 s and 10.000321098 s, to the millisecond.
                age_s: 11.346,
                idle_s: 10.0,
                unread_bytes: 218,
                recv_q: 219,
                bytes_read: 4096,
                reads: 3,
                buffered_bytes: None,
                last_read_ret: Some(-11),
                origin: Origin::Traced,
                call_site: None,
                stack: vec![],
            }]
        );
        // A connection has no stream buffer: the field is left out of its JSON.
        let json = serde_json::to_value(&snapshot.leaks[0]).expect("serialises");
        assert!(json.get("buffered_bytes").is_none(), "{json}");
        let mut stream = snapshot.leaks[0].clone();
        stream.buffered_bytes = Some(4 << 20);
        let json = serde_json::to_value(&stream).expect("serialises");
        assert_eq!(json["buffered_bytes"], 4 << 20);
        assert_eq!(snapshot.hosts[0].oldest_leak_age_s, Some(11.346));
    }

    /// The reasons `take` finds at `now_ns`, with the totals that must agree with them.
    fn verdicts(table: &ConnTable, now_ns: u64) -> Vec<LeakReason> {
        let snapshot = Snapshot::take(table, now_ns, &GRACES);
        assert_eq!(snapshot.leaked_total, snapshot.leaks.len() as u64);
        assert_eq!(snapshot.open_total, 1);
        snapshot.leaks.iter().map(|l| l.reason).collect()
    }

    #[test]
    fn each_grace_applies_exactly_at_its_boundary() {
        let fin = KernelConn {
            state: CLOSE_WAIT,
            peer_fin_ns: Some(10 * SEC),
            recv_q: recv_q(1, 10 * SEC),
            ..pooled(40001, "10.0.0.12:443", SEC)
        };
        let table = table_after([sample(10 * SEC, vec![(1, fin)], vec![])]);
        assert_eq!(verdicts(&table, 12 * SEC - 1), vec![]);
        assert_eq!(verdicts(&table, 12 * SEC), vec![LeakReason::CloseWait]);

        let unread = KernelConn {
            last_read_ns: Some(20 * SEC),
            last_read_ret: 100,
            reads: 1,
            recv_q: recv_q(50, 20 * SEC),
            ..established(kconn(40001, "10.0.0.12:443", SEC), SEC)
        };
        let table = table_after([sample(20 * SEC, vec![(1, unread)], vec![])]);
        assert_eq!(verdicts(&table, 23 * SEC - 1), vec![]);
        assert_eq!(verdicts(&table, 23 * SEC), vec![LeakReason::Unread]);

        let abandoned = KernelConn {
            last_read_ns: Some(20 * SEC),
            last_read_ret: 295,
            reads: 1,
            recv_q: recv_q(0, 20 * SEC),
            ..established(kconn(40001, "10.0.0.12:443", SEC), SEC)
        };
        let table = table_after([sample(20 * SEC, vec![(1, abandoned)], vec![])]);
        assert_eq!(verdicts(&table, 27 * SEC - 1), vec![]);
        assert_eq!(verdicts(&table, 27 * SEC), vec![LeakReason::Abandoned]);
    }

    #[test]
    fn a_pre_existing_close_wait_is_judged_from_when_it_was_first_seen() {
        let old = socket(PID, 20, local(50001), "10.0.0.20:80", CLOSE_WAIT, 1);
        let table = table_after([sample(10 * SEC, vec![], vec![old])]);
        assert_eq!(verdicts(&table, 12 * SEC - 1), vec![]);
        assert_eq!(verdicts(&table, 12 * SEC), vec![LeakReason::CloseWait]);
    }

    #[test]
    fn a_pre_existing_queue_that_shrinks_is_being_read() {
        let queued = |q| socket(PID, 20, local(50001), "10.0.0.20:80", ESTABLISHED, q);
        let mut table = table_after([sample(10 * SEC, vec![], vec![queued(500)])]);
        assert_eq!(
            verdicts(&table, 13 * SEC),
            vec![LeakReason::Unread],
            "never read since first seen"
        );
        table.apply(sample(12 * SEC, vec![], vec![queued(300)]));
        assert_eq!(verdicts(&table, 15 * SEC - 1), vec![]);
        let snapshot = Snapshot::take(&table, 15 * SEC, &GRACES);
        assert_eq!(
            leak_list(&snapshot),
            owned(vec![("10.0.0.20", "10.1.0.5:50001", LeakReason::Unread)])
        );
        let leak = &snapshot.leaks[0];
        assert_eq!(
            (
                leak.origin,
                leak.fd,
                leak.comm.as_str(),
                leak.age_s,
                leak.idle_s,
                leak.unread_bytes,
                leak.last_read_ret
            ),
            (
                Origin::PreExisting,
                Some(20),
                "relay-7",
                5.0,
                3.0,
                300,
                None
            )
        );
    }

    #[test]
    fn pre_existing_connections_are_never_judged_abandoned() {
        let queued = |q| socket(PID, 20, local(50001), "10.0.0.20:80", ESTABLISHED, q);
        let table = table_after([
            sample(10 * SEC, vec![], vec![queued(500)]),
            sample(11 * SEC, vec![], vec![queued(0)]),
        ]);
        assert_eq!(verdicts(&table, 11 * SEC + 3600 * SEC), vec![]);
    }

    #[test]
    fn connections_the_process_closed_are_neither_open_nor_leaked() {
        let closing = KernelConn {
            state: FIN_WAIT2,
            local_close_ns: Some(2 * SEC),
            last_read_ret: 295,
            reads: 1,
            last_read_ns: Some(SEC),
            ..established(kconn(40001, "10.0.0.12:443", SEC), SEC)
        };
        let last_ack = KernelConn {
            state: LAST_ACK,
            local_close_ns: Some(3 * SEC),
            ..close_wait(40002, "10.0.0.12:443", SEC)
        };
        let table = table_after([sample(4 * SEC, vec![(1, closing), (2, last_ack)], vec![])]);
        let snapshot = Snapshot::take(&table, 3600 * SEC, &GRACES);
        assert_eq!(
            snapshot.hosts,
            vec![host(
                "10.0.0.12",
                &["10.0.0.12:443"],
                (0, 0),
                reasons(0, 0, 0),
                (0, 2),
                None
            )]
        );
        assert_eq!(
            (
                snapshot.open_total,
                snapshot.leaked_total,
                snapshot.leaks.len()
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn the_snapshot_carries_the_targets_and_kernel_counters() {
        let stats = KernelStats {
            events_sent: 40,
            events_lost: 1,
            conn_map_full: 0,
            reads_seen: 7,
        };
        let table = table_after([Input::Sample(Sample {
            now_ns: SEC,
            stats,
            ..Sample::default()
        })]);
        let snapshot = Snapshot::take(&table, SEC, &GRACES);
        assert_eq!(
            snapshot,
            Snapshot {
                targets: vec![Target {
                    pid: PID,
                    comm: "relay-7".into()
                }],
                hosts: vec![],
                providers: vec![],
                leaks: vec![],
                open_total: 0,
                leaked_total: 0,
                kernel: stats,
                hooks: Default::default(),
                go_layer: vec![],
                sites: vec![],
            }
        );
    }

    #[test]
    fn hosts_of_a_provider_add_up_and_unknown_ones_stay_out() {
        let mut a = host(
            "api.openai.com",
            &[],
            (3, 2),
            ByReason::of([2, 0, 0]),
            (1, 9),
            None,
        );
        a.provider = Some("openai".into());
        let mut b = host(
            "x.openai.azure.com",
            &[],
            (1, 1),
            ByReason::of([0, 1, 0]),
            (0, 4),
            None,
        );
        b.provider = Some("openai".into());
        let mut c = host(
            "api.anthropic.com",
            &[],
            (5, 0),
            ByReason::default(),
            (2, 5),
            None,
        );
        c.provider = Some("anthropic".into());
        let d = host(
            "10.0.0.1",
            &[],
            (7, 7),
            ByReason::of([7, 0, 0]),
            (0, 7),
            None,
        );
        let providers = providers_of(&[a, b, c, d]);
        assert_eq!(providers.len(), 2);
        let openai = &providers[0];
        assert_eq!(openai.provider, "openai");
        assert_eq!(openai.hosts, vec!["api.openai.com", "x.openai.azure.com"]);
        assert_eq!(
            (
                openai.open,
                openai.leaked,
                openai.closed_unread_total,
                openai.connections_total
            ),
            (4, 3, 1, 13)
        );
        assert_eq!(openai.by_reason, ByReason::of([2, 1, 0]));
        assert_eq!(
            (providers[1].provider.as_str(), providers[1].leaked),
            ("anthropic", 0)
        );
    }

    #[test]
    fn leaked_streams_count_under_their_connections_host_by_kind() {
        // One healthy pooled h2 connection (fd 9) carrying three streams: one whose body was
        // never read, one read in part and dropped, one being read as data comes.
        let conn = KernelConn {
            fd: Some(9),
            ..pooled(40001, "10.0.0.23:443", SEC)
        };
        let stream = |stream: u64, fd, buffered, first_chunk_read| StreamSample {
            pid: PID,
            stream,
            conn: 0xc0c0,
            fd,
            stream_id: u32::try_from(stream).expect("small") * 2 + 1,
            response: 0xd000 + stream,
            buffered_bytes: Some(buffered),
            first_chunk_read,
            expected: -1 - buffered as i64 - first_chunk_read as i64,
            unsent: 0,
            bytes_remain: -1,
            content_length: Some(-1),
            body_done: false,
            body_closed: false,
        };
        let sample = |now_ns, streams| {
            Input::Sample(Sample {
                now_ns,
                kernel: vec![(1, conn.clone())],
                sockets: None,
                streams,
                stats: KernelStats::default(),
                scanned_ns: None,
            })
        };
        let at = |_now: u64, reading: u64| {
            vec![
                stream(1, Some(9), 4 << 20, 0),
                stream(2, Some(9), 4 << 20, 512),
                stream(3, Some(9), 100, reading),
                // A stream whose connection the probe could not follow to its socket.
                stream(4, None, 4 << 20, 0),
            ]
        };
        let mut inputs = vec![targets(&[PID])];
        inputs.push(Input::GoLayer(GoLayer {
            pid: PID,
            attached: true,
            call_sites: true,
            line: "Go layer: go1.27.3".into(),
        }));
        // Stream 3 keeps reading: its read position moves at every sample.
        for (i, now) in (3..=11).map(|s| s * SEC).enumerate() {
            inputs.push(sample(now, at(now, 100 + i as u64)));
        }
        let table = table_after(inputs.clone());
        // 3 s after the response: stream 1 and 4 unread (grace 3 s); 2 not yet abandoned.
        let s = Snapshot::take(&table, 6 * SEC, &GRACES);
        let h = s
            .hosts
            .iter()
            .find(|h| h.host == "10.0.0.23")
            .expect("host");
        assert_eq!((h.open, h.open_streams, h.leaked), (1, 3, 1));
        assert_eq!(h.by_kind.get(LeakKind::H2Stream), 1);
        assert_eq!(h.by_kind.get(LeakKind::Connection), 0);
        assert_eq!(h.by_reason.get(LeakReason::Unread), 1);
        // 7 s after the sample that saw it read, stream 2 is abandoned; stream 3 reads on.
        let s = Snapshot::take(&table, 11 * SEC, &GRACES);
        let h = s
            .hosts
            .iter()
            .find(|h| h.host == "10.0.0.23")
            .expect("host");
        assert_eq!((h.leaked, h.by_reason.get(LeakReason::Abandoned)), (2, 1));
        let leaks: Vec<(&str, Option<u32>, LeakReason, LeakKind)> = s
            .leaks
            .iter()
            .map(|l| (l.host.as_str(), l.stream_id, l.reason, l.kind))
            .collect();
        assert!(leaks.contains(&("10.0.0.23", Some(3), LeakReason::Unread, LeakKind::H2Stream)));
        assert!(leaks.contains(&(
            "10.0.0.23",
            Some(5),
            LeakReason::Abandoned,
            LeakKind::H2Stream
        )));
        let leak = s
            .leaks
            .iter()
            .find(|l| l.stream_id == Some(3))
            .expect("leak");
        assert_eq!(leak.buffered_bytes, Some(4 << 20));
        let unknown = s
            .hosts
            .iter()
            .find(|h| h.host == UNKNOWN_CONNECTION_HOST)
            .expect("streams without a known connection count too");
        assert_eq!(
            (unknown.open, unknown.open_streams, unknown.leaked),
            (0, 1, 1)
        );
        assert_eq!(s.leaked_total, 3);
        assert_eq!(s.go_layer.len(), 1);
        let json = serde_json::to_value(&s.leaks).expect("json");
        assert!(json
            .as_array()
            .expect("array")
            .iter()
            .any(|l| l["kind"] == "h2_stream" && l["stream_id"] == 3));
        // A stream the next sample does not have ended: no longer open nor leaked.
        let mut table = table;
        let mut without_1 = at(12 * SEC, 200);
        without_1.retain(|s| s.stream != 1);
        table.apply(sample(12 * SEC, without_1));
        let s = Snapshot::take(&table, 12 * SEC, &GRACES);
        let h = s
            .hosts
            .iter()
            .find(|h| h.host == "10.0.0.23")
            .expect("host");
        assert_eq!((h.open_streams, h.leaked), (2, 1));
    }
}
