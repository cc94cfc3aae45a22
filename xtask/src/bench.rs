//! `cargo xtask bench`: what the tracer costs the relay, measured, not assumed.
//!
//! For each scenario (the fixture relay as an HTTP proxy in front of a fake provider, with
//! pooled upstream connections and with a new one per request; Caddy, a real Go reverse proxy,
//! in front of the same provider over HTTP/1.1 and over HTTP/2 with TLS): (a) wrk runs
//! alternating without and with the tracer attached to the relay; (b) kernel cost per program
//! run from kernel.bpf_stats_enabled, and runs per request; (c) the same load with the tracer
//! attached to another process (the relay untracked); then (d) the tracer's own CPU per 100k
//! lifecycle events and memory per 10k tracked connections. Those relays are built by Go 1.19,
//! which the Go layer refuses, so they measure the kernel layer. The Go-layer scenarios (go-h2,
//! go-h1: tests/gobench built by the newest Go of the matrix, POSTing 4 KiB of JSON over TLS
//! with keep-alive to its own provider, which answers 4 KiB) alternate without the tracer,
//! `--go-probes off`, `--go-probes auto` (HTTP/2 streams) and `--go-probes sites` (and call sites), and set the layers apart from the runs' paired
//! differences, the relay's own CPU included: a uprobe's trap is charged to the relay's
//! thread, not to bpf_stats. Results go to bench/RESULTS.md and
//! bench/results.json. Last, (e) the floor: what an unrelated process pays per socket write
//! and read, and per syscall, with the tracer attached elsewhere, on each path. A run of some scenarios only (`--scenarios`) writes
//! target/bench/RESULTS-partial.md instead. RESULTS.md keeps what follows `HISTORY_MARK`
//! (the hand-written before/after of each change) from one run to the next. `--ab` sets
//! tracer builds against each other instead (ab.rs).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::{build, gomatrix, setup, util};

mod ab;
mod emptyprog;
use emptyprog::EmptyPrograms;

const UPSTREAM_PORT: u16 = 18310;
/// The port of the idle Go program the tracer attaches to in "tracer attached elsewhere".
const IDLE_PORT: u16 = 18319;
const PROXY_ADDR: &str = "127.0.0.1:18311";
const CADDY_ADDR: &str = "127.0.0.1:18312";
/// Where the Go-layer scenarios' relay (tests/gobench) serves wrk.
const GO_RELAY_ADDR: &str = "127.0.0.1:18313";
/// The Go-layer scenarios' provider port (on 127.0.0.71..79, one address per scenario).
const GO_UPSTREAM_PORT: u16 = 18320;
/// About 4 KiB of chat-completion JSON, posted by wrk on every request of the Go-layer
/// scenarios (the upstream answers with 4 KiB).
const POST_SCRIPT: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local parts = {'{"model":"gpt-4o","stream":false,"messages":[{"role":"user","content":"'}
for i = 1, 340 do parts[#parts + 1] = "lorem ipsum " end
parts[#parts + 1] = '"}]}'
wrk.body = table.concat(parts)
"#;
/// The tracer's log filter in the bench: warnings, and the Go layer's attach line, which the
/// bench waits for before it measures a configuration with the Go layer on.
const TRACER_LOG: &str = "warn,tracer::collect::goattach=info";
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// Everything from this line on in bench/RESULTS.md is kept when the bench rewrites it.
const HISTORY_MARK: &str = "<!-- history: kept by cargo xtask bench -->";

pub struct Options {
    pub duration: Duration,
    pub runs: u32,
    pub connections: u32,
    /// Scenario keys to run (`Scenario::key`); empty: all of them.
    pub scenarios: Vec<String>,
    /// Tracer binaries to set against each other (ab.rs); empty: the usual bench.
    pub ab: Vec<PathBuf>,
    /// `--go-probes` for every build of an A/B (off, auto, sites); None: the tracer's default.
    pub ab_go_probes: Option<String>,
}

/// The relay under load in a scenario.
enum Relay {
    /// `fixture proxy` with these extra arguments, on `PROXY_ADDR`.
    Fixture(&'static [&'static str]),
    /// Debian's Caddy on `CADDY_ADDR`, with this `reverse_proxy` block.
    Caddy(&'static str),
    /// tests/gobench built by the newest Go of the matrix (which the Go layer accepts) on
    /// `GO_RELAY_ADDR`, forwarding wrk's POSTs over TLS with keep-alive to its own upstream
    /// (tests/gobench too) on `upstream`:`GO_UPSTREAM_PORT`, over this protocol (`h2`, `h1`).
    Go {
        proto: &'static str,
        upstream: &'static str,
    },
}

/// How the tracer is attached during one configuration's runs.
#[derive(Clone, Copy)]
enum Attach {
    /// No tracer.
    Without,
    /// The tracer on the relay, with these extra arguments.
    Relay(&'static [&'static str]),
    /// The tracer on an idle process: the relay untracked.
    Elsewhere,
    /// No tracer; an empty program on each raw tracepoint the tracer runs a program on per
    /// event (`emptyprog`): the accounting's own floor, and what any program there costs.
    Empty,
}

/// One configuration a scenario's load runs under, alternating with the others.
struct Config {
    label: &'static str,
    attach: Attach,
}

const WITHOUT: Config = Config {
    label: "without the tracer",
    attach: Attach::Without,
};

/// The scenarios whose relay the Go layer refuses (Go 1.19): the tracer on it, and elsewhere.
const KERNEL_CONFIGS: &[Config] = &[
    WITHOUT,
    Config {
        label: "tracer attached to the relay",
        attach: Attach::Relay(&[]),
    },
    Config {
        label: "tracer attached elsewhere (relay untracked)",
        attach: Attach::Elsewhere,
    },
    Config {
        label: "empty programs on the same hooks (no tracer)",
        attach: Attach::Empty,
    },
];

/// The Go-layer scenarios: the kernel layer alone, and the whole tracer.
const GO_CONFIGS: &[Config] = &[
    WITHOUT,
    Config {
        label: "tracer, --go-probes off (kernel layer alone)",
        attach: Attach::Relay(&["--go-probes", "off"]),
    },
    Config {
        label: "tracer, --go-probes auto (kernel layer and HTTP/2 streams, no call sites)",
        attach: Attach::Relay(&["--go-probes", "auto"]),
    },
    Config {
        label: "tracer, --go-probes sites (kernel and Go layers, call sites too)",
        attach: Attach::Relay(&["--go-probes", "sites"]),
    },
];

/// One load scenario: a relay and the URL wrk asks it for.
struct Scenario {
    /// For `--scenarios`.
    key: &'static str,
    name: &'static str,
    relay: Relay,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        key: "keep-alive",
        name: "keep-alive (pooled upstream connections)",
        relay: Relay::Fixture(&[]),
    },
    Scenario {
        key: "churn",
        name: "new connection per request (connect/close heavy)",
        relay: Relay::Fixture(&["-new-conn"]),
    },
    Scenario {
        key: "caddy",
        name: "Caddy keep-alive (HTTP/1.1 upstream)",
        // The fixture's plain "ok" upstream.
        relay: Relay::Caddy("reverse_proxy 127.0.0.11:18310"),
    },
    Scenario {
        key: "caddy-h2",
        name: "Caddy keep-alive, HTTP/2 over TLS upstream",
        // The fixture's "h2-ok" upstream: TLS with a self-signed certificate, ALPN h2.
        relay: Relay::Caddy(
            "reverse_proxy https://127.0.0.23:18310 {\n\t\ttransport http {\n\t\t\ttls_insecure_skip_verify\n\t\t\tversions 2\n\t\t}\n\t}",
        ),
    },
    Scenario {
        key: "go-h2",
        name: "Go layer: a Go 1.21+ relay, HTTP/2 over TLS upstream, keep-alive, 4 KiB JSON each way",
        relay: Relay::Go {
            proto: "h2",
            upstream: "127.0.0.71",
        },
    },
    Scenario {
        key: "go-h1",
        name: "Go layer: a Go 1.21+ relay, HTTP/1.1 over TLS upstream, keep-alive, 4 KiB JSON each way",
        relay: Relay::Go {
            proto: "h1",
            upstream: "127.0.0.72",
        },
    },
];

/// A scenario's running relay, and its own upstream when it has one (else the fixture's).
struct Running {
    relay: Proc,
    upstream: Option<Proc>,
}

/// What a scenario's relays are started from.
struct Binaries<'a> {
    fixture: &'a Path,
    /// tests/gobench and the Go version that built it, when a Go-layer scenario runs.
    gobench: Option<&'a (PathBuf, String)>,
}

impl Scenario {
    fn url(&self) -> String {
        match self.relay {
            Relay::Fixture(_) => format!("http://{PROXY_ADDR}/"),
            Relay::Caddy(_) => {
                format!("http://{CADDY_ADDR}/v1/chat/completions?scenario=ok")
            }
            Relay::Go { .. } => format!("http://{GO_RELAY_ADDR}/v1/chat/completions"),
        }
    }

