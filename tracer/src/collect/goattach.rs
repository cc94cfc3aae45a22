//! The Go layer's attach lifecycle (issue 12): when a target is adopted (by `--pid` at start,
//! or by `--comm` when first seen), its executable is read on a blocking thread
//! (`goprobe::inspect`: Go version, functions, prologues, RET sites, struct offsets); then the
//! per-connection uprobe (tracer-ebpf/src/gostream.rs) is attached to that binary's file
//! offsets for that process only, and its layout goes into `GO_PROCS`, which the probe checks
//! first. At every sample, each HTTP/2 connection the probe recorded is read out of the
//! process's memory (`goprobe::h2mem`, through `/proc/PID/mem`): its open streams become the
//! sample's `streams`; a closed connection is forgotten. A refusal attaches nothing and says why in one line; kernel tracing goes on either
//! way. A target that exits has its links dropped and its map entries purged; a restarted
//! relay is a new target and gets them again. The links are perf-event fds owned by this
//! process, so nothing stays attached when the tracer exits, however it exits.

use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    path::PathBuf,
    sync::mpsc::{self, Receiver, Sender},
};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use tracer_common::go::{map_names, GoConnInfo, GoConnKey, GoProcess};

use super::{
    batch,
    gomem::{self, ProcessMemory},
    gosites, monotonic_ns, procfs,
};
use crate::{
    goprobe::{
        self,
        h2mem::{self, ConnTypeHashes, MemError, StreamReader},
        offsets::{Field, Offsets},
        symbols::Role,
        GoBinary, GoLayerRefusal, ProbeSite,
    },
    model::{GoLayer, Input, StreamSample, Target},
};

/// Where in a role's code a program goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The function's entry.
    Entry,
    /// Each `call` of the function from net/http (goprobe `CallerSites::calls`).
    Calls,
    /// After each call, the first branch that still sees its result (`branches`).
    BranchesAfterCalls,
    /// After a call in a wrapper, the wrapper's RET (`returns`).
    ReturnsAfterCalls,
}

/// Which program goes where. The last `SITE_PROBES` rows are the call sites', attached with
/// `--go-probes sites` only.
const PROBES: &[(Role, Place, &str)] = &[
    // HTTP/2 streams (gostream.rs): one hit per connection.
    (Role::H2ReadLoop, Place::Entry, "enter_h2_read_loop"),
    // Call sites (gosite.rs, collect/gosites.rs): one hit per request.
    (Role::H1RoundTrip, Place::Calls, "enter_h1_site"),
    (
        Role::H2RoundTrip,
        Place::BranchesAfterCalls,
        "after_h2_site",
    ),
    (Role::H2RoundTrip, Place::ReturnsAfterCalls, "exit_h2_site"),
];
const SITE_PROBES: usize = 3;

/// What the Go-aware layer attaches (`--go-probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GoLayerMode {
    /// Nothing.
    Off,
    /// The per-connection probe only: HTTP/2 streams, no call sites, nothing per request.
    #[default]
    Streams,
    /// Streams and call sites (one probe hit per request).
    Full,
}

/// `abi.Type.Hash` of `*crypto/tls.Conn` and `*net.TCPConn` per Go minor release: the
/// compiler's hash of the type's link name (cmd/compile/internal/types.TypeHash), copied into
/// every itab, so the probes check an interface's dynamic type before following its data.
/// Read from the runtime by tests/gotypehash with each toolchain of the matrix
/// (`target/go-matrix/<version>/bin/go run ./tests/gotypehash`); a release missing here gets
/// no fd for its streams (never a guess).
const TYPE_HASHES: &[(u32, u32, u32)] = &[
    (21, 0xc6af_89f1, 0xbc02_0cb9),
    (22, 0xc6af_89f1, 0xbc02_0cb9),
    (23, 0xc6af_89f1, 0xbc02_0cb9),
    (24, 0xf550_dfa7, 0x425e_a6e6),
    (25, 0x3950_76f1, 0x43fd_f3b9),
    (26, 0x3950_76f1, 0x43fd_f3b9),
    (27, 0x3950_76f1, 0x43fd_f3b9),
];

/// HTTP/2 connections a target opened before its probe was attached, found parked on their
/// sockets (`h2mem::StreamReader::conn_parked_on`).
struct Discovered {
    pid: u32,
    start: Option<u64>,
    conns: Vec<(u64, i32)>,
}

