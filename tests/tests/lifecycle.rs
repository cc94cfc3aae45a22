//! End-to-end: the tracer's own lifecycle — it leaves nothing in the kernel on any exit, and
//! it follows targets that exit and restart.
#![allow(clippy::unwrap_used)]

use std::{collections::HashSet, process::Command, thread, time::Duration};

use serde_json::Value;
use tracer_e2e::*;

/// Ids of the BPF programs or maps loaded right now (`bpftool -j prog|map show`).
fn bpf_ids(kind: &str) -> HashSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .unwrap_or_else(|e| panic!("running bpftool (apt-get install bpftool): {e}"));
    assert!(
        out.status.success(),
        "bpftool {kind} show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

fn prog_names(ids: &HashSet<u64>) -> HashSet<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|p| ids.contains(&p["id"].as_u64().unwrap()))
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_exit_path_leaves_no_program_or_map_loaded() {
    if !prerequisites_met() {
        return;
    }
    for (signal, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGKILL, "SIGKILL"),
    ] {
        let (progs_before, maps_before) = (bpf_ids("prog"), bpf_ids("map"));
        // A name nothing has: the tracer attaches and waits.
        let tracer = start_tracer(&["--comm".to_owned(), "no-such-relay".to_owned()]);
        let ours: HashSet<u64> = bpf_ids("prog").difference(&progs_before).copied().collect();
        let our_maps: HashSet<u64> = bpf_ids("map").difference(&maps_before).copied().collect();
        let names = prog_names(&ours);
        assert!(
            names.contains("sock_recv"),
            "{name}: sock_recv not loaded; ours: {names:?}"
        );
        // The state changes as a raw tracepoint, or the classic one where BTF lacks its needs.
        assert!(
            names.contains("sock_set_state_raw") || names.contains("sock_set_state"),
            "{name}: no state program loaded; ours: {names:?}"
        );
        // First bytes at tcp_sendmsg_locked (Linux 6.16+) or at the write syscalls.
        assert!(
            names.contains("sock_send") || names.contains("enter_write"),
            "{name}: no first-write program loaded; ours: {names:?}"
        );
        assert!(
            our_maps.len() >= 8,
            "{name}: expected our maps to be loaded, got {our_maps:?}"
        );
        tracer.signal(signal);
        let (code, _, err) = tracer.wait(Duration::from_secs(20));
        if signal == libc::SIGKILL {
            assert_eq!(code, None, "killed by a signal");
        } else {
            assert_eq!(code, Some(0), "{name}: exit status; stderr:\n{err}");
        }
        // The kernel releases programs and maps when the last fd closes; give it a moment.
        let mut left = (HashSet::new(), HashSet::new());
        for _ in 0..50 {
            left = (
                bpf_ids("prog")
                    .intersection(&ours)
                    .copied()
                    .collect::<HashSet<_>>(),
                bpf_ids("map")
                    .intersection(&our_maps)
                    .copied()
                    .collect::<HashSet<_>>(),
            );
            if left.0.is_empty() && left.1.is_empty() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        assert!(
            left.0.is_empty(),
            "{name}: programs still loaded: {:?}",
            prog_names(&left.0)
        );
        assert!(left.1.is_empty(), "{name}: maps still loaded: {:?}", left.1);
    }
}

/// Reads snapshots until one satisfies `want` (or panics after `timeout`).
fn wait_for_snapshot(
    tracer: &mut Proc,
    timeout: Duration,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = Value::Null;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Some(line) = tracer.next_line(left) else {
            break;
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if want(&v) {
            return v;
        }
        last = v;
    }
    panic!(
        "no snapshot with {what} within {timeout:?}; the last one:\n{}",
        summary(&last)
    );
}

#[test]
fn a_named_target_that_exits_leaves_the_table_and_its_restart_is_followed() {
    if !prerequisites_met() {
        return;
    }
    let port = 18204;
    let _upstreams = start_upstreams(port);
    let dir = std::env::temp_dir().join(format!("tracer-e2e-life-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let named = dir.join("restartrelay");
    std::fs::copy(fixture_bin(), &named).unwrap();
    let relay_cmd = || {
        let mut cmd = Command::new(&named);
        cmd.args(relay_command(port, 2, &[]).get_args());
        cmd
    };
    let mut args: Vec<String> = [
        "--close-wait-grace",
        "2s",
        "--unread-grace",
        "3s",
        "--abandon-grace",
        "4s",
        "--interval",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--comm".to_owned(), "restartrelay".to_owned()]);
    let mut tracer = start_tracer(&args);

    let mut first = Proc::spawn("restartrelay", relay_cmd());
    first.expect_line("ROUNDS DONE", Duration::from_secs(60));
    let first_pid = first.pid();
    let s = wait_for_snapshot(
        &mut tracer,
        Duration::from_secs(20),
        "2 status leaks of the first process",
        |s| count_if_present(s, "127.0.0.12", &["by_reason", "close_wait"]) == Some(2),
    );
    assert_eq!(s["targets"], serde_json::json!([first_pid]));

    // The relay dies: its connections go with it, and the tracer keeps waiting for the name.
    first.signal(libc::SIGKILL);
    let _ = first.wait(Duration::from_secs(10));
    let s = wait_for_snapshot(
        &mut tracer,
        Duration::from_secs(20),
        "no targets and nothing open",
        |s| s["targets"] == serde_json::json!([]) && s["open_total"] == 0,
    );
    assert_eq!(s["leaked_total"], 0, "{}", summary(&s));

    // It restarts under the same name: followed from its first connection, counted afresh.
    let mut second = Proc::spawn("restartrelay", relay_cmd());
    second.expect_line("ROUNDS DONE", Duration::from_secs(60));
    let second_pid = second.pid();
    let s = wait_for_snapshot(
        &mut tracer,
        Duration::from_secs(20),
        "2 status leaks of the restarted process",
        |s| {
            s["targets"] == serde_json::json!([second_pid])
                && count_if_present(s, "127.0.0.12", &["by_reason", "close_wait"]) == Some(2)
        },
    );
    assert!(
        s["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["pid"] == second_pid),
        "leaks of the dead process remain: {}",
        s["leaks"]
    );
    let final_snapshot = stop_tracer(tracer);
    assert_eq!(
        count(&final_snapshot, "127.0.0.12", &["connections_total"]),
        4,
        "{}",
        summary(&final_snapshot)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tracing_stops_when_every_pid_target_has_exited() {
    if !prerequisites_met() {
        return;
    }
    let mut sleeper = Proc::spawn("sleep", {
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    });
    let tracer = start_tracer(&["--pid".to_owned(), sleeper.pid().to_string()]);
    sleeper.signal(libc::SIGKILL);
    let _ = sleeper.next_line(Duration::from_millis(10));
    let (code, lines, err) = tracer.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("every target process has exited"), "{err}");
    assert!(
        lines.iter().any(|l| l.starts_with('{')),
        "a final snapshot is printed"
    );
}