    fn configs(&self) -> &'static [Config] {
        match self.relay {
            Relay::Go { .. } => GO_CONFIGS,
            Relay::Fixture(_) | Relay::Caddy(_) => KERNEL_CONFIGS,
        }
    }

    /// wrk's script: a POST body for the Go-layer scenarios, plain GETs otherwise.
    fn wrk_script(&self) -> Option<&'static str> {
        matches!(self.relay, Relay::Go { .. }).then_some(POST_SCRIPT)
    }

    fn describe(&self, gobench: Option<&(PathBuf, String)>) -> String {
        match self.relay {
            Relay::Go { proto, upstream } => format!(
                "tests/gobench built stripped by {} (`gobench relay -proto {proto}`): every POST from wrk (4 KiB of JSON) is read whole and forwarded with one shared http.Client, keep-alive, {} over TLS to its own provider (`gobench upstream`, {upstream}:{GO_UPSTREAM_PORT}), which reads the body and answers 4 KiB of JSON; the relay reads the answer to EOF and returns it",
                gobench.map_or("the newest Go of the matrix", |(_, v)| v.as_str()),
                if proto == "h2" { "HTTP/2 (one multiplexed connection)" } else { "HTTP/1.1 (a pool of connections)" },
            ),
            Relay::Fixture(args) => format!(
                "the fixture relay (`fixture proxy{}{}`), which makes one upstream request per request to a fake provider on loopback",
                if args.is_empty() { "" } else { " " },
                args.join(" ")
            ),
            Relay::Caddy(_) => format!(
                "Caddy ({}) as a reverse proxy (`{}`) in front of the same fake provider",
                caddy_version(),
                self.caddyfile_site().lines().nth(1).map_or("", str::trim)
            ),
        }
    }

    fn caddyfile_site(&self) -> String {
        match self.relay {
            Relay::Caddy(block) => format!("http://{CADDY_ADDR} {{\n\t{block}\n}}\n"),
            Relay::Fixture(_) | Relay::Go { .. } => String::new(),
        }
    }

    /// Starts the relay (and its own upstream) and waits until it serves.
    fn start(&self, bins: &Binaries, scratch: &Path) -> Result<Running> {
        let relay = |relay| Running {
            relay,
            upstream: None,
        };
        match self.relay {
            Relay::Go { proto, upstream } => {
                let (gobench, _) = bins
                    .gobench
                    .ok_or_else(|| anyhow!("the Go-layer relay was not built"))?;
                let addr = format!("{upstream}:{GO_UPSTREAM_PORT}");
                let provider = spawn_ready(
                    Command::new(gobench).args(["upstream", "-addr", &addr]),
                    "the Go-layer scenario's provider (gobench upstream)",
                )?;
                let relay = spawn_ready(
                    Command::new(gobench).args([
                        "relay",
                        "-listen",
                        GO_RELAY_ADDR,
                        "-upstream",
                        &addr,
                        "-proto",
                        proto,
                    ]),
                    "the Go-layer relay (gobench relay)",
                )?;
                Ok(Running {
                    relay,
                    upstream: Some(provider),
                })
            }
            Relay::Fixture(args) => {
                let mut cmd = Command::new(bins.fixture);
                cmd.args([
                    "proxy",
                    "-listen",
                    PROXY_ADDR,
                    "-port",
                    &UPSTREAM_PORT.to_string(),
                ])
                .args(args);
                spawn_ready(&mut cmd, "the relay proxy").map(relay)
            }
            Relay::Caddy(_) => {
                let config = scratch.join(format!("Caddyfile-{}", self.key));
                // No admin endpoint, no automatic HTTPS: a bare proxy.
                let text = format!(
                    "{{\n\tadmin off\n\tauto_https off\n}}\n{}",
                    self.caddyfile_site()
                );
                fs::write(&config, text)
                    .with_context(|| format!("writing {}", config.display()))?;
                let child = Command::new("caddy")
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&config)
                    .env("HOME", scratch)
                    .env("XDG_DATA_HOME", scratch)
                    .env("XDG_CONFIG_HOME", scratch)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting caddy (apt-get install caddy)")?;
                let proc = Proc(child);
                let deadline = Instant::now() + Duration::from_secs(15);
                while std::net::TcpStream::connect(CADDY_ADDR).is_err() {
                    if Instant::now() > deadline {
                        bail!("caddy did not listen on {CADDY_ADDR} within 15s (run it by hand with {})", config.display());
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                Ok(relay(proc))
            }
        }
    }
}

fn caddy_version() -> String {
    util::stdout_of(Command::new("caddy").arg("version"))
        .ok()
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown version".into())
}

/// A child killed and reaped on drop.
struct Proc(Child);

/// A tracer child with its stderr lines, read on a thread (so the tracer never blocks on a
/// full pipe, and a wait for a line can be bounded in time); killed and reaped on drop.
struct TracerProc(Child, mpsc::Receiver<String>);

impl Drop for TracerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Hands a tracer's stderr lines to a channel from a thread that reads until the pipe closes
/// (the tracer exits); the lines nobody waits for any more are dropped.
fn drain_stderr(mut child: Child) -> Result<TracerProc> {
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("tracer: no stderr");
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Ok(TracerProc(child, rx))
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_ready(cmd: &mut Command, what: &str) -> Result<Proc> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{what}: no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.trim() == "READY" => Ok(Proc(child)),
        _ => {
            let _ = child.kill();
            bail!("{what} did not start (is port {UPSTREAM_PORT} or {PROXY_ADDR} in use? see: ss -ltnp)")
        }
    }
}

/// An idle Go program for the tracer to attach to when the relay must stay untracked: the
/// fixture's provider on a port nobody asks (a Go program, as a relay is: the tracer then
/// attaches what it would on a relay's host, and nothing for blocking reads).
fn idle_go_program(fixture: &Path) -> Result<Proc> {
    spawn_ready(
        Command::new(fixture).args(["upstream", "-port", &IDLE_PORT.to_string()]),
        "an idle Go program (the fixture's provider on an unused port)",
    )
}

/// A tracer attached to `pid`, with its JSON snapshots going to a file.
struct Tracer {
    proc: TracerProc,
    out: PathBuf,
}

impl Tracer {
    fn start(tracer: &Path, pid: u32, out: PathBuf) -> Result<Tracer> {
        Self::start_with(tracer, pid, out, &[], &[])
    }

    /// As `start`, with extra environment (`TRACER_READ_HOOK` to force a read path) and
    /// arguments (`--go-probes off`). With `--go-probes auto` it also waits until the Go
    /// layer has attached its probes to the target (or fails with the tracer's reason).
    fn start_with(
        tracer: &Path,
        pid: u32,
        out: PathBuf,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Tracer> {
        const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
        let file = fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let child = Command::new(tracer)
            .env("RUST_LOG", TRACER_LOG)
            .envs(env.iter().copied())
            .args([
                "run",
                "--json",
                "--interval",
                "5s",
                "--pid",
                &pid.to_string(),
            ])
            .args(args)
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the tracer")?;
        let proc = drain_stderr(child)?;
        let wants_go = args
            .windows(2)
            .any(|w| w == ["--go-probes", "auto"] || w == ["--go-probes", "sites"]);
        // The tracer logs a few lines at start; bounded in lines and in time.
        const MAX_LINES: usize = 1000;
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        let mut attached = false;
        let mut ready = false;
        for _ in 0..MAX_LINES {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = proc.1.recv_timeout(left) else {
                break;
            };
            if line.contains("tracer: attached") {
                attached = true;
            } else if line.contains("Go layer off") {
                bail!("the bench needs the Go layer on the relay, and the tracer said: {line}");
            }
            if attached && (!wants_go || line.contains("uprobes attached")) {
                ready = true;
                break;
            }
            if left.is_zero() {
                break;
            }
        }
        if !ready {
            bail!(
                "the tracer did not {} within {ATTACH_TIMEOUT:?} (run it by hand to see why)",
                if attached {
                    "attach the Go layer"
                } else {
                    "attach"
                }
            );
        }
        Ok(Tracer { proc, out })
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// Stops it (SIGINT) and returns its last snapshot.
    fn stop(mut self) -> Result<Value> {
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe { libc::kill(self.proc.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.proc.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the tracer did not stop within 20s of SIGINT");
            }
            thread::sleep(Duration::from_millis(50));
        }
        let text = fs::read_to_string(&self.out)?;
        let last = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| anyhow!("no snapshot"))?;
        Ok(serde_json::from_str(last)?)
    }
}

/// How long a tracer is left to finish its start (the first full socket scan, the target's
/// binary read) before its CPU is measured: its steady state, not its start, is per request.
/// About 25 ms of CPU in the first half second after "attached" (session 20), which the runs'
/// windows used to include.
const SETTLE: Duration = Duration::from_secs(3);

/// A process's CPU time so far, two ways: its threads' run time from
/// `/proc/PID/task/*/schedstat` (nanoseconds; None where the kernel has no schedstats), and
/// utime + stime from `/proc/PID/stat` (10 ms ticks, but counting threads that have exited).
struct ProcCpu {
    ticks_s: f64,
    threads: Option<BTreeMap<u32, u64>>,
}

fn proc_cpu(pid: u32) -> Result<ProcCpu> {
    let ticks_s = cpu_and_rss(pid)?.0;
    let threads = (|| -> Option<BTreeMap<u32, u64>> {
        let mut threads = BTreeMap::new();
        for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let tid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
            threads.insert(tid, text.split_whitespace().next()?.parse().ok()?);
        }
        Some(threads)
    })();
    Ok(ProcCpu { ticks_s, threads })
}

