//! Prometheus text exposition (format 0.0.4) of a snapshot and of the session's counters.
//!
//! Every name has the `tracer_` prefix and a base unit; counters end in `_total`. Label
//! cardinality is bounded: the `top_hosts` hosts with the most leaked, then open, connections
//! get their own series, the rest are summed per provider under `host="other"` (providers come
//! from the naming catalogue, so there are few; hosts it does not name are `unknown`). Sums by
//! provider are therefore exact whatever N is. The leak series also carry `kind`
//! (`connection`, `h2_stream`) and `reason`, only in the pairs a leak can have
//! (`LeakKind::reasons`): five per host label.
//!
//! Gauges are recomputed from each snapshot. Counters are accumulated here from the per-host
//! increase between renders, so a series only ever goes up, whichever label its host gets over
//! time (a host that moves in or out of the top N never makes "other" go down, which
//! Prometheus would read as a counter reset).

use std::collections::{BTreeMap, HashMap, HashSet};

use ::prometheus::{
    core::{Collector, GenericCounterVec, GenericGaugeVec},
    Encoder as _, Opts, Registry, TextEncoder,
};
use anyhow::{Context as _, Result};

use super::{provider_of, UNKNOWN_PROVIDER};
use crate::model::{
    classify::LeakReason,
    leak::LeakKind,
    snapshot::{HostSummary, Leak},
    ConnId, Snapshot,
};

/// Hosts with their own series unless configured otherwise.
pub const DEFAULT_TOP_HOSTS: usize = 20;
/// The `host` label of the series that sum, per provider, the hosts outside the top N.
pub const OTHER: &str = "other";
/// Call sites with their own `site` series; the others sum as `site="other"`.
pub const TOP_SITES: usize = 20;
/// What `/metrics` answers with: the text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const PREFIX: &str = "tracer";

/// The tracer's own CPU and memory, as [`read_process_stats`](super::metrics_server::read_process_stats)
/// reads them from /proc/self.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time since the tracer started.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

/// What the exposition shows beyond the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Health {
    /// CLOCK_MONOTONIC nanoseconds at which the snapshot was taken: events per second are
    /// measured between two renders.
    pub now_ns: u64,
    /// Connections the model holds (open or closing), against the kernel map's capacity.
    pub tracked_sockets: u64,
    /// `None` when /proc/self could not be read: the process series are left out.
    pub process: Option<ProcessStats>,
}

#[derive(Clone, Copy, Debug)]
struct Sighting {
    /// The connection's age when last seen leaked: it only grows for the same connection.
    age_s: f64,
    /// The `observe` call that last saw it.
    generation: u64,
}

/// What one leak is across snapshots: its connection, and for a stream its id on that
/// connection (HTTP/2 never reuses a stream id on a connection).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LeakId {
    conn: ConnId,
    kind: LeakKind,
    stream_id: Option<u32>,
}

impl LeakId {
    fn of(leak: &Leak) -> Self {
        LeakId {
            conn: leak.id(),
            kind: leak.kind,
            stream_id: leak.stream_id,
        }
    }
}

/// Counts each leaked connection or stream once, the first time a snapshot shows it leaked,
/// however many snapshots show it after that (also when it stops being leaked for a while and
/// leaks again).
///
/// Bounded: past `capacity` remembered leaks, those not seen leaked for the longest time are
/// forgotten (a quarter at once, so the cost is amortized); one of them that is seen leaked
/// again is counted again.
#[derive(Debug)]
pub struct LeakCounter {
    counted: HashMap<LeakId, Sighting>,
    capacity: usize,
    generation: u64,
}

impl Default for LeakCounter {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl LeakCounter {
    /// About 10 MB at most, far more than one relay's open connections.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    pub fn new(capacity: usize) -> Self {
        LeakCounter {
            counted: HashMap::new(),
            capacity: capacity.max(1),
            generation: 0,
        }
    }

    /// The leaks in `leaks` that were not counted before.
    pub fn observe<'a>(&mut self, leaks: &'a [Leak]) -> Vec<&'a Leak> {
        self.generation += 1;
        let mut new = Vec::new();
        for leak in leaks {
            let seen = Sighting {
                age_s: leak.age_s,
                generation: self.generation,
            };
            match self.counted.insert(LeakId::of(leak), seen) {
                // Ages are rounded to the millisecond. A younger connection with the same
                // addresses is a new one that reuses the ephemeral port.
                Some(before) if leak.age_s + 0.001 >= before.age_s => {}
                _ => new.push(leak),
            }
        }
        if self.counted.len() > self.capacity {
            self.forget_oldest();
        }
        new
    }

    #[cfg(test)]
    /// How many connections are remembered.
    pub fn remembered(&self) -> usize {
        self.counted.len()
    }

    fn forget_oldest(&mut self) {
        let target = self.capacity - self.capacity / 4;
        let excess = self.counted.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        let mut generations: Vec<u64> = self.counted.values().map(|s| s.generation).collect();
        let (_, cutoff, _) = generations.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let current = self.generation;
        // Connections leaked right now are never forgotten: they would count again next time.
        self.counted
            .retain(|_, s| s.generation > cutoff || s.generation == current);
    }
}

/// The `host` and `provider` labels of one series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct HostLabels {
    host: String,
    provider: String,
}

impl HostLabels {
    fn other(provider: &str) -> Self {
        HostLabels {
            host: OTHER.into(),
            provider: provider.into(),
        }
    }
}

/// Session totals of one host when last rendered.
#[derive(Clone, Copy, Debug, Default)]
struct SeenTotals {
    connections: u64,
    closed_unread: u64,
}

/// Renders snapshots as Prometheus text, keeping the counters of the session between renders.
#[derive(Debug)]
pub struct PrometheusExporter {
    top_hosts: usize,
    leaks: LeakCounter,
    /// Hosts that have their own counter series: at most `top_hosts`, never fewer (a counter
    /// series must not vanish). The others count under "other" of their provider.
    counted_hosts: HashSet<String>,
    seen: HashMap<String, SeenTotals>,
    opened: BTreeMap<HostLabels, u64>,
    closed_unread: BTreeMap<HostLabels, u64>,
    leaks_detected: BTreeMap<(HostLabels, LeakKind, LeakReason), u64>,
    /// events_sent and the time of the previous render, for events per second.
    last_events: Option<(u64, u64)>,
}

impl Default for PrometheusExporter {
    fn default() -> Self {
        Self::new(DEFAULT_TOP_HOSTS)
    }
}

