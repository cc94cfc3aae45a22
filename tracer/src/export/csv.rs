//! `--format csv`: one row per host and snapshot, under one header line.

use std::io::Write;

use anyhow::{Context as _, Result};

use super::provider_of;
use crate::model::{leak::LeakKind, snapshot::HostSummary, LeakReason, Snapshot};

/// The columns, in order: `time`, `host`, `provider`, `open`, `leaked`, one column per leak
/// reason (`LeakReason::ALL`), `closed_unread_total`, `connections_total`, then one column per
/// kind of leak (`leaked_connection`, `leaked_h2_stream`: `LeakKind::ALL`) and `open_streams`
/// (open HTTP/2 streams), and `leak_sites`. `leaked` and the reasons count both kinds, as
/// JSON's `leaked` and `by_reason` do. The session totals count over the session; the others
/// are the host's connections and streams at `time`. The newer columns come last so that
/// scripts reading columns by position before they existed read the same figures.
/// `leak_sites` names the relay's lines that obtained the host's leaks, most first, as
/// `function file:line=N` separated by `; ` (empty without the Go-aware probes).
pub fn header() -> Vec<String> {
    let mut columns: Vec<String> = ["time", "host", "provider", "open", "leaked"]
        .map(String::from)
        .into();
    columns.extend(LeakReason::ALL.map(|r| r.as_str().to_owned()));
    columns.extend(["closed_unread_total", "connections_total"].map(String::from));
    columns.extend(LeakKind::ALL.map(|k| format!("leaked_{}", k.as_str())));
    columns.push("open_streams".to_owned());
    columns.push("leak_sites".to_owned());
    columns
}