/// Seconds of CPU between two readings of one process: the threads' run time when every
/// thread of the first is still there and the ticks do not say more was spent (a thread
/// that came and went in between), else the ticks.
fn cpu_between(before: &ProcCpu, after: &ProcCpu) -> f64 {
    let ticks = after.ticks_s - before.ticks_s;
    let (Some(t0), Some(t1)) = (&before.threads, &after.threads) else {
        return ticks;
    };
    if !t0.keys().all(|tid| t1.contains_key(tid)) {
        return ticks;
    }
    let ns: u64 = t1
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(t0.get(tid).copied().unwrap_or(0)))
        .sum();
    let precise = ns as f64 / 1e9;
    // Each tick reading is truncated to 10 ms: two readings are within 20 ms of the truth.
    if ticks > precise + 0.02 {
        ticks
    } else {
        precise
    }
}

/// (utime + stime) in seconds and VmRSS in bytes of a process.
fn cpu_and_rss(pid: u32) -> Result<(f64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("bad stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the state (field 3).
    let ticks: u64 = fields.get(11).zip(fields.get(12)).map_or(Ok(0), |(u, s)| {
        Ok::<u64, anyhow::Error>(u.parse::<u64>()? + s.parse::<u64>()?)
    })?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((ticks as f64 / hz, rss_kb * 1024))
}

/// This thread's CPU time in nanoseconds (CLOCK_THREAD_CPUTIME_ID).
fn thread_cpu_ns() -> f64 {
    // SAFETY: clock_gettime fills the timespec we pass; zeroed is a valid initial value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// CPU nanoseconds this thread spends per round of a 1-byte write and a 1-byte read on a
/// loopback TCP connection of its own: what an unrelated process pays per socket write and
/// read (the loopback delivery runs in the writer's context, so it is in the figure too).
fn socket_round_ns(rounds: u32) -> Result<f64> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let writer = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (reader, _) = listener.accept()?;
    writer.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    let start = thread_cpu_ns();
    for _ in 0..rounds {
        (&writer).write_all(&[1])?;
        (&reader).read_exact(&mut byte)?;
    }
    Ok((thread_cpu_ns() - start) / f64::from(rounds))
}

/// Loopback TCP connections `empty_recv_ns` spreads its calls over: what one call costs moves
/// from one socket to the next (standalone, with the same program on the hook or the tracer,
/// most sockets within a few ns and one in five 30-100 ns dearer), so a figure from a single
/// socket is that socket's luck.
const RECV_SOCKETS: u32 = 8;

/// CPU nanoseconds this thread spends per `recv` on a loopback TCP socket with nothing to
/// read (non-blocking: EAGAIN at once): one pass through the socket read path, so one run of
/// a program on `sock_recv_length`, and no other socket hook. The median over
/// `RECV_SOCKETS` fresh sockets of `rounds / RECV_SOCKETS` calls each.
fn empty_recv_ns(rounds: u32) -> Result<f64> {
    use std::os::fd::AsRawFd as _;
    let per_socket = (rounds / RECV_SOCKETS).max(1);
    let mut figures = Vec::new();
    for _ in 0..RECV_SOCKETS {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let reader = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (_peer, _) = listener.accept()?;
        let mut byte = [0u8; 1];
        let start = thread_cpu_ns();
        for _ in 0..per_socket {
            // SAFETY: a valid socket fd and a 1-byte buffer we own.
            let n = unsafe {
                libc::recv(
                    reader.as_raw_fd(),
                    byte.as_mut_ptr().cast(),
                    1,
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                bail!("recv on a socket nobody writes to returned {n}");
            }
        }
        figures.push((thread_cpu_ns() - start) / f64::from(per_socket));
    }
    Ok(median(&mut figures))
}

/// CPU nanoseconds this thread spends per `getppid` syscall: what any syscall of any process
/// pays for the syscall tracepoints attached on the host (while one is, every syscall takes
/// the kernel's slow syscall-work path).
fn syscall_ns(rounds: u32) -> f64 {
    let start = thread_cpu_ns();
    for _ in 0..rounds {
        // SAFETY: getppid has no arguments and cannot fail; the raw syscall keeps libc from
        // answering from a cache.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    (thread_cpu_ns() - start) / f64::from(rounds)
}

/// The per-event floor: CPU per write-and-read round, and per syscall, of a process the
/// tracer does not trace, without the tracer and with it attached elsewhere (to `elsewhere`,
/// an idle Go program, as a relay is: nothing is attached for blocking reads) on each path,
/// alternating.
fn unrelated_process_cost(
    tracer: &Path,
    elsewhere: u32,
    scratch: &Path,
    report: &mut String,
) -> Result<Value> {
    const ROUNDS: u32 = 200_000;
    const RECVS: u32 = 2_000_000;
    const SYSCALLS: u32 = 2_000_000;
    const REPEATS: usize = 5;
    /// What runs beside the measuring thread: nothing, empty programs, or the tracer (with
    /// this environment).
    enum Beside {
        Nothing,
        Empty,
        Tracer(&'static [(&'static str, &'static str)]),
    }
    let configs: [(&str, Beside); 5] = [
        ("without the tracer", Beside::Nothing),
        (
            "empty programs on the tracer's per-event raw tracepoints (no tracer)",
            Beside::Empty,
        ),
        (
            "tracer attached elsewhere, default hooks (no syscall tracepoint where the kernel allows)",
            Beside::Tracer(&[]),
        ),
        (
            "tracer attached elsewhere, read=sock/sock_recv_length (classic tracepoint, forced)",
            Beside::Tracer(&[("TRACER_READ_HOOK", "sock_recv_length")]),
        ),
        (
            "tracer attached elsewhere, every role on its syscalls (a kernel before 5.15, forced)",
            Beside::Tracer(&[("TRACER_READ_HOOK", "syscalls")]),
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut recvs: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut syscalls: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    // Every configuration measures in a process of more than one thread: the tracer's have the
    // thread that drains its stderr, and a second thread alone makes each socket call of the
    // measuring thread dearer, with nothing attached (about 50 ns per empty recv here,
    // measured standalone; likely the file reference the kernel skips taking only in a
    // single-threaded process). This idle thread keeps the other configurations alike.
    let (stop_idle, idle_stop) = mpsc::channel::<()>();
    let idle = thread::spawn(move || {
        let _ = idle_stop.recv();
    });
    let _ = socket_round_ns(ROUNDS / 4)?; // warm-up
    let _ = empty_recv_ns(RECVS / 4)?;
    for _ in 0..REPEATS {
        for (i, (label, beside)) in configs.iter().enumerate() {
            println!("bench: unrelated process's socket round, empty read and syscall: {label}");
            let (tracer, empty) = match beside {
                Beside::Nothing => (None, None),
                Beside::Empty => (None, Some(EmptyPrograms::attach()?)),
                Beside::Tracer(env) => {
                    let out = scratch.join("floor.json");
                    let t = Tracer::start_with(tracer, elsewhere, out, env, &[])?;
                    // Its steady state, not its start (the first full socket scan, the
                    // target's binary read) on the other CPU.
                    thread::sleep(SETTLE);
                    (Some(t), None)
                }
            };
            samples[i].push(socket_round_ns(ROUNDS)?);
            recvs[i].push(empty_recv_ns(RECVS)?);
            syscalls[i].push(syscall_ns(SYSCALLS));
            if let Some(t) = tracer {
                t.stop()?;
            }
            drop(empty);
        }
    }
    writeln!(
        report,
        "## An unrelated process's socket write and read, and its syscalls\n"
    )?;
    writeln!(report, "CPU time of one thread per round of a 1-byte write and a 1-byte read on its own loopback TCP connection ({ROUNDS} rounds), per `recv` that finds nothing on a non-blocking loopback TCP socket ({RECVS} calls, the median over {RECV_SOCKETS} sockets: one pass through the socket read path, one run of a program on `sock_recv_length`), and per `getppid` syscall ({SYSCALLS} calls), {REPEATS} alternating repeats, medians, the tracer attached to another process (an idle Go program), measured in a process with a second, idle thread in every configuration (a second thread alone adds about 50 ns to each socket call here, which the tracer's configurations, with the thread that drains its log, would otherwise carry alone). With kernel.bpf_stats_enabled off, as on a production host. This includes what bpf_stats cannot see: the kernel's work to call each program (a classic tracepoint fills a trace record first; a raw one passes its arguments), and the slow syscall path every syscall on the host takes while any syscall tracepoint is attached. The empty programs' row is what any program on those hooks costs.\n")?;
    writeln!(
        report,
        "| configuration | ns per round | added ns per round | ns per empty recv | added ns per empty recv | ns per getppid | added ns per getppid |"
    )?;
    writeln!(report, "| --- | --- | --- | --- | --- | --- | --- |")?;
    let base = median(&mut samples[0].clone());
    let base_recv = median(&mut recvs[0].clone());
    let base_sys = median(&mut syscalls[0].clone());
    let mut raw = Vec::new();
    for ((((label, _), v), r), sys) in configs.iter().zip(&samples).zip(&recvs).zip(&syscalls) {
        let m = median(&mut v.clone());
        let mr = median(&mut r.clone());
        let ms = median(&mut sys.clone());
        writeln!(
            report,
            "| {label} | {m:.0} | {:+.0} | {mr:.0} | {:+.1} | {ms:.0} | {:+.0} |",
            m - base,
            mr - base_recv,
            ms - base_sys
        )?;
        raw.push(json!({"config": label, "ns_per_round": v, "ns_per_empty_recv": r, "ns_per_getppid": sys}));
    }
    writeln!(report)?;
    drop(stop_idle);
    let _ = idle.join();
    Ok(json!({"unrelated_process_socket_round": raw}))
}

/// CPU seconds (user + system) of this process's reaped children: wrk, around a wrk run.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds of the relay, the provider and wrk over one wrk run: the load's own CPU,
/// which other work on a shared machine does not inflate (softirq work done outside their
/// context is left out, so it is a lower bound).
struct LoadCpu {
    pids: Vec<u32>,
    start: f64,
}

impl LoadCpu {
    fn start(pids: &[u32]) -> Result<LoadCpu> {
        let mut start = children_cpu_s();
        for pid in pids {
            start += cpu_and_rss(*pid)?.0;
        }
        Ok(LoadCpu {
            pids: pids.to_vec(),
            start,
        })
    }

    fn seconds(&self) -> Result<f64> {
        let mut now = children_cpu_s();
        for pid in &self.pids {
            now += cpu_and_rss(*pid)?.0;
        }
        Ok(now - self.start)
    }
}

/// CPU time the whole machine spent busy (all CPUs; not idle, not waiting for I/O), in
/// seconds, from the first line of /proc/stat.
fn machine_busy_s() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    busy_s_of(&stat)
}

fn busy_s_of(stat: &str) -> Result<f64> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("/proc/stat has no cpu line"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("parsing /proc/stat")?;
    // user nice system idle iowait irq softirq steal (guest time is counted in user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(busy as f64 / hz)
}

/// One program's counters (kernel.bpf_stats_enabled), summed over same-named instances.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct ProgStat {
    /// A uprobe (bpftool's type `kprobe`): the Go layer's, charged a trap per hit besides.
    uprobe: bool,
    run_time_ns: u64,
    run_cnt: u64,
}

/// Counters per program name, for the programs with these ids.
fn bpf_prog_stats(ids: &[u64]) -> Result<BTreeMap<String, ProgStat>> {
    let out = util::stdout_of(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let v: Value = serde_json::from_str(&out).context("parsing bpftool's JSON")?;
    let mut stats = BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        if ids.contains(&p["id"].as_u64().unwrap_or(0)) {
            let name = p["name"].as_str().unwrap_or("?").to_owned();
            let entry: &mut ProgStat = stats.entry(name).or_default();
            entry.uprobe = p["type"].as_str() == Some("kprobe");
            entry.run_time_ns += p["run_time_ns"].as_u64().unwrap_or(0);
            entry.run_cnt += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    Ok(stats)
}

/// kernel.bpf_stats_enabled on while it lives (it charges every program run its clock reads, so
/// it is on only while a tracer on the relay, or the empty programs, are measured).
struct StatsOn;

impl StatsOn {
    fn enable() -> Result<StatsOn> {
        fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(StatsOn)
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, "0");
    }
}

/// Ids of the programs process `pid` holds (the `prog_id` of its fds' fdinfo): other
/// engineers' tracers on a shared machine load programs of the same names, which must not
/// count.
fn prog_ids_of(pid: u32) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_latency(text: &str, pct: &str) -> f64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(pct).map(str::trim))
        .map_or(f64::NAN, |v| {
            let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let n: f64 = num.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => n / 1000.0,
                "ms" => n,
                "s" => n * 1000.0,
                _ => f64::NAN,
            }
        })
}

/// wrk against `url`, with a Lua script (a POST body) when given one.
fn wrk(opts: &Options, url: &str, script: Option<&Path>) -> Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{}", opts.connections),
        &format!("-d{}s", opts.duration.as_secs()),
        "--latency",
    ]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = util::stdout_of(cmd.arg(url))?;
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("wrk printed no Requests/sec:\n{out}"))?;
    if out.contains("Non-2xx") {
        bail!("the proxy answered errors under load:\n{out}");
    }
    Ok(WrkResult {
        rps,
        p50_ms: parse_latency(&out, "50%"),
        p99_ms: parse_latency(&out, "99%"),
    })
}

