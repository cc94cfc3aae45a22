//! Harness for the end-to-end tests: runs the Go fixture (fake upstreams and a leaky relay)
//! and the real tracer binary, and reads the tracer's JSON snapshots.
//!
//! The binaries come from `TRACER_BIN` and `FIXTURE_BIN` (set by `cargo xtask test`). The
//! tests need root and real eBPF: under CI (`CI` set to anything but empty, `false` or `0`) a
//! missing prerequisite fails the test; elsewhere the test is skipped with the reason printed.
#![allow(clippy::unwrap_used)] // test harness: a panic with a message is the failure report

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod soak;

/// Whether a CI system runs us: `CI` set to anything but empty, `false` or `0` (CI systems
/// say `true`, `1` or their own name). Tests then never skip. Same rule as xtask's `in_ci`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| ci_value_means_ci(&v))
}

fn ci_value_means_ci(value: &str) -> bool {
    let v = value.trim();
    !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
}

/// Whether this test can run here. Prints why not, or panics in CI.
pub fn prerequisites_met() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (run: sudo -E cargo xtask test)".to_owned());
    }
    for var in ["TRACER_BIN", "FIXTURE_BIN"] {
        match std::env::var(var) {
            Ok(path) if PathBuf::from(&path).is_file() => {}
            _ => missing.push(format!(
                "{var} pointing at a built binary (run: cargo xtask test)"
            )),
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("end-to-end test needs {}", missing.join(" and "));
    if in_ci() {
        panic!("{reason}; under CI=true this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

pub fn tracer_bin() -> PathBuf {
    PathBuf::from(std::env::var("TRACER_BIN").unwrap())
}

pub fn fixture_bin() -> PathBuf {
    PathBuf::from(std::env::var("FIXTURE_BIN").unwrap())
}

/// tests/goscenarios built stripped by the matrix's Go `minor` ("1.27"):
/// `$GO_SCENARIOS_DIR/goscenarios-1.27.N` (set by `cargo xtask test`). When it is missing,
/// prints why and returns `None`, or panics under CI.
pub fn go_scenarios_bin(minor: &str) -> Option<PathBuf> {
    let found = std::env::var("GO_SCENARIOS_DIR").ok().and_then(|dir| {
        let prefix = format!("goscenarios-{minor}.");
        std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(&prefix) && !name.ends_with(".built-from")
            })
    });
    if found.is_none() {
        let reason = format!(
            "end-to-end test needs GO_SCENARIOS_DIR with goscenarios-{minor}.* (tests/goscenarios built by Go {minor}; run: cargo xtask test)"
        );
        if in_ci() {
            panic!("{reason}; under CI=true this is a failure, not a skip");
        }
        eprintln!("SKIPPED: {reason}");
    }
    found
}

/// A child process killed and reaped on drop, with its stdout lines on a channel.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr_lines: mpsc::Receiver<String>,
}

fn pump<R: std::io::Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines: pump(stdout),
            stderr_lines: pump(stderr),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_so_far(&self) -> String {
        self.stderr_lines.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Waits for a stdout line equal to `want`. Fails at once, with the stderr, if the process
    /// ends first (the fixture relay exits 1 when any of its requests failed).
    pub fn expect_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim() == want => return,
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string());
                    panic!(
                        "{} ended ({}) before printing {want:?}; its stderr:\n{}",
                        self.name,
                        status.unwrap_or_else(|e| e.to_string()),
                        self.stderr_so_far()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        panic!(
            "{} did not print {want:?} within {timeout:?}; its stderr:\n{}",
            self.name,
            self.stderr_so_far()
        );
    }

    /// The next stdout line, if one comes within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for a stderr line containing `want`.
    pub fn expect_stderr(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "{} did not print {want:?} on stderr within {timeout:?}; it printed:\n{}",
            self.name,
            seen.join("\n")
        );
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with our own child's pid and a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit; returns (exit code, every stdout line, stderr).
    pub fn wait(mut self, timeout: Duration) -> (Option<i32>, Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pump threads end at EOF; give them a moment to hand over the last lines.
                thread::sleep(Duration::from_millis(100));
                let out: Vec<String> = self.lines.try_iter().collect();
                let err = self.stderr_so_far();
                return (status.code(), out, err);
            }
            if Instant::now() > deadline {
                let err = self.stderr_so_far();
                panic!(
                    "{} did not exit within {timeout:?}; stderr:\n{err}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fake providers on 127.0.0.11..18 at `port`.
pub fn start_upstreams(port: u16) -> Proc {
    let mut cmd = Command::new(fixture_bin());
    cmd.args(upstream_args(port));
    let mut p = Proc::spawn("fixture upstream", cmd);
    p.expect_line("READY", Duration::from_secs(10));
    p
}

/// The fixture's arguments for the fake providers on `port` (1 s idle timeout).
pub fn upstream_args(port: u16) -> Vec<String> {
    [
        "upstream",
        "-port",
        &port.to_string(),
        "-idle-timeout",
        "1s",
    ]
    .map(String::from)
    .to_vec()
}

/// The leaky relay: `rounds` rounds of every scenario, then it holds its connections.
pub fn relay_command(port: u16, rounds: u32, extra: &[&str]) -> Command {
    let mut cmd = Command::new(fixture_bin());
    cmd.args([
        "relay",
        "-port",
        &port.to_string(),
        "-rounds",
        &rounds.to_string(),
    ]);
    cmd.args(["-interval", "200ms", "-hold", "5m"]);
    cmd.args(extra);
    cmd
}

/// Short graces so a test is quick (the defaults are 5s, 10s and 30s) and a 1s interval: the
/// arguments every fixture test gives the tracer, before its targets.
pub fn grace_args() -> Vec<String> {
    [
        "--close-wait-grace",
        "2s",
        "--unread-grace",
        "3s",
        "--abandon-grace",
        "4s",
        "--interval",
        "1s",
    ]
    .map(String::from)
    .to_vec()
}

/// `grace_args` and `--pid pid`.
pub fn quick_args(pid: u32) -> Vec<String> {
    let mut args = grace_args();
    args.extend(["--pid".to_owned(), pid.to_string()]);
    args
}

/// The fake providers on `port` and a relay waiting on its stdin for "go" (so the tracer can
/// attach before the first request).
pub fn upstreams_and_waiting_relay(port: u16, rounds: u32) -> (Proc, Proc) {
    let upstreams = start_upstreams(port);
    let mut relay = Proc::spawn("relay", relay_command(port, rounds, &["-start-on-stdin"]));
    relay.expect_line("WAITING", Duration::from_secs(10));
    (upstreams, relay)
}

/// Starts the tracer in JSON mode and waits until it has attached.
pub fn start_tracer(args: &[String]) -> Proc {
    let mut cmd = Command::new(tracer_bin());
    cmd.arg("run").arg("--json").args(args);
    let mut p = Proc::spawn("tracer", cmd);
    p.expect_stderr("tracer: attached", Duration::from_secs(30));
    p
}

/// Stops the tracer with SIGINT and returns its final snapshot.
pub fn stop_tracer(tracer: Proc) -> Value {
    let mut all = stop_tracer_all(tracer);
    all.pop().unwrap()
}

/// Stops the tracer with SIGINT and returns every snapshot it printed, the final one last
/// (never empty).
pub fn stop_tracer_all(tracer: Proc) -> Vec<Value> {
    tracer.signal(libc::SIGINT);
    let (code, lines, err) = tracer.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "tracer exit status; stderr:\n{err}");
    let snapshots: Vec<Value> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}"));
            assert_eq!(v["type"], "snapshot", "{l}");
            v
        })
        .collect();
    assert!(
        !snapshots.is_empty(),
        "the tracer printed no snapshot; stderr:\n{err}"
    );
    snapshots
}

