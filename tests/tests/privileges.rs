//! End-to-end: the tracer runs as an unprivileged user holding only the capabilities the
//! README lists (CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE), and says which
//! one is missing otherwise.
#![allow(clippy::unwrap_used)]

use std::{process::Command, thread, time::Duration};

use serde_json::Value;
use tracer_e2e::*;

const ROUNDS: u64 = 2;
const CAPS: &str = "+bpf,+perfmon,+dac_read_search,+sys_ptrace";

/// The tracer as user nobody with exactly `caps` (setpriv, util-linux).
fn as_nobody_with(caps: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(tracer_bin());
    cmd
}

#[test]
fn the_documented_capabilities_are_enough() {
    if !prerequisites_met() {
        return;
    }
    let (_upstreams, mut relay) = upstreams_and_waiting_relay(18231, ROUNDS as u32);
    let mut cmd = as_nobody_with(CAPS);
    cmd.args(["run", "--json"]).args(quick_args(relay.pid()));
    let mut tracer = Proc::spawn("tracer (capabilities only)", cmd);
    tracer.expect_stderr("tracer: attached", Duration::from_secs(30));
    relay.send_line("go");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(Duration::from_secs(7));
    tracer.signal(libc::SIGINT);
    let (code, lines, err) = tracer.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    let s: Value =
        serde_json::from_str(lines.iter().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(
        count(&s, "127.0.0.12", &["by_reason", "close_wait"]),
        ROUNDS,
        "{}",
        summary(&s)
    );
    assert_eq!(
        count(&s, "127.0.0.13", &["by_reason", "unread"]),
        ROUNDS,
        "{}",
        summary(&s)
    );
    assert_eq!(
        count(&s, "127.0.0.16", &["by_reason", "abandoned"]),
        ROUNDS,
        "{}",
        summary(&s)
    );
    assert_eq!(
        count(&s, "api.openai.com", &["by_reason", "close_wait"]),
        ROUNDS,
        "{}",
        summary(&s)
    );
}

#[test]
fn a_missing_capability_is_named() {
    if !prerequisites_met() {
        return;
    }
    let out = as_nobody_with("+perfmon,+dac_read_search,+sys_ptrace")
        .args(["run", "--pid", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("lacks CAP_BPF"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