/// Samples of the memory figure the bench takes: see `run`'s (d).
const MEMORY_SAMPLES: usize = 3;

/// One memory sample: the tracer's resident memory before and after a relay leaks 10k
/// connections to the fake provider, and how many connections it tracked then.
fn memory_sample(
    artifacts: &build::Artifacts,
    scratch: &Path,
    sample: usize,
) -> Result<(u64, u64, u64)> {
    let relay = Proc(
        Command::new(&artifacts.fixture)
            .args([
                "relay",
                "-port",
                &UPSTREAM_PORT.to_string(),
                "-only",
                "status",
                "-rounds",
                "10000",
                "-interval",
                "0",
                "-start-on-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let tracer = Tracer::start(
        &artifacts.tracer,
        relay.0.id(),
        scratch.join(format!("memory-{sample}.json")),
    )?;
    thread::sleep(Duration::from_secs(2));
    let (_, rss0) = cpu_and_rss(tracer.pid())?;
    let mut relay = relay;
    {
        use std::io::Write as _;
        let stdin = relay
            .0
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("relay: no stdin"))?;
        writeln!(stdin, "go")?;
    }
    let stdout = relay
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow!("relay: no stdout"))?;
    let done = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.trim() == "ROUNDS DONE");
    if !done {
        bail!("the leaking relay did not finish its rounds");
    }
    thread::sleep(Duration::from_secs(6));
    let (_, rss1) = cpu_and_rss(tracer.pid())?;
    let snapshot = tracer.stop()?;
    let open = snapshot["open_total"].as_u64().unwrap_or(0);
    drop(relay);
    Ok((rss0, rss1, open))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{cpus} CPUs ({cpu}), kernel {}", kernel.trim())
}

/// What one configuration's wrk run measured. CPU figures are µs per request.
#[derive(Clone, Default)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: f64,
    /// The whole machine's busy CPU (all CPUs, /proc/stat): moves with whatever else runs.
    machine_us: f64,
    /// The relay's, its provider's and wrk's own CPU.
    load_us: f64,
    /// The relay's own CPU: where a uprobe's trap is charged, besides its program.
    relay_us: f64,
    /// The tracer's programs' run time (kernel.bpf_stats_enabled); with the tracer on the relay.
    program_us: f64,
    /// The same, of the uprobes (the Go layer) only.
    uprobe_us: f64,
    /// The tracer process's CPU.
    tracer_us: f64,
    /// The tracer process's CPU as a share of one CPU over the run.
    tracer_cpu_percent: f64,
    /// Lifecycle events the kernel side sent over the tracer's life.
    events: u64,
    /// Each program's counters over the run.
    programs: BTreeMap<String, ProgStat>,
}

/// One wrk run of `config`: the tracer started as it says, everything read around the run.
#[allow(clippy::too_many_arguments)]
fn measure_once(
    opts: &Options,
    url: &str,
    script: Option<&Path>,
    config: &Config,
    relay_pid: u32,
    load_pids: &[u32],
    bins: &Binaries,
    tracer: &Path,
    out: PathBuf,
) -> Result<Sample> {
    let mut idle = None;
    let mut empty = None;
    let traced = match config.attach {
        Attach::Without => None,
        Attach::Relay(args) => Some(Tracer::start_with(tracer, relay_pid, out, &[], args)?),
        Attach::Elsewhere => {
            let program = idle_go_program(bins.fixture)?;
            let t = Tracer::start(tracer, program.0.id(), out)?;
            idle = Some(program);
            Some(t)
        }
        Attach::Empty => {
            empty = Some(EmptyPrograms::attach()?);
            None
        }
    };
    if traced.is_some() {
        // Its steady state, not its start (see `SETTLE`).
        thread::sleep(SETTLE);
    }
    let ours = match (&traced, config.attach) {
        (Some(t), Attach::Relay(_)) => prog_ids_of(t.pid())?,
        _ => Vec::new(),
    };
    let stats_on = if ours.is_empty() && empty.is_none() {
        None
    } else {
        Some(StatsOn::enable()?)
    };
    let stats_of = |ours: &[u64]| -> Result<BTreeMap<String, ProgStat>> {
        match &empty {
            Some(programs) => programs.counters(),
            None => bpf_prog_stats(ours),
        }
    };
    let stats0 = stats_of(&ours)?;
    let tracer_cpu = |t: &Option<Tracer>| -> Result<Option<ProcCpu>> {
        t.as_ref().map(|t| proc_cpu(t.pid())).transpose()
    };
    let tracer0 = tracer_cpu(&traced)?;
    let relay0 = cpu_and_rss(relay_pid)?.0;
    let load = LoadCpu::start(load_pids)?;
    let busy0 = machine_busy_s()?;
    let r = wrk(opts, url, script)?;
    let busy1 = machine_busy_s()?;
    let load_s = load.seconds()?;
    let relay1 = cpu_and_rss(relay_pid)?.0;
    let tracer1 = tracer_cpu(&traced)?;
    let tracer_s = match (&tracer0, &tracer1) {
        (Some(before), Some(after)) => cpu_between(before, after),
        _ => 0.0,
    };
    let stats1 = stats_of(&ours)?;
    drop(stats_on);
    let snapshot = traced.map(Tracer::stop).transpose()?;
    drop(idle);
    drop(empty);

    let requests = r.rps * opts.duration.as_secs_f64();
    let per_req = |seconds: f64| seconds / requests * 1e6;
    let mut programs = BTreeMap::new();
    for (name, after) in stats1 {
        let before = stats0.get(&name).copied().unwrap_or_default();
        programs.insert(
            name,
            ProgStat {
                uprobe: after.uprobe,
                run_time_ns: after.run_time_ns.saturating_sub(before.run_time_ns),
                run_cnt: after.run_cnt.saturating_sub(before.run_cnt),
            },
        );
    }
    let program_s = |only_uprobes: bool| -> f64 {
        programs
            .values()
            .filter(|p| p.uprobe || !only_uprobes)
            // A fold from +0.0: an empty f64 sum is -0.0, which prints as "-0.00".
            .fold(0.0, |sum, p| sum + p.run_time_ns as f64 / 1e9)
    };
    Ok(Sample {
        rps: r.rps,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        requests,
        machine_us: per_req(busy1 - busy0),
        load_us: per_req(load_s),
        relay_us: per_req(relay1 - relay0),
        program_us: per_req(program_s(false)),
        uprobe_us: per_req(program_s(true)),
        tracer_us: per_req(tracer_s),
        tracer_cpu_percent: tracer_s / opts.duration.as_secs_f64() * 100.0,
        events: snapshot
            .as_ref()
            .and_then(|s| s["kernel"]["events_sent"].as_u64())
            .unwrap_or(0),
        programs,
    })
}

