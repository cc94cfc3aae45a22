//! Call sites (issue 13), user side: registers each probed Go target with the call-site probes
//! (tracer-ebpf/src/gosite.rs), names the stacks they send, and reads at each sample what they
//! kept. The programs send a stack's return addresses once per process (`GO_SITE_STACKS`
//! holds the stacks sent); this side names it from the binary's `.gopclntab`
//! (goprobe::Symbolizer, cached per PC, with the load bias of a PIE read from /proc/PID/maps)
//! and sends it once as `Input::SiteStack`. Requests send nothing through the ring: at each
//! sample this side reads the requests the programs counted per stack (`Input::SiteRequests`)
//! and each connection's last request (`GO_SITE_CONNS`, as `Input::SiteSeen`); at each drain
//! it reads the HTTP/2 responses the programs logged (`GO_SITE_LOG`, mapped into this
//! process) and hands them to the model in one `Input::SiteResponses`, which joins them to
//! their streams at the next sample. A ring record per request cost the tracer process
//! 0.5-0.7 us per request (bench/RESULTS.md S). A stack this side does not know (its record
//! was lost, or dropped at the bound) has its kernel key removed, so the next request on it
//! brings its frames again.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::Arc,
};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{Array as BpfArray, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
    Ebpf,
};
use tracer_common::go::{
    site_proc_slot, SiteConnFd, SiteConnKey, SiteLast, SiteLogged, SiteProcess, SiteRecord,
    SiteStackKey, SiteStackRecord, SiteWhat, GO_SITE_CONNS, GO_SITE_LAST, GO_SITE_LOG,
    GO_SITE_LOG_NEXT, GO_SITE_PROCS, GO_SITE_SLOTS, GO_SITE_STACKS, MAX_SITE_FRAMES,
};

use super::{batch, goattach::conn_chain};
use crate::{
    goprobe::{
        offsets::{Field, Offsets},
        symbolize::Symbolizer,
        GoBinary,
    },
    model::{
        site::{
            is_library, SiteEvent, SiteFrame, SiteKey, SiteRequests, SiteResponse, SiteStack,
            MAX_STACKS,
        },
        Input,
    },
};

/// A stack record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSite {
    pub what: SiteWhat,
    pub pid: u32,
    pub at_ns: u64,
    pub ip: u64,
    /// The programs' hash of the stack.
    pub stack: u64,
    /// Return addresses, innermost first.
    pub pcs: Vec<u64>,
}

/// Decodes one `go::SiteStackRecord` from the ring.
pub fn decode(bytes: &[u8]) -> Result<RawSite> {
    let full: SiteStackRecord = super::decode::plain(bytes, "call-site")?;
    let raw: SiteRecord = full.site;
    let what = SiteWhat::from_u32(raw.what)
        .ok_or_else(|| anyhow!("unknown call-site record kind {}", raw.what))?;
    let depth = (raw.depth as usize).min(MAX_SITE_FRAMES);
    Ok(RawSite {
        what,
        pid: raw.tgid,
        at_ns: raw.ts_ns,
        ip: raw.ip,
        stack: raw.stack,
        pcs: full.pcs[..depth].to_vec(),
    })
}

/// What naming one target's stacks takes.
struct Target {
    symbolizer: Symbolizer,
    /// The main module's path: its packages are the application's even without a dot.
    module: Option<String>,
}

/// The call-site layer of the Go probes: the process map the programs check, each probed
/// target's symbols, the stacks named so far, and what was read of the programs' maps.
#[derive(Default)]
pub struct Sites {
    /// The programs' process table (`GO_SITE_SLOTS`) and its overflow (`GO_SITE_PROCS`).
    slots: Option<BpfArray<MapData, SiteProcess>>,
    procs: Option<BpfHashMap<MapData, u32, SiteProcess>>,
    /// Which target holds each `GO_SITE_SLOTS` slot this side filled.
    slot_owners: HashMap<u32, u32>,
    /// The stacks the programs sent whole and the requests counted on each
    /// (`GO_SITE_STACKS`), and each CPU's last stack with the requests it holds back
    /// (`GO_SITE_LAST`, zeroed with a key removed there).
    sent: Option<Map>,
    last: Option<PerCpuArray<MapData, SiteLast>>,
    /// Each connection's fd and last request (`GO_SITE_CONNS`).
    conns: Option<Map>,
    /// The HTTP/2 responses logged (`GO_SITE_LOG`), or, without call sites, its maps
    /// unread.
    log: Option<SiteLog>,
    unread_log: Option<(Map, PerCpuArray<MapData, u64>)>,
    targets: HashMap<u32, Target>,
    /// (pid, the programs' stack hash) -> the id the model knows the stack by, and the
    /// requests on it the model was told of.
    stacks: HashMap<(u32, u64), Named>,
    next_stack: u32,
    /// Stacks of `GO_SITE_STACKS` this side did not know at the last sample.
    unknown: HashSet<(u32, u64)>,
    /// Each connection's last request the model was told of (its time).
    conns_seen: HashMap<SiteConnKey, u64>,
}

/// A stack named and sent to the model.
#[derive(Clone, Copy, Debug)]
struct Named {
    id: u32,
    /// Requests on it sent to the model (`SiteRequests`).
    counted: u64,
}