impl PrometheusExporter {
    /// `top_hosts` hosts get their own series (at least 1); the rest are summed as "other",
    /// per provider.
    pub fn new(top_hosts: usize) -> Self {
        PrometheusExporter {
            top_hosts: top_hosts.max(1),
            leaks: LeakCounter::default(),
            counted_hosts: HashSet::new(),
            seen: HashMap::new(),
            opened: BTreeMap::new(),
            closed_unread: BTreeMap::new(),
            leaks_detected: BTreeMap::new(),
            last_events: None,
        }
    }

    /// The exposition of `snapshot`, counting what is new since the previous call.
    pub fn render(&mut self, snapshot: &Snapshot, health: &Health) -> Result<String> {
        let ranked = rank(&snapshot.hosts);
        let (top, rest) = ranked.split_at(ranked.len().min(self.top_hosts));
        self.count(snapshot, top);
        let events_per_second = self.events_per_second(snapshot.kernel.events_sent, health.now_ns);

        let out = Exposition::new()?;
        let stream_leaks = stream_leaks_by_host(&snapshot.leaks);
        let mut open = Vec::new();
        let mut open_streams = Vec::new();
        let mut leaked = Vec::new();
        let mut add_gauges = |labels: &HostLabels, hosts: &[&HostSummary]| {
            let host_labels = vec![labels.host.clone(), labels.provider.clone()];
            open.push((host_labels.clone(), sum(hosts, |h| h.open)));
            open_streams.push((host_labels, sum(hosts, |h| h.open_streams)));
            let mut by_kind: BTreeMap<(LeakKind, LeakReason), u64> = BTreeMap::new();
            for host in hosts {
                for (pair, n) in leaked_by_kind_and_reason(host, &stream_leaks) {
                    *by_kind.entry(pair).or_default() += n;
                }
            }
            for ((kind, reason), n) in by_kind {
                leaked.push((leak_labels(labels, kind, reason), n));
            }
        };
        for host in top {
            add_gauges(&labels_of(host), std::slice::from_ref(host));
        }
        let mut rest_by_provider: BTreeMap<&str, Vec<&HostSummary>> = BTreeMap::new();
        for host in rest {
            rest_by_provider
                .entry(provider_of(host))
                .or_default()
                .push(host);
        }
        for (provider, hosts) in rest_by_provider {
            add_gauges(&HostLabels::other(provider), &hosts);
        }
        out.int_gauge(
            "upstream_connections_open",
            "Open upstream connections of the traced processes.",
            &["host", "provider"],
            open,
        )?;
        out.int_gauge(
            "upstream_connections_leaked",
            "Open upstream connections and HTTP/2 streams judged leaked, by kind (connection, h2_stream) and reason (close_wait, unread, abandoned).",
            &["host", "provider", "kind", "reason"],
            leaked,
        )?;
        out.int_gauge(
            "upstream_h2_streams_open",
            "Open HTTP/2 streams on the upstream connections (0 unless the Go-aware probes are on).",
            &["host", "provider"],
            open_streams,
        )?;
        out.counter(
            "upstream_connections_opened_total",
            "Upstream connections seen in the session: opened, or open when tracing started.",
            &["host", "provider"],
            self.opened
                .iter()
                .map(|(l, n)| (vec![l.host.clone(), l.provider.clone()], *n)),
        )?;
        out.counter(
            "upstream_connections_closed_unread_total",
            "Upstream connections the process closed before reading the response to its end.",
            &["host", "provider"],
            self.closed_unread
                .iter()
                .map(|(l, n)| (vec![l.host.clone(), l.provider.clone()], *n)),
        )?;
        out.counter(
            "upstream_leaks_detected_total",
            "Upstream connections and HTTP/2 streams that became leaked, each counted once, by kind and first reason.",
            &["host", "provider", "kind", "reason"],
            self.leaks_detected
                .iter()
                .map(|((l, k, r), n)| (leak_labels(l, *k, *r), *n)),
        )?;

        let by_site = site_series(snapshot, TOP_SITES);
        if !by_site.is_empty() {
            out.int_gauge(
                "upstream_leaked_by_site",
                "Leaked connections and HTTP/2 streams by the relay's line that obtained them (\"function file:line\"), by reason; sites beyond the top 20 sum as site=\"other\".",
                &["site", "reason"],
                by_site,
            )?;
        }

        let kernel = &snapshot.kernel;
        out.counter(
            "events_total",
            "Events the kernel side sent.",
            &[],
            [(vec![], kernel.events_sent)],
        )?;
        out.counter(
            "events_lost_total",
            "Events the kernel side dropped because the ring buffer was full.",
            &[],
            [(vec![], kernel.events_lost)],
        )?;
        out.counter(
            "conn_map_full_total",
            "Connections not tracked because the kernel's connection map was full.",
            &[],
            [(vec![], kernel.conn_map_full)],
        )?;
        out.counter(
            "socket_reads_total",
            "Reads of tracked sockets seen by the kernel side.",
            &[],
            [(vec![], kernel.reads_seen)],
        )?;
        out.gauge(
            "events_per_second",
            "Events the kernel side sent per second, between the last two renders.",
            events_per_second,
        )?;
        out.int_gauge(
            "tracked_sockets",
            "Connections the tracer holds (open or closing).",
            &[],
            [(vec![], health.tracked_sockets)],
        )?;
        out.int_gauge(
            "conn_map_capacity",
            "Entries the kernel's connection map holds at most.",
            &[],
            [(vec![], u64::from(tracer_common::MAX_CONNS))],
        )?;
        out.int_gauge(
            "target_processes",
            "Processes being traced.",
            &[],
            [(vec![], snapshot.targets.len() as u64)],
        )?;
        if let Some(process) = health.process {
            out.float_counter(
                "process_cpu_seconds_total",
                "CPU time (user and system) the tracer has used.",
                process.cpu_seconds,
            )?;
            out.int_gauge(
                "process_resident_memory_bytes",
                "Resident memory of the tracer.",
                &[],
                [(vec![], process.resident_bytes)],
            )?;
        }
        out.int_gauge(
            "build_info",
            "Always 1; the tracer's version as a label.",
            &["version"],
            [(vec![env!("CARGO_PKG_VERSION").to_string()], 1)],
        )?;
        out.finish()
    }

