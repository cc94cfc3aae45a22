//! The collector: loads the eBPF side, follows the targets, and turns what the kernel reports
//! into model inputs sent down one channel. It never touches the model or any output.

mod batch;
pub mod btf;
mod check;
mod decode;
mod goattach;
pub use goattach::GoLayerMode;
mod gomem;
mod gosites;
mod hooks;
mod loader;
mod names;
mod netns;
pub mod procfs;
mod scan;
pub mod sockdiag;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, BorrowedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracer_common::{
    map_names, ConnInfo, Stat, TargetFlags, COMM_LEN, RING_DRAIN_EVERY_MS, RING_DRAIN_IDLE_MS,
};

pub use check::{check_host, check_privileges};
pub use loader::HookChoice;

use crate::{
    model::{Input, KernelStats, Sample, SocketSample, Target},
    naming::{
        catalogue::Catalogue,
        resolver::{AddressBook, RefreshPolicy},
    },
};

/// Which processes to trace.
#[derive(Clone, Debug, Default)]
pub struct TargetSpec {
    pub pids: Vec<u32>,
    /// Process names (as in /proc/PID/comm); processes started later are followed too.
    pub comms: Vec<String>,
    /// What the Go-aware layer attaches to targets whose binary it knows (`--go-probes`).
    pub go_probes: GoLayerMode,
}

/// The collector's end of the input queue. Inputs go in batches, one per ring drain or
/// sample, so a busy relay costs one queue operation (and at most one wake-up of the model's
/// task) per drain, not one per kernel event.
#[derive(Clone, Debug)]
pub struct InputSender(mpsc::Sender<Vec<Input>>);

impl InputSender {
    pub fn new(tx: mpsc::Sender<Vec<Input>>) -> Self {
        Self(tx)
    }

    /// Sends one input; false once the receiving end is gone.
    pub async fn one(&self, input: Input) -> bool {
        self.0.send(vec![input]).await.is_ok()
    }

    /// Sends `inputs` as one batch and leaves the vector empty, with room for as many (the
    /// next drain then fills it without growing it step by step); false once the receiving
    /// end is gone.
    pub async fn all(&self, inputs: &mut Vec<Input>) -> bool {
        if inputs.is_empty() {
            return true;
        }
        let batch = std::mem::replace(inputs, Vec::with_capacity(inputs.len()));
        self.0.send(batch).await.is_ok()
    }
}

/// Lost kernel events are logged at most this often.
const LOSS_REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often a Go target's sockets are checked for reads that can wait, which the deferred
/// read entries then count: a Go program's sockets never block, so for ever, usually.
const READERS_CHECK_EVERY: Duration = Duration::from_millis(250);

/// The kernel keeps 15 bytes of a process name (TASK_COMM_LEN 16 with the NUL).
pub const MAX_COMM: usize = COMM_LEN - 1;

pub struct Collector {
    ebpf: Ebpf,
    targets_map: BpfHashMap<MapData, u32, u32>,
    /// The kernel's connection map (`CONNS`), read whole at every sample.
    conns: Map,
    /// False once the kernel refused a batch lookup: the map is then read entry by entry.
    batch_reads: bool,
    /// When the socket table was last read, each way (`scan`), and what it cost.
    scans: scan::Schedule,
    /// The sockets a refresh of the socket table looks up.
    book: scan::Book,
    /// Whether the kernel map lost a connection that only a full scan would find again.
    map_watch: scan::MapWatch,
    /// Lost events already reported, and when: losses are logged at most every
    /// `LOSS_REPORT_EVERY`.
    lost_reported: (u64, Option<Instant>),
    stats: PerCpuArray<MapData, u64>,
    ring: AsyncFd<RingBuf<MapData>>,
    /// Log records from the eBPF side (aya-log), forwarded to our logger.
    ebpf_log: Option<AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>>,
    spec: TargetSpec,
    namer: names::Namer,
    targets: BTreeMap<u32, Target>,
    /// Start time of each target, so a reused pid is not taken for the process we traced.
    started: BTreeMap<u32, u64>,
    sample_every: Duration,
    /// The kernel hook chosen for each role on this machine.
    hooks: Vec<HookChoice>,
    /// The Go layer: HTTP/2 stream uprobes on the targets' binaries.
    go: goattach::GoProbes,
    /// Programs to attach once a target has a socket whose reads can wait (see there).
    deferred: loader::DeferredHooks,
    /// Targets known to run Go programs (whose sockets never block).
    go_targets: std::collections::BTreeSet<u32>,
    /// When the kernel's count of sockets whose reads can wait was last read (see
    /// `attach_deferred_if_needed`).
    readers_checked: Option<Instant>,
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("the eBPF object has no map {name} (build mismatch)"))
}

