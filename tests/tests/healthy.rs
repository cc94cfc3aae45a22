//! End-to-end: healthy relays that look slow must never be called leaked, at any snapshot.
//! Slow drains (after the upstream's FIN and while ESTABLISHED), long waits (headers, SSE
//! silences), idle pools with a provider-like idle timeout, and tens of hosts at once with
//! exact counts. Real eBPF, the Go fixture (tests/fixture/README.md, "Healthy but slow").
//! One test at a time (`--test-threads=1`).
#![allow(clippy::unwrap_used)]

use std::{
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_e2e::*;

/// Every grace in these tests. The fixture's drains read every 300 ms for about 7 s (more than
/// two graces), and its long waits are 8 s (more than every grace).
const GRACE: &str = "3s";

fn args(pid: u32) -> Vec<String> {
    [
        "--close-wait-grace",
        GRACE,
        "--unread-grace",
        GRACE,
        "--abandon-grace",
        GRACE,
        "--interval",
        "1s",
        "--pid",
        &pid.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// After the relay's rounds, long enough for any grace to pass on what is left (a grace, a
/// sample and a margin): a connection left behind would be judged in these snapshots.
const AFTER: Duration = Duration::from_secs(5);

/// Upstreams, and a relay running `only` once (its scenarios at the same time, `rounds` rounds
/// `interval` apart) with the tracer attached before its first request.
fn start(port: u16, only: &str, rounds: u32, interval: &str) -> (Proc, Proc, Proc) {
    let upstreams = start_upstreams(port);
    let mut relay = Proc::spawn(
        "relay",
        relay_command(
            port,
            rounds,
            &[
                "-only",
                only,
                "-parallel",
                "-start-on-stdin",
                "-interval",
                interval,
            ],
        ),
    );
    relay.expect_line("WAITING", Duration::from_secs(10));
    let tracer = start_tracer(&args(relay.pid()));
    relay.send_line("go");
    (upstreams, relay, tracer)
}

/// Polls `ss` every 100 ms until the relay prints ROUNDS DONE (within `timeout`), and returns
/// every (host, state, Recv-Q) it saw among the relay's sockets to `ips`.
fn watch_until_done(
    relay: &mut Proc,
    ips: &[&str],
    timeout: Duration,
) -> Vec<(String, String, u64)> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        for ip in ips {
            for (state, _, recv_q) in ss_sockets(relay.pid(), ip) {
                seen.push((ip.to_string(), state, recv_q));
            }
        }
        match relay.next_line(Duration::from_millis(100)) {
            Some(line) if line.trim() == "ROUNDS DONE" => return seen,
            Some(_) => {}
            None => assert!(
                Instant::now() < deadline,
                "the relay did not finish its rounds within {timeout:?}"
            ),
        }
    }
}

/// How many snapshots show `ip` with a connection open: the verdicts made while it was in use.
fn snapshots_with_open(snapshots: &[Value], ip: &str) -> usize {
    snapshots
        .iter()
        .filter(|s| count_if_present(s, ip, &["open"]).is_some_and(|n| n > 0))
        .count()
}

#[test]
fn slow_drains_after_the_fin_and_while_established_are_not_leaks() {
    if !prerequisites_met() {
        return;
    }
    let (fin, estab) = ("127.0.0.41", "127.0.0.42");
    let (_upstreams, mut relay, tracer) = start(18251, "drain-fin,drain-estab", 1, "0s");
    let seen = watch_until_done(&mut relay, &[fin, estab], Duration::from_secs(40));
    thread::sleep(AFTER);
    let snapshots = stop_tracer_all(tracer);
    let last = snapshots.last().unwrap();
    let ctx = summary(last);

    // The scenarios ran as described: a CLOSE_WAIT socket with body still queued (more than
    // the FIN's 1), and an ESTABLISHED one with body queued.
    assert!(
        seen.iter()
            .any(|(ip, st, q)| ip == fin && st == "CLOSE-WAIT" && *q > 1),
        "never saw the drain-fin socket in CLOSE_WAIT with data queued: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(ip, st, q)| ip == estab && st == "ESTAB" && *q > 0),
        "never saw the drain-estab socket ESTABLISHED with data queued: {seen:?}"
    );
    // Judged while draining, well past a grace (the drains take about 7 s; 1 s snapshots).
    for ip in [fin, estab] {
        let n = snapshots_with_open(&snapshots, ip);
        assert!(n >= 5, "only {n} snapshots saw {ip} open\n{ctx}");
    }
    assert_healthy_throughout(&snapshots, &[fin, estab]);
    // Drained to the end: the Connection: close one was closed, the keep-alive one pooled.
    assert_eq!(count(last, fin, &["connections_total"]), 1, "{ctx}");
    assert_eq!(count(last, fin, &["open"]), 0, "{ctx}");
    assert_eq!(count(last, fin, &["closed_unread_total"]), 0, "{ctx}");
    assert_eq!(count(last, estab, &["connections_total"]), 1, "{ctx}");
    assert_eq!(count(last, estab, &["open"]), 1, "{ctx}");
}

#[test]
fn long_waits_for_headers_and_sse_silences_are_not_leaks() {
    if !prerequisites_met() {
        return;
    }
    let (headers, sse) = ("127.0.0.43", "127.0.0.44");
    let (_upstreams, mut relay, tracer) = start(18252, "slow-headers,sse-silent", 1, "0s");
    // The SSE stream: an event, 8 s of silence, an event, 8 s, an event: about 16 s.
    relay.expect_line("ROUNDS DONE", Duration::from_secs(40));
    thread::sleep(AFTER);
    let snapshots = stop_tracer_all(tracer);
    let last = snapshots.last().unwrap();
    let ctx = summary(last);
    // Judged through the waits: headers for 8 s, the stream for 16 s.
    let n = snapshots_with_open(&snapshots, headers);
    assert!(n >= 6, "only {n} snapshots saw {headers} waiting\n{ctx}");
    let n = snapshots_with_open(&snapshots, sse);
    assert!(
        n >= 12,
        "only {n} snapshots saw the stream {sse} open\n{ctx}"
    );
    assert_healthy_throughout(&snapshots, &[headers, sse]);
    for ip in [headers, sse] {
        assert_eq!(count(last, ip, &["connections_total"]), 1, "{ctx}");
    }
}

#[test]
fn idle_pooled_connections_held_through_the_verdicts_are_not_leaks() {
    if !prerequisites_met() {
        return;
    }
    let pool = "127.0.0.45";
    // Two rounds of 2 concurrent requests, 8 s apart (more than every grace): the upstream
    // keeps connections for minutes, so round 2 reuses the pooled connections.
    let (_upstreams, mut relay, tracer) = start(18253, "idle-pool", 2, "8s");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(40));
    thread::sleep(AFTER);
    let snapshots = stop_tracer_all(tracer);
    let last = snapshots.last().unwrap();
    let ctx = summary(last);
    let sockets = ss_sockets(relay.pid(), pool);
    let ctx = format!("{ctx}relay's sockets to {pool} now: {sockets:?}");
    assert_healthy_throughout(&snapshots, &[pool]);
    let n = snapshots_with_open(&snapshots, pool);
    assert!(n >= 10, "only {n} snapshots saw the pool\n{ctx}");
    // Go pools a connection only when its request's write is confirmed within 50 ms of the
    // response's end (transport.go, maxWriteWaitBeforeConnReuse): on a loaded machine it may
    // close one instead (healthy too), and round 2 dials anew. Usually 2 and 2.
    let idle = sockets
        .iter()
        .filter(|(state, _, _)| state == "ESTAB")
        .count() as u64;
    assert!(
        (1..=2).contains(&idle) && idle == sockets.len() as u64,
        "idle pooled connections\n{ctx}"
    );
    assert_eq!(count(last, pool, &["open"]), idle, "{ctx}");
    let total = count(last, pool, &["connections_total"]);
    assert!((2..=4).contains(&total), "{total} connections\n{ctx}");
}

