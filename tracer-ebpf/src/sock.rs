//! Helpers shared by the hook modules: target filtering, unread-byte sampling, events, stats.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated as gen},
    maps::Array,
    programs::TracePointContext,
    EbpfContext as _,
};
use tracer_common::{
    ConnEvent, ConnFlags, ConnInfo, EventKind, Stat, O_NONBLOCK, RING_WAKEUP_BYTES, SOCK_DONE_BIT,
};

pub use crate::maps::wants_first_bytes;
use crate::maps::{CONNECT_SLOTS, EVENTS, FD_GENS, SLOTS, SLOT_BITS, STATS, TARGETS};

/// Byte offsets of `tcp_sock.rcv_nxt` and `tcp_sock.copied_seq`, read by user space from the
/// running kernel's BTF and set before load. 0 means unknown: unread bytes are then not sampled.
#[unsafe(no_mangle)]
static RCV_NXT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static COPIED_SEQ_OFFSET: u32 = 0;
/// Byte offset of `sock.sk_flags`, likewise.
#[unsafe(no_mangle)]
static SK_FLAGS_OFFSET: u32 = 0;
/// Byte offsets of `sock.sk_socket`, `socket.file` and `file.f_flags`, likewise. 0 means
/// unknown: every socket is then taken for one whose reads may wait.
#[unsafe(no_mangle)]
static SK_SOCKET_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SOCKET_FILE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FILE_FLAGS_OFFSET: u32 = 0;

/// Non-zero when connect()'s and close()'s fds are read from the thread's saved user
/// registers at the state changes they cause (`in_syscall`), instead of from syscall
/// tracepoints (connect.rs, close.rs), which would put every syscall of every process on the
/// host through the kernel's slow syscall path. Set by the loader (x86-64, Linux 5.15+).
#[unsafe(no_mangle)]
static SYSCALL_FROM_REGS: u32 = 0;
/// Byte offsets of the syscall number and first argument in `struct pt_regs` (`orig_ax`,
/// `di`), from the running kernel's BTF.
#[unsafe(no_mangle)]
static PT_REGS_NR_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static PT_REGS_ARG0_OFFSET: u32 = 0;

/// Non-zero when the call-site probes are loaded: tracked connects and closes count in
/// `FD_GENS` (`bump_fd_gen`). Set by the loader.
#[unsafe(no_mangle)]
static SITE_FD_GENS: u32 = 0;

/// x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl): the loader chooses the
/// registers path on x86-64 only.
pub const NR_CONNECT: u64 = 42;
pub const NR_CLOSE: u64 = 3;

/// Reads a field of the tracepoint record the program was called with. A tracepoint
/// program's context is that record, which the verifier lets it load from directly: no helper
/// call per field (aya's `read_at` makes one), which matters on hooks that fire for every
/// socket on the host.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: `offset` is a field of this tracepoint's record (user space checks every offset
    // against the running kernel's format files before load) and T is that field's type, so
    // the load stays inside the record; the verifier rejects the program otherwise.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// Zeroes `words` u64s at `dst`, one store each. Volatile so that LLVM cannot fold them into
/// a memset call: the memset bpf-linker links in is a byte loop, five instructions a byte
/// (zeroing a ConnInfo that way was a third of a connect's sock_set_state).
///
/// # Safety
/// `dst` is valid for writes of `words` u64s and aligned to 8.
#[inline(always)]
pub unsafe fn zero_words(dst: *mut u64, words: usize) {
    for i in 0..words {
        // SAFETY: by the caller's contract.
        unsafe { core::ptr::write_volatile(dst.add(i), 0) };
    }
}

/// (tgid, tid) of the current task.
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// The `TargetFlags` of the thread group when it is one we trace. This lookup is the whole
/// cost an unrelated process pays where tracking starts.
#[inline(always)]
pub fn target_flags(tgid: u32) -> Option<u32> {
    // SAFETY: pointer from the lookup just made, to the entry's aligned u32.
    TARGETS.get_ptr(&tgid).map(|flags| unsafe { *flags })
}

