//! The scale soak: the fixture's `soak` relay holds many connections (a known number of them
//! leaking, per provider host) and then opens and closes new ones at a steady rate, while the
//! real tracer follows it. Checks that the tracer's verdicts are exact once the connections
//! are held and stay exact through the churn, that no churned connection is ever called a
//! leak, and that the tracer's memory stays flat.
//!
//! `tests/tests/scale.rs` runs a short version in CI; `cargo xtask soak` runs the full one
//! (100k connections, 5k new connections a second for 10 minutes) and writes the report.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{fixture_bin, tracer_bin, Proc};

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub port: u16,
    /// Connections held open for the whole run.
    pub hold: u32,
    /// Of those, leaks with the response left unread.
    pub unread: u32,
    /// Of those, leaks left in CLOSE_WAIT.
    pub close_wait: u32,
    /// New (correctly closed) connections per second during the churn.
    pub rate: u32,
    pub churn: Duration,
    /// Stop the tracer (SIGSTOP) while the connections are opened and churned, and resume it
    /// after: its ring buffer overflows, and the test is whether it re-syncs. Names travel in
    /// kernel events, so connections whose events were lost count under their address; counts
    /// are then compared per address (named host or bare address together).
    pub pause_tracer: bool,
}

impl Plan {
    /// Reads `SOAK_HOLD`, `SOAK_UNREAD`, `SOAK_CLOSE_WAIT`, `SOAK_RATE`, `SOAK_SECONDS` over
    /// the defaults given.
    pub fn from_env(default: Plan) -> Plan {
        let get = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
                })
                .unwrap_or(default)
        };
        Plan {
            port: default.port,
            hold: get("SOAK_HOLD", default.hold.into()) as u32,
            unread: get("SOAK_UNREAD", default.unread.into()) as u32,
            close_wait: get("SOAK_CLOSE_WAIT", default.close_wait.into()) as u32,
            rate: get("SOAK_RATE", default.rate.into()) as u32,
            churn: Duration::from_secs(get("SOAK_SECONDS", default.churn.as_secs())),
            pause_tracer: default.pause_tracer,
        }
    }
}

/// The leaks the fixture made at one upstream host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// The upstream's address (its connections count there when their name was lost).
    pub addr: String,
    pub open: u64,
    pub unread: u64,
    pub close_wait: u64,
}

/// One look at the tracer: its snapshot and its process figures.
#[derive(Clone, Debug)]
pub struct Point {
    /// Seconds since the held connections were all open.
    pub t: f64,
    pub phase: &'static str,
    pub rss_mib: f64,
    pub cpu_s: f64,
    pub open: u64,
    pub leaked: u64,
    pub events_sent: u64,
    pub events_lost: u64,
    pub conn_map_full: u64,
    /// Connections counted closed_unread, all hosts (none of the soak's are).
    pub closed_unread: u64,
    /// Whether every host's verdict counts were exactly the expected ones.
    pub exact: bool,
}

#[derive(Debug)]
pub struct Report {
    pub plan: Plan,
    pub hold_seconds: f64,
    /// From "all held" to the first snapshot with every count exact.
    pub seconds_to_exact: f64,
    pub churn_done: u64,
    pub churn_errors: u64,
    pub churn_seconds: f64,
    pub points: Vec<Point>,
    /// Snapshots taken during and after the churn that were not exact (must be none).
    pub inexact_after_exact: Vec<String>,
    /// What was wrong at each snapshot before the first exact one (the time to exact varies
    /// from run to run: this says with what).
    pub before_exact: Vec<String>,
    /// Set when the verdicts never became exact within the settle time: what was wrong.
    pub never_exact: Option<String>,
    pub final_summary: String,
    /// What the tracer said on stderr (warnings such as lost events).
    pub tracer_warnings: Vec<String>,
}

