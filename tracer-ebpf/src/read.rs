//! Reads on tracked sockets. A pooled or waiting Go connection's last read returned EAGAIN (a
//! goroutine waits on it); a leaked one's last read returned data and nothing reads again.
//! Counters stay in `CONNS`: no ring-buffer event per read.
//!
//! Two ways to see a read's result, chosen per kernel by the loader:
//! - `sock/sock_recv_length` (Linux 6.3+): every recvmsg on a socket, whatever called it;
//! - the read syscalls' exits (any kernel with syscall tracepoints): the fd is mapped to the
//!   socket at entry (`FD_SOCKS`), and the return value at exit is what sock_recv_length would
//!   have reported for the same read. Reads that do not go through read, readv, recvfrom or
//!   recvmsg (io_uring, splice, recvmmsg) are not seen there; Go's net package uses read(2).
//!
//! The read syscalls' entries count the reads in progress (a thread blocked in read() is
//! listening). On the syscall path they are attached from the start; with sock_recv_length only
//! once a target has a socket whose reads can wait (`Stat::ReadersCounted`, or a target that is
//! not a Go program): Go's sockets are all non-blocking, so a Go relay's reads run `sock_recv`
//! alone. The read ends where it is counted: in `sock_recv` (the
//! tracepoint fires at the end of every recvmsg, which every read of a socket goes through)
//! or, on the syscall path, in `exit_read`, which needs the socket noted per thread at entry.
//! So with sock_recv_length, `exit_read` is not attached at all and entries note nothing per
//! thread.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    tp_layout, ConnFlags, ConnInfo, FdKey, Stat, IPPROTO_TCP, MSG_DONTWAIT, MSG_PEEK,
};

use crate::{
    maps::{
        CONNS, FD_MAPPED, FD_READER, FD_READER_BITS, FD_SLOTS, FD_SOCKS, FD_SOCK_MASK,
        PENDING_READ, PENDING_READ_SLOTS, SOCK_SLOTS,
    },
    sock::{
        count, current_ids, fd_slot, field, filter_lower, filter_raise, maybe, maybe_in, owns,
        read_global, sample_unread, sock_slot, tid_slot,
    },
    state::map_fd,
    write::writes_from_sock,
};

/// Non-zero when the loader attached `exit_read` instead of `sock_recv` (a kernel before 6.3,
/// or forced): reads are then noted per thread at entry and counted at exit.
#[unsafe(no_mangle)]
static READS_FROM_SYSCALLS: u32 = 0;

/// Bit 0 of a `PENDING_READ` value: the read in progress is a MSG_PEEK, which consumes
/// nothing and so is not counted as a read. Free because socket addresses are slab objects
/// aligned to at least 8 bytes.
const PEEK_TAG: u64 = 1;

/// A `PENDING_READ` value: the thread is not in a read of a tracked socket.
const NO_READ: u64 = 0;

/// `sock/sock_recv_length` (Linux 6.3): every recvmsg on a socket, with its return value.
#[tracepoint]
pub fn sock_recv_tp(ctx: TracePointContext) -> u32 {
    try_sock_recv(&ctx).unwrap_or(0)
}

fn try_sock_recv(ctx: &TracePointContext) -> Result<u32, i64> {
    use tp_layout::sock_recv_length as tp;
    // This fires for every recvmsg on the host, Unix sockets included: a load from the record
    // drops what cannot be tracked before any map access.
    let protocol: u16 = field(ctx, tp::PROTOCOL);
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let sk: u64 = field(ctx, tp::SK);
    let flags: i32 = field(ctx, tp::FLAGS);
    let ret: i32 = field(ctx, tp::RET);
    on_recv(sk, ret, flags)
}

