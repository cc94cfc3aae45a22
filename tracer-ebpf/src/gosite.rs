//! Call sites (issue 13): which line of the relay obtained each response. One uprobe hit per
//! request, where the relay's goroutine hands the request to Go's transport, reads the
//! goroutine's return addresses and hashes them. A stack is sent to user space once per
//! process (which names it from `.gopclntab`); a request sends nothing: it is counted on its
//! stack (`GO_SITE_STACKS`, `GO_SITE_LAST`) and left where user space reads it at its
//! samples, as its connection's last request (`GO_SITE_CONNS`), or logged with its response
//! (`GO_SITE_LOG`), which user space reads at its drains through a mapping. A ring record per
//! request cost the tracer process 0.5-0.7 us per request (bench/RESULTS.md S).
//!
//! Every probe sits on an instruction the kernel emulates (a `call` or a branch), never on a
//! function's entry or RET in the common path: those are single-stepped, a debug trap that
//! costs ~20 us on a VM, against ~0.6 us for an emulated one (bench/RESULTS.md). User space
//! finds the sites by decoding net/http's callers (tracer/src/goprobe/code.rs `calls_to`).
//!
//! - HTTP/1.1: each `call net/http.(*persistConn).roundTrip` (RAX = the persistConn, the
//!   receiver in Go's register ABI): its `conn` leads to the socket's fd, by which user space
//!   finds the connection it tracks. Followed once per connection (and again each second, or
//!   when the fd's connects and closes say it may name another socket: `GO_SITE_CONNS`), not
//!   once per request: four user reads, a quarter of the hit (bench/RESULTS.md R).
//! - HTTP/2: after each call of the client connection's round trip (Role::H2RoundTrip), the
//!   first branch with RAX untouched since the call (checked by the decoder): RAX = the
//!   response it returned, the very pointer the stream keeps in `clientStream.res`
//!   (net/http/h2_bundle.go 1.21-1.26 and net/http/internal/http2/transport.go 1.27:
//!   `res := cs.res ... return res, nil`); user space joins it to the stream by that pointer.
//!   A wrapper that returns the round trip's results at once has no such branch: its RET is
//!   probed instead (single-stepped, but off the path net/http's Transport takes).
//!
//! The stack: Go keeps frame pointers on amd64 (since 1.7). Frame 0 is where the probed
//! function returns to: inside a function (the call and branch sites) that is the probed IP
//! itself (a call's + 5), and RBP is the function's frame pointer; at a RET the epilogue has
//! restored the caller's RBP and [RSP] is the return address. From there each frame's [RBP+8]
//! is its return address and [RBP] the next frame pointer (runtime/traceback.go, "frame
//! pointer unwinding"), bounded by `MAX_SITE_FRAMES` and by frame pointers that must grow
//! (stacks grow down): a stack being moved, or a frame without one, ends the walk early, never
//! wrongly. The frame records are read from a copy of the stack made at once (`Window`), as
//! long as this CPU's last walk found the frames to span (`STACK_SPAN`), copied again from a
//! frame beyond it: a user read's fixed cost (about 170 ns here) made a read per frame most
//! of the probe's run time (go-h2: 2.4 against 1.8 us per hit, go-h1: 2.5 against 2.4;
//! bench/RESULTS.md L), and two copies of a fixed 2 KiB a fifth of it (T). (The kernel's own
//! unwinder, `bpf_get_stack`, reads each frame's two words apart: slower still.)

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated as gen},
    macros::{map, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::ProbeContext,
};
use tracer_common::{
    go::{
        site_proc_slot, stack_hash, SiteConnFd, SiteConnKey, SiteLast, SiteLogged, SiteObtained,
        SiteProcess, SiteRecord, SiteStackKey, SiteStackRecord, SiteWhat, MAX_GO_PROCS,
        MAX_SITE_CONNS, MAX_SITE_FRAMES, MAX_SITE_STACKS, SITE_CONN_TTL_NS, SITE_LOG_SLOTS,
        SITE_PROC_SLOTS,
    },
    EventKind, Stat,
};