/// Checks hosts that must never leak, at every snapshot: once a host has appeared it must be
/// in every later snapshot with 0 leaked (and no entry in `leaks`), and it must be in the last
/// one. So a host the tracer never saw, or lost, fails rather than counting as healthy.
pub fn assert_healthy_throughout(snapshots: &[Value], healthy: &[&str]) {
    let last = snapshots.last().expect("no snapshots to check");
    for ip in healthy {
        let mut seen = false;
        for (i, s) in snapshots.iter().enumerate() {
            let Some(h) = host(s, ip) else {
                assert!(
                    !seen,
                    "healthy host {ip} disappeared at snapshot {i} of {}:\n{}",
                    snapshots.len(),
                    summary(s)
                );
                continue;
            };
            seen = true;
            assert_eq!(
                h["leaked"].as_u64(),
                Some(0),
                "healthy host {ip} has leaks at snapshot {i} of {} ({}): {}\n{}",
                snapshots.len(),
                s["time"],
                s["leaks"],
                summary(s)
            );
            let listed: Vec<&Value> = s["leaks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l["host"] == *ip)
                .collect();
            assert!(listed.is_empty(), "{ip} listed as leaked: {listed:?}");
        }
        assert!(
            host(last, ip).is_some(),
            "healthy host {ip} is missing from the final snapshot (never seen, so never judged):\n{}",
            summary(last)
        );
    }
}

/// The `hosts` entry for `ip`, if any.
pub fn host<'a>(snapshot: &'a Value, ip: &str) -> Option<&'a Value> {
    snapshot["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["host"] == ip)
}