impl Sites {
    /// Takes the programs' maps (`log_per_cpu`: slots of each CPU's part of `GO_SITE_LOG`, as
    /// the loader sized it with call sites on; None: the log is not read).
    pub fn load(&mut self, ebpf: &mut Ebpf, log_per_cpu: Option<u32>) -> Result<()> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("the eBPF object has no map {name} (build mismatch)"))
        };
        self.slots = Some(
            take(GO_SITE_SLOTS)?
                .try_into()
                .context("opening the GO_SITE_SLOTS map")?,
        );
        self.procs = Some(
            take(GO_SITE_PROCS)?
                .try_into()
                .context("opening the GO_SITE_PROCS map")?,
        );
        self.last = Some(
            take(GO_SITE_LAST)?
                .try_into()
                .context("opening the GO_SITE_LAST map")?,
        );
        let sent = take(GO_SITE_STACKS)?;
        BpfHashMap::<&MapData, SiteStackKey, u64>::try_from(&sent)
            .context("opening the GO_SITE_STACKS map")?;
        let conns = take(GO_SITE_CONNS)?;
        BpfHashMap::<&MapData, SiteConnKey, SiteConnFd>::try_from(&conns)
            .context("opening the GO_SITE_CONNS map")?;
        let log = take(GO_SITE_LOG)?;
        let next = take(GO_SITE_LOG_NEXT)?
            .try_into()
            .context("opening the GO_SITE_LOG_NEXT map")?;
        (self.sent, self.conns) = (Some(sent), Some(conns));
        match log_per_cpu {
            Some(per_cpu) => self.log = Some(SiteLog::map(log, next, per_cpu)?),
            // Kept open all the same: the programs loaded after this refer to them.
            None => self.unread_log = Some((log, next)),
        }
        Ok(())
    }

    /// Starts naming `pid`'s requests: its symbols and load bias here, its layout in the
    /// programs' table (its slot, or the overflow map when another target holds the slot).
    /// Called before the probes are attached: the HTTP/1.1 probe does nothing for a process
    /// without a layout, the HTTP/2 ones check no map (their uprobes' pid filter is their
    /// process check).
    pub fn register(&mut self, pid: u32, binary: &GoBinary) -> Result<()> {
        let bias = if binary.image.elf.pie {
            load_bias(pid, binary).with_context(|| {
                format!("finding where pid {pid} loaded its executable (/proc/{pid}/maps)")
            })?
        } else {
            0
        };
        self.targets.insert(
            pid,
            Target {
                symbolizer: Symbolizer::new(Arc::clone(&binary.image.symbols), bias),
                module: binary.image.build.module_path.clone(),
            },
        );
        let minor = binary.image.build.version.release().1;
        let layout = site_process(pid, &binary.offsets, minor);
        let slot = site_proc_slot(pid);
        match (self.slots.as_mut(), self.procs.as_mut()) {
            (Some(slots), _) if slot_free_for(&self.slot_owners, pid) => {
                slots
                    .set(slot, layout, 0)
                    .context("registering the process in GO_SITE_SLOTS")?;
                self.slot_owners.insert(slot, pid);
            }
            (_, Some(procs)) => procs
                .insert(pid, layout, 0)
                .context("registering the process in GO_SITE_PROCS")?,
            _ => {}
        }
        Ok(())
    }

    /// Stops naming `pid`'s requests (it exited, or its probes are detached).
    pub fn forget(&mut self, pid: u32) {
        let slot = site_proc_slot(pid);
        if self.slot_owners.get(&slot) == Some(&pid) {
            self.slot_owners.remove(&slot);
            if let Some(slots) = self.slots.as_mut() {
                // All zeroes: tgid 0, which no process has, is a free slot.
                let _ = slots.set(slot, SiteProcess::default(), 0);
            }
        } else if let Some(procs) = self.procs.as_mut() {
            let _ = procs.remove(&pid);
        }
        self.targets.remove(&pid);
        self.stacks.retain(|(p, _), _| *p != pid);
        self.unknown.retain(|(p, _)| *p != pid);
        self.conns_seen.retain(|k, _| k.tgid != pid);
    }

    /// A stack the programs sent: named and sent to the model the first time.
    pub fn inputs(&mut self, raw: RawSite, out: &mut Vec<Input>) {
        let Some(target) = self.targets.get_mut(&raw.pid) else {
            // Its process exited (or its probes went) while the record was queued.
            return;
        };
        let key = (raw.pid, raw.stack);
        if self.stacks.contains_key(&key) {
            // Sent twice (two CPUs at once, or again after this side removed it).
            return;
        }
        if self.stacks.len() >= MAX_STACKS {
            self.stacks.clear();
        }
        let id = self.next_stack;
        self.next_stack = self.next_stack.wrapping_add(1);
        let frames = name_stack(target, &raw.pcs);
        log::debug!(
            "call-site stack {id} of pid {}: {}",
            raw.pid,
            frames
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" <- ")
        );
        out.push(Input::SiteStack(SiteStack { id, frames }));
        self.stacks.insert(key, Named { id, counted: 0 });
        self.unknown.remove(&key);
    }

    /// What the programs kept since the last sample: the requests counted per stack, each
    /// connection's last request if it changed. Read after the ring was drained, so the
    /// stacks sent before are known.
    pub fn sample_inputs(&mut self, out: &mut Vec<Input>) {
        if self.targets.is_empty() {
            return;
        }
        if let Err(e) = self.counts(out) {
            log::debug!("reading the call-site counts: {e:#}");
        }
        if let Err(e) = self.connections(out) {
            log::debug!("reading the call sites of connections: {e:#}");
        }
    }

    /// The HTTP/2 responses logged since the last drain, with the requests that obtained them
    /// (one input). Called after the ring's records, so their stacks are known. Returns
    /// whether the log wants the drains at their fastest: a CPU filled more than a quarter
    /// of its part since the last one. Otherwise the drains may slow down to one a second
    /// (`next_drain_period`): a drain wakes two threads, which at 20 a second cost the
    /// tracer process more than the responses read (bench/RESULTS.md S).
    pub fn drain_log(&mut self, out: &mut Vec<Input>) -> bool {
        let Some(log) = self.log.as_mut() else {
            return false;
        };
        let mut logged = Vec::new();
        let busy = match log.read_new(&mut logged) {
            Ok(read) => {
                if read.lost > 0 {
                    log::debug!(
                        "{} HTTP/2 responses were logged over before this side read them: their streams have no call site",
                        read.lost
                    );
                }
                read.most > u64::from(log.per_cpu / 4)
            }
            Err(e) => {
                log::debug!("reading GO_SITE_LOG: {e:#}");
                false
            }
        };
        let responses = self.responses_of(&logged);
        if !responses.is_empty() {
            out.push(Input::SiteResponses(responses));
        }
        busy
    }

    /// The logged responses of targets, by the ids of their stacks (one not known yet, whose
    /// record was lost, goes: its stream has no call site).
    fn responses_of(&self, logged: &[SiteLogged]) -> Vec<SiteResponse> {
        let mut last: Option<((u32, u64), u32)> = None;
        let mut out = Vec::with_capacity(logged.len());
        for entry in logged {
            let key = (entry.tgid, entry.obtained.stack);
            // Most responses repeat the stack of the one before.
            let stack = match last {
                Some((k, id)) if k == key => id,
                _ => match self.stacks.get(&key) {
                    Some(named) => {
                        last = Some((key, named.id));
                        named.id
                    }
                    None => continue,
                },
            };
            out.push(SiteResponse {
                pid: entry.tgid,
                response: entry.response,
                stack,
                at_ns: entry.obtained.at_ns,
            });
        }
        out
    }

    /// The requests counted per stack: `GO_SITE_STACKS` first, then each CPU's pending ones
    /// (`GO_SITE_LAST`). A CPU that moves its pending requests into the map between the two
    /// reads makes this sample count fewer, never more: the next one counts them.
    fn counts(&mut self, out: &mut Vec<Input>) -> Result<()> {
        let Some(sent) = self.sent.as_ref() else {
            return Ok(());
        };
        let stacks: Vec<(SiteStackKey, u64)> = batch::entries(sent, GO_SITE_STACKS)?;
        let pending = match self.last.as_ref() {
            Some(last) => last
                .get(&0, 0)
                .context("reading GO_SITE_LAST")?
                .iter()
                .copied()
                .collect(),
            None => Vec::new(),
        };
        for (pid, hash) in self.requests_added(&stacks, &pending, out) {
            self.resend(pid, hash);
        }
        Ok(())
    }

    /// The requests added on each stack since the last sample, from the programs' counts
    /// (`stacks`) and each CPU's pending ones (`pending`); returns the stacks to bring again:
    /// those this side did not know at two samples in a row (their record was lost, or
    /// dropped at the bound; a record sent just after this sample's drain is known at the
    /// next).
    fn requests_added(
        &mut self,
        stacks: &[(SiteStackKey, u64)],
        pending: &[SiteLast],
        out: &mut Vec<Input>,
    ) -> Vec<(u32, u64)> {
        let mut totals: HashMap<(u32, u64), u64> = stacks
            .iter()
            .map(|(key, requests)| ((key.tgid, key.hash), *requests))
            .collect();
        for cpu in pending {
            if let Some(total) = totals.get_mut(&(cpu.key.tgid, cpu.key.hash)) {
                *total += cpu.pending;
            }
        }
        let mut unknown = HashSet::new();
        for ((pid, hash), total) in totals {
            if !self.targets.contains_key(&pid) {
                continue;
            }
            match self.stacks.get_mut(&(pid, hash)) {
                Some(named) => {
                    // Lower than before only while a CPU's pending requests were in neither
                    // read (see `counts`).
                    if total > named.counted {
                        out.push(Input::SiteRequests(SiteRequests {
                            pid,
                            stack: named.id,
                            requests: total - named.counted,
                        }));
                        named.counted = total;
                    }
                }
                None => {
                    unknown.insert((pid, hash));
                }
            }
        }
        let mut again: Vec<(u32, u64)> = unknown.intersection(&self.unknown).copied().collect();
        again.sort_unstable();
        for key in &again {
            unknown.remove(key);
        }
        self.unknown = unknown;
        again
    }

    /// Each connection's last request (`GO_SITE_CONNS`), where it changed since the last
    /// sample.
    fn connections(&mut self, out: &mut Vec<Input>) -> Result<()> {
        let Some(conns) = self.conns.as_ref() else {
            return Ok(());
        };
        let entries: Vec<(SiteConnKey, SiteConnFd)> = batch::entries(conns, GO_SITE_CONNS)?;
        self.connections_changed(&entries, out);
        Ok(())
    }

    /// See `connections`: oldest first, so that of two connections that had the same fd the
    /// newer names it.
    fn connections_changed(&mut self, entries: &[(SiteConnKey, SiteConnFd)], out: &mut Vec<Input>) {
        let mut seen = Vec::new();
        let mut alive = HashSet::with_capacity(entries.len());
        for (key, conn) in entries {
            alive.insert(*key);
            let last = conn.last;
            if last.stack == 0 || conn.fd < 0 || self.conns_seen.get(key) == Some(&last.at_ns) {
                continue;
            }
            if !self.targets.contains_key(&key.tgid) {
                continue;
            }
            // A stack not yet known (its record comes with the next drain): the next sample.
            let Some(named) = self.stacks.get(&(key.tgid, last.stack)) else {
                continue;
            };
            self.conns_seen.insert(*key, last.at_ns);
            seen.push(SiteEvent {
                pid: key.tgid,
                key: SiteKey::Connection { fd: conn.fd },
                stack: named.id,
                at_ns: last.at_ns,
            });
        }
        self.conns_seen.retain(|key, _| alive.contains(key));
        seen.sort_by_key(|e| e.at_ns);
        out.extend(seen.into_iter().map(Input::SiteSeen));
    }

    /// Makes the programs send the stack `hash` of `pid` whole again: out of their record of
    /// the stacks sent, and out of each CPU's last one (all of them zeroed: a CPU holding
    /// another stack only looks it up once more, and the requests it held back on it are lost).
    fn resend(&mut self, pid: u32, hash: u64) {
        if let Some(sent) = self.sent.as_mut() {
            if let Ok(mut sent) = BpfHashMap::<&mut MapData, SiteStackKey, u64>::try_from(sent) {
                let _ = sent.remove(&SiteStackKey {
                    tgid: pid,
                    _pad: 0,
                    hash,
                });
            }
        }
        let Some(last) = self.last.as_mut() else {
            return;
        };
        let zero = SiteLast::default();
        let zeroed = nr_cpus()
            .map_err(|(_, e)| e)
            .and_then(|n| PerCpuValues::try_from(vec![zero; n]))
            .and_then(|values| last.set(0, values, 0).map_err(std::io::Error::other));
        if let Err(e) = zeroed {
            // Only a CPU still holding that stack keeps sending its hash alone.
            log::debug!("zeroing GO_SITE_LAST: {e}");
        }
    }
}

