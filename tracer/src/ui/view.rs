//! The view-model: what one frame shows, taken from the model at one instant. The snapshot
//! (per-host aggregates, as every output has them) plus each open connection with its verdict
//! and its open HTTP/2 streams with theirs, which the connections and detail pages need. Built
//! by reading the table; owned, so a paused screen keeps showing it while the model moves on.

use std::collections::HashMap;

use crate::model::{
    classify::{judge, judge_stream, Graces, LeakReason},
    leak::LeakKind,
    site::CallSite,
    snapshot::{HostSummary, Leak, SiteSummary, UNKNOWN_CONNECTION_HOST},
    stream::H2Stream,
    table::UpstreamConn,
    ConnId, ConnTable, Snapshot,
};

use super::{
    state::{ConnSort, HostSort, ListedLeak, ReasonFilter, StreamKey, UiState},
    trend::Trend,
};

/// One open HTTP/2 stream and its verdict at the view's instant.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRow {
    /// The host of its connection (`UNKNOWN_CONNECTION_HOST` when the probes could not follow
    /// it to a connection the tracer holds).
    pub host: String,
    pub stream: H2Stream,
    pub verdict: Option<LeakReason>,
    /// Response bytes waiting in Go's buffer for it, when measured.
    pub buffered_bytes: Option<u64>,
}

impl StreamRow {
    pub fn key(&self) -> StreamKey {
        StreamKey {
            pid: self.stream.pid,
            stream: self.stream.stream,
        }
    }
}

/// Leaked first, in reason order; then by stream id (the order they were opened).
fn stream_order(a: &StreamRow, b: &StreamRow) -> std::cmp::Ordering {
    let rank = |s: &StreamRow| s.verdict.map_or(LeakReason::ALL.len(), |r| r as usize);
    rank(a)
        .cmp(&rank(b))
        .then(a.stream.stream_id.cmp(&b.stream.stream_id))
        .then(a.stream.opened_ns.cmp(&b.stream.opened_ns))
}

/// One open connection and its verdict at the view's instant, with its open HTTP/2 streams.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnRow {
    /// The host it belongs to, as the model names it (the snapshot's `host`).
    pub host: String,
    pub conn: UpstreamConn,
    pub verdict: Option<LeakReason>,
    /// Its open HTTP/2 streams, leaked first (empty over HTTP/1.1, or with the probes off).
    pub streams: Vec<StreamRow>,
}

impl ConnRow {
    pub fn id(&self) -> ConnId {
        self.conn.id()
    }

    /// Its streams judged leaked.
    pub fn leaked_streams(&self) -> usize {
        self.streams.iter().filter(|s| s.verdict.is_some()).count()
    }

    /// Whether the filter shows it: by its own verdict, or one of its streams'.
    fn admitted_by(&self, filter: ReasonFilter) -> bool {
        filter.admits(self.verdict)
            || self
                .streams
                .iter()
                .any(|s| filter.admits(s.verdict) && s.verdict.is_some())
    }
}

/// One leak of a call site, with the rows the view holds for it.
#[derive(Clone, Copy, Debug)]
pub struct SiteLeakRow<'a> {
    pub leak: &'a Leak,
    /// Its connection (None: a stream whose connection the probes could not follow).
    pub conn: Option<&'a ConnRow>,
    /// The leaked HTTP/2 stream (None for a leaked connection).
    pub stream: Option<&'a StreamRow>,
}

