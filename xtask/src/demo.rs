//! `cargo xtask demo`: the tracer on the bundled Go fixture, a relay that leaks connections to
//! fake providers in known ways. In a terminal it opens the tracer's terminal UI (`tracer
//! watch`); otherwise, or with --duration, it prints the headless table (`tracer run`).
//!
//! The relay is the fixture built by the newest Go of the matrix (`cargo xtask go-matrix`;
//! installed here when missing, that toolchain only): the tracer's Go layer reads relays built
//! by Go 1.21 or newer, and names the line of the relay that obtained each leaked response
//! (the Sites page). Debian's Go, which builds the fixture for the tests, is older; when the
//! newest cannot be installed (no network, no python3-venv) the demo says so and runs that
//! build, without call sites.
//!
//! Process layout: the fixtures run in their own process group, so the terminal's Ctrl-C
//! reaches only xtask and the tracer (the foreground group). The tracer prints its final
//! output and exits; xtask survives the same SIGINT, waits for it, then kills and reaps the
//! fixtures. Every child also gets a parent-death signal, so nothing outlives xtask even if
//! xtask itself is killed.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build::{self, Artifacts};
use crate::gomatrix;
use crate::setup;
use crate::util::{self, Progress};

/// How long the fixture upstream may take to print READY.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Trace duration when stdout is not a terminal (nobody is there to press Ctrl-C).
const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// How long a fixture gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The relay's abandoned connections count as leaks after this grace.
const ABANDON_GRACE: &str = "10s";
/// The fixture relay's own wrappers, which every scenario's request goes through (getTLS over
/// TLS): skipped, so each leak is named by its scenario's line (what `--site-skip` is for).
const SITE_SKIP: &str = r"^main\.\(\*relay\)\.(get|getTLS)$";
/// The fixture's main package, relative to the workspace root.
const FIXTURE_DIR: &str = "tests/fixture";

pub fn run(duration: Option<Duration>) -> Result<()> {
    if !util::is_root() {
        bail!("the demo loads eBPF programs and needs root: run: sudo -E env \"PATH=$PATH\" cargo xtask demo");
    }
    setup::ensure_for(setup::Purpose::Demo).context("demo")?;
    let mut artifacts = build::build().context("demo")?;
    artifacts.fixture = match newest_fixture() {
        Ok(fixture) => fixture,
        Err(e) => {
            eprintln!(
                "demo: {e:#}\ndemo: running the fixture built by the system's Go instead: the Go layer reads Go 1.21 or newer only, so with an older Go the Sites page stays empty"
            );
            artifacts.fixture
        }
    };
    let interactive = io::stdout().is_terminal() && duration.is_none();
    let duration = duration.or_else(|| (!io::stdout().is_terminal()).then_some(DEFAULT_DURATION));
    demo(&artifacts, duration, interactive).context("demo")
}

fn demo(artifacts: &Artifacts, duration: Option<Duration>, interactive: bool) -> Result<()> {
    // From here on a Ctrl-C must not kill xtask before it has stopped the fixtures.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;

    let log_dir = artifacts
        .fixture
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);

    // Declared in start order, so they are dropped (killed) in reverse: relay, then upstream.
    let upstream = start_upstream(&artifacts.fixture, &log_dir, &interrupted)?;
    let relay = start_relay(&artifacts.fixture, &log_dir)?;

    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted before the tracer started");
    }
    let how_long = match duration {
        Some(duration) => format!("for {}", util::format_duration(duration)),
        None if interactive => "in the terminal UI until q".to_string(),
        None => "until Ctrl-C".to_string(),
    };
    println!(
        "demo: tracing the fixture relay (pid {}) {how_long}; it sends requests forever to fake providers on 127.0.0.11-17 (fixture upstream, pid {}); expect leaks: 127.0.0.12 close_wait, 127.0.0.13 unread, 127.0.0.16 abandoned after {ABANDON_GRACE}, 127.0.0.14 closed_unread; 127.0.0.11, .15 and .17 stay healthy; Tab to the Sites page for the lines of {} that leaked; fixture logs in {}",
        relay.child.id(),
        upstream.child.id(),
        FIXTURE_DIR,
        log_dir.display()
    );

    let mut tracer = Command::new(&artifacts.tracer);
    // The UI for a person at a terminal: the hosts page lists the leaking hosts first, Enter
    // shows a host's connections and then why one is leaked.
    tracer
        .arg(if interactive { "watch" } else { "run" })
        .args(["--pid", &relay.child.id().to_string()])
        .args(["--abandon-grace", ABANDON_GRACE])
        // Call sites on: the demo is a triage session (they cost a uprobe hit per request).
        .args(["--go-probes", "sites"])
        .args(["--site-skip", SITE_SKIP]);
    if let Some(duration) = duration {
        tracer.args(["--duration", &util::format_duration(duration)]);
    }
    // The tracer stays in our (foreground) process group: it owns the terminal and gets
    // Ctrl-C from it. SIGINT on xtask's death lets it print its final output all the same.
    die_with_parent(&mut tracer, libc::SIGINT);
    let status = util::status(&mut tracer).context("cannot run the tracer")?;

    let stopped_by_ctrl_c = interrupted.load(Ordering::SeqCst)
        && (status.code() == Some(130) || status.signal() == Some(libc::SIGINT));
    if !status.success() && !stopped_by_ctrl_c {
        bail!(
            "the tracer exited with {} (command: {})",
            util::describe_status(status),
            util::command_line(&tracer)
        );
    }
    drop(relay);
    drop(upstream);
    println!("demo: stopped the fixtures");
    Ok(())
}