use crate::{
    goconn::{conn_fd, field_at, read_user, ConnChain},
    maps::EVENTS,
    sock::{add_u64, count, current_ids, fd_gen, read_global, wakeup_flag},
};

/// Slot `tgid % SITE_PROC_SLOTS` -> where that process's HTTP/1.1 connection leads to its
/// socket (its `tgid` in the value; 0 in a free slot). Filled by user space before it
/// attaches these probes to the process, cleared when it detaches them. An array, so the
/// HTTP/1.1 probe finds its process with an inlined load and a compare instead of a hash
/// lookup (−244, −3 and −96 ns per hit of about 2.3 us in three A/Bs, bench/RESULTS.md R).
#[map]
pub static GO_SITE_SLOTS: Array<SiteProcess> = Array::with_max_entries(SITE_PROC_SLOTS, 0);

/// tgid -> the same, for a process whose slot another target holds (user space puts it here
/// instead): looked up only when the slot names another process.
#[map]
pub static GO_SITE_PROCS: HashMap<u32, SiteProcess> = HashMap::with_max_entries(MAX_GO_PROCS, 0);

/// (tgid, `*persistConn`) -> the socket fd the HTTP/1.1 probe followed it to, with that fd's
/// generation (`FD_GENS`) and when, and the connection's last request: the next requests on
/// the connection take the fd from here instead of four user reads, and user space reads the
/// last request of each connection here at its samples (the request a leaked connection
/// still holds). The fd is trusted while its generation holds (the state program counts
/// every tracked connect and close of it: a closed connection's `persistConn` can only be
/// freed and its address reused after its close, and its fd number only reused by a new
/// connect) and for at most `SITE_CONN_TTL_NS`, which bounds what a close no program saw (a
/// socket reset before the fd was remembered, a connection open before tracing started)
/// could leave wrong: a request joined to no connection, or to one opened after it, which
/// the model refuses (`for_connection`).
#[map]
pub static GO_SITE_CONNS: LruHashMap<SiteConnKey, SiteConnFd> =
    LruHashMap::with_max_entries(MAX_SITE_CONNS, NO_COMMON_LRU);

/// The HTTP/2 responses and the requests that obtained them, each CPU writing its part of
/// `SITE_LOG_MASK + 1` slots in turn (tracer-common `GO_SITE_LOG`; sized by the loader): user
/// space reads what was written since its last drain through a mapping of the array, no
/// syscall per response. An LRU hash map insert per response cost 1.5 us more per hit than
/// this store (bench/RESULTS.md S).
#[map]
pub static GO_SITE_LOG: Array<SiteLogged> = Array::with_max_entries(SITE_LOG_SLOTS, MMAPABLE);

/// How many responses this CPU wrote to `GO_SITE_LOG`: the next one goes to slot `count &
/// SITE_LOG_MASK` of its part. Raised after the entry is written.
#[map]
pub static GO_SITE_LOG_NEXT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// BPF_F_MMAPABLE (uapi/linux/bpf.h, Linux 5.5): user space maps the array's memory.
const MMAPABLE: u32 = 1 << 10;

/// Slots of each CPU's part of `GO_SITE_LOG` minus one; 0 without call sites (set by the
/// loader, tracer-common `site_log_per_cpu`).
#[unsafe(no_mangle)]
static SITE_LOG_MASK: u32 = 0;

/// BPF_F_NO_COMMON_LRU (as in gostream.rs): each CPU keeps its own LRU list.
const NO_COMMON_LRU: u32 = 1 << 1;

/// The stacks already sent whole, per process, with the requests counted on each (but those
/// a CPU still holds in `GO_SITE_LAST`). User space removes a key it no longer knows, so that
/// stack comes whole again.
#[map]
pub static GO_SITE_STACKS: LruHashMap<SiteStackKey, u64> =
    LruHashMap::with_max_entries(MAX_SITE_STACKS, 0);