/// Slot of a counting filter (see maps.rs) for a 64-bit key: Fibonacci hashing, one multiply.
#[inline(always)]
fn slot_of(key: u64) -> u32 {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOT_BITS)) as u32
}

/// Filter slot of a socket address (`SOCK_SLOTS`).
#[inline(always)]
pub fn sock_slot(sk: u64) -> u32 {
    slot_of(sk)
}

/// Filter slot of a process's fd (`FD_SLOTS`).
#[inline(always)]
pub fn fd_slot(tgid: u32, fd: u32) -> u32 {
    slot_of(u64::from(tgid) << 32 | u64::from(fd))
}

/// Filter slot of a thread (`PENDING_READ_SLOTS`), and its `CLOSING` slot.
#[inline(always)]
pub fn tid_slot(tid: u32) -> u32 {
    tid & (SLOTS - 1)
}

/// `PENDING_CONNECT` slot of a thread.
#[inline(always)]
pub fn connect_slot(tid: u32) -> u32 {
    tid & (CONNECT_SLOTS - 1)
}

/// False when the counting filter says no key in `slot` has an entry, so the hash lookup it
/// guards can be skipped.
#[inline(always)]
pub fn maybe(filter: &Array<u32>, slot: u32) -> bool {
    maybe_in(filter, slot, u32::MAX)
}

/// As `maybe`, for the counter in the `half` bits of a slot that holds two (`FD_SLOTS`).
#[inline(always)]
pub fn maybe_in(filter: &Array<u32>, slot: u32, half: u32) -> bool {
    // An index out of range cannot happen (slots are masked); if it did, fall back to the
    // lookup rather than miss an entry.
    filter.get(slot).is_none_or(|n| *n & half != 0)
}

/// Raises a counting filter's slot by `amount` (1, or `FD_READER` for the high half of an
/// `FD_SLOTS` slot).
#[inline(always)]
pub fn filter_raise(filter: &Array<u32>, slot: u32, amount: u32) {
    filter_add(filter, slot, amount);
}

/// Lowers a counting filter's slot by `amount`, which was raised there before.
#[inline(always)]
pub fn filter_lower(filter: &Array<u32>, slot: u32, amount: u32) {
    filter_add(filter, slot, amount.wrapping_neg());
}

/// An atomic add whose result is unused: the one atomic instruction every kernel since 3.18
/// has (BPF_XADD). Through the intrinsic: the BPF target's atomic types have no fetch_add.
#[inline(always)]
fn filter_add(filter: &Array<u32>, slot: u32, delta: u32) {
    if let Some(counter) = filter.get_ptr_mut(slot) {
        // SAFETY: an aligned u32 inside an array map value, which lives as long as the map;
        // other CPUs only touch it through atomic adds and plain loads.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(counter, delta) };
    }
}

/// Adds `delta` to a u64 counter in a map value that several CPUs add to: BPF_XADD, as
/// `filter_add`.
#[inline(always)]
pub fn add_u64(counter: *mut u64, delta: u64) {
    // SAFETY: the caller's pointer is an aligned u64 inside a map value found by a lookup in
    // this program run; other CPUs only touch it through atomic adds and plain loads.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, delta) };
}

/// Counts a tracked connect or close of process `tgid`'s fd `fd` in `FD_GENS`, when the
/// call-site probes are loaded (one atomic add; nothing otherwise).
#[inline(always)]
pub fn bump_fd_gen(tgid: u32, fd: i32) {
    if fd >= 0 && read_global(&SITE_FD_GENS) != 0 {
        filter_add(&FD_GENS, fd_slot(tgid, fd as u32), 1);
    }
}

/// The count `bump_fd_gen` keeps for process `tgid`'s fd `fd` (and the fds in its slot).
#[inline(always)]
pub fn fd_gen(tgid: u32, fd: i32) -> u32 {
    FD_GENS
        .get(fd_slot(tgid, fd as u32))
        // SAFETY: a plain load of an aligned u32 that other CPUs change only by atomic adds.
        .map_or(0, |n| unsafe { core::ptr::read_volatile(n) })
}

