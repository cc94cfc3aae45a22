//! Aggregates at one instant: per-host counts and the list of leaked connections. This is
//! what every output (table, JSON, later TUI and metrics) renders.

use std::{collections::BTreeMap, net::IpAddr};

use super::{
    classify::{judge, Graces, LeakReason},
    state_name,
    table::{ConnTable, Origin, UpstreamConn},
    KernelStats, Target,
};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ByReason {
    pub close_wait: u64,
    pub unread: u64,
    pub abandoned: u64,
}

impl ByReason {
    fn add(&mut self, reason: LeakReason) {
        match reason {
            LeakReason::CloseWait => self.close_wait += 1,
            LeakReason::Unread => self.unread += 1,
            LeakReason::Abandoned => self.abandoned += 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HostSummary {
    /// The upstream's name; its IP address until hostname mapping exists.
    pub host: String,
    /// Every ip:port of this host seen in the session.
    pub remotes: Vec<String>,
    pub open: u64,
    pub leaked: u64,
    pub by_reason: ByReason,
    /// Connections the process closed while response bytes were still unread.
    pub closed_unread_total: u64,
    /// Connections seen in the session (opened, or open when tracing started).
    pub connections_total: u64,
    /// Age in seconds of the oldest leaked connection.
    pub oldest_leak_age_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Leak {
    pub pid: u32,
    pub fd: Option<i32>,
    pub comm: String,
    pub local: String,
    pub remote: String,
    pub host: String,
    pub state: &'static str,
    pub reason: LeakReason,
    /// Seconds since connect (or since first seen, for pre-existing connections).
    pub age_s: f64,
    /// Seconds since anything read it (or since it was established, when never read).
    pub idle_s: f64,
    /// Response bytes waiting unread in the receive queue (an unread FIN not counted).
    pub unread_bytes: u32,
    /// Receive queue as `ss` shows it (Recv-Q, an unread FIN counted as 1).
    pub recv_q: u32,
    pub bytes_read: u64,
    pub reads: u64,
    /// Return value of the last read (-11 is EAGAIN), when a read was seen.
    pub last_read_ret: Option<i64>,
    pub origin: Origin,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// The traced processes (the JSON line's `targets` lists their pids).
    #[serde(rename = "target_processes")]
    pub targets: Vec<Target>,
    pub hosts: Vec<HostSummary>,
    pub leaks: Vec<Leak>,
    /// Connections open right now across all hosts.
    pub open_total: u64,
    pub leaked_total: u64,
    pub kernel: KernelStats,
}

fn secs(ns: u64) -> f64 {
    // Millisecond precision is plenty for people and keeps the JSON short.
    (ns as f64 / 1e9 * 1000.0).round() / 1000.0
}

fn leak_of(conn: &UpstreamConn, reason: LeakReason, now_ns: u64) -> Leak {
    Leak {
        pid: conn.pid,
        fd: conn.fd,
        comm: conn.comm.clone(),
        local: conn.local.to_string(),
        remote: conn.remote.to_string(),
        host: conn.remote.ip().to_string(),
        state: state_name(conn.state),
        reason,
        age_s: secs(now_ns.saturating_sub(conn.opened_ns)),
        idle_s: secs(now_ns.saturating_sub(conn.last_activity_ns())),
        unread_bytes: conn.unread_bytes(),
        recv_q: conn.recv_q_bytes(),
        bytes_read: conn.bytes_read,
        reads: conn.reads,
        last_read_ret: conn.last_read_ret,
        origin: conn.origin,
    }
}

impl Snapshot {
    /// Judges every open connection at `now_ns` and aggregates per host.
    pub fn take(table: &ConnTable, now_ns: u64, graces: &Graces) -> Self {
        #[derive(Default)]
        struct Live {
            open: u64,
            by_reason: ByReason,
            oldest_leak_ns: Option<u64>,
        }
        let mut live: BTreeMap<IpAddr, Live> = BTreeMap::new();
        let mut leaks = Vec::new();
        for conn in table.conns().filter(|c| c.is_open()) {
            let host = live.entry(conn.remote.ip()).or_default();
            host.open += 1;
            if let Some(reason) = judge(conn, now_ns, graces) {
                host.by_reason.add(reason);
                let age = now_ns.saturating_sub(conn.opened_ns);
                host.oldest_leak_ns = Some(host.oldest_leak_ns.map_or(age, |a| a.max(age)));
                leaks.push(leak_of(conn, reason, now_ns));
            }
        }
        let mut hosts: Vec<HostSummary> = table
            .hosts()
            .iter()
            .map(|(ip, totals)| {
                let l = live.remove(ip).unwrap_or_default();
                let leaked = l.by_reason.close_wait + l.by_reason.unread + l.by_reason.abandoned;
                HostSummary {
                    host: ip.to_string(),
                    remotes: totals.remotes.iter().map(|r| r.to_string()).collect(),
                    open: l.open,
                    leaked,
                    by_reason: l.by_reason,
                    closed_unread_total: totals.closed_unread_total,
                    connections_total: totals.connections_total,
                    oldest_leak_age_s: l.oldest_leak_ns.map(secs),
                }
            })
            .collect();
        // Most leaks first; ties by name so the order is stable between refreshes.
        hosts.sort_by(|a, b| b.leaked.cmp(&a.leaked).then_with(|| a.host.cmp(&b.host)));
        leaks.sort_by(|a, b| {
            a.host
                .cmp(&b.host)
                .then(b.age_s.total_cmp(&a.age_s))
                .then(a.local.cmp(&b.local))
        });
        Snapshot {
            targets: table.targets().to_vec(),
            open_total: hosts.iter().map(|h| h.open).sum(),
            leaked_total: hosts.iter().map(|h| h.leaked).sum(),
            hosts,
            leaks,
            kernel: table.stats(),
        }
    }
}