/// This CPU's last stack found sent whole and the requests on it counted since (tracer-common
/// `GO_SITE_LAST`): most requests repeat the stack of the one before, and the key's compare is
/// cheaper than `GO_SITE_STACKS`'s lookup. Zeroed by user space with any key it removes there.
#[map]
pub static GO_SITE_LAST: PerCpuArray<SiteLast> = PerCpuArray::with_max_entries(1, 0);

/// Where a probe reads its stack before it knows the size of its record.
#[map]
static SITE_SCRATCH: PerCpuArray<[u64; MAX_SITE_FRAMES]> = PerCpuArray::with_max_entries(1, 0);

/// A copy of the probed goroutine's stack from a frame record up, read at once: the frame
/// records inside are walked here (see the module's notes). Zeroed again before the program
/// ends: the copy holds the relay's locals, which nothing may keep.
#[map]
static STACK_WINDOW: PerCpuArray<[u64; WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// How far this CPU's last walk read above its first frame record, in `SPAN_UNIT`s short of
/// the window (0, the start: the whole window): the next walk copies that much at once. A
/// request's stack mostly repeats the one before, and a copy costs about 170 ns plus 0.08 ns
/// a byte here, so one copy of what the frames span beats both a fixed 2 KiB window (two
/// copies for a 3 KiB stack) and a whole page each time (bench/RESULTS.md T).
#[map]
static STACK_SPAN: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// `STACK_WINDOW`'s size in 8-byte words: a page. A goroutine's frames from the transport to
/// `goexit` span about 3 KiB.
const WINDOW_WORDS: usize = 512;
const PAGE: u64 = 4096;
/// The granule of a first copy's size, in bytes; `WINDOW_BYTES / SPAN_UNIT` must be a power
/// of two (`Window::first_size`'s mask).
const SPAN_UNIT: u32 = 256;
const WINDOW_BYTES: u32 = (WINDOW_WORDS * 8) as u32;
const SPAN_UNITS: u32 = WINDOW_BYTES / SPAN_UNIT;
/// Words `Window::wipe` zeroes per turn of its loop.
const WIPE_UNROLL: usize = 8;
// `Window::load` masks a size below the window's, which is at most a page.
const _: () = assert!(
    WINDOW_WORDS.is_power_of_two()
        && WINDOW_WORDS * 8 <= PAGE as usize
        && WINDOW_WORDS % WIPE_UNROLL == 0
        && SPAN_UNITS.is_power_of_two()
        && SPAN_UNIT as usize % (WIPE_UNROLL * 8) == 0
);

/// A copy of part of the probed goroutine's stack (`STACK_WINDOW`): the frame records inside
/// it are read from it, and a frame beyond it moves it there.
struct Window<'a> {
    words: &'a mut [u64; WINDOW_WORDS],
    /// The user address of `words[0]`, and how many words from there were read.
    base: u64,
    len: usize,
    /// The first copy's size in `SPAN_UNIT`s short of the window (`STACK_SPAN`).
    short: u32,
    /// Where the first copy started: from there to the highest frame record the walk read
    /// (`short_after`) is what the next walk copies.
    first: u64,
    /// A copy was made, a copy was made after the first (the window may be written whole),
    /// and one failed (frames beyond are read one by one).
    used: bool,
    again: bool,
    failed: bool,
}

impl<'a> Window<'a> {
    fn new(words: &'a mut [u64; WINDOW_WORDS], short: u32) -> Self {
        Self {
            words,
            base: 0,
            len: 0,
            short,
            first: 0,
            used: false,
            again: false,
            failed: false,
        }
    }

    /// The size of the first copy: the last walk's span, rounded up to `SPAN_UNIT`s (256 B
    /// to the window, by construction, which every kernel's verifier follows).
    #[inline(always)]
    fn first_size(short: u32) -> u32 {
        (SPAN_UNITS - (short & (SPAN_UNITS - 1))) * SPAN_UNIT
    }