    /// Adds what each host and leak brings since the previous render to the counters.
    fn count(&mut self, snapshot: &Snapshot, top: &[&HostSummary]) {
        for host in top {
            if self.counted_hosts.len() >= self.top_hosts {
                break;
            }
            if self.counted_hosts.insert(host.host.clone()) {
                // The host's series exist from now on, at zero until something counts.
                let labels = labels_of(host);
                self.opened.entry(labels.clone()).or_default();
                self.closed_unread.entry(labels.clone()).or_default();
                for kind in LeakKind::ALL {
                    for &reason in kind.reasons() {
                        self.leaks_detected
                            .entry((labels.clone(), kind, reason))
                            .or_default();
                    }
                }
            }
        }
        let mut label_of_host: HashMap<&str, HostLabels> = HashMap::new();
        for host in &snapshot.hosts {
            let labels = if self.counted_hosts.contains(&host.host) {
                labels_of(host)
            } else {
                HostLabels::other(provider_of(host))
            };
            let seen = self.seen.entry(host.host.clone()).or_default();
            // A total that went down means the model started over: count from there.
            let opened = host.connections_total.saturating_sub(seen.connections);
            let closed_unread = host.closed_unread_total.saturating_sub(seen.closed_unread);
            *seen = SeenTotals {
                connections: host.connections_total,
                closed_unread: host.closed_unread_total,
            };
            if opened > 0 || labels.host != OTHER {
                *self.opened.entry(labels.clone()).or_default() += opened;
            }
            if closed_unread > 0 || labels.host != OTHER {
                *self.closed_unread.entry(labels.clone()).or_default() += closed_unread;
            }
            label_of_host.insert(&host.host, labels);
        }
        for leak in self.leaks.observe(&snapshot.leaks) {
            let labels = match label_of_host.get(leak.host.as_str()) {
                Some(labels) => labels.clone(),
                // Not in the snapshot's hosts: cannot happen with Snapshot::take.
                None => HostLabels::other(leak.provider.as_deref().unwrap_or(UNKNOWN_PROVIDER)),
            };
            *self
                .leaks_detected
                .entry((labels, leak.kind, leak.reason))
                .or_default() += 1;
        }
    }

    fn events_per_second(&mut self, events_sent: u64, now_ns: u64) -> f64 {
        let rate = match self.last_events {
            Some((events, at_ns)) if now_ns > at_ns => {
                events_sent.saturating_sub(events) as f64 / ((now_ns - at_ns) as f64 / 1e9)
            }
            // The first render has nothing to measure against.
            _ => 0.0,
        };
        self.last_events = Some((events_sent, now_ns));
        rate
    }
}

/// Most leaked first, then most open, then by name (stable between renders).
fn rank(hosts: &[HostSummary]) -> Vec<&HostSummary> {
    let mut ranked: Vec<&HostSummary> = hosts.iter().collect();
    ranked.sort_by(|a, b| {
        b.leaked
            .cmp(&a.leaked)
            .then(b.open.cmp(&a.open))
            .then_with(|| a.host.cmp(&b.host))
    });
    ranked
}

fn labels_of(host: &HostSummary) -> HostLabels {
    HostLabels {
        host: host.host.clone(),
        provider: provider_of(host).to_string(),
    }
}

fn leak_labels(labels: &HostLabels, kind: LeakKind, reason: LeakReason) -> Vec<String> {
    vec![
        labels.host.clone(),
        labels.provider.clone(),
        kind.as_str().to_string(),
        reason.as_str().to_string(),
    ]
}

/// Leaked HTTP/2 streams per host and reason, from the snapshot's leak list.
fn stream_leaks_by_host(leaks: &[Leak]) -> HashMap<(&str, LeakReason), u64> {
    let mut counts = HashMap::new();
    for leak in leaks.iter().filter(|l| l.kind == LeakKind::H2Stream) {
        *counts.entry((leak.host.as_str(), leak.reason)).or_default() += 1;
    }
    counts
}

/// A host's leaks split by kind and reason: every pair a leak can have (at zero when none),
/// plus any other pair that has leaks. The host's `by_reason` is the total of each reason (so
/// the series of a host always add up to its `leaked`, as in JSON and CSV); the leak list says
/// how many of them are streams.
fn leaked_by_kind_and_reason(
    host: &HostSummary,
    stream_leaks: &HashMap<(&str, LeakReason), u64>,
) -> BTreeMap<(LeakKind, LeakReason), u64> {
    let mut pairs = BTreeMap::new();
    for kind in LeakKind::ALL {
        for &reason in kind.reasons() {
            pairs.insert((kind, reason), 0);
        }
    }
    for (reason, total) in host.by_reason.iter() {
        let streams = stream_leaks
            .get(&(host.host.as_str(), reason))
            .copied()
            .unwrap_or(0)
            .min(total);
        if streams > 0 {
            pairs.insert((LeakKind::H2Stream, reason), streams);
        }
        if total > streams {
            pairs.insert((LeakKind::Connection, reason), total - streams);
        }
    }
    pairs
}

fn sum(hosts: &[&HostSummary], figure: impl Fn(&HostSummary) -> u64) -> u64 {
    hosts.iter().map(|h| figure(h)).sum()
}

/// Leaks per call site and reason: the `top` sites with the most leaks by name, the rest
/// summed as "other" (none without leaks).
fn site_series(snapshot: &Snapshot, top: usize) -> Vec<(Vec<String>, u64)> {
    let leaking: Vec<_> = snapshot.sites.iter().filter(|s| s.leaked > 0).collect();
    let (named, rest) = leaking.split_at(leaking.len().min(top));
    let mut series = Vec::new();
    for site in named {
        let label = format!("{} {}", site.call_site.function, site.call_site.short());
        for reason in LeakReason::ALL {
            series.push((
                vec![label.clone(), reason.as_str().to_owned()],
                site.by_reason.get(reason),
            ));
        }
    }
    if !rest.is_empty() {
        for reason in LeakReason::ALL {
            let n = rest.iter().map(|s| s.by_reason.get(reason)).sum();
            series.push((vec![OTHER.to_owned(), reason.as_str().to_owned()], n));
        }
    }
    series
}

/// One render's metric families. A fresh registry each time: the series are exactly this
/// snapshot's (a host that left the top N leaves no stale gauge behind), and the registry
/// sorts families by name and series by label values, so the text is deterministic.
struct Exposition {
    registry: Registry,
}

impl Exposition {
    fn new() -> Result<Self> {
        let registry = Registry::new_custom(Some(PREFIX.into()), None)
            .context("creating the metrics registry")?;
        Ok(Exposition { registry })
    }

    fn register(&self, collector: impl Collector + 'static, name: &str) -> Result<()> {
        self.registry
            .register(Box::new(collector))
            .with_context(|| format!("registering metric {PREFIX}_{name}"))
    }

