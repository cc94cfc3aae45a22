//! Wires the pipeline: each command is one source (the live collector, or a recording being
//! replayed) and some sinks (table, JSON lines, metrics, recorder, snapshot, terminal UI),
//! driven by `pipeline::Driver`. What is checked before anything is loaded lives here too.

use std::{
    fmt,
    io::{IsTerminal, Write},
    time::Duration,
};

use anyhow::{Context as _, Result};
use time::OffsetDateTime;

use crate::{
    cli::{
        CheckArgs, Cli, Command, GoArgs, GoProbes, MetricsArgs, NamingArgs, RecordArgs, ReplayArgs,
        RunArgs, SnapshotArgs, SnapshotFormat, TargetArgs, WatchArgs,
    },
    collect::{self, monotonic_ns, procfs, GoLayerMode, TargetSpec},
    export::{json::JsonLines, rotate::RotatingFile},
    goprobe,
    naming::catalogue::{Catalogue, ProvidersFileError},
    pipeline::{
        live::LiveSource,
        replay::ReplaySource,
        sinks::{self, Stamp},
        Driver, Options, Source as _,
    },
    record::{
        self,
        player::{Player, Speed},
        Header, RecordingError, RecordingWriter,
    },
    ui::{
        plain::PlainTable,
        render::{Session, SourceLabel},
        watch::Tui,
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
/// The collector samples at least this often: verdict times are only as fine as the samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The terminal UI's metrics endpoint is refreshed this often.
const UI_METRICS_EVERY: Duration = Duration::from_secs(1);

pub async fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Watch(args)) => watch(args).await,
        Some(Command::Record(args)) => record(args).await,
        Some(Command::Replay(args)) => replay(args).await,
        Some(Command::Snapshot(args)) => snapshot(args).await,
        Some(Command::Check(args)) => check(&args),
        // `tracer --pid X`: the UI for a person at a terminal, the table for pipes and logs.
        None if std::io::stdout().is_terminal() => {
            watch(WatchArgs {
                targets: cli.targets,
                go: cli.go,
                graces: cli.graces,
                sites: cli.sites,
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
                go: cli.go,
                graces: cli.graces,
                sites: cli.sites,
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

fn spec_of(targets: &TargetArgs, go: &GoArgs) -> TargetSpec {
    TargetSpec {
        pids: targets.pids.clone(),
        comms: targets.comms.clone(),
        go_probes: match go.go_probes {
            GoProbes::Off => GoLayerMode::Off,
            GoProbes::Auto => GoLayerMode::Streams,
            GoProbes::Sites => GoLayerMode::Full,
        },
    }
}

/// Checks the targets, the catalogue and privileges, runs `before_load` (to create an output
/// file, say: no file for a typo in --pid, and a bad path fails before the load), then loads
/// and attaches the programs.
fn start_live(
    targets: &TargetArgs,
    go: &GoArgs,
    naming: &NamingArgs,
    sample_every: Duration,
    before_load: impl FnOnce() -> Result<()>,
) -> Result<LiveSource> {
    let spec = spec_of(targets, go);
    validate_targets(&spec)?;
    let catalogue = catalogue(naming)?;
    collect::check_privileges()?;
    before_load()?;
    LiveSource::start(spec, catalogue, sample_every)
}

fn metrics_sink(args: &MetricsArgs, every: Duration) -> Result<Option<sinks::Metrics>> {
    args.metrics_addr
        .map(|addr| sinks::Metrics::start(addr, args.metrics_top_hosts as usize, every))
        .transpose()
}

async fn run(args: RunArgs) -> Result<()> {
    let graces = args.graces.graces();
    let every = args.interval;
    let mut file = None;
    let source = start_live(
        &args.targets,
        &args.go,
        &args.naming,
        every.min(SAMPLE_EVERY),
        || {
            if let Some(path) = &args.output {
                file = Some(
                    RotatingFile::open(path, args.output_max_size, usize::from(args.output_keep))
                        .map_err(|e| UsageError(format!("{e:#}")))?,
                );
            }
            Ok(())
        },
    )?;
    // One line on stderr once the programs are attached (tests and scripts wait for it).
    eprintln!(
        "tracer: attached; tracing {}; stop with Ctrl-C",
        describe_targets(source.spec())
    );
    let metrics = metrics_sink(&args.metrics, every)?;
    let options = Options {
        duration: args.duration,
    };
    let driver = Driver::new(source, graces, options).site_rules(args.sites.rules());
    let driver = match (file, &args.output) {
        (Some(file), Some(path)) => driver.sink(sinks::Json {
            out: JsonLines::new(file),
            to: path.display().to_string(),
            every,
            stamp: Stamp::Now,
        }),
        _ if args.json => driver.sink(sinks::Json {
            out: JsonLines::new(std::io::stdout()),
            to: "stdout".into(),
            every,
            stamp: Stamp::Now,
        }),
        _ => driver.sink(sinks::Table {
            out: PlainTable::new(std::io::stdout()),
            every,
        }),
    };
    with_metrics(driver, metrics).run().await
}

fn with_metrics(driver: Driver<LiveSource>, metrics: Option<sinks::Metrics>) -> Driver<LiveSource> {
    match metrics {
        Some(metrics) => driver.sink(metrics),
        None => driver,
    }
}

/// `tracer check`: one ✓ or ✗ line per requirement, the fix under each ✗.
fn check(args: &CheckArgs) -> Result<()> {
    validate_targets(&TargetSpec {
        pids: args.pids.clone(),
        comms: Vec::new(),
        go_probes: GoLayerMode::Off,
    })?;
    let lines = collect::check_host();
    let mut out = std::io::stdout().lock();
    for line in &lines {
        writeln!(out, "{} {}", if line.ok { "✓" } else { "✗" }, line.what)?;
        if let Some(fix) = &line.fix {
            writeln!(out, "    fix: {fix}")?;
        }
    }
    // The Go layer is an addition: when it stays off, tracing still works (kernel signals).
    for pid in &args.pids {
        let line = match goprobe::inspect(&procfs::exe_path(*pid)) {
            Ok(binary) => format!(
                "✓ pid {pid}: {}\n    {}",
                binary.line(),
                binary.call_sites_line()
            ),
            Err(refusal) => format!("· {}", refusal.line(*pid)),
        };
        writeln!(out, "{line}")?;
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
    let source = start_live(&args.targets, &args.go, &args.naming, SAMPLE_EVERY, || {
        Ok(())
    })?;
    eprintln!(
        "tracer: attached; observing {} for {}",
        describe_targets(source.spec()),
        humantime::format_duration(args.observe_for)
    );
    let last = match args.format {
        SnapshotFormat::Json => sinks::Final::Json,
        SnapshotFormat::Csv => sinks::Final::Csv,
        SnapshotFormat::Prometheus => sinks::Final::prometheus(source.started_ns(), &graces)?,
    };
    let options = Options {
        duration: Some(args.observe_for),
    };
    Driver::new(source, graces, options)
        .site_rules(args.sites.rules())
        .sink(last)
        .run()
        .await
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

async fn watch(args: WatchArgs) -> Result<()> {
    needs_terminal("tracer watch", "use tracer run (add --json for JSON lines)")?;
    let graces = args.graces.graces();
    let source = start_live(&args.targets, &args.go, &args.naming, SAMPLE_EVERY, || {
        Ok(())
    })?;
    let metrics = metrics_sink(&args.metrics, UI_METRICS_EVERY)?;
    let session = Session {
        source: SourceLabel::Live,
        graces,
    };
    let tui = Tui::enter(session, source.started_ns())?;
    let driver = Driver::new(source, graces, Options::default())
        .site_rules(args.sites.rules())
        .sink(sinks::TerminalUi(tui));
    with_metrics(driver, metrics).run().await
}

async fn record(args: RecordArgs) -> Result<()> {
    let graces = args.graces.graces();
    let path = args.out.clone();
    let mut file = None;
    // The output is created after the checks (no empty file for a typo in --pid) and before
    // loading (a bad path fails fast).
    let source = start_live(&args.targets, &args.go, &args.naming, SAMPLE_EVERY, || {
        let created = std::fs::File::create(&path).map_err(|e| {
            UsageError(format!(
                "cannot create {}: {e} (check that its directory exists and is writable)",
                path.display()
            ))
        })?;
        file = Some(created);
        Ok(())
    })
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
        pids: source.spec().pids.clone(),
        comms: source.spec().comms.clone(),
        graces: graces.into(),
    };
    let writer = RecordingWriter::new(file, &header)
        .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", path.display())))?;
    eprintln!(
        "tracer: attached; recording {} to {}; stop with Ctrl-C",
        describe_targets(source.spec()),
        path.display()
    );
    let options = Options {
        duration: args.duration,
    };
    Driver::new(source, graces, options)
        .sink(sinks::Recorder::new(writer, path, header.started_ns))
        .run()
        .await
}

/// A missing file is the user's mistake (exit 2); a bad one is a runtime error (exit 1).
fn recording_error(e: RecordingError) -> anyhow::Error {
    match e {
        RecordingError::NotFound(_) => UsageError(e.to_string()).into(),
        e => e.into(),
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
    if !args.json {
        needs_terminal("tracer replay", "add --json for JSON lines")?;
    }
    let (player, header) = Player::start(&args.file, speed).map_err(recording_error)?;
    let file = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let source = ReplaySource::new(player, file, header.started_ns, recording_error);
    if args.json {
        // One snapshot per --interval of recorded time, stamped with the recorded wall-clock
        // time, and a last one at the end of the recording.
        let sink = sinks::Json {
            out: JsonLines::new(std::io::stdout()),
            to: "stdout".into(),
            every: args.interval,
            stamp: Stamp::Recorded {
                started_unix_ns: header.started_unix_ns,
                started_ns: header.started_ns,
            },
        };
        return Driver::new(source, graces, Options::default())
            .site_rules(args.sites.rules())
            .sink(sink)
            .run()
            .await;
    }
    let session = Session {
        source: source.label(),
        graces,
    };
    let tui = Tui::enter(session, header.started_ns)?;
    Driver::new(source, graces, Options::default())
        .site_rules(args.sites.rules())
        .sink(sinks::TerminalUi(tui))
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_recording_is_a_usage_error_and_a_bad_one_is_not() {
        let missing = recording_error(RecordingError::NotFound("/nope.rec".into()));
        assert!(missing.is::<UsageError>());
        assert!(missing.to_string().contains("/nope.rec"));
        let bad = recording_error(RecordingError::NotARecording("x".into()));
        assert!(!bad.is::<UsageError>());
    }
}
