//! End-to-end: leaked HTTP/2 streams (issue 12) found by the Go layer in a relay built
//! stripped by each Go of the matrix, with exact counts per upstream host, against what the
//! relay (tests/goscenarios) measured itself: its own count of open client streams per
//! scenario, its sockets still open, its connections. Also the Go layer's refusals: a non-Go
//! target, a Go too old (the fixture, Debian's Go 1.19) and a release it does not know each
//! get one line and no probe.
//!
//! The relay is built by `cargo xtask test` into GO_SCENARIOS_DIR. Each test takes about 25 s
//! (the relay's scenarios about 15 s, the graces and a hold after them).
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_e2e::*;

/// How long after the relay's last scenario every verdict must be in: the longest grace
/// (`grace_args`: abandoned after 4 s) after the scenario's last read, a sample or two, and
/// margin for a mechanism that sees streams a second or two later.
const VERDICTS_WITHIN: Duration = Duration::from_secs(20);

/// Once every verdict is in, how long they must hold before the final snapshot.
const HOLD: Duration = Duration::from_secs(3);

/// One scenario's line: what the relay measured, so what the tracer must find on its host.
#[derive(Debug, Clone)]
struct Expected {
    scenario: String,
    proto: String,
    host: String,
    remote: String,
    open_streams: u64,
    leaked_streams: u64,
    leaked_connections: u64,
    reason: String,
    connections: u64,
}

impl Expected {
    fn from_line(v: &Value) -> Expected {
        let text = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {v}"))
                .to_owned()
        };
        let num = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
        // The site the relay names itself (issue 13's ground truth) must be there and sane.
        let line = v["site"]["line"].as_u64().unwrap_or(0);
        assert!(
            line > 0
                && v["site"]["function"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("main.")),
            "scenario line without its call site: {v}"
        );
        Expected {
            scenario: text("scenario"),
            proto: text("proto"),
            host: text("host"),
            remote: text("remote"),
            open_streams: num("open_streams"),
            leaked_streams: num("leaked_streams"),
            leaked_connections: num("leaked_connections"),
            reason: text("reason"),
            connections: num("connections"),
        }
    }

    fn leaked(&self) -> u64 {
        self.leaked_streams + self.leaked_connections
    }
}

/// The relay (goscenarios) and its reports.
struct Relay {
    proc: Proc,
    pid: u32,
    expected: Vec<Expected>,
}

impl Relay {
    /// Starts `bin` and reads its lines up to WAITING (the scenarios of `-before` report
    /// before it).
    fn start(bin: &std::path::Path, port: u16, extra: &[&str]) -> Relay {
        let mut cmd = Command::new(bin);
        cmd.args(["-port", &port.to_string(), "-start-on-stdin", "-hold", "5m"])
            .args(extra);
        let proc = Proc::spawn("goscenarios relay", cmd);
        let pid = proc.pid();
        let mut relay = Relay {
            proc,
            pid,
            expected: Vec::new(),
        };
        relay.read_until("WAITING", Duration::from_secs(90));
        relay
    }

    /// Reads the relay's lines until `end`, keeping its scenario reports.
    fn read_until(&mut self, end: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.proc.next_line(left) else {
                // Fails with the relay's stderr (it ended, or said nothing in time).
                self.proc.expect_line(end, Duration::from_millis(1));
                unreachable!();
            };
            if line.trim() == end {
                return;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["type"] == "scenario" {
                    self.expected.push(Expected::from_line(&v));
                }
            }
        }
    }

    /// Starts the scenarios and waits for their reports.
    fn go(&mut self) {
        self.proc.send_line("go");
        self.read_until("SCENARIOS DONE", Duration::from_secs(150));
    }

    fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|stat| {
            // pid (comm) STATE ...: a zombie has exited.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    }
}

/// The tracer on `pids` with the Go layer on (`--go-probes auto`, the default, said anyway).
fn start_go_tracer(pids: &[u32]) -> Proc {
    let mut cmd = Command::new(tracer_bin());
    cmd.arg("run").arg("--json").args(grace_args());
    cmd.args(["--go-probes", "auto"]);
    for pid in pids {
        cmd.args(["--pid", &pid.to_string()]);
    }
    let mut p = Proc::spawn("tracer", cmd);
    p.expect_stderr("tracer: attached", Duration::from_secs(30));
    p
}

