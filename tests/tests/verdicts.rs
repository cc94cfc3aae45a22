//! End-to-end: the real tracer, real eBPF, the Go fixture relay. One test at a time
//! (`--test-threads=1`): each loads the programs and runs its own processes.
#![allow(clippy::unwrap_used)]

use std::{process::Command, thread, time::Duration};

use tracer_e2e::*;

const ROUNDS: u64 = 3;

/// Long enough after the last round for every grace to pass (the upstream's idle timeout
/// of 1s, then the longest grace of 4s, plus margin).
const SETTLE: Duration = Duration::from_secs(7);

fn assert_fixture_verdicts(s: &serde_json::Value, pre_existing: bool) {
    let ctx = summary(s);
    // 127.0.0.12 and ::1: early return on a non-200 status, body never closed -> CLOSE_WAIT.
    for ip in ["127.0.0.12", "::1"] {
        assert_eq!(
            count(s, ip, &["leaked"]),
            ROUNDS,
            "status leaks to {ip}\n{ctx}"
        );
        assert_eq!(count(s, ip, &["by_reason", "close_wait"]), ROUNDS, "{ctx}");
    }
    // 127.0.0.13: 1 MiB body never read nor closed -> unread bytes.
    assert_eq!(
        count(s, "127.0.0.13", &["leaked"]),
        ROUNDS,
        "large-body leaks\n{ctx}"
    );
    assert_eq!(
        count(s, "127.0.0.13", &["by_reason", "unread"]),
        ROUNDS,
        "{ctx}"
    );
    if pre_existing {
        // No read history for connections opened before the tracer: never `abandoned`.
        assert_eq!(count(s, "127.0.0.16", &["leaked"]), 0, "{ctx}");
    } else {
        // 127.0.0.16: SSE stream read partly, then abandoned.
        assert_eq!(
            count(s, "127.0.0.16", &["leaked"]),
            ROUNDS,
            "abandoned streams\n{ctx}"
        );
        assert_eq!(
            count(s, "127.0.0.16", &["by_reason", "abandoned"]),
            ROUNDS,
            "{ctx}"
        );
        // 127.0.0.14: closed without reading -> not leaked, counted as closed_unread.
        assert_eq!(
            count(s, "127.0.0.14", &["closed_unread_total"]),
            ROUNDS,
            "{ctx}"
        );
        assert_eq!(
            count(s, "127.0.0.14", &["connections_total"]),
            ROUNDS,
            "{ctx}"
        );
        // 127.0.0.11 (read and close) was used.
        assert!(count(s, "127.0.0.11", &["connections_total"]) >= 1, "{ctx}");
    }
    // Every healthy host must be in the snapshot with 0 leaks; an absent host is a failure.
    // Except, for connections opened before the tracer: `ok` and `eof` (pooled, closed by the
    // upstream's 1 s idle timeout) and `large-close` (closed at once) ended before it started,
    // so those hosts are rightly absent then; if present they must not leak.
    let absent_ok: &[&str] = if pre_existing {
        &["127.0.0.11", "127.0.0.14", "127.0.0.15"]
    } else {
        &[]
    };
    for healthy in ["127.0.0.11", "127.0.0.14", "127.0.0.15", "127.0.0.17"] {
        let leaked = if absent_ok.contains(&healthy) {
            count_if_present(s, healthy, &["leaked"]).unwrap_or(0)
        } else {
            count(s, healthy, &["leaked"])
        };
        assert_eq!(leaked, 0, "{healthy} must not leak\n{ctx}");
    }
    // The long SSE stream is open and actively read.
    assert_eq!(count(s, "127.0.0.17", &["open"]), 1, "{ctx}");
    let leaks = s["leaks"].as_array().unwrap();
    // Plus the TLS scenarios: a status leak to "api.openai.com", a large body to
    // "api.anthropic.com" (tests/tests/naming.rs checks their names).
    let expected = if pre_existing { 5 * ROUNDS } else { 6 * ROUNDS };
    assert_eq!(leaks.len() as u64, expected, "{ctx}");
    for leak in leaks {
        for field in [
            "pid",
            "fd",
            "local",
            "remote",
            "host",
            "state",
            "reason",
            "age_s",
            "idle_s",
            "unread_bytes",
            "bytes_read",
        ] {
            assert!(!leak[field].is_null(), "leak without {field}: {leak}");
        }
    }
}