    /// `STACK_SPAN`'s next value from a walk whose highest frame record was at `top`: the
    /// window less the span it read (from the first copy's start to the end of that record)
    /// in whole units; the whole window again if it copied nothing or read more than a
    /// window.
    #[inline(always)]
    fn short_after(&self, top: u64) -> u32 {
        if !self.used || top < self.first {
            return 0;
        }
        let span = top - self.first + 16;
        let units = span.div_ceil(u64::from(SPAN_UNIT));
        if units >= u64::from(SPAN_UNITS) {
            0
        } else {
            SPAN_UNITS - units as u32
        }
    }

    /// Copies the stack from `at` up: the last walk's span the first time, a window's worth
    /// after (a frame beyond the first copy), or, where that runs into memory not mapped
    /// (past the top of a goroutine's stack), the rest of `at`'s page if shorter.
    #[inline(always)]
    fn load(&mut self, at: u64) -> bool {
        let size = if self.used {
            self.again = true;
            WINDOW_BYTES
        } else {
            self.first = at;
            Self::first_size(self.short)
        };
        self.used = true;
        if self.copy(at, size) {
            return true;
        }
        let off = at & (PAGE - 1);
        // Within a window of the page's end (else the window above was inside the page). The
        // rest is below the window's size here: the mask changes nothing but shows every
        // kernel's verifier the bound (6.1 lost a `min` in a spill).
        if off > PAGE - u64::from(size) {
            let rest = ((PAGE - off) as u32) & (WINDOW_BYTES - 1);
            if rest > 0 && self.copy(at, rest) {
                return true;
            }
        }
        self.len = 0;
        self.failed = true;
        false
    }

    /// Copies `size` bytes (at most the window's) of the stack from `at` into the words.
    #[inline(always)]
    fn copy(&mut self, at: u64, size: u32) -> bool {
        // SAFETY: bpf_probe_read_user copies with fault handling into the entry, at most its
        // size; on a fault it zeroes what it was given and returns an error.
        let read = unsafe {
            gen::bpf_probe_read_user(
                self.words.as_mut_ptr().cast::<c_void>(),
                size,
                at as *const c_void,
            )
        };
        if read != 0 {
            return false;
        }
        self.base = at;
        self.len = size as usize / 8;
        true
    }

    /// The two words at `at` (a frame record: the saved frame pointer, the return address).
    #[inline(always)]
    fn pair(&mut self, at: u64) -> Option<[u64; 2]> {
        if at % 8 != 0 {
            return None;
        }
        if let Some(pair) = self.pair_inside(at) {
            return Some(pair);
        }
        if !self.failed && self.load(at) {
            if let Some(pair) = self.pair_inside(at) {
                return Some(pair);
            }
        }
        // The copy failed, or `at` is a page's last word and the next page is not mapped.
        read_user(at)
    }

    #[inline(always)]
    fn pair_inside(&self, at: u64) -> Option<[u64; 2]> {
        if at < self.base {
            return None;
        }
        // Read back through memory: the compiler would otherwise index the words by the
        // offset in bytes, a bound the verifier cannot narrow to whole words.
        // SAFETY: a read of a local.
        let i = unsafe { core::ptr::read_volatile(&((at - self.base) / 8)) } as usize;
        // Both words through one pointer, and no `i + 1` compared: 6.12's verifier, linking a
        // register to another at a constant offset, loses the bound of the first at such a
        // comparison ("math between map_value pointer and register with unbounded min value").
        if i < self.len.saturating_sub(1) && i < WINDOW_WORDS - 1 {
            // SAFETY: `i + 1` is below `WINDOW_WORDS`: both words are in the array.
            Some(unsafe { core::ptr::read(self.words.as_ptr().add(i).cast::<[u64; 2]>()) })
        } else {
            None
        }
    }

    /// Zeroes what the copies wrote: they hold the relay's locals, which nothing may keep. (A
    /// copy from a map of zeroes, `bpf_probe_read_kernel`, was no cheaper than these stores.)
    #[inline(always)]
    fn wipe(self) {
        if !self.used {
            return;
        }
        // The first copy's size, or the whole window after another copy (a copy at the end
        // of a page is shorter than either).
        let words = if self.again {
            WINDOW_WORDS
        } else {
            Self::first_size(self.short) as usize / 8
        };
        // Eight stores per turn: a loop of one store per word spent four more instructions
        // on each (bench/RESULTS.md P).
        for (i, chunk) in self.words.chunks_exact_mut(WIPE_UNROLL).enumerate() {
            if i * WIPE_UNROLL >= words {
                break;
            }
            for word in chunk {
                // Volatile: a plain loop of stores may become a memset call, which BPF has
                // not.
                // SAFETY: a valid, aligned reference into the entry.
                unsafe { core::ptr::write_volatile(word, 0) };
            }
        }
    }
}

