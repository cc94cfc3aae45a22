//! Synthetic snapshots for the export tests, and the rule for tools the tests need.
//!
//! Snapshots are built as values (every field of the model's Snapshot is public): the exports
//! only render them, and `model::snapshot`'s own tests cover how `take` computes them.

use std::path::PathBuf;

use crate::model::{
    classify::LeakReason,
    leak::{ByKind, LeakKind},
    snapshot::{HostSummary, Leak},
    table::Origin,
    ByReason, KernelStats, Snapshot, Target,
};

pub const PID: u32 = 7;

/// A host with `open` connections of which `close_wait`, `unread`, `abandoned` are leaked.
pub fn host(
    name: &str,
    open: u64,
    (close_wait, unread, abandoned): (u64, u64, u64),
    closed_unread_total: u64,
    connections_total: u64,
) -> HostSummary {
    let leaked = close_wait + unread + abandoned;
    HostSummary {
        host: name.into(),
        provider: None,
        remotes: vec![format!("{name}:443")],
        open,
        leaked,
        by_reason: ByReason::of([close_wait, unread, abandoned]),
        by_kind: ByKind::connections(leaked),
        open_streams: 0,
        closed_unread_total,
        connections_total,
        oldest_leak_age_s: (leaked > 0).then_some(42.5),
    }
}

/// `host` as the naming catalogue names it: part of `provider`.
pub fn of_provider(host: HostSummary, provider: &str) -> HostSummary {
    HostSummary {
        provider: Some(provider.into()),
        ..host
    }
}

/// A leaked connection of `PID` from local port `port` to `host`:443.
pub fn leak(host: &str, port: u16, reason: LeakReason, age_s: f64) -> Leak {
    Leak {
        pid: PID,
        fd: Some(i32::from(port % 100)),
        comm: "relay".into(),
        local: std::net::SocketAddr::from(([10, 1, 0, 5], port)),
        remote: std::net::SocketAddr::new(host.parse().expect("leak() takes an IP address"), 443),
        host: host.into(),
        provider: None,
        kind: LeakKind::Connection,
        stream_id: None,
        state: if reason == LeakReason::CloseWait {
            "CLOSE_WAIT"
        } else {
            "ESTABLISHED"
        },
        reason,
        age_s,
        idle_s: age_s - 1.0,
        unread_bytes: if reason == LeakReason::Unread {
            4096
        } else {
            0
        },
        recv_q: 1,
        bytes_read: 325,
        reads: 2,
        buffered_bytes: None,
        last_read_ret: Some(-11),
        origin: Origin::Traced,
        call_site: None,
        stack: Vec::new(),
    }
}

/// `host` with `open_streams` HTTP/2 streams open, of which `h2_leaks` of its leaks are.
pub fn with_streams(host: HostSummary, open_streams: u64, h2_leaks: u64) -> HostSummary {
    assert!(h2_leaks <= host.leaked, "more leaked streams than leaks");
    let mut by_kind = ByKind::connections(host.leaked - h2_leaks);
    for _ in 0..h2_leaks {
        by_kind.add(LeakKind::H2Stream);
    }
    HostSummary {
        open_streams,
        by_kind,
        ..host
    }
}

/// A leaked HTTP/2 stream `stream_id` on the connection from local port `port` to `host`:443,
/// which is itself healthy.
pub fn stream_leak(host: &str, port: u16, stream_id: u32, reason: LeakReason, age_s: f64) -> Leak {
    let read = if reason == LeakReason::Unread { 0 } else { 3 };
    Leak {
        kind: LeakKind::H2Stream,
        stream_id: Some(stream_id),
        state: "ESTABLISHED",
        unread_bytes: 0,
        recv_q: 0,
        bytes_read: read * 4096,
        buffered_bytes: Some(4 << 20),
        reads: read,
        last_read_ret: None,
        ..leak(host, port, reason, age_s)
    }
}

/// A snapshot of `PID` with these hosts and leaks; totals summed from the hosts.
pub fn snapshot(hosts: Vec<HostSummary>, leaks: Vec<Leak>) -> Snapshot {
    Snapshot {
        targets: vec![Target {
            pid: PID,
            comm: "relay".into(),
        }],
        open_total: hosts.iter().map(|h| h.open).sum(),
        leaked_total: hosts.iter().map(|h| h.leaked).sum(),
        hosts,
        providers: vec![],
        leaks,
        kernel: KernelStats {
            events_sent: 120,
            events_lost: 2,
            conn_map_full: 0,
            reads_seen: 80,
        },
        hooks: Default::default(),
        go_layer: vec![],
        sites: vec![],
    }
}

/// Two hosts: one leaking in every way, one healthy, with the leaks that agree with them.
pub fn two_hosts() -> Snapshot {
    snapshot(
        vec![
            host("10.0.0.12", 5, (2, 1, 0), 3, 9),
            host("10.0.0.11", 2, (0, 0, 0), 0, 4),
        ],
        vec![
            leak("10.0.0.12", 40001, LeakReason::CloseWait, 15.9),
            leak("10.0.0.12", 40002, LeakReason::CloseWait, 12.0),
            leak("10.0.0.12", 40003, LeakReason::Unread, 11.5),
        ],
    )
}

/// `tool` from PATH. Missing under `CI=true` is a failure; elsewhere the test is skipped with a
/// printed reason (None).
pub fn required_tool(tool: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file());
    if found.is_none() {
        let reason = format!(
            "{tool} is not installed (Debian package {package}; cargo xtask setup installs it)"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{reason}; under CI=true this is a failure, not a skip");
        }
        eprintln!("skipping: {reason}");
    }
    found
}