/// The tracer's snapshots as they come.
struct Snapshots {
    seen: Vec<Value>,
}

impl Snapshots {
    /// The next snapshot within `timeout`.
    fn next(&mut self, tracer: &mut Proc, timeout: Duration) -> Option<&Value> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = tracer.next_line(left)?;
            if line.starts_with('{') {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"));
                self.seen.push(v);
                return self.seen.last();
            }
        }
        None
    }

    /// Waits for a snapshot for which `done` holds; panics with `what` and the last snapshot.
    fn wait_for(
        &mut self,
        tracer: &mut Proc,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(tracer, left) {
                Some(s) if done(s) => return s.clone(),
                Some(_) => {}
                None => break,
            }
        }
        let last = self.seen.last().cloned().unwrap_or(Value::Null);
        panic!(
            "{what}: not within {timeout:?}; last snapshot:\n{}\n{last}",
            summary(&last)
        );
    }
}

/// The `go_layer` entry of `pid`, if settled.
fn go_layer(snapshot: &Value, pid: u32) -> Option<&Value> {
    snapshot["go_layer"]
        .as_array()?
        .iter()
        .find(|g| g["pid"].as_u64() == Some(u64::from(pid)))
}

/// Waits until the Go layer attached to `pid`; fails with its line if it refused.
fn wait_attached(snapshots: &mut Snapshots, tracer: &mut Proc, pid: u32) -> String {
    let s = snapshots.wait_for(
        tracer,
        Duration::from_secs(30),
        "the Go layer settling",
        |s| go_layer(s, pid).is_some(),
    );
    let entry = go_layer(&s, pid).unwrap();
    let line = entry["line"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        entry["attached"], true,
        "the Go layer did not attach: {line}"
    );
    line
}

/// The leaks listed for `host`.
fn leaks_of<'a>(s: &'a Value, host: &str) -> Vec<&'a Value> {
    s["leaks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["host"] == host)
        .collect()
}

/// Why `s` does not have exactly the expected verdicts on every scenario's host (empty when
/// it does).
fn mismatches(s: &Value, expected: &[Expected]) -> Vec<String> {
    let mut wrong = Vec::new();
    for e in expected {
        let Some(h) = host(s, &e.host) else {
            wrong.push(format!("{} ({}): host absent", e.scenario, e.host));
            continue;
        };
        let n = |path: &[&str]| {
            let mut v = h;
            for key in path {
                v = &v[*key];
            }
            v.as_u64()
        };
        let mut check = |what: &str, got: Option<u64>, want: u64| {
            if got != Some(want) {
                let got = got.map_or_else(|| "absent".to_owned(), |n| n.to_string());
                wrong.push(format!(
                    "{} ({}): {what} is {got}, want {want}",
                    e.scenario, e.host
                ));
            }
        };
        check("leaked", n(&["leaked"]), e.leaked());
        check(
            "by_kind.h2_stream",
            n(&["by_kind", "h2_stream"]),
            e.leaked_streams,
        );
        check(
            "by_kind.connection",
            n(&["by_kind", "connection"]),
            e.leaked_connections,
        );
        check("open_streams", n(&["open_streams"]), e.open_streams);
        for reason in ["close_wait", "unread", "abandoned"] {
            let want = if reason == e.reason { e.leaked() } else { 0 };
            check(
                &format!("by_reason.{reason}"),
                n(&["by_reason", reason]),
                want,
            );
        }
        let listed = leaks_of(s, &e.host);
        let kinds = |kind: &str| listed.iter().filter(|l| l["kind"] == kind).count() as u64;
        check(
            "leaks listed as h2_stream",
            Some(kinds("h2_stream")),
            e.leaked_streams,
        );
        check(
            "leaks listed as connection",
            Some(kinds("connection")),
            e.leaked_connections,
        );
    }
    wrong
}