/// The length of `call rel32`: the call's return address is its IP + 5 (user space probes
/// only calls of that length, goprobe/code.rs `CALL_REL32_LEN`).
const CALL_LEN: u64 = 5;

/// How a probe's stack is read.
#[derive(Clone, Copy)]
enum Frames {
    /// Inside a function: frame 0 is the probed IP moved on by this many bytes (a call site
    /// then reads as its return address), then the chain from RBP.
    InBody { ip_to_return: u64 },
    /// At a RET: [RSP] first, then the frame chain, by hand.
    AtRet,
}

/// Each `call net/http.(*persistConn).roundTrip(pc, req)`: RAX = pc.
#[uprobe]
pub fn enter_h1_site(ctx: ProbeContext) -> u32 {
    try_enter_h1_site(&ctx).unwrap_or(0)
}

fn try_enter_h1_site(ctx: &ProbeContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    // SAFETY: a uprobe program's context is the pt_regs of the probed task, which the
    // verifier lets it read directly.
    let pc = unsafe { (*ctx.regs).rax };
    // SAFETY: bpf_ktime_get_ns takes nothing and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = SiteConnKey {
        tgid,
        _pad: 0,
        pconn: pc,
    };
    // The fd this persistConn led to before, while nothing says it may name another socket
    // now: no tracked connect or close of that fd since (`FD_GENS`), and not older than
    // `SITE_CONN_TTL_NS`. Else the connection is followed again.
    let known = GO_SITE_CONNS.get_ptr_mut(&key).filter(|&c| {
        // SAFETY: loads from the entry just found.
        let (fd, gen, followed) = unsafe { ((*c).fd, (*c).gen, (*c).followed_ns) };
        now.wrapping_sub(followed) < SITE_CONN_TTL_NS && fd_gen(tgid, fd) == gen
    });
    let followed = match known {
        Some(_) => None,
        // None: not a process these probes know (yet, or any more).
        None => Some(follow(tgid, pc).ok_or(0)?),
    };
    let frames = Frames::InBody {
        ip_to_return: CALL_LEN,
    };
    let stack = stack_of(ctx, SiteWhat::H1, tgid, now, frames).ok_or(0)?;
    let last = SiteObtained { stack, at_ns: now };
    match (known, followed) {
        (Some(entry), _) => {
            // SAFETY: a store into the entry found above (an LRU entry stays valid while the
            // program runs; evicted meanwhile, the store is lost like the entry). Not under
            // the bucket's lock: user space may read the stack of one request with the time
            // of the next on the same connection, never another connection's; a leaked
            // connection carries no request after its last.
            unsafe { (*entry).last = last };
        }
        (None, Some(fd)) if fd >= 0 => {
            let remembered = SiteConnFd {
                fd,
                gen: fd_gen(tgid, fd),
                followed_ns: now,
                last,
            };
            let _ = GO_SITE_CONNS.insert(&key, &remembered, 0);
        }
        // The connection could not be followed to its socket: the request is counted on its
        // stack, with no connection to join.
        _ => {}
    }
    Ok(0)
}

