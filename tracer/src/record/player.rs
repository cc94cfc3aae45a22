//! Plays a recording back: a reader thread decodes frames ahead, and `Player::next` hands each
//! one over when the replay clock reaches its recorded time (at once with `Speed::Fast`).

use std::path::Path;

use tokio::{sync::mpsc, time::Instant};

use super::{Frame, Header, RecordingError, RecordingReader};

/// How fast the recorded clock runs against the wall clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the frames can be applied: the clock jumps from frame to frame.
    Fast,
    /// This many recorded seconds per wall-clock second (1 = as recorded).
    Times(f64),
}

/// The recorded clock during a replay: what `monotonic_ns()` is to a live session.
#[derive(Clone, Debug)]
pub struct ReplayClock {
    speed: Speed,
    /// The recorded time at `anchor_wall`.
    anchor_ns: u64,
    anchor_wall: Instant,
    paused: bool,
    /// The newest frame time handed out.
    position_ns: u64,
    end_ns: Option<u64>,
}

impl ReplayClock {
    pub fn new(start_ns: u64, speed: Speed, wall: Instant) -> Self {
        Self {
            speed,
            anchor_ns: start_ns,
            anchor_wall: wall,
            paused: false,
            position_ns: start_ns,
            end_ns: None,
        }
    }

    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// The recorded time at wall time `wall`.
    pub fn now_ns(&self, wall: Instant) -> u64 {
        let now = match self.speed {
            Speed::Fast => self.position_ns,
            Speed::Times(_) if self.paused => self.anchor_ns,
            Speed::Times(factor) => {
                let elapsed = wall.saturating_duration_since(self.anchor_wall).as_nanos() as f64;
                self.anchor_ns.saturating_add((elapsed * factor) as u64)
            }
        };
        let now = now.max(self.position_ns);
        self.end_ns.map_or(now, |end| now.min(end))
    }

    /// When, in wall time, the recorded time `at_ns` comes; None while paused.
    pub fn due(&self, at_ns: u64) -> Option<Instant> {
        if self.paused {
            return None;
        }
        match self.speed {
            Speed::Fast => Some(self.anchor_wall),
            Speed::Times(factor) => {
                let ahead = at_ns.saturating_sub(self.anchor_ns) as f64 / factor;
                Some(self.anchor_wall + std::time::Duration::from_nanos(ahead as u64))
            }
        }
    }

    pub fn set_paused(&mut self, paused: bool, wall: Instant) {
        if paused == self.paused {
            return;
        }
        if paused {
            self.anchor_ns = self.now_ns(wall);
        }
        self.anchor_wall = wall;
        self.paused = paused;
    }

    fn handed_out(&mut self, at_ns: u64) {
        self.position_ns = self.position_ns.max(at_ns);
    }

    fn ended(&mut self, at_ns: u64) {
        self.handed_out(at_ns);
        self.end_ns = Some(at_ns.max(self.position_ns));
    }

    pub fn has_ended(&self) -> bool {
        self.end_ns.is_some()
    }
}

pub struct Player {
    frames: mpsc::Receiver<Result<Frame, RecordingError>>,
    pending: Option<Frame>,
    pub clock: ReplayClock,
}

impl Player {
    /// Opens the recording and starts reading it ahead. The replay clock starts now.
    pub fn start(path: &Path, speed: Speed) -> Result<(Self, Header), RecordingError> {
        let mut reader = RecordingReader::open(path)?;
        let header = reader.header().clone();
        let (tx, frames) = mpsc::channel(1024);
        // A plain thread: file reads block, and the app loop must never wait on them.
        std::thread::spawn(move || loop {
            let next = reader.next_frame();
            let last = !matches!(next, Ok(Some(Frame::Input { .. })));
            let Some(item) = next.transpose() else { return };
            if tx.blocking_send(item).is_err() || last {
                return;
            }
        });
        let clock = ReplayClock::new(header.started_ns, speed, Instant::now());
        Ok((
            Self {
                frames,
                pending: None,
                clock,
            },
            header,
        ))
    }

    /// The next frame when its time comes; None after the End frame. Cancel-safe: a frame
    /// read but not yet due waits in `pending`.
    pub async fn next(&mut self) -> Result<Option<Frame>, RecordingError> {
        if self.pending.is_none() {
            match self.frames.recv().await {
                Some(frame) => self.pending = Some(frame?),
                None => return Ok(None),
            }
        }
        let at_ns = match &self.pending {
            Some(Frame::Input { at_ns, .. } | Frame::End { at_ns }) => *at_ns,
            None => return Ok(None),
        };
        match self.clock.due(at_ns) {
            Some(when) => tokio::time::sleep_until(when).await,
            None => std::future::pending::<()>().await,
        }
        let frame = self.pending.take();
        match &frame {
            Some(Frame::Input { at_ns, .. }) => self.clock.handed_out(*at_ns),
            Some(Frame::End { at_ns }) => self.clock.ended(*at_ns),
            None => {}
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn the_clock_runs_at_its_speed_from_the_recorded_start() {
        let wall = Instant::now();
        let clock = ReplayClock::new(100 * SEC, Speed::Times(1.0), wall);
        assert_eq!(clock.now_ns(wall), 100 * SEC);
        assert_eq!(clock.now_ns(wall + Duration::from_secs(3)), 103 * SEC);
        assert_eq!(clock.due(102 * SEC), Some(wall + Duration::from_secs(2)));
        let fast = ReplayClock::new(100 * SEC, Speed::Times(4.0), wall);
        assert_eq!(fast.now_ns(wall + Duration::from_secs(3)), 112 * SEC);
        assert_eq!(fast.due(102 * SEC), Some(wall + Duration::from_millis(500)));
    }

    #[test]
    fn pausing_stops_the_clock_and_resuming_goes_on_from_there() {
        let wall = Instant::now();
        let mut clock = ReplayClock::new(0, Speed::Times(2.0), wall);
        clock.set_paused(true, wall + Duration::from_secs(1));
        assert_eq!(clock.now_ns(wall + Duration::from_secs(60)), 2 * SEC);
        assert_eq!(clock.due(3 * SEC), None, "nothing is due while paused");
        clock.set_paused(false, wall + Duration::from_secs(60));
        assert_eq!(clock.now_ns(wall + Duration::from_secs(61)), 4 * SEC);
        assert_eq!(clock.due(6 * SEC), Some(wall + Duration::from_secs(62)));
    }

    #[test]
    fn fast_jumps_from_frame_to_frame_and_the_end_stops_the_clock() {
        let wall = Instant::now();
        let mut clock = ReplayClock::new(10 * SEC, Speed::Fast, wall);
        assert_eq!(clock.due(50 * SEC), Some(wall), "everything is due at once");
        clock.handed_out(12 * SEC);
        assert_eq!(clock.now_ns(wall + Duration::from_secs(100)), 12 * SEC);
        clock.ended(20 * SEC);
        assert_eq!(clock.now_ns(wall), 20 * SEC);
        assert!(clock.has_ended());

        let mut paced = ReplayClock::new(10 * SEC, Speed::Times(1.0), wall);
        paced.ended(15 * SEC);
        assert_eq!(
            paced.now_ns(wall + Duration::from_secs(100)),
            15 * SEC,
            "the clock stops at the end"
        );
    }
}
