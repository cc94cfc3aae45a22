//! `--metrics-addr`: serves the latest Prometheus rendering at `/metrics`, and reads the
//! tracer's own CPU and memory from /proc/self for it.
//!
//! hyper's HTTP/1.1 server rather than a hand-written responder: Prometheus keeps connections
//! alive and a scrape must never hang on a slow or odd client, which hyper handles (keep-alive,
//! header limits, a header read timeout) and a few lines of our own would not.

use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinHandle,
};

use super::prometheus::{ProcessStats, CONTENT_TYPE as METRICS_CONTENT_TYPE};

/// Scrapers at once; more are turned away (a scrape takes microseconds).
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The `/metrics` endpoint: serves whatever was published last, from a task on the current
/// tokio runtime; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    latest: watch::Sender<Bytes>,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Listens on `addr` and starts serving (an empty exposition until the first `publish`).
    /// Must be called inside a tokio runtime. A failure is one line naming the address and
    /// what to do.
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            bail!("the metrics endpoint needs a tokio runtime to run on");
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|e| bind_error(addr, &e))?;
        listener
            .set_nonblocking(true)
            .with_context(|| format!("setting up the metrics listener on {addr}"))?;
        let local_addr = listener
            .local_addr()
            .with_context(|| format!("reading the address of the metrics listener on {addr}"))?;
        let listener = TcpListener::from_std(listener)
            .with_context(|| format!("registering the metrics listener on {addr}"))?;
        let (latest, texts) = watch::channel(Bytes::new());
        let task = tokio::spawn(serve(listener, texts));
        Ok(MetricsServer {
            local_addr,
            latest,
            task,
        })
    }

    /// The address actually bound (the port chosen, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes `text` what `/metrics` answers from now on.
    pub fn publish(&self, text: String) {
        self.latest.send_replace(Bytes::from(text));
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bind_error(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind;
    let fix = match e.kind() {
        ErrorKind::AddrInUse => format!(
            "another process listens there (see: ss -ltnp 'sport = :{}'); pick another port with --metrics-addr",
            addr.port()
        ),
        ErrorKind::AddrNotAvailable => "that address is not on this host; use 127.0.0.1:PORT, \
            0.0.0.0:PORT for every interface, or an address `ip -brief address` lists"
            .to_string(),
        ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a port above 1023".to_string()
        }
        _ => "check the address given to --metrics-addr".to_string(),
    };
    anyhow!("cannot serve metrics on {addr}: {e}; {fix}")
}

async fn serve(listener: TcpListener, texts: watch::Receiver<Bytes>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, typically: wait rather than spin.
                log::warn!("metrics endpoint: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            log::warn!(
                "metrics endpoint: {MAX_CONNECTIONS} clients already connected; refusing one"
            );
            continue;
        };
        let texts = texts.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &texts);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                log::debug!("metrics endpoint: connection ended: {e}");
            }
            drop(slot);
        });
    }
}

fn respond(request: &Request<Incoming>, texts: &watch::Receiver<Bytes>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, METRICS_CONTENT_TYPE, texts.borrow().clone())
        }
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"only GET and HEAD\n"),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found: the metrics are at /metrics\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

/// `--metrics-addr` as typed: `9464` or `:9464` (127.0.0.1), `localhost:9464`, `0.0.0.0:9464`,
/// `[::1]:9464`. For the command line's value parsers.
pub fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let port = text
        .strip_prefix(':')
        .or_else(|| text.strip_prefix("localhost:"))
        .unwrap_or(text);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse().map_err(|_| {
        format!(
            "invalid address {text:?}: expected PORT (on 127.0.0.1), IP:PORT or [IPv6]:PORT, \
             e.g. 9464 or 0.0.0.0:9464"
        )
    })
}

/// The tracer's CPU time and resident memory, from /proc/self/stat and /proc/self/status.
pub fn read_process_stats() -> Result<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    Ok(ProcessStats {
        cpu_seconds: cpu_seconds(&stat, clock_ticks_per_second())
            .context("parsing /proc/self/stat")?,
        resident_bytes: resident_bytes(&status).context("parsing /proc/self/status")?,
    })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant; no memory is passed.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // USER_HZ is 100 on every Linux architecture; sysconf failing is only theoretical.
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// utime + stime (fields 14 and 15 of proc_pid_stat(5), in clock ticks) in seconds. The fields
/// are counted after the command name, which is in parentheses and may hold spaces.
fn cpu_seconds(stat: &str, ticks_per_second: u64) -> Result<f64> {
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ')' after comm")?;
    // After the comm comes field 3 (state): utime is field 14, so the 12th from here.
    let mut fields = after_comm.split_whitespace().skip(11);
    let mut ticks = |name: &str| -> Result<u64> {
        fields
            .next()
            .with_context(|| format!("no {name} field"))?
            .parse::<u64>()
            .with_context(|| format!("{name} is not a number"))
    };
    let (utime, stime) = (ticks("utime")?, ticks("stime")?);
    Ok((utime + stime) as f64 / ticks_per_second as f64)
}