/// The programs' log of HTTP/2 responses (`GO_SITE_LOG`), mapped read-only into this process:
/// each CPU writes its part of `per_cpu` slots in turn and counts what it wrote
/// (`GO_SITE_LOG_NEXT`); this side reads the slots written since its last read.
struct SiteLog {
    /// The map, kept open for the mapping's sake.
    _map: Map,
    next: PerCpuArray<MapData, u64>,
    base: *const SiteLogged,
    len: usize,
    per_cpu: u32,
    /// Per CPU, the count read up to.
    read: Vec<u64>,
}

// SAFETY: the mapping is plain shared memory, read only through `SiteLog`'s methods, which
// take it by `&mut self`; it belongs to this value and is unmapped when it drops.
unsafe impl Send for SiteLog {}

impl SiteLog {
    /// Maps `map` (an array of `SiteLogged`, `per_cpu` slots per CPU).
    fn map(map: Map, next: PerCpuArray<MapData, u64>, per_cpu: u32) -> Result<Self> {
        let array: BpfArray<&MapData, SiteLogged> =
            (&map).try_into().context("opening the GO_SITE_LOG map")?;
        let slots = array.len() as usize;
        let len = slots * size_of::<SiteLogged>();
        let fd = match &map {
            Map::Array(data) => data.fd().as_fd().as_raw_fd(),
            _ => return Err(anyhow!("GO_SITE_LOG is not an array")),
        };
        // SAFETY: a shared read-only mapping of the whole array (created mmapable, BPF_F_
        // MMAPABLE) from its start: the kernel refuses a length past it or a map without the
        // flag; the pointer is only read inside `len` and unmapped on drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .context("mapping GO_SITE_LOG into memory (Linux 5.5+)");
        }
        let cpus = (slots / per_cpu.max(1) as usize).max(1);
        Ok(Self {
            _map: map,
            next,
            base: base.cast_const().cast(),
            len: slots,
            per_cpu,
            read: vec![0; cpus],
        })
    }

    /// Appends the entries written since the last read, each CPU's oldest first. Of a CPU
    /// more than three quarters of its part behind, only the last three quarters are read:
    /// the CPU may be writing the slots before them meanwhile.
    fn read_new(&mut self, out: &mut Vec<SiteLogged>) -> Result<LogRead> {
        let counts = self.next.get(&0, 0).context("reading GO_SITE_LOG_NEXT")?;
        let per_cpu = u64::from(self.per_cpu);
        let mut read_now = LogRead::default();
        for (cpu, (&count, read)) in counts.iter().zip(self.read.iter_mut()).enumerate() {
            let (from, over) = unread(count, *read, per_cpu);
            read_now.lost += over;
            read_now.most = read_now.most.max(count.saturating_sub(*read));
            for i in from..count {
                let slot = cpu * self.per_cpu as usize + (i % per_cpu) as usize;
                if slot >= self.len {
                    break;
                }
                // SAFETY: `slot` is inside the mapping (checked above), which holds `len`
                // aligned entries of plain data; volatile, as a program may write it.
                out.push(unsafe { std::ptr::read_volatile(self.base.add(slot)) });
            }
            *read = count;
        }
        Ok(read_now)
    }
}

