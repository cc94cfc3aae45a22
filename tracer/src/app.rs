//! Wires the pipeline: a source of model inputs (the live collector, or a recording being
//! replayed) feeds the model; the main loop applies inputs and renders to the chosen output
//! (table, JSON lines, the terminal UI) or writes them to a recording.

use std::{
    cell::RefCell,
    fmt,
    io::{IsTerminal, Write},
    path::Path,
    rc::Rc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{interval_at, sleep_until, Instant, MissedTickBehavior},
};

use crate::{
    cli::{
        Cli, Command, MetricsArgs, NamingArgs, RecordArgs, ReplayArgs, RunArgs, SnapshotArgs,
        SnapshotFormat, TargetArgs, WatchArgs,
    },
    collect::{self, monotonic_ns, procfs, Collector, TargetSpec},
    export::{
        csv::CsvSnapshots,
        json::JsonLines,
        metrics_server::{read_process_stats, MetricsServer},
        prometheus::{Health, PrometheusExporter},
        rotate::RotatingFile,
    },
    model::{ConnTable, Graces, Input, InputLag, Snapshot},
    naming::catalogue::{Catalogue, ProvidersFileError},
    record::{
        self,
        player::{Player, Speed},
        Frame, Header, RecordingError, RecordingWriter,
    },
    ui::{
        plain::PlainTable,
        render::{Session, SourceLabel},
        watch::{self as tui, Next, Outcome, Source},
    },
};

/// A mistake in what the user asked for (exit status 2), as opposed to a failure while running.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// How often `run` prints when no command is given.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Inputs queued from the collector to the model. The collector waits when it is full, and
/// while it waits the kernel's ring buffer is not drained: room for a burst (~200 bytes each).
const INPUT_QUEUE: usize = 65_536;
/// The collector samples at least this often: verdict times are only as fine as the samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Behind the kernel by more than this, the tracer says so on its log ...
const LAG_WARN_NS: u64 = 5_000_000_000;
/// ... at most this often.
const LAG_WARN_EVERY: Duration = Duration::from_secs(30);

pub async fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Watch(args)) => watch(args).await,
        Some(Command::Record(args)) => record(args).await,
        Some(Command::Replay(args)) => replay(args).await,
        Some(Command::Snapshot(args)) => snapshot(args).await,
        Some(Command::Check) => check(),
        // `tracer --pid X`: the UI for a person at a terminal, the table for pipes and logs.
        None if std::io::stdout().is_terminal() => {
            watch(WatchArgs {
                targets: cli.targets,
                graces: cli.graces,
                metrics: MetricsArgs {
                    metrics_addr: None,
                    metrics_top_hosts: 20,
                },
                naming: cli.naming,
            })
            .await
        }
        None => {
            run(RunArgs {
                targets: cli.targets,
                graces: cli.graces,
                json: false,
                interval: DEFAULT_INTERVAL,
                duration: None,
                output: None,
                output_max_size: 0,
                output_keep: 0,
                metrics: MetricsArgs {
                    metrics_addr: None,
                    metrics_top_hosts: 20,
                },
                naming: cli.naming,
            })
            .await
        }
    }
}

/// Where snapshots go.
enum Output {
    Json(JsonLines<std::io::Stdout>),
    /// `--json --output FILE`: JSON lines in a size-rotated file.
    JsonFile(JsonLines<RotatingFile>, std::path::PathBuf),
    Table(PlainTable<std::io::Stdout>),
}

impl Output {
    fn write(&mut self, snapshot: &Snapshot, graces: &Graces, last: bool) -> Result<()> {
        match self {
            Output::Json(out) => out.write(snapshot).context("writing to stdout"),
            Output::JsonFile(out, path) => out
                .write(snapshot)
                .with_context(|| format!("writing to {}", path.display())),
            Output::Table(out) => out
                .write(snapshot, graces, last)
                .map_err(anyhow::Error::from)
                .context("writing to stdout"),
        }
    }
}

/// The provider catalogue: built in, plus `--providers FILE`. A mistake in the file is a
/// usage error naming its line and column.
fn catalogue(naming: &NamingArgs) -> Result<Catalogue> {
    let builtin = Catalogue::builtin();
    let Some(path) = &naming.providers else {
        return Ok(builtin);
    };
    builtin
        .with_file(path)
        .map_err(|e| match e.downcast_ref::<ProvidersFileError>() {
            Some(mistake) => UsageError(mistake.to_string()).into(),
            None if !path.exists() => UsageError(format!(
                "no providers file at {} (check the path given to --providers)",
                path.display()
            ))
            .into(),
            None => e,
        })
}

