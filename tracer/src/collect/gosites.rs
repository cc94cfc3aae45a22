//! Call sites (issue 13), user side: registers each probed Go target with the call-site probes
//! (tracer-ebpf/src/gosite.rs), and turns their records (a request handed to Go's transport,
//! with the goroutine's return addresses) into model inputs. Each distinct stack is named once
//! from the binary's `.gopclntab` (goprobe::Symbolizer, cached per PC, with the load bias of a
//! PIE read from /proc/PID/maps) and sent once as `Input::SiteStack`; every request is then a
//! small `Input::Site` naming its stack, so a request costs a hash lookup here, not a
//! symbolization. The programs send a stack's frames once per process (`GO_SITE_STACKS`) and
//! its hash after that; a hash this side does not know (its stacks were dropped at the bound)
//! has its kernel key removed, so the next request on that stack brings the frames again.

use std::{collections::HashMap, path::Path, sync::Arc};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{Array as BpfArray, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
    Ebpf,
};
use tracer_common::go::{
    site_proc_slot, SiteProcess, SiteRecord, SiteStackKey, SiteStackRecord, SiteWhat, GO_SITE_LAST,
    GO_SITE_PROCS, GO_SITE_SLOTS, GO_SITE_STACKS, MAX_SITE_FRAMES,
};

use super::goattach::conn_chain;
use crate::{
    goprobe::{
        offsets::{Field, Offsets},
        symbolize::Symbolizer,
        GoBinary,
    },
    model::{
        site::{is_library, SiteEvent, SiteFrame, SiteKey, SiteStack, MAX_STACKS},
        Input,
    },
};

/// A call-site record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSite {
    pub what: SiteWhat,
    pub pid: u32,
    pub fd: Option<i32>,
    pub response: u64,
    pub at_ns: u64,
    pub ip: u64,
    /// The programs' hash of the stack.
    pub stack: u64,
    /// Return addresses, innermost first: only the first time the process's stack is seen.
    pub pcs: Option<Vec<u64>>,
}

/// Decodes one `go::SiteRecord` (or `SiteStackRecord`, when it carries frames) from the ring.
pub fn decode(bytes: &[u8]) -> Result<RawSite> {
    let raw: SiteRecord = super::decode::plain(bytes, "call-site")?;
    let what = SiteWhat::from_u32(raw.what)
        .ok_or_else(|| anyhow!("unknown call-site record kind {}", raw.what))?;
    let pcs = if raw.depth == 0 {
        None
    } else {
        let full: SiteStackRecord = super::decode::plain(bytes, "call-site")?;
        let depth = (raw.depth as usize).min(MAX_SITE_FRAMES);
        Some(full.pcs[..depth].to_vec())
    };
    Ok(RawSite {
        what,
        pid: raw.tgid,
        fd: (raw.fd >= 0).then_some(raw.fd),
        response: raw.response,
        at_ns: raw.ts_ns,
        ip: raw.ip,
        stack: raw.stack,
        pcs,
    })
}

/// What naming one target's stacks takes.
struct Target {
    symbolizer: Symbolizer,
    /// The main module's path: its packages are the application's even without a dot.
    module: Option<String>,
}

/// The call-site layer of the Go probes: the process map the programs check, each probed
/// target's symbols, and the stacks named so far.
#[derive(Default)]
pub struct Sites {
    /// The programs' process table (`GO_SITE_SLOTS`) and its overflow (`GO_SITE_PROCS`).
    slots: Option<BpfArray<MapData, SiteProcess>>,
    procs: Option<BpfHashMap<MapData, u32, SiteProcess>>,
    /// Which target holds each `GO_SITE_SLOTS` slot this side filled.
    slot_owners: HashMap<u32, u32>,
    /// The programs' record of the stacks they sent whole (`GO_SITE_STACKS`).
    sent: Option<BpfHashMap<MapData, SiteStackKey, u32>>,
    /// Each CPU's last stack found in `sent` (`GO_SITE_LAST`), zeroed with a key removed there.
    last: Option<PerCpuArray<MapData, SiteStackKey>>,
    targets: HashMap<u32, Target>,
    /// (pid, the programs' stack hash) -> the id the model knows the stack by.
    stacks: HashMap<(u32, u64), u32>,
    next_stack: u32,
}