/// `sock/sock_recv_length` (Linux 6.3) as a raw tracepoint: called with the tracepoint's own
/// arguments `(struct sock *sk, int ret, int flags)` (user space checks that prototype in the
/// kernel's BTF before choosing this path), so the kernel fills no trace record for it.
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv(ctx: RawTracePointContext) -> i32 {
    // No protocol check: the record's protocol field is not here, and the socket filter
    // answers for a Unix or UDP socket as for an untracked TCP one.
    let sk: u64 = ctx.arg(0);
    // Each argument is a u64 slot; the ints are its low 32 bits.
    let ret = ctx.arg::<u64>(1) as i32;
    let flags = ctx.arg::<u64>(2) as i32;
    let _ = on_recv(sk, ret, flags);
    0
}

/// A recvmsg on socket `sk` returned `ret` with `flags`.
#[inline(always)]
fn on_recv(sk: u64, ret: i32, flags: i32) -> Result<u32, i64> {
    // CONNS only holds sockets of targets, so its filter is the target check too.
    if !maybe(&SOCK_SLOTS, sock_slot(sk)) {
        return Ok(0);
    }
    let Some(conn) = CONNS.get_ptr_mut(&sk) else {
        return Ok(0);
    };
    // SAFETY: `conn` points into the CONNS entry just looked up.
    let was_nonblocking = unsafe {
        // The read that `enter_read` counted in progress ends here (a peek too). One it did
        // not count (the socket's reads do not wait) finds 0 here, unless another thread's
        // read waits on the same socket meanwhile.
        if (*conn).reads_inflight > 0 {
            (*conn).reads_inflight -= 1;
        }
        (*conn).flags & ConnFlags::NONBLOCKING_READS != 0
    };
    if flags & MSG_PEEK != 0 {
        // Not a read, and a peek with MSG_DONTWAIT says nothing of how the reads wait.
        return Ok(0);
    }
    let nonblocking = flags & MSG_DONTWAIT != 0;
    if nonblocking != was_nonblocking {
        note_blocking_mode(sk, conn, nonblocking);
    }
    record_read(sk, conn, i64::from(ret));
    Ok(0)
}

/// The socket's reads changed between waiting and not (once per connection for Go's
/// sockets, which are non-blocking from the start): tells `enter_read` through the fd's
/// mapping whether to count the next reads in progress.
#[inline(always)]
fn note_blocking_mode(sk: u64, conn: *mut ConnInfo, nonblocking: bool) {
    // SAFETY: `conn` points into the CONNS entry the caller just looked up.
    let (tgid, fd, flags) = unsafe {
        if nonblocking {
            (*conn).flags |= ConnFlags::NONBLOCKING_READS;
        } else {
            (*conn).flags &= !ConnFlags::NONBLOCKING_READS;
        }
        ((*conn).tgid, (*conn).fd as u32, (*conn).flags)
    };
    if flags & ConnFlags::FD_KNOWN == 0 {
        return;
    }
    if !nonblocking && flags & ConnFlags::READS_COUNTED == 0 {
        // A read waited on a socket that was non-blocking at connect: count its reads from
        // now on. Never lowered before the end (two readers racing here raise it twice,
        // which only costs lookups), so it is never too low.
        // SAFETY: as above.
        unsafe { (*conn).flags |= ConnFlags::READS_COUNTED };
        filter_raise(&FD_SLOTS, fd_slot(tgid, fd), FD_READER);
        // Tells user space to attach the read syscalls' entries, if it has not.
        count(Stat::ReadersCounted);
        if flags & ConnFlags::FD_MAPPED == 0 {
            // Not mapped at connect, where no fd-keyed hook wanted it (state.rs,
            // `fd_mapping_wanted`): `enter_read` finds the socket through it from now on.
            // SAFETY: as above.
            let connect_ns = unsafe {
                (*conn).flags |= ConnFlags::FD_MAPPED;
                (*conn).connect_ns
            };
            filter_raise(&FD_SLOTS, fd_slot(tgid, fd), FD_MAPPED);
            map_fd(tgid, fd, sk, writes_from_sock(), false, connect_ns);
            return;
        }
    }
    if flags & ConnFlags::FD_MAPPED == 0 {
        return;
    }
    if let Some(mapping) = FD_SOCKS.get_ptr_mut(&FdKey { tgid, fd }) {
        // SAFETY: pointer from the lookup just made; a stale mapping (another socket) is
        // left alone.
        unsafe {
            if (*mapping).sk & FD_SOCK_MASK == sk {
                (*mapping).nonblocking = u16::from(nonblocking);
            }
        }
    }
}