/// The Prometheus endpoint, fed a rendering of each snapshot.
struct Metrics {
    server: MetricsServer,
    exporter: PrometheusExporter,
}

impl Metrics {
    /// Binds the endpoint (after attach, so a port clash does not cost a load) and says where.
    fn start(args: &MetricsArgs) -> Result<Option<Self>> {
        let Some(addr) = args.metrics_addr else {
            return Ok(None);
        };
        let server = MetricsServer::bind(addr)?;
        eprintln!("tracer: metrics at http://{}/metrics", server.local_addr());
        Ok(Some(Self {
            server,
            exporter: PrometheusExporter::new(args.metrics_top_hosts as usize),
        }))
    }

    fn publish(&mut self, table: &ConnTable, now_ns: u64, graces: &Graces) -> Result<()> {
        let snapshot = Snapshot::take(table, now_ns, graces);
        let health = Health {
            now_ns,
            tracked_sockets: table.conns().count() as u64,
            process: read_process_stats().map_err(|e| log::debug!("{e:#}")).ok(),
        };
        self.server
            .publish(self.exporter.render(&snapshot, &health)?);
        Ok(())
    }
}

fn validate_targets(spec: &TargetSpec) -> Result<()> {
    for pid in &spec.pids {
        if !procfs::exists(*pid) {
            return Err(UsageError(format!(
                "no process with pid {pid} (is it running? check with: ps -p {pid})"
            ))
            .into());
        }
    }
    Ok(())
}

fn describe_targets(spec: &TargetSpec) -> String {
    let mut parts: Vec<String> = spec.pids.iter().map(|p| format!("pid {p}")).collect();
    parts.extend(spec.comms.iter().map(|c| format!("processes named {c}")));
    parts.join(", ")
}

fn spec_of(targets: &TargetArgs) -> TargetSpec {
    TargetSpec {
        pids: targets.pids.clone(),
        comms: targets.comms.clone(),
    }
}