impl Report {
    /// Resident memory growth during the churn, in MiB: the median of the last quarter's
    /// points against the median of the second quarter's (allocator pools have grown by
    /// then). Medians, because the resident size swings by 20-25 MiB from one snapshot to the
    /// next under churn as the allocator returns and takes pages (two single points read
    /// -4 and +18 MiB in runs with the same code); a leak moves the whole quarter.
    pub fn churn_rss_growth_mib(&self) -> f64 {
        let churn: Vec<f64> = self
            .points
            .iter()
            .filter(|p| p.phase == "churn")
            .map(|p| p.rss_mib)
            .collect();
        if churn.len() < 4 {
            return 0.0;
        }
        let quarter = churn.len() / 4;
        let median = |points: &[f64]| {
            let mut v = points.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        median(&churn[churn.len() - quarter..]) - median(&churn[quarter..2 * quarter])
    }

    /// Prints the report and fails unless the verdicts became exact and stayed so. No snapshot
    /// at all, or none exact, is a failure too: there was nothing to be exact.
    pub fn assert_exact_throughout(&self) {
        eprintln!("{}", self.markdown());
        eprintln!("tracer warnings:\n{}", self.tracer_warnings.join("\n"));
        assert!(
            !self.points.is_empty(),
            "the tracer printed no snapshot: nothing was checked"
        );
        assert!(
            self.points.iter().any(|p| p.exact) && self.seconds_to_exact.is_finite(),
            "verdicts were never exact in {} snapshots: {}\nlast snapshot:\n{}",
            self.points.len(),
            self.never_exact
                .as_deref()
                .unwrap_or("(no reason recorded)"),
            self.final_summary
        );
        if let Some(why) = &self.never_exact {
            panic!(
                "verdicts never became exact: {why}\nlast snapshot:\n{}",
                self.final_summary
            );
        }
        assert!(
            self.inexact_after_exact.is_empty(),
            "verdicts went wrong after being exact:\n{}",
            self.inexact_after_exact.join("\n")
        );
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.points.iter().map(|p| p.rss_mib).fold(0.0, f64::max)
    }

    /// Tracer CPU seconds per second during the churn.
    pub fn churn_cpu_share(&self) -> f64 {
        let churn: Vec<&Point> = self.points.iter().filter(|p| p.phase == "churn").collect();
        match (churn.first(), churn.last()) {
            (Some(a), Some(b)) if b.t > a.t => (b.cpu_s - a.cpu_s) / (b.t - a.t),
            _ => 0.0,
        }
    }

    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let last = self.points.last();
        let mut s = String::new();
        let _ = writeln!(s, "| figure | value |\n| --- | --- |");
        let _ = writeln!(
            s,
            "| held connections (unread / close_wait leaks) | {} ({} / {}) |",
            p.hold, p.unread, p.close_wait
        );
        let _ = writeln!(
            s,
            "| churn | {} new connections/s for {} s: {} done, {} errors, in {:.1} s ({:.0}/s) |",
            p.rate,
            p.churn.as_secs(),
            self.churn_done,
            self.churn_errors,
            self.churn_seconds,
            self.churn_done as f64 / self.churn_seconds.max(0.001)
        );
        let _ = writeln!(
            s,
            "| time to open the held connections | {:.1} s |",
            self.hold_seconds
        );
        let _ = writeln!(
            s,
            "| verdicts exact after | {:.1} s (then exact at every later snapshot: {}) |",
            self.seconds_to_exact,
            if self.inexact_after_exact.is_empty() {
                "yes".to_owned()
            } else {
                format!("no, {} were not", self.inexact_after_exact.len())
            }
        );
        let _ = writeln!(
            s,
            "| tracer resident memory: peak / churn growth | {:.1} MiB / {:+.1} MiB |",
            self.peak_rss_mib(),
            self.churn_rss_growth_mib()
        );
        let _ = writeln!(
            s,
            "| tracer CPU during the churn | {:.1}% of one CPU |",
            self.churn_cpu_share() * 100.0
        );
        if let Some(l) = last {
            let _ = writeln!(
                s,
                "| kernel events sent / lost / connection map full | {} / {} / {} |",
                l.events_sent, l.events_lost, l.conn_map_full
            );
            let _ = writeln!(
                s,
                "| connections counted closed_unread (none of the soak's close early) | {} |",
                l.closed_unread
            );
        }
        let _ = writeln!(s, "\nTracer over time (one row per tenth of the run):\n");
        let _ = writeln!(
            s,
            "| t (s) | phase | RSS (MiB) | CPU (s) | open | leaked | events lost | exact |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        let step = (self.points.len() / 10).max(1);
        for (i, pt) in self.points.iter().enumerate() {
            if i % step == 0 || i + 1 == self.points.len() {
                let _ = writeln!(
                    s,
                    "| {:.0} | {} | {:.1} | {:.1} | {} | {} | {} | {} |",
                    pt.t,
                    pt.phase,
                    pt.rss_mib,
                    pt.cpu_s,
                    pt.open,
                    pt.leaked,
                    pt.events_lost,
                    if pt.exact { "yes" } else { "no" }
                );
            }
        }
        if !self.before_exact.is_empty() {
            let _ = writeln!(
                s,
                "\nWhat was wrong at each snapshot before the first exact one:\n"
            );
            for line in &self.before_exact {
                let _ = writeln!(s, "- {line}");
            }
        }
        s
    }
}

/// Resident memory (MiB) and CPU seconds (user + system) of a process.
pub fn rss_and_cpu(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    (rss_kib / 1024.0, ticks / hz)
}

/// Parses `key=value` pairs of a marker line.
pub fn marker_fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn num(fields: &BTreeMap<String, String>, key: &str, line: &str) -> u64 {
    fields
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key}= in fixture line {line:?}"))
}