/// unread_bytes must be what sock_diag (ss) reports for the same socket, FIN excluded.
fn assert_unread_matches_ss(s: &serde_json::Value, relay_pid: u32) {
    for ip in ["127.0.0.12", "::1", "127.0.0.13"] {
        let ss = ss_recv_q(relay_pid, ip);
        assert_eq!(
            ss.len() as u64,
            ROUNDS,
            "ss sees the relay's sockets to {ip}: {ss:?}"
        );
        for (local, recv_q) in ss {
            let leak = s["leaks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["local"] == local.as_str() && l["host"] == ip)
                .unwrap_or_else(|| panic!("no leak for {local} -> {ip} in {}", s["leaks"]));
            assert_eq!(
                leak["recv_q"].as_u64().unwrap(),
                recv_q,
                "Recv-Q of {local}: {leak}"
            );
            let fin = u64::from(leak["state"] == "CLOSE_WAIT");
            assert_eq!(
                leak["unread_bytes"].as_u64().unwrap(),
                recv_q - fin,
                "{leak}"
            );
        }
    }
    // The large bodies really are stuck in the kernel: well over one 4 KiB read each.
    for (_, recv_q) in ss_recv_q(relay_pid, "127.0.0.13") {
        assert!(
            recv_q > 50_000,
            "expected a large unread queue, got {recv_q}"
        );
    }
}

#[test]
fn fixture_verdicts_are_exact_and_untargeted_processes_are_ignored() {
    if !prerequisites_met() {
        return;
    }
    let port = 18201;
    let (_upstreams, mut relay) = upstreams_and_waiting_relay(port, ROUNDS as u32);
    let tracer = start_tracer(&quick_args(relay.pid()));
    // An unrelated, busy client of another upstream: must not show up at all.
    let busy = Proc::spawn(
        "busy client",
        relay_command(port, 20, &["-only", "busy", "-interval", "0"]),
    );
    relay.send_line("go");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(SETTLE);
    let relay_pid = relay.pid();
    let ss_before = (
        ss_recv_q(relay_pid, "127.0.0.12"),
        ss_recv_q(relay_pid, "127.0.0.13"),
    );
    let s = stop_tracer(tracer);
    drop(busy);

    assert_eq!(s["targets"], serde_json::json!([relay_pid]));
    assert_fixture_verdicts(&s, false);
    assert!(
        host(&s, "127.0.0.18").is_none(),
        "the untargeted busy client was tracked:\n{}",
        summary(&s)
    );
    for leak in s["leaks"].as_array().unwrap() {
        assert_eq!(
            leak["pid"].as_u64().unwrap(),
            u64::from(relay_pid),
            "{leak}"
        );
        assert_eq!(leak["origin"], "traced", "{leak}");
        assert!(leak["fd"].as_i64().unwrap() > 2, "{leak}");
    }
    // Nothing read the leaked sockets since, so the queues are as they were.
    assert_eq!(
        ss_before,
        (
            ss_recv_q(relay_pid, "127.0.0.12"),
            ss_recv_q(relay_pid, "127.0.0.13")
        )
    );
    assert_unread_matches_ss(&s, relay_pid);
}

#[test]
fn connections_opened_before_the_tracer_started_are_judged() {
    if !prerequisites_met() {
        return;
    }
    let port = 18202;
    let _upstreams = start_upstreams(port);
    let mut relay = Proc::spawn("relay", relay_command(port, ROUNDS as u32, &[]));
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    // Let the upstream's idle timeout put the status leaks into CLOSE_WAIT first.
    thread::sleep(Duration::from_secs(2));
    let mut args = grace_args();
    args.extend(["--pid".to_owned(), relay.pid().to_string()]);
    let tracer = start_tracer(&args);
    thread::sleep(Duration::from_secs(5));
    let s = stop_tracer(tracer);
    assert_fixture_verdicts(&s, true);
    for leak in s["leaks"].as_array().unwrap() {
        assert_eq!(leak["origin"], "pre_existing", "{leak}");
    }
    assert_unread_matches_ss(&s, relay.pid());
}

#[test]
fn processes_named_by_comm_are_followed_from_their_start() {
    if !prerequisites_met() {
        return;
    }
    let port = 18203;
    let _upstreams = start_upstreams(port);
    // A copy with its own name, so nothing else on the host matches.
    let dir = std::env::temp_dir().join(format!("tracer-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let named = dir.join("leakyrelay");
    std::fs::copy(fixture_bin(), &named).unwrap();
    let mut args = grace_args();
    args.extend(["--comm".to_owned(), "leakyrelay".to_owned()]);
    let tracer = start_tracer(&args);
    let mut cmd = relay_command(port, ROUNDS as u32, &[]);
    let mut relay_cmd = Command::new(&named);
    relay_cmd.args(cmd.get_args());
    cmd = relay_cmd;
    let mut relay = Proc::spawn("leakyrelay", cmd);
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(SETTLE);
    let s = stop_tracer(tracer);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        s["targets"],
        serde_json::json!([relay.pid()]),
        "{}",
        s["target_processes"]
    );
    assert_fixture_verdicts(&s, false);
}

#[test]
fn bad_targets_get_one_clear_line_and_the_right_exit_status() {
    if !prerequisites_met() {
        return;
    }
    // A pid that does not exist: usage error, exit 2.
    let out = Command::new(tracer_bin())
        .args(["run", "--pid", "999999999"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no process with pid 999999999"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // No target at all: clap's usage error, exit 2.
    let out = Command::new(tracer_bin()).args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Not root: exit 1 with the fix.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(tracer_bin())
        .args(["run", "--pid", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("run it with sudo"), "{err}");
}