/// What one read of the log found.
#[derive(Clone, Copy, Debug, Default)]
struct LogRead {
    /// Entries written over before they were read, all CPUs together.
    lost: u64,
    /// The most entries one CPU wrote since the last read.
    most: u64,
}

/// Of a CPU's entries from `read` (read up to) to `count` (written), in a part of `per_cpu`
/// slots: the first to read, and how many before it were (or may be being) written over.
fn unread(count: u64, read: u64, per_cpu: u64) -> (u64, u64) {
    let behind = count.saturating_sub(read);
    let safe = per_cpu - per_cpu / 4;
    let from = count - behind.min(safe);
    (from, behind - (count - from))
}

impl Drop for SiteLog {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of this length, not used after this.
        unsafe {
            libc::munmap(
                self.base.cast_mut().cast(),
                self.len * size_of::<SiteLogged>(),
            );
        }
    }
}

/// Names every return address of a stack, inlined calls expanded, innermost first.
fn name_stack(target: &mut Target, pcs: &[u64]) -> Vec<SiteFrame> {
    pcs.iter()
        .flat_map(|&pc| target.symbolizer.return_address(pc).to_vec())
        .map(|f| SiteFrame {
            library: is_library(&f.function, target.module.as_deref()),
            function: f.function,
            file: f.file,
            line: f.line,
        })
        .collect()
}