/// The call sites of `host`'s leaks with their counts, most first.
fn leak_sites(snapshot: &Snapshot, host: &str) -> String {
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for leak in snapshot.leaks.iter().filter(|l| l.host == host) {
        if let Some(site) = &leak.call_site {
            *counts.entry(site.to_string()).or_default() += 1;
        }
    }
    let mut sites: Vec<(String, u64)> = counts.into_iter().collect();
    sites.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sites
        .iter()
        .map(|(site, n)| format!("{site}={n}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One row: a host's figures in one snapshot, in `header()`'s order.
fn row(time: &str, host: &HostSummary, sites: String) -> Vec<String> {
    let mut fields = vec![
        time.to_owned(),
        host.host.clone(),
        provider_of(host).to_owned(),
        host.open.to_string(),
        host.leaked.to_string(),
    ];
    fields.extend(host.by_reason.iter().map(|(_, n)| n.to_string()));
    fields.push(host.closed_unread_total.to_string());
    fields.push(host.connections_total.to_string());
    fields.extend(host.by_kind.iter().map(|(_, n)| n.to_string()));
    fields.push(host.open_streams.to_string());
    fields.push(sites);
    fields
}

/// Writes snapshots as CSV rows; the header once, before the first snapshot (also when it has
/// no host, so a script always finds the columns).
pub struct CsvSnapshots<W: Write> {
    out: ::csv::Writer<W>,
    header_written: bool,
}

impl<W: Write> CsvSnapshots<W> {
    pub fn new(out: W) -> Self {
        // The header is ours to write: csv writes it only with a first row.
        let out = ::csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        CsvSnapshots {
            out,
            header_written: false,
        }
    }

    /// Writes the rows of `snapshot`, stamped with the current time.
    pub fn write(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.write_at(snapshot, &super::now_rfc3339()?)
    }

    /// Writes the rows of `snapshot` stamped with `time` (RFC 3339), in the snapshot's host
    /// order (most leaks first), and flushes.
    pub fn write_at(&mut self, snapshot: &Snapshot, time: &str) -> Result<()> {
        if !self.header_written {
            self.out
                .write_record(header())
                .context("writing the CSV header")?;
            self.header_written = true;
        }
        for host in &snapshot.hosts {
            self.out
                .write_record(row(time, host, leak_sites(snapshot, &host.host)))
                .with_context(|| format!("writing the CSV row of host {}", host.host))?;
        }
        self.out.flush().context("flushing CSV rows")?;
        Ok(())
    }

    #[cfg(test)]
    /// The writer underneath, everything written flushed to it.
    pub fn into_inner(self) -> Result<W> {
        self.out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("flushing CSV rows: {}", e.error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::{json::JsonLines, testdata::*},
        model::{classify::LeakReason, leak::LeakKind},
    };

    const TIME: &str = "2026-11-26T19:44:45.85Z";

    /// What a row must say for `host`.
    /// The documented columns, as scripts and spreadsheets read them.
    const HEADER: [&str; 14] = [
        "time",
        "host",
        "provider",
        "open",
        "leaked",
        "close_wait",
        "unread",
        "abandoned",
        "closed_unread_total",
        "connections_total",
        "leaked_connection",
        "leaked_h2_stream",
        "open_streams",
        "leak_sites",
    ];

    /// A row read back by its column names.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
    struct HostRow {
        time: String,
        host: String,
        provider: String,
        open: u64,
        leaked: u64,
        close_wait: u64,
        unread: u64,
        abandoned: u64,
        closed_unread_total: u64,
        connections_total: u64,
        leaked_connection: u64,
        leaked_h2_stream: u64,
        open_streams: u64,
        leak_sites: String,
    }

    type Figures = (String, u64, u64, [u64; 3], u64, u64, [u64; 2], u64);

    fn figures(host: &HostSummary) -> Figures {
        (
            host.host.clone(),
            host.open,
            host.leaked,
            [
                host.by_reason.get(LeakReason::CloseWait),
                host.by_reason.get(LeakReason::Unread),
                host.by_reason.get(LeakReason::Abandoned),
            ],
            host.closed_unread_total,
            host.connections_total,
            [
                host.by_kind.get(LeakKind::Connection),
                host.by_kind.get(LeakKind::H2Stream),
            ],
            host.open_streams,
        )
    }

    fn row_figures(row: &HostRow) -> Figures {
        (
            row.host.clone(),
            row.open,
            row.leaked,
            [row.close_wait, row.unread, row.abandoned],
            row.closed_unread_total,
            row.connections_total,
            [row.leaked_connection, row.leaked_h2_stream],
            row.open_streams,
        )
    }

    /// Hosts with names that need quoting in CSV, besides the usual ones.
    fn awkward_snapshot() -> Snapshot {
        let Snapshot {
            mut hosts,
            mut leaks,
            ..
        } = two_hosts();
        hosts.push(host("2001:db8::7", 1, (0, 0, 1), 1, 2));
        leaks.push(leak("2001:db8::7", 40009, LeakReason::Abandoned, 31.0));
        hosts.push(of_provider(
            host("api,\"quoted\"\nhost", 4, (0, 0, 0), 0, 11),
            "open,ai",
        ));
        // A host whose leaks are HTTP/2 streams on healthy connections.
        hosts.push(with_streams(host("10.0.0.23", 2, (0, 1, 1), 0, 2), 6, 2));
        leaks.push(stream_leak("10.0.0.23", 40010, 3, LeakReason::Unread, 95.0));
        leaks.push(stream_leak(
            "10.0.0.23",
            40010,
            5,
            LeakReason::Abandoned,
            60.0,
        ));
        snapshot(hosts, leaks)
    }

    fn write(snapshots: &[&Snapshot]) -> String {
        let mut out = CsvSnapshots::new(Vec::new());
        for snapshot in snapshots {
            out.write_at(snapshot, TIME).expect("writes");
        }
        String::from_utf8(out.into_inner().expect("flushes")).expect("UTF-8")
    }

    #[test]
    fn a_snapshot_is_a_header_and_one_row_per_host() {
        let mut snapshot = two_hosts();
        snapshot
            .hosts
            .push(with_streams(host("10.0.0.23", 2, (0, 1, 1), 0, 2), 6, 2));
        let text = write(&[&snapshot]);
        assert_eq!(
            text,
            "time,host,provider,open,leaked,close_wait,unread,abandoned,closed_unread_total,connections_total,\
             leaked_connection,leaked_h2_stream,open_streams,leak_sites\n\
             2026-11-26T19:44:45.85Z,10.0.0.12,unknown,5,3,2,1,0,3,9,3,0,0,\n\
             2026-11-26T19:44:45.85Z,10.0.0.11,unknown,2,0,0,0,0,0,4,0,0,0,\n\
             2026-11-26T19:44:45.85Z,10.0.0.23,unknown,2,2,0,1,1,0,2,0,2,6,\n"
        );
    }

    #[test]
    fn a_hosts_leak_sites_are_named_with_their_counts_most_first() {
        use crate::model::site::CallSite;
        let mut snapshot = two_hosts();
        let site = |line| CallSite {
            function: "main.relay".into(),
            file: "relay/image.go".into(),
            line,
        };
        let with_sites = [Some(site(829)), Some(site(12)), Some(site(12))];
        for (leak, call_site) in snapshot.leaks.iter_mut().zip(with_sites) {
            leak.call_site = call_site;
        }
        let text = write(&[&snapshot]);
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<HostRow> = reader
            .deserialize()
            .collect::<Result<_, _>>()
            .expect("rows parse back");
        assert_eq!(
            rows[0].leak_sites,
            "main.relay relay/image.go:12=2; main.relay relay/image.go:829=1"
        );
        assert_eq!(rows[1].leak_sites, "");
    }

    #[test]
    fn the_header_comes_once_and_also_without_hosts() {
        let empty = snapshot(vec![], vec![]);
        assert_eq!(write(&[&empty]), format!("{}\n", HEADER.join(",")));
        assert_eq!(header(), HEADER);
        let text = write(&[&two_hosts(), &empty, &two_hosts()]);
        assert_eq!(
            text.lines().filter(|l| l.starts_with("time,")).count(),
            1,
            "{text}"
        );
        assert_eq!(text.lines().count(), 1 + 2 + 2);
    }

    #[test]
    fn csv_round_trips_to_the_snapshot_figures() {
        let snapshot = awkward_snapshot();
        let text = write(&[&snapshot]);
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .expect("a header")
            .iter()
            .map(str::to_string)
            .collect();
        assert_eq!(header, HEADER);
        let rows: Vec<HostRow> = reader
            .deserialize()
            .collect::<Result<_, _>>()
            .expect("rows parse back");
        assert_eq!(
            rows.iter().map(row_figures).collect::<Vec<_>>(),
            snapshot.hosts.iter().map(figures).collect::<Vec<_>>()
        );
        assert!(rows.iter().all(|r| r.time == TIME));
        assert_eq!(
            rows.iter().map(|r| r.provider.as_str()).collect::<Vec<_>>(),
            ["unknown", "unknown", "unknown", "open,ai", "unknown"]
        );
        assert_eq!(
            rows.iter()
                .map(|r| r.leaked_connection + r.leaked_h2_stream)
                .collect::<Vec<_>>(),
            rows.iter().map(|r| r.leaked).collect::<Vec<_>>(),
            "the kinds add up to leaked"
        );
        assert_eq!(
            rows.iter().map(|r| r.leaked).sum::<u64>(),
            snapshot.leaked_total
        );
        assert_eq!(
            rows.iter().map(|r| r.open).sum::<u64>(),
            snapshot.open_total
        );
    }

    /// The JSON line's figures, read back with serde_json.
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct JsonLine {
        time: String,
        targets: Vec<u32>,
        hosts: Vec<JsonHost>,
        leaks: Vec<JsonLeak>,
        open_total: u64,
        leaked_total: u64,
        kernel: JsonKernel,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct JsonHost {
        host: String,
        provider: Option<String>,
        remotes: Vec<String>,
        open: u64,
        leaked: u64,
        by_reason: JsonReasons,
        by_kind: JsonKinds,
        open_streams: u64,
        closed_unread_total: u64,
        connections_total: u64,
        oldest_leak_age_s: Option<f64>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct JsonKinds {
        connection: u64,
        h2_stream: u64,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct JsonReasons {
        close_wait: u64,
        unread: u64,
        abandoned: u64,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct JsonLeak {
        pid: u32,
        fd: Option<i32>,
        local: String,
        remote: String,
        host: String,
        provider: Option<String>,
        state: String,
        kind: String,
        stream_id: Option<u32>,
        #[serde(default)]
        buffered_bytes: Option<u64>,
        reason: String,
        age_s: f64,
        unread_bytes: u32,
        recv_q: u32,
        origin: String,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct JsonKernel {
        events_sent: u64,
        events_lost: u64,
        conn_map_full: u64,
        reads_seen: u64,
    }

    #[test]
    fn json_round_trips_to_the_snapshot_figures() {
        let snapshot = awkward_snapshot();
        let mut out = JsonLines::new(Vec::new());
        out.write_at(&snapshot, TIME.into()).expect("writes");
        out.write_at(&snapshot, TIME.into()).expect("writes");
        let text = String::from_utf8(out.into_inner()).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "one line per snapshot, however awkward the names: {text}"
        );
        let line: JsonLine = serde_json::from_str(lines[0]).expect("the line parses back");
        let expected = JsonLine {
            time: TIME.into(),
            targets: vec![PID],
            hosts: snapshot
                .hosts
                .iter()
                .map(|h| JsonHost {
                    host: h.host.clone(),
                    provider: h.provider.clone(),
                    remotes: h.remotes.clone(),
                    open: h.open,
                    leaked: h.leaked,
                    by_reason: JsonReasons {
                        close_wait: h.by_reason.get(LeakReason::CloseWait),
                        unread: h.by_reason.get(LeakReason::Unread),
                        abandoned: h.by_reason.get(LeakReason::Abandoned),
                    },
                    by_kind: JsonKinds {
                        connection: h.by_kind.get(LeakKind::Connection),
                        h2_stream: h.by_kind.get(LeakKind::H2Stream),
                    },
                    open_streams: h.open_streams,
                    closed_unread_total: h.closed_unread_total,
                    connections_total: h.connections_total,
                    oldest_leak_age_s: h.oldest_leak_age_s,
                })
                .collect(),
            leaks: snapshot
                .leaks
                .iter()
                .map(|l| JsonLeak {
                    pid: l.pid,
                    fd: l.fd,
                    local: l.local.to_string(),
                    remote: l.remote.to_string(),
                    host: l.host.clone(),
                    provider: l.provider.clone(),
                    state: l.state.into(),
                    kind: l.kind.as_str().into(),
                    stream_id: l.stream_id,
                    buffered_bytes: l.buffered_bytes,
                    reason: l.reason.as_str().into(),
                    age_s: l.age_s,
                    unread_bytes: l.unread_bytes,
                    recv_q: l.recv_q,
                    origin: "traced".into(),
                })
                .collect(),
            open_total: snapshot.open_total,
            leaked_total: snapshot.leaked_total,
            kernel: JsonKernel {
                events_sent: snapshot.kernel.events_sent,
                events_lost: snapshot.kernel.events_lost,
                conn_map_full: snapshot.kernel.conn_map_full,
                reads_seen: snapshot.kernel.reads_seen,
            },
        };
        assert_eq!(line, expected);
    }

    #[test]
    fn csv_json_and_prometheus_agree_on_leaked_counts_per_host() {
        use crate::export::prometheus::{Health, PrometheusExporter};
        let snapshot = awkward_snapshot();
        let csv_text = write(&[&snapshot]);
        let rows: Vec<HostRow> = ::csv::Reader::from_reader(csv_text.as_bytes())
            .deserialize()
            .collect::<Result<_, _>>()
            .expect("rows parse back");
        let mut out = JsonLines::new(Vec::new());
        out.write_at(&snapshot, TIME.into()).expect("writes");
        let json: JsonLine =
            serde_json::from_slice(&out.into_inner()).expect("the line parses back");
        let metrics = PrometheusExporter::default()
            .render(&snapshot, &Health::default())
            .expect("renders");
        for (row, host) in rows.iter().zip(&json.hosts) {
            assert_eq!((&row.host, row.leaked), (&host.host, host.leaked));
            let prometheus: u64 = metrics
                .lines()
                .filter(|l| l.starts_with("tracer_upstream_connections_leaked{"))
                .filter(|l| {
                    let escaped = row
                        .host
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    l.contains(&format!("{{host=\"{escaped}\","))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            assert_eq!(prometheus, row.leaked, "host {:?}\n{metrics}", row.host);
        }
    }
}
