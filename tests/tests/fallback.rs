//! End-to-end: the read path that needs neither kprobes nor Linux 6.3. Kernels before 6.3
//! (Debian 12's 6.1, Ubuntu 22.04's 5.15, RHEL 9's 5.14) have no `sock/sock_recv_length`, so
//! the tracer counts reads at the read syscalls' exits. `TRACER_READ_HOOK=syscalls` forces that
//! path here, and the fixture's verdicts must be exactly those of tests/tests/verdicts.rs.
#![allow(clippy::unwrap_used)]

use std::{process::Command, thread, time::Duration};

use serde_json::Value;
use tracer_e2e::*;

const ROUNDS: u64 = 3;

/// How long after the last round every grace has passed: the upstream's idle timeout of 1s,
/// then the longest grace of 4s, plus margin.
const SETTLE: Duration = Duration::from_secs(7);

/// Starts the tracer like `start_tracer`, with the read hook forced to the syscalls, and checks
/// that its hooks line (printed right after attaching, before "tracer: attached") says so.
fn start_tracer_reading_from_syscalls(args: &[String]) -> Proc {
    let mut cmd = Command::new(tracer_bin());
    cmd.arg("run")
        .arg("--json")
        .args(args)
        .env("TRACER_READ_HOOK", "syscalls");
    let mut tracer = Proc::spawn("tracer", cmd);
    // The whole read=... word: `read=sock/sock_recv_length` would not match.
    // `syscalls` forces every role that has a syscall path onto it (a kernel before 5.15),
    // so the connect, close and first-write syscall programs are tested here too.
    tracer.expect_stderr(
        "connect=syscalls/sys_enter_connect state=sock/inet_sock_set_state \
         read=syscalls/sys_exit_read close=syscalls/sys_enter_close \
         first_write=syscalls/sys_enter_write",
        Duration::from_secs(30),
    );
    tracer.expect_stderr("tracer: attached", Duration::from_secs(30));
    eprintln!(
        "tracer: hooks: ... read=syscalls/sys_exit_read ... (forced by TRACER_READ_HOOK=syscalls)"
    );
    tracer
}

/// The summary, plus every leak that kept a bare TLS-fixture address (127.0.0.2x) instead of
/// its name, with its origin: an unnamed one points at naming, not at the read path.
fn context(s: &Value) -> String {
    let unnamed: Vec<String> = s["leaks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l["host"]
                .as_str()
                .is_some_and(|h| h.starts_with("127.0.0.2"))
        })
        .map(|l| format!("unnamed TLS leak: {l}"))
        .collect();
    format!("{}{}", summary(s), unnamed.join("\n"))
}

fn assert_same_verdicts_as_with_sock_recv_length(s: &Value) {
    let ctx = context(s);
    // Early return on a non-200 status, body never closed: CLOSE_WAIT (plain, IPv6 and TLS).
    for host_name in ["127.0.0.12", "::1", "api.openai.com"] {
        assert_eq!(
            count(s, host_name, &["leaked"]),
            ROUNDS,
            "status leaks to {host_name}\n{ctx}"
        );
        assert_eq!(
            count(s, host_name, &["by_reason", "close_wait"]),
            ROUNDS,
            "{host_name}\n{ctx}"
        );
    }
    // A large body never read nor closed: unread bytes (plain and TLS).
    for host_name in ["127.0.0.13", "api.anthropic.com"] {
        assert_eq!(
            count(s, host_name, &["leaked"]),
            ROUNDS,
            "large-body leaks to {host_name}\n{ctx}"
        );
        assert_eq!(
            count(s, host_name, &["by_reason", "unread"]),
            ROUNDS,
            "{host_name}\n{ctx}"
        );
    }
    // An SSE stream read partly, then dropped: only the read counters can tell, so this is
    // the verdict that proves the syscall path counts reads and their return values.
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
    // Closed without reading: not leaked, counted as closed_unread.
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
    for healthy in ["127.0.0.11", "127.0.0.14", "127.0.0.15", "127.0.0.17"] {
        assert_eq!(
            count(s, healthy, &["leaked"]),
            0,
            "{healthy} must not leak\n{ctx}"
        );
    }
    // The long SSE stream is open and actively read: its reads are seen too.
    assert_eq!(count(s, "127.0.0.17", &["open"]), 1, "{ctx}");
    let leaks = s["leaks"].as_array().unwrap();
    assert_eq!(leaks.len() as u64, 6 * ROUNDS, "{ctx}");
    for leak in leaks {
        assert_eq!(leak["origin"], "traced", "{leak}");
        assert!(
            leak["reads"].as_u64().unwrap() >= 1,
            "a leak with no read counted: {leak}"
        );
        if leak["reason"] != "close_wait" {
            assert!(
                leak["bytes_read"].as_u64().unwrap() > 0,
                "response bytes read: {leak}"
            );
        }
    }
    assert!(
        s["kernel"]["reads_seen"].as_u64().unwrap() > 0,
        "{}",
        s["kernel"]
    );
}

#[test]
fn syscall_read_path_gives_the_same_verdicts() {
    if !prerequisites_met() {
        return;
    }
    let port = 18221;
    let (_upstreams, mut relay) = upstreams_and_waiting_relay(port, ROUNDS as u32);
    let args = quick_args(relay.pid());
    let tracer = start_tracer_reading_from_syscalls(&args);
    relay.send_line("go");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(SETTLE);
    let s = stop_tracer(tracer);
    assert_eq!(s["targets"], serde_json::json!([relay.pid()]));
    assert_same_verdicts_as_with_sock_recv_length(&s);
}

#[test]
fn an_unknown_read_hook_is_one_clear_line() {
    if !prerequisites_met() {
        return;
    }
    let out = Command::new(tracer_bin())
        .args([
            "run",
            "--pid",
            &std::process::id().to_string(),
            "--duration",
            "1s",
        ])
        .env("TRACER_READ_HOOK", "kprobe")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TRACER_READ_HOOK=kprobe is not a read hook"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
