//! The live source: the collector in its own task, sending model inputs down a channel.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{Next, Source};
use crate::{
    collect::{monotonic_ns, Collector, InputSender, TargetSpec},
    model::Input,
    naming::catalogue::Catalogue,
    ui::render::SourceLabel,
};

/// Batches of inputs queued from the collector to the model (one per ring drain, every 50 ms
/// at most, or sample). The collector waits when it is full, and while it waits the kernel's
/// ring buffer is not drained. 64 drains of a busy relay (5,000 connections a second: ~750
/// inputs each, ~256 bytes an input) hold about as much as the 65,536 single inputs this
/// queue held before it carried batches.
const INPUT_QUEUE: usize = 64;

pub struct LiveSource {
    spec: TargetSpec,
    rx: mpsc::Receiver<Vec<Input>>,
    /// The rest of the batch being handed on.
    batch: std::vec::IntoIter<Input>,
    /// When that batch arrived: the time of each of its inputs (one clock read a batch, not
    /// one an input; the batch is handed on at once).
    batch_ns: u64,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<()>>>,
    started_ns: u64,
}

impl LiveSource {
    /// Loads and attaches the programs and starts collecting (the caller checked the
    /// targets and privileges).
    pub fn start(spec: TargetSpec, catalogue: Catalogue, sample_every: Duration) -> Result<Self> {
        let collector =
            Collector::start(spec.clone(), sample_every)?.with_catalogue(Arc::new(catalogue));
        let (tx, rx) = mpsc::channel::<Vec<Input>>(INPUT_QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(collector.run(InputSender::new(tx), stop_rx));
        Ok(Self {
            spec,
            rx,
            batch: Vec::new().into_iter(),
            batch_ns: 0,
            stop,
            task: Some(task),
            started_ns: monotonic_ns(),
        })
    }

    pub fn spec(&self) -> &TargetSpec {
        &self.spec
    }
}

impl Source for LiveSource {
    async fn next(&mut self) -> Result<Next> {
        loop {
            if let Some((at_ns, input)) = self.ready() {
                return Ok(Next::Input { at_ns, input });
            }
            match self.rx.recv().await {
                Some(batch) => {
                    self.batch = batch.into_iter();
                    self.batch_ns = monotonic_ns();
                }
                None => return Ok(Next::Closed),
            }
        }
    }

    fn ready(&mut self) -> Option<(u64, Input)> {
        self.batch.next().map(|input| (self.batch_ns, input))
    }

    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }

    fn started_ns(&self) -> u64 {
        self.started_ns
    }

    fn wall_until(&self, at_ns: u64) -> Option<Duration> {
        Some(Duration::from_nanos(at_ns.saturating_sub(monotonic_ns())))
    }

    /// Pausing freezes the screen only: the model keeps up, so resuming shows the present.
    fn set_paused(&mut self, _paused: bool) {}

    fn label(&self) -> SourceLabel {
        SourceLabel::Live
    }

    fn follows_by_name(&self) -> bool {
        !self.spec.comms.is_empty()
    }

    fn stop(&mut self) {
        // The collector sends its last events and sample, then closes the channel.
        let _ = self.stop.send(true);
    }

    async fn close(&mut self) -> Result<()> {
        // Detach (a collector still running is told to stop first).
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task.await.context("the collector task failed")?,
            None => Ok(()),
        }
    }
}
