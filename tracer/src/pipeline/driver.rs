//! The driver: one `tokio::select!` over the source, the sinks' ticks and events, the signals
//! and the deadline. It owns the model table and the input lag, so every sink sees the same
//! table judged at the same time.

use std::{
    future::poll_fn,
    task::Poll,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    time::sleep_until,
};

use super::{Cadence, Judged, Next, Notice, Request, Sink, Source};
use crate::model::{ConnTable, Graces, Input, InputLag};

/// Behind the kernel by more than this, the tracer says so on its log ...
const LAG_WARN_NS: u64 = 5_000_000_000;
/// ... at most this often.
const LAG_WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// End the session after this long (`--duration`, `--for`).
    pub duration: Option<Duration>,
}

/// One sink and when it is next due.
struct Slot {
    sink: Box<dyn Sink>,
    next_model_ns: Option<u64>,
    next_wall: Option<Instant>,
}

impl Slot {
    fn every(&self) -> Option<Duration> {
        match self.sink.cadence() {
            Cadence::Model(every) | Cadence::Wall(every) => Some(every),
            Cadence::Never => None,
        }
    }
}

pub struct Driver<S: Source> {
    source: S,
    table: ConnTable,
    lag: InputLag,
    graces: Graces,
    slots: Vec<Slot>,
    options: Options,
    lag_warned: Option<Instant>,
    had_targets: bool,
    /// A tick fired or the source paused: when the next one is due must be worked out again.
    schedule_changed: bool,
}

/// Why the loop ended.
#[derive(PartialEq, Eq)]
enum Ending {
    /// A signal, the deadline, a person, every target gone, or the recording's end.
    Stopped,
    /// The source ended by itself at this time (a recording's End).
    SourceEnded(u64),
    /// The live source closed although nobody stopped it.
    SourceClosed,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<S: Source> Driver<S> {
    pub fn new(source: S, graces: Graces, options: Options) -> Self {
        Self {
            source,
            table: ConnTable::new(),
            lag: InputLag::default(),
            graces,
            slots: Vec::new(),
            options,
            lag_warned: None,
            had_targets: false,
            schedule_changed: true,
        }
    }

    /// The wrappers a leak's call site looks through (`--site-skip`).
    pub fn site_rules(mut self, rules: crate::model::site::SiteRules) -> Self {
        self.table.set_site_rules(rules);
        self
    }

    pub fn sink(mut self, sink: impl Sink + 'static) -> Self {
        let started = self.source.started_ns();
        let (next_model_ns, next_wall) = match sink.cadence() {
            Cadence::Model(every) => (Some(started.saturating_add(ns(every))), None),
            // The first frame at once.
            Cadence::Wall(_) => (None, Some(Instant::now())),
            Cadence::Never => (None, None),
        };
        self.slots.push(Slot {
            sink: Box::new(sink),
            next_model_ns,
            next_wall,
        });
        self
    }

    fn holds_session(&self) -> bool {
        self.slots.iter().any(|s| s.sink.holds_session())
    }

    /// Runs until a signal, the deadline, a sink's stop, the end of the source or of every
    /// target; then lets the source hand over what is in flight and gives every sink the
    /// final table.
    pub async fn run(mut self) -> Result<()> {
        let mut sigint = listen(SignalKind::interrupt(), "SIGINT")?;
        let mut sigterm = listen(SignalKind::terminate(), "SIGTERM")?;
        // Only with a person at a terminal: a `run` under nohup must keep ignoring SIGHUP.
        let mut sighup = if self.holds_session() {
            Some(listen(SignalKind::hangup(), "SIGHUP")?)
        } else {
            None
        };
        let deadline = self
            .options
            .duration
            .map(|d| tokio::time::Instant::now() + d);
        let mut ended = false;
        // One timer for the sinks' ticks, moved only when the next tick changes: inputs come
        // tens of thousands a second under churn, and a timer made anew for each costs more
        // than everything else the loop does for an input.
        let mut wake = self.next_wake();
        let tick_timer = sleep_until(wake.unwrap_or_else(Instant::now).into());
        tokio::pin!(tick_timer);
        let deadline_timer = sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now));
        tokio::pin!(deadline_timer);