/// Counts one read that returned `ret` (bytes, 0 at EOF, or -errno) on a tracked socket.
#[inline(always)]
fn record_read(sk: u64, conn: *mut ConnInfo, ret: i64) {
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `conn` points into the CONNS entry the caller just looked up. Reads of one
    // socket come from one goroutine at a time in Go; a rare concurrent reader can only skew a
    // counter.
    unsafe {
        (*conn).reads += 1;
        (*conn).last_read_ret = ret;
        (*conn).last_read_ns = now;
        if ret > 0 {
            (*conn).bytes_read += ret as u64;
        }
    }
    sample_unread(sk, conn, now);
    count(Stat::ReadsSeen);
}

/// `syscalls/sys_enter_{read,readv}` (syscall tracepoints: Linux 2.6.37): a read syscall starts
/// on a target's fd. Marks the socket as having a reader in the kernel: a thread blocked in
/// read() is listening, so its connection is not abandoned however long the upstream stays
/// silent.
#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    try_enter_read(&ctx, true, None).unwrap_or(0)
}

/// `syscalls/sys_enter_recvfrom`: as `enter_read`, and a MSG_PEEK is remembered.
#[tracepoint]
pub fn enter_recvfrom(ctx: TracePointContext) -> u32 {
    try_enter_read(&ctx, true, Some(tp_layout::SYS_ENTER_RECVFROM_FLAGS)).unwrap_or(0)
}

/// `syscalls/sys_enter_recvmsg`: as `enter_read`, and a MSG_PEEK is remembered.
#[tracepoint]
pub fn enter_recvmsg(ctx: TracePointContext) -> u32 {
    try_enter_read(&ctx, false, Some(tp_layout::SYS_ENTER_RECVMSG_FLAGS)).unwrap_or(0)
}

/// `has_len`: the syscall's third argument is a length (read's count, readv's vlen,
/// recvfrom's size). `flags_at`: offset of the syscall's flags argument, for the calls that
/// have one.
#[inline(always)]
fn try_enter_read(
    ctx: &TracePointContext,
    has_len: bool,
    flags_at: Option<usize>,
) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    let fd = field::<u64>(ctx, tp_layout::SYS_ENTER_FD) as u32;
    // FD_READER only counts targets' tracked sockets whose reads are counted in progress: it
    // is the target check too, and answers for every read on the host but those (Go's
    // sockets included: see `FD_SLOTS`).
    if !maybe_in(&FD_SLOTS, fd_slot(tgid, fd), FD_READER_BITS) {
        return Ok(0);
    }
    // A zero-length read returns before reaching the socket (sock_read_iter), so no
    // sock_recv would end it; nor does it wait for anything.
    if has_len && field::<u64>(ctx, tp_layout::SYS_ENTER_LEN) == 0 {
        return Ok(0);
    }
    let Some(mapping) = FD_SOCKS.get_ptr(&FdKey { tgid, fd }) else {
        return Ok(0);
    };
    // SAFETY: pointer from the lookup just made.
    let (sk, nonblocking) = unsafe { ((*mapping).sk & FD_SOCK_MASK, (*mapping).nonblocking) };
    let from_syscalls = reads_from_syscalls();
    // A read on a non-blocking socket returns at once (Go's park in the netpoller, not in
    // read()): nothing to count in progress, and sock_recv counts the read itself. On the
    // syscall path exit_read counts it, so it is noted all the same.
    if nonblocking != 0 && !from_syscalls {
        return Ok(0);
    }
    if sk == 0 {
        // The fd's socket was closed; the entry waits to be reused (see `FD_SOCKS`).
        return Ok(0);
    }
    let Some(conn) = CONNS.get_ptr_mut(&sk) else {
        return Ok(0);
    };
    // SAFETY: `conn` points into the CONNS entry just looked up.
    if !unsafe { owns(conn, tgid, fd) } {
        return Ok(0);
    }
    if from_syscalls {
        note_pending_read(ctx, tid, sk, flags_at)?;
    }
    // SAFETY: `conn` points into the CONNS entry just looked up.
    unsafe { (*conn).reads_inflight += 1 };
    Ok(0)
}