impl Sites {
    /// Takes the programs' process maps.
    pub fn load(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        let map = ebpf.take_map(GO_SITE_SLOTS).ok_or_else(|| {
            anyhow!("the eBPF object has no map {GO_SITE_SLOTS} (build mismatch)")
        })?;
        self.slots = Some(map.try_into().context("opening the GO_SITE_SLOTS map")?);
        let map = ebpf.take_map(GO_SITE_PROCS).ok_or_else(|| {
            anyhow!("the eBPF object has no map {GO_SITE_PROCS} (build mismatch)")
        })?;
        self.procs = Some(map.try_into().context("opening the GO_SITE_PROCS map")?);
        let map = ebpf.take_map(GO_SITE_STACKS).ok_or_else(|| {
            anyhow!("the eBPF object has no map {GO_SITE_STACKS} (build mismatch)")
        })?;
        self.sent = Some(map.try_into().context("opening the GO_SITE_STACKS map")?);
        let map = ebpf
            .take_map(GO_SITE_LAST)
            .ok_or_else(|| anyhow!("the eBPF object has no map {GO_SITE_LAST} (build mismatch)"))?;
        self.last = Some(map.try_into().context("opening the GO_SITE_LAST map")?);
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
    }

    /// The inputs of one record: its stack (the first time it is seen), then the request.
    pub fn inputs(&mut self, raw: RawSite, out: &mut Vec<Input>) {
        let Some(target) = self.targets.get_mut(&raw.pid) else {
            // Its process exited (or its probes went) while the record was queued.
            return;
        };
        let key = match (raw.what, raw.fd) {
            (SiteWhat::H1, Some(fd)) => SiteKey::Connection { fd },
            // The probe could not follow the connection to its socket: nothing to join.
            (SiteWhat::H1, None) => return,
            (SiteWhat::H2, _) => SiteKey::H2Response {
                response: raw.response,
            },
        };
        let (pid, at_ns) = (raw.pid, raw.at_ns);
        let stacks_key = (pid, raw.stack);
        let stack = match (self.stacks.get(&stacks_key), raw.pcs) {
            (Some(id), _) => *id,
            (None, None) => {
                // Sent whole before this side dropped it (the bound, or a reused pid): the
                // next request on it brings its frames again; this one goes unnamed.
                self.resend(pid, raw.stack);
                return;
            }
            (None, Some(pcs)) => {
                if self.stacks.len() >= MAX_STACKS {
                    self.stacks.clear();
                }
                let id = self.next_stack;
                self.next_stack = self.next_stack.wrapping_add(1);
                let frames = name_stack(target, &pcs);
                log::debug!(
                    "call-site stack {id} of pid {pid}: {}",
                    frames
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" <- ")
                );
                out.push(Input::SiteStack(SiteStack { id, frames }));
                self.stacks.insert(stacks_key, id);
                id
            }
        };
        out.push(Input::Site(SiteEvent {
            pid,
            key,
            stack,
            at_ns,
        }));
    }

    /// Makes the programs send the stack `hash` of `pid` whole again: out of their record of
    /// the stacks sent, and out of each CPU's last one (all of them zeroed: a CPU holding
    /// another stack only looks it up once more).
    fn resend(&mut self, pid: u32, hash: u64) {
        if let Some(sent) = self.sent.as_mut() {
            let _ = sent.remove(&SiteStackKey {
                tgid: pid,
                _pad: 0,
                hash,
            });
        }
        let Some(last) = self.last.as_mut() else {
            return;
        };
        let zero = SiteStackKey {
            tgid: 0,
            _pad: 0,
            hash: 0,
        };
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
                fd: 9,
                response: 0,
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
        // A record without frames is only the head, as the programs send it.
        let len = if depth == 0 {
            size_of::<SiteRecord>()
        } else {
            bytes.len()
        };
        bytes[..len].to_vec()
    }

    #[test]
    fn decodes_records_and_keeps_only_the_frames_walked() {
        let site = decode(&record(1, 3)).unwrap();
        assert_eq!(site.what, SiteWhat::H1);
        assert_eq!((site.pid, site.fd, site.at_ns), (42, Some(9), 5));
        assert_eq!(site.stack, 0xfeed);
        assert_eq!(site.pcs, Some(vec![0x400000, 0x400001, 0x400002]));
        // A stack sent before: its hash alone.
        let bare = decode(&record(2, 0)).unwrap();
        assert_eq!(
            (bare.what, bare.stack, bare.pcs),
            (SiteWhat::H2, 0xfeed, None)
        );
        // A depth past the array is cut to it; a bad kind or a short record is refused,
        // frames announced but missing too.
        assert_eq!(
            decode(&record(2, 99)).unwrap().pcs.map(|p| p.len()),
            Some(MAX_SITE_FRAMES)
        );
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

    /// A record as the programs send it: the frames the first time, the hash alone after.
    fn raw(what: SiteWhat, pid: u32, fd: Option<i32>, pcs: &[u64]) -> RawSite {
        let mut words = [0; MAX_SITE_FRAMES];
        words[..pcs.len()].copy_from_slice(pcs);
        RawSite {
            what,
            pid,
            fd,
            response: 0xc000_0100,
            at_ns: 9,
            ip: 0,
            stack: tracer_common::go::stack_hash(&words),
            pcs: Some(pcs.to_vec()),
        }
    }

    fn bare(site: RawSite) -> RawSite {
        RawSite { pcs: None, ..site }
    }

    #[test]
    fn each_stack_is_named_once_and_every_request_names_its_stack() {
        let mut sites = sites_with_target(7);
        let mut out = Vec::new();
        sites.inputs(
            raw(SiteWhat::H1, 7, Some(5), &[0x401026, 0x401011]),
            &mut out,
        );
        sites.inputs(
            bare(raw(SiteWhat::H1, 7, Some(6), &[0x401026, 0x401011])),
            &mut out,
        );
        sites.inputs(raw(SiteWhat::H2, 7, None, &[0x401011]), &mut out);
        // No socket followed, or a process not (or no longer) probed: nothing.
        sites.inputs(raw(SiteWhat::H1, 7, None, &[0x401026]), &mut out);
        sites.inputs(raw(SiteWhat::H1, 8, Some(5), &[0x401026]), &mut out);
        let frames = |f: &[SiteFrame]| {
            f.iter()
                .map(|f| format!("{} {}", f.function, f.line))
                .collect::<Vec<_>>()
        };
        match &out[..] {
            [Input::SiteStack(first), Input::Site(a), Input::Site(b), Input::SiteStack(second), Input::Site(c)] =>
            {
                assert_eq!(frames(&first.frames), ["main.b 7", "main.a 12"]);
                assert_eq!(frames(&second.frames), ["main.a 12"]);
                assert!(!first.frames[0].library, "main is the application");
                assert_eq!((a.stack, b.stack, c.stack), (first.id, first.id, second.id));
                assert_eq!(a.key, SiteKey::Connection { fd: 5 });
                assert_eq!(b.key, SiteKey::Connection { fd: 6 });
                assert_eq!(
                    c.key,
                    SiteKey::H2Response {
                        response: 0xc000_0100
                    }
                );
            }
            other => panic!("unexpected inputs: {other:#?}"),
        }
        // A process forgotten takes its stacks with it.
        sites.forget(7);
        out.clear();
        sites.inputs(raw(SiteWhat::H1, 7, Some(5), &[0x401026]), &mut out);
        assert!(out.is_empty());
        // A hash this side does not know (its stacks dropped at the bound) names nothing;
        // the same stack sent whole again is named again.
        let mut sites = sites_with_target(7);
        let again = raw(SiteWhat::H1, 7, Some(5), &[0x401026]);
        sites.inputs(bare(again.clone()), &mut out);
        assert!(out.is_empty());
        sites.inputs(again, &mut out);
        assert!(matches!(&out[..], [Input::SiteStack(_), Input::Site(_)]));
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