/// A target's Go layer.
enum State {
    /// Its binary is being read on a blocking thread.
    Inspecting { start: Option<u64> },
    /// Probes attached (program name and link of each), and how to read its streams.
    Attached {
        start: Option<u64>,
        links: Vec<(&'static str, UProbeLinkId)>,
        reader: Box<StreamReader>,
        memory: ProcessMemory,
    },
    /// Nothing attached; the line said why.
    Off { start: Option<u64> },
}

impl State {
    fn start(&self) -> Option<u64> {
        match self {
            State::Inspecting { start } | State::Attached { start, .. } | State::Off { start } => {
                *start
            }
        }
    }
}

/// What a blocking inspection sends back.
struct Inspected {
    pid: u32,
    start: Option<u64>,
    path: PathBuf,
    result: Result<GoBinary, GoLayerRefusal>,
}

pub struct GoProbes {
    /// Why the Go layer is off for every target (`--go-probes off`, or the kernel refused its
    /// programs), or `None` when it can attach.
    off: Option<String>,
    procs: Option<BpfHashMap<MapData, u32, GoProcess>>,
    conns: Option<Map>,
    targets: BTreeMap<u32, State>,
    results: Receiver<Inspected>,
    sender: Sender<Inspected>,
    discovered: Receiver<Discovered>,
    discover: Sender<Discovered>,
    /// Discoveries sent to a blocking thread and not yet taken (`discover`). One that fails
    /// sends nothing and stays counted: the collector then drains as often as it can, which
    /// costs a little CPU and loses nothing.
    discovering: usize,
    /// Call sites: the probed targets' symbols and the stacks named so far.
    pub sites: gosites::Sites,
    /// Whether the call-site probes are attached (`--go-probes sites`).
    with_sites: bool,
}

impl GoProbes {
    /// Takes the Go layer's maps and loads its programs (attached later, per target). Never
    /// fails: a Go layer that cannot work is off, with its reason, and kernel tracing goes on.
    pub fn new(ebpf: &mut Ebpf, mode: GoLayerMode) -> Self {
        let (sender, results) = mpsc::channel();
        let (discover, discovered) = mpsc::channel();
        let mut probes = Self {
            discovered,
            discover,
            discovering: 0,
            off: None,
            procs: None,
            conns: None,
            targets: BTreeMap::new(),
            results,
            sender,
            sites: gosites::Sites::default(),
            with_sites: mode == GoLayerMode::Full,
        };
        if mode == GoLayerMode::Off {
            probes.off = Some("--go-probes off".to_owned());
            return probes;
        }
        if let Err(e) = probes.load(ebpf) {
            log::warn!("the Go layer is off: {e:#}");
            probes.off = Some(format!("{e:#}"));
        }
        probes
    }

