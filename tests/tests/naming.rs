//! End-to-end: connections are named by their TLS server_name (or HTTP Host) and provider,
//! and no payload byte — the fixture's API key in particular — reaches any output.
#![allow(clippy::unwrap_used)]

use std::{thread, time::Duration};

use serde_json::Value;
use tracer_e2e::*;

const ROUNDS: u64 = 3;
/// The API key the fixture relay sends on every request (tests/fixture/tls.go).
const SECRET: &str = "sk-tracer-fixture-SECRET-7f3a9c";

fn provider_of<'a>(s: &'a Value, host_name: &str) -> &'a Value {
    &host(s, host_name).unwrap_or_else(|| panic!("no host {host_name}:\n{}", summary(s)))
        ["provider"]
}

#[test]
fn tls_connections_are_named_by_sni_and_provider_and_no_payload_is_ever_written() {
    if !prerequisites_met() {
        return;
    }
    let port = 18205;
    let (_upstreams, mut relay) = upstreams_and_waiting_relay(port, ROUNDS as u32);
    let args = quick_args(relay.pid());
    // Most verbose logging: the secret must not show up there either.
    std::env::set_var("RUST_LOG", "trace");
    let tracer = start_tracer(&args);
    // A recording made beside it must not carry payload either.
    let recording =
        std::env::temp_dir().join(format!("tracer-e2e-naming-{}.rec", std::process::id()));
    let mut record_cmd = std::process::Command::new(tracer_bin());
    record_cmd
        .arg("record")
        .arg("--out")
        .arg(&recording)
        .args(["--pid", &relay.pid().to_string()]);
    let mut recorder = Proc::spawn("tracer record", record_cmd);
    recorder.expect_stderr("attached", Duration::from_secs(30));
    std::env::remove_var("RUST_LOG");
    relay.send_line("go");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(Duration::from_secs(7));

    recorder.signal(libc::SIGINT);
    let (code, _, err) = recorder.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "recorder: {err}");
    let recorded = std::fs::read(&recording).unwrap();
    let _ = std::fs::remove_file(&recording);
    assert!(
        recorded.len() > 1000,
        "the recording has content ({} bytes)",
        recorded.len()
    );
    assert!(
        recorded
            .windows(b"api.openai.com".len())
            .any(|w| w == b"api.openai.com"),
        "names are recorded"
    );
    for needle in [SECRET.as_bytes(), b"Bearer", b"Authorization"] {
        assert!(
            !recorded.windows(needle.len()).any(|w| w == needle),
            "payload bytes in the recording"
        );
    }

    tracer.signal(libc::SIGINT);
    let (code, lines, stderr) = tracer.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
    let all_output = format!("{}\n{stderr}", lines.join("\n"));
    assert!(
        !all_output.contains(SECRET),
        "the API key leaked into the tracer's output"
    );
    assert!(
        !all_output.contains("Bearer"),
        "request headers leaked into the tracer's output"
    );
    assert!(
        stderr.contains("is api.openai.com (Sni)"),
        "trace logging shows names only; stderr:\n{}",
        &stderr[..stderr.len().min(2000)]
    );

    let s: Value =
        serde_json::from_str(lines.iter().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let ctx = summary(&s);
    // HTTP/1.1 leaks over TLS, attributed to the hostname and provider from the ClientHello.
    assert_eq!(
        count(&s, "api.openai.com", &["by_reason", "close_wait"]),
        ROUNDS,
        "{ctx}"
    );
    assert_eq!(provider_of(&s, "api.openai.com"), "openai");
    assert_eq!(
        count(&s, "api.anthropic.com", &["by_reason", "unread"]),
        ROUNDS,
        "{ctx}"
    );
    assert_eq!(provider_of(&s, "api.anthropic.com"), "anthropic");
    // An HTTP/2 connection is named too (and, read correctly, not leaked).
    assert!(
        count(
            &s,
            "generativelanguage.googleapis.com",
            &["connections_total"]
        ) >= 1,
        "{ctx}"
    );
    assert_eq!(
        count(&s, "generativelanguage.googleapis.com", &["leaked"]),
        0,
        "{ctx}"
    );
    assert_eq!(
        provider_of(&s, "generativelanguage.googleapis.com"),
        "gemini"
    );
    // No connection of theirs is left under a bare address.
    for ip in ["127.0.0.21", "127.0.0.22", "127.0.0.23"] {
        assert!(host(&s, ip).is_none(), "{ip} should carry its name:\n{ctx}");
    }
    for leak in s["leaks"].as_array().unwrap() {
        if leak["remote"].as_str().unwrap().starts_with("127.0.0.2") {
            assert!(!leak["provider"].is_null(), "{leak}");
        }
    }
    // The per-provider rollup.
    let openai = s["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "openai")
        .unwrap();
    assert_eq!(openai["leaked"], ROUNDS, "{openai}");
    assert_eq!(openai["hosts"], serde_json::json!(["api.openai.com"]));
}