/// True when the tracked socket `conn` is the one process `tgid` holds as `fd`. An
/// `FD_SOCKS` mapping can outlive its socket for a moment (see there) and the address be
/// reused by another tracked socket, so a user of a mapping checks this before touching the
/// entry.
///
/// # Safety
/// `conn` points into a live `CONNS` entry.
#[inline(always)]
pub unsafe fn owns(conn: *const ConnInfo, tgid: u32, fd: u32) -> bool {
    // SAFETY: by the caller's contract.
    unsafe { (*conn).tgid == tgid && (*conn).fd as u32 == fd }
}

#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU slot is only touched by programs on this CPU, which do not preempt
        // each other, so this plain increment cannot race.
        unsafe { *slot += 1 };
    }
}

/// True when connect()'s and close()'s fds come from the registers (`in_syscall`).
#[inline(always)]
pub fn syscall_from_regs() -> bool {
    read_global(&SYSCALL_FROM_REGS) != 0
}

/// The first argument of the syscall the current thread is in, when that syscall is `nr`:
/// read from the user registers the kernel saved at syscall entry (`bpf_task_pt_regs`, Linux
/// 5.15), which stay as they were until the syscall returns. A state change that connect()
/// or close() makes runs in the calling thread before it returns, so this gives the fd they
/// were called with, with no hook on the syscall itself. In softirq context the registers are
/// those of whatever thread was interrupted: callers match the result against the socket's
/// own process and fd.
#[inline(always)]
pub fn in_syscall(nr: u64) -> Option<u64> {
    let nr_off = read_global(&PT_REGS_NR_OFFSET) as usize;
    let arg0_off = read_global(&PT_REGS_ARG0_OFFSET) as usize;
    // SAFETY: helpers without memory arguments, the first returning the verifier-checked
    // current task. The registers are loaded directly through the BTF-typed pointer the
    // second returns: the verifier checks each load against `struct pt_regs` (the offsets
    // are constants it reads from the frozen .rodata) and makes it a fault-handled load, a
    // few ns where a bpf_probe_read_kernel call costs tens.
    unsafe {
        let task = gen::bpf_get_current_task_btf();
        let regs = gen::bpf_task_pt_regs(task) as *const u8;
        let called = core::ptr::read_volatile(regs.add(nr_off).cast::<u64>());
        if called != nr {
            return None;
        }
        Some(core::ptr::read_volatile(regs.add(arg0_off).cast::<u64>()))
    }
}

/// A global the loader sets (an offset, a flag).
#[inline(always)]
pub fn read_global(global: &u32) -> u32 {
    // SAFETY: the global is a valid, aligned u32; the volatile read keeps the compiler from
    // folding in the pre-load value 0 instead of what the loader wrote.
    unsafe { core::ptr::read_volatile(global) }
}