/// Where `snapshot` differs from `expect` at each host (and leaks at any other host). While
/// the churn runs, a host's open count may exceed the held connections by the churned ones in
/// flight; the leak counts must be exact all the same. `by_address`: a host's counts are its
/// named entry plus the entry of its bare address (see `Plan::pause_tracer`).
pub fn mismatches(
    snapshot: &Value,
    expect: &BTreeMap<String, Expect>,
    churning: bool,
    by_address: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let hosts = snapshot["hosts"].as_array().cloned().unwrap_or_default();
    for (name, want) in expect {
        let entries: Vec<&Value> = hosts
            .iter()
            .filter(|h| h["host"] == name.as_str() || (by_address && h["host"] == want.addr))
            .collect();
        let get = |path: &[&str]| -> u64 {
            entries
                .iter()
                .map(|h| {
                    let mut v = *h;
                    for key in path {
                        v = &v[*key];
                    }
                    v.as_u64().unwrap_or(0)
                })
                .sum()
        };
        let got = Expect {
            addr: want.addr.clone(),
            open: get(&["open"]),
            unread: get(&["by_reason", "unread"]),
            close_wait: get(&["by_reason", "close_wait"]),
        };
        let abandoned = get(&["by_reason", "abandoned"]);
        let open_ok = if churning {
            got.open >= want.open
        } else {
            got.open == want.open
        };
        let leaks_ok = got.unread == want.unread && got.close_wait == want.close_wait;
        if !open_ok || !leaks_ok || abandoned != 0 {
            out.push(format!(
                "{name}: want {want:?}, got {got:?} abandoned={abandoned}"
            ));
        }
    }
    for h in &hosts {
        let name = h["host"].as_str().unwrap_or("?");
        let known = expect
            .iter()
            .any(|(n, e)| n == name || (by_address && e.addr == name));
        if !known && h["leaked"].as_u64().unwrap_or(0) > 0 {
            out.push(format!("unexpected leaks at {name}: {h}"));
        }
    }
    out
}