    fn int_gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<String>, u64)>,
    ) -> Result<()> {
        let vec: GenericGaugeVec<::prometheus::core::AtomicI64> =
            GenericGaugeVec::new(Opts::new(name, help), labels)
                .with_context(|| format!("defining metric {PREFIX}_{name}"))?;
        for (values, n) in series {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            vec.get_metric_with_label_values(&values)
                .with_context(|| format!("labelling metric {PREFIX}_{name}"))?
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.register(vec, name)
    }

    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<String>, u64)>,
    ) -> Result<()> {
        let vec: GenericCounterVec<::prometheus::core::AtomicU64> =
            GenericCounterVec::new(Opts::new(name, help), labels)
                .with_context(|| format!("defining metric {PREFIX}_{name}"))?;
        for (values, n) in series {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            vec.get_metric_with_label_values(&values)
                .with_context(|| format!("labelling metric {PREFIX}_{name}"))?
                .inc_by(n);
        }
        self.register(vec, name)
    }

    fn gauge(&self, name: &str, help: &str, value: f64) -> Result<()> {
        let gauge = ::prometheus::Gauge::new(name, help)
            .with_context(|| format!("defining metric {PREFIX}_{name}"))?;
        gauge.set(value);
        self.register(gauge, name)
    }

    fn float_counter(&self, name: &str, help: &str, value: f64) -> Result<()> {
        let counter = ::prometheus::Counter::new(name, help)
            .with_context(|| format!("defining metric {PREFIX}_{name}"))?;
        // A counter refuses negative increments; /proc never gives one.
        counter.inc_by(value.max(0.0));
        self.register(counter, name)
    }

    fn finish(self) -> Result<String> {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .context("encoding the metrics")?;
        String::from_utf8(text).context("the metrics text is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        path::{Path, PathBuf},
        process::{Command, Stdio},
    };

    use super::*;
    use crate::export::testdata::*;

    const HEALTH: Health = Health {
        now_ns: 5_000_000_000,
        tracked_sockets: 8,
        process: None,
    };

    /// The sample lines (no comments) of `text` whose metric name is `name` exactly.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .collect()
    }

    /// The value of the one sample `series` (name and labels, as written).
    fn value(text: &str, series: &str) -> f64 {
        let found: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .collect();
        match found.as_slice() {
            [v] => v
                .parse()
                .unwrap_or_else(|e| panic!("{series}: {v:?} is not a number: {e}")),
            _ => panic!("{series}: expected one sample, found {found:?} in\n{text}"),
        }
    }

    #[test]
    fn a_small_snapshot_renders_exactly() {
        // A leaked connection and, on another (healthy) connection of the same host, a leaked
        // HTTP/2 stream among its 4 open ones.
        let snapshot = snapshot(
            vec![with_streams(host("10.0.0.12", 3, (1, 1, 0), 2, 5), 4, 1)],
            vec![
                leak("10.0.0.12", 40001, LeakReason::CloseWait, 15.9),
                stream_leak("10.0.0.12", 40002, 7, LeakReason::Unread, 95.0),
            ],
        );
        let text = PrometheusExporter::default()
            .render(&snapshot, &HEALTH)
            .expect("renders");
        let expected = r#"# HELP tracer_build_info Always 1; the tracer's version as a label.
# TYPE tracer_build_info gauge
tracer_build_info{version="0.1.0"} 1
# HELP tracer_conn_map_capacity Entries the kernel's connection map holds at most.
# TYPE tracer_conn_map_capacity gauge
tracer_conn_map_capacity 262144
# HELP tracer_conn_map_full_total Connections not tracked because the kernel's connection map was full.
# TYPE tracer_conn_map_full_total counter
tracer_conn_map_full_total 0
# HELP tracer_events_lost_total Events the kernel side dropped because the ring buffer was full.
# TYPE tracer_events_lost_total counter
tracer_events_lost_total 2
# HELP tracer_events_per_second Events the kernel side sent per second, between the last two renders.
# TYPE tracer_events_per_second gauge
tracer_events_per_second 0
# HELP tracer_events_total Events the kernel side sent.
# TYPE tracer_events_total counter
tracer_events_total 120
# HELP tracer_socket_reads_total Reads of tracked sockets seen by the kernel side.
# TYPE tracer_socket_reads_total counter
tracer_socket_reads_total 80
# HELP tracer_target_processes Processes being traced.
# TYPE tracer_target_processes gauge
tracer_target_processes 1
# HELP tracer_tracked_sockets Connections the tracer holds (open or closing).
# TYPE tracer_tracked_sockets gauge
tracer_tracked_sockets 8
# HELP tracer_upstream_connections_closed_unread_total Upstream connections the process closed before reading the response to its end.
# TYPE tracer_upstream_connections_closed_unread_total counter
tracer_upstream_connections_closed_unread_total{host="10.0.0.12",provider="unknown"} 2
# HELP tracer_upstream_connections_leaked Open upstream connections and HTTP/2 streams judged leaked, by kind (connection, h2_stream) and reason (close_wait, unread, abandoned).
# TYPE tracer_upstream_connections_leaked gauge
tracer_upstream_connections_leaked{host="10.0.0.12",kind="connection",provider="unknown",reason="abandoned"} 0
tracer_upstream_connections_leaked{host="10.0.0.12",kind="connection",provider="unknown",reason="close_wait"} 1
tracer_upstream_connections_leaked{host="10.0.0.12",kind="connection",provider="unknown",reason="unread"} 0
tracer_upstream_connections_leaked{host="10.0.0.12",kind="h2_stream",provider="unknown",reason="abandoned"} 0
tracer_upstream_connections_leaked{host="10.0.0.12",kind="h2_stream",provider="unknown",reason="unread"} 1
# HELP tracer_upstream_connections_open Open upstream connections of the traced processes.
# TYPE tracer_upstream_connections_open gauge
tracer_upstream_connections_open{host="10.0.0.12",provider="unknown"} 3
# HELP tracer_upstream_connections_opened_total Upstream connections seen in the session: opened, or open when tracing started.
# TYPE tracer_upstream_connections_opened_total counter
tracer_upstream_connections_opened_total{host="10.0.0.12",provider="unknown"} 5
# HELP tracer_upstream_h2_streams_open Open HTTP/2 streams on the upstream connections (0 unless the Go-aware probes are on).
# TYPE tracer_upstream_h2_streams_open gauge
tracer_upstream_h2_streams_open{host="10.0.0.12",provider="unknown"} 4
# HELP tracer_upstream_leaks_detected_total Upstream connections and HTTP/2 streams that became leaked, each counted once, by kind and first reason.
# TYPE tracer_upstream_leaks_detected_total counter
tracer_upstream_leaks_detected_total{host="10.0.0.12",kind="connection",provider="unknown",reason="abandoned"} 0
tracer_upstream_leaks_detected_total{host="10.0.0.12",kind="connection",provider="unknown",reason="close_wait"} 1
tracer_upstream_leaks_detected_total{host="10.0.0.12",kind="connection",provider="unknown",reason="unread"} 0
tracer_upstream_leaks_detected_total{host="10.0.0.12",kind="h2_stream",provider="unknown",reason="abandoned"} 0
tracer_upstream_leaks_detected_total{host="10.0.0.12",kind="h2_stream",provider="unknown",reason="unread"} 1
"#;
        assert_eq!(text, expected.replace("0.1.0", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn call_sites_beyond_the_top_n_are_summed_as_other() {
        use crate::model::{
            leak::{ByKind, ByReason},
            site::CallSite,
            snapshot::SiteSummary,
        };
        let site = |line: u32, leaked: u64| SiteSummary {
            call_site: CallSite {
                function: "main.relay".into(),
                file: "/src/relay/image.go".into(),
                line,
            },
            requests_total: 10,
            leaked,
            by_reason: ByReason::of([leaked, 0, 0]),
            by_kind: ByKind::connections(leaked),
            hosts: vec![],
            providers: vec![],
            frames: vec![],
            stack: vec![],
        };
        let mut snapshot = two_hosts();
        snapshot.sites = vec![site(829, 3), site(12, 2), site(40, 1), site(7, 0)];
        let series = site_series(&snapshot, 2);
        let close_wait: Vec<(String, u64)> = series
            .iter()
            .filter(|(l, _)| l[1] == "close_wait")
            .map(|(l, n)| (l[0].clone(), *n))
            .collect();
        assert_eq!(
            close_wait,
            [
                ("main.relay image.go:829".to_owned(), 3),
                ("main.relay image.go:12".to_owned(), 2),
                ("other".to_owned(), 1)
            ]
        );
        let text = PrometheusExporter::default()
            .render(&snapshot, &HEALTH)
            .expect("renders");
        assert!(
            text.contains(
                r#"tracer_upstream_leaked_by_site{reason="close_wait",site="main.relay image.go:829"} 3"#
            ),
            "{text}"
        );
        // A site without leaks has no series; without sites, no family.
        assert!(!text.contains("image.go:7"), "{text}");
        assert!(!PrometheusExporter::default()
            .render(&two_hosts(), &HEALTH)
            .expect("renders")
            .contains("by_site"));
    }

    #[test]
    fn process_figures_appear_when_read() {
        let health = Health {
            process: Some(ProcessStats {
                cpu_seconds: 1.25,
                resident_bytes: 12_582_912,
            }),
            ..HEALTH
        };
        let text = PrometheusExporter::default()
            .render(&two_hosts(), &health)
            .expect("renders");
        assert_eq!(value(&text, "tracer_process_cpu_seconds_total"), 1.25);
        assert_eq!(
            value(&text, "tracer_process_resident_memory_bytes"),
            12_582_912.0
        );
        let text = PrometheusExporter::default()
            .render(&two_hosts(), &HEALTH)
            .expect("renders");
        assert!(
            !text.contains("tracer_process_"),
            "no /proc figures, no series:\n{text}"
        );
    }

    #[test]
    fn hosts_beyond_the_top_n_are_summed_as_other() {
        let snapshot = snapshot(
            vec![
                host("10.0.0.1", 9, (0, 0, 0), 0, 9),
                host("10.0.0.2", 1, (1, 0, 0), 0, 2),
                host("10.0.0.3", 4, (0, 0, 0), 1, 6),
                host("10.0.0.4", 2, (0, 2, 1), 0, 3),
                host("10.0.0.5", 0, (0, 0, 0), 5, 7),
            ],
            vec![],
        );
        // Most leaked first (.4 with 3, .2 with 1), then most open: .1 is third, so "other"
        // sums .3 and .5.
        let text = PrometheusExporter::new(3)
            .render(&snapshot, &HEALTH)
            .expect("renders");
        assert_eq!(
            samples(&text, "tracer_upstream_connections_open"),
            vec![
                r#"tracer_upstream_connections_open{host="10.0.0.1",provider="unknown"} 9"#,
                r#"tracer_upstream_connections_open{host="10.0.0.2",provider="unknown"} 1"#,
                r#"tracer_upstream_connections_open{host="10.0.0.4",provider="unknown"} 2"#,
                r#"tracer_upstream_connections_open{host="other",provider="unknown"} 4"#,
            ]
        );
        let leaked = samples(&text, "tracer_upstream_connections_leaked");
        assert_eq!(
            leaked.len(),
            4 * 5,
            "three reasons of connections and two of streams, for each of three hosts and other"
        );
        let series = |host: &str, reason: &str| {
            value(
                &text,
                &format!(
                    r#"tracer_upstream_connections_leaked{{host="{host}",kind="connection",provider="unknown",reason="{reason}"}}"#
                ),
            )
        };
        assert_eq!(series("10.0.0.4", "unread"), 2.0);
        assert_eq!(series("10.0.0.4", "abandoned"), 1.0);
        assert_eq!(series("10.0.0.2", "close_wait"), 1.0);
        assert_eq!(series("other", "close_wait"), 0.0);
        assert_eq!(
            samples(&text, "tracer_upstream_connections_closed_unread_total"),
            vec![
                r#"tracer_upstream_connections_closed_unread_total{host="10.0.0.1",provider="unknown"} 0"#,
                r#"tracer_upstream_connections_closed_unread_total{host="10.0.0.2",provider="unknown"} 0"#,
                r#"tracer_upstream_connections_closed_unread_total{host="10.0.0.4",provider="unknown"} 0"#,
                r#"tracer_upstream_connections_closed_unread_total{host="other",provider="unknown"} 6"#,
            ]
        );
        assert_eq!(
            value(
                &text,
                r#"tracer_upstream_connections_opened_total{host="other",provider="unknown"}"#
            ),
            13.0
        );
    }

    #[test]
    fn hosts_beyond_the_top_n_are_summed_per_provider() {
        let snapshot = snapshot(
            vec![
                of_provider(host("api.openai.com", 4, (3, 0, 0), 0, 4), "openai"),
                of_provider(host("eu.api.openai.com", 2, (1, 0, 0), 0, 2), "openai"),
                of_provider(host("api.anthropic.com", 1, (0, 1, 0), 0, 1), "anthropic"),
                host("10.0.0.9", 5, (0, 0, 0), 0, 5),
                of_provider(host("us.api.openai.com", 1, (0, 0, 1), 0, 1), "openai"),
            ],
            vec![],
        );
        let text = PrometheusExporter::new(1)
            .render(&snapshot, &HEALTH)
            .expect("renders");
        assert_eq!(
            samples(&text, "tracer_upstream_connections_open"),
            vec![
                r#"tracer_upstream_connections_open{host="api.openai.com",provider="openai"} 4"#,
                r#"tracer_upstream_connections_open{host="other",provider="anthropic"} 1"#,
                r#"tracer_upstream_connections_open{host="other",provider="openai"} 3"#,
                r#"tracer_upstream_connections_open{host="other",provider="unknown"} 5"#,
            ]
        );
        // Per provider, the sums are exact whatever the top N.
        let leaked_of = |provider: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with("tracer_upstream_connections_leaked{"))
                .filter(|l| l.contains(&format!(r#"provider="{provider}""#)))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert_eq!(
            (
                leaked_of("openai"),
                leaked_of("anthropic"),
                leaked_of("unknown")
            ),
            (5.0, 1.0, 0.0)
        );
        assert_eq!(
            value(
                &text,
                r#"tracer_upstream_connections_opened_total{host="other",provider="openai"}"#
            ),
            3.0
        );
    }

    #[test]
    fn with_few_hosts_there_is_no_other() {
        let text = PrometheusExporter::new(2)
            .render(&two_hosts(), &HEALTH)
            .expect("renders");
        assert!(!text.contains(r#"host="other""#), "{text}");
    }

    #[test]
    fn each_leaked_connection_is_counted_once_across_snapshots() {
        let detected = |text: &str, reason: &str| {
            value(
                text,
                &format!(
                    r#"tracer_upstream_leaks_detected_total{{host="10.0.0.12",kind="connection",provider="unknown",reason="{reason}"}}"#
                ),
            )
        };
        let a = |age| leak("10.0.0.12", 40001, LeakReason::CloseWait, age);
        let b = |age| leak("10.0.0.12", 40002, LeakReason::Unread, age);
        let at = |leaks: Vec<Leak>| {
            let (cw, un) = (
                leaks
                    .iter()
                    .filter(|l| l.reason == LeakReason::CloseWait)
                    .count() as u64,
                leaks
                    .iter()
                    .filter(|l| l.reason == LeakReason::Unread)
                    .count() as u64,
            );
            snapshot(vec![host("10.0.0.12", 2, (cw, un, 0), 0, 2)], leaks)
        };
        let mut exporter = PrometheusExporter::default();
        let mut render = |s: Snapshot| exporter.render(&s, &HEALTH).expect("renders");

        let text = render(at(vec![a(10.0)]));
        assert_eq!(
            (detected(&text, "close_wait"), detected(&text, "unread")),
            (1.0, 0.0)
        );
        let text = render(at(vec![a(12.0), b(11.0)]));
        assert_eq!(
            (detected(&text, "close_wait"), detected(&text, "unread")),
            (1.0, 1.0)
        );
        // a stops being leaked (read again), then leaks again: still the same connection.
        let text = render(at(vec![b(13.0)]));
        assert_eq!(
            (detected(&text, "close_wait"), detected(&text, "unread")),
            (1.0, 1.0)
        );
        let text = render(at(vec![a(16.0), b(15.0)]));
        assert_eq!(
            (detected(&text, "close_wait"), detected(&text, "unread")),
            (1.0, 1.0)
        );
        // Younger than when last seen: a new connection that reuses the local port.
        let text = render(at(vec![a(6.0), b(17.0)]));
        assert_eq!(
            (detected(&text, "close_wait"), detected(&text, "unread")),
            (2.0, 1.0)
        );
        // The gauge follows the snapshot, the counter does not go down when leaks close.
        let text = render(at(vec![]));
        assert_eq!(
            (detected(&text, "close_wait"), detected(&text, "unread")),
            (2.0, 1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"tracer_upstream_connections_leaked{host="10.0.0.12",kind="connection",provider="unknown",reason="close_wait"}"#
            ),
            0.0
        );
    }

    #[test]
    fn leaks_are_split_by_kind_and_add_up_to_each_hosts_leaked() {
        // .12: one close_wait connection, one abandoned connection and two unread streams;
        // .13 and .14 fall outside the top 1 and add up under "other".
        let snapshot = snapshot(
            vec![
                with_streams(host("10.0.0.12", 3, (1, 2, 1), 0, 3), 9, 2),
                with_streams(host("10.0.0.13", 1, (0, 0, 1), 0, 1), 2, 1),
                with_streams(host("10.0.0.14", 1, (0, 1, 0), 0, 1), 1, 0),
            ],
            vec![
                leak("10.0.0.12", 40001, LeakReason::CloseWait, 20.0),
                leak("10.0.0.12", 40002, LeakReason::Abandoned, 20.0),
                stream_leak("10.0.0.12", 40003, 3, LeakReason::Unread, 20.0),
                stream_leak("10.0.0.12", 40003, 5, LeakReason::Unread, 20.0),
                stream_leak("10.0.0.13", 40004, 1, LeakReason::Abandoned, 20.0),
                leak("10.0.0.14", 40005, LeakReason::Unread, 20.0),
            ],
        );
        let text = PrometheusExporter::new(1)
            .render(&snapshot, &HEALTH)
            .expect("renders");
        let leaked = |host: &str, kind: &str, reason: &str| {
            value(
                &text,
                &format!(
                    r#"tracer_upstream_connections_leaked{{host="{host}",kind="{kind}",provider="unknown",reason="{reason}"}}"#
                ),
            )
        };
        assert_eq!(
            [
                leaked("10.0.0.12", "connection", "close_wait"),
                leaked("10.0.0.12", "connection", "unread"),
                leaked("10.0.0.12", "connection", "abandoned"),
                leaked("10.0.0.12", "h2_stream", "unread"),
                leaked("10.0.0.12", "h2_stream", "abandoned"),
            ],
            [1.0, 0.0, 1.0, 2.0, 0.0]
        );
        assert_eq!(
            [
                leaked("other", "connection", "unread"),
                leaked("other", "connection", "abandoned"),
                leaked("other", "h2_stream", "abandoned"),
            ],
            [1.0, 0.0, 1.0]
        );
        // A stream never leaks by close_wait: no series that is always zero.
        assert!(
            !text.contains(r#"kind="h2_stream",provider="unknown",reason="close_wait""#),
            "{text}"
        );
        assert_eq!(
            samples(&text, "tracer_upstream_connections_leaked").len(),
            2 * 5
        );
        // Without kind, the series add up to each host's leaked, as in JSON and CSV.
        let sum_of = |host: &str| -> f64 {
            text.lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        r#"tracer_upstream_connections_leaked{{host="{host}","#
                    ))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert_eq!((sum_of("10.0.0.12"), sum_of("other")), (4.0, 2.0));
        assert_eq!(
            samples(&text, "tracer_upstream_h2_streams_open"),
            vec![
                r#"tracer_upstream_h2_streams_open{host="10.0.0.12",provider="unknown"} 9"#,
                r#"tracer_upstream_h2_streams_open{host="other",provider="unknown"} 3"#,
            ]
        );
        let detected = |host: &str, kind: &str, reason: &str| {
            value(
                &text,
                &format!(
                    r#"tracer_upstream_leaks_detected_total{{host="{host}",kind="{kind}",provider="unknown",reason="{reason}"}}"#
                ),
            )
        };
        assert_eq!(
            [
                detected("10.0.0.12", "connection", "close_wait"),
                detected("10.0.0.12", "connection", "abandoned"),
                detected("10.0.0.12", "h2_stream", "unread"),
                detected("other", "h2_stream", "abandoned"),
                detected("other", "connection", "unread"),
            ],
            [1.0, 1.0, 2.0, 1.0, 1.0]
        );
    }

    #[test]
    fn each_leaked_stream_is_counted_once_and_apart_from_its_connection() {
        let detected = |text: &str, kind: &str, reason: &str| {
            value(
                text,
                &format!(
                    r#"tracer_upstream_leaks_detected_total{{host="10.0.0.12",kind="{kind}",provider="unknown",reason="{reason}"}}"#
                ),
            )
        };
        let at = |leaks: Vec<Leak>| {
            let streams = leaks
                .iter()
                .filter(|l| l.kind == LeakKind::H2Stream)
                .count() as u64;
            let total = leaks.len() as u64;
            let unread = leaks
                .iter()
                .filter(|l| l.reason == LeakReason::Unread)
                .count() as u64;
            let host = with_streams(
                host("10.0.0.12", 1, (0, unread, total - unread), 0, 1),
                4,
                streams,
            );
            snapshot(vec![host], leaks)
        };
        // Streams 3 and 5 of one connection are two leaks; the same stream seen again is not
        // a new one.
        let s3 = |age| stream_leak("10.0.0.12", 40001, 3, LeakReason::Unread, age);
        let s5 = |age| stream_leak("10.0.0.12", 40001, 5, LeakReason::Unread, age);
        let mut exporter = PrometheusExporter::default();
        let mut render = |s: Snapshot| exporter.render(&s, &HEALTH).expect("renders");
        let text = render(at(vec![s3(10.0), s5(10.0)]));
        assert_eq!(detected(&text, "h2_stream", "unread"), 2.0);
        let text = render(at(vec![s3(12.0), s5(12.0)]));
        assert_eq!(detected(&text, "h2_stream", "unread"), 2.0);
        // The connection that carries them leaks too (it stopped being read): a leak of its
        // own kind, counted apart.
        let conn = leak("10.0.0.12", 40001, LeakReason::Abandoned, 30.0);
        let text = render(at(vec![s3(14.0), s5(14.0), conn]));
        assert_eq!(
            (
                detected(&text, "h2_stream", "unread"),
                detected(&text, "connection", "abandoned")
            ),
            (2.0, 1.0)
        );
    }

    #[test]
    fn the_leak_counter_is_bounded_and_keeps_current_leaks() {
        let mut counter = LeakCounter::new(8);
        for round in 0..10u16 {
            let leaks: Vec<Leak> = (0..4)
                .map(|i| {
                    leak(
                        "10.0.0.12",
                        40000 + round * 4 + i,
                        LeakReason::CloseWait,
                        20.0,
                    )
                })
                .collect();
            assert_eq!(counter.observe(&leaks).len(), 4, "round {round}: all new");
            assert!(
                counter.remembered() <= 8,
                "round {round}: {}",
                counter.remembered()
            );
            assert_eq!(
                counter.observe(&leaks).len(),
                0,
                "round {round}: seen just now"
            );
        }
        // More leaks at once than the capacity: none is forgotten while it is leaked.
        let many: Vec<Leak> = (0..20)
            .map(|i| leak("10.0.0.13", 50000 + i, LeakReason::Unread, 20.0))
            .collect();
        assert_eq!(counter.observe(&many).len(), 20);
        assert_eq!(counter.observe(&many).len(), 0);
    }

    #[test]
    fn counters_never_go_down_when_hosts_change_rank() {
        // One host gets its own series: first .1 (the only leaking one), then .2 leaks more.
        let mut exporter = PrometheusExporter::new(1);
        let first = snapshot(
            vec![
                host("10.0.0.1", 1, (1, 0, 0), 1, 3),
                host("10.0.0.2", 0, (0, 0, 0), 2, 4),
            ],
            vec![leak("10.0.0.1", 40001, LeakReason::CloseWait, 10.0)],
        );
        let text = exporter.render(&first, &HEALTH).expect("renders");
        let opened = |text: &str, host: &str, provider: &str| {
            value(
                text,
                &format!(
                    r#"tracer_upstream_connections_opened_total{{host="{host}",provider="{provider}"}}"#
                ),
            )
        };
        assert_eq!(
            (
                opened(&text, "10.0.0.1", "unknown"),
                opened(&text, "other", "unknown")
            ),
            (3.0, 4.0)
        );

        let second = snapshot(
            vec![
                host("10.0.0.2", 3, (0, 3, 0), 2, 7),
                host("10.0.0.1", 0, (0, 0, 0), 1, 3),
            ],
            vec![
                leak("10.0.0.2", 40002, LeakReason::Unread, 10.0),
                leak("10.0.0.2", 40003, LeakReason::Unread, 10.0),
                leak("10.0.0.2", 40004, LeakReason::Unread, 10.0),
            ],
        );
        let text = exporter.render(&second, &HEALTH).expect("renders");
        // The gauges follow the new ranking ...
        assert_eq!(
            samples(&text, "tracer_upstream_connections_open"),
            vec![
                r#"tracer_upstream_connections_open{host="10.0.0.2",provider="unknown"} 3"#,
                r#"tracer_upstream_connections_open{host="other",provider="unknown"} 0"#,
            ]
        );
        // ... the counters keep their series, and .2's increase goes on under "other".
        assert_eq!(
            (
                opened(&text, "10.0.0.1", "unknown"),
                opened(&text, "other", "unknown")
            ),
            (3.0, 7.0)
        );
        assert_eq!(
            value(
                &text,
                r#"tracer_upstream_leaks_detected_total{host="other",kind="connection",provider="unknown",reason="unread"}"#
            ),
            3.0
        );
        assert!(!text.contains(r#"tracer_upstream_connections_opened_total{host="10.0.0.2""#));
    }

    #[test]
    fn events_per_second_are_measured_between_renders() {
        let mut exporter = PrometheusExporter::default();
        let mut snapshot = two_hosts();
        let text = exporter.render(&snapshot, &HEALTH).expect("renders");
        assert_eq!(
            value(&text, "tracer_events_per_second"),
            0.0,
            "nothing to compare with"
        );
        snapshot.kernel.events_sent += 500;
        let later = Health {
            now_ns: HEALTH.now_ns + 2_000_000_000,
            ..HEALTH
        };
        let text = exporter.render(&snapshot, &later).expect("renders");
        assert_eq!(value(&text, "tracer_events_per_second"), 250.0);
        assert_eq!(value(&text, "tracer_events_total"), 620.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let snapshot = snapshot(
            vec![host("we\"ird\\host\nname", 1, (0, 0, 0), 0, 1)],
            vec![],
        );
        let text = PrometheusExporter::default()
            .render(&snapshot, &HEALTH)
            .expect("renders");
        assert!(
            text.contains(r#"tracer_upstream_connections_open{host="we\"ird\\host\nname",provider="unknown"} 1"#),
            "{text}"
        );
    }

    fn repo_file(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    /// A rendering with every family and label shape: top N, other, process figures.
    fn full_rendering() -> String {
        let mut exporter = PrometheusExporter::new(2);
        let mut snapshot = two_hosts();
        snapshot.hosts.push(host("2001:db8::7", 1, (0, 0, 1), 1, 2));
        snapshot
            .leaks
            .push(leak("2001:db8::7", 40009, LeakReason::Abandoned, 31.0));
        snapshot
            .hosts
            .push(with_streams(host("10.0.0.23", 1, (0, 1, 0), 0, 1), 3, 1));
        snapshot
            .leaks
            .push(stream_leak("10.0.0.23", 40010, 9, LeakReason::Unread, 40.0));
        let health = Health {
            process: Some(ProcessStats {
                cpu_seconds: 0.75,
                resident_bytes: 9 << 20,
            }),
            ..HEALTH
        };
        exporter.render(&snapshot, &health).expect("renders")
    }

    fn promtool(args: &[&str], stdin: Option<&str>) -> Option<(bool, String)> {
        let promtool = required_tool("promtool", "prometheus")?;
        let mut child = Command::new(&promtool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
        let mut input = child.stdin.take().expect("stdin is piped");
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .expect("writes to promtool");
        drop(input);
        let output = child.wait_with_output().expect("promtool finishes");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Some((output.status.success(), said))
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        let text = full_rendering();
        let Some((ok, said)) = promtool(&["check", "metrics"], Some(&text)) else {
            return;
        };
        assert!(
            ok && said.trim().is_empty(),
            "promtool check metrics: {said}\n{text}"
        );
    }

    #[test]
    fn promtool_rejects_a_broken_exposition() {
        // The check above can fail: a counter without _total and without HELP is reported.
        let broken = "# TYPE tracer_things counter\ntracer_things 1\n";
        let Some((ok, said)) = promtool(&["check", "metrics"], Some(broken)) else {
            return;
        };
        assert!(!ok, "promtool accepted {broken:?}: {said}");
    }

    #[test]
    fn promtool_accepts_the_alert_rules_and_their_tests() {
        let rules = repo_file("monitoring/alerts.yml");
        let rules = rules.to_str().expect("UTF-8 path");
        let Some((ok, said)) = promtool(&["check", "rules", rules], None) else {
            return;
        };
        assert!(ok, "promtool check rules {rules}: {said}");
        let tests = repo_file("monitoring/alerts.test.yml");
        let tests = tests.to_str().expect("UTF-8 path");
        let Some((ok, said)) = promtool(&["test", "rules", tests], None) else {
            return;
        };
        assert!(ok, "promtool test rules {tests}: {said}");
    }

    fn dashboard() -> serde_json::Value {
        let path = repo_file("monitoring/grafana-dashboard.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
    }

    #[test]
    fn promtool_parses_every_dashboard_query() {
        let panels = dashboard()["panels"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let queries: Vec<String> = panels
            .iter()
            .filter_map(|p| p["targets"].as_array())
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            // Grafana's variables, as Grafana would fill them in.
            .map(|e| {
                e.replace("$__rate_interval", "1m")
                    .replace("$instance", ".*")
            })
            .collect();
        assert!(
            queries.len() >= 10,
            "the dashboard has {} queries",
            queries.len()
        );
        // Each query as a recording rule: `promtool check rules` parses its PromQL. (JSON is
        // YAML.)
        let rules: Vec<serde_json::Value> = queries
            .iter()
            .enumerate()
            .map(
                |(i, q)| serde_json::json!({ "record": format!("dashboard_query_{i}"), "expr": q }),
            )
            .collect();
        let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dashboard-queries.yml");
        std::fs::write(&path, file.to_string()).expect("writes the rules");
        let path = path.to_str().expect("UTF-8 path");
        let Some((ok, said)) = promtool(&["check", "rules", path], None) else {
            return;
        };
        assert!(ok, "a dashboard query does not parse: {said}\n{queries:#?}");
    }

    /// Every tracer_ metric the rules and the dashboard query, with its suffixes removed the
    /// way PromQL functions never add them.
    fn queried_metrics(text: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("tracer_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    #[test]
    fn the_rules_and_dashboard_query_only_metrics_we_export() {
        let exported: Vec<String> = full_rendering()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect();
        let kinds: Vec<&str> = LeakKind::ALL.iter().map(|k| k.as_str()).collect();
        for file in ["monitoring/alerts.yml", "monitoring/grafana-dashboard.json"] {
            let text = std::fs::read_to_string(repo_file(file))
                .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
            // Every kind they select on is one we label leaks with (JSON escapes the quotes).
            let selected: Vec<String> = text
                .split("kind=")
                .skip(1)
                .map(|rest| {
                    rest.trim_start_matches(['\\', '"'])
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect()
                })
                .collect();
            assert!(
                selected.iter().any(|k| k == "h2_stream"),
                "{file} selects no h2_stream leaks"
            );
            for kind in selected {
                assert!(kinds.contains(&kind.as_str()), "{file} selects kind={kind}");
            }
            let queried = queried_metrics(&text);
            assert!(!queried.is_empty(), "{file} queries no tracer_ metric");
            for name in queried {
                // Alert and recording rule names are not metrics.
                if name.starts_with("tracer_") && !name.starts_with("tracer_rule") {
                    assert!(
                        exported.contains(&name),
                        "{file} queries {name}, which is not exported"
                    );
                }
            }
        }
        assert!(
            dashboard()["panels"]
                .as_array()
                .is_some_and(|p| p.len() >= 4),
            "panels"
        );
    }
}