/// The fixture built by the newest Go of the matrix, installed first when missing.
fn newest_fixture() -> Result<PathBuf> {
    let toolchain = gomatrix::newest_toolchain()
        .context("cannot install the newest Go of the matrix to build the demo's relay")?;
    let root = util::workspace_root();
    // Named `fixture` as the other build is: the tracer shows the process's name.
    let out_dir = build::target_dir(&root)?
        .join("fixture")
        .join(format!("go{}", toolchain.version));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let fixture = out_dir.join("fixture");
    let progress = Progress::start(
        format!("demo: go{} build {FIXTURE_DIR}", toolchain.version),
        "a few seconds, nothing when built already",
    );
    gomatrix::build_package(&toolchain.go, &root.join(FIXTURE_DIR), &fixture)
        .with_context(|| format!("{FIXTURE_DIR} does not build with go{}", toolchain.version))?;
    progress.done();
    Ok(fixture)
}

/// A fixture process, killed and reaped when dropped (on success, error and unwinding alike).
struct Fixture {
    name: &'static str,
    child: Child,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The fixtures exit 0 on SIGTERM; SIGKILL only if one hangs.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions, and the pid is our unreaped
            // child, so it cannot have been reused by another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        // Already exited is fine: kill then fails, wait reaps it.
        let _ = self.child.kill();
        if let Err(err) = self.child.wait() {
            eprintln!(
                "demo: could not reap the fixture {} (pid {}): {err}",
                self.name,
                self.child.id()
            );
        }
    }
}

fn fixture_command(fixture: &Path, args: &[&str], log: &Path) -> Result<Command> {
    let stderr = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = Command::new(fixture);
    cmd.args(args)
        .stdin(Stdio::null())
        .stderr(stderr)
        // Own process group: the terminal's Ctrl-C goes to the tracer, not to its target.
        .process_group(0);
    die_with_parent(&mut cmd, libc::SIGKILL);
    Ok(cmd)
}

fn spawn(name: &'static str, mut cmd: Command) -> Result<Fixture> {
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start the fixture {name}: {}",
            util::command_line(&cmd)
        )
    })?;
    Ok(Fixture { name, child })
}

/// Starts `fixture upstream` and waits until it prints READY (it then serves the fake
/// providers).
fn start_upstream(fixture: &Path, log_dir: &Path, interrupted: &AtomicBool) -> Result<Fixture> {
    let log = log_dir.join("upstream.log");
    let mut cmd = fixture_command(fixture, &["upstream"], &log)?;
    cmd.stdout(Stdio::piped());
    let mut upstream = spawn("upstream", cmd)?;
    let stdout = upstream
        .child
        .stdout
        .take()
        .context("the fixture upstream has no stdout pipe")?;
    let mut stdout_log = File::options()
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;

    // A thread copies stdout into the log (so the pipe never fills) and reports READY.
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(stdout_log, "{line}");
            if line.split_whitespace().next() == Some("READY") {
                let _ = ready_tx.send(());
            }
        }
    });

    let started = Instant::now();
    loop {
        match ready_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) => return Ok(upstream),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let how = match upstream.child.wait() {
                    Ok(status) => util::describe_status(status),
                    Err(_) => "closed its stdout".into(),
                };
                bail!(
                    "the fixture upstream exited ({how}) before printing READY{}; its output is in {}",
                    last_line_of(&log),
                    log.display()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted while waiting for the fixture upstream");
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "the fixture upstream did not print READY within {}s; its output is in {}",
                READY_TIMEOUT.as_secs(),
                log.display()
            );
        }
    }
}

/// Starts `fixture relay` with endless rounds of traffic (it prints ROUNDS DONE only when a
/// finite number of rounds ends).
fn start_relay(fixture: &Path, log_dir: &Path) -> Result<Fixture> {
    let log = log_dir.join("relay.log");
    let mut cmd = fixture_command(fixture, &["relay", "-rounds", "0", "-interval", "1s"], &log)?;
    let stdout = File::options()
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    cmd.stdout(stdout);
    let mut relay = spawn("relay", cmd)?;
    // A relay that fails at once (bad flags, port in use) would only show up as a confusing
    // tracer error about a missing pid.
    std::thread::sleep(Duration::from_millis(200));
    if let Some(status) = relay
        .child
        .try_wait()
        .context("checking the fixture relay")?
    {
        bail!(
            "the fixture relay exited at once ({}){}; its output is in {}",
            util::describe_status(status),
            last_line_of(&log),
            log.display()
        );
    }
    Ok(relay)
}

/// ` (last line: ...)` of a fixture log, or nothing when it is empty or unreadable.
fn last_line_of(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_string)
        })
        .map(|line| format!(" (last line: {line})"))
        .unwrap_or_default()
}

/// Makes the kernel send `signal` to the child when xtask dies, however it dies.
fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // Widening a non-negative signal number for prctl's unsigned long argument.
    let signal = signal.unsigned_abs() as libc::c_ulong;
    // SAFETY: the closure runs in the child between fork and exec. It calls only prctl,
    // getppid and reads errno (all async-signal-safe), allocates nothing, and touches no
    // state shared with the parent. The death signal is tied to the forking thread, which is
    // xtask's main thread and lives until xtask exits.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // xtask died before prctl took effect: the child was reparented already.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