/// Reads a numeric field of a host entry. A host absent from the snapshot fails: the tracer
/// never saw it, which is not the same as "0 leaks" (see `count_if_present`).
pub fn count(snapshot: &Value, ip: &str, path: &[&str]) -> u64 {
    count_if_present(snapshot, ip, path).unwrap_or_else(|| {
        panic!(
            "host {ip} is not in the snapshot (the tracer never saw it):\n{}",
            summary(snapshot)
        )
    })
}

/// Reads a numeric field of a host entry; `None` when the host is absent. For waiting until
/// a host shows up, and for hosts whose connections may all have ended before tracing began.
pub fn count_if_present(snapshot: &Value, ip: &str, path: &[&str]) -> Option<u64> {
    let mut v = host(snapshot, ip)?;
    for key in path {
        v = &v[*key];
    }
    Some(
        v.as_u64()
            .unwrap_or_else(|| panic!("{ip} {path:?} is not a number in {snapshot}")),
    )
}

/// The relay's sockets to `ip` as `ss` reports them: (state, local address, Recv-Q).
pub fn ss_sockets(pid: u32, ip: &str) -> Vec<(String, String, u64)> {
    // ss wants IPv6 addresses in brackets.
    let dst = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let out = Command::new("ss")
        .args(["-tnpH", "state", "all", "dst", &dst])
        .output()
        .unwrap_or_else(|e| panic!("running ss (apt-get install iproute2): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.contains(&format!("pid={pid},"))) {
        // State Recv-Q Send-Q Local Peer Process
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 5 {
            rows.push((
                cols[0].to_owned(),
                cols[3].to_owned(),
                cols[1].parse().unwrap(),
            ));
        }
    }
    rows.sort();
    rows
}

/// Recv-Q per local address of the relay's sockets to `ip`, as `ss` reports them.
pub fn ss_recv_q(pid: u32, ip: &str) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = ss_sockets(pid, ip)
        .into_iter()
        .map(|(_, local, recv_q)| (local, recv_q))
        .collect();
    rows.sort();
    rows
}

/// Prints a compact per-host summary, so a failing run shows what the tracer saw.
pub fn summary(snapshot: &Value) -> String {
    let mut s = String::new();
    for h in snapshot["hosts"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "{} open={} leaked={} {} closed_unread={} total={}\n",
            h["host"],
            h["open"],
            h["leaked"],
            h["by_reason"],
            h["closed_unread_total"],
            h["connections_total"]
        ));
    }
    // What else a failure needs to be read: lost events, the targets, the hooks.
    s.push_str(&format!(
        "kernel={} targets={} hooks={}\n",
        snapshot["kernel"], snapshot["target_processes"], snapshot["hooks"]
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn any_ci_value_but_empty_false_or_0_means_ci() {
        for v in ["true", "1", "yes", "TRUE", "github-actions"] {
            assert!(ci_value_means_ci(v), "{v}");
        }
        for v in ["", " ", "0", "false", "False"] {
            assert!(!ci_value_means_ci(v), "{v:?}");
        }
    }

    fn snap(hosts: serde_json::Value) -> Value {
        json!({"type": "snapshot", "hosts": hosts, "leaks": []})
    }

    #[test]
    #[should_panic(expected = "is not in the snapshot")]
    fn an_absent_host_is_not_counted_as_zero() {
        count(&snap(json!([])), "127.0.0.11", &["leaked"]);
    }

    #[test]
    fn healthy_hosts_may_appear_late_but_never_leak_or_vanish() {
        let ok = json!({"host": "h", "leaked": 0});
        assert_healthy_throughout(&[snap(json!([])), snap(json!([ok]))], &["h"]);
        let cases = [
            vec![snap(json!([])), snap(json!([]))],
            vec![snap(json!([ok])), snap(json!([]))],
            vec![snap(json!([{"host": "h", "leaked": 1}])), snap(json!([ok]))],
        ];
        for case in cases {
            let failed = std::panic::catch_unwind(|| assert_healthy_throughout(&case, &["h"]));
            assert!(failed.is_err(), "{case:?} passed");
        }
    }
}
