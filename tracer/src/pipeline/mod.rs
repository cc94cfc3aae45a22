//! The pipeline: one driver loop that feeds a source's model inputs to the model table and
//! hands the judged table to sinks.
//!
//! ```text
//!  Source (live collector | recording)  ──►  Driver  ──►  Sink: table | JSON lines | recorder
//!        Next::Input { at_ns, input }        owns the            | metrics | snapshot | terminal UI
//!                                            ConnTable, the input lag, signals, deadline,
//!                                            the target-exit check and every sink's ticks
//! ```
//!
//! `run`, `watch`, `record`, `replay` and `snapshot` are each one source and some sinks
//! (`app.rs` wires them). Every sink sees the table judged at the same time: the source's
//! clock minus the input lag (`model::InputLag`). Sinks read the model; none changes it.

mod driver;
pub mod live;
pub mod replay;
pub mod sinks;

use std::{
    future::Future,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Result;

pub use driver::{Driver, Options};

use crate::{
    model::{ConnTable, Graces, Input, Snapshot},
    ui::render::SourceLabel,
};

/// What a source hands the driver. (Moved once per input: not worth a Box.)
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// An input, received (or recorded) at `at_ns` on the source's clock.
    Input { at_ns: u64, input: Input },
    /// A recording ended at `at_ns` (or a stopped source has nothing more): nothing more comes.
    End { at_ns: u64 },
    /// The live collector's channel closed (its error comes from `close`).
    Closed,
}

/// Where the model inputs come from, and the clock they are judged by.
pub trait Source {
    /// The next input when it is due. Must be cancel-safe: it is raced against the other
    /// branches of the driver's loop.
    fn next(&mut self) -> impl Future<Output = Result<Next>>;
    /// An input already at hand, with its time: the rest of a live batch, taken by the driver
    /// in the same turn of its loop instead of a select (and a poll of every signal) per
    /// input. `None` when nothing is buffered, and always for a source that paces its inputs
    /// (a replay).
    fn ready(&mut self) -> Option<(u64, Input)> {
        None
    }
    /// The source's clock now (CLOCK_MONOTONIC live, the recorded clock in a replay).
    fn now_ns(&self) -> u64;
    /// When the session started, on the same clock.
    fn started_ns(&self) -> u64;
    /// Wall time until the clock reads `at_ns`; `None` when waiting will not get there (a
    /// replay as fast as possible, or paused): ticks then come only as inputs pass them.
    fn wall_until(&self, at_ns: u64) -> Option<Duration>;
    /// Pause or resume (a replay stops its clock; a live session keeps collecting).
    fn set_paused(&mut self, paused: bool);
    fn label(&self) -> SourceLabel;
    /// True when targets are followed by name: a new process may come after all exited.
    fn follows_by_name(&self) -> bool;
    /// Asks the source to stop: `next` then hands out what is still in flight and ends.
    fn stop(&mut self);
    /// After the source ended: its own failure, if it had one.
    fn close(&mut self) -> impl Future<Output = Result<()>>;
}

/// The table judged at one instant, as every sink sees it.
pub struct Judged<'a> {
    pub table: &'a ConnTable,
    pub graces: &'a Graces,
    /// When the table is judged: the source's clock minus the input lag.
    pub at_ns: u64,
    /// The source's clock at that moment (what a recording or a JSON line is stamped with).
    pub clock_ns: u64,
}

impl Judged<'_> {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::take(self.table, self.at_ns, self.graces)
    }
}

/// How often a sink wants `tick`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cadence {
    /// Every so long on the source's clock, from the session's start (a replay's ticks fall
    /// at the recorded times, at any speed).
    Model(Duration),
    /// Every so long of wall time (screen frames).
    Wall(Duration),
    /// Only at the end.
    Never,
}

/// What a sink asks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// End the session (the person quit).
    Stop,
    /// Pause or resume the source.
    Pause(bool),
}

/// What the driver tells sinks that hold the session open.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// Every target process exited.
    TargetsGone,
    /// The source ended (the end of a recording).
    SourceEnded,
    /// The source's label changed (paused, resumed, ended).
    Source(SourceLabel),
}

/// An output of the pipeline. Every method but `cadence` has a default that does nothing.
pub trait Sink {
    fn cadence(&self) -> Cadence;
    /// Every input before the model applies it; `model` is the table before it.
    fn input(&mut self, _at_ns: u64, _input: &Input, _model: &Judged<'_>) -> Result<()> {
        Ok(())
    }
    /// At each tick of the sink's cadence.
    fn tick(&mut self, _model: &Judged<'_>) -> Result<()> {
        Ok(())
    }
    /// The sink's own events (a person's keys): `Ready` with what to do.
    fn poll_request(&mut self, _cx: &mut Context<'_>) -> Poll<Result<Request>> {
        Poll::Pending
    }
    fn notice(&mut self, _notice: Notice, _model: &Judged<'_>) {}
    /// The session ended: the final snapshot.
    fn finish(&mut self, _model: &Judged<'_>) -> Result<()> {
        Ok(())
    }
    /// True when a person is looking: the session stays open after the source ended or
    /// every target exited, until the sink asks to stop.
    fn holds_session(&self) -> bool {
        false
    }
}
