//! A recording being replayed as a source, at its recorded pace (or faster).

use std::time::Duration;

use tokio::time::Instant;

use anyhow::Result;

use super::{Next, Source};
use crate::{
    record::{
        player::{Player, Speed},
        Frame, RecordingError,
    },
    ui::render::SourceLabel,
};

pub struct ReplaySource {
    player: Player,
    file: String,
    /// The recording's start on the recorded clock.
    started_ns: u64,
    stopped: bool,
    /// Turns a recording's errors into the app's (a missing file is the user's mistake).
    error: fn(RecordingError) -> anyhow::Error,
}

impl ReplaySource {
    pub fn new(
        player: Player,
        file: String,
        started_ns: u64,
        error: fn(RecordingError) -> anyhow::Error,
    ) -> Self {
        Self {
            player,
            file,
            started_ns,
            stopped: false,
            error,
        }
    }

    fn speed_label(&self) -> String {
        match self.player.clock.speed() {
            Speed::Fast => "fast".into(),
            Speed::Times(x) => format!("{x}x"),
        }
    }
}

impl Source for ReplaySource {
    async fn next(&mut self) -> Result<Next> {
        if self.stopped {
            return Ok(Next::End {
                at_ns: self.now_ns(),
            });
        }
        Ok(match self.player.next().await.map_err(self.error)? {
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

    fn wall_until(&self, at_ns: u64) -> Option<Duration> {
        self.player
            .clock
            .due(at_ns)
            .filter(|_| self.player.clock.speed() != Speed::Fast)
            .map(|when| when.saturating_duration_since(Instant::now()))
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

    /// A recording plays to its end: what came after its targets exited is in it.
    fn follows_by_name(&self) -> bool {
        true
    }

    /// The rest of the recording is not played: the session ends where it is.
    fn stop(&mut self) {
        self.stopped = true;
    }

    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}