/// The live collector, running in its own task and sending model inputs down a channel.
struct Live {
    spec: TargetSpec,
    rx: mpsc::Receiver<Input>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

impl Live {
    /// Checks the targets and privileges, loads and attaches the programs. `before_load`
    /// runs after the checks, just before loading (to create an output file, say).
    async fn start(
        targets: &TargetArgs,
        naming: &NamingArgs,
        sample_every: Duration,
        before_load: impl FnOnce() -> Result<()>,
    ) -> Result<Self> {
        let spec = spec_of(targets);
        validate_targets(&spec)?;
        let catalogue = catalogue(naming)?;
        collect::check_privileges()?;
        before_load()?;
        let collector = Collector::start(spec.clone(), sample_every)?
            .with_catalogue(std::sync::Arc::new(catalogue));
        let (tx, rx) = mpsc::channel::<Input>(INPUT_QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(collector.run(tx, stop_rx));
        Ok(Self {
            spec,
            rx,
            stop,
            task,
        })
    }

    fn follows_by_name(&self) -> bool {
        !self.spec.comms.is_empty()
    }

    /// Applies `input` to `table`; true when it says every target process exited and there
    /// is nothing left to wait for (when following by name, a new process of that name may
    /// still come).
    fn apply_until_all_exited(&self, table: &mut ConnTable, input: Input) -> bool {
        let targets_changed = matches!(input, Input::Targets(_));
        table.apply(input);
        let done = targets_changed && !self.follows_by_name() && table.targets().is_empty();
        if done {
            eprintln!("tracer: every target process has exited; stopping");
        }
        done
    }

    /// Lets the collector send its last events and sample, hands each to `last`, and reports
    /// the collector's error if it failed.
    async fn stop(mut self, mut last: impl FnMut(Input) -> Result<()>) -> Result<()> {
        let _ = self.stop.send(true);
        while let Some(input) = self.rx.recv().await {
            last(input)?;
        }
        self.task.await.context("the collector task failed")?
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let graces = args.graces.graces();
    let mut output = None;
    // An output file is created after the checks (no file for a typo in --pid) and before
    // loading (a bad path fails fast).
    let mut live = Live::start(
        &args.targets,
        &args.naming,
        args.interval.min(SAMPLE_EVERY),
        || {
            output = Some(match &args.output {
                Some(path) => {
                    let file = RotatingFile::open(
                        path,
                        args.output_max_size,
                        usize::from(args.output_keep),
                    )
                    .map_err(|e| UsageError(format!("{e:#}")))?;
                    Output::JsonFile(JsonLines::new(file), path.clone())
                }
                None if args.json => Output::Json(JsonLines::new(std::io::stdout())),
                None => Output::Table(PlainTable::new(std::io::stdout())),
            });
            Ok(())
        },
    )
    .await?;
    let mut output = output.context("the output was not set up")?;
    // One line on stderr once the programs are attached (tests and scripts wait for it).
    eprintln!(
        "tracer: attached; tracing {}; stop with Ctrl-C",
        describe_targets(&live.spec)
    );
    let mut metrics = Metrics::start(&args.metrics)?;
    let mut table = ConnTable::new();
    let mut tick = interval_at(Instant::now() + args.interval, args.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut lag = InputLag::default();
    let mut lag_warned: Option<Instant> = None;

    loop {
        tokio::select! {
            input = live.rx.recv() => match input {
                Some(input) => {
                    lag.observe(&input, monotonic_ns());
                    if live.apply_until_all_exited(&mut table, input) {
                        break;
                    }
                }
                // The collector stopped on its own: its error is reported below.
                None => break,
            },
            _ = tick.tick() => {
                warn_when_behind(&lag, &mut lag_warned);
                let now = lag.judge_at(monotonic_ns());
                output.write(&Snapshot::take(&table, now, &graces), &graces, false)?;
                if let Some(metrics) = metrics.as_mut() {
                    metrics.publish(&table, now, &graces)?;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => break,
        }
    }

    // Let the collector send its last events and sample, then take the final snapshot.
    live.stop(|input| {
        lag.observe(&input, monotonic_ns());
        table.apply(input);
        Ok(())
    })
    .await?;
    output.write(
        &Snapshot::take(&table, lag.judge_at(monotonic_ns()), &graces),
        &graces,
        true,
    )?;
    Ok(())
}

/// Says on the log (at most every `LAG_WARN_EVERY`) when the table is more than
/// `LAG_WARN_NS` behind the kernel: figures are then as of that long ago.
fn warn_when_behind(lag: &InputLag, warned: &mut Option<Instant>) {
    if lag.behind_ns() < LAG_WARN_NS || warned.is_some_and(|t| t.elapsed() < LAG_WARN_EVERY) {
        return;
    }
    log::warn!(
        "the tracer is {:.1}s behind the kernel (more events than it keeps up with): figures are as of then",
        lag.behind_ns() as f64 / 1e9
    );
    *warned = Some(Instant::now());
}

/// `tracer check`: one ✓ or ✗ line per requirement, the fix under each ✗.
fn check() -> Result<()> {
    let lines = collect::check_host();
    let mut out = std::io::stdout().lock();
    for line in &lines {
        writeln!(out, "{} {}", if line.ok { "✓" } else { "✗" }, line.what)?;
        if let Some(fix) = &line.fix {
            writeln!(out, "    fix: {fix}")?;
        }
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    if failed > 0 {
        anyhow::bail!(
            "this host cannot run the tracer: {failed} problem(s) above, each with its fix"
        );
    }
    writeln!(out, "tracer can trace on this host")?;
    Ok(())
}

/// `tracer snapshot`: observe for a while, print one snapshot, exit.
async fn snapshot(args: SnapshotArgs) -> Result<()> {
    let graces = args.graces.graces();
    let mut live = Live::start(&args.targets, &args.naming, SAMPLE_EVERY, || Ok(())).await?;
    eprintln!(
        "tracer: attached; observing {} for {}",
        describe_targets(&live.spec),
        humantime::format_duration(args.observe_for)
    );
    let mut table = ConnTable::new();
    let mut exporter = PrometheusExporter::new(crate::export::prometheus::DEFAULT_TOP_HOSTS);
    let started_ns = monotonic_ns();
    // A first rendering, thrown away, so rates cover the observed window.
    if args.format == SnapshotFormat::Prometheus {
        let health = Health {
            now_ns: started_ns,
            tracked_sockets: 0,
            process: None,
        };
        exporter.render(&Snapshot::take(&table, started_ns, &graces), &health)?;
    }
    let deadline = sleep_until(Instant::now() + args.observe_for);
    tokio::pin!(deadline);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tokio::select! {
            input = live.rx.recv() => match input {
                Some(input) => table.apply(input),
                None => break,
            },
            _ = &mut deadline => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    live.stop(|input| {
        table.apply(input);
        Ok(())
    })
    .await?;
    let now = monotonic_ns();
    let snapshot = Snapshot::take(&table, now, &graces);
    let stdout = std::io::stdout();
    match args.format {
        SnapshotFormat::Json => JsonLines::new(stdout.lock()).write(&snapshot),
        SnapshotFormat::Csv => CsvSnapshots::new(stdout.lock()).write(&snapshot),
        SnapshotFormat::Prometheus => {
            let health = Health {
                now_ns: now,
                tracked_sockets: table.conns().count() as u64,
                process: read_process_stats().ok(),
            };
            let text = exporter.render(&snapshot, &health)?;
            stdout
                .lock()
                .write_all(text.as_bytes())
                .map_err(anyhow::Error::from)
        }
    }
    .context("writing to stdout")
}

fn needs_terminal(what: &str, instead: &str) -> Result<()> {
    if std::io::stdout().is_terminal() {
        Ok(())
    } else {
        Err(UsageError(format!(
            "{what} draws on a terminal and stdout is not one; {instead}"
        ))
        .into())
    }
}

/// The live collector as the UI's source: inputs stamped with their receive time.
struct LiveSource<'a> {
    rx: &'a mut mpsc::Receiver<Input>,
    started_ns: u64,
}

impl Source for LiveSource<'_> {
    async fn next(&mut self) -> Result<Next> {
        Ok(match self.rx.recv().await {
            Some(input) => Next::Input {
                at_ns: monotonic_ns(),
                input,
            },
            None => Next::Closed,
        })
    }

    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }

    fn started_ns(&self) -> u64 {
        self.started_ns
    }

    /// Pausing freezes the screen only: the model keeps up, so resuming shows the present.
    fn set_paused(&mut self, _paused: bool) {}

    fn label(&self) -> SourceLabel {
        SourceLabel::Live
    }
}

async fn watch(args: WatchArgs) -> Result<()> {
    needs_terminal("tracer watch", "use tracer run (add --json for JSON lines)")?;
    let graces = args.graces.graces();
    let mut live = Live::start(&args.targets, &args.naming, SAMPLE_EVERY, || Ok(())).await?;
    let started_ns = monotonic_ns();
    let session = Session {
        source: SourceLabel::Live,
        graces,
    };
    let mut metrics = Metrics::start(&args.metrics)?;
    let mut publish = |table: &ConnTable, now_ns: u64| match metrics.as_mut() {
        Some(m) => m.publish(table, now_ns, &graces),
        None => Ok(()),
    };
    let outcome = tui::run(
        LiveSource {
            rx: &mut live.rx,
            started_ns,
        },
        session,
        Some(&mut publish),
    )
    .await;
    // Detach before reporting anything; the collector's own error explains a closed source.
    let stopped = live.stop(|_| Ok(())).await;
    match outcome? {
        Outcome::Quit => stopped,
        Outcome::SourceClosed => {
            stopped.and(Err(anyhow::anyhow!("the collector stopped unexpectedly")))
        }
    }
}

async fn record(args: RecordArgs) -> Result<()> {
    let graces = args.graces.graces();
    let path = args.out.clone();
    let mut file = None;
    // The output is created after the checks (no empty file for a typo in --pid) and before
    // loading (a bad path fails fast).
    let mut live = Live::start(&args.targets, &args.naming, SAMPLE_EVERY, || {
        let created = std::fs::File::create(&path).map_err(|e| {
            UsageError(format!(
                "cannot create {}: {e} (check that its directory exists and is writable)",
                path.display()
            ))
        })?;
        file = Some(created);
        Ok(())
    })
    .await
    .inspect_err(|_| {
        if file.is_some() {
            let _ = std::fs::remove_file(&path);
        }
    })?;
    let file = file.context("the recording file was not created")?;
    let header = Header {
        tracer_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_unix_ns: OffsetDateTime::now_utc().unix_timestamp_nanos(),
        started_ns: monotonic_ns(),
        pids: live.spec.pids.clone(),
        comms: live.spec.comms.clone(),
        graces: graces.into(),
    };
    let writing = |e| anyhow::Error::new(e).context(format!("writing {}", path.display()));
    let mut writer = RecordingWriter::new(file, &header).map_err(writing)?;
    eprintln!(
        "tracer: attached; recording {} to {}; stop with Ctrl-C",
        describe_targets(&live.spec),
        path.display()
    );

    let mut table = ConnTable::new();
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tokio::select! {
            input = live.rx.recv() => match input {
                Some(input) => {
                    writer.write_input(monotonic_ns(), &input).map_err(writing)?;
                    if matches!(input, Input::Sample(_)) {
                        // About once a second: a killed recorder loses at most that much.
                        writer.flush().map_err(writing)?;
                    }
                    // The recorder keeps the table only to notice that every target exited.
                    if live.apply_until_all_exited(&mut table, input) {
                        break;
                    }
                }
                None => break,
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => break,
        }
    }
    live.stop(|input| writer.write_input(monotonic_ns(), &input).map_err(writing))
        .await?;
    let end_ns = monotonic_ns();
    let (inputs, bytes) = writer.finish(end_ns).map_err(writing)?;
    eprintln!(
        "tracer: recorded {inputs} inputs over {:.1}s to {} ({bytes} bytes); play it with: tracer replay {}",
        end_ns.saturating_sub(header.started_ns) as f64 / 1e9,
        path.display(),
        path.display()
    );
    Ok(())
}

/// A missing file is the user's mistake (exit 2); a bad one is a runtime error (exit 1).
fn recording_error(e: RecordingError) -> anyhow::Error {
    match e {
        RecordingError::NotFound(_) => UsageError(e.to_string()).into(),
        e => e.into(),
    }
}

/// A recording being replayed as the UI's source.
struct ReplaySource {
    player: Player,
    file: String,
    /// The recording's start on the recorded clock.
    started_ns: u64,
}

impl ReplaySource {
    fn speed_label(&self) -> String {
        match self.player.clock.speed() {
            Speed::Fast => "fast".into(),
            Speed::Times(x) => format!("{x}x"),
        }
    }
}

impl Source for ReplaySource {
    async fn next(&mut self) -> Result<Next> {
        Ok(match self.player.next().await.map_err(recording_error)? {
            Some(Frame::Input { at_ns, input }) => Next::Input { at_ns, input },
            Some(Frame::End { at_ns }) => Next::End { at_ns },
            None => Next::End {
                at_ns: self.now_ns(),
            },
        })
    }

    fn now_ns(&self) -> u64 {
        self.player.clock.now_ns(Instant::now())
    }

    fn started_ns(&self) -> u64 {
        self.started_ns
    }

    fn set_paused(&mut self, paused: bool) {
        self.player.clock.set_paused(paused, Instant::now());
    }

    fn label(&self) -> SourceLabel {
        SourceLabel::Replay {
            file: self.file.clone(),
            speed: self.speed_label(),
            ended: self.player.clock.has_ended(),
        }
    }
}

async fn replay(args: ReplayArgs) -> Result<()> {
    // Read it through first: a bad file is one line now, not a broken screen later.
    let summary = record::check(&args.file).map_err(recording_error)?;
    let graces = args.graces.over(summary.header.graces.into());
    let speed = if args.fast {
        Speed::Fast
    } else {
        Speed::Times(args.speed)
    };
    if args.json {
        return replay_json(&args.file, graces, speed, args.interval).await;
    }
    needs_terminal("tracer replay", "add --json for JSON lines")?;
    let (player, header) = Player::start(&args.file, speed).map_err(recording_error)?;
    let file = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let source = ReplaySource {
        player,
        file,
        started_ns: header.started_ns,
    };
    let session = Session {
        source: source.label(),
        graces,
    };
    tui::run(source, session, None).await.map(|_| ())
}

/// A writer that replaces the `time` of each JSON line by the recorded time of its snapshot,
/// so `replay --json` lines carry when things happened, not when they were replayed. The
/// lines themselves come from `export::json`, so their schema is the one `run --json` has.
struct Restamp<W: Write> {
    out: W,
    time: Rc<RefCell<String>>,
    line: Vec<u8>,
}

/// `line` with the value of its first `"time":"..."` replaced by `time`.
fn restamp(line: &[u8], time: &str) -> Vec<u8> {
    const KEY: &[u8] = b"\"time\":\"";
    let Some(start) = line
        .windows(KEY.len())
        .position(|w| w == KEY)
        .map(|i| i + KEY.len())
    else {
        return line.to_vec();
    };
    let Some(len) = line[start..].iter().position(|&b| b == b'"') else {
        return line.to_vec();
    };
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&line[..start]);
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(&line[start + len..]);
    out
}

impl<W: Write> Write for Restamp<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            let stamped = restamp(&self.line, &self.time.borrow());
            self.out.write_all(&stamped)?;
            self.line.clear();
        }
        self.out.flush()
    }
}

async fn replay_json(path: &Path, graces: Graces, speed: Speed, every: Duration) -> Result<()> {
    let (mut player, header) = Player::start(path, speed).map_err(recording_error)?;
    let time = Rc::new(RefCell::new(String::new()));
    let mut out = JsonLines::new(Restamp {
        out: std::io::stdout(),
        time: Rc::clone(&time),
        line: Vec::new(),
    });
    let mut emit = |table: &ConnTable, at_ns: u64| -> Result<()> {
        let offset = i128::from(at_ns.saturating_sub(header.started_ns));
        let wall = OffsetDateTime::from_unix_timestamp_nanos(header.started_unix_ns + offset)
            .context("the recording's start time is out of range")?;
        *time.borrow_mut() = wall.format(&Rfc3339)?;
        out.write(&Snapshot::take(table, at_ns, &graces))
            .context("writing to stdout")
    };
    let every_ns = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
    let mut table = ConnTable::new();
    let mut next_tick = header.started_ns.saturating_add(every_ns);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        tokio::select! {
            frame = player.next() => match frame.map_err(recording_error)? {
                Some(Frame::Input { at_ns, input }) => {
                    while next_tick <= at_ns {
                        emit(&table, next_tick)?;
                        next_tick = next_tick.saturating_add(every_ns);
                    }
                    table.apply(input);
                }
                // The final snapshot, as `run` prints when it stops.
                Some(Frame::End { at_ns }) => {
                    while next_tick < at_ns {
                        emit(&table, next_tick)?;
                        next_tick = next_tick.saturating_add(every_ns);
                    }
                    return emit(&table, at_ns);
                }
                None => return emit(&table, player.clock.now_ns(Instant::now())),
            },
            _ = sigint.recv() => return emit(&table, player.clock.now_ns(Instant::now())),
            _ = sigterm.recv() => return emit(&table, player.clock.now_ns(Instant::now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restamp_replaces_only_the_time_value() {
        let line =
            br#"{"type":"snapshot","time":"2030-01-01T00:00:00Z","hosts":[{"host":"time"}]}"#;
        assert_eq!(
            restamp(line, "2026-11-26T19:44:45.85Z"),
            br#"{"type":"snapshot","time":"2026-11-26T19:44:45.85Z","hosts":[{"host":"time"}]}"#
                .to_vec()
        );
        assert_eq!(restamp(b"{}", "x"), b"{}".to_vec());
    }

    #[test]
    fn restamped_json_lines_keep_the_export_schema() {
        let time = Rc::new(RefCell::new("2026-01-02T03:04:05Z".to_owned()));
        let mut buf = Vec::new();
        {
            let mut out = JsonLines::new(Restamp {
                out: &mut buf,
                time: Rc::clone(&time),
                line: Vec::new(),
            });
            let table = ConnTable::new();
            out.write(&Snapshot::take(&table, 0, &Graces::default()))
                .expect("writes");
            *time.borrow_mut() = "2026-01-02T03:04:07Z".into();
            out.write(&Snapshot::take(&table, 0, &Graces::default()))
                .expect("writes");
        }
        let text = String::from_utf8(buf).expect("utf8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "snapshot");
        assert_eq!(lines[0]["time"], "2026-01-02T03:04:05Z");
        assert_eq!(lines[1]["time"], "2026-01-02T03:04:07Z");
        assert!(lines[1]["hosts"].is_array());
    }

    #[test]
    fn a_missing_recording_is_a_usage_error_and_a_bad_one_is_not() {
        let missing = recording_error(RecordingError::NotFound("/nope.rec".into()));
        assert!(missing.is::<UsageError>());
        assert!(missing.to_string().contains("/nope.rec"));
        let bad = recording_error(RecordingError::NotARecording("x".into()));
        assert!(!bad.is::<UsageError>());
    }
}