/// Asserts the final snapshot against the relay's own reports, and that no snapshot ever
/// counted more leaks on a host than the relay made.
fn assert_verdicts(snapshots: &[Value], expected: &[Expected], relay_pid: u32) {
    let last = snapshots.last().unwrap();
    let ctx = format!("{}leaks: {:#}", summary(last), last["leaks"]);
    let wrong = mismatches(last, expected);
    assert!(wrong.is_empty(), "{}\n{ctx}", wrong.join("\n"));
    let total: u64 = expected.iter().map(Expected::leaked).sum();
    assert!(total > 0, "the relay leaked nothing: {expected:?}");
    assert_eq!(last["leaked_total"].as_u64(), Some(total), "{ctx}");
    // Only the scenarios' hosts: no stream without its connection, no inbound socket.
    let hosts: BTreeSet<&str> = last["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = expected.iter().map(|e| e.host.as_str()).collect();
    assert_eq!(hosts, want, "hosts\n{ctx}");
    for e in expected {
        let h = host(last, &e.host).unwrap();
        // The tracer saw the connections the relay's requests got, no more, no fewer.
        assert_eq!(
            h["connections_total"].as_u64(),
            Some(e.connections),
            "{} ({}): connections\n{ctx}",
            e.scenario,
            e.host
        );
        let listed = leaks_of(last, &e.host);
        for leak in &listed {
            assert_eq!(leak["pid"].as_u64(), Some(u64::from(relay_pid)), "{leak}");
            assert_eq!(leak["remote"], e.remote.as_str(), "{leak}");
            assert_eq!(leak["reason"], e.reason.as_str(), "{leak}");
            assert!(leak["fd"].as_i64().is_some_and(|fd| fd > 2), "{leak}");
        }
        if e.proto == "h2" {
            // Each leaked stream is its own, with an odd (client-initiated) id.
            let ids: BTreeSet<u64> = listed
                .iter()
                .map(|l| {
                    let id = l["stream_id"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("no stream_id: {l}"));
                    assert_eq!(id % 2, 1, "{l}");
                    id
                })
                .collect();
            assert_eq!(
                ids.len() as u64,
                e.leaked_streams,
                "stream ids {ids:?}\n{ctx}"
            );
            // Every stream of a host went over its one connection (multiplex above all).
            let locals: BTreeSet<&str> = listed
                .iter()
                .map(|l| l["local"].as_str().unwrap())
                .collect();
            assert!(
                locals.len() <= 1,
                "{}: streams on {locals:?}\n{ctx}",
                e.scenario
            );
        } else {
            for leak in &listed {
                assert_eq!(leak["state"], "CLOSE_WAIT", "{leak}");
            }
        }
    }
    // Never more than the relay made, at any snapshot: no false leak on the way.
    for (i, s) in snapshots.iter().enumerate() {
        for e in expected {
            let leaked = count_if_present(s, &e.host, &["leaked"]).unwrap_or(0);
            assert!(
                leaked <= e.leaked(),
                "{} ({}): {leaked} leaked at snapshot {i} of {}, the relay made {}\n{}",
                e.scenario,
                e.host,
                snapshots.len(),
                e.leaked(),
                summary(s)
            );
        }
    }
    let healthy: Vec<&str> = expected
        .iter()
        .filter(|e| e.leaked() == 0)
        .map(|e| e.host.as_str())
        .collect();
    assert_healthy_throughout(snapshots, &healthy);
}

/// The uprobe and uretprobe links the tracer process holds, as (event type, file, offset), from
/// its fds' fdinfo (a perf link's fdinfo names its event since Linux 6.6; bpftool 7.1's `perf
/// show` does not list links).
fn tracer_uprobes(tracer_pid: u32) -> Vec<(String, String, String)> {
    let dir = format!("/proc/{tracer_pid}/fdinfo");
    let mut probes = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let Ok(text) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue; // an fd closed meanwhile
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        if let Some(kind) = field("event_type").filter(|k| k.contains("uprobe")) {
            probes.push((
                kind,
                field("name").unwrap_or_default(),
                field("offset").unwrap_or_default(),
            ));
        }
    }
    probes
}