/// VmRSS of proc_pid_status(5), which the kernel gives in kB (KiB).
fn resident_bytes(status: &str) -> Result<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("VmRSS {:?} is not a number of kB", line.trim()))?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        process::{Child, Command, Stdio},
        time::Instant,
    };

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
        time::timeout,
    };

    use super::*;
    use crate::export::{
        prometheus::{Health, PrometheusExporter},
        testdata::{host, required_tool, stream_leak, two_hosts, with_streams},
    };

    const LOCAL: &str = "127.0.0.1:0";

    struct Reply {
        status_line: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.1 request over a plain TCP connection, as a scraper sends it.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.expect("connects");
            let head =
                format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.expect("sends");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("reads");
            raw
        };
        let raw = timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no full answer within 10 s"));
        let text = String::from_utf8(raw).expect("UTF-8 answer");
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head: {text:?}"));
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Reply {
            status_line,
            headers,
            body: body.to_string(),
        }
    }

    fn local() -> SocketAddr {
        LOCAL.parse().expect("an address")
    }

    #[tokio::test]
    async fn serves_the_latest_publication_at_metrics() {
        let server = MetricsServer::bind(local()).expect("binds");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let reply = request(addr, "GET", "/metrics").await;
        assert_eq!(
            (reply.status_line.as_str(), reply.body.as_str()),
            ("HTTP/1.1 200 OK", "")
        );

        let text = PrometheusExporter::default()
            .render(&two_hosts(), &Health::default())
            .expect("renders");
        server.publish(text.clone());
        let reply = request(addr, "GET", "/metrics").await;
        assert_eq!(reply.status_line, "HTTP/1.1 200 OK");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(
            reply.header("content-length"),
            Some(text.len().to_string().as_str())
        );
        assert_eq!(reply.body, text);

        server.publish("tracer_build_info 1\n".into());
        assert_eq!(
            request(addr, "GET", "/metrics").await.body,
            "tracer_build_info 1\n"
        );
        let head = request(addr, "HEAD", "/metrics").await;
        assert_eq!(
            (head.status_line.as_str(), head.body.as_str()),
            ("HTTP/1.1 200 OK", "")
        );
    }

    #[tokio::test]
    async fn other_paths_are_not_found_and_other_methods_not_allowed() {
        let server = MetricsServer::bind(local()).expect("binds");
        server.publish("tracer_build_info 1\n".into());
        let addr = server.local_addr();
        for path in ["/", "/metrics/", "/favicon.ico", "/metricsx"] {
            let reply = request(addr, "GET", path).await;
            assert_eq!(reply.status_line, "HTTP/1.1 404 Not Found", "GET {path}");
            assert!(
                !reply.body.contains("tracer_build_info"),
                "GET {path}: {}",
                reply.body
            );
        }
        let reply = request(addr, "POST", "/metrics").await;
        assert_eq!(reply.status_line, "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }

    #[tokio::test]
    async fn dropping_the_server_stops_serving() {
        let server = MetricsServer::bind(local()).expect("binds");
        let addr = server.local_addr();
        drop(server);
        // The aborted task closes the listener the next time the runtime runs it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "still listening on {addr} 5 s after the drop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_taken_address_is_one_line_naming_it_and_the_fix() {
        let taken = std::net::TcpListener::bind(LOCAL).expect("binds");
        let addr = taken.local_addr().expect("an address");
        let e = MetricsServer::bind(addr).expect_err("the address is taken");
        let message = format!("{e:#}");
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.starts_with(&format!("cannot serve metrics on {addr}: ")),
            "{message}"
        );
        assert!(
            message.contains("pick another port with --metrics-addr"),
            "{message}"
        );
    }

    #[test]
    fn binding_outside_a_runtime_is_an_error_not_a_panic() {
        let e = MetricsServer::bind(local()).expect_err("no runtime");
        assert!(format!("{e}").contains("tokio runtime"), "{e}");
    }

    #[test]
    fn addresses_default_to_loopback_when_only_a_port_is_given() {
        let ok = |text: &str, expected: &str| {
            assert_eq!(
                parse_metrics_addr(text),
                Ok(expected.parse().expect("an address")),
                "{text}"
            );
        };
        ok("9464", "127.0.0.1:9464");
        ok(":9464", "127.0.0.1:9464");
        ok("localhost:9464", "127.0.0.1:9464");
        ok("0.0.0.0:9464", "0.0.0.0:9464");
        ok("10.1.2.3:80", "10.1.2.3:80");
        ok("[::1]:9464", "[::1]:9464");
        ok("[::]:9464", "[::]:9464");
        for bad in [
            "",
            "x",
            "65536",
            ":",
            "127.0.0.1",
            "::1:9464",
            "host.example:9464",
            "1.2.3.4:x",
        ] {
            let e = parse_metrics_addr(bad).expect_err(bad);
            assert!(e.contains("expected PORT"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn cpu_and_memory_are_read_from_proc_self() {
        // A comm with spaces and a parenthesis: fields are counted after the last ')'.
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 3 0 \
                    100 12345678 3000 18446744073709551615";
        assert_eq!(cpu_seconds(stat, 100).expect("parses"), 3.25);
        assert_eq!(cpu_seconds(stat, 250).expect("parses"), 1.3);
        assert!(cpu_seconds("4242 (relay) S 1 2", 100).is_err());
        let status = "Name:\trelay\nVmPeak:\t  20000 kB\nVmRSS:\t   12288 kB\nThreads:\t3\n";
        assert_eq!(resident_bytes(status).expect("parses"), 12_288 * 1024);
        assert!(resident_bytes("Name:\tkthreadd\n").is_err());

        let own = read_process_stats().expect("reads /proc/self");
        assert!(own.resident_bytes > 1 << 20, "{own:?}");
        assert!(own.cpu_seconds >= 0.0 && own.cpu_seconds < 1e6, "{own:?}");
    }

    /// A Prometheus server the test started; killed when dropped.
    struct PrometheusServer {
        child: Child,
        log: std::path::PathBuf,
    }

    impl Drop for PrometheusServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind(LOCAL).expect("binds");
        listener.local_addr().expect("an address").port()
    }

    fn percent_encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// The value of the one series `query` returns, once Prometheus has scraped it.
    async fn query_until_answered(prometheus: SocketAddr, query: &str, deadline: Instant) -> f64 {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let mut last = String::new();
        while Instant::now() < deadline {
            if TcpStream::connect(prometheus).await.is_ok() {
                let reply = request(prometheus, "GET", &path).await;
                last = reply.body;
                let answer: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
                if let Some([series]) = answer["data"]["result"].as_array().map(Vec::as_slice) {
                    let value = series["value"][1].as_str().unwrap_or_default();
                    return value
                        .parse()
                        .unwrap_or_else(|e| panic!("{query}: {value:?}: {e}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{query}: no single series by the deadline; last answer: {last}");
    }

    #[tokio::test]
    async fn a_real_prometheus_scrapes_the_endpoint() {
        let Some(binary) = required_tool("prometheus", "prometheus") else {
            return;
        };
        let server = MetricsServer::bind(local()).expect("binds");
        // Two hosts leaking connections, and one leaking an HTTP/2 stream.
        let mut snapshot = two_hosts();
        snapshot
            .hosts
            .push(with_streams(host("10.0.0.23", 1, (0, 1, 0), 0, 1), 3, 1));
        snapshot.leaks.push(stream_leak(
            "10.0.0.23",
            40010,
            9,
            crate::model::LeakReason::Unread,
            40.0,
        ));
        server.publish(
            PrometheusExporter::default()
                .render(&snapshot, &Health::default())
                .expect("renders"),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{}']\n",
                server.local_addr()
            ),
        )
        .expect("writes the config");
        let web: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let log = dir.path().join("prometheus.log");
        let prometheus = PrometheusServer {
            child: Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={web}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).expect("creates the log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display())),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let outcome = async {
            let close_wait = query_until_answered(
                web,
                r#"tracer_upstream_connections_leaked{job="tracer",host="10.0.0.12",kind="connection",reason="close_wait"}"#,
                deadline,
            )
            .await;
            let streams = query_until_answered(
                web,
                r#"sum by (host) (tracer_upstream_connections_leaked{kind="h2_stream"} > 0)"#,
                deadline,
            )
            .await;
            let total =
                query_until_answered(web, "sum(tracer_upstream_connections_leaked)", deadline)
                    .await;
            let open_streams =
                query_until_answered(web, "sum(tracer_upstream_h2_streams_open)", deadline).await;
            let up = query_until_answered(web, r#"up{job="tracer"}"#, deadline).await;
            (close_wait, streams, total, open_streams, up)
        };
        let answers = outcome.await;
        let log = fs::read_to_string(&prometheus.log).unwrap_or_default();
        assert_eq!(answers, (2.0, 1.0, 4.0, 3.0, 1.0), "prometheus log:\n{log}");
    }
}
