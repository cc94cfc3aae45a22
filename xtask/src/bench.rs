//! `cargo xtask bench`: what the tracer costs the relay, measured, not assumed.
//!
//! For each scenario (the fixture relay as an HTTP proxy in front of a fake provider, with
//! pooled upstream connections and with a new one per request; Caddy, a real Go reverse proxy,
//! in front of the same provider over HTTP/1.1 and over HTTP/2 with TLS): (a) wrk runs
//! alternating without and with the tracer attached to the relay; (b) kernel cost per program
//! run from kernel.bpf_stats_enabled, and runs per request; (c) the same load with the tracer
//! attached to another process (the relay untracked); then (d) the tracer's own CPU per 100k
//! lifecycle events and memory per 10k tracked connections. Results go to bench/RESULTS.md and
//! bench/results.json. Last, (e) the floor: what an unrelated process pays per socket write
//! and read with the tracer attached elsewhere, on each read path. A run of some scenarios only (`--scenarios`) writes
//! target/bench/RESULTS-partial.md instead. RESULTS.md keeps what follows `HISTORY_MARK`
//! (the hand-written before/after of each change) from one run to the next.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::{build, setup, util};

const UPSTREAM_PORT: u16 = 18310;
const PROXY_ADDR: &str = "127.0.0.1:18311";
const CADDY_ADDR: &str = "127.0.0.1:18312";
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// Everything from this line on in bench/RESULTS.md is kept when the bench rewrites it.
const HISTORY_MARK: &str = "<!-- history: kept by cargo xtask bench -->";

pub struct Options {
    pub duration: Duration,
    pub runs: u32,
    pub connections: u32,
    /// Scenario keys to run (`Scenario::key`); empty: all of them.
    pub scenarios: Vec<String>,
}

/// The relay under load in a scenario.
enum Relay {
    /// `fixture proxy` with these extra arguments, on `PROXY_ADDR`.
    Fixture(&'static [&'static str]),
    /// Debian's Caddy on `CADDY_ADDR`, with this `reverse_proxy` block.
    Caddy(&'static str),
}

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
];

impl Scenario {
    fn url(&self) -> String {
        match self.relay {
            Relay::Fixture(_) => format!("http://{PROXY_ADDR}/"),
            Relay::Caddy(_) => {
                format!("http://{CADDY_ADDR}/v1/chat/completions?scenario=ok")
            }
        }
    }

    fn describe(&self) -> String {
        match self.relay {
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
            Relay::Fixture(_) => String::new(),
        }
    }