/// Waits for every verdict, holds them a little, stops the tracer: every snapshot since the
/// Go layer attached, the final one last.
fn settle_and_stop(tracer: Proc, mut snapshots: Snapshots, expected: &[Expected]) -> Vec<Value> {
    let mut tracer = tracer;
    let deadline = Instant::now() + VERDICTS_WITHIN;
    let mut wrong = vec!["no snapshot".to_owned()];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(s) = snapshots.next(&mut tracer, left) else {
            break;
        };
        wrong = mismatches(s, expected);
        if wrong.is_empty() {
            thread::sleep(HOLD);
            let mut all = snapshots.seen;
            all.extend(stop_tracer_all(tracer));
            return all;
        }
    }
    let last = snapshots.seen.last().cloned().unwrap_or(Value::Null);
    panic!(
        "the verdicts were not exact within {VERDICTS_WITHIN:?} of the relay's last scenario:\n{}\nlast snapshot:\n{}leaks: {:#}",
        wrong.join("\n"),
        summary(&last),
        last["leaks"]
    );
}

/// The relay built by Go `minor` runs every scenario with the tracer attached first.
fn attached_first(minor: &str, port: u16) {
    if !prerequisites_met() {
        return;
    }
    let Some(bin) = go_scenarios_bin(minor) else {
        return;
    };
    let started = Instant::now();
    let mut relay = Relay::start(&bin, port, &[]);
    let mut tracer = start_go_tracer(&[relay.pid]);
    let mut snapshots = Snapshots { seen: Vec::new() };
    let line = wait_attached(&mut snapshots, &mut tracer, relay.pid);
    assert!(line.contains(&format!("go{minor}.")), "{line}");
    // Safety: entries and decoded RETs only, never a uretprobe (Go moves stacks).
    let probes = tracer_uprobes(tracer.pid());
    assert!(
        probes.iter().all(|(kind, _, _)| kind == "uprobe"),
        "the tracer holds uretprobes: {probes:?}"
    );
    // `--go-probes auto`: the one probe per connection, nothing per request (call sites are
    // `--go-probes sites`). Said by the layer's line (older kernels' fdinfo does not show
    // the probes).
    assert!(
        line.contains(": 1 uprobes attached, call sites off"),
        "{line}"
    );
    snapshots.seen.clear();
    relay.go();
    assert_eq!(relay.expected.len(), 11, "{:?}", relay.expected);
    let all = settle_and_stop(tracer, snapshots, &relay.expected);
    assert_verdicts(&all, &relay.expected, relay.pid);
    assert!(relay.alive(), "the relay died under the probes");
    eprintln!(
        "go{minor}: {} ({} uprobes); exact verdicts in {:.0?}",
        line,
        probes.len(),
        started.elapsed()
    );
}

#[test]
fn go1_21_stripped_streams_are_exact() {
    attached_first("1.21", 18471);
}

#[test]
fn go1_22_stripped_streams_are_exact() {
    attached_first("1.22", 18472);
}

#[test]
fn go1_23_stripped_streams_are_exact() {
    attached_first("1.23", 18473);
}

#[test]
fn go1_24_stripped_streams_are_exact() {
    attached_first("1.24", 18474);
}

#[test]
fn go1_25_stripped_streams_are_exact() {
    attached_first("1.25", 18475);
}

#[test]
fn go1_26_stripped_streams_are_exact() {
    attached_first("1.26", 18476);
}

#[test]
fn go1_27_stripped_streams_are_exact() {
    attached_first("1.27", 18477);
}

