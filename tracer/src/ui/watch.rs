//! The terminal UI of `tracer watch` and `tracer replay`: what it draws at each frame (at most
//! 10 a second), what the person's keys do, and the terminal it takes over. The pipeline's
//! driver calls it (`pipeline::sinks::TerminalUi`); it reads the model and never changes it.

use std::{
    path::PathBuf,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt as _;

use crate::{
    export::json::JsonLines,
    model::{ConnTable, Snapshot},
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
pub const FRAME: Duration = Duration::from_millis(100);
/// Ages and idle times move on: redraw this often even when nothing else changed.
const REFRESH: Duration = Duration::from_secs(1);

/// What a key asks of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    Quit,
    /// Pause or resume the source.
    Pause(bool),
}

/// The terminal UI while it is on screen. Dropping it gives the terminal back and prints the
/// log records held while it was up.
pub struct Tui {
    guard: TerminalGuard,
    events: EventStream,
    session: Session,
    trend: Trend,
    ui: UiState,
    view: View,
    dirty: bool,
    last_draw: Option<Instant>,
}

impl Tui {
    /// Takes over the terminal.
    pub fn enter(session: Session, started_ns: u64) -> Result<Self> {
        let guard = TerminalGuard::enter().context("cannot set up the terminal for the UI")?;
        log::capture();
        Ok(Self {
            guard,
            events: EventStream::new(),
            view: View::build(&ConnTable::new(), started_ns, &session.graces),
            session,
            trend: Trend::starting_at(started_ns),
            ui: UiState::new(),
            dirty: true,
            last_draw: None,
        })
    }

    /// Before the model applies an input: the trend keeps its history up to that time.
    pub fn catch_up(&mut self, table: &ConnTable, at_ns: u64) {
        self.trend.catch_up(table, at_ns, &self.session.graces);
    }

    /// A line for the footer (the end of a recording, every target gone).
    pub fn say(&mut self, message: &str) {
        self.ui.message = Some(message.to_owned());
        self.dirty = true;
    }

    pub fn set_source(&mut self, label: SourceLabel) {
        self.session.source = label;
        self.dirty = true;
    }

    /// One frame tick: the model judged at `at_ns`. Draws when something changed, and once a
    /// second anyway.
    pub fn frame(&mut self, table: &ConnTable, at_ns: u64) -> Result<()> {
        let graces = self.session.graces;
        self.trend.catch_up(table, at_ns, &graces);
        if !(self.dirty || self.last_draw.is_none_or(|t| t.elapsed() >= REFRESH)) {
            return Ok(());
        }
        // The view copies every open connection: built only for a frame that is drawn (at
        // 100k connections, building it ten times a second would take most of this thread).
        if !self.ui.paused {
            self.view = View::build(table, at_ns, &graces);
        }
        if self.ui.message.is_none() {
            if let Some(line) = log::latest() {
                self.ui.message = Some(line);
            }
        }
        let screen = Screen {
            view: &self.view,
            ui: &self.ui,
            trend: &self.trend,
            session: &self.session,
        };
        self.guard
            .terminal
            .draw(|frame| render::draw(frame, &screen))
            .context("drawing the UI")?;
        self.last_draw = Some(Instant::now());
        self.dirty = false;
        Ok(())
    }

    /// The terminal's next event, handled: keys change what is shown, or end the session.
    pub fn poll_key(&mut self, cx: &mut Context<'_>) -> Poll<Result<KeyOutcome>> {
        loop {
            let event = match self.events.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(event) => event,
            };
            match event {
                Some(Ok(Event::Key(key))) => {
                    let rows = listed(&self.view, &self.ui, &self.trend);
                    let action = self.ui.on_key(key, &rows);
                    self.dirty = true;
                    match action {
                        Action::Quit => return Poll::Ready(Ok(KeyOutcome::Quit)),
                        Action::Export => {
                            self.ui.message = Some(match export(&self.view.snapshot) {
                                Ok(path) => {
                                    format!("exported the shown snapshot to {}", path.display())
                                }
                                Err(e) => format!("export failed: {e:#}"),
                            });
                        }
                        Action::PauseChanged => {
                            return Poll::Ready(Ok(KeyOutcome::Pause(self.ui.paused)))
                        }
                        Action::Redraw | Action::Nothing => {}
                    }
                }
                Some(Ok(Event::Resize(..))) => self.dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(e).context("reading the terminal")),
                // The terminal went away.
                None => return Poll::Ready(Ok(KeyOutcome::Quit)),
            }
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        // The guard restores the terminal when dropped, after this; the held log records
        // are printed once the UI is gone.
        crate::ui::term::restore();
        log::release();
    }
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
    let streams = match (ui.page, &ui.selected_conn) {
        (Page::Detail, Some(id)) => view
            .conn(id)
            .map(|c| c.streams.iter().map(|s| s.key()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let sites = match ui.page {
        Page::Sites => view
            .listed_sites(ui)
            .into_iter()
            .map(|s| s.call_site.clone())
            .collect(),
        _ => Vec::new(),
    };
    let site_leaks = match (ui.page, &ui.selected_site) {
        (Page::Site, Some(site)) => view
            .site_leaks(site, ui)
            .iter()
            .map(|l| l.listed())
            .collect(),
        _ => Vec::new(),
    };
    Listed {
        hosts,
        conns,
        streams,
        sites,
        site_leaks,
    }
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