/// What the fixture's "many" scenario sends to host i (tests/fixture/relay.go, `manyPlan`):
/// (correct requests, status leaks, large unread leaks).
fn many_plan(i: u64) -> (u64, u64, u64) {
    (2, i % 3, u64::from(i.is_multiple_of(5)))
}

const MANY_HOSTS: u64 = 30;

fn many_host(i: u64) -> String {
    format!("127.0.0.{}", 101 + i)
}

#[test]
fn tens_of_hosts_at_once_get_exact_counts_per_host() {
    if !prerequisites_met() {
        return;
    }
    let (_upstreams, mut relay, tracer) = start(18254, "many", 1, "0s");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(40));
    // The status leaks reach CLOSE_WAIT after the upstream's 1 s idle timeout, then a grace.
    thread::sleep(Duration::from_secs(1) + AFTER + Duration::from_secs(1));
    let snapshots = stop_tracer_all(tracer);
    let last = snapshots.last().unwrap();
    let ctx = summary(last);
    let mut healthy = Vec::new();
    let mut expected_leaks = 0;
    for i in 0..MANY_HOSTS {
        let ip = many_host(i);
        let (ok, status, large) = many_plan(i);
        expected_leaks += status + large;
        if status + large == 0 {
            healthy.push(ip.clone());
        }
        // Never more than the real leaks, nor another reason, at any snapshot.
        for s in &snapshots {
            let Some(h) = host(s, &ip) else { continue };
            let by = &h["by_reason"];
            assert!(
                by["close_wait"].as_u64().unwrap() <= status
                    && by["unread"].as_u64().unwrap() <= large
                    && by["abandoned"].as_u64().unwrap() == 0,
                "{ip} judged wrong at {}: {h}",
                s["time"]
            );
        }
        // And exact at the end. The requests race: a correct request may reuse a connection
        // another one pooled, and a leak may take the one a correct request finished on
        // (then no connection is the correct requests' own), so only the leaks' connections,
        // or one where there are none, are certain.
        let total = count(last, &ip, &["connections_total"]);
        assert!(
            ((status + large).max(1)..=ok + status + large).contains(&total),
            "{ip}: {total} connections\n{ctx}"
        );
        assert_eq!(
            count(last, &ip, &["by_reason", "close_wait"]),
            status,
            "{ip}\n{ctx}"
        );
        assert_eq!(
            count(last, &ip, &["by_reason", "unread"]),
            large,
            "{ip}\n{ctx}"
        );
        assert_eq!(count(last, &ip, &["leaked"]), status + large, "{ip}\n{ctx}");
    }
    assert!(
        healthy.len() >= 5,
        "the plan has healthy hosts: {healthy:?}"
    );
    let healthy: Vec<&str> = healthy.iter().map(String::as_str).collect();
    assert_healthy_throughout(&snapshots, &healthy);
    assert_eq!(last["leaked_total"].as_u64(), Some(expected_leaks), "{ctx}");
    assert_eq!(
        last["leaks"].as_array().unwrap().len() as u64,
        expected_leaks,
        "{ctx}"
    );
}