/// Median over the runs of one figure of a configuration's samples.
fn med(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&mut samples.iter().map(f).collect::<Vec<_>>())
}

/// Median over the runs of a figure of two configurations' samples of the same run (paired).
fn med_pair(a: &[Sample], b: &[Sample], f: impl Fn(&Sample, &Sample) -> f64) -> f64 {
    median(&mut a.iter().zip(b).map(|(a, b)| f(a, b)).collect::<Vec<_>>())
}

/// A scenario's relay started and warmed up, with what its wrk runs need.
struct Loaded {
    url: String,
    /// wrk's Lua script (a POST body), when the scenario has one.
    script: Option<PathBuf>,
    /// The relay (and its own provider): stopped when this is dropped.
    _running: Running,
    relay_pid: u32,
    /// The relay's and its provider's: the load's own CPU besides wrk's.
    load_pids: [u32; 2],
}

impl Loaded {
    fn start(
        opts: &Options,
        mode: &Scenario,
        bins: &Binaries,
        fixture_upstream: u32,
        scratch: &Path,
    ) -> Result<Loaded> {
        let url = mode.url();
        let script = match mode.wrk_script() {
            Some(text) => {
                let path = scratch.join(format!("{}.lua", mode.key));
                fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                Some(path)
            }
            None => None,
        };
        let running = mode.start(bins, scratch)?;
        let relay_pid = running.relay.0.id();
        let load_pids = [
            relay_pid,
            running
                .upstream
                .as_ref()
                .map_or(fixture_upstream, |p| p.0.id()),
        ];
        // Warm-up: pools, page cache, CPU frequency.
        let _ = wrk(
            &Options {
                duration: Duration::from_secs(3),
                ..opts_copy(opts)
            },
            &url,
            script.as_deref(),
        )?;
        Ok(Loaded {
            url,
            script,
            _running: running,
            relay_pid,
            load_pids,
        })
    }

    /// `opts.runs` wrk runs of each of `n` configurations, the order rotated each run so that
    /// none always follows the same one; `what(i)` is the i-th's label, how the tracer is
    /// attached, and which tracer binary.
    fn alternate<'a>(
        &self,
        opts: &Options,
        mode: &Scenario,
        bins: &Binaries,
        scratch: &Path,
        n: usize,
        what: impl Fn(usize) -> (&'a str, &'a Config, &'a Path),
    ) -> Result<Vec<Vec<Sample>>> {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); n];
        for run in 0..opts.runs as usize {
            for k in 0..n {
                let i = (k + run) % n;
                let (label, config, tracer) = what(i);
                println!(
                    "bench: {} — run {}/{}: {label}",
                    mode.name,
                    run + 1,
                    opts.runs,
                );
                let (load1, _, _) = load_average();
                println!("bench: load average {load1:.2}");
                samples[i].push(measure_once(
                    opts,
                    &self.url,
                    self.script.as_deref(),
                    config,
                    self.relay_pid,
                    &self.load_pids,
                    bins,
                    tracer,
                    scratch.join(format!("{}-{run}-{i}.json", mode.key)),
                )?);
            }
        }
        Ok(samples)
    }
}

