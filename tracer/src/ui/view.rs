//! The view-model: what one frame shows, taken from the model at one instant. The snapshot
//! (per-host aggregates, as every output has them) plus each open connection with its verdict,
//! which the connections and detail pages need. Built by reading the table; owned, so a paused
//! screen keeps showing it while the model moves on.

use crate::model::{
    classify::{judge, Graces, LeakReason},
    snapshot::HostSummary,
    table::UpstreamConn,
    ConnId, ConnTable, Snapshot,
};

use super::{
    state::{ConnSort, HostSort, ReasonFilter, UiState},
    trend::Trend,
};

/// One open connection and its verdict at the view's instant.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnRow {
    /// The host it belongs to, as the model names it (the snapshot's `host`).
    pub host: String,
    pub conn: UpstreamConn,
    pub verdict: Option<LeakReason>,
}

impl ConnRow {
    pub fn id(&self) -> ConnId {
        self.conn.id()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub now_ns: u64,
    pub snapshot: Snapshot,
    /// Every open connection, any host.
    pub conns: Vec<ConnRow>,
}

impl View {
    pub fn build(table: &ConnTable, now_ns: u64, graces: &Graces) -> Self {
        let snapshot = Snapshot::take(table, now_ns, graces);
        let mut conns: Vec<ConnRow> = table
            .conns()
            .filter(|c| c.is_open())
            .map(|c| ConnRow {
                host: c.host.clone(),
                conn: c.clone(),
                verdict: judge(c, now_ns, graces),
            })
            .collect();
        conns.sort_by_key(ConnRow::id);
        Self {
            now_ns,
            snapshot,
            conns,
        }
    }

    pub fn host(&self, name: &str) -> Option<&HostSummary> {
        self.snapshot.hosts.iter().find(|h| h.host == name)
    }

    pub fn conn(&self, id: &ConnId) -> Option<&ConnRow> {
        self.conns.iter().find(|c| &c.id() == id)
    }