impl Collector {
    /// Checks the host, loads and attaches the programs, and registers the targets. Must run
    /// inside a tokio runtime (the ring buffer is polled through it).
    pub fn start(spec: TargetSpec, sample_every: Duration) -> Result<Self> {
        let (mut ebpf, hooks, deferred) =
            loader::load_and_attach(!spec.comms.is_empty(), spec.go_probes == GoLayerMode::Full)?;
        // Which kernel path serves each role differs by kernel: say it once (tests read it).
        eprintln!("tracer: hooks: {}", loader::describe_hooks(&hooks));
        let mut comm_map: BpfHashMap<MapData, [u8; COMM_LEN], u8> =
            take_map(&mut ebpf, map_names::TARGET_COMMS)?.try_into()?;
        for name in &spec.comms {
            let mut key = [0u8; COMM_LEN];
            let bytes = name.as_bytes();
            let len = bytes.len().min(MAX_COMM);
            key[..len].copy_from_slice(&bytes[..len]);
            comm_map
                .insert(key, 1, 0)
                .context("registering a --comm name")?;
        }
        let targets_map = take_map(&mut ebpf, map_names::TARGETS)?.try_into()?;
        let conns = take_map(&mut ebpf, map_names::CONNS)?;
        if conns_fd(&conns).is_none() {
            return Err(anyhow!(
                "the eBPF map CONNS is not a hash map (build mismatch)"
            ));
        }
        let stats = take_map(&mut ebpf, map_names::STATS)?.try_into()?;
        let ring: RingBuf<MapData> = take_map(&mut ebpf, map_names::EVENTS)?.try_into()?;
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as
        // the RingBuf lives, and the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow!("polling the event ring buffer: {}", e.into_parts().1))?;
        let ebpf_log =
            match aya_log::EbpfLogger::init(&mut ebpf) {
                // SAFETY: the logger owns its ring buffer map fd for as long as it lives, and the
                // AsyncFd owns the logger.
                Ok(logger) => unsafe {
                    AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
                }
                .map_err(|e| log::warn!("eBPF log records will not be shown: {}", e.into_parts().1))
                .ok(),
                Err(e) => {
                    log::warn!("eBPF log records will not be shown: {e}");
                    None
                }
            };
        let go = goattach::GoProbes::new(&mut ebpf, spec.go_probes);
        let mut collector = Self {
            go,
            ebpf,
            targets_map,
            conns,
            batch_reads: true,
            scans: scan::Schedule::default(),
            book: scan::Book::default(),
            map_watch: scan::MapWatch::default(),
            lost_reported: (0, None),
            stats,
            ring,
            ebpf_log,
            spec,
            namer: Self::namer(Arc::new(Catalogue::builtin())),
            targets: BTreeMap::new(),
            started: BTreeMap::new(),
            sample_every,
            hooks,
            deferred,
            readers_checked: None,
            go_targets: Default::default(),
        };
        collector.refresh_targets()?;
        collector.attach_deferred_if_needed();
        Ok(collector)
    }

    /// Names connections with `catalogue` (the built-in one unless this is called).
    pub fn with_catalogue(mut self, catalogue: Arc<Catalogue>) -> Self {
        self.namer = Self::namer(catalogue);
        self
    }

    fn namer(catalogue: Arc<Catalogue>) -> names::Namer {
        // Resolving runs on its own thread; without it, unnamed connections keep their address.
        let book = AddressBook::spawn(catalogue.resolvable_hosts(), RefreshPolicy::default())
            .map_err(|e| log::warn!("cannot start resolving provider hostnames: {e}"))
            .ok();
        names::Namer::new(catalogue, book)
    }