    fn load(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("the eBPF object has no map {name} (build mismatch)"))
        };
        self.procs = Some(
            take(ebpf, map_names::GO_PROCS)?
                .try_into()
                .context("opening the GO_PROCS map")?,
        );
        self.conns = Some(take(ebpf, map_names::GO_CONNS)?);
        // The HTTP/2 call-site log has a part per CPU only with call sites (the loader's size).
        let log_per_cpu = if self.with_sites {
            Some(super::loader::site_log_per_cpu()?)
        } else {
            None
        };
        self.sites.load(ebpf, log_per_cpu)?;
        for name in program_names() {
            program(ebpf, name)?
                .load()
                .with_context(|| format!("the kernel refused the {name} uprobe program"))?;
        }
        Ok(())
    }

    /// Follows the targets: starts reading the binary of each new one, attaches the probes
    /// of each binary read since, and detaches those of targets that exited. Returns a
    /// `GoLayer` input for each target whose Go layer was settled now.
    pub fn sync(
        &mut self,
        ebpf: &mut Ebpf,
        targets: &BTreeMap<u32, Target>,
        started: &BTreeMap<u32, u64>,
    ) -> Vec<Input> {
        let mut inputs = Vec::new();
        let gone: Vec<u32> = self
            .targets
            .iter()
            .filter(|(pid, state)| {
                !targets.contains_key(pid) || started.get(pid).copied() != state.start()
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(state) = self.targets.remove(&pid) {
                self.forget(ebpf, pid, state);
            }
        }
        for pid in targets.keys() {
            if self.targets.contains_key(pid) {
                continue;
            }
            let start = started.get(pid).copied();
            if let Some(reason) = &self.off {
                let line = format!(
                    "Go layer off for pid {pid}: {reason}; tracing with kernel signals only"
                );
                // Off on purpose: said in the snapshot, not warned about at every start.
                log::debug!("{line}");
                inputs.push(Input::GoLayer(GoLayer {
                    pid: *pid,
                    attached: false,
                    call_sites: false,
                    line,
                }));
                self.targets.insert(*pid, State::Off { start });
                continue;
            }
            let sender = self.sender.clone();
            let pid = *pid;
            let path = procfs::exe_path(pid);
            self.targets.insert(pid, State::Inspecting { start });
            log::debug!("Go layer: reading {} for pid {pid}", path.display());
            tokio::task::spawn_blocking(move || {
                let result = goprobe::inspect(&path);
                // The receiver lives as long as the collector; a send after it is gone has no
                // one to tell.
                let _ = sender.send(Inspected {
                    pid,
                    start,
                    path,
                    result,
                });
            });
        }
        inputs.extend(self.attach_inspected(ebpf));
        inputs
    }

    /// Attaches the probes to each binary read since the last call (or says why not). Cheap
    /// when there is none: called at every ring drain so a new target is probed within
    /// milliseconds of its binary being read, not at the next sample.
    pub fn attach_inspected(&mut self, ebpf: &mut Ebpf) -> Vec<Input> {
        let mut inputs = Vec::new();
        while let Ok(inspected) = self.results.try_recv() {
            let pid = inspected.pid;
            let current = matches!(
                self.targets.get(&pid),
                Some(State::Inspecting { start }) if *start == inspected.start
            );
            if !current {
                // The target exited (or its pid was reused) while its binary was read.
                continue;
            }
            let (state, input) = self.settle(ebpf, inspected);
            self.targets.insert(pid, state);
            inputs.push(input);
        }
        while let Ok(found) = self.discovered.try_recv() {
            self.discovering = self.discovering.saturating_sub(1);
            let current = matches!(
                self.targets.get(&found.pid),
                Some(State::Attached { start, .. }) if *start == found.start
            );
            let Some(map) = self.conns.as_mut().filter(|_| current) else {
                continue;
            };
            let typed: Result<BpfHashMap<&mut MapData, GoConnKey, GoConnInfo>, _> = map.try_into();
            let Ok(mut typed) = typed else {
                continue;
            };
            let now = monotonic_ns();
            for (conn, fd) in &found.conns {
                let key = GoConnKey {
                    tgid: found.pid,
                    _pad: 0,
                    conn: *conn,
                };
                let info = GoConnInfo {
                    opened_ns: now,
                    fd: *fd,
                    _pad: 0,
                };
                if let Err(e) = typed.insert(key, info, 0) {
                    log::warn!("Go layer: pid {}: recording a connection: {e}", found.pid);
                }
            }
            log::info!(
                "Go layer: pid {}: {} HTTP/2 connection(s) opened before tracing found on their sockets",
                found.pid,
                found.conns.len()
            );
        }
        inputs
    }

    /// Looks, on a blocking thread, for the HTTP/2 connections `pid` opened before its probe
    /// was attached: the goroutine parked reading each socket, and on its stack the
    /// connection (see `h2mem::StreamReader::conn_parked_on`).
    fn discover(
        &mut self,
        pid: u32,
        start: Option<u64>,
        minor: u32,
        reader: StreamReader,
        hashes: ConnTypeHashes,
    ) {
        let sender = self.discover.clone();
        self.discovering += 1;
        tokio::task::spawn_blocking(move || {
            let sockets = match gomem::epoll_sockets(pid) {
                Ok(sockets) => sockets,
                Err(e) => {
                    log::warn!("Go layer: pid {pid}: cannot list its sockets for connections opened before tracing: {e:#}");
                    return;
                }
            };
            let Ok(memory) = ProcessMemory::open(pid) else {
                return;
            };
            let conns: Vec<(u64, i32)> = sockets
                .into_iter()
                .filter_map(|(fd, data)| {
                    let pd = h2mem::poll_desc_of_epoll_data(data, minor);
                    let conn = reader.conn_parked_on(&memory, pd, fd, hashes)?;
                    // Its streams must read as a connection's do.
                    reader.read_conn(&memory, conn).ok()?;
                    Some((conn, fd))
                })
                .collect();
            let _ = sender.send(Discovered { pid, start, conns });
        });
    }

    /// Whether work on a blocking thread (a binary read, a discovery) waits to be taken by
    /// `attach_inspected`: the collector keeps calling it often meanwhile.
    pub fn busy(&self) -> bool {
        self.discovering > 0
            || self
                .targets
                .values()
                .any(|s| matches!(s, State::Inspecting { .. }))
    }

    /// Attaches the probes to an inspected binary, or says why not.
    fn settle(&mut self, ebpf: &mut Ebpf, inspected: Inspected) -> (State, Input) {
        let Inspected {
            pid,
            start,
            path,
            result,
        } = inspected;
        let off = |line: String| (State::Off { start }, say(pid, false, false, line));
        let binary = match result {
            Ok(binary) => binary,
            Err(refusal) => return off(refusal.line(pid)),
        };
        if !binary.http2 {
            return off(format!(
                "Go layer off for pid {pid}: {}: no HTTP/2 client to probe; tracing with kernel signals only",
                binary.line()
            ));
        }
        let minor = binary.image.build.version.release().1;
        let layout = layout_from(&binary.offsets, minor);
        let no_swiss = binary.image.build.version.raw.contains("noswissmap");
        let reader = match StreamReader::new(&binary.offsets, minor, no_swiss) {
            Ok(reader) => reader,
            Err(e) => {
                return off(format!(
                    "Go layer off for pid {pid}: {}: {e}; tracing with kernel signals only",
                    binary.image.version()
                ))
            }
        };
        let memory = match ProcessMemory::open(pid) {
            Ok(memory) => memory,
            Err(e) => {
                return off(format!(
                    "Go layer off for pid {pid}: cannot read its memory (/proc/{pid}/mem: {e}; run as root, and with Yama's kernel.yama.ptrace_scope below 3); tracing with kernel signals only"
                ))
            }
        };
        let hashes = type_hashes(minor);
        // Call sites need their callers decoded; when that failed, streams still attach.
        let sites_off = match (&binary.call_sites, self.with_sites) {
            (_, false) => Some("call sites off (--go-probes sites turns them on)".to_owned()),
            (Err(why), true) => Some(format!("call sites off: {why}")),
            (Ok(_), true) => None,
        };
        let with_sites = sites_off.is_none();
        match self.attach(ebpf, pid, &path, &binary, &layout, with_sites) {
            Ok(links) => {
                if let Some(hashes) = hashes {
                    self.discover(pid, start, minor, reader.clone(), hashes);
                }
                let line = format!(
                    "{} (pid {pid}): {} uprobes attached{}{}",
                    binary.line(),
                    links.len(),
                    sites_off.map_or(String::new(), |why| format!(", {why}")),
                    if layout.conn_tconn == GoProcess::UNKNOWN {
                        ", streams not tied to their sockets (connection type unknown for this Go)"
                    } else {
                        ""
                    }
                );
                (
                    State::Attached {
                        start,
                        links,
                        reader: Box::new(reader),
                        memory,
                    },
                    say(pid, true, with_sites, line),
                )
            }
            Err(e) => off(format!(
                "Go layer off for pid {pid}: {e:#}; tracing with kernel signals only"
            )),
        }
    }

    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        path: &std::path::Path,
        binary: &GoBinary,
        layout: &GoProcess,
        with_sites: bool,
    ) -> Result<Vec<(&'static str, UProbeLinkId)>> {
        let scope = UProbeScope::OneProcess(
            NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0 is not a process"))?,
        );
        // Known to the call-site layer before any probe fires: its HTTP/2 probes check no
        // process map (the uprobes' pid filter is theirs).
        self.sites.register(pid, binary)?;
        let mut links = Vec::new();
        let attached = (|| -> Result<()> {
            let wanted = if with_sites {
                PROBES.len()
            } else {
                PROBES.len() - SITE_PROBES
            };
            for (role, place, name) in &PROBES[..wanted] {
                let function = binary
                    .probe(*role)
                    .ok_or_else(|| anyhow!("goprobe found no {role:?} function"))?;
                let callers = || binary.callers(*role).map_err(|e| anyhow!(e));
                let at: Vec<ProbeSite> = match place {
                    Place::Entry => vec![function.entry],
                    Place::Calls => callers()?.calls.clone(),
                    Place::BranchesAfterCalls => callers()?.branches.clone(),
                    Place::ReturnsAfterCalls => callers()?.returns.clone(),
                };
                for site in at {
                    let link = program(ebpf, name)?
                        .attach(
                            UProbeAttachLocation::AbsoluteOffset(site.file_offset),
                            path,
                            scope,
                        )
                        .with_context(|| {
                            format!(
                                "attaching {name} at {:#x} (file offset {:#x}) for {}",
                                site.address, site.file_offset, function.function.name
                            )
                        })?;
                    links.push((*name, link));
                }
            }
            // Last: the stream probes do nothing for this process until its layout is here,
            // so they start together.
            if let Some(procs) = self.procs.as_mut() {
                procs
                    .insert(pid, *layout, 0)
                    .context("registering the process in GO_PROCS")?;
            }
            Ok(())
        })();
        match attached {
            Ok(()) => Ok(links),
            Err(e) => {
                self.sites.forget(pid);
                detach(ebpf, pid, links);
                Err(e)
            }
        }
    }

    /// Detaches a target's probes and purges what the kernel side kept for it.
    fn forget(&mut self, ebpf: &mut Ebpf, pid: u32, state: State) {
        let State::Attached { links, .. } = state else {
            return;
        };
        if let Some(procs) = self.procs.as_mut() {
            let _ = procs.remove(&pid);
        }
        self.sites.forget(pid);
        detach(ebpf, pid, links);
        if let Some(conns) = self.conns.as_mut() {
            purge::<GoConnKey, GoConnInfo>(conns, |k| k.tgid == pid);
        }
        log::info!("Go layer: pid {pid} exited; its probes are detached");
    }

    /// Every open stream of every HTTP/2 connection the probe recorded, read from the
    /// targets' memory now. Connections found closed (or unreadable: the process unmapped or
    /// reused the memory) are forgotten.
    pub fn streams(&mut self) -> Result<Vec<StreamSample>> {
        let mut out = Vec::new();
        if !self
            .targets
            .values()
            .any(|s| matches!(s, State::Attached { .. }))
        {
            return Ok(out);
        }
        let Some(map) = self.conns.as_mut() else {
            return Ok(out);
        };
        let conns: Vec<(GoConnKey, GoConnInfo)> = batch::entries(map, "GO_CONNS")?;
        let mut done = Vec::new();
        for (key, info) in conns {
            let Some(State::Attached { reader, memory, .. }) = self.targets.get(&key.tgid) else {
                continue;
            };
            match reader.read_conn(memory, key.conn) {
                Ok(state) if state.closed => done.push(key),
                Ok(state) => {
                    if state.skipped > 0 {
                        log::debug!(
                            "Go layer: pid {} connection {:#x}: {} map entries did not check out (read mid-update)",
                            key.tgid,
                            key.conn,
                            state.skipped
                        );
                    }
                    out.extend(state.streams.into_iter().map(|s| StreamSample {
                        pid: key.tgid,
                        stream: s.stream,
                        conn: key.conn,
                        fd: (info.fd >= 0).then_some(info.fd),
                        stream_id: s.id,
                        response: s.response,
                        buffered_bytes: s.buffered,
                        first_chunk_read: s.first_chunk_read,
                        expected: s.expected,
                        unsent: s.unsent,
                        bytes_remain: s.bytes_remain,
                        content_length: s.content_length,
                        body_done: s.body_done,
                        body_closed: s.body_closed,
                    }));
                }
                Err(e @ MemError::Unreadable { .. }) | Err(e @ MemError::Implausible(_)) => {
                    log::debug!(
                        "Go layer: pid {} connection {:#x} forgotten: {e}",
                        key.tgid,
                        key.conn
                    );
                    done.push(key);
                }
            }
        }
        if !done.is_empty() {
            let mut typed: BpfHashMap<&mut MapData, GoConnKey, GoConnInfo> =
                map.try_into().context("opening the GO_CONNS map")?;
            for key in done {
                let _ = typed.remove(&key);
            }
        }
        Ok(out)
    }
}