/// Syscall read path: notes the socket of the thread's read for `exit_read`.
#[inline(always)]
fn note_pending_read(
    ctx: &TracePointContext,
    tid: u32,
    sk: u64,
    flags_at: Option<usize>,
) -> Result<(), i64> {
    let mut pending = sk;
    if let Some(offset) = flags_at {
        // SAFETY: the flags field of this syscall record (checked by user space). The offset
        // differs per program, so this goes through a probe read rather than a direct context
        // load (the verifier wants a constant offset there).
        let flags: u64 = unsafe { ctx.read_at(offset) }.map_err(i64::from)?;
        if flags & MSG_PEEK as u64 != 0 {
            pending |= PEEK_TAG;
        }
    }
    // A thread's entry stays between its reads and is overwritten in place: a store instead
    // of an insert and a delete per read.
    let was_pending = match PENDING_READ.get_ptr_mut(&tid) {
        // SAFETY: pointer from the lookup just made; only this thread uses its entry.
        Some(slot) => unsafe { core::mem::replace(&mut *slot, pending) != NO_READ },
        None => {
            PENDING_READ.insert(&tid, &pending, 0).map_err(i64::from)?;
            false
        }
    };
    if !was_pending {
        filter_raise(&PENDING_READ_SLOTS, tid_slot(tid), 1);
    }
    Ok(())
}

#[inline(always)]
pub fn reads_from_syscalls() -> bool {
    read_global(&READS_FROM_SYSCALLS) != 0
}

/// `syscalls/sys_exit_{read,readv,recvfrom,recvmsg}`: the read syscall returned. Attached only
/// without `sock_recv_length` (`READS_FROM_SYSCALLS`): this is where the read is counted.
#[tracepoint]
pub fn exit_read(ctx: TracePointContext) -> u32 {
    try_exit_read(&ctx).unwrap_or(0)
}

fn try_exit_read(ctx: &TracePointContext) -> Result<u32, i64> {
    // PENDING_READ_SLOTS only counts threads in a read of a tracked socket: it is the target
    // check too, and answers for every read on the host but those.
    let (tgid, tid) = current_ids();
    if !maybe(&PENDING_READ_SLOTS, tid_slot(tid)) {
        return Ok(0);
    }
    let Some(slot) = PENDING_READ.get_ptr_mut(&tid) else {
        return Ok(0);
    };
    // SAFETY: pointer from the lookup just made; only this thread uses its entry.
    let pending = unsafe { *slot };
    if pending == NO_READ {
        return Ok(0);
    }
    // SAFETY: as above.
    unsafe { *slot = NO_READ };
    filter_lower(&PENDING_READ_SLOTS, tid_slot(tid), 1);
    let sk = pending & !PEEK_TAG;
    let Some(conn) = CONNS.get_ptr_mut(&sk) else {
        return Ok(0);
    };
    // SAFETY: `conn` points into the CONNS entry just looked up.
    unsafe {
        // An entry left by a thread that died mid-read, whose id now belongs to another
        // process, must not touch this socket's counters.
        if (*conn).tgid != tgid {
            return Ok(0);
        }
        if (*conn).reads_inflight > 0 {
            (*conn).reads_inflight -= 1;
        }
    }
    if pending & PEEK_TAG == 0 {
        let ret: i64 = field(ctx, tp_layout::SYS_EXIT_RET);
        record_read(sk, conn, ret);
    }
    Ok(0)
}
