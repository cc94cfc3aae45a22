//! End-to-end: the monitoring outputs. A real Prometheus scrapes the tracer's /metrics while
//! the fixture leaks, and the per-host leak counts agree across JSON, CSV and Prometheus.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_e2e::*;

const ROUNDS: u64 = 3;

fn grace_args() -> Vec<String> {
    [
        "--close-wait-grace",
        "2s",
        "--unread-grace",
        "3s",
        "--abandon-grace",
        "4s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A plain HTTP GET on loopback; returns (status line, body).
fn http_get(addr: &str, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The answer to an instant query, each series keyed by the values of `labels`.
fn promql(web: &str, query: &str, labels: &[&str]) -> Option<BTreeMap<Vec<String>, u64>> {
    let query = percent_encode(query);
    let (status, body) = http_get(web, &format!("/api/v1/query?query={query}"))?;
    if !status.contains("200") {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let mut out = BTreeMap::new();
    for series in v["data"]["result"].as_array()? {
        let key = labels
            .iter()
            .map(|l| series["metric"][l].as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()?;
        let value: f64 = series["value"][1].as_str()?.parse().ok()?;
        out.insert(key, value as u64);
    }
    Some(out)
}

/// Leaked connections and streams per host, as Prometheus answers `sum by (host) (...)`.
fn promql_leaked_by_host(web: &str) -> Option<BTreeMap<String, u64>> {
    let answer = promql(
        web,
        "sum by (host) (tracer_upstream_connections_leaked)",
        &["host"],
    )?;
    Some(
        answer
            .into_iter()
            .map(|(mut key, n)| (key.remove(0), n))
            .collect(),
    )
}

/// Per host, its leaks of each kind (`by_kind`) in a JSON snapshot.
fn leaked_by_host_and_kind_json(s: &Value) -> BTreeMap<Vec<String>, u64> {
    let mut out = BTreeMap::new();
    for h in s["hosts"].as_array().unwrap() {
        let host = h["host"].as_str().unwrap();
        for (kind, n) in h["by_kind"].as_object().unwrap() {
            out.insert(vec![host.to_owned(), kind.clone()], n.as_u64().unwrap());
        }
    }
    out
}

fn leaked_by_host_json(s: &Value) -> BTreeMap<String, u64> {
    s["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_owned(),
                h["leaked"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A Prometheus server in a temporary directory, killed on drop.
struct Prometheus {
    _proc: Proc,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_prometheus(scrape: &str, web: &str) -> Prometheus {
    let binary = "/usr/bin/prometheus";
    assert!(
        std::path::Path::new(binary).exists(),
        "{binary} is missing: run cargo xtask setup (Debian package prometheus)"
    );
    let dir = std::env::temp_dir().join(format!("tracer-e2e-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{scrape}']\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(binary);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"));
    Prometheus {
        _proc: Proc::spawn("prometheus", cmd),
        dir,
    }
}

#[test]
fn a_real_prometheus_scrapes_the_leaking_hosts_with_the_counts_of_the_json_snapshot() {
    if !prerequisites_met() {
        return;
    }
    let port = 18206;
    let metrics = "127.0.0.1:19464";
    let web = "127.0.0.1:19465";
    let _upstreams = start_upstreams(port);
    let mut relay = Proc::spawn(
        "relay",
        relay_command(port, ROUNDS as u32, &["-start-on-stdin"]),
    );
    relay.expect_line("WAITING", Duration::from_secs(10));
    let mut args = grace_args();
    args.extend(
        [
            "--interval",
            "1s",
            "--metrics-addr",
            metrics,
            "--pid",
            &relay.pid().to_string(),
        ]
        .map(String::from),
    );
    let mut tracer = start_tracer(&args);
    relay.send_line("go");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(Duration::from_secs(7));

    // The endpoint itself.
    let (status, body) = http_get(metrics, "/metrics").expect("the tracer serves /metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("# TYPE tracer_upstream_connections_leaked gauge"),
        "{body}"
    );
    assert!(
        body.contains(r#"tracer_upstream_connections_leaked{host="127.0.0.12",kind="connection",provider="unknown",reason="close_wait"} 3"#),
        "the fixture's close_wait leaks are connections: {body}"
    );
    assert!(
        body.contains("# TYPE tracer_upstream_h2_streams_open gauge"),
        "{body}"
    );
    assert!(
        !body.contains("sk-tracer-fixture-SECRET"),
        "payload in the metrics"
    );

    let _prometheus = start_prometheus(metrics, web);
    let deadline = Instant::now() + Duration::from_secs(60);
    let by_host = loop {
        if let Some(answer) = promql_leaked_by_host(web) {
            if answer.get("127.0.0.12") == Some(&ROUNDS) && answer.contains_key("api.openai.com") {
                break answer;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered with the fixture's leaks"
        );
        thread::sleep(Duration::from_millis(500));
    };
    // The same instant, as the tracer's own JSON snapshot says it.
    // Skip what was printed before, then take the next snapshot.
    while tracer.next_line(Duration::from_millis(10)).is_some() {}
    let mut snapshot = Value::Null;
    while let Some(line) = tracer.next_line(Duration::from_secs(3)) {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            snapshot = v;
            break;
        }
    }
    let json = leaked_by_host_json(&snapshot);
    for host in [
        "127.0.0.12",
        "127.0.0.13",
        "127.0.0.16",
        "::1",
        "api.openai.com",
        "api.anthropic.com",
    ] {
        assert_eq!(
            by_host.get(host),
            json.get(host),
            "{host}: Prometheus {by_host:?} vs JSON {json:?}"
        );
        assert_eq!(by_host.get(host), Some(&ROUNDS), "{host}: {by_host:?}");
    }
    // By kind: the fixture leaks HTTP/1.1 connections, and the Go-aware probes are off, so
    // every leak is a connection and every host has its h2_stream series, at 0.
    let by_kind = promql(
        web,
        "sum by (host, kind) (tracer_upstream_connections_leaked)",
        &["host", "kind"],
    )
    .expect("Prometheus answers by kind");
    let json_by_kind = leaked_by_host_and_kind_json(&snapshot);
    for host in ["127.0.0.12", "127.0.0.13", "127.0.0.16", "api.openai.com"] {
        for kind in ["connection", "h2_stream"] {
            let key = vec![host.to_owned(), kind.to_owned()];
            assert_eq!(
                by_kind.get(&key),
                json_by_kind.get(&key),
                "{host} {kind}: Prometheus {by_kind:?} vs JSON {json_by_kind:?}"
            );
        }
        assert_eq!(
            by_kind.get(&vec![host.to_owned(), "h2_stream".to_owned()]),
            Some(&0),
            "{host}"
        );
    }
    let _ = stop_tracer(tracer);
}

/// Runs `tracer snapshot` on `pid` and returns its stdout.
fn snapshot_of(pid: u32, format: &str) -> String {
    let mut cmd = Command::new(tracer_bin());
    cmd.arg("snapshot").args(grace_args()).args([
        "--for",
        "5s",
        "--format",
        format,
        "--pid",
        &pid.to_string(),
    ]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "snapshot --format {format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn snapshots_in_json_csv_and_prometheus_agree_and_json_output_files_rotate() {
    if !prerequisites_met() {
        return;
    }
    let port = 18207;
    let _upstreams = start_upstreams(port);
    let mut relay = Proc::spawn("relay", relay_command(port, ROUNDS as u32, &[]));
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(Duration::from_secs(2));

    let json: Value = serde_json::from_str(snapshot_of(relay.pid(), "json").trim()).unwrap();
    let from_json = leaked_by_host_json(&json);
    assert_eq!(
        from_json.get("127.0.0.12"),
        Some(&ROUNDS),
        "{}",
        summary(&json)
    );

    let csv = snapshot_of(relay.pid(), "csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no CSV column {name}: {header:?}"))
    };
    let (host_col, leaked_col) = (col("host"), col("leaked"));
    let kind_cols = [
        ("connection", col("leaked_connection")),
        ("h2_stream", col("leaked_h2_stream")),
    ];
    let open_streams_col = col("open_streams");
    let mut from_csv: BTreeMap<String, u64> = BTreeMap::new();
    let mut csv_by_kind: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for l in lines {
        let cols: Vec<&str> = l.split(',').collect();
        let host = cols[host_col].trim_matches('"').to_owned();
        from_csv.insert(host.clone(), cols[leaked_col].parse().unwrap());
        for (kind, at) in kind_cols {
            csv_by_kind.insert(
                vec![host.clone(), kind.to_owned()],
                cols[at].parse().unwrap(),
            );
        }
        assert_eq!(cols[open_streams_col], "0", "probes off: no stream: {l}");
    }
    assert_eq!(from_csv, from_json, "CSV vs JSON");
    let json_by_kind = leaked_by_host_and_kind_json(&json);
    assert_eq!(csv_by_kind, json_by_kind, "CSV vs JSON, by kind");

    let prom = snapshot_of(relay.pid(), "prometheus");
    let label = |line: &str, name: &str| -> String {
        line.split(&format!("{name}=\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name} label: {line}"))
            .split('"')
            .next()
            .unwrap()
            .to_owned()
    };
    let mut from_prom: BTreeMap<String, u64> = BTreeMap::new();
    let mut prom_by_kind: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for line in prom
        .lines()
        .filter(|l| l.starts_with("tracer_upstream_connections_leaked{"))
    {
        let (host, kind) = (label(line, "host"), label(line, "kind"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *from_prom.entry(host.clone()).or_default() += value as u64;
        *prom_by_kind.entry(vec![host, kind]).or_default() += value as u64;
    }
    let nonzero = |m: BTreeMap<Vec<String>, u64>| -> BTreeMap<Vec<String>, u64> {
        m.into_iter().filter(|(_, v)| *v > 0).collect()
    };
    let json_nonzero: BTreeMap<String, u64> =
        from_json.into_iter().filter(|(_, v)| *v > 0).collect();
    let prom_nonzero: BTreeMap<String, u64> =
        from_prom.into_iter().filter(|(_, v)| *v > 0).collect();
    assert_eq!(prom_nonzero, json_nonzero, "Prometheus vs JSON");
    assert_eq!(
        nonzero(prom_by_kind),
        nonzero(json_by_kind),
        "Prometheus vs JSON, by kind"
    );

    // run --json --output FILE rotates by size and never splits a line.
    let dir = std::env::temp_dir().join(format!("tracer-e2e-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("snapshots.jsonl");
    let out = Command::new(tracer_bin())
        .args([
            "run",
            "--json",
            "--interval",
            "200ms",
            "--duration",
            "3s",
            "--output-max-size",
            "4K",
            "--output-keep",
            "2",
        ])
        .arg("--output")
        .arg(&file)
        .args(["--pid", &relay.pid().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "with --output, nothing goes to stdout"
    );
    let mut lines = 0;
    for path in [
        file.clone(),
        dir.join("snapshots.jsonl.1"),
        dir.join("snapshots.jsonl.2"),
    ] {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            text.len() <= 4096 || text.lines().count() == 1,
            "{} is {} bytes",
            path.display(),
            text.len()
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("split line in {}: {e}", path.display()));
            assert_eq!(v["type"], "snapshot");
            lines += 1;
        }
    }
    assert!(
        !dir.join("snapshots.jsonl.3").exists(),
        "keeps 2 rotated files"
    );
    assert!(lines >= 3, "{lines} snapshots written");
    let _ = std::fs::remove_dir_all(&dir);
}
