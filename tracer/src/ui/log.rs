//! The logger. Diagnostics go to stderr, except while the terminal UI is on screen: there they
//! would scribble over it, so they are kept, the newest shown in the footer, and all printed
//! to stderr once the terminal is given back.

use std::{
    collections::VecDeque,
    sync::{Mutex, OnceLock},
};

use log::{Log, Metadata, Record};

/// Most records kept while captured; older ones are counted, not kept.
const MAX_KEPT: usize = 200;

struct Logger {
    inner: env_logger::Logger,
    captured: Mutex<Option<Captured>>,
}

#[derive(Default)]
struct Captured {
    lines: VecDeque<String>,
    dropped: usize,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger: RUST_LOG as usual, `warn` by default.
pub fn init() {
    let inner = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .build();
    let max = inner.filter();
    let logger = LOGGER.get_or_init(|| Logger {
        inner,
        captured: Mutex::new(None),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.inner.matches(record) {
            return;
        }
        if let Ok(mut captured) = self.captured.lock() {
            if let Some(c) = captured.as_mut() {
                if c.lines.len() >= MAX_KEPT {
                    c.lines.pop_front();
                    c.dropped += 1;
                }
                c.lines
                    .push_back(format!("[{}] {}", record.level(), record.args()));
                return;
            }
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Starts keeping log records instead of printing them.
pub fn capture() {
    if let Some(logger) = LOGGER.get() {
        if let Ok(mut captured) = logger.captured.lock() {
            *captured = Some(Captured::default());
        }
    }
}

/// The newest kept record, for the footer.
pub fn latest() -> Option<String> {
    let logger = LOGGER.get()?;
    let captured = logger.captured.lock().ok()?;
    captured.as_ref()?.lines.back().cloned()
}

/// Stops keeping records and prints the kept ones to stderr.
pub fn release() {
    let Some(logger) = LOGGER.get() else { return };
    let kept = logger.captured.lock().ok().and_then(|mut c| c.take());
    if let Some(kept) = kept {
        if kept.dropped > 0 {
            eprintln!(
                "tracer: {} earlier log records were dropped while the UI was open",
                kept.dropped
            );
        }
        for line in kept.lines {
            eprintln!("tracer: {line}");
        }
    }
}