/// The socket fd of the persistConn `pc` of process `tgid`, followed through its `conn` in
/// four user reads (goconn.rs), or -1 where that fails; `None` for a process with no layout
/// here.
#[inline(always)]
fn follow(tgid: u32, pc: u64) -> Option<i32> {
    let entry = match GO_SITE_SLOTS.get_ptr_mut(site_proc_slot(tgid)) {
        // SAFETY: a load from the array entry just found.
        Some(slot) if unsafe { (*slot).tgid } == tgid => slot,
        _ => GO_SITE_PROCS.get_ptr_mut(&tgid)?,
    };
    // SAFETY: a copy of the value out of the map entry just found.
    let layout = unsafe { *entry };
    let chain = ConnChain {
        tls_conn: layout.tls_conn,
        tcp_conn_fd: layout.tcp_conn_fd,
        netfd_sysfd: layout.netfd_sysfd,
        tls_conn_type_hash: layout.tls_conn_type_hash,
        tcp_conn_type_hash: layout.tcp_conn_type_hash,
    };
    // The itabs seen go back to the process's entry for its next requests (two CPUs writing
    // the same address at once is harmless).
    let mut known = layout.itabs;
    let fd = field_at(pc, layout.pconn_conn)
        .and_then(|iface| conn_fd(iface, &chain, &mut known))
        .unwrap_or(-1);
    if known != layout.itabs {
        // SAFETY: a store into the map entry just found, which lives while the program runs.
        unsafe { (*entry).itabs = known };
    }
    Some(fd)
}

/// The first branch after a call of the HTTP/2 round trip: RAX = the response (nil on error:
/// nothing to name).
#[uprobe]
pub fn after_h2_site(ctx: ProbeContext) -> u32 {
    h2_site(&ctx, Frames::InBody { ip_to_return: 0 }).unwrap_or(0)
}

/// The RET of a wrapper that returns the HTTP/2 round trip's results: RAX = the response.
#[uprobe]
pub fn exit_h2_site(ctx: ProbeContext) -> u32 {
    h2_site(&ctx, Frames::AtRet).unwrap_or(0)
}

/// An HTTP/2 hit: no process check. The probes are attached to the target process alone (the
/// uprobe's pid filter), and user space registers the process before it attaches them (the
/// `GO_SITE_PROCS` lookup was one of the two that took 13.5% of the probe's time;
/// bench/RESULTS.md P and Q).
#[inline(always)]
fn h2_site(ctx: &ProbeContext, frames: Frames) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    // SAFETY: as in `try_enter_h1_site`.
    let response = unsafe { (*ctx.regs).rax };
    if response == 0 {
        return Ok(0);
    }
    // SAFETY: bpf_ktime_get_ns takes nothing and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let stack = stack_of(ctx, SiteWhat::H2, tgid, now, frames).ok_or(0)?;
    log_response(SiteLogged {
        tgid,
        _pad: 0,
        response,
        obtained: SiteObtained { stack, at_ns: now },
    });
    Ok(0)
}

/// Writes `entry` to this CPU's next slot of `GO_SITE_LOG`, then counts it: user space reads
/// the count first and the slots below it after, so it never reads a slot being written
/// (unless it fell most of a part behind, which it notices by the count and skips). The
/// order of the two stores is the compiler's (volatile) and x86-64's (stores stay in order).
#[inline(always)]
fn log_response(entry: SiteLogged) {
    let mask = read_global(&SITE_LOG_MASK);
    let Some(next) = GO_SITE_LOG_NEXT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: takes nothing.
    let cpu = unsafe { gen::bpf_get_smp_processor_id() };
    // SAFETY: this CPU's own entry; user space only reads it.
    let count = unsafe { *next };
    let slot = cpu
        .wrapping_mul(mask.wrapping_add(1))
        .wrapping_add(count as u32 & mask);
    let Some(at) = GO_SITE_LOG.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: a slot of the array just found (in bounds, aligned); volatile, so that the
    // count below is stored after it.
    unsafe { core::ptr::write_volatile(at, entry) };
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(next, count.wrapping_add(1)) };
}