/// A scenario: its relay started, warmed up, then each configuration's wrk runs, alternating
/// (the order rotated each run); the report's section, and the raw figures.
#[allow(clippy::too_many_arguments)]
fn measure_scenario(
    opts: &Options,
    mode: &Scenario,
    bins: &Binaries,
    tracer: &Path,
    fixture_upstream: u32,
    scratch: &Path,
    report: &mut String,
) -> Result<Value> {
    let loaded = Loaded::start(opts, mode, bins, fixture_upstream, scratch)?;
    let configs = mode.configs();
    let samples = loaded.alternate(opts, mode, bins, scratch, configs.len(), |i| {
        (configs[i].label, &configs[i], tracer)
    })?;
    drop(loaded);
    write_scenario(report, mode, bins, configs, &samples)?;
    Ok(json!({
        "mode": mode.name,
        "relay": mode.describe(bins.gobench),
        "configurations": configs.iter().zip(&samples).map(|(c, runs)| json!({
            "config": c.label,
            "runs": runs.iter().map(|s| json!({
                "rps": s.rps, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                "machine_cpu_us_per_request": s.machine_us,
                "load_cpu_us_per_request": s.load_us,
                "relay_cpu_us_per_request": s.relay_us,
                "program_cpu_us_per_request": s.program_us,
                "uprobe_program_cpu_us_per_request": s.uprobe_us,
                "tracer_cpu_us_per_request": s.tracer_us,
                "tracer_cpu_percent": s.tracer_cpu_percent,
                "events_sent": s.events,
                "programs": s.programs.iter().map(|(k, p)| json!({
                    "name": k, "uprobe": p.uprobe, "run_time_ns": p.run_time_ns, "run_cnt": p.run_cnt,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}

/// A scenario's section of the report.
fn write_scenario(
    report: &mut String,
    mode: &Scenario,
    bins: &Binaries,
    configs: &[Config],
    samples: &[Vec<Sample>],
) -> Result<()> {
    let without = &samples[0];
    let mb = med(without, |s| s.rps);
    writeln!(report, "## {}\n", mode.name)?;
    writeln!(report, "Relay: {}.\n", mode.describe(bins.gobench))?;
    writeln!(report, "| configuration | median req/s | min–max req/s | median p50 / p99 latency | change vs without |")?;
    writeln!(report, "| --- | --- | --- | --- | --- |")?;
    for (config, runs) in configs.iter().zip(samples) {
        let rps: Vec<f64> = runs.iter().map(|s| s.rps).collect();
        let (lo, hi) = spread(&rps);
        let m = med(runs, |s| s.rps);
        writeln!(
            report,
            "| {} | {m:.0} | {lo:.0}–{hi:.0} | {:.2} / {:.2} ms | {:+.1}% |",
            config.label,
            med(runs, |s| s.p50_ms),
            med(runs, |s| s.p99_ms),
            (m / mb - 1.0) * 100.0
        )?;
    }
    let on_relay: Vec<usize> = (0..configs.len())
        .filter(|i| matches!(configs[*i].attach, Attach::Relay(_)))
        .collect();
    // What an empty program on each hook accounts per run, under the same load.
    let floor: BTreeMap<&str, f64> = configs
        .iter()
        .position(|c| matches!(c.attach, Attach::Empty))
        .map(|at| {
            program_totals(&samples[at])
                .into_iter()
                .filter(|(_, p)| p.run_cnt > 0)
                .map(|(name, p)| (name, p.run_time_ns as f64 / p.run_cnt as f64))
                .collect()
        })
        .unwrap_or_default();
    for &i in &on_relay {
        let runs = &samples[i];
        let prefix = if on_relay.len() > 1 {
            format!("{}: ", configs[i].label)
        } else {
            String::new()
        };
        let requests: f64 = runs.iter().map(|s| s.requests).sum();
        let totals = program_totals(runs);
        writeln!(report, "\n{prefix}Kernel cost per program run (kernel.bpf_stats_enabled, summed over the traced runs{}):\n",
            if totals.values().any(|p| p.uprobe) { "; uprobe: the Go layer's" } else { "" })?;
        if floor.is_empty() {
            writeln!(
                report,
                "| program | runs | runs per request | mean ns per run |"
            )?;
            writeln!(report, "| --- | --- | --- | --- |")?;
        } else {
            writeln!(
                report,
                "| program | runs | runs per request | mean ns per run | an empty program on its hook, ns per run |"
            )?;
            writeln!(report, "| --- | --- | --- | --- | --- |")?;
        }
        for (name, p) in &totals {
            let mean = if p.run_cnt > 0 {
                p.run_time_ns as f64 / p.run_cnt as f64
            } else {
                0.0
            };
            let empty = match (floor.is_empty(), floor.get(name)) {
                (true, _) => String::new(),
                (false, Some(ns)) => format!(" {ns:.0} |"),
                (false, None) => " – |".to_owned(),
            };
            writeln!(
                report,
                "| {name}{} | {} | {:.2} | {mean:.0} |{empty}",
                if p.uprobe { " (uprobe)" } else { "" },
                p.run_cnt,
                p.run_cnt as f64 / requests.max(1.0)
            )?;
        }
        let added: Vec<f64> = runs
            .iter()
            .zip(without)
            .map(|(t, w)| (t.program_us + t.tracer_us) / w.machine_us * 100.0)
            .collect();
        let added_load: Vec<f64> = runs
            .iter()
            .zip(without)
            .map(|(t, w)| (t.program_us + t.tracer_us) / w.load_us * 100.0)
            .collect();
        let a = median(&mut added.clone());
        let (lo, hi) = spread(&added);
        writeln!(
            report,
            "\n{prefix}CPU accounting (less noisy than throughput on a shared VM): without the tracer the machine spends {:.1} µs of CPU per request; attached, the tracer's programs spend {:.2} µs and its process {:.2} µs per request (medians). That is {a:.2}% more CPU per request ({lo:.2}–{hi:.2}% over the runs), so at most about {:.2}% fewer requests per second when the CPUs are saturated.",
            med(without, |s| s.machine_us),
            med(runs, |s| s.program_us),
            med(runs, |s| s.tracer_us),
            a / (1.0 + a / 100.0),
        )?;
        let al = median(&mut added_load.clone());
        let (lo, hi) = spread(&added_load);
        writeln!(
            report,
            "\n{prefix}Against the load's own CPU (relay, provider and wrk: {:.1} µs per request without the tracer, which the rest of the shared machine does not inflate): {al:.2}% more ({lo:.2}–{hi:.2}%).",
            med(without, |s| s.load_us),
        )?;
        if !floor.is_empty() {
            let net: Vec<f64> = runs
                .iter()
                .map(|t| t.program_us - floor_us(t, &floor))
                .collect();
            let added_net: Vec<f64> = runs
                .iter()
                .zip(&net)
                .zip(without)
                .map(|((t, n), w)| (n + t.tracer_us) / w.machine_us * 100.0)
                .collect();
            let an = median(&mut added_net.clone());
            let (lo, hi) = spread(&added_net);
            let per_hook: Vec<String> = floor
                .iter()
                .map(|(name, ns)| format!("{ns:.0} ns under {name}"))
                .collect();
            writeln!(
                report,
                "\n{prefix}Net of the accounting's own floor (an empty program on the same hook, same load, other runs: {}; what kernel.bpf_stats_enabled charges for its clock reads around a program that does nothing): the programs spend {:.2} µs per request above that floor, {an:.2}% more CPU per request with the process ({lo:.2}–{hi:.2}%). Neither figure holds the kernel's call of each program: the floor section measures it.",
                per_hook.join(", "),
                median(&mut net.clone()),
            )?;
        }
        let (base_m, traced_m) = (med(without, |s| s.machine_us), med(runs, |s| s.machine_us));
        writeln!(
            report,
            "\n{prefix}Machine busy CPU per request, measured directly: {base_m:.1} µs without, {traced_m:.1} µs with the tracer on the relay ({:+.1}%; noisy).",
            (traced_m / base_m - 1.0) * 100.0
        )?;
        writeln!(
            report,
            "\n{prefix}Tracer user-space CPU while traced: {:.1}% of one CPU (median).",
            med(runs, |s| s.tracer_cpu_percent)
        )?;
        let per_100k: Vec<f64> = runs
            .iter()
            .filter(|s| s.events >= 10_000)
            .map(|s| s.tracer_us * s.requests / 1e6 / s.events as f64 * 100_000.0)
            .collect();
        if per_100k.is_empty() {
            // With few events the figure is the per-second sampling, not the events.
            writeln!(
                report,
                "Too few lifecycle events (under 10k a run) for a per-event CPU figure."
            )?;
        } else {
            writeln!(
                report,
                "Tracer CPU per 100k lifecycle events: {:.3} CPU-seconds (median of {} runs).",
                median(&mut per_100k.clone()),
                per_100k.len()
            )?;
        }
    }
    // The first configuration on the relay is `--go-probes off`; each other one is a Go
    // layer mode, set apart from it.
    if let [off, ref modes @ ..] = on_relay[..] {
        for &mode in modes {
            let Attach::Relay(args) = configs[mode].attach else {
                continue;
            };
            let name = args.last().copied().unwrap_or("?");
            write_layers(report, name, without, &samples[off], &samples[mode])?;
        }
    }
    writeln!(report)?;
    Ok(())
}

/// Each program's counters summed over a configuration's runs.
fn program_totals(runs: &[Sample]) -> BTreeMap<&str, ProgStat> {
    let mut totals: BTreeMap<&str, ProgStat> = BTreeMap::new();
    for (name, p) in runs.iter().flat_map(|s| &s.programs) {
        let t = totals.entry(name).or_default();
        t.uprobe = p.uprobe;
        t.run_time_ns += p.run_time_ns;
        t.run_cnt += p.run_cnt;
    }
    totals
}

/// µs per request that empty programs would have accounted for a run's program runs: each
/// program's runs at the floor of its hook (programs on other hooks count nothing).
fn floor_us(run: &Sample, floor: &BTreeMap<&str, f64>) -> f64 {
    let ns: f64 = run
        .programs
        .iter()
        .filter_map(|(name, p)| floor.get(name.as_str()).map(|f| p.run_cnt as f64 * f))
        .sum();
    ns / 1e3 / run.requests.max(1.0)
}

/// The kernel layer and the Go layer apart and together, from the runs' paired differences:
/// without the tracer, `--go-probes off`, and a Go layer mode (`auto`, `sites`).
fn write_layers(
    report: &mut String,
    mode: &str,
    w: &[Sample],
    off: &[Sample],
    auto: &[Sample],
) -> Result<()> {
    let hits = |runs: &[Sample]| -> f64 {
        let (cnt, requests) = runs.iter().fold((0u64, 0.0), |(c, r), s| {
            (
                c + s
                    .programs
                    .values()
                    .filter(|p| p.uprobe)
                    .map(|p| p.run_cnt)
                    .sum::<u64>(),
                r + s.requests,
            )
        });
        cnt as f64 / requests.max(1.0)
    };
    let accounted = |s: &Sample| s.program_us + s.tracer_us;
    // The uprobes' cost the programs' run time does not hold (the trap, the probe's lookup,
    // the return to user space), charged to the relay: its extra CPU less the programs'.
    let trap = |a: &Sample, o: &Sample| (a.relay_us - o.relay_us) - (a.uprobe_us - o.uprobe_us);
    writeln!(report, "\nThe two layers apart and together, `--go-probes {mode}` (µs of CPU per request; medians over the runs of each run's paired differences, so the machine's drift between runs cancels):\n")?;
    writeln!(report, "| per request | kernel layer (off − without) | Go layer ({mode} − off) | whole tracer ({mode} − without) |")?;
    writeln!(report, "| --- | --- | --- | --- |")?;
    let mut row = |label: &str, k: f64, g: f64, t: f64| {
        let k = if k.is_nan() {
            "—".to_owned()
        } else {
            format!("{k:.2}")
        };
        writeln!(report, "| {label} | {k} | {g:+.2} | {t:.2} |")
    };
    row(
        "programs' run time (bpf_stats)",
        med(off, |s| s.program_us),
        med_pair(auto, off, |a, o| a.program_us - o.program_us),
        med(auto, |s| s.program_us),
    )?;
    row(
        "of which the Go layer's uprobes",
        med(off, |s| s.uprobe_us),
        med_pair(auto, off, |a, o| a.uprobe_us - o.uprobe_us),
        med(auto, |s| s.uprobe_us),
    )?;
    row(
        "uprobe hits (runs per request)",
        hits(off),
        hits(auto) - hits(off),
        hits(auto),
    )?;
    row(
        "tracer process",
        med(off, |s| s.tracer_us),
        med_pair(auto, off, |a, o| a.tracer_us - o.tracer_us),
        med(auto, |s| s.tracer_us),
    )?;
    row(
        "accounted: programs + tracer process",
        med(off, accounted),
        med_pair(auto, off, |a, o| accounted(a) - accounted(o)),
        med(auto, accounted),
    )?;
    row(
        "relay's CPU, measured (/proc/PID/stat)",
        med_pair(off, w, |o, w| o.relay_us - w.relay_us),
        med_pair(auto, off, |a, o| a.relay_us - o.relay_us),
        med_pair(auto, w, |a, w| a.relay_us - w.relay_us),
    )?;
    row(
        "relay's extra CPU outside the uprobes' run time (the trap)",
        f64::NAN,
        med_pair(auto, off, trap),
        med_pair(auto, off, trap),
    )?;
    row(
        "measured: load's CPU (relay, provider, wrk) + tracer process",
        med_pair(off, w, |o, w| o.load_us - w.load_us + o.tracer_us),
        med_pair(auto, off, |a, o| {
            a.load_us - o.load_us + a.tracer_us - o.tracer_us
        }),
        med_pair(auto, w, |a, w| a.load_us - w.load_us + a.tracer_us),
    )?;
    let go_hits = hits(auto) - hits(off);
    let (load, relay) = (med(w, |s| s.load_us), med(w, |s| s.relay_us));
    let accounted_go = med_pair(auto, off, |a, o| accounted(a) - accounted(o));
    if go_hits < 0.01 {
        // No uprobe hit: the relay's difference is the measurement's noise, not a trap.
        writeln!(
            report,
            "\nWithout the tracer a request costs {load:.1} µs of the load's own CPU, {relay:.1} µs of it in the relay. The Go layer's uprobes did not run on the request path ({go_hits:.3} hits per request), so the relay's difference ({:+.2} µs) is the noise of this measurement.",
            med_pair(auto, off, |a, o| a.relay_us - o.relay_us)
        )?;
        writeln!(
            report,
            "\nGo layer, accounted: {accounted_go:.2} µs per request (budget 2 µs). Whole tracer, accounted: {:.2} µs per request, {:.2}% of the load's own CPU per request and {:.2}% of the relay's (target below 1%).",
            med(auto, accounted),
            med(auto, accounted) / load * 100.0,
            med(auto, accounted) / relay * 100.0
        )?;
        return Ok(());
    }
    let trap_us = med_pair(auto, off, trap);
    let go_layer = med_pair(auto, off, |a, o| accounted(a) - accounted(o) + trap(a, o));
    let whole = med_pair(auto, off, |a, o| accounted(a) + trap(a, o));
    writeln!(
        report,
        "\nWithout the tracer a request costs {load:.1} µs of the load's own CPU, {relay:.1} µs of it in the relay. The Go layer's uprobes hit {go_hits:.2} times per request; the relay's CPU outside their programs' run time, {trap_us:.2} µs per request, is about {:.1} µs per hit (the trap into the kernel and back, which bpf_stats does not see).",
        trap_us / go_hits
    )?;
    writeln!(
        report,
        "\nGo layer, accounted plus its trap: {go_layer:.2} µs per request (budget 2 µs). Whole tracer, accounted plus the Go layer's trap: {whole:.2} µs per request, {:.2}% of the load's own CPU per request and {:.2}% of the relay's (target below 1%).",
        whole / load * 100.0,
        whole / relay * 100.0
    )?;
    Ok(())
}

pub fn run(opts: Options) -> Result<()> {
    if !util::is_root() {
        bail!("the benchmark loads eBPF programs and needs root: run: sudo -E env \"PATH=$PATH\" cargo xtask bench");
    }
    for key in &opts.scenarios {
        if key != "floor" && !SCENARIOS.iter().any(|s| s.key == key) {
            let keys: Vec<&str> = SCENARIOS.iter().map(|s| s.key).collect();
            bail!(
                "no bench scenario {key}: use one of {}, floor",
                keys.join(", ")
            );
        }
    }
    let scenarios: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| opts.scenarios.is_empty() || opts.scenarios.iter().any(|k| k == s.key))
        .collect();
    let partial = !opts.scenarios.is_empty();
    let ab_args = ab::go_probes_args(opts.ab_go_probes.as_deref())?;
    if !opts.ab.is_empty() {
        ab::check_builds(&opts.ab)?;
        if scenarios.is_empty() || opts.scenarios.iter().any(|k| k == "floor") {
            let keys: Vec<&str> = SCENARIOS.iter().map(|s| s.key).collect();
            bail!("--ab needs --scenarios, one or more of {}", keys.join(", "));
        }
    }
    setup::ensure_for(setup::Purpose::Bench).context("bench")?;
    if util::find_on_path("wrk").is_none() {
        bail!("wrk is missing after setup: run: apt-get install --no-install-recommends wrk");
    }
    let caddy_used = scenarios.iter().any(|s| matches!(s.relay, Relay::Caddy(_)));
    if caddy_used && util::find_on_path("caddy").is_none() {
        bail!("caddy is missing after setup: run: apt-get install --no-install-recommends caddy");
    }
    let go_used = scenarios
        .iter()
        .any(|s| matches!(s.relay, Relay::Go { .. }));
    let gobench = if go_used {
        Some(gomatrix::bench_relay().context("bench: the Go-layer relay")?)
    } else {
        None
    };
    let mut artifacts = build::build().context("bench")?;
    // A tracer built elsewhere (an earlier commit, for a before/after pair).
    if let Some(bin) = std::env::var_os("TRACER_BENCH_BIN") {
        artifacts.tracer = PathBuf::from(bin);
    }
    let root = util::workspace_root();
    let out_dir = root.join("bench");
    fs::create_dir_all(&out_dir)?;
    let scratch = std::env::temp_dir().join(format!("tracer-bench-{}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    let stats_before = fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".into());

    let upstream = spawn_ready(
        Command::new(&artifacts.fixture).args([
            "upstream",
            "-port",
            &UPSTREAM_PORT.to_string(),
            "-idle-timeout",
            "30s",
        ]),
        "the fake provider",
    )?;
    let mut report = String::new();
    let mut raw = Vec::new();
    writeln!(report, "# tracer overhead benchmark\n")?;
    let (load1, load5, _) = load_average();
    writeln!(
        report,
        "Machine: {}; load average {load1:.2} (1 min) / {load5:.2} (5 min) at the start. Command: `cargo xtask bench --duration {}s --runs {} --connections {}{}`.",
        machine(),
        opts.duration.as_secs(),
        opts.runs,
        opts.connections,
        if partial {
            format!(" --scenarios {}", opts.scenarios.join(","))
        } else {
            String::new()
        }
    )?;
    writeln!(report, "Load: wrk -t2 -c{} against each scenario's relay. wrk, the relay, the provider and the tracer share the machine's CPUs.\n", opts.connections)?;
    writeln!(report, "Added CPU per request is accounted: the tracer's programs' run time (kernel.bpf_stats_enabled, which charges each run its own clock reads: an empty program on the same hook, run under the same load as a configuration of its own, measures that floor, and each scenario gives the figure net of it too) plus the tracer process's CPU, per request, against the whole machine's busy CPU per request without the tracer. The machine's own busy CPU per request with the tracer is shown too (it also holds what the accounting cannot see, the kernel's work to call each program, but moves with whatever else the shared machine runs).\n")?;

    let bins = Binaries {
        fixture: &artifacts.fixture,
        gobench: gobench.as_ref(),
    };
    if !opts.ab.is_empty() {
        let mut report = format!(
            "# tracer A/B\n\nMachine: {}; load average {load1:.2} at the start. Command: `cargo xtask bench --ab {} --scenarios {} --duration {}s --runs {}{}`. Load: wrk -t2 -c{}. Accounted CPU per request: the programs' run time (kernel.bpf_stats_enabled) plus the tracer process's CPU.\n\n",
            machine(),
            opts.ab.iter().map(|b| b.display().to_string()).collect::<Vec<_>>().join(","),
            opts.scenarios.join(","),
            opts.duration.as_secs(),
            opts.runs,
            opts.ab_go_probes.as_ref().map_or(String::new(), |m| format!(" --ab-go-probes {m}")),
            opts.connections,
        );
        for mode in &scenarios {
            ab::measure(
                &opts,
                mode,
                &opts.ab,
                ab_args,
                &bins,
                upstream.0.id(),
                &scratch,
                &mut report,
            )?;
        }
        return write_aside(&root, "AB.md", &report, &stats_before, &scratch);
    }
    for mode in &scenarios {
        raw.push(measure_scenario(
            &opts,
            mode,
            &bins,
            &artifacts.tracer,
            upstream.0.id(),
            &scratch,
            &mut report,
        )?);
    }

    if !partial || opts.scenarios.iter().any(|k| k == "floor") {
        raw.push(unrelated_process_cost(
            &artifacts.tracer,
            upstream.0.id(),
            &scratch,
            &mut report,
        )?);
    }
    if partial {
        return write_aside(
            &root,
            "RESULTS-partial.md",
            &report,
            &stats_before,
            &scratch,
        );
    }
    // (d) memory per 10k tracked connections: a relay that leaks 10k connections, several
    // times: the allocator grows in steps of about 1.3 MiB, so one sample lands on a step or
    // below it (8.5-10.1 MiB per 10k over ten samples of one build, bench/RESULTS.md).
    let mut per_10k = Vec::new();
    let mut idle = Vec::new();
    let mut tracked = 0;
    for sample in 1..=MEMORY_SAMPLES {
        println!("bench: memory with 10k leaked connections — sample {sample}/{MEMORY_SAMPLES}");
        let (rss0, rss1, open) = memory_sample(&artifacts, &scratch, sample)?;
        if open > 0 {
            per_10k.push(rss1.saturating_sub(rss0) as f64 / open as f64 * 10_000.0 / 1_048_576.0);
        }
        idle.push(rss0 as f64 / 1_048_576.0);
        tracked = tracked.max(open);
        raw.push(json!({"memory": {"rss_idle": rss0, "rss_loaded": rss1, "tracked": open}}));
    }
    let (low, high) = spread(&per_10k);
    writeln!(
        report,
        "## Memory\n\nTracer resident memory: {:.1} MiB idle, {:.2} MiB per 10k tracked connections ({tracked} tracked; median of {} samples, {low:.2}–{high:.2}).\n",
        median(&mut idle),
        median(&mut per_10k),
        per_10k.len()
    )?;

    let _ = fs::write(BPF_STATS, stats_before.trim());
    let _ = fs::remove_dir_all(&scratch);
    let results = out_dir.join("RESULTS.md");
    if let Some(history) = fs::read_to_string(&results)
        .ok()
        .and_then(|old| old.find(HISTORY_MARK).map(|at| old[at..].to_owned()))
    {
        report.push_str(&history);
    }
    fs::write(results, &report)?;
    fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&raw)?,
    )?;
    println!("{report}");
    println!("bench: wrote bench/RESULTS.md and bench/results.json");
    Ok(())
}

/// Ends a run whose report is not bench/RESULTS.md (some scenarios only, an A/B): the stats
/// setting put back, the scratch directory gone, the report in target/bench/`name`.
fn write_aside(
    root: &Path,
    name: &str,
    report: &str,
    stats_before: &str,
    scratch: &Path,
) -> Result<()> {
    let _ = fs::write(BPF_STATS, stats_before.trim());
    let _ = fs::remove_dir_all(scratch);
    let dir = root.join("target").join("bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), report)?;
    println!("{report}");
    println!("bench: wrote target/bench/{name}");
    Ok(())
}

fn opts_copy(o: &Options) -> Options {
    Options {
        duration: o.duration,
        runs: o.runs,
        connections: o.connections,
        scenarios: o.scenarios.clone(),
        ab: o.ab.clone(),
        ab_go_probes: o.ab_go_probes.clone(),
    }
}

/// The 1, 5 and 15 minute load averages (NaN when unreadable).
fn load_average() -> (f64, f64, f64) {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
    (
        v.next().unwrap_or(f64::NAN),
        v.next().unwrap_or(f64::NAN),
        v.next().unwrap_or(f64::NAN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_latency_lines_in_any_unit() {
        let out =
            "  Latency Distribution\n     50%  412.00us\n     75%    1.20ms\n     99%    2.5s\n";
        assert!((parse_latency(out, "50%") - 0.412).abs() < 1e-9);
        assert!((parse_latency(out, "75%") - 1.2).abs() < 1e-9);
        assert!((parse_latency(out, "99%") - 2500.0).abs() < 1e-9);
        assert!(parse_latency(out, "90%").is_nan());
    }

    #[test]
    fn process_cpu_is_the_threads_run_time_unless_a_thread_went() {
        let reading = |ticks_s: f64, threads: &[(u32, u64)]| ProcCpu {
            ticks_s,
            threads: Some(threads.iter().copied().collect()),
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // Same threads, one new: the run times' differences, the new one whole (21 ms), not
        // the ticks' 30 ms.
        let before = reading(1.00, &[(10, 500_000_000), (11, 7_000_000)]);
        let after = reading(1.03, &[(10, 515_000_000), (11, 9_000_000), (12, 4_000_000)]);
        assert!(close(cpu_between(&before, &after), 0.021));
        // A thread of the first reading is gone: its time in between is unknown, so ticks.
        let gone = reading(1.05, &[(10, 515_000_000)]);
        assert!(close(cpu_between(&before, &gone), 0.05));
        // A thread came and went in between (the ticks say 60 ms more): ticks.
        let missed = reading(1.10, &[(10, 515_000_000), (11, 9_000_000)]);
        assert!(close(cpu_between(&before, &missed), 0.10));
        // No schedstats in this kernel: ticks.
        let bare = ProcCpu {
            ticks_s: 1.02,
            threads: None,
        };
        assert!(close(cpu_between(&before, &bare), 0.02));
        // This process, read for real: its threads are there and time only goes forward.
        let me = proc_cpu(std::process::id()).expect("this process's CPU");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(thread_cpu_ns());
        }
        let later = proc_cpu(std::process::id()).expect("this process's CPU");
        let spent = cpu_between(&me, &later);
        assert!(spent >= 0.02, "30 ms of spinning read as {spent} s");
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let stat = "cpu  100 1 20 5000 70 3 4 2 0 0\ncpu0 50 0 10 2500 35 1 2 1 0 0\n";
        let busy = busy_s_of(stat).expect("parses");
        assert!((busy - 130.0 / hz).abs() < 1e-9, "{busy}");
        assert!(busy_s_of("intr 1 2 3\n").is_err());
        assert!(machine_busy_s().expect("reads /proc/stat") > 0.0);
    }

    /// A run's sample with these per-request figures and this many uprobe hits per request.
    fn sample(relay_us: f64, program_us: f64, uprobe_us: f64, tracer_us: f64, hits: u64) -> Sample {
        let mut programs = BTreeMap::new();
        programs.insert(
            "exit_h2_site".to_owned(),
            ProgStat {
                uprobe: true,
                run_time_ns: 0,
                run_cnt: hits * 1000,
            },
        );
        Sample {
            requests: 1000.0,
            load_us: relay_us + 50.0,
            relay_us,
            program_us,
            uprobe_us,
            tracer_us,
            programs,
            ..Sample::default()
        }
    }

    #[test]
    fn the_accounting_floor_counts_each_program_s_runs_at_its_own_hook_s_empty_cost() {
        let mut run = sample(90.0, 2.0, 0.0, 0.5, 0);
        for (name, runs) in [
            ("sock_recv", 8_000),
            ("sock_send", 4_000),
            ("enter_read", 500),
        ] {
            let stat = ProgStat {
                uprobe: false,
                run_time_ns: runs * 90,
                run_cnt: runs,
            };
            run.programs.insert(name.to_owned(), stat);
        }
        let floor = BTreeMap::from([("sock_recv", 70.0), ("sock_send", 60.0)]);
        // (8 × 70 + 4 × 60) ns per request; enter_read (no empty program there) and the
        // uprobe count nothing.
        assert!((floor_us(&run, &floor) - 0.8).abs() < 1e-9);
        assert_eq!(floor_us(&run, &BTreeMap::new()), 0.0);

        let configs = [
            WITHOUT,
            Config {
                label: "tracer attached to the relay",
                attach: Attach::Relay(&[]),
            },
            Config {
                label: "empty programs on the same hooks (no tracer)",
                attach: Attach::Empty,
            },
        ];
        let mut empty = sample(90.0, 0.9, 0.0, 0.0, 0);
        for (name, runs, ns) in [("sock_recv", 8_000u64, 70u64), ("sock_send", 4_000, 60)] {
            let stat = ProgStat {
                uprobe: false,
                run_time_ns: runs * ns,
                run_cnt: runs,
            };
            empty.programs.insert(name.to_owned(), stat);
        }
        let without = Sample {
            machine_us: 100.0,
            ..sample(100.0, 0.0, 0.0, 0.0, 0)
        };
        let samples = vec![vec![without], vec![run], vec![empty]];
        let mode = &SCENARIOS[0];
        let bins = Binaries {
            fixture: Path::new("fixture"),
            gobench: None,
        };
        let mut report = String::new();
        write_scenario(&mut report, mode, &bins, &configs, &samples).expect("writes");
        assert!(
            report.contains("| sock_recv | 8000 | 8.00 | 90 | 70 |"),
            "{report}"
        );
        assert!(
            report.contains("| enter_read | 500 | 0.50 | 90 | – |"),
            "{report}"
        );
        // (2.0 - 0.8 + 0.5) µs of the machine's 100 per request without the tracer.
        assert!(
            report.contains("the programs spend 1.20 µs per request above that floor, 1.70% more CPU per request"),
            "{report}"
        );
    }

    #[test]
    fn layers_charge_the_relay_s_extra_cpu_to_the_uprobes_trap() {
        let without = vec![sample(90.0, 0.0, 0.0, 0.0, 0); 3];
        let off = vec![sample(93.0, 1.0, 0.0, 0.5, 0); 3];
        let sites = vec![sample(113.0, 2.5, 1.5, 1.0, 1); 3];
        let mut report = String::new();
        write_layers(&mut report, "sites", &without, &off, &sites).expect("writes");
        // The relay's extra 20 µs less the uprobes' 1.5 µs run time.
        assert!(
            report.contains("18.50 µs per request, is about 18.5 µs per hit"),
            "{report}"
        );
        // Go layer: (2.5 + 1.0) - (1.0 + 0.5) accounted, plus the trap.
        assert!(
            report.contains("Go layer, accounted plus its trap: 20.50 µs"),
            "{report}"
        );
        assert!(
            report.contains("| uprobe hits (runs per request) | 0.00 | +1.00 | 1.00 |"),
            "{report}"
        );

        // No hit: the relay's difference is noise, not a trap.
        let auto = vec![sample(94.0, 1.0, 0.0, 0.6, 0); 3];
        let mut report = String::new();
        write_layers(&mut report, "auto", &without, &off, &auto).expect("writes");
        assert!(
            report.contains("is the noise of this measurement"),
            "{report}"
        );
        assert!(report.contains("Go layer, accounted: 0.10 µs"), "{report}");
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 3.0));
    }
}
