//! End-to-end: a relay behind an egress proxy (one-api's RELAY_PROXY). Every upstream socket
//! goes to the proxy; the first bytes are `CONNECT api.openai.com:PORT HTTP/1.1`, then TLS
//! inside the tunnel. The connections are named by the CONNECT target (and its provider), and
//! judged as they are without a proxy.
#![allow(clippy::unwrap_used)]

use std::{process::Command, thread, time::Duration};

use tracer_e2e::*;

const ROUNDS: u64 = 3;
const PROXY: &str = "127.0.0.30";

#[test]
fn connections_through_a_connect_proxy_are_named_by_their_target_and_judged_the_same() {
    if !prerequisites_met() {
        return;
    }
    let port = 18206;
    let _upstreams = start_upstreams(port);
    let proxy_addr = format!("{PROXY}:{}", port + 1);
    let mut cmd = Command::new(fixture_bin());
    cmd.args([
        "connect-proxy",
        "-listen",
        &proxy_addr,
        "-port",
        &port.to_string(),
    ]);
    let mut proxy = Proc::spawn("fixture connect-proxy", cmd);
    proxy.expect_line("READY", Duration::from_secs(10));
    let relay_cmd = relay_command(
        port,
        ROUNDS as u32,
        &[
            "-only",
            "tls-status,tls-large,h2-ok",
            "-proxy",
            &proxy_addr,
            "-start-on-stdin",
        ],
    );
    let mut relay = Proc::spawn("relay behind a proxy", relay_cmd);
    relay.expect_line("WAITING", Duration::from_secs(10));
    let tracer = start_tracer(&quick_args(relay.pid()));
    relay.send_line("go");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    // The upstream's 1 s idle timeout reaches the relay through the proxy as a FIN; then the
    // longest grace (4 s) and a margin.
    thread::sleep(Duration::from_secs(7));
    let s = stop_tracer(tracer);
    let ctx = summary(&s);

    // The same verdicts as without a proxy (tests/tests/verdicts.rs), under the CONNECT
    // targets' names and providers.
    assert_eq!(
        count(&s, "api.openai.com", &["by_reason", "close_wait"]),
        ROUNDS,
        "{ctx}"
    );
    assert_eq!(count(&s, "api.openai.com", &["leaked"]), ROUNDS, "{ctx}");
    assert_eq!(
        count(&s, "api.anthropic.com", &["by_reason", "unread"]),
        ROUNDS,
        "{ctx}"
    );
    assert_eq!(count(&s, "api.anthropic.com", &["leaked"]), ROUNDS, "{ctx}");
    assert_eq!(
        count(&s, "generativelanguage.googleapis.com", &["leaked"]),
        0,
        "{ctx}"
    );
    for (name, provider) in [
        ("api.openai.com", "openai"),
        ("api.anthropic.com", "anthropic"),
    ] {
        let h = host(&s, name).unwrap();
        assert_eq!(h["provider"], provider, "{ctx}");
        // Every socket went to the proxy.
        assert_eq!(
            h["remotes"],
            serde_json::json!([proxy_addr]),
            "{name} is reached through the proxy\n{ctx}"
        );
    }
    // Nothing is counted under the proxy's own address.
    assert!(host(&s, PROXY).is_none(), "{ctx}");
    assert_eq!(s["leaked_total"], 2 * ROUNDS, "{ctx}");
}