/// Reads the stack and counts the request on it; returns the stack's hash. The first time
/// this process's stack is seen its return addresses go to user space (a full ring drops the
/// record and counts the drop: the request then has no site, and the next one on the stack
/// tries again).
#[inline(always)]
fn stack_of(
    ctx: &ProbeContext,
    what: SiteWhat,
    tgid: u32,
    ts_ns: u64,
    frames: Frames,
) -> Option<u64> {
    let pcs = SITE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the scratch entry is this CPU's own, and a program runs to the end on its CPU.
    let pcs = unsafe { &mut *pcs };
    // SAFETY: the context is the probed task's pt_regs (see `try_enter_h1_site`).
    let (sp, bp, ip) = unsafe { ((*ctx.regs).rsp, (*ctx.regs).rbp, (*ctx.regs).rip) };
    let first = match frames {
        Frames::InBody { ip_to_return } => Some(ip.wrapping_add(ip_to_return)),
        Frames::AtRet => None,
    };
    let words = STACK_WINDOW.get_ptr_mut(0)?;
    let span = STACK_SPAN.get_ptr_mut(0)?;
    // SAFETY: this CPU's own entries, as `pcs` above.
    let (words, span) = unsafe { (&mut *words, &mut *span) };
    let mut window = Window::new(words, *span);
    let (depth, top) = walk(pcs, first, sp, bp, &mut window);
    *span = window.short_after(top);
    window.wipe();
    if depth == 0 {
        return None;
    }
    let key = SiteStackKey {
        tgid,
        _pad: 0,
        hash: stack_hash(pcs),
    };
    let last = GO_SITE_LAST.get_ptr_mut(0)?;
    // SAFETY: this CPU's own entry (as `pcs`): no other program touches it meanwhile, and
    // user space only zeroes it.
    let last = unsafe { &mut *last };
    if last.key == key {
        last.pending += 1;
        return Some(key.hash);
    }
    if GO_SITE_STACKS.get_ptr(&key).is_none() {
        let mut entry = match EVENTS.reserve::<SiteStackRecord>(0) {
            Some(entry) => entry,
            None => {
                count(Stat::RingbufDrops);
                return None;
            }
        };
        entry.write(SiteStackRecord {
            site: SiteRecord {
                kind: EventKind::Site as u32,
                what: what as u32,
                tgid,
                _pad0: 0,
                ts_ns,
                ip,
                stack: key.hash,
                depth,
                _pad: 0,
            },
            pcs: *pcs,
        });
        entry.submit(wakeup_flag());
        count(Stat::EventsSent);
        // Sent whole once; a race with another CPU only sends it whole twice.
        let _ = GO_SITE_STACKS.insert(&key, &0, 0);
    }
    // The requests this CPU counted on its last stack go to that stack's count (an evicted
    // or removed stack loses them, as it loses its name).
    if last.pending > 0 {
        if let Some(requests) = GO_SITE_STACKS.get_ptr_mut(&last.key) {
            add_u64(requests, last.pending);
        }
    }
    *last = SiteLast { key, pending: 1 };
    Some(key.hash)
}

/// Fills `pcs` with return addresses, innermost first; returns how many, and the address of
/// the highest frame record read (SP for a RET's alone). Unused slots are 0. Frame records
/// are read from `window`'s copies of the stack.
#[inline(always)]
fn walk(
    pcs: &mut [u64; MAX_SITE_FRAMES],
    first: Option<u64>,
    sp: u64,
    mut bp: u64,
    window: &mut Window,
) -> (u32, u64) {
    let mut depth = 0u32;
    let mut floor = sp;
    let mut done = false;
    for (i, slot) in pcs.iter_mut().enumerate() {
        *slot = 0;
        if done {
            continue;
        }
        let ret: Option<u64> = if i == 0 {
            // At a RET: the return address is at SP (read alone if SP is a page's last word
            // and the next page is not mapped).
            first.or_else(|| window.pair(sp).map(|p| p[0]).or_else(|| read_user(sp)))
        } else if bp <= floor {
            // A frame pointer below the last one is no frame of this goroutine's stack.
            None
        } else {
            // The saved frame pointer and the return address above it.
            let frame = window.pair(bp);
            floor = bp;
            bp = frame.map_or(0, |f| f[0]);
            frame.map(|f| f[1])
        };
        match ret {
            Some(pc) if pc != 0 => {
                *slot = pc;
                depth += 1;
            }
            _ => done = true,
        }
    }
    (depth, floor)
}