impl SiteLeakRow<'_> {
    /// What the UI state selects and opens.
    pub fn listed(&self) -> ListedLeak {
        ListedLeak {
            conn: self.leak.id(),
            host: self.leak.host.clone(),
            stream: self.stream.map(StreamRow::key),
            has_detail: self.conn.is_some(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub now_ns: u64,
    pub snapshot: Snapshot,
    /// Every open connection, any host.
    pub conns: Vec<ConnRow>,
    /// Open streams whose connection is not known (listed under `UNKNOWN_CONNECTION_HOST`).
    pub orphan_streams: Vec<StreamRow>,
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
                streams: Vec::new(),
            })
            .collect();
        conns.sort_by_key(ConnRow::id);
        // A stream's connection is the open one of its process with its fd, as the snapshot
        // counts it.
        let by_fd: HashMap<(u32, i32), usize> = conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some(((c.conn.pid, c.conn.fd?), i)))
            .collect();
        let mut orphan_streams = Vec::new();
        for stream in table.streams().open() {
            let conn = stream
                .fd
                .and_then(|fd| by_fd.get(&(stream.pid, fd)).copied());
            let row = StreamRow {
                host: conn.map_or_else(
                    || UNKNOWN_CONNECTION_HOST.to_owned(),
                    |i| conns[i].host.clone(),
                ),
                stream: stream.clone(),
                verdict: judge_stream(stream, now_ns, graces),
                buffered_bytes: stream.buffered_bytes,
            };
            match conn {
                Some(i) => conns[i].streams.push(row),
                None => orphan_streams.push(row),
            }
        }
        for c in &mut conns {
            c.streams.sort_by(stream_order);
        }
        orphan_streams.sort_by(stream_order);
        Self {
            now_ns,
            snapshot,
            conns,
            orphan_streams,
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

    /// The call sites the sites page lists: as the snapshot sorts them (most leaks, then
    /// most requests), those with a leak of the chosen reason.
    pub fn listed_sites(&self, ui: &UiState) -> Vec<&SiteSummary> {
        self.snapshot
            .sites
            .iter()
            .filter(|site| match ui.reason_filter {
                ReasonFilter::All => true,
                ReasonFilter::Leaked => site.leaked > 0,
                ReasonFilter::Only(reason) => site.by_reason.get(reason) > 0,
            })
            .collect()
    }

    pub fn site(&self, call_site: &CallSite) -> Option<&SiteSummary> {
        self.snapshot
            .sites
            .iter()
            .find(|s| &s.call_site == call_site)
    }

    /// The leaks a call site's page lists (of the chosen reason), in the snapshot's order
    /// (by host, oldest first), each with its connection and stream when the view has them.
    pub fn site_leaks(&self, call_site: &CallSite, ui: &UiState) -> Vec<SiteLeakRow<'_>> {
        self.snapshot
            .leaks
            .iter()
            .filter(|l| l.call_site.as_ref() == Some(call_site))
            .filter(|l| ui.reason_filter.admits(Some(l.reason)))
            .map(|leak| {
                let conn = self.conn(&leak.id());
                let stream = match leak.kind {
                    LeakKind::Connection => None,
                    // Stream ids are unique per connection; the streams of an unknown
                    // connection are told apart by their fd as well.
                    LeakKind::H2Stream => match conn {
                        Some(c) => c
                            .streams
                            .iter()
                            .find(|s| s.stream.stream_id == leak.stream_id && s.verdict.is_some()),
                        None => self.orphan_streams.iter().find(|s| {
                            s.stream.pid == leak.pid
                                && s.stream.stream_id == leak.stream_id
                                && s.stream.fd == leak.fd
                        }),
                    },
                };
                SiteLeakRow { leak, conn, stream }
            })
            .collect()
    }

    /// The open connections of `host` the connections page lists.
    pub fn listed_conns<'a>(&'a self, host: &str, ui: &UiState) -> Vec<&'a ConnRow> {
        let mut conns: Vec<&ConnRow> = self
            .conns
            .iter()
            .filter(|c| c.host == host && c.admitted_by(ui.reason_filter))
            .collect();
        let now = self.now_ns;
        match ui.conn_sort {
            ConnSort::Verdict => conns.sort_by(|a, b| {
                // Leaked first, in verdict order, then those carrying leaked streams; then
                // the oldest first.
                let rank = |c: &ConnRow| match c.verdict {
                    Some(reason) => reason as usize,
                    None if c.leaked_streams() > 0 => LeakReason::ALL.len(),
                    None => LeakReason::ALL.len() + 1,
                };
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
    use crate::model::{tcp_state, testkit::*, Input, KernelConn};

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
    fn streams_hang_off_their_connection_leaked_first_and_count_for_its_filter_and_sort() {
        let h2 = |port: u16, fd: i32| KernelConn {
            fd: Some(fd),
            ..pooled(port, "10.0.0.21:443", 5 * SEC)
        };
        let mut inputs = vec![go_layer_attached()];
        // On fd 31: stream 1 read to its last byte but open (ok), stream 3 never read.
        // Stream 5's connection is not known.
        for (now_ns, read) in [(11 * SEC, 0), (20 * SEC, 100)] {
            inputs.push(Input::Sample(crate::model::Sample {
                now_ns,
                kernel: vec![
                    (1, h2(40001, 31)),
                    (2, h2(40002, 32)),
                    (3, close_wait(40003, "10.0.0.21:443", 5 * SEC)),
                ],
                sockets: Some(vec![]),
                streams: vec![
                    stream_sample(1, 1, Some(31), true, (100, read)),
                    stream_sample(3, 3, Some(31), true, (4096, 0)),
                    stream_sample(5, 5, None, true, (4096, 0)),
                ],
                stats: Default::default(),
                scanned_ns: None,
            }));
        }
        let table = table_after(inputs);
        // 19 s after the headers: past the 10 s unread grace.
        let v = View::build(&table, 30 * SEC, &Graces::default());
        let on = |port: u16| {
            v.conns
                .iter()
                .find(|c| c.conn.local.port() == port)
                .expect("listed")
        };
        let ids = |c: &ConnRow| -> Vec<Option<u32>> {
            c.streams.iter().map(|s| s.stream.stream_id).collect()
        };
        assert_eq!(ids(on(40001)), vec![Some(3), Some(1)], "leaked first");
        assert_eq!(
            on(40001)
                .streams
                .iter()
                .map(|s| s.verdict)
                .collect::<Vec<_>>(),
            vec![Some(LeakReason::Unread), None],
            "stream 1 is being read"
        );
        assert_eq!(on(40001).leaked_streams(), 1);
        assert!(on(40002).streams.is_empty());
        assert_eq!(
            v.orphan_streams
                .iter()
                .map(|s| (s.host.as_str(), s.stream.stream_id))
                .collect::<Vec<_>>(),
            vec![(UNKNOWN_CONNECTION_HOST, Some(5))]
        );
        // Leaked connections first, then those carrying leaked streams, then the rest.
        let mut ui = UiState::new();
        let ports = |ui: &UiState| -> Vec<u16> {
            v.listed_conns("10.0.0.21", ui)
                .iter()
                .map(|c| c.conn.local.port())
                .collect()
        };
        assert_eq!(ports(&ui), vec![40003, 40001, 40002]);
        ui.reason_filter = ReasonFilter::Leaked;
        assert_eq!(ports(&ui), vec![40003, 40001]);
        ui.reason_filter = ReasonFilter::Only(LeakReason::Unread);
        assert_eq!(ports(&ui), vec![40001]);
        ui.reason_filter = ReasonFilter::Only(LeakReason::Abandoned);
        assert_eq!(ports(&ui), Vec::<u16>::new());
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