/// Live attach: the relay has run for a while and its HTTP/2 connections are open (found by
/// the sock_diag scan, not seen opening); the streams leak on them after the tracer came.
#[test]
fn live_attach_to_a_running_relay_finds_streams_on_its_open_connections() {
    if !prerequisites_met() {
        return;
    }
    let Some(bin) = go_scenarios_bin("1.27") else {
        return;
    };
    let mut relay = Relay::start(&bin, 18478, &["-warm"]);
    let mut tracer = start_go_tracer(&[relay.pid]);
    let mut snapshots = Snapshots { seen: Vec::new() };
    wait_attached(&mut snapshots, &mut tracer, relay.pid);
    snapshots.seen.clear();
    relay.go();
    let all = settle_and_stop(tracer, snapshots, &relay.expected);
    assert_verdicts(&all, &relay.expected, relay.pid);
    let last = all.last().unwrap();
    for e in relay.expected.iter().filter(|e| e.proto == "h2") {
        for leak in leaks_of(last, &e.host) {
            assert_eq!(leak["origin"], "pre_existing", "{leak}");
        }
    }
}

/// Live attach to a relay that leaked before the tracer started: its leaked streams are found
/// too (as its leaked connections are), with the reason they have.
#[test]
fn streams_leaked_before_the_tracer_started_are_found() {
    if !prerequisites_met() {
        return;
    }
    let Some(bin) = go_scenarios_bin("1.27") else {
        return;
    };
    let mut relay = Relay::start(
        &bin,
        18479,
        &["-before", "never_read,multiplex", "-scenario", "correct"],
    );
    let before: Vec<&str> = relay.expected.iter().map(|e| e.scenario.as_str()).collect();
    assert_eq!(before, ["never_read", "multiplex"]);
    let mut tracer = start_go_tracer(&[relay.pid]);
    let mut snapshots = Snapshots { seen: Vec::new() };
    wait_attached(&mut snapshots, &mut tracer, relay.pid);
    snapshots.seen.clear();
    relay.go();
    let all = settle_and_stop(tracer, snapshots, &relay.expected);
    assert_verdicts(&all, &relay.expected, relay.pid);
}

