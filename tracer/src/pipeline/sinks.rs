//! The outputs as sinks of the driver. Each is a thin adapter: the rendering itself lives in
//! `ui/` and `export/`, the file format in `record/`; none changes the model.

use std::{
    io::Write,
    path::PathBuf,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{Context as _, Result};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{Cadence, Judged, Notice, Request, Sink};
use crate::{
    collect::monotonic_ns,
    export::{
        csv::CsvSnapshots,
        json::JsonLines,
        metrics_server::{read_process_stats, MetricsServer},
        prometheus::{Health, PrometheusExporter},
    },
    model::{ConnTable, Input},
    record::RecordingWriter,
    ui::{
        plain::PlainTable,
        watch::{KeyOutcome, Tui, FRAME},
    },
};

/// The headless table of `tracer run`, every `every`, and a last one at the end.
pub struct Table {
    pub out: PlainTable<std::io::Stdout>,
    pub every: Duration,
}

impl Sink for Table {
    fn cadence(&self) -> Cadence {
        Cadence::Model(self.every)
    }

    fn tick(&mut self, model: &Judged<'_>) -> Result<()> {
        self.out
            .write(&model.snapshot(), model.graces, false)
            .context("writing to stdout")
    }

    fn finish(&mut self, model: &Judged<'_>) -> Result<()> {
        self.out
            .write(&model.snapshot(), model.graces, true)
            .context("writing to stdout")
    }
}

/// What a JSON line's `time` says.
pub enum Stamp {
    /// The wall clock when it is written (live).
    Now,
    /// The recorded wall-clock time of the moment it shows (a replay): the recording's start
    /// plus the recorded clock's advance since then.
    Recorded {
        started_unix_ns: i128,
        started_ns: u64,
    },
}

impl Stamp {
    fn at(&self, clock_ns: u64) -> Result<String> {
        match self {
            Stamp::Now => crate::export::now_rfc3339(),
            Stamp::Recorded {
                started_unix_ns,
                started_ns,
            } => {
                let offset = i128::from(clock_ns.saturating_sub(*started_ns));
                OffsetDateTime::from_unix_timestamp_nanos(started_unix_ns + offset)
                    .context("the recording's start time is out of range")?
                    .format(&Rfc3339)
                    .context("formatting the recorded time")
            }
        }
    }
}

/// One JSON snapshot per line (the `run --json` schema), every `every` and at the end.
pub struct Json<W: Write> {
    pub out: JsonLines<W>,
    /// Where it goes, for errors ("stdout", a file's path).
    pub to: String,
    pub every: Duration,
    pub stamp: Stamp,
}

impl<W: Write> Json<W> {
    fn write(&mut self, model: &Judged<'_>) -> Result<()> {
        let time = self.stamp.at(model.clock_ns)?;
        self.out
            .write_at(&model.snapshot(), time)
            .with_context(|| format!("writing to {}", self.to))
    }
}

impl<W: Write> Sink for Json<W> {
    fn cadence(&self) -> Cadence {
        Cadence::Model(self.every)
    }

    fn tick(&mut self, model: &Judged<'_>) -> Result<()> {
        self.write(model)
    }

    fn finish(&mut self, model: &Judged<'_>) -> Result<()> {
        self.write(model)
    }
}

/// `tracer snapshot`: one snapshot at the end, in the chosen format.
pub enum Final {
    Json,
    Csv,
    /// Primed with a rendering at the start, so rates cover the observed window.
    Prometheus(Box<PrometheusExporter>),
}

impl Final {
    pub fn prometheus(started_ns: u64, graces: &crate::model::Graces) -> Result<Self> {
        let mut exporter = PrometheusExporter::new(crate::export::prometheus::DEFAULT_TOP_HOSTS);
        let health = Health {
            now_ns: started_ns,
            tracked_sockets: 0,
            process: None,
        };
        let empty = ConnTable::new();
        exporter.render(
            &crate::model::Snapshot::take(&empty, started_ns, graces),
            &health,
        )?;
        Ok(Final::Prometheus(Box::new(exporter)))
    }
}

impl Sink for Final {
    fn cadence(&self) -> Cadence {
        Cadence::Never
    }

    fn finish(&mut self, model: &Judged<'_>) -> Result<()> {
        let snapshot = model.snapshot();
        let stdout = std::io::stdout();
        match self {
            Final::Json => JsonLines::new(stdout.lock()).write(&snapshot),
            Final::Csv => CsvSnapshots::new(stdout.lock()).write(&snapshot),
            Final::Prometheus(exporter) => {
                let health = Health {
                    now_ns: model.at_ns,
                    tracked_sockets: model.table.conns().count() as u64,
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
}

/// The Prometheus endpoint, fed a rendering every `every`.
pub struct Metrics {
    server: MetricsServer,
    exporter: PrometheusExporter,
    every: Duration,
}

impl Metrics {
    /// Binds the endpoint (after attach, so a port clash does not cost a load) and says where.
    pub fn start(addr: std::net::SocketAddr, top_hosts: usize, every: Duration) -> Result<Self> {
        let server = MetricsServer::bind(addr)?;
        eprintln!("tracer: metrics at http://{}/metrics", server.local_addr());
        Ok(Self {
            server,
            exporter: PrometheusExporter::new(top_hosts),
            every,
        })
    }
}

impl Sink for Metrics {
    fn cadence(&self) -> Cadence {
        Cadence::Model(self.every)
    }

    fn tick(&mut self, model: &Judged<'_>) -> Result<()> {
        let health = Health {
            now_ns: model.at_ns,
            tracked_sockets: model.table.conns().count() as u64,
            process: read_process_stats().map_err(|e| log::debug!("{e:#}")).ok(),
        };
        self.server
            .publish(self.exporter.render(&model.snapshot(), &health)?);
        Ok(())
    }
}

/// `tracer record`: every input, with the time it arrived, to a recording file.
pub struct Recorder {
    writer: Option<RecordingWriter<std::fs::File>>,
    path: PathBuf,
    started_ns: u64,
}

impl Recorder {
    pub fn new(writer: RecordingWriter<std::fs::File>, path: PathBuf, started_ns: u64) -> Self {
        Self {
            writer: Some(writer),
            path,
            started_ns,
        }
    }

    fn writing(&self, e: std::io::Error) -> anyhow::Error {
        anyhow::Error::new(e).context(format!("writing {}", self.path.display()))
    }
}

impl Sink for Recorder {
    fn cadence(&self) -> Cadence {
        Cadence::Never
    }

    fn input(&mut self, at_ns: u64, input: &Input, _model: &Judged<'_>) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let mut written = writer.write_input(at_ns, input);
        if written.is_ok() && matches!(input, Input::Sample(_)) {
            // About once a second: a killed recorder loses at most that much.
            written = writer.flush();
        }
        written.map_err(|e| self.writing(e))
    }

    fn finish(&mut self, _model: &Judged<'_>) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        // The End frame carries the clock when recording stopped, not a judging time.
        let end_ns = monotonic_ns();
        let (inputs, bytes) = writer.finish(end_ns).map_err(|e| self.writing(e))?;
        eprintln!(
            "tracer: recorded {inputs} inputs over {:.1}s to {} ({bytes} bytes); play it with: tracer replay {}",
            end_ns.saturating_sub(self.started_ns) as f64 / 1e9,
            self.path.display(),
            self.path.display()
        );
        Ok(())
    }
}

/// The terminal UI: frames on the wall clock, the person's keys, held open until they quit.
pub struct TerminalUi(pub Tui);

impl Sink for TerminalUi {
    fn cadence(&self) -> Cadence {
        Cadence::Wall(FRAME)
    }

    fn input(&mut self, _at_ns: u64, _input: &Input, model: &Judged<'_>) -> Result<()> {
        self.0.catch_up(model.table, model.at_ns);
        Ok(())
    }

    fn tick(&mut self, model: &Judged<'_>) -> Result<()> {
        self.0.frame(model.table, model.at_ns)
    }

    fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<Result<Request>> {
        self.0.poll_key(cx).map_ok(|outcome| match outcome {
            KeyOutcome::Quit => Request::Stop,
            KeyOutcome::Pause(paused) => Request::Pause(paused),
        })
    }

    fn notice(&mut self, notice: Notice, model: &Judged<'_>) {
        match notice {
            Notice::TargetsGone => self.0.say("every target process has exited; q quits"),
            Notice::SourceEnded => {
                self.0.catch_up(model.table, model.at_ns);
                self.0
                    .say("end of the recording: the screen shows its last moment; q quits");
            }
            Notice::Source(label) => self.0.set_source(label),
        }
    }

    fn holds_session(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{testkit::SEC, Graces};

    #[test]
    fn replayed_json_lines_carry_the_recorded_time_and_the_export_schema() {
        // Recording started at 2026-01-02T03:04:05Z, when the recorded clock read 100 s.
        let started_unix_ns = 1_767_323_045 * i128::from(SEC);
        let mut sink = Json {
            out: JsonLines::new(Vec::new()),
            to: "a buffer".into(),
            every: Duration::from_secs(2),
            stamp: Stamp::Recorded {
                started_unix_ns,
                started_ns: 100 * SEC,
            },
        };
        let table = ConnTable::new();
        let graces = Graces::default();
        for clock_ns in [100 * SEC, 102 * SEC + SEC / 2] {
            let judged = Judged {
                table: &table,
                graces: &graces,
                at_ns: clock_ns,
                clock_ns,
            };
            sink.tick(&judged).expect("writes");
        }
        let text = String::from_utf8(sink.out.into_inner()).expect("utf8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "snapshot");
        assert_eq!(lines[0]["time"], "2026-01-02T03:04:05Z");
        assert_eq!(lines[1]["time"], "2026-01-02T03:04:07.5Z");
        assert!(lines[1]["hosts"].is_array());
    }
}