/// Whether `pid` may have its slot (`owners`: slot -> the target holding it): it is free or
/// already `pid`'s. Otherwise `pid` goes to the overflow map.
fn slot_free_for(owners: &HashMap<u32, u32>, pid: u32) -> bool {
    owners
        .get(&site_proc_slot(pid))
        .is_none_or(|owner| *owner == pid)
}

/// The probes' view of where `pid`'s HTTP/1.1 connections lead to their sockets.
fn site_process(pid: u32, offsets: &Offsets, minor: u32) -> SiteProcess {
    let chain = conn_chain(offsets, minor, Field::H1PersistConnConn);
    SiteProcess {
        tgid: pid,
        pconn_conn: chain.head,
        tls_conn: chain.tls_conn,
        tcp_conn_fd: chain.tcp_conn_fd,
        netfd_sysfd: chain.netfd_sysfd,
        tls_conn_type_hash: chain.tls_conn_type_hash,
        tcp_conn_type_hash: chain.tcp_conn_type_hash,
        _pad: 0,
        itabs: [0; 2],
    }
}

/// Runtime address minus link-time address of a PIE's code in `pid`: from the executable
/// mapping of its binary (matched by inode) that holds the text segment.
fn load_bias(pid: u32, binary: &GoBinary) -> Result<u64> {
    let text = binary
        .image
        .elf
        .loads
        .iter()
        .find(|l| l.executable)
        .ok_or_else(|| anyhow!("the binary has no executable segment"))?;
    let exe = format!("/proc/{pid}/exe");
    let inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(&exe).with_context(|| format!("reading {exe}"))?,
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    bias_from_maps(&maps, inode, text.vaddr, text.file_offset).ok_or_else(|| {
        anyhow!(
            "no executable mapping of {} holds its text",
            Path::new(&exe).display()
        )
    })
}