        let ending = loop {
            if std::mem::take(&mut self.schedule_changed) {
                wake = self.next_wake();
                if let Some(at) = wake {
                    tick_timer.as_mut().reset(at.into());
                }
            }
            tokio::select! {
                next = self.source.next(), if !ended => match next? {
                    Next::Input { at_ns, input } => {
                        if self.take_input(at_ns, input)? || self.take_ready()? {
                            break Ending::Stopped;
                        }
                    }
                    Next::End { at_ns } => {
                        self.ticks_before(at_ns)?;
                        if !self.holds_session() {
                            break Ending::SourceEnded(at_ns);
                        }
                        ended = true;
                        self.notify(Notice::SourceEnded, at_ns);
                        let label = self.source.label();
                        self.notify(Notice::Source(label), at_ns);
                    }
                    Next::Closed => break Ending::SourceClosed,
                },
                _ = &mut tick_timer, if wake.is_some() => {
                    self.due_ticks()?;
                    // Even when nothing was due (a paused replay's clock), look again.
                    self.schedule_changed = true;
                }
                request = poll_fn(|cx| poll_requests(&mut self.slots, cx)) => match request? {
                    Request::Stop => break Ending::Stopped,
                    Request::Pause(paused) => {
                        self.source.set_paused(paused);
                        self.schedule_changed = true;
                        let label = self.source.label();
                        self.notify(Notice::Source(label), self.source.now_ns());
                    }
                },
                _ = sigint.recv() => break Ending::Stopped,
                _ = sigterm.recv() => break Ending::Stopped,
                _ = hangup(sighup.as_mut()), if sighup.is_some() => break Ending::Stopped,
                _ = &mut deadline_timer, if deadline.is_some() => break Ending::Stopped,
            }
        };