/// A blocking client (tests/src/bin/blocking-client.rs, not a Go program) reading the SSE
/// stream with long silences: the `late` one is non-blocking through connect, as Go's sockets
/// are, and blocking from its first read.
fn blocking_client(port: u16, late: bool) -> Proc {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_blocking-client"));
    cmd.args([
        format!("127.0.0.44:{port}"),
        "/v1/chat/completions?scenario=sse-silent".to_string(),
    ]);
    if late {
        cmd.arg("--late");
    }
    let name = if late {
        "late blocking client"
    } else {
        "blocking client"
    };
    let mut p = Proc::spawn(name, cmd);
    p.expect_line("WAITING", Duration::from_secs(10));
    p
}

#[test]
fn readers_blocked_in_read_through_sse_silences_are_not_leaks() {
    if !prerequisites_met() {
        return;
    }
    let sse = "127.0.0.44";
    let port = 18255;
    let _upstreams = start_upstreams(port);
    let mut clients = [blocking_client(port, false), blocking_client(port, true)];
    let mut args = args(clients[0].pid());
    args.extend(["--pid".to_string(), clients[1].pid().to_string()]);
    let tracer = start_tracer(&args);
    for c in &mut clients {
        c.send_line("go");
    }
    // An event, 8 s of silence (more than the 3 s grace) in a blocked read, an event, 8 s, an
    // event: about 16 s.
    for c in &mut clients {
        c.expect_line("DONE", Duration::from_secs(40));
    }
    thread::sleep(AFTER);
    let snapshots = stop_tracer_all(tracer);
    let last = snapshots.last().unwrap();
    let ctx = summary(last);
    let both_open = snapshots
        .iter()
        .filter(|s| count_if_present(s, sse, &["open"]) == Some(2))
        .count();
    assert!(
        both_open >= 12,
        "only {both_open} snapshots saw both streams open\n{ctx}"
    );
    // The reads that wait are counted in progress: on the socket blocking from connect, and on
    // the one that turned blocking at its first read (mapped to its fd then).
    assert_healthy_throughout(&snapshots, &[sse]);
    assert_eq!(count(last, sse, &["connections_total"]), 2, "{ctx}");
    assert_eq!(count(last, sse, &["open"]), 0, "{ctx}");
}
