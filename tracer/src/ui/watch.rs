//! The terminal UI's loop (`tracer watch`, `tracer replay`): one `tokio::select!` over the
//! model inputs, a redraw tick (at most 10 frames a second), terminal events and signals. The
//! inputs come from a `Source`: the live collector's channel, or a recording being replayed;
//! the loop never waits on either except in that select.

use std::{
    future::Future,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt as _;
use tokio::{
    signal::unix::{signal, SignalKind},
    time::{interval, MissedTickBehavior},
};

use crate::{
    export::json::JsonLines,
    model::{ConnTable, Input, InputLag, Snapshot},
};

use super::{
    log,
    render::{self, Screen, Session, SourceLabel},
    state::{Action, Listed, Page, UiState},
    term::TerminalGuard,
    trend::Trend,
    view::View,
};

/// At most this many frames a second.
const FRAME: Duration = Duration::from_millis(100);
/// Ages and idle times move on: redraw this often even when nothing else changed.
const REFRESH: Duration = Duration::from_secs(1);

/// What a source hands the loop. (Moved once per input: not worth a Box.)
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// An input, received (or recorded) at `at_ns` on the model's clock.
    Input { at_ns: u64, input: Input },
    /// A recording ended at `at_ns`: nothing more will come.
    End { at_ns: u64 },
    /// The live collector stopped (its error is the caller's to report).
    Closed,
}

/// Where the model inputs come from, and the clock they are judged by.
pub trait Source {
    /// The next input when it is due. Must be cancel-safe: it is raced against the other
    /// branches of the loop.
    fn next(&mut self) -> impl Future<Output = Result<Next>>;
    /// The model's clock now (CLOCK_MONOTONIC live, the recorded clock in a replay).
    fn now_ns(&self) -> u64;
    /// When the session started, on the same clock.
    fn started_ns(&self) -> u64;
    /// Pause or resume (a replay stops its clock; a live session keeps collecting).
    fn set_paused(&mut self, paused: bool);
    fn label(&self) -> SourceLabel;
}

/// How the UI ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// q, Ctrl-C or a signal.
    Quit,
    /// The live source closed: the collector failed.
    SourceClosed,
}

/// Called about once a second with the model and its clock, for outputs that run beside the
/// UI (the Prometheus endpoint). It only reads the model.
pub type Observer<'a> = &'a mut dyn FnMut(&ConnTable, u64) -> Result<()>;

/// Takes over the terminal, runs the UI until quit, and gives the terminal back.
pub async fn run<S: Source>(
    source: S,
    session: Session,
    observer: Option<Observer<'_>>,
) -> Result<Outcome> {
    let mut guard = TerminalGuard::enter().context("cannot set up the terminal for the UI")?;
    log::capture();
    let outcome = event_loop(&mut guard, source, session, observer).await;
    drop(guard);
    log::release();
    outcome
}

fn listed(view: &View, ui: &UiState, trend: &Trend) -> Listed {
    let hosts = view
        .listed_hosts(ui, trend)
        .into_iter()
        .map(|h| h.host.clone())
        .collect();
    let conns = match (ui.page, &ui.selected_host) {
        (Page::Connections | Page::Detail, Some(host)) => view
            .listed_conns(host, ui)
            .into_iter()
            .map(|c| c.id())
            .collect(),
        _ => Vec::new(),
    };
    Listed { hosts, conns }
}