        let final_ns = match ending {
            Ending::SourceEnded(at_ns) => at_ns,
            Ending::Stopped | Ending::SourceClosed => {
                if ending == Ending::Stopped {
                    // The collector's last events and sample, as `run` has always printed them.
                    self.source.stop();
                    self.drain().await?;
                }
                self.source.now_ns()
            }
        };
        let closed = self.source.close().await;
        if ending == Ending::SourceClosed {
            closed?;
            anyhow::bail!("the collector stopped unexpectedly");
        }
        closed?;
        let judged = judged(&self.table, &self.graces, &self.lag, final_ns);
        for slot in &mut self.slots {
            slot.sink.finish(&judged)?;
        }
        Ok(())
    }

    /// Applies what a stopped source still hands out.
    async fn drain(&mut self) -> Result<()> {
        loop {
            match self.source.next().await? {
                Next::Input { at_ns, input } => {
                    self.take_input(at_ns, input)?;
                }
                Next::End { .. } | Next::Closed => return Ok(()),
            }
        }
    }

    /// Takes the inputs the source has at hand (the rest of a batch). True as `take_input`.
    fn take_ready(&mut self) -> Result<bool> {
        while let Some((at_ns, input)) = self.source.ready() {
            if self.take_input(at_ns, input)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Hands `input` to the sinks, then to the model. True when it says every target exited
    /// and nothing is left to wait for.
    fn take_input(&mut self, at_ns: u64, input: Input) -> Result<bool> {
        self.lag.observe(&input, at_ns);
        self.ticks_before(at_ns.saturating_add(1))?;
        let judged = judged(&self.table, &self.graces, &self.lag, at_ns);
        for slot in &mut self.slots {
            slot.sink.input(at_ns, &input, &judged)?;
        }
        let targets_changed = matches!(input, Input::Targets(_));
        self.table.apply(input);
        if !targets_changed {
            return Ok(false);
        }
        let gone = self.table.targets().is_empty();
        let had_targets = self.had_targets;
        self.had_targets |= !gone;
        if !gone {
            return Ok(false);
        }
        if self.holds_session() {
            if had_targets {
                self.notify(Notice::TargetsGone, at_ns);
            }
            return Ok(false);
        }
        if self.source.follows_by_name() {
            // A new process of that name may still come.
            return Ok(false);
        }
        eprintln!("tracer: every target process has exited; stopping");
        Ok(true)
    }

    fn notify(&mut self, notice: Notice, clock_ns: u64) {
        let judged = judged(&self.table, &self.graces, &self.lag, clock_ns);
        for slot in &mut self.slots {
            slot.sink.notice(notice.clone(), &judged);
        }
    }

    /// Model-clock ticks that fall before `until_ns`, each judged at its own time: the
    /// inputs that follow have not happened yet at that time (a replay's ticks land at the
    /// recorded times however fast it plays).
    fn ticks_before(&mut self, until_ns: u64) -> Result<()> {
        for slot in &mut self.slots {
            let Some(every) = slot.every() else { continue };
            while let Some(next) = slot.next_model_ns.filter(|&n| n < until_ns) {
                let judged = judged(&self.table, &self.graces, &self.lag, next);
                slot.sink.tick(&judged)?;
                slot.next_model_ns = Some(next.saturating_add(ns(every).max(1)));
                self.schedule_changed = true;
            }
        }
        Ok(())
    }

    /// Ticks whose time came while no input arrived.
    fn due_ticks(&mut self) -> Result<()> {
        let clock_ns = self.source.now_ns();
        let now = Instant::now();
        self.warn_when_behind();
        let judged = judged(&self.table, &self.graces, &self.lag, clock_ns);
        for slot in &mut self.slots {
            let Some(every) = slot.every() else { continue };
            let model_due = slot.next_model_ns.is_some_and(|n| n <= clock_ns);
            let wall_due = slot.next_wall.is_some_and(|w| w <= now);
            if !(model_due || wall_due) {
                continue;
            }
            slot.sink.tick(&judged)?;
            // A late tick is not made up for: the next one is a whole period later.
            if model_due {
                slot.next_model_ns = Some(clock_ns.saturating_add(ns(every).max(1)));
            }
            if wall_due {
                slot.next_wall = Some(now + every);
            }
        }
        Ok(())
    }

    /// When the next tick is due, in wall time.
    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let clock_ns = self.source.now_ns();
        self.slots
            .iter()
            .filter_map(|slot| {
                let model = slot.next_model_ns.and_then(|n| {
                    if n <= clock_ns {
                        Some(now)
                    } else {
                        self.source.wall_until(n).map(|d| now + d)
                    }
                });
                match (model, slot.next_wall) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// Says on the log (at most every `LAG_WARN_EVERY`) when the table is more than
    /// `LAG_WARN_NS` behind the kernel: figures are then as of that long ago.
    fn warn_when_behind(&mut self) {
        let behind = self.lag.behind_ns();
        if behind < LAG_WARN_NS
            || self
                .lag_warned
                .is_some_and(|t| t.elapsed() < LAG_WARN_EVERY)
        {
            return;
        }
        log::warn!(
            "the tracer is {:.1}s behind the kernel (more events than it keeps up with): figures are as of then",
            behind as f64 / 1e9
        );
        self.lag_warned = Some(Instant::now());
    }
}

fn listen(kind: SignalKind, name: &str) -> Result<Signal> {
    signal(kind).with_context(|| format!("installing the {name} handler"))
}

/// The table as every sink sees it when the source's clock reads `clock_ns`: judged that
/// long ago as the inputs lag behind.
fn judged<'a>(
    table: &'a ConnTable,
    graces: &'a Graces,
    lag: &InputLag,
    clock_ns: u64,
) -> Judged<'a> {
    Judged {
        table,
        graces,
        at_ns: lag.judge_at(clock_ns),
        clock_ns,
    }
}

async fn hangup(signal: Option<&mut Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The first sink with something to ask.
fn poll_requests(slots: &mut [Slot], cx: &mut std::task::Context<'_>) -> Poll<Result<Request>> {
    for slot in slots {
        if let Poll::Ready(request) = slot.sink.poll_request(cx) {
            return Poll::Ready(request);
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::VecDeque, rc::Rc};

    use super::*;
    use crate::{
        model::{tcp_state::CLOSE_WAIT, testkit::*, KernelConn},
        ui::render::SourceLabel,
    };

    /// Inputs handed out at once, with a clock that jumps to each input (as a fast replay).
    struct Synthetic {
        inputs: VecDeque<(u64, Input)>,
        end_ns: Option<u64>,
        clock_ns: u64,
        by_name: bool,
        stopped: bool,
    }

    impl Synthetic {
        fn new(inputs: Vec<(u64, Input)>, end_ns: Option<u64>) -> Self {
            Self {
                inputs: inputs.into(),
                end_ns,
                clock_ns: 0,
                by_name: false,
                stopped: false,
            }
        }
    }

    impl Source for Synthetic {
        async fn next(&mut self) -> Result<Next> {
            if let Some((at_ns, input)) = self.inputs.pop_front().filter(|_| !self.stopped) {
                self.clock_ns = at_ns;
                return Ok(Next::Input { at_ns, input });
            }
            Ok(match self.end_ns {
                Some(at_ns) => {
                    // A replay's clock stops at its end.
                    self.clock_ns = at_ns;
                    Next::End { at_ns }
                }
                // A live source that stopped, or closed by itself.
                None => Next::Closed,
            })
        }
        fn now_ns(&self) -> u64 {
            self.clock_ns
        }
        fn started_ns(&self) -> u64 {
            0
        }
        fn wall_until(&self, _at_ns: u64) -> Option<Duration> {
            None
        }
        fn set_paused(&mut self, _paused: bool) {}
        fn label(&self) -> SourceLabel {
            SourceLabel::Live
        }
        fn follows_by_name(&self) -> bool {
            self.by_name
        }
        fn stop(&mut self) {
            self.stopped = true;
        }
        async fn close(&mut self) -> Result<()> {
            Ok(())
        }
    }

    /// What a sink saw: (what, judged at, leaked).
    type Log = Rc<RefCell<Vec<(&'static str, u64, u64)>>>;

    struct Spy {
        cadence: Cadence,
        log: Log,
        holds: bool,
        requests: VecDeque<Request>,
    }

    impl Spy {
        fn new(cadence: Cadence) -> (Self, Log) {
            let log = Log::default();
            let spy = Self {
                cadence,
                log: Rc::clone(&log),
                holds: false,
                requests: VecDeque::new(),
            };
            (spy, log)
        }
        fn note(&self, what: &'static str, model: &Judged<'_>) {
            let leaked = model.snapshot().leaked_total;
            self.log.borrow_mut().push((what, model.at_ns, leaked));
        }
    }

    impl Sink for Spy {
        fn cadence(&self) -> Cadence {
            self.cadence
        }
        fn tick(&mut self, model: &Judged<'_>) -> Result<()> {
            self.note("tick", model);
            Ok(())
        }
        fn notice(&mut self, notice: Notice, model: &Judged<'_>) {
            match notice {
                Notice::TargetsGone => self.note("targets gone", model),
                Notice::SourceEnded => self.note("ended", model),
                Notice::Source(_) => {}
            }
        }
        fn poll_request(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<Request>> {
            let ended = self.log.borrow().iter().any(|(what, ..)| *what == "ended");
            match self.requests.front() {
                Some(_) if ended => {
                    Poll::Ready(Ok(self.requests.pop_front().unwrap_or(Request::Stop)))
                }
                _ => Poll::Pending,
            }
        }
        fn finish(&mut self, model: &Judged<'_>) -> Result<()> {
            self.note("finish", model);
            Ok(())
        }
        fn holds_session(&self) -> bool {
            self.holds
        }
    }

    const GRACES: Graces = Graces {
        close_wait: Duration::from_secs(2),
        unread: Duration::from_secs(3),
        abandon: Duration::from_secs(7),
    };

    /// A connection whose upstream closed at 1 s and that nobody closed: leaked at 3 s.
    fn leaking_at_3s() -> KernelConn {
        KernelConn {
            state: CLOSE_WAIT,
            peer_fin_ns: Some(SEC),
            ..established(kconn(40001, "10.0.0.12:443", 0), 0)
        }
    }

    fn block_on(driver: Driver<Synthetic>) -> Result<()> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(driver.run())
    }

    #[test]
    fn model_ticks_land_at_their_own_times_judged_as_of_the_inputs_lag() {
        // A sample taken at 1 s but applied at 2 s: the table is a second behind.
        let inputs = vec![
            (0, targets(&[PID])),
            (2 * SEC, map_only_sample(SEC, vec![(1, leaking_at_3s())])),
            (10 * SEC, targets(&[PID])),
        ];
        let (spy, log) = Spy::new(Cadence::Model(Duration::from_secs(2)));
        let driver = Driver::new(
            Synthetic::new(inputs, Some(11 * SEC)),
            GRACES,
            Options::default(),
        )
        .sink(spy);
        block_on(driver).expect("runs");
        let log = log.borrow().clone();
        assert_eq!(
            log,
            vec![
                // Before the sample: nothing known yet, judged at the tick's own time.
                ("tick", 2 * SEC - SEC, 0),
                // 4 s on the clock is 3 s in the table's time: leaked just then.
                ("tick", 3 * SEC, 1),
                ("tick", 5 * SEC, 1),
                ("tick", 7 * SEC, 1),
                ("tick", 9 * SEC, 1),
                ("finish", 10 * SEC, 1),
            ]
        );
    }

    #[test]
    fn every_target_gone_ends_a_session_unless_followed_by_name_or_held() {
        let inputs = || {
            vec![
                (0, targets(&[PID])),
                (SEC, targets(&[])),
                (5 * SEC, targets(&[PID])),
            ]
        };
        let (spy, log) = Spy::new(Cadence::Never);
        block_on(Driver::new(Synthetic::new(inputs(), None), GRACES, Options::default()).sink(spy))
            .expect("stops without an error");
        assert_eq!(log.borrow().clone(), vec![("finish", SEC, 0)]);

        let (spy, log) = Spy::new(Cadence::Never);
        let mut source = Synthetic::new(inputs(), Some(9 * SEC));
        source.by_name = true;
        block_on(Driver::new(source, GRACES, Options::default()).sink(spy)).expect("runs");
        assert_eq!(log.borrow().clone(), vec![("finish", 9 * SEC, 0)]);

        let (mut spy, log) = Spy::new(Cadence::Never);
        spy.holds = true;
        spy.requests.push_back(Request::Stop);
        block_on(
            Driver::new(
                Synthetic::new(inputs(), Some(9 * SEC)),
                GRACES,
                Options::default(),
            )
            .sink(spy),
        )
        .expect("runs until the person quits");
        assert_eq!(
            log.borrow().clone(),
            vec![
                ("targets gone", SEC, 0),
                ("ended", 9 * SEC, 0),
                ("finish", 9 * SEC, 0)
            ]
        );
    }

    #[test]
    fn a_live_source_that_closes_by_itself_is_an_error() {
        let (spy, log) = Spy::new(Cadence::Never);
        let err = block_on(
            Driver::new(
                Synthetic::new(vec![(0, targets(&[PID]))], None),
                GRACES,
                Options::default(),
            )
            .sink(spy),
        )
        .expect_err("the collector stopped");
        assert!(err.to_string().contains("stopped unexpectedly"), "{err:#}");
        assert!(log.borrow().is_empty(), "no final snapshot after a failure");
    }
}
