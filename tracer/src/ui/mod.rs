//! Human-facing renderings of snapshots. Rendering reads the model's snapshot (or a view-model
//! built from it); it never changes the model.
//!
//! - `plain`: the headless table of `tracer run`.
//! - the terminal UI of `tracer watch` and `tracer replay`: `watch` (the loop), `state` (what
//!   the person chose: page, selection, sort, filters, pause), `view` (the view-model),
//!   `trend` (the session's history), `render` (drawing), `explain` (verdicts in words),
//!   `term` (terminal setup and restore), `log` (diagnostics kept off the screen).

pub mod explain;
pub mod log;
pub mod plain;
pub mod render;
pub mod state;
pub mod term;
pub mod trend;
pub mod units;
pub mod view;
pub mod watch;