/// Copies `bin` with the Go version in its build info replaced by `fake` (same length): a Go
/// release the layer does not know, which still runs.
fn with_go_version(bin: &std::path::Path, fake: &str, out: &std::path::Path) {
    let mut data = std::fs::read(bin).unwrap();
    // .go.buildinfo: 14-byte magic, pointer size, flags (2: strings inline), padding to 32,
    // then the version as a varint-prefixed string (Go 1.18 and later).
    let magic = b"\xff Go buildinf:";
    let at = data
        .windows(magic.len())
        .position(|w| w == magic)
        .expect("no Go build info");
    assert_eq!(data[at + 15] & 2, 2, "build info strings not inline");
    let len = usize::from(data[at + 32]);
    let version = &mut data[at + 33..at + 33 + len];
    assert!(
        version.starts_with(b"go1."),
        "{:?}",
        String::from_utf8_lossy(version)
    );
    assert_eq!(len, fake.len());
    version.copy_from_slice(fake.as_bytes());
    std::fs::write(out, &data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A non-Go target, a Go too old (the fixture: Debian's Go 1.19) and a Go release the layer
/// does not know: each gets its one line in the snapshot and in `tracer check --pid`, no
/// probe, and kernel tracing goes on.
#[test]
fn go_layer_refuses_non_go_old_and_unknown_binaries_with_one_line() {
    if !prerequisites_met() {
        return;
    }
    let Some(bin) = go_scenarios_bin("1.27") else {
        return;
    };
    let not_go = Proc::spawn("sleep", {
        let mut cmd = Command::new("sleep");
        cmd.arg("300");
        cmd
    });
    let old = start_upstreams(18480);
    let dir = std::env::temp_dir().join(format!("h2_streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unknown_bin = dir.join("goscenarios-go1.99.9");
    let fake = "go1.99.9";
    with_go_version(&bin, fake, &unknown_bin);
    let unknown = Relay::start(&unknown_bin, 18481, &[]);

    let cases = [
        (not_go.pid(), "not a Go binary"),
        (old.pid(), "is older than go1.21"),
        (unknown.pid, "go1.99.9 is newer than"),
    ];
    let pids: Vec<u32> = cases.iter().map(|(pid, _)| *pid).collect();
    let mut tracer = start_go_tracer(&pids);
    let mut snapshots = Snapshots { seen: Vec::new() };
    let s = snapshots.wait_for(
        &mut tracer,
        Duration::from_secs(30),
        "every Go layer line",
        |s| pids.iter().all(|pid| go_layer(s, *pid).is_some()),
    );
    let mut lines = BTreeMap::new();
    for (pid, why) in cases {
        let entry = go_layer(&s, pid).unwrap();
        let line = entry["line"].as_str().unwrap();
        assert_eq!(entry["attached"], false, "{entry}");
        assert!(
            line.starts_with(&format!("Go layer off for pid {pid}: ")) && line.contains(why),
            "pid {pid}: {line:?}, want it to say {why:?}"
        );
        assert!(
            line.ends_with("tracing with kernel signals only") && !line.contains('\n'),
            "{line:?}"
        );
        lines.insert(pid, line.to_owned());
    }
    let probes = tracer_uprobes(tracer.pid());
    assert!(probes.is_empty(), "the tracer attached probes: {probes:?}");
    // Kernel tracing goes on: it follows the targets.
    let targets = s["targets"].as_array().unwrap().len();
    assert_eq!(targets, 3, "{}", summary(&s));
    drop(stop_tracer(tracer));

    let mut check = Command::new(tracer_bin());
    check.arg("check");
    for pid in &pids {
        check.args(["--pid", &pid.to_string()]);
    }
    let out = check.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (pid, line) in &lines {
        let said: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&format!("Go layer off for pid {pid}:")))
            .collect();
        assert_eq!(said.len(), 1, "tracer check --pid {pid}:\n{text}");
        assert!(said[0].ends_with(line.as_str()), "{} vs {line}", said[0]);
    }
    drop(unknown);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Processes found by `--comm` get the Go layer when adopted, and a restarted relay (a new
/// pid, the same name) gets it again: its streams are counted as exactly as the first one's.
#[test]
fn a_relay_found_by_name_and_restarted_gets_the_go_layer_again() {
    if !prerequisites_met() {
        return;
    }
    let Some(bin) = go_scenarios_bin("1.27") else {
        return;
    };
    // What /proc/PID/comm says: the file name, cut to 15 bytes.
    let name = bin.file_name().unwrap().to_string_lossy();
    let comm: String = name.chars().take(15).collect();
    let h2_streams_exact = |s: &Value, expected: &[Expected]| {
        expected.iter().filter(|e| e.proto == "h2").all(|e| {
            host(s, &e.host).is_some_and(|h| {
                h["by_kind"]["h2_stream"].as_u64() == Some(e.leaked_streams)
                    && h["open_streams"].as_u64() == Some(e.open_streams)
            })
        })
    };
    let mut first = Relay::start(&bin, 18482, &["-scenario", "never_read,multiplex,correct"]);
    let mut cmd = Command::new(tracer_bin());
    cmd.args(["run", "--json", "--comm", &comm])
        .args(grace_args());
    let mut tracer = Proc::spawn("tracer", cmd);
    let mut snapshots = Snapshots { seen: Vec::new() };
    wait_attached(&mut snapshots, &mut tracer, first.pid);
    first.go();
    snapshots.wait_for(
        &mut tracer,
        VERDICTS_WITHIN,
        "the first relay's streams",
        |s| h2_streams_exact(s, &first.expected),
    );
    first.proc.signal(libc::SIGKILL);
    let mut second = Relay::start(&bin, 18483, &["-scenario", "never_read,multiplex,correct"]);
    assert_ne!(first.pid, second.pid);
    // The first relay's streams went with it.
    snapshots.wait_for(
        &mut tracer,
        Duration::from_secs(20),
        "the first relay's streams gone",
        |s| {
            first
                .expected
                .iter()
                .filter(|e| e.proto == "h2")
                .all(|e| host(s, &e.host).is_none_or(|h| h["open_streams"] == 0))
        },
    );
    wait_attached(&mut snapshots, &mut tracer, second.pid);
    second.go();
    snapshots.wait_for(
        &mut tracer,
        VERDICTS_WITHIN,
        "the restarted relay's streams",
        |s| h2_streams_exact(s, &second.expected),
    );
    assert!(second.alive(), "the restarted relay died under the probes");
    drop(tracer);
}