    /// Starts the relay and waits until it serves.
    fn start(&self, fixture: &Path, scratch: &Path) -> Result<Proc> {
        match self.relay {
            Relay::Fixture(args) => {
                let mut cmd = Command::new(fixture);
                cmd.args([
                    "proxy",
                    "-listen",
                    PROXY_ADDR,
                    "-port",
                    &UPSTREAM_PORT.to_string(),
                ])
                .args(args);
                spawn_ready(&mut cmd, "the relay proxy")
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
                Ok(proc)
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

/// A tracer attached to `pid`, with its JSON snapshots going to a file.
struct Tracer {
    proc: Proc,
    out: PathBuf,
}

impl Tracer {
    fn start(tracer: &Path, pid: u32, out: PathBuf) -> Result<Tracer> {
        Self::start_with(tracer, pid, out, &[])
    }

    /// As `start`, with extra environment (`TRACER_READ_HOOK` to force a read path).
    fn start_with(tracer: &Path, pid: u32, out: PathBuf, env: &[(&str, &str)]) -> Result<Tracer> {
        let file = fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut child = Command::new(tracer)
            .envs(env.iter().copied())
            .args([
                "run",
                "--json",
                "--interval",
                "5s",
                "--pid",
                &pid.to_string(),
            ])
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the tracer")?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("tracer: no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("tracer: attached") => break,
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.kill();
                    bail!("the tracer did not attach (run it by hand to see why)")
                }
            }
        }
        // Keep draining stderr so the tracer never blocks on a full pipe.
        thread::spawn(move || for _ in lines {});
        Ok(Tracer {
            proc: Proc(child),
            out,
        })
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

/// The per-event floor: CPU per write-and-read round of a process the tracer does not trace,
/// without the tracer and with it attached elsewhere on each read path, alternating.
fn unrelated_process_cost(tracer: &Path, scratch: &Path, report: &mut String) -> Result<Value> {
    const ROUNDS: u32 = 200_000;
    const REPEATS: usize = 5;
    let configs: [(&str, &[(&str, &str)]); 4] = [
        ("without the tracer", &[]),
        (
            "tracer attached elsewhere, read=raw_tp/sock_recv_length (default)",
            &[],
        ),
        (
            "tracer attached elsewhere, read=sock/sock_recv_length (classic tracepoint, forced)",
            &[("TRACER_READ_HOOK", "sock_recv_length")],
        ),
        (
            "tracer attached elsewhere, read=syscalls/sys_exit_read (pre-6.3 path, forced)",
            &[("TRACER_READ_HOOK", "syscalls")],
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let _ = socket_round_ns(ROUNDS / 4)?; // warm-up
    for _ in 0..REPEATS {
        for (i, (label, env)) in configs.iter().enumerate() {
            println!("bench: unrelated process's socket round: {label}");
            if i == 0 {
                samples[i].push(socket_round_ns(ROUNDS)?);
                continue;
            }
            let mut idle = Proc(Command::new("sleep").arg("3600").spawn()?);
            let t = Tracer::start_with(tracer, idle.0.id(), scratch.join("floor.json"), env)?;
            samples[i].push(socket_round_ns(ROUNDS)?);
            t.stop()?;
            let _ = idle.0.kill();
        }
    }
    writeln!(report, "## An unrelated process's socket write and read\n")?;
    writeln!(report, "CPU time of one thread per round of a 1-byte write and a 1-byte read on its own loopback TCP connection ({ROUNDS} rounds, {REPEATS} alternating repeats, medians), the tracer attached to another process. This includes what bpf_stats cannot see: the kernel's work to call each program (a classic tracepoint fills a trace record first; a raw one passes its arguments).\n")?;
    writeln!(
        report,
        "| configuration | ns per round | added ns per round |"
    )?;
    writeln!(report, "| --- | --- | --- |")?;
    let base = median(&mut samples[0].clone());
    let mut raw = Vec::new();
    for ((label, _), v) in configs.iter().zip(&samples) {
        let m = median(&mut v.clone());
        writeln!(report, "| {label} | {m:.0} | {:+.0} |", m - base)?;
        raw.push(json!({"config": label, "ns_per_round": v}));
    }
    writeln!(report)?;
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

/// run_time_ns and run_cnt per program name, for the programs with these ids.
fn bpf_prog_stats(ids: &[u64]) -> Result<BTreeMap<String, (u64, u64)>> {
    let out = util::stdout_of(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let v: Value = serde_json::from_str(&out).context("parsing bpftool's JSON")?;
    let mut stats = BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        if ids.contains(&p["id"].as_u64().unwrap_or(0)) {
            let name = p["name"].as_str().unwrap_or("?").to_owned();
            let entry = stats.entry(name).or_insert((0, 0));
            entry.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            entry.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    Ok(stats)
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

fn wrk(opts: &Options, url: &str) -> Result<WrkResult> {
    let out = util::stdout_of(Command::new("wrk").args([
        "-t2",
        &format!("-c{}", opts.connections),
        &format!("-d{}s", opts.duration.as_secs()),
        "--latency",
        url,
    ]))?;
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
    setup::ensure_for(setup::Purpose::Bench).context("bench")?;
    if util::find_on_path("wrk").is_none() {
        bail!("wrk is missing after setup: run: apt-get install --no-install-recommends wrk");
    }
    let caddy_used = scenarios.iter().any(|s| matches!(s.relay, Relay::Caddy(_)));
    if caddy_used && util::find_on_path("caddy").is_none() {
        bail!("caddy is missing after setup: run: apt-get install --no-install-recommends caddy");
    }
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
    writeln!(report, "Added CPU per request is accounted: the tracer's programs' run time (kernel.bpf_stats_enabled, which itself adds about 20 ns per run) plus the tracer process's CPU, per request, against the whole machine's busy CPU per request without the tracer. The machine's own busy CPU per request with the tracer is shown too (it also holds what the accounting cannot see, the kernel's work to call each program, but moves with whatever else the shared machine runs).\n")?;

    for mode in &scenarios {
        let url = mode.url();
        let proxy = mode.start(&artifacts.fixture, &scratch)?;
        let proxy_pid = proxy.0.id();
        let load_pids = [proxy_pid, upstream.0.id()];
        // Warm-up: pools, page cache, CPU frequency.
        let _ = wrk(
            &Options {
                duration: Duration::from_secs(3),
                ..opts_copy(&opts)
            },
            &url,
        )?;

        let (mut base, mut traced, mut elsewhere) = (Vec::new(), Vec::new(), Vec::new());
        let (mut base_p99, mut traced_p99) = (Vec::new(), Vec::new());
        let (mut base_p50, mut traced_p50) = (Vec::new(), Vec::new());
        let mut prog_totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut cpu_per_100k = Vec::new();
        let mut cpu_share = Vec::new();
        let (mut base_us_per_req, mut kernel_us_per_req) = (Vec::new(), Vec::new());
        let (mut user_us_per_req, mut added_percent) = (Vec::new(), Vec::new());
        let (mut traced_us_per_req, mut requests_total) = (Vec::new(), 0.0);
        let (mut load_us_per_req, mut added_load_percent) = (Vec::new(), Vec::new());
        for run in 1..=opts.runs {
            println!(
                "bench: {} — run {run}/{}: without the tracer",
                mode.name, opts.runs
            );
            let busy0 = machine_busy_s()?;
            let load = LoadCpu::start(&load_pids)?;
            let r = wrk(&opts, &url)?;
            let load_s = load.seconds()?;
            let busy1 = machine_busy_s()?;
            let base_cpu_per_req = (busy1 - busy0) / (r.rps * opts.duration.as_secs_f64());
            let load_cpu_per_req = load_s / (r.rps * opts.duration.as_secs_f64());
            load_us_per_req.push(load_cpu_per_req * 1e6);
            base_us_per_req.push(base_cpu_per_req * 1e6);
            base.push(r.rps);
            base_p50.push(r.p50_ms);
            base_p99.push(r.p99_ms);

            println!(
                "bench: {} — run {run}/{}: tracer attached to the relay",
                mode.name, opts.runs
            );
            let tracer = Tracer::start(
                &artifacts.tracer,
                proxy_pid,
                scratch.join(format!("traced-{run}.json")),
            )?;
            let ours: Vec<u64> = prog_ids_of(tracer.pid())?;
            fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
            let stats0 = bpf_prog_stats(&ours)?;
            let (cpu0, _) = cpu_and_rss(tracer.pid())?;
            let busy0 = machine_busy_s()?;
            let r = wrk(&opts, &url)?;
            let busy1 = machine_busy_s()?;
            let (cpu1, _) = cpu_and_rss(tracer.pid())?;
            let stats1 = bpf_prog_stats(&ours)?;
            fs::write(BPF_STATS, "0").context("disabling kernel.bpf_stats_enabled")?;
            let snapshot = tracer.stop()?;
            traced.push(r.rps);
            traced_p50.push(r.p50_ms);
            traced_p99.push(r.p99_ms);
            for (name, (t1, c1)) in &stats1 {
                let (t0, c0) = stats0.get(name).copied().unwrap_or((0, 0));
                let e = prog_totals.entry(name.clone()).or_insert((0, 0));
                e.0 += t1.saturating_sub(t0);
                e.1 += c1.saturating_sub(c0);
            }
            // CPU accounting: what the programs and the tracer's own process spent per
            // request, against what the whole machine spent per request without the tracer.
            let requests = r.rps * opts.duration.as_secs_f64();
            requests_total += requests;
            traced_us_per_req.push((busy1 - busy0) / requests * 1e6);
            let kernel_s: f64 = stats1
                .iter()
                .map(|(name, (t1, _))| {
                    t1.saturating_sub(stats0.get(name).map_or(0, |s| s.0)) as f64 / 1e9
                })
                .sum();
            kernel_us_per_req.push(kernel_s / requests * 1e6);
            user_us_per_req.push((cpu1 - cpu0) / requests * 1e6);
            added_percent.push((kernel_s + cpu1 - cpu0) / requests / base_cpu_per_req * 100.0);
            added_load_percent.push((kernel_s + cpu1 - cpu0) / requests / load_cpu_per_req * 100.0);
            let events = snapshot["kernel"]["events_sent"].as_u64().unwrap_or(0);
            cpu_share.push((cpu1 - cpu0) / opts.duration.as_secs_f64() * 100.0);
            // With few events the figure is the per-second sampling, not the events: skip it.
            if events >= 10_000 {
                cpu_per_100k.push((cpu1 - cpu0) / events as f64 * 100_000.0);
            }

            println!(
                "bench: {} — run {run}/{}: tracer attached to another process",
                mode.name, opts.runs
            );
            let mut idle = Proc(Command::new("sleep").arg("3600").spawn()?);
            let tracer = Tracer::start(
                &artifacts.tracer,
                idle.0.id(),
                scratch.join(format!("elsewhere-{run}.json")),
            )?;
            let r = wrk(&opts, &url)?;
            tracer.stop()?;
            let _ = idle.0.kill();
            elsewhere.push(r.rps);
        }
        drop(proxy);

        let (mb, mt, me) = (
            median(&mut base.clone()),
            median(&mut traced.clone()),
            median(&mut elsewhere.clone()),
        );
        writeln!(report, "## {}\n", mode.name)?;
        writeln!(report, "Relay: {}.\n", mode.describe())?;
        writeln!(report, "| configuration | median req/s | min–max req/s | median p50 / p99 latency | change vs without |")?;
        writeln!(report, "| --- | --- | --- | --- | --- |")?;
        let row = |label: &str, v: &[f64], lat: Option<(&[f64], &[f64])>, m: f64| {
            let (lo, hi) = spread(v);
            format!(
                "| {label} | {m:.0} | {lo:.0}–{hi:.0} | {} | {:+.1}% |\n",
                lat.map_or("—".to_owned(), |(p50, p99)| format!(
                    "{:.2} / {:.2} ms",
                    median(&mut p50.to_vec()),
                    median(&mut p99.to_vec())
                )),
                (m / mb - 1.0) * 100.0
            )
        };
        report.push_str(&row(
            "without the tracer",
            &base,
            Some((&base_p50, &base_p99)),
            mb,
        ));
        report.push_str(&row(
            "tracer attached to the relay",
            &traced,
            Some((&traced_p50, &traced_p99)),
            mt,
        ));
        report.push_str(&row(
            "tracer attached elsewhere (relay untracked)",
            &elsewhere,
            None,
            me,
        ));
        writeln!(report, "\nKernel cost per program run (kernel.bpf_stats_enabled, summed over the traced runs):\n")?;
        writeln!(
            report,
            "| program | runs | runs per request | mean ns per run |"
        )?;
        writeln!(report, "| --- | --- | --- | --- |")?;
        for (name, (ns, cnt)) in &prog_totals {
            let mean = if *cnt > 0 {
                *ns as f64 / *cnt as f64
            } else {
                0.0
            };
            let per_req = *cnt as f64 / requests_total.max(1.0);
            writeln!(report, "| {name} | {cnt} | {per_req:.2} | {mean:.0} |")?;
        }
        let added = median(&mut added_percent.clone());
        let (lo, hi) = spread(&added_percent);
        writeln!(
            report,
            "\nCPU accounting (less noisy than throughput on a shared VM): without the tracer the machine spends {:.1} µs of CPU per request; attached, the tracer's programs spend {:.2} µs and its process {:.2} µs per request (medians). That is {added:.2}% more CPU per request ({lo:.2}–{hi:.2}% over the runs), so at most about {:.2}% fewer requests per second when the CPUs are saturated.",
            median(&mut base_us_per_req.clone()),
            median(&mut kernel_us_per_req.clone()),
            median(&mut user_us_per_req.clone()),
            added / (1.0 + added / 100.0),
        )?;
        let added_load = median(&mut added_load_percent.clone());
        let (lo, hi) = spread(&added_load_percent);
        writeln!(
            report,
            "\nAgainst the load's own CPU (relay, provider and wrk: {:.1} µs per request without the tracer, which the rest of the shared machine does not inflate): {added_load:.2}% more ({lo:.2}–{hi:.2}%).",
            median(&mut load_us_per_req.clone()),
        )?;
        let (base_m, traced_m) = (
            median(&mut base_us_per_req.clone()),
            median(&mut traced_us_per_req.clone()),
        );
        writeln!(
            report,
            "\nMachine busy CPU per request, measured directly: {base_m:.1} µs without, {traced_m:.1} µs with the tracer on the relay ({:+.1}%; noisy).",
            (traced_m / base_m - 1.0) * 100.0
        )?;
        let share = median(&mut cpu_share.clone());
        writeln!(
            report,
            "\nTracer user-space CPU while traced: {share:.1}% of one CPU (median)."
        )?;
        if cpu_per_100k.is_empty() {
            writeln!(
                report,
                "Too few lifecycle events (under 10k a run) for a per-event CPU figure.\n"
            )?;
        } else {
            let cpu = median(&mut cpu_per_100k.clone());
            writeln!(
                report,
                "Tracer CPU per 100k lifecycle events: {cpu:.3} CPU-seconds (median of {} runs).\n",
                cpu_per_100k.len()
            )?;
        }
        raw.push(json!({
            "mode": mode.name, "without": base, "traced": traced, "elsewhere": elsewhere,
            "p99_without_ms": base_p99, "p99_traced_ms": traced_p99,
            "programs": prog_totals.iter().map(|(k, (ns, cnt))| json!({"name": k, "run_time_ns": ns, "run_cnt": cnt})).collect::<Vec<_>>(),
            "cpu_s_per_100k_events": cpu_per_100k,
            "tracer_cpu_percent": cpu_share,
            "machine_cpu_us_per_request_without": base_us_per_req,
            "program_cpu_us_per_request": kernel_us_per_req,
            "tracer_cpu_us_per_request": user_us_per_req,
            "added_cpu_percent": added_percent,
            "machine_cpu_us_per_request_traced": traced_us_per_req,
            "load_cpu_us_per_request_without": load_us_per_req,
            "added_cpu_percent_of_load": added_load_percent,
            "relay": mode.describe(),
        }));
    }

    if !partial || opts.scenarios.iter().any(|k| k == "floor") {
        raw.push(unrelated_process_cost(
            &artifacts.tracer,
            &scratch,
            &mut report,
        )?);
    }
    if partial {
        let _ = fs::write(BPF_STATS, stats_before.trim());
        let _ = fs::remove_dir_all(&scratch);
        let dir = root.join("target").join("bench");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("RESULTS-partial.md"), &report)?;
        println!("{report}");
        println!("bench: wrote target/bench/RESULTS-partial.md (some scenarios only)");
        return Ok(());
    }
    // (d) memory per 10k tracked connections: a relay that leaks 10k connections.
    println!("bench: memory with 10k leaked connections");
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
    let tracer = Tracer::start(&artifacts.tracer, relay.0.id(), scratch.join("memory.json"))?;
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
    let per_10k = if open > 0 {
        (rss1.saturating_sub(rss0)) as f64 / open as f64 * 10_000.0 / 1_048_576.0
    } else {
        f64::NAN
    };
    writeln!(report, "## Memory\n\nTracer resident memory: {:.1} MiB idle, {:.1} MiB with {open} tracked connections: {per_10k:.2} MiB per 10k tracked connections.\n", rss0 as f64 / 1_048_576.0, rss1 as f64 / 1_048_576.0)?;
    raw.push(json!({"memory": {"rss_idle": rss0, "rss_loaded": rss1, "tracked": open}}));

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

fn opts_copy(o: &Options) -> Options {
    Options {
        duration: o.duration,
        runs: o.runs,
        connections: o.connections,
        scenarios: o.scenarios.clone(),
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
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let stat = "cpu  100 1 20 5000 70 3 4 2 0 0\ncpu0 50 0 10 2500 35 1 2 1 0 0\n";
        let busy = busy_s_of(stat).expect("parses");
        assert!((busy - 130.0 / hz).abs() < 1e-9, "{busy}");
        assert!(busy_s_of("intr 1 2 3\n").is_err());
        assert!(machine_busy_s().expect("reads /proc/stat") > 0.0);
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 3.0));
    }
}