/// Records `rcv_nxt - copied_seq` of the socket: bytes (and an unread FIN, counted as 1) that
/// arrived and nothing read yet — what `ss` shows as Recv-Q.
#[inline(always)]
pub fn sample_unread(sk: u64, conn: *mut ConnInfo, now: u64) {
    let rcv_nxt_off = read_global(&RCV_NXT_OFFSET);
    let copied_seq_off = read_global(&COPIED_SEQ_OFFSET);
    if rcv_nxt_off == 0 || copied_seq_off == 0 {
        return;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad read returns an error and we
    // keep the previous sample. `sk` is a live tcp_sock: these hooks run while the kernel
    // holds it.
    let rcv_nxt = unsafe { bpf_probe_read_kernel((sk + rcv_nxt_off as u64) as *const u32) };
    let copied_seq = unsafe { bpf_probe_read_kernel((sk + copied_seq_off as u64) as *const u32) };
    if let (Ok(rcv_nxt), Ok(copied_seq)) = (rcv_nxt, copied_seq) {
        // SAFETY: `conn` points into a CONNS entry that the caller just looked up.
        unsafe {
            (*conn).unread_bytes = rcv_nxt.wrapping_sub(copied_seq);
            (*conn).unread_sampled_ns = now;
            (*conn).flags |= ConnFlags::UNREAD_SAMPLED;
        }
    }
}

/// True when the socket's file is O_NONBLOCK (`sk->sk_socket->file->f_flags`): its reads
/// never wait in the kernel. Called in connect(), which holds the file. Three reads of structs
/// the kernel is working on, so warm; any failure answers false (reads may wait).
#[inline(always)]
pub fn nonblocking_file(sk: u64) -> bool {
    let (socket_at, file_at, flags_at) = (
        read_global(&SK_SOCKET_OFFSET),
        read_global(&SOCKET_FILE_OFFSET),
        read_global(&FILE_FLAGS_OFFSET),
    );
    if socket_at == 0 || file_at == 0 || flags_at == 0 {
        return false;
    }
    // SAFETY: bpf_probe_read_kernel checks every address; a bad one returns an error.
    let Ok(socket) = (unsafe { bpf_probe_read_kernel((sk + u64::from(socket_at)) as *const u64) })
    else {
        return false;
    };
    if socket == 0 {
        return false;
    }
    // SAFETY: as above.
    let Ok(file) = (unsafe { bpf_probe_read_kernel((socket + u64::from(file_at)) as *const u64) })
    else {
        return false;
    };
    if file == 0 {
        return false;
    }
    // SAFETY: as above.
    let flags = unsafe { bpf_probe_read_kernel((file + u64::from(flags_at)) as *const u32) };
    flags.is_ok_and(|f| f & O_NONBLOCK != 0)
}

/// Records whether the peer's FIN had arrived when the socket closes. A socket the process
/// closed first normally ends after the peer's FIN (FIN_WAIT2 -> TIME_WAIT); ending without it
/// means the kernel aborted it, typically because response data kept arriving after close().
#[inline(always)]
pub fn sample_peer_fin(sk: u64, conn: *mut ConnInfo) {
    let offset = read_global(&SK_FLAGS_OFFSET);
    if offset == 0 {
        return;
    }
    // SAFETY: a checked kernel read of a live socket's field; on error nothing is recorded.
    if let Ok(flags) = unsafe { bpf_probe_read_kernel((sk + offset as u64) as *const u64) } {
        if flags & SOCK_DONE_BIT != 0 {
            // SAFETY: `conn` points into a CONNS entry that the caller just looked up.
            unsafe { (*conn).flags |= ConnFlags::PEER_FIN_AT_CLOSE };
        }
    }
}

/// Sends a lifecycle event carrying a copy of the socket's record. A full ring buffer drops the
/// event and counts it, so user space can report the loss and re-sync.
#[inline(always)]
pub fn emit(
    kind: EventKind,
    old_state: u32,
    new_state: u32,
    sk: u64,
    now: u64,
    conn: *const ConnInfo,
) {
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(Stat::RingbufDrops);
        return;
    };
    let (ctx_tgid, _) = current_ids();
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to a reserved ring-buffer record of the right size that only we
    // own until submit; `conn` points into a live CONNS entry.
    unsafe {
        (*event).kind = kind as u32;
        (*event).old_state = old_state;
        (*event).new_state = new_state;
        (*event).ctx_tgid = ctx_tgid;
        (*event).sk = sk;
        (*event).ts_ns = now;
        core::ptr::copy_nonoverlapping(conn, &mut (*event).conn, 1);
    }
    entry.submit(wakeup_flag());
    count(Stat::EventsSent);
}

/// Wakes the reader only once the ring buffer fills up; otherwise it drains on its timer.
/// Waking it per event would cost a task wakeup on every connect, state change and close.
#[inline(always)]
pub fn wakeup_flag() -> u64 {
    // BPF_RB_AVAIL_DATA = 0, BPF_RB_NO_WAKEUP = 1, BPF_RB_FORCE_WAKEUP = 2 (uapi/linux/bpf.h).
    if EVENTS.query(0) > RING_WAKEUP_BYTES {
        2
    } else {
        1
    }
}