    /// Adds processes named by `--comm` that started since, and drops targets that exited.
    /// Returns true when the set changed.
    fn refresh_targets(&mut self) -> Result<bool> {
        let mut wanted: Vec<u32> = self.spec.pids.clone();
        for name in &self.spec.comms {
            wanted.extend(procfs::pids_by_comm(name)?);
        }
        // The kernel side adopts processes by name at their first connect.
        for item in self.targets_map.iter() {
            let (pid, _) = item.context("reading the targets map")?;
            wanted.push(pid);
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut changed = false;
        for pid in wanted {
            let start = if procfs::exists(pid) {
                procfs::start_time_ticks(pid).ok()
            } else {
                None
            };
            let reused =
                start.is_some() && self.started.get(&pid).is_some_and(|s| Some(*s) != start);
            if start.is_none() || reused {
                // Exited (or exited and its pid was reused): its connections went with it.
                if self.targets.remove(&pid).is_some() || self.targets_map.get(&pid, 0).is_ok() {
                    let _ = self.targets_map.remove(&pid);
                    self.started.remove(&pid);
                    // A reused pid may run another program: checked again when it is added.
                    self.go_targets.remove(&pid);
                    changed = true;
                }
                if start.is_none() || !self.spec.pids.contains(&pid) {
                    continue;
                }
            }
            if !self.targets.contains_key(&pid) {
                let comm = procfs::comm(pid).unwrap_or_default();
                if self.targets_map.get(&pid, 0).is_err() {
                    // The kernel side skips reading whether a Go program's sockets block:
                    // they never do (see `TargetFlags::GO`). One read of the executable's
                    // section headers per target, which the deferred read programs need too.
                    let flags = if procfs::is_go_program(pid) {
                        self.go_targets.insert(pid);
                        TargetFlags::EXPLICIT | TargetFlags::GO
                    } else {
                        TargetFlags::EXPLICIT
                    };
                    self.targets_map
                        .insert(pid, flags, 0)
                        .with_context(|| format!("adding pid {pid} to the targets map"))?;
                }
                self.targets.insert(pid, Target { pid, comm });
                if let Some(start) = start {
                    self.started.insert(pid, start);
                }
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Attaches the deferred read programs once they are needed: a target that is not a Go
    /// program (its sockets may block), or a tracked socket whose reads can wait (the kernel
    /// side counts those). Cheap while nothing is pending.
    fn attach_deferred_if_needed(&mut self) {
        if !self.deferred.is_pending() {
            return;
        }
        // Each target's executable is read once.
        let unchecked: Vec<u32> = self
            .targets
            .keys()
            .copied()
            .filter(|pid| !self.go_targets.contains(pid))
            .collect();
        let mut not_go = None;
        for pid in unchecked {
            if procfs::is_go_program(pid) {
                self.go_targets.insert(pid);
            } else {
                not_go = Some(pid);
                break;
            }
        }
        let why = if let Some(pid) = not_go {
            format!("target {pid} is not a Go program")
        } else {
            // A read of a per-CPU map is a syscall: at most every `READERS_CHECK_EVERY`, not at
            // every drain (20 a second under load; bench/RESULTS.md P).
            let now = Instant::now();
            if self
                .readers_checked
                .is_some_and(|at| now.duration_since(at) < READERS_CHECK_EVERY)
            {
                return;
            }
            self.readers_checked = Some(now);
            let counted: u64 = self
                .stats
                .get(&(Stat::ReadersCounted as u32), 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0);
            if counted == 0 {
                return;
            }
            "a target has a socket whose reads can wait".to_owned()
        };
        if let Err(e) = self.deferred.attach(&mut self.ebpf, &why) {
            log::warn!("reads in progress will not be counted: {e:#}");
        }
    }

    fn kernel_stats(&self) -> Result<KernelStats> {
        let sum = |stat: Stat| -> Result<u64> {
            let values = self
                .stats
                .get(&(stat as u32), 0)
                .context("reading the stats map")?;
            Ok(values.iter().sum())
        };
        Ok(KernelStats {
            events_sent: sum(Stat::EventsSent)?,
            // Lifecycle records and first-bytes records alike: both travel in the ring, and a
            // lost first-bytes record costs its connection its name.
            events_lost: sum(Stat::RingbufDrops)? + sum(Stat::FirstBytesDrops)?,
            conn_map_full: sum(Stat::ConnMapFull)?,
            reads_seen: sum(Stat::ReadsSeen)?,
        })
    }

    /// Every entry of the kernel's connection map.
    fn read_conns(&mut self) -> Result<Vec<(u64, crate::model::KernelConn)>> {
        let mut kernel = Vec::new();
        if self.batch_reads {
            if let Some(fd) = conns_fd(&self.conns) {
                match batch::for_each(fd, |sk, info: &ConnInfo| {
                    kernel.push((sk, decode::conn(info)))
                }) {
                    Ok(()) => return Ok(kernel),
                    Err(batch::BatchError::Unsupported) => {
                        log::info!("this kernel has no batch map lookups: reading the connection map entry by entry");
                        self.batch_reads = false;
                        kernel.clear();
                    }
                    Err(batch::BatchError::Io(e)) => {
                        return Err(e).context("reading the connection map")
                    }
                }
            }
        }
        let map: BpfHashMap<&MapData, u64, ConnInfo> = (&self.conns)
            .try_into()
            .context("opening the connection map")?;
        for item in map.iter() {
            match item {
                Ok((sk, info)) => kernel.push((sk, decode::conn(&info))),
                // An entry removed while we iterate: it will show as closed.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(e).context("reading the connection map"),
            }
        }
        Ok(kernel)
    }

    /// A sample: `scanned` (a scan finished just now, if any) first, then the kernel map, so
    /// a socket the kernel tracks is always in the map sample too (see `Sample`).
    fn sample(&mut self, scanned: Option<Scanned>) -> Result<Sample> {
        let now_ns = monotonic_ns();
        let kernel = self.read_conns()?;
        let stats = self.kernel_stats()?;
        self.note_map(&kernel, &stats);
        let (sockets, scanned_ns) = scanned.map(|s| (s.sockets, s.started_ns)).unzip();
        Ok(Sample {
            streams: self.go.streams()?,
            now_ns,
            kernel,
            sockets,
            stats,
            scanned_ns,
        })
    }

    /// Takes what the kernel map says about the socket table: the connections the next
    /// refresh looks up, and whether a socket may exist that only a full scan would find.
    fn note_map(&mut self, kernel: &[(u64, crate::model::KernelConn)], stats: &KernelStats) {
        self.book.note_kernel(kernel, &self.targets);
        let keys = kernel.iter().map(|(sk, _)| *sk);
        if let Some(why) = self.map_watch.observe(keys, stats.conn_map_full) {
            log::debug!("a full socket scan is due: {why}");
            self.scans.want_full();
        }
    }

    /// Starts reading the socket table on a blocking thread when a read is due: a full scan or
    /// a refresh of the sockets known (see `scan`).
    fn start_scan(&mut self) -> Option<ScanTask> {
        let kind = self.scans.next(Instant::now(), self.sample_every)?;
        self.scans.started(kind);
        let pids: Vec<u32> = self.targets.keys().copied().collect();
        let lookups = self.book.lookups();
        Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let started_ns = monotonic_ns();
            let sockets = match kind {
                scan::ScanKind::Full => scan::full(&pids),
                scan::ScanKind::Refresh => scan::refresh(lookups),
            };
            (kind, started, started_ns, sockets)
        }))
    }

    /// Takes a finished scan's cost and sockets.
    fn scan_done(&mut self, (kind, started, started_ns, sockets): ScanResult) -> Result<Scanned> {
        self.scans.done(kind, started, started.elapsed());
        let sockets = sockets?;
        match kind {
            scan::ScanKind::Full => self.book.after_full(&sockets),
            scan::ScanKind::Refresh => self.book.after_refresh(&sockets),
        }
        Ok(Scanned {
            sockets,
            started_ns,
        })
    }

    /// Says on the log when the kernel side dropped events (its ring buffer was full because
    /// this process fell behind), and what that means for the figures.
    fn report_losses(&mut self, lost: u64) {
        let (reported, at) = self.lost_reported;
        if lost <= reported || at.is_some_and(|at| at.elapsed() < LOSS_REPORT_EVERY) {
            return;
        }
        log::warn!(
            "{} kernel events lost ({lost} in all): the ring buffer filled up because the tracer fell behind. Open connections and verdicts re-sync from the kernel map and socket table within seconds; connections that opened and closed meanwhile may be missing from the totals, and those whose first bytes were lost count under their address, not their name",
            lost - reported
        );
        self.lost_reported = (lost, Some(Instant::now()));
    }

    /// Takes every record in the ring buffer, then the call-site log; returns how many records
    /// there were (one more when the log is filling up).
    fn drain_ring(&mut self, out: &mut Vec<Input>) -> usize {
        let ring = self.ring.get_mut();
        let mut records = 0;
        while let Some(record) = ring.next() {
            records += 1;
            match decode::record(&record) {
                Ok(decode::Record::Conn(event)) => {
                    log::trace!("kernel event: {event:?}");
                    // Bytes kept for naming belong to one socket: its Close ends them, and a
                    // Connect at the same address is a new socket (the old one's Close may
                    // have been lost).
                    if matches!(
                        event.kind,
                        crate::model::KernelEventKind::Close
                            | crate::model::KernelEventKind::Connect
                    ) {
                        self.namer.forget(event.sk);
                    }
                    if event.kind == crate::model::KernelEventKind::Close {
                        self.map_watch.closed(event.sk);
                    }
                    out.push(Input::Kernel(event));
                }
                Ok(decode::Record::FirstBytes {
                    sk,
                    connect_ns,
                    bytes,
                }) => {
                    // The bytes are parsed here and dropped; only the name goes on.
                    if let Some(name) = self.namer.first_bytes(sk, bytes) {
                        log::debug!("socket {sk:#x} is {} ({:?})", name.host, name.source);
                        out.push(Input::Named {
                            sk,
                            opened_ns: connect_ns,
                            name,
                        });
                    }
                }
                Ok(decode::Record::Site(site)) => self.go.sites.inputs(site, out),
                Err(e) => log::warn!("skipping a kernel event: {e:#}"),
            }
        }
        // The HTTP/2 responses logged meanwhile, after the ring (their stacks come there): a
        // log filling up keeps the drains fast, as records do.
        records + usize::from(self.go.sites.drain_log(out))
    }

    async fn sample_and_send(
        &mut self,
        tx: &InputSender,
        scanned: Option<Scanned>,
    ) -> Result<bool> {
        if self.refresh_targets()? {
            // Their sockets opened before they were targets are found by a full scan only.
            self.scans.want_full();
            let targets = self.targets.values().cloned().collect();
            if !tx.one(Input::Targets(targets)).await {
                return Ok(false);
            }
        }
        for input in self.go.sync(&mut self.ebpf, &self.targets, &self.started) {
            if !tx.one(input).await {
                return Ok(false);
            }
        }
        let sample = self.sample(scanned)?;
        self.report_losses(sample.stats.events_lost);
        // The call sites read at this sample go before it.
        let mut sites = Vec::new();
        self.go.sites.sample_inputs(&mut sites);
        if !tx.all(&mut sites).await {
            return Ok(false);
        }
        let addresses: std::collections::HashSet<std::net::IpAddr> = sample
            .kernel
            .iter()
            .map(|(_, c)| c.remote.ip())
            .chain(sample.sockets.iter().flatten().map(|s| s.remote.ip()))
            .collect();
        if let Some(names) = self.namer.address_names(&addresses) {
            if !tx.one(Input::AddressNames(names)).await {
                return Ok(false);
            }
        }
        Ok(tx.one(Input::Sample(sample)).await)
    }

    /// Sends model inputs until `stop` turns true (or the receiver goes away), then sends a
    /// last drain and sample so the final snapshot is current. Detaches on return (drop).
    pub async fn run(mut self, tx: InputSender, mut stop: watch::Receiver<bool>) -> Result<()> {
        let hooks = self
            .hooks
            .iter()
            .map(|h| (h.role.to_owned(), h.hook.clone()))
            .collect();
        let targets = self.targets.values().cloned().collect();
        if !tx.one(Input::Hooks(hooks)).await || !tx.one(Input::Targets(targets)).await {
            return Ok(());
        }
        // Start reading the targets' binaries now rather than at the first sample.
        for input in self.go.sync(&mut self.ebpf, &self.targets, &self.started) {
            if !tx.one(input).await {
                return Ok(());
            }
        }
        let mut tick = tokio::time::interval(self.sample_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The kernel side wakes us only when the ring fills up; drain it on a timer too, whose
        // period grows while nothing comes (see `next_drain_period`).
        let mut drain_every = Duration::from_millis(RING_DRAIN_EVERY_MS);
        let drain = tokio::time::sleep(drain_every);
        tokio::pin!(drain);
        let mut batch = Vec::new();
        // A socket-table scan in progress on a blocking thread: the ring keeps being drained
        // meanwhile, and ticks send map-only samples.
        let mut scan: Option<ScanTask> = None;
        loop {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.context("waiting for kernel events")?;
                    guard.clear_ready();
                    drop(guard);
                    self.drain_ring(&mut batch);
                    if !tx.all(&mut batch).await {
                        break;
                    }
                }
                guard = async {
                    match self.ebpf_log.as_mut() {
                        Some(log) => log.readable_mut().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let mut guard = guard.context("waiting for eBPF log records")?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                _ = &mut drain => {
                    self.attach_deferred_if_needed();
                    let records = self.drain_ring(&mut batch);
                    batch.extend(self.go.attach_inspected(&mut self.ebpf));
                    // The deferred read entries wait on a Go target for as long as none of
                    // its sockets blocks (for ever, usually): that is checked at the drains
                    // (at most every `READERS_CHECK_EVERY`), and keeps no pace of its own.
                    let busy = records > 0 || self.go.busy();
                    drain_every = next_drain_period(drain_every, busy);
                    drain
                        .as_mut()
                        .reset(tokio::time::Instant::now() + drain_every);
                    if !tx.all(&mut batch).await {
                        break;
                    }
                }
                _ = tick.tick() => {
                    // Events before the sample: the model sees them in the order they happened.
                    self.drain_ring(&mut batch);
                    if !tx.all(&mut batch).await {
                        break;
                    }
                    if scan.is_none() {
                        scan = self.start_scan();
                    }
                    // A scan just started sends its sample when it is done.
                    if scan.is_none() && !self.sample_and_send(&tx, None).await? {
                        break;
                    }
                }
                done = async {
                    match scan.as_mut() {
                        Some(handle) => handle.await,
                        None => std::future::pending().await,
                    }
                } => {
                    scan = None;
                    let scanned =
                        self.scan_done(done.context("the socket scan thread failed")?)?;
                    self.drain_ring(&mut batch);
                    if !tx.all(&mut batch).await {
                        break;
                    }
                    if !self.sample_and_send(&tx, Some(scanned)).await? {
                        break;
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        // The last sample is complete: a full scan, after any in progress.
                        if let Some(handle) = scan.take() {
                            let _ = handle.await;
                        }
                        let pids: Vec<u32> = self.targets.keys().copied().collect();
                        let started_ns = monotonic_ns();
                        let sockets = tokio::task::spawn_blocking(move || scan::full(&pids))
                            .await
                            .context("the socket scan thread failed")??;
                        self.drain_ring(&mut batch);
                        if tx.all(&mut batch).await {
                            let scanned = Scanned {
                                sockets,
                                started_ns,
                            };
                            self.sample_and_send(&tx, Some(scanned)).await?;
                        }
                        break;
                    }
                }
            }
        }
        // Keep the programs attached until here; dropping `ebpf` detaches everything.
        drop(self.ebpf);
        Ok(())
    }
}

/// The ring drain timer's next period: `RING_DRAIN_EVERY_MS` while records come (or the Go
/// layer's work waits to be taken), doubling after each drain that found nothing, up to
/// `RING_DRAIN_IDLE_MS`. An idle tracer woke 20 times a second for nothing: three quarters
/// of its CPU. Events are never older than that at a sample (each sample drains first), and
/// a ring filling up wakes the reader at once.
fn next_drain_period(current: Duration, busy: bool) -> Duration {
    let fastest = Duration::from_millis(RING_DRAIN_EVERY_MS);
    if busy {
        fastest
    } else {
        (current * 2).clamp(fastest, Duration::from_millis(RING_DRAIN_IDLE_MS))
    }
}

/// A read of the socket table in progress.
type ScanTask = JoinHandle<ScanResult>;

/// A read of the socket table: its kind, its start (for its cost, and as CLOCK_MONOTONIC ns)
/// and its sockets.
type ScanResult = (scan::ScanKind, Instant, u64, Result<Vec<SocketSample>>);

/// A finished read of the socket table: its sockets, and when it started (CLOCK_MONOTONIC
/// ns). Each socket was read at that time or later: with many sockets a second or more
/// later, which is why the sample carries this time apart from its own (see
/// `Sample::scanned_ns`).
struct Scanned {
    sockets: Vec<SocketSample>,
    started_ns: u64,
}

/// The file descriptor of a hash map, for batch reads.
fn conns_fd(map: &Map) -> Option<BorrowedFd<'_>> {
    match map {
        Map::HashMap(data) | Map::LruHashMap(data) => Some(data.fd().as_fd()),
        _ => None,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_period_doubles_while_nothing_comes_and_snaps_back_when_something_does() {
        let fastest = Duration::from_millis(RING_DRAIN_EVERY_MS);
        let mut period = fastest;
        let mut seen = Vec::new();
        for _ in 0..8 {
            period = next_drain_period(period, false);
            seen.push(period.as_millis());
        }
        assert_eq!(seen, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        assert_eq!(next_drain_period(period, true), fastest);
        assert_eq!(next_drain_period(fastest, true), fastest);
    }
}