/// See `load_bias`: a mapping [start, end) of file offset `off` puts file offset `fo` at
/// `start + fo - off`, and link-time address `v` of the text segment is at file offset
/// `v - vaddr + file_offset`.
fn bias_from_maps(maps: &str, inode: u64, vaddr: u64, file_offset: u64) -> Option<u64> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        let off = u64::from_str_radix(fields.next()?, 16).ok()?;
        let _dev = fields.next()?;
        let ino: u64 = fields.next()?.parse().ok()?;
        let (start, end) = range.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        let holds = (off..off + (end - start)).contains(&file_offset);
        (ino == inode && perms.contains('x') && holds)
            .then(|| (start + file_offset).wrapping_sub(off).wrapping_sub(vaddr))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tracer_common::go::SiteObtained;

    #[test]
    fn the_load_bias_comes_from_the_mapping_that_holds_the_text() {
        // A Go PIE: text at link-time 0x1000 from file offset 0x1000, mapped at 0x5555_5540_0000
        // with the first page (offset 0) read-only before it.
        let maps = "\
555555400000-555555401000 r--p 00000000 fd:01 77 /srv/relay
555555401000-555555800000 r-xp 00001000 fd:01 77 /srv/relay
555555800000-555555900000 r--p 00400000 fd:01 77 /srv/relay
7f0000000000-7f0000100000 r-xp 00001000 fd:01 99 /usr/lib/libc.so.6
";
        assert_eq!(
            bias_from_maps(maps, 77, 0x1000, 0x1000),
            Some(0x5555_5540_0000)
        );
        // Another file's executable mapping never counts.
        assert_eq!(bias_from_maps(maps, 78, 0x1000, 0x1000), None);
        // Text linked at 0x401000 from offset 0x1000, mapped at 0x400000+bias.
        let maps = "7f1234400000-7f1234800000 r-xp 00000000 fd:01 5 /x\n";
        assert_eq!(
            bias_from_maps(maps, 5, 0x401000, 0x1000),
            Some(0x7f1234400000 - 0x400000)
        );
    }

    fn record(what: u32, depth: u32) -> Vec<u8> {
        let mut raw = SiteStackRecord {
            site: SiteRecord {
                kind: tracer_common::EventKind::Site as u32,
                what,
                tgid: 42,
                _pad0: 0,
                ts_ns: 5,
                ip: 0x401000,
                stack: 0xfeed,
                depth,
                _pad: 0,
            },
            pcs: [0; MAX_SITE_FRAMES],
        };
        for (i, pc) in raw.pcs.iter_mut().enumerate() {
            *pc = 0x400000 + i as u64;
        }
        // SAFETY: SiteStackRecord is plain data; its bytes are read as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const SiteStackRecord).cast::<u8>(),
                size_of::<SiteStackRecord>(),
            )
        };
        bytes.to_vec()
    }

    #[test]
    fn decodes_records_and_keeps_only_the_frames_walked() {
        let site = decode(&record(1, 3)).unwrap();
        assert_eq!(site.what, SiteWhat::H1);
        assert_eq!((site.pid, site.at_ns, site.stack), (42, 5, 0xfeed));
        assert_eq!(site.pcs, vec![0x400000, 0x400001, 0x400002]);
        assert_eq!(decode(&record(2, 1)).unwrap().what, SiteWhat::H2);
        // A depth past the array is cut to it; a bad kind or a short record is refused, the
        // head without its frames too.
        assert_eq!(decode(&record(2, 99)).unwrap().pcs.len(), MAX_SITE_FRAMES);
        assert!(decode(&record(7, 1)).is_err());
        assert!(decode(&record(1, 1)[..40]).is_err());
        assert!(decode(&record(1, 1)[..size_of::<SiteRecord>()]).is_err());
    }

    fn sites_with_target(pid: u32) -> Sites {
        use crate::goprobe::{
            pclntab::{tests::synthetic, Pclntab},
            symbolize::SymbolTable,
        };
        let table = SymbolTable {
            pclntab: Pclntab::parse(synthetic(0x401000), 0x401000).unwrap(),
            gofunc: None,
        };
        let mut sites = Sites::default();
        sites.targets.insert(
            pid,
            Target {
                symbolizer: Symbolizer::new(Arc::new(table), 0),
                module: None,
            },
        );
        sites
    }

    /// A stack record as the programs send it.
    fn raw(what: SiteWhat, pid: u32, pcs: &[u64]) -> RawSite {
        RawSite {
            what,
            pid,
            at_ns: 9,
            ip: 0,
            stack: hash_of(pcs),
            pcs: pcs.to_vec(),
        }
    }

    fn hash_of(pcs: &[u64]) -> u64 {
        let mut words = [0; MAX_SITE_FRAMES];
        words[..pcs.len()].copy_from_slice(pcs);
        tracer_common::go::stack_hash(&words)
    }

    const STACK_B: [u64; 2] = [0x401026, 0x401011];
    const STACK_A: [u64; 1] = [0x401011];

    /// `sites_with_target(7)` with STACK_B and STACK_A named (ids 0 and 1).
    fn sites_with_stacks() -> Sites {
        let mut sites = sites_with_target(7);
        let mut out = Vec::new();
        sites.inputs(raw(SiteWhat::H1, 7, &STACK_B), &mut out);
        sites.inputs(raw(SiteWhat::H2, 7, &STACK_A), &mut out);
        assert_eq!(out.len(), 2);
        sites
    }

    fn stack_key(pid: u32, pcs: &[u64]) -> SiteStackKey {
        SiteStackKey {
            tgid: pid,
            _pad: 0,
            hash: hash_of(pcs),
        }
    }

    #[test]
    fn each_stack_is_named_once() {
        let mut sites = sites_with_target(7);
        let mut out = Vec::new();
        sites.inputs(raw(SiteWhat::H1, 7, &STACK_B), &mut out);
        // Sent twice (two CPUs at once): named once.
        sites.inputs(raw(SiteWhat::H1, 7, &STACK_B), &mut out);
        sites.inputs(raw(SiteWhat::H2, 7, &STACK_A), &mut out);
        // A process not (or no longer) probed: nothing.
        sites.inputs(raw(SiteWhat::H1, 8, &STACK_B), &mut out);
        let frames = |f: &[SiteFrame]| {
            f.iter()
                .map(|f| format!("{} {}", f.function, f.line))
                .collect::<Vec<_>>()
        };
        match &out[..] {
            [Input::SiteStack(first), Input::SiteStack(second)] => {
                assert_eq!(frames(&first.frames), ["main.b 7", "main.a 12"]);
                assert_eq!(frames(&second.frames), ["main.a 12"]);
                assert!(!first.frames[0].library, "main is the application");
                assert_ne!(first.id, second.id);
            }
            other => panic!("unexpected inputs: {other:#?}"),
        }
        // A process forgotten takes its stacks with it: named again if it comes back.
        sites.forget(7);
        out.clear();
        sites.inputs(raw(SiteWhat::H1, 7, &STACK_B), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn requests_are_counted_from_the_map_and_each_cpus_pending_ones() {
        let mut sites = sites_with_stacks();
        let (b, a) = (stack_key(7, &STACK_B), stack_key(7, &STACK_A));
        let pending = |key: SiteStackKey, n: u64| SiteLast { key, pending: n };
        let counted = |out: &[Input]| {
            let mut v: Vec<(u32, u64)> = out
                .iter()
                .map(|i| match i {
                    Input::SiteRequests(r) => (r.stack, r.requests),
                    other => panic!("{other:?}"),
                })
                .collect();
            v.sort_unstable();
            v
        };
        let mut out = Vec::new();
        // B: 10 in the map, 3 + 2 pending on two CPUs; A: 4 in the map; another process's
        // stack and a CPU's pending ones on a stack not in the map count nothing.
        let other = stack_key(8, &STACK_B);
        let again = sites.requests_added(
            &[(b, 10), (a, 4), (other, 50)],
            &[pending(b, 3), pending(b, 2), pending(stack_key(7, &[1]), 9)],
            &mut out,
        );
        assert!(again.is_empty());
        assert_eq!(counted(&out), [(0, 15), (1, 4)]);
        // Next sample: only what was added. A CPU moved its 3 into the map and took A.
        out.clear();
        sites.requests_added(
            &[(b, 13), (a, 4)],
            &[pending(a, 1), pending(b, 4)],
            &mut out,
        );
        assert_eq!(counted(&out), [(0, 2), (1, 1)]);
        // Fewer than before (a CPU's pending ones in neither read): nothing, and nothing twice
        // when they show again.
        out.clear();
        sites.requests_added(&[(b, 13), (a, 4)], &[pending(a, 1)], &mut out);
        assert!(out.is_empty());
        sites.requests_added(&[(b, 17), (a, 5)], &[], &mut out);
        assert!(out.is_empty());
        sites.requests_added(&[(b, 18), (a, 5)], &[], &mut out);
        assert_eq!(counted(&out), [(0, 1)]);
        // A stack this side does not know: brought again when still unknown at the next
        // sample, not at the first (its record may come with the next drain).
        let lost = stack_key(7, &[0x401026]);
        out.clear();
        assert!(sites.requests_added(&[(lost, 5)], &[], &mut out).is_empty());
        assert_eq!(
            sites.requests_added(&[(lost, 6)], &[], &mut out),
            [(7, lost.hash)]
        );
        assert!(out.is_empty());
        // Once named, it counts from what the programs hold then.
        sites.inputs(raw(SiteWhat::H1, 7, &[0x401026]), &mut out);
        out.clear();
        assert!(sites.requests_added(&[(lost, 2)], &[], &mut out).is_empty());
        assert_eq!(counted(&out), [(2, 2)]);
    }

    fn conn(pid: u32, pconn: u64, fd: i32, stack: u64, at_ns: u64) -> (SiteConnKey, SiteConnFd) {
        (
            SiteConnKey {
                tgid: pid,
                _pad: 0,
                pconn,
            },
            SiteConnFd {
                fd,
                gen: 0,
                followed_ns: 1,
                last: SiteObtained { stack, at_ns },
            },
        )
    }

    fn seen(out: &[Input]) -> Vec<(SiteKey, u32, u64)> {
        out.iter()
            .map(|i| match i {
                Input::SiteSeen(e) => (e.key, e.stack, e.at_ns),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_connections_last_request_is_sent_when_it_changed() {
        let mut sites = sites_with_stacks();
        let (b, a) = (hash_of(&STACK_B), hash_of(&STACK_A));
        let mut out = Vec::new();
        // Oldest first; no request yet, no fd, an unknown stack or another process: nothing.
        sites.connections_changed(
            &[
                conn(7, 0xc1, 5, b, 30),
                conn(7, 0xc2, 5, a, 20),
                conn(7, 0xc3, 6, 0, 0),
                conn(7, 0xc4, -1, b, 10),
                conn(7, 0xc5, 8, 0x5eed, 10),
                conn(8, 0xc1, 5, b, 10),
            ],
            &mut out,
        );
        let fd = |fd| SiteKey::Connection { fd };
        assert_eq!(seen(&out), [(fd(5), 1, 20), (fd(5), 0, 30)]);
        // Unchanged: nothing; a new request on one: that one.
        out.clear();
        sites.connections_changed(
            &[conn(7, 0xc1, 5, b, 30), conn(7, 0xc2, 5, a, 20)],
            &mut out,
        );
        assert!(out.is_empty());
        sites.connections_changed(
            &[conn(7, 0xc1, 5, a, 40), conn(7, 0xc2, 5, a, 20)],
            &mut out,
        );
        assert_eq!(seen(&out), [(fd(5), 1, 40)]);
        // An entry gone (evicted) and back with the same request is sent again.
        out.clear();
        sites.connections_changed(&[conn(7, 0xc1, 5, a, 40)], &mut out);
        sites.connections_changed(
            &[conn(7, 0xc1, 5, a, 40), conn(7, 0xc2, 5, a, 20)],
            &mut out,
        );
        assert_eq!(seen(&out), [(fd(5), 1, 20)]);
    }

    #[test]
    fn logged_responses_go_to_the_model_by_their_stacks_ids() {
        let sites = sites_with_stacks();
        let logged = |pid: u32, response: u64, stack: u64, at_ns: u64| SiteLogged {
            tgid: pid,
            _pad: 0,
            response,
            obtained: SiteObtained { stack, at_ns },
        };
        let (b, a) = (hash_of(&STACK_B), hash_of(&STACK_A));
        let responses = sites.responses_of(&[
            logged(7, 0xc100, a, 10),
            logged(7, 0xc200, a, 11),
            // A stack not known (its record lost), another process: left out.
            logged(7, 0xc300, 0x5eed, 12),
            logged(8, 0xc400, a, 13),
            logged(7, 0xc500, b, 14),
        ]);
        let got: Vec<(u64, u32, u64)> = responses
            .iter()
            .map(|r| (r.response, r.stack, r.at_ns))
            .collect();
        assert_eq!(got, [(0xc100, 1, 10), (0xc200, 1, 11), (0xc500, 0, 14)]);
    }

    #[test]
    fn a_cpus_log_is_read_from_where_it_was_left_and_never_where_it_may_be_written() {
        // Nothing new; new entries; a part of 1024 wrapped: the last three quarters are read,
        // the rest counted as written over.
        assert_eq!(unread(10, 10, 1024), (10, 0));
        assert_eq!(unread(30, 10, 1024), (10, 0));
        assert_eq!(unread(778, 10, 1024), (10, 0));
        assert_eq!(unread(779, 10, 1024), (11, 1));
        assert_eq!(unread(5000, 10, 1024), (5000 - 768, 5000 - 768 - 10));
        // A count below what was read (the map was made again): nothing.
        assert_eq!(unread(3, 10, 1024), (3, 0));
        // The loader's sizes: a power of two, within the bound, at least the minimum.
        use tracer_common::go::{site_log_per_cpu, SITE_LOG_MIN_PER_CPU, SITE_LOG_SLOTS};
        for cpus in [0, 1, 2, 3, 7, 8, 31, 32, 33, 1024] {
            let per_cpu = site_log_per_cpu(cpus);
            assert!(per_cpu.is_power_of_two(), "{cpus}");
            assert!(per_cpu >= SITE_LOG_MIN_PER_CPU, "{cpus}");
            assert!(per_cpu * cpus.max(1) <= SITE_LOG_SLOTS || per_cpu == SITE_LOG_MIN_PER_CPU);
        }
        assert_eq!(site_log_per_cpu(2), SITE_LOG_SLOTS / 2);
        assert_eq!(site_log_per_cpu(3), SITE_LOG_SLOTS / 4);
    }

    #[test]
    fn a_process_whose_slot_another_target_holds_goes_to_the_overflow_map() {
        let mut owners = HashMap::new();
        let (first, same_slot, other) = (4097, 4097 + tracer_common::go::SITE_PROC_SLOTS, 4098);
        assert_eq!(site_proc_slot(first), site_proc_slot(same_slot));
        assert!(slot_free_for(&owners, first));
        owners.insert(site_proc_slot(first), first);
        // Registering again keeps the slot; a pid of the same slot does not get it.
        assert!(slot_free_for(&owners, first));
        assert!(!slot_free_for(&owners, same_slot));
        assert!(slot_free_for(&owners, other));
        owners.remove(&site_proc_slot(first));
        assert!(slot_free_for(&owners, same_slot));
    }

    #[test]
    fn a_process_without_type_hashes_gets_no_connection_chain() {
        let table = crate::goprobe::offsets::OffsetTable::embedded().unwrap();
        let v = crate::goprobe::buildinfo::GoVersion::parse("go1.24.1").unwrap();
        let offsets = table.lookup(&v).unwrap();
        let known = site_process(7, &offsets, 24);
        assert_eq!(known.tgid, 7);
        assert_eq!(
            u64::from(known.pconn_conn),
            offsets.get(Field::H1PersistConnConn).unwrap()
        );
        assert_ne!(known.tls_conn_type_hash, 0);
        let unknown = site_process(7, &offsets, 99);
        assert_eq!(unknown.pconn_conn, tracer_common::go::GoProcess::UNKNOWN);
        assert_eq!(unknown.tcp_conn_type_hash, 0);
    }
}
