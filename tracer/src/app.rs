//! Wires the pipeline: the collector task feeds the model through a channel; the main loop
//! applies inputs and, on each tick, renders a snapshot to the chosen output.

use std::{fmt, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
    time::{interval_at, sleep_until, Instant, MissedTickBehavior},
};

use crate::{
    cli::{Cli, Command, RunArgs},
    collect::{self, monotonic_ns, procfs, Collector, TargetSpec},
    export::json::JsonLines,
    model::{ConnTable, Graces, Input, Snapshot},
    ui::plain::PlainTable,
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

pub async fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run(args).await,
    }
}

/// Where snapshots go.
enum Output {
    Json(JsonLines<std::io::Stdout>),
    Table(PlainTable<std::io::Stdout>),
}

impl Output {
    fn write(&mut self, snapshot: &Snapshot, graces: &Graces, last: bool) -> Result<()> {
        match self {
            Output::Json(out) => out.write(snapshot),
            Output::Table(out) => out.write(snapshot, graces, last).map_err(anyhow::Error::from),
        }
        .context("writing to stdout")
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

async fn run(args: RunArgs) -> Result<()> {
    let spec = TargetSpec { pids: args.targets.pids.clone(), comms: args.targets.comms.clone() };
    validate_targets(&spec)?;
    collect::check_privileges()?;
    let graces = args.graces.graces();
    // Verdict times are only as fine as the samples: sample at least every second.
    let sample_every = args.interval.min(Duration::from_secs(1));
    let collector = Collector::start(spec.clone(), sample_every)?;
    // One line on stderr once the programs are attached (tests and scripts wait for it).
    eprintln!("tracer: attached; tracing {}; stop with Ctrl-C", describe_targets(&spec));

    let (tx, mut rx) = mpsc::channel::<Input>(4096);
    let (stop_tx, stop_rx) = watch::channel(false);
    let collector_task = tokio::spawn(collector.run(tx, stop_rx));

    let mut output = if args.json {
        Output::Json(JsonLines::new(std::io::stdout()))
    } else {
        Output::Table(PlainTable::new(std::io::stdout()))
    };
    let mut table = ConnTable::new();
    let mut tick = interval_at(Instant::now() + args.interval, args.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let follow_by_name = !spec.comms.is_empty();

    loop {
        tokio::select! {
            input = rx.recv() => match input {
                Some(input) => {
                    let targets_changed = matches!(input, Input::Targets(_));
                    table.apply(input);
                    if targets_changed && !follow_by_name && table.targets().is_empty() {
                        eprintln!("tracer: every target process has exited; stopping");
                        break;
                    }
                }
                // The collector stopped on its own: its error is reported below.
                None => break,
            },
            _ = tick.tick() => {
                output.write(&Snapshot::take(&table, monotonic_ns(), &graces), &graces, false)?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => break,
        }
    }

    // Let the collector send its last events and sample, then take the final snapshot.
    let _ = stop_tx.send(true);
    while let Some(input) = rx.recv().await {
        table.apply(input);
    }
    collector_task.await.context("the collector task failed")??;
    output.write(&Snapshot::take(&table, monotonic_ns(), &graces), &graces, true)?;
    Ok(())
}
