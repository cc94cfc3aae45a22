//! The session's history, as the UI keeps it: one point per step of the model's clock with
//! each host's leaked count and connection total, and the kernel counters. It feeds the
//! sparklines, the rates (connections opened and events per second) and the trend chart.
//! Bounded: when full, every other point goes and the step doubles, so the whole session
//! stays visible.

use std::collections::BTreeMap;

use crate::model::{classify::Graces, ConnTable, Snapshot};

/// Points kept before the history is thinned out.
const MAX_POINTS: usize = 1024;
/// Rates are averaged over this much history.
const RATE_WINDOW_NS: u64 = 10_000_000_000;
const SEC: u64 = 1_000_000_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostPoint {
    pub leaked: u64,
    pub connections_total: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Point {
    pub at_ns: u64,
    pub leaked_total: u64,
    pub hosts: BTreeMap<String, HostPoint>,
    pub events_sent: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Trend {
    step_ns: u64,
    started_ns: Option<u64>,
    next_ns: Option<u64>,
    points: Vec<Point>,
}

impl Default for Trend {
    fn default() -> Self {
        Self {
            step_ns: SEC,
            started_ns: None,
            next_ns: None,
            points: Vec::new(),
        }
    }
}

impl Trend {
    /// A history whose clock starts at `started_ns` (first point there).
    pub fn starting_at(started_ns: u64) -> Self {
        Self {
            started_ns: Some(started_ns),
            next_ns: Some(started_ns),
            ..Self::default()
        }
    }

    pub fn started_ns(&self) -> Option<u64> {
        self.started_ns
    }

    #[cfg(test)]
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Adds the points due up to `now_ns`, judging the table as it is now at each point's
    /// time. Call before applying an input received at `now_ns`, and on every tick.
    pub fn catch_up(&mut self, table: &ConnTable, now_ns: u64, graces: &Graces) {
        let next = *self.next_ns.get_or_insert(now_ns);
        self.started_ns.get_or_insert(now_ns);
        if now_ns < next {
            return;
        }
        // After a long gap (a paused replay, a suspended host) the table did not change in
        // between: a few points show it, not thousands.
        let steps = (now_ns - next) / self.step_ns;
        let mut at = if steps > 64 {
            now_ns - (now_ns - next) % self.step_ns
        } else {
            next
        };
        while at <= now_ns {
            self.observe(&Snapshot::take(table, at, graces), at);
            at = self.next_ns.unwrap_or(at + self.step_ns);
        }
    }

    /// Records one point at `at_ns`.
    pub fn observe(&mut self, snapshot: &Snapshot, at_ns: u64) {
        self.started_ns.get_or_insert(at_ns);
        self.points.push(Point {
            at_ns,
            leaked_total: snapshot.leaked_total,
            hosts: snapshot
                .hosts
                .iter()
                .map(|h| {
                    (
                        h.host.clone(),
                        HostPoint {
                            leaked: h.leaked,
                            connections_total: h.connections_total,
                        },
                    )
                })
                .collect(),
            events_sent: snapshot.kernel.events_sent,
        });
        if self.points.len() > MAX_POINTS {
            // Keep the newest point and every other one before it.
            let last = self.points.len() - 1;
            let mut i = 0;
            self.points.retain(|_| {
                let keep = (last - i).is_multiple_of(2);
                i += 1;
                keep
            });
            self.step_ns *= 2;
        }
        self.next_ns = Some(at_ns + self.step_ns);
    }

    /// `value` over the whole session in at most `n` numbers, oldest first: one per point while
    /// they fit, else the largest of each of `n` equal runs of points (a peak never vanishes).
    fn series(&self, n: usize, value: impl Fn(&Point) -> u64) -> Vec<u64> {
        let len = self.points.len();
        if len <= n {
            return self.points.iter().map(value).collect();
        }
        (0..n)
            .map(|i| {
                let run = &self.points[i * len / n..(i + 1) * len / n];
                run.iter().map(&value).max().unwrap_or(0)
            })
            .collect()
    }

    /// The leaked count of `host` over the session, in at most `n` numbers.
    pub fn leaked_series(&self, host: &str, n: usize) -> Vec<u64> {
        self.series(n, |p| p.hosts.get(host).map_or(0, |h| h.leaked))
    }

    /// The leaked count of all hosts together over the session, in at most `n` numbers.
    pub fn leaked_total_series(&self, n: usize) -> Vec<u64> {
        self.series(n, |p| p.leaked_total)
    }

    /// The newest point and one about RATE_WINDOW_NS older (or the oldest), when they differ.
    fn window(&self) -> Option<(&Point, &Point)> {
        let last = self.points.last()?;
        let since = last.at_ns.saturating_sub(RATE_WINDOW_NS);
        let first = self.points.iter().find(|p| p.at_ns >= since)?;
        (last.at_ns > first.at_ns).then_some((first, last))
    }

    /// Whether there is enough history for rates.
    pub fn has_rates(&self) -> bool {
        self.window().is_some()
    }

    /// Connections opened to `host` per second, lately.
    pub fn open_rate(&self, host: &str) -> Option<f64> {
        let (first, last) = self.window()?;
        let total = |p: &Point| p.hosts.get(host).map_or(0, |h| h.connections_total);
        let secs = (last.at_ns - first.at_ns) as f64 / 1e9;
        Some(total(last).saturating_sub(total(first)) as f64 / secs)
    }

    /// Kernel events per second, lately.
    pub fn event_rate(&self) -> Option<f64> {
        let (first, last) = self.window()?;
        let secs = (last.at_ns - first.at_ns) as f64 / 1e9;
        Some(last.events_sent.saturating_sub(first.events_sent) as f64 / secs)
    }

    /// Up to `n` hosts that leaked most at any point in the session (then by name).
    pub fn top_hosts(&self, n: usize) -> Vec<String> {
        let mut peak: BTreeMap<&str, u64> = BTreeMap::new();
        for p in &self.points {
            for (host, h) in &p.hosts {
                let e = peak.entry(host.as_str()).or_default();
                *e = (*e).max(h.leaked);
            }
        }
        let mut hosts: Vec<(&str, u64)> =
            peak.into_iter().filter(|(_, leaked)| *leaked > 0).collect();
        hosts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        hosts
            .into_iter()
            .take(n)
            .map(|(h, _)| h.to_owned())
            .collect()
    }

    /// (seconds since the start, leaked) for `host`, or for all hosts with None.
    pub fn chart_series(&self, host: Option<&str>) -> Vec<(f64, f64)> {
        let start = self.started_ns.unwrap_or(0);
        self.points
            .iter()
            .map(|p| {
                let leaked = match host {
                    Some(h) => p.hosts.get(h).map_or(0, |h| h.leaked),
                    None => p.leaked_total,
                };
                (p.at_ns.saturating_sub(start) as f64 / 1e9, leaked as f64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{snapshot::HostSummary, KernelStats};

    /// A snapshot with these (host, leaked, connections_total) and kernel events sent. Made
    /// from a real one, so it stays valid as the snapshot grows fields.
    fn snapshot(hosts: &[(&str, u64, u64)], events: u64) -> Snapshot {
        use crate::model::testkit::{established, kconn, sample, table_after};
        let table = table_after([sample(
            SEC,
            vec![(1, established(kconn(40001, "10.0.0.1:443", 0), 0))],
            vec![],
        )]);
        let mut s = Snapshot::take(&table, SEC, &Graces::default());
        let template = s.hosts[0].clone();
        s.hosts = hosts
            .iter()
            .map(|(host, leaked, total)| HostSummary {
                host: (*host).into(),
                leaked: *leaked,
                connections_total: *total,
                ..template.clone()
            })
            .collect();
        s.leaked_total = hosts.iter().map(|h| h.1).sum();
        s.kernel = KernelStats {
            events_sent: events,
            ..Default::default()
        };
        s
    }

    #[test]
    fn series_rates_and_top_hosts() {
        let mut t = Trend::starting_at(100 * SEC);
        for i in 0..=20u64 {
            t.observe(
                &snapshot(&[("a", i / 5, 2 * i), ("b", 1, i), ("c", 0, 0)], 50 * i),
                (100 + i) * SEC,
            );
        }
        // 21 points in 6 runs of 3 or 4: the largest of each; the whole session is there.
        assert_eq!(t.leaked_series("a", 6), vec![0, 1, 1, 2, 3, 4]);
        assert_eq!(
            t.leaked_series("a", 30).len(),
            21,
            "one per point while they fit"
        );
        assert_eq!(t.leaked_series("zzz", 2), vec![0, 0]);
        assert_eq!(t.leaked_total_series(3), vec![2, 3, 5]);
        assert_eq!(t.open_rate("a"), Some(2.0));
        assert_eq!(t.open_rate("b"), Some(1.0));
        assert_eq!(t.event_rate(), Some(50.0));
        assert_eq!(
            t.top_hosts(5),
            vec!["a".to_owned(), "b".to_owned()],
            "c never leaked"
        );
        assert_eq!(t.chart_series(Some("b"))[3], (3.0, 1.0));
        assert_eq!(t.chart_series(None)[20], (20.0, 5.0));
    }

    #[test]
    fn one_point_has_no_rate() {
        let mut t = Trend::default();
        t.observe(&snapshot(&[("a", 1, 1)], 0), SEC);
        assert_eq!((t.open_rate("a"), t.event_rate()), (None, None));
    }

    #[test]
    fn catch_up_adds_a_point_per_step_and_skips_long_gaps() {
        let table = ConnTable::new();
        let g = Graces::default();
        let mut t = Trend::starting_at(10 * SEC);
        t.catch_up(&table, 10 * SEC, &g);
        t.catch_up(&table, 10 * SEC + SEC / 2, &g);
        t.catch_up(&table, 13 * SEC, &g);
        let times: Vec<u64> = t.points().iter().map(|p| p.at_ns / SEC).collect();
        assert_eq!(times, vec![10, 11, 12, 13]);
        t.catch_up(&table, 10_000 * SEC + SEC / 2, &g);
        assert_eq!(
            t.points().len(),
            5,
            "a gap of hours adds one point, not thousands"
        );
        assert_eq!(t.points()[4].at_ns, 10_000 * SEC);
    }

    #[test]
    fn a_full_history_thins_out_and_doubles_its_step() {
        let mut t = Trend::starting_at(0);
        for i in 0..=MAX_POINTS as u64 {
            t.observe(&snapshot(&[], 0), i * SEC);
        }
        assert_eq!(t.points().len(), MAX_POINTS / 2 + 1);
        assert_eq!(t.points().first().map(|p| p.at_ns), Some(0));
        assert_eq!(
            t.points().last().map(|p| p.at_ns),
            Some(MAX_POINTS as u64 * SEC)
        );
        assert_eq!(t.step_ns, 2 * SEC);
        assert_eq!(t.next_ns, Some((MAX_POINTS as u64 + 2) * SEC));
    }
}
