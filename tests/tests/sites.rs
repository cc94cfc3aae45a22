//! End-to-end: every leak names the relay's line that obtained it (issue 13). The fixture
//! tests/gosites makes HTTP/1.1 and HTTP/2 requests from distinct lines and reports each
//! scenario's line itself (runtime.Callers next to the call); it is built stripped
//! (`-ldflags "-s -w"`) by toolchains of the Go matrix (`cargo xtask go-matrix`, found at
//! `GO_MATRIX_DIR`, else target/go-matrix; the kernel matrix's guests, which have no Go, run
//! the Go 1.27 test on a fixture built ahead, `GO_SITES_DIR`). Each leak's `call_site` must
//! equal its scenario's line exactly, and the snapshot's `sites` must count each scenario's
//! requests and leaks; a connection reused by correct requests before a leaking one is the
//! leaking line's, and the wrapper scenario is named by the wrapper's caller through
//! `--site-skip`.
//! Real eBPF, one test at a time (`--test-threads=1`).
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_e2e::*;

/// Releases the fixture is built with: the oldest the Go layer knows and the newest (HTTP/2
/// moved to net/http/internal/http2 in 1.27).
const RELEASES: &[&str] = &["1.21.13", "1.27.3"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The matrix's toolchain for `release`, or why the test cannot run (a panic under CI).
fn go_of(release: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GO_MATRIX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/go-matrix"));
    let go = dir.join(release).join("bin/go");
    if go.is_file() {
        return Some(go);
    }
    let reason = format!(
        "the call-site test needs Go {release} at {} (run: cargo xtask go-matrix, or set GO_MATRIX_DIR)",
        go.display()
    );
    if in_ci() {
        panic!("{reason}; under CI=true this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

/// Builds tests/gosites stripped with `go` (with `-trimpath`: file names as the module
/// and standard library's import paths, which the fixture's runtime.Callers reports too).
fn build_fixture(go: &Path, release: &str, trimpath: bool) -> PathBuf {
    let out = std::env::temp_dir().join(format!("tracer-e2e-gosites-{release}"));
    let status = Command::new(go)
        .arg("build")
        .arg(format!("-trimpath={trimpath}"))
        .args(["-ldflags", "-s -w", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(workspace().join("tests/gosites"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", go.display()));
    assert!(
        status.success(),
        "go {release} could not build tests/gosites"
    );
    out
}

fn site_of(v: &Value) -> (String, String, u64) {
    (
        v["function"].as_str().unwrap_or_default().to_owned(),
        v["file"].as_str().unwrap_or_default().to_owned(),
        v["line"].as_u64().unwrap_or_default(),
    )
}

fn remote_ip(leak: &Value) -> String {
    let remote = leak["remote"].as_str().unwrap_or_default();
    remote.rsplit_once(':').map_or("", |(ip, _)| ip).to_owned()
}

/// What is wrong with `snapshot` against the fixture's `results`, or None when it all holds.
fn mismatch(snapshot: &Value, results: &[Value]) -> Option<String> {
    let leaks = snapshot["leaks"].as_array()?;
    let sites = snapshot["sites"].as_array()?;
    let site_entry = |site: &(String, String, u64)| sites.iter().find(|s| &site_of(s) == site);
    for r in results {
        let scenario = r["scenario"].as_str().unwrap_or_default();
        let host = r["host"].as_str().unwrap_or_default();
        let site = site_of(&r["site"]);
        let requests = r["requests"].as_u64().unwrap_or_default();
        let expected_leaks = r["leaks"].as_u64().unwrap_or_default();
        let of_host: Vec<&Value> = leaks.iter().filter(|l| remote_ip(l) == host).collect();
        let Some(entry) = site_entry(&site) else {
            return Some(format!("{scenario}: no sites entry for {site:?}"));
        };
        if entry["requests_total"].as_u64() != Some(requests) {
            return Some(format!(
                "{scenario}: {site:?} has requests_total {}, the fixture made {requests}",
                entry["requests_total"]
            ));
        }
        // HTTP/1.1 leaks name the site of their connection's last request; HTTP/2 stream
        // leaks the site whose round trip returned the stream's response.
        if of_host.len() as u64 != expected_leaks {
            return Some(format!(
                "{scenario}: {} leaks on {host}, expected {expected_leaks}",
                of_host.len()
            ));
        }
        for leak in &of_host {
            if site_of(&leak["call_site"]) != site {
                return Some(format!(
                    "{scenario}: a leak on {host} names {}, the fixture says {site:?}",
                    leak["call_site"]
                ));
            }
            if leak["stack"][0].as_str() != Some(&format!("{} {}:{}", site.0, site.1, site.2)) {
                return Some(format!(
                    "{scenario}: stack {} does not start at the call site",
                    leak["stack"]
                ));
            }
        }
        if entry["leaked"].as_u64() != Some(expected_leaks) {
            return Some(format!(
                "{scenario}: {site:?} has leaked {}, expected {expected_leaks}",
                entry["leaked"]
            ));
        }
        if expected_leaks > 0 && entry["hosts"] != serde_json::json!([host]) {
            return Some(format!("{scenario}: hosts {}", entry["hosts"]));
        }
        if let Some(other) = r.get("other_site").filter(|o| !o.is_null()) {
            // The correct requests before the leaking one on the same pooled connection: counted
            // as requests of their own line, never as its leak.
            let other = site_of(other);
            let Some(entry) = site_entry(&other) else {
                return Some(format!("{scenario}: no sites entry for {other:?}"));
            };
            if entry["requests_total"] != r["other_requests"] || entry["leaked"] != 0 {
                return Some(format!(
                    "{scenario}: the reused connection's earlier line: {entry}"
                ));
            }
        }
    }
    None
}

/// The fixture built ahead for `release`, where there is no toolchain to build it (the kernel
/// matrix's guests): `$GO_SITES_DIR/gosites-<release>`, stripped, `-trimpath`, static
/// (xtask/src/kernels.rs). None when GO_SITES_DIR is not set.
fn prebuilt_fixture(release: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GO_SITES_DIR")?;
    let binary = PathBuf::from(dir).join(format!("gosites-{release}"));
    assert!(
        binary.is_file(),
        "GO_SITES_DIR is set but has no {}",
        binary.display()
    );
    Some(binary)
}

/// The fixture built by `release` (`None`: that Go is not here, outside CI).
fn fixture_binary(release: &str, trimpath: bool) -> Option<PathBuf> {
    // The prebuilt fixture is built with -trimpath, which changes the names it reports.
    let prebuilt = if trimpath {
        prebuilt_fixture(release)
    } else {
        None
    };
    match prebuilt {
        Some(binary) => Some(binary),
        None => go_of(release).map(|go| build_fixture(&go, release, trimpath)),
    }
}

/// Starts the tracer on `pid` with call sites, graces of 2 s and a snapshot a second, and
/// waits until a snapshot says the Go layer is attached.
fn trace_sites(pid: &str, what: &str) -> Proc {
    let mut cmd = Command::new(tracer_bin());
    cmd.args([
        "run",
        "--json",
        "--close-wait-grace",
        "2s",
        "--unread-grace",
        "2s",
        "--abandon-grace",
        "30s",
        "--interval",
        "1s",
        "--go-probes",
        "sites",
        "--site-skip",
        r"^main\.doRequest$",
        "--pid",
        pid,
    ]);
    let mut tracer = Proc::spawn("tracer", cmd);
    tracer.expect_stderr("tracer: attached", Duration::from_secs(30));
    // The probes are attached once a snapshot says so.
    snapshot_where(&mut tracer, what, "the Go layer attached", |s| {
        s["go_layer"][0]["attached"] == true
    });
    tracer
}

/// Lets `fixture` run its scenarios; returns the lines it reported, one per scenario.
fn run_scenarios(fixture: &mut Proc, what: &str) -> Vec<Value> {
    fixture.send_line("go");
    let mut results = Vec::new();
    loop {
        let line = fixture
            .next_line(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{what}: the fixture did not finish its scenarios"));
        if line == "DONE" {
            return results;
        }
        results.push(serde_json::from_str::<Value>(&line).unwrap());
    }
}

/// The first snapshot of `tracer` for which `until` holds, within 20 s; panics naming
/// `wanted` (and the last snapshot) if none does.
fn snapshot_where(
    tracer: &mut Proc,
    what: &str,
    wanted: &str,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = tracer
            .next_line(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{what}: the tracer printed no snapshot"));
        let snapshot: Value = serde_json::from_str(&line).unwrap();
        if until(&snapshot) {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no snapshot with {wanted}; the last: {snapshot}"
        );
    }
}

/// The first snapshot `tracer` prints 1.5 s from now or later: one taken after what the
/// test did until now (a sample a second).
fn snapshot_from_now(tracer: &mut Proc, what: &str) -> Value {
    let after = Instant::now() + Duration::from_millis(1500);
    snapshot_where(tracer, what, "a sample 1.5 s on", |_| {
        Instant::now() > after
    })
}

fn check_release(release: &str, trimpath: bool) {
    let Some(binary) = fixture_binary(release, trimpath) else {
        return;
    };
    let mut fixture = Proc::spawn(&format!("gosites {release}"), Command::new(&binary));
    fixture.expect_line("WAITING", Duration::from_secs(20));
    let pid = fixture.pid().to_string();
    let what = format!("go{release}");
    let tracer = trace_sites(&pid, &what);
    let results = run_scenarios(&mut fixture, &what);
    assert_eq!(results.len(), 8, "{results:?}");
    expect_named(tracer, &results, &what);
}

/// Waits until a snapshot of `tracer` names every leak of `results` by its scenario's line
/// and counts each scenario's requests (graces of 2 s, a sample a second: within a few
/// seconds), then stops the tracer; panics with the last snapshot's sites if none does.
fn expect_named(mut tracer: Proc, results: &[Value], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        let Some(line) = tracer.next_line(Duration::from_secs(5)) else {
            continue;
        };
        let snapshot: Value = serde_json::from_str(&line).unwrap();
        match mismatch(&snapshot, results) {
            None => {
                stop_tracer(tracer);
                return;
            }
            Some(why) => last = Some((why, snapshot)),
        }
    }
    let (why, snapshot) = last.unwrap_or_default();
    panic!(
        "{what}: {why}\nfixture: {results:#?}\nlast snapshot sites: {:#}\nleaks: {:#}",
        snapshot["sites"], snapshot["leaks"]
    );
}

#[test]
fn every_leak_names_its_scenarios_line_go_1_21() {
    if !prerequisites_met() {
        return;
    }
    check_release(RELEASES[0], false);
}

#[test]
fn every_leak_names_its_scenarios_line_go_1_27_trimpath() {
    if !prerequisites_met() {
        return;
    }
    check_release(RELEASES[1], true);
}

/// The HTTP/2 call-site probes check no process map: the uprobes' pid filter keeps them to
/// the target. Another process of the same binary, not traced, runs all its scenarios; no
/// probe of the tracer may send anything for it (the kernel side's count of records sent
/// stays still), while the target's own run is named as usual.
#[test]
fn another_process_of_the_same_binary_is_not_probed() {
    if !prerequisites_met() {
        return;
    }
    let release = RELEASES[1];
    let Some(binary) = fixture_binary(release, true) else {
        return;
    };
    let mut target = Proc::spawn("gosites (traced)", Command::new(&binary));
    target.expect_line("WAITING", Duration::from_secs(20));
    let mut other = Proc::spawn("gosites (not traced)", Command::new(&binary));
    other.expect_line("WAITING", Duration::from_secs(20));
    let what = "two processes of one binary";
    let mut tracer = trace_sites(&target.pid().to_string(), what);
    let before = snapshot_from_now(&mut tracer, what);
    let other_results = run_scenarios(&mut other, what);
    assert_eq!(other_results.len(), 8, "{other_results:?}");
    let after_other = snapshot_from_now(&mut tracer, what);
    let sent = |s: &Value| s["kernel"]["events_sent"].as_u64().unwrap();
    assert_eq!(
        sent(&after_other),
        sent(&before),
        "records were sent while only the untraced process made requests; sites: {:#}",
        after_other["sites"]
    );
    let results = run_scenarios(&mut target, what);
    assert_eq!(results.len(), 8, "{results:?}");
    expect_named(tracer, &results, "the traced process of two");
}