/// The snapshot's leaks of `reason` grouped by what tells a real leak from a false one
/// (state, reads seen, the last read's return, whether bytes wait, how the connection was
/// found), most common first: "count×(...)" for the five largest groups.
pub fn leak_profile(snapshot: &Value, reason: &str) -> String {
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for leak in snapshot["leaks"].as_array().into_iter().flatten() {
        if leak["reason"] != reason {
            continue;
        }
        let key = format!(
            "{}, {} reads, last {}, Recv-Q {}, {}",
            leak["state"].as_str().unwrap_or("?"),
            leak["reads"],
            leak["last_read_ret"],
            if leak["recv_q"].as_u64().unwrap_or(0) > 0 {
                ">0"
            } else {
                "0"
            },
            leak["origin"]
        );
        *groups.entry(key).or_default() += 1;
    }
    let mut groups: Vec<(String, u64)> = groups.into_iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    groups
        .iter()
        .take(5)
        .map(|(k, n)| format!("{n}×({k})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// File descriptors one fixture process may use here: a sandbox without CAP_SYS_RESOURCE
/// cannot raise RLIMIT_NOFILE's hard limit (20000 on the machine these tests were written
/// on), so the load is spread over as many relay (and upstream) processes as it takes. The
/// tracer follows them all, which is also how a host with several relay replicas looks.
const CONNECTIONS_PER_PROCESS: u32 = 15_000;

/// Splits `total` into `parts` nearly equal shares.
fn share(total: u32, parts: u32, index: u32) -> u32 {
    total / parts + u32::from(index < total % parts)
}

/// Runs the soak and returns what it measured; panics (the test failure) when the fixture or
/// the tracer misbehave. The caller asserts on the report.
pub fn run(plan: &Plan) -> Report {
    let shards = plan.hold.div_ceil(CONNECTIONS_PER_PROCESS).max(1);
    let mut upstreams = Vec::new();
    let mut relays = Vec::new();
    for i in 0..shards {
        let port = (plan.port + i as u16).to_string();
        let mut upstream_cmd = Command::new(fixture_bin());
        upstream_cmd.args(["soak-upstream", "-port", &port]);
        let mut upstream = Proc::spawn("fixture soak-upstream", upstream_cmd);
        upstream.expect_line("READY", Duration::from_secs(10));
        upstreams.push(upstream);

        let mut relay_cmd = Command::new(fixture_bin());
        relay_cmd.args([
            "soak",
            "-port",
            &port,
            "-hold",
            &share(plan.hold, shards, i).to_string(),
            "-unread",
            &share(plan.unread, shards, i).to_string(),
            "-closewait",
            &share(plan.close_wait, shards, i).to_string(),
            "-rate",
            &share(plan.rate, shards, i).to_string(),
            "-duration",
            &format!("{}s", plan.churn.as_secs()),
            "-start-on-stdin",
            "-linger",
            "30m",
        ]);
        let mut relay = Proc::spawn("fixture soak", relay_cmd);
        relay.expect_line("WAITING", Duration::from_secs(10));
        relays.push(relay);
    }

    let mut tracer_cmd = Command::new(tracer_bin());
    tracer_cmd
        .arg("run")
        .arg("--json")
        // The default CLOSE_WAIT grace (5s): on a machine this loaded, a churned connection
        // can wait seconds for its relay to be scheduled and close it, which a 2s grace
        // reports (rightly: for that long nobody closed it).
        .args([
            "--close-wait-grace",
            "5s",
            "--unread-grace",
            "5s",
            "--abandon-grace",
            "10s",
            "--interval",
            "1s",
            "--pid",
        ])
        .arg(relays[0].pid().to_string());
    for relay in &relays[1..] {
        tracer_cmd.arg("--pid").arg(relay.pid().to_string());
    }
    let mut tracer = Proc::spawn("tracer", tracer_cmd);
    tracer.expect_stderr("tracer: attached", Duration::from_secs(30));
    let tracer_pid = tracer.pid();

    if plan.pause_tracer {
        tracer.signal(libc::SIGSTOP);
    }
    for relay in &mut relays {
        relay.send_line("go");
    }
    let started = Instant::now();
    // The hold phase: a few tens of seconds for 100k connections.
    let hold_timeout = Duration::from_secs(60 + u64::from(plan.hold) / 500);
    let mut expect: BTreeMap<String, Expect> = BTreeMap::new();
    let mut held_lines = Vec::new();
    for relay in &mut relays {
        loop {
            let left = hold_timeout.saturating_sub(started.elapsed());
            let Some(line) = relay.next_line(left) else {
                panic!(
                    "the soak relays did not finish holding {} connections within {hold_timeout:?}",
                    plan.hold
                );
            };
            if line.starts_with("EXPECT ") {
                let f = marker_fields(&line);
                let host = f
                    .get("host")
                    .cloned()
                    .unwrap_or_else(|| panic!("no host= in {line:?}"));
                let e = expect.entry(host).or_default();
                e.addr = f.get("addr").cloned().unwrap_or_default();
                e.open += num(&f, "open", &line);
                e.unread += num(&f, "unread", &line);
                e.close_wait += num(&f, "close_wait", &line);
            } else if line.starts_with("HELD ") {
                held_lines.push(line);
                break;
            }
        }
    }
    let mut held_total = 0;
    let mut hold_seconds: f64 = 0.0;
    for held_line in &held_lines {
        let held = marker_fields(held_line);
        assert_eq!(
            num(&held, "failed", held_line),
            0,
            "the fixture could not open every connection: {held_line}"
        );
        held_total += num(&held, "total", held_line);
        hold_seconds = hold_seconds.max(
            held.get("seconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
        );
    }
    assert_eq!(held_total, u64::from(plan.hold));
    let mut churn_lines: Vec<String> = Vec::new();
    if plan.pause_tracer {
        // The whole load runs while the tracer is stopped; then it resumes.
        let churn_timeout = plan.churn + Duration::from_secs(60);
        let waiting = Instant::now();
        for relay in &mut relays {
            loop {
                let left = churn_timeout.saturating_sub(waiting.elapsed());
                match relay.next_line(left) {
                    Some(line) if line.starts_with("CHURN DONE") => {
                        churn_lines.push(line);
                        break;
                    }
                    Some(_) => continue,
                    None => {
                        panic!("a soak relay did not finish its churn within {churn_timeout:?}")
                    }
                }
            }
        }
        tracer.signal(libc::SIGCONT);
    }
    let all_held = Instant::now();

    let mut points = Vec::new();
    let mut seconds_to_exact = None;
    let mut inexact_after_exact = Vec::new();
    let mut before_exact = Vec::new();
    let mut last_snapshot = Value::Null;
    // Verdicts must be exact within the graces plus a few scans; then the churn runs.
    // Unread verdicts need a socket-table scan, which the tracer paces by its cost (about a
    // second at 100k connections, so a scan every 20 s or so).
    let settle = Duration::from_secs(30 + u64::from(plan.hold) / 1_000);
    let deadline = all_held + settle + plan.churn + Duration::from_secs(60);
    let mut after_churn_points = 0;
    // Why the verdicts were still not exact when the settle time ran out.
    let mut never_exact = None;
    while Instant::now() < deadline && !(seconds_to_exact.is_some() && after_churn_points >= 5) {
        // Markers from the relays (CHURN DONE) without blocking.
        for relay in &mut relays {
            while let Some(line) = relay.next_line(Duration::from_millis(0)) {
                if line.starts_with("CHURN DONE") {
                    churn_lines.push(line);
                }
            }
        }
        let churn_done = churn_lines.len() == relays.len();
        let Some(line) = tracer.next_line(Duration::from_secs(5)) else {
            continue;
        };
        if !line.starts_with('{') {
            continue;
        }
        let snapshot: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"));
        let t = all_held.elapsed().as_secs_f64();
        let phase = if churn_done {
            after_churn_points += 1;
            "after"
        } else if plan.rate > 0 {
            "churn"
        } else {
            "hold"
        };
        // The first snapshot after CHURN DONE may predate the last churned close.
        let churning = phase == "churn" || (phase == "after" && after_churn_points <= 1);
        let bad = mismatches(&snapshot, &expect, churning, plan.pause_tracer);
        if bad.is_empty() && seconds_to_exact.is_none() {
            seconds_to_exact = Some(t);
        } else if !bad.is_empty() && seconds_to_exact.is_some() {
            inexact_after_exact.push(format!("t={t:.0}s: {}", bad.join("; ")));
        } else if !bad.is_empty() {
            before_exact.push(format!(
                "t={t:.1}s ({phase}): {}; unread leaks by (state, reads, last read, Recv-Q, origin): {}",
                bad.join("; "),
                leak_profile(&snapshot, "unread")
            ));
        }
        let gave_up = seconds_to_exact.is_none() && all_held.elapsed() > settle;
        if gave_up {
            never_exact = Some(bad.join("; "));
        }
        let (rss_mib, cpu_s) = rss_and_cpu(tracer_pid);
        let k = &snapshot["kernel"];
        points.push(Point {
            t,
            phase,
            rss_mib,
            cpu_s,
            open: snapshot["open_total"].as_u64().unwrap_or(0),
            leaked: snapshot["leaked_total"].as_u64().unwrap_or(0),
            events_sent: k["events_sent"].as_u64().unwrap_or(0),
            events_lost: k["events_lost"].as_u64().unwrap_or(0),
            conn_map_full: k["conn_map_full"].as_u64().unwrap_or(0),
            closed_unread: snapshot["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| h["closed_unread_total"].as_u64().unwrap_or(0))
                .sum(),
            exact: bad.is_empty(),
        });
        last_snapshot = snapshot;
        if gave_up {
            break;
        }
    }
    assert!(
        never_exact.is_some() || plan.rate == 0 || churn_lines.len() == relays.len(),
        "only {} of {} soak relays printed CHURN DONE",
        churn_lines.len(),
        relays.len()
    );
    let churned = |key: &str| -> Vec<f64> {
        churn_lines
            .iter()
            .map(|l| {
                marker_fields(l)
                    .get(key)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .collect()
    };
    let report = Report {
        plan: plan.clone(),
        hold_seconds,
        seconds_to_exact: seconds_to_exact.unwrap_or(f64::NAN),
        churn_done: churned("total").iter().sum::<f64>() as u64,
        churn_errors: churned("errors").iter().sum::<f64>() as u64,
        churn_seconds: churned("seconds").into_iter().fold(0.0, f64::max),
        points,
        inexact_after_exact,
        before_exact,
        never_exact,
        final_summary: crate::summary(&last_snapshot),
        tracer_warnings: Vec::new(),
    };
    let mut report = report;
    tracer.signal(libc::SIGINT);
    let (_, _, stderr) = tracer.wait(Duration::from_secs(30));
    report.tracer_warnings = stderr
        .lines()
        // Warnings, and with RUST_LOG=debug the collector's scan timings.
        .filter(|l| l.contains("WARN") || l.contains("lost") || l.contains("scan:"))
        .map(str::to_owned)
        .collect();
    drop(relays);
    drop(upstreams);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(points: Vec<Point>, seconds_to_exact: f64) -> Report {
        Report {
            plan: Plan {
                port: 1,
                hold: 100,
                unread: 2,
                close_wait: 1,
                rate: 0,
                churn: Duration::ZERO,
                pause_tracer: false,
            },
            hold_seconds: 1.0,
            seconds_to_exact,
            churn_done: 0,
            churn_errors: 0,
            churn_seconds: 0.0,
            points,
            inexact_after_exact: Vec::new(),
            before_exact: Vec::new(),
            never_exact: None,
            final_summary: String::new(),
            tracer_warnings: Vec::new(),
        }
    }

    fn point(exact: bool) -> Point {
        Point {
            t: 1.0,
            phase: "hold",
            rss_mib: 1.0,
            cpu_s: 0.0,
            open: 100,
            leaked: 3,
            events_sent: 0,
            events_lost: 0,
            conn_map_full: 0,
            closed_unread: 0,
            exact,
        }
    }

    #[test]
    fn exact_snapshots_pass() {
        report(vec![point(true), point(true)], 1.0).assert_exact_throughout();
    }

    #[test]
    #[should_panic(expected = "no snapshot")]
    fn zero_snapshots_fail() {
        report(Vec::new(), f64::NAN).assert_exact_throughout();
    }

    #[test]
    #[should_panic(expected = "never exact")]
    fn snapshots_never_exact_fail_even_without_a_reason() {
        report(vec![point(false)], f64::NAN).assert_exact_throughout();
    }

    fn churn(rss: &[f64]) -> Report {
        let points = rss
            .iter()
            .map(|&rss_mib| Point {
                phase: "churn",
                rss_mib,
                ..point(true)
            })
            .collect();
        report(points, 1.0)
    }

    #[test]
    fn leak_profiles_group_one_reason_most_common_first() {
        let leak = |reason: &str, reads: u64, last: Option<i64>, recv_q: u64| {
            serde_json::json!({"reason": reason, "state": "ESTABLISHED", "reads": reads,
                "last_read_ret": last, "recv_q": recv_q, "origin": "traced"})
        };
        let snapshot = serde_json::json!({"leaks": [
            leak("unread", 3, Some(-11), 120),
            leak("unread", 0, None, 4000),
            leak("close_wait", 0, None, 1),
            leak("unread", 0, None, 9000),
        ]});
        assert_eq!(
            leak_profile(&snapshot, "unread"),
            "2×(ESTABLISHED, 0 reads, last null, Recv-Q >0, \"traced\"), \
             1×(ESTABLISHED, 3 reads, last -11, Recv-Q >0, \"traced\")"
        );
        assert_eq!(leak_profile(&serde_json::json!({}), "unread"), "");
    }

    #[test]
    fn memory_growth_is_the_quarters_medians_not_two_swinging_points() {
        // The allocator's swing: a low point a quarter in, a high one at the end, no growth.
        let swinging = [
            210.0, 230.0, 200.0, 225.0, 201.0, 224.0, 200.0, 226.0, 212.0, 222.0, 205.0, 224.0,
        ];
        let growth = churn(&swinging).churn_rss_growth_mib();
        assert!(growth.abs() < 5.0, "{growth}");
        // A leak lifts every point of the last quarter.
        let leaking: Vec<f64> = (0..12).map(|i| 200.0 + 5.0 * f64::from(i)).collect();
        assert_eq!(churn(&leaking).churn_rss_growth_mib(), 30.0);
        assert_eq!(churn(&[1.0, 2.0, 3.0]).churn_rss_growth_mib(), 0.0);
    }
}