fn program_names() -> impl Iterator<Item = &'static str> {
    PROBES.iter().map(|(_, _, name)| *name)
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name} (build mismatch)"))?
        .try_into()
        .with_context(|| format!("{name} is not a uprobe program"))
}

fn detach(ebpf: &mut Ebpf, pid: u32, links: Vec<(&'static str, UProbeLinkId)>) {
    for (name, link) in links {
        let detached = program(ebpf, name).and_then(|p| {
            p.detach(link)
                .with_context(|| format!("detaching {name} from pid {pid}"))
        });
        if let Err(e) = detached {
            log::warn!("{e:#}");
        }
    }
}

/// Removes the entries whose key `matches` from a hash map of the Go layer.
fn purge<K: aya::Pod + Default, V: aya::Pod>(map: &mut Map, matches: impl Fn(&K) -> bool) {
    let mut typed: BpfHashMap<&mut MapData, K, V> = match map.try_into() {
        Ok(typed) => typed,
        Err(e) => {
            log::warn!("purging a Go layer map: {e}");
            return;
        }
    };
    let doomed: Vec<K> = typed
        .keys()
        .filter_map(|k| k.ok())
        .filter(&matches)
        .collect();
    for key in doomed {
        let _ = typed.remove(&key);
    }
}

/// The target's Go layer in one line: for the model (and so the outputs), and the log. Through
/// the logger, never straight to stderr: a terminal UI may be on screen (the logger keeps the
/// lines for it). A refusal is a warning, shown by default; an attach is info.
fn say(pid: u32, attached: bool, call_sites: bool, line: String) -> Input {
    if attached {
        log::info!("{line}");
    } else {
        log::warn!("{line}");
    }
    Input::GoLayer(GoLayer {
        pid,
        attached,
        call_sites,
        line,
    })
}

/// The probe's view of a binary's layout: how to follow a connection to its socket. A field
/// it does not know costs only the connection's fd.
fn type_hashes(minor: u32) -> Option<ConnTypeHashes> {
    TYPE_HASHES
        .iter()
        .find(|(m, _, _)| *m == minor)
        .map(|(_, tls_conn, tcp_conn)| ConnTypeHashes {
            tls_conn: *tls_conn,
            tcp_conn: *tcp_conn,
        })
}

/// Where a probe finds the socket under a `net.Conn` interface at field `head` of the struct it
/// holds (the h2 ClientConn's `tconn`, the HTTP/1.1 persistConn's `conn`), for a binary of Go
/// 1.`minor`: the offsets of the chain and the type hashes of its interfaces. Without the type
/// hashes the interface cannot be checked, so `head` is unknown (no fd, never a guess).
pub(super) struct ConnChainLayout {
    pub head: u32,
    pub tls_conn: u32,
    pub tcp_conn_fd: u32,
    pub netfd_sysfd: u32,
    pub tls_conn_type_hash: u32,
    pub tcp_conn_type_hash: u32,
}

pub(super) fn conn_chain(offsets: &Offsets, minor: u32, head: Field) -> ConnChainLayout {
    let at = |field: Field| {
        offsets
            .get(field)
            .and_then(|o| u32::try_from(o).ok())
            .unwrap_or(GoProcess::UNKNOWN)
    };
    let hashes = type_hashes(minor);
    ConnChainLayout {
        head: hashes.map_or(GoProcess::UNKNOWN, |_| at(head)),
        tls_conn: at(Field::TlsConnConn),
        tcp_conn_fd: at(Field::TcpConnFd),
        netfd_sysfd: at(Field::NetFdSysfd),
        tls_conn_type_hash: hashes.map_or(0, |h| h.tls_conn),
        tcp_conn_type_hash: hashes.map_or(0, |h| h.tcp_conn),
    }
}

fn layout_from(offsets: &Offsets, minor: u32) -> GoProcess {
    let chain = conn_chain(offsets, minor, Field::H2ConnTconn);
    GoProcess {
        conn_tconn: chain.head,
        tls_conn: chain.tls_conn,
        tcp_conn_fd: chain.tcp_conn_fd,
        netfd_sysfd: chain.netfd_sysfd,
        tls_conn_type_hash: chain.tls_conn_type_hash,
        tcp_conn_type_hash: chain.tcp_conn_type_hash,
        _pad: [0; 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_release_has_type_hashes_and_every_program_a_role() {
        for minor in goprobe::symbols::OLDEST_KNOWN.1..=goprobe::symbols::NEWEST_KNOWN.1 {
            assert!(
                TYPE_HASHES.iter().any(|(m, _, _)| *m == minor),
                "go1.{minor} has no type hashes"
            );
        }
        let names: Vec<_> = program_names().collect();
        assert_eq!(
            names,
            [
                "enter_h2_read_loop",
                "enter_h1_site",
                "after_h2_site",
                "exit_h2_site"
            ]
        );
    }
}