/// Writes `snapshot` as one JSON line (the schema of `run --json`) to a new file in the
/// current directory, or the temporary directory when that is not writable.
fn export(snapshot: &Snapshot) -> Result<PathBuf> {
    let t = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let name = format!("tracer-snapshot-{stamp}.json");
    let mut last_error = None;
    let dirs = [std::env::current_dir().ok(), Some(std::env::temp_dir())];
    for dir in dirs.into_iter().flatten() {
        let path = dir.join(&name);
        match std::fs::File::create(&path) {
            Ok(file) => {
                JsonLines::new(std::io::BufWriter::new(file))
                    .write(snapshot)
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(path);
            }
            Err(e) => {
                last_error =
                    Some(anyhow::Error::new(e).context(format!("creating {}", path.display())))
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no directory to write {name} to")))
}

async fn event_loop<S: Source>(
    guard: &mut TerminalGuard,
    mut source: S,
    mut session: Session,
    mut observer: Option<Observer<'_>>,
) -> Result<Outcome> {
    let mut last_observed: Option<Instant> = None;
    let graces = session.graces;
    let mut table = ConnTable::new();
    let mut lag = InputLag::default();
    let mut trend = Trend::starting_at(source.started_ns());
    let mut ui = UiState::new();
    let mut view = View::build(&table, source.now_ns(), &graces);
    let mut events = EventStream::new();
    let mut tick = interval(FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut ended = false;
    let mut had_targets = false;
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;

    let outcome = loop {
        tokio::select! {
            next = source.next(), if !ended => match next? {
                Next::Input { at_ns, input } => {
                    lag.observe(&input, at_ns);
                    trend.catch_up(&table, lag.judge_at(at_ns), &graces);
                    let targets_changed = matches!(input, Input::Targets(_));
                    table.apply(input);
                    if targets_changed {
                        if table.targets().is_empty() && had_targets {
                            ui.message = Some("every target process has exited; q quits".into());
                            dirty = true;
                        }
                        had_targets |= !table.targets().is_empty();
                    }
                }
                Next::End { at_ns } => {
                    trend.catch_up(&table, lag.judge_at(at_ns), &graces);
                    ended = true;
                    session.source = source.label();
                    ui.message = Some("end of the recording: the screen shows its last moment; q quits".into());
                    dirty = true;
                }
                Next::Closed => break Outcome::SourceClosed,
            },
            _ = tick.tick() => {
                // Judged as of the inputs applied (see `InputLag`).
                let now = lag.judge_at(source.now_ns());
                trend.catch_up(&table, now, &graces);
                if let Some(observe) = observer.as_mut() {
                    if last_observed.is_none_or(|t| t.elapsed() >= REFRESH) {
                        last_observed = Some(Instant::now());
                        if let Err(e) = observe(&table, now) {
                            ui.message = Some(format!("{e:#}"));
                            dirty = true;
                        }
                    }
                }
                if dirty || last_draw.is_none_or(|t| t.elapsed() >= REFRESH) {
                    // The view copies every open connection: built only for a frame that is
                    // drawn (at 100k connections, building it ten times a second would take
                    // most of this thread).
                    if !ui.paused {
                        view = View::build(&table, now, &graces);
                    }
                    if ui.message.is_none() {
                        if let Some(line) = log::latest() {
                            ui.message = Some(line);
                        }
                    }
                    let screen = Screen { view: &view, ui: &ui, trend: &trend, session: &session };
                    guard.terminal.draw(|frame| render::draw(frame, &screen)).context("drawing the UI")?;
                    last_draw = Some(Instant::now());
                    dirty = false;
                }
            }
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) => {
                    let rows = listed(&view, &ui, &trend);
                    match ui.on_key(key, &rows) {
                        Action::Quit => break Outcome::Quit,
                        Action::Export => {
                            ui.message = Some(match export(&view.snapshot) {
                                Ok(path) => format!("exported the shown snapshot to {}", path.display()),
                                Err(e) => format!("export failed: {e:#}"),
                            });
                        }
                        Action::PauseChanged => {
                            source.set_paused(ui.paused);
                            session.source = source.label();
                        }
                        Action::Redraw | Action::Nothing => {}
                    }
                    dirty = true;
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                // The terminal went away.
                None => break Outcome::Quit,
            },
            _ = sigint.recv() => break Outcome::Quit,
            _ = sigterm.recv() => break Outcome::Quit,
            _ = sighup.recv() => break Outcome::Quit,
        }
    };
    Ok(outcome)
}