    /// The hosts the hosts page lists: filtered, then sorted as chosen.
    pub fn listed_hosts<'a>(&'a self, ui: &UiState, trend: &Trend) -> Vec<&'a HostSummary> {
        let needle = ui.host_filter.to_lowercase();
        let mut hosts: Vec<&HostSummary> = self
            .snapshot
            .hosts
            .iter()
            .filter(|h| {
                needle.is_empty()
                    || h.host.to_lowercase().contains(&needle)
                    || h.provider
                        .as_ref()
                        .is_some_and(|p| p.to_lowercase().contains(&needle))
                    || h.remotes.iter().any(|r| r.contains(&needle))
            })
            .filter(|h| match ui.reason_filter {
                ReasonFilter::All => true,
                ReasonFilter::Leaked => h.leaked > 0,
                ReasonFilter::Only(reason) => h.by_reason.get(reason) > 0,
            })
            .collect();
        let by_name = |a: &&HostSummary, b: &&HostSummary| a.host.cmp(&b.host);
        match ui.host_sort {
            HostSort::Leaked => {
                hosts.sort_by(|a, b| b.leaked.cmp(&a.leaked).then_with(|| by_name(a, b)))
            }
            HostSort::Open => hosts.sort_by(|a, b| b.open.cmp(&a.open).then_with(|| by_name(a, b))),
            HostSort::Rate => hosts.sort_by(|a, b| {
                let rate = |h: &HostSummary| trend.open_rate(&h.host).unwrap_or(0.0);
                rate(b).total_cmp(&rate(a)).then_with(|| by_name(a, b))
            }),
            HostSort::Oldest => hosts.sort_by(|a, b| {
                let age = |h: &HostSummary| h.oldest_leak_age_s.unwrap_or(-1.0);
                age(b).total_cmp(&age(a)).then_with(|| by_name(a, b))
            }),
            HostSort::Name => hosts.sort_by(by_name),
        }
        hosts
    }

    /// The open connections of `host` the connections page lists.
    pub fn listed_conns<'a>(&'a self, host: &str, ui: &UiState) -> Vec<&'a ConnRow> {
        let mut conns: Vec<&ConnRow> = self
            .conns
            .iter()
            .filter(|c| c.host == host && ui.reason_filter.admits(c.verdict))
            .collect();
        let now = self.now_ns;
        match ui.conn_sort {
            ConnSort::Verdict => conns.sort_by(|a, b| {
                // Leaked first, in verdict order; then the oldest first.
                let rank = |c: &ConnRow| c.verdict.map_or(3, |r| r as u8);
                rank(a)
                    .cmp(&rank(b))
                    .then(a.conn.opened_ns.cmp(&b.conn.opened_ns))
            }),
            ConnSort::Age => conns.sort_by_key(|c| c.conn.opened_ns),
            ConnSort::Idle => conns.sort_by_key(|c| c.conn.last_activity_ns().min(now)),
            ConnSort::Unread => conns.sort_by_key(|c| std::cmp::Reverse(c.conn.unread_bytes())),
            ConnSort::Local => conns.sort_by_key(|c| c.conn.local),
        }
        conns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{tcp_state, testkit::*, KernelConn};

    fn close_wait(port: u16, remote: &str, at: u64) -> KernelConn {
        KernelConn {
            state: tcp_state::CLOSE_WAIT,
            peer_fin_ns: Some(at),
            recv_q: recv_q(1, at),
            ..established(kconn(port, remote, at), at)
        }
    }

    fn pooled(port: u16, remote: &str, at: u64) -> KernelConn {
        KernelConn {
            last_read_ns: Some(at),
            last_read_ret: -11,
            reads: 1,
            ..established(kconn(port, remote, at), at)
        }
    }

    fn view() -> View {
        let table = table_after([sample(
            100 * SEC,
            vec![
                (1, close_wait(40001, "10.0.0.12:443", 10 * SEC)),
                (2, close_wait(40002, "10.0.0.12:443", 20 * SEC)),
                (3, pooled(40003, "10.0.0.12:443", 5 * SEC)),
                (4, pooled(40004, "10.0.0.11:443", 5 * SEC)),
                (5, pooled(40005, "10.0.0.11:443", 5 * SEC)),
                (6, close_wait(40006, "10.0.0.13:80", 90 * SEC)),
            ],
            vec![],
        )]);
        View::build(&table, 100 * SEC, &Graces::default())
    }

    fn names<'a>(hosts: &[&'a HostSummary]) -> Vec<&'a str> {
        hosts.iter().map(|h| h.host.as_str()).collect()
    }

    #[test]
    fn every_open_connection_is_listed_with_its_host_and_verdict() {
        let v = view();
        assert_eq!(v.conns.len(), 6);
        let leaked: Vec<_> = v
            .conns
            .iter()
            .filter(|c| c.verdict.is_some())
            .map(|c| c.conn.local.port())
            .collect();
        assert_eq!(leaked, vec![40001, 40002, 40006]);
        assert!(v
            .conns
            .iter()
            .all(|c| c.host == c.conn.remote.ip().to_string()));
        let id = v.conns[0].id();
        assert_eq!(v.conn(&id).map(|c| c.conn.local.port()), Some(40001));
    }

    #[test]
    fn hosts_sort_and_filter_as_the_ui_says() {
        let v = view();
        let trend = Trend::default();
        let mut ui = UiState::new();
        assert_eq!(
            names(&v.listed_hosts(&ui, &trend)),
            vec!["10.0.0.12", "10.0.0.13", "10.0.0.11"]
        );
        ui.host_sort = HostSort::Open;
        assert_eq!(
            names(&v.listed_hosts(&ui, &trend)),
            vec!["10.0.0.12", "10.0.0.11", "10.0.0.13"]
        );
        ui.host_sort = HostSort::Name;
        assert_eq!(
            names(&v.listed_hosts(&ui, &trend)),
            vec!["10.0.0.11", "10.0.0.12", "10.0.0.13"]
        );
        ui.host_sort = HostSort::Oldest;
        assert_eq!(
            names(&v.listed_hosts(&ui, &trend)),
            vec!["10.0.0.12", "10.0.0.13", "10.0.0.11"]
        );
        ui.host_filter = "0.1".into();
        assert_eq!(
            names(&v.listed_hosts(&ui, &trend)),
            vec!["10.0.0.12", "10.0.0.13", "10.0.0.11"]
        );
        ui.host_filter = ".13".into();
        assert_eq!(names(&v.listed_hosts(&ui, &trend)), vec!["10.0.0.13"]);
        ui.host_filter = ":80".into();
        assert_eq!(
            names(&v.listed_hosts(&ui, &trend)),
            vec!["10.0.0.13"],
            "addresses match too"
        );
        ui.host_filter.clear();
        ui.reason_filter = ReasonFilter::Leaked;
        assert_eq!(
            names(&v.listed_hosts(&ui, &trend)),
            vec!["10.0.0.12", "10.0.0.13"]
        );
        ui.reason_filter = ReasonFilter::Only(LeakReason::Unread);
        assert!(v.listed_hosts(&ui, &trend).is_empty());
    }

    #[test]
    fn connections_of_a_host_sort_leaked_first_and_filter_by_reason() {
        let v = view();
        let mut ui = UiState::new();
        let ports = |ui: &UiState| -> Vec<u16> {
            v.listed_conns("10.0.0.12", ui)
                .iter()
                .map(|c| c.conn.local.port())
                .collect()
        };
        assert_eq!(ports(&ui), vec![40001, 40002, 40003]);
        ui.conn_sort = ConnSort::Age;
        assert_eq!(ports(&ui), vec![40003, 40001, 40002]);
        ui.conn_sort = ConnSort::Local;
        assert_eq!(ports(&ui), vec![40001, 40002, 40003]);
        ui.reason_filter = ReasonFilter::Leaked;
        assert_eq!(ports(&ui), vec![40001, 40002]);
        ui.reason_filter = ReasonFilter::Only(LeakReason::Abandoned);
        assert_eq!(ports(&ui), Vec::<u16>::new());
        assert!(v.listed_conns("10.9.9.9", &UiState::new()).is_empty());
    }
}
