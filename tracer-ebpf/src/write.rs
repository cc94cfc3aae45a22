//! The first bytes a target writes on a tracked socket: the TLS ClientHello or the HTTP/1.x
//! request head, from which user space takes the server name (SNI) or the Host header and
//! drops the rest at once. At most FIRST_BYTES_WRITES writes and FIRST_BYTES_MAX bytes per
//! connection are copied, once.
//!
//! Two ways, chosen per kernel by the loader:
//! - `tcp/tcp_sendmsg_locked` (`sock_send`): every TCP send, keyed by socket. A send on a
//!   socket whose first bytes are not wanted costs one filter load (the high half of
//!   `SOCK_SLOTS`, whose slot the socket's read and state hooks load too).
//! - the write syscalls' entries (any kernel with syscall tracepoints), keyed by fd: a write on
//!   an fd that is not a tracked socket whose first bytes are still wanted costs one filter load
//!   (`WANT_SLOTS`), a connection already named included; only the first writes of a new
//!   connection look its `FD_SOCKS` mapping up.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user, generated as gen},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use core::{ffi::c_void, mem::size_of};
use tracer_common::{
    tp_layout, ConnFlags, EventKind, FdKey, FirstBytesEvent, Stat, FIRST_BYTES_HEADER,
    FIRST_BYTES_MAX, FIRST_BYTES_WRITES,
};

use crate::{
    maps::{
        FdSock, CONNS, EVENTS, FD_NAMED, FD_SOCKS, FD_SOCK_MASK, FIRST_BYTES_SCRATCH, SOCK_SLOTS,
        SOCK_WANT, SOCK_WANT_BITS, WANT_SLOTS,
    },
    sock::{
        count, current_ids, fd_slot, field, filter_lower, maybe, maybe_in, read_global, sock_slot,
        wakeup_flag, wants_first_bytes,
    },
};

/// `struct iovec` (include/uapi/linux/uio.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Offset of `msg_iov` in `struct user_msghdr` (include/linux/socket.h): after the name
/// pointer and the int name length, padded to 8.
const MSGHDR_IOV: u64 = 16;

/// `syscalls/sys_enter_write` and `syscalls/sys_enter_sendto`: (fd, buf, len).
#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    try_enter_write(&ctx).unwrap_or(0)
}

fn try_enter_write(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((mapping, slot)) = unnamed_socket(ctx) else {
        return Ok(0);
    };
    let buf: u64 = field(ctx, tp_layout::SYS_ENTER_BUF);
    let len: u64 = field(ctx, tp_layout::SYS_ENTER_LEN);
    capture(mapping, slot, buf, len)
}

/// `syscalls/sys_enter_writev`: (fd, iovec array, count); the first iovec is looked at.
#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    try_enter_writev(&ctx).unwrap_or(0)
}

fn try_enter_writev(ctx: &TracePointContext) -> Result<u32, i64> {
    let vlen: u64 = field(ctx, tp_layout::SYS_ENTER_LEN);
    if vlen == 0 {
        return Ok(0);
    }
    let Some((mapping, slot)) = unnamed_socket(ctx) else {
        return Ok(0);
    };
    let vec: u64 = field(ctx, tp_layout::SYS_ENTER_BUF);
    // SAFETY: the iovec is user memory, read with bpf_probe_read_user, which fails cleanly on
    // a bad pointer.
    let iov: Iovec = unsafe { bpf_probe_read_user(vec as *const Iovec) }.map_err(i64::from)?;
    capture(mapping, slot, iov.base, iov.len)
}

/// `syscalls/sys_enter_sendmsg`: (fd, user_msghdr); the first iovec is looked at.
#[tracepoint]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    try_enter_sendmsg(&ctx).unwrap_or(0)
}

fn try_enter_sendmsg(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((mapping, slot)) = unnamed_socket(ctx) else {
        return Ok(0);
    };
    let msg: u64 = field(ctx, tp_layout::SYS_ENTER_BUF);
    // SAFETY: the msghdr and iovec are user memory, read with bpf_probe_read_user, which fails
    // cleanly on a bad pointer.
    let iov_ptr: u64 =
        unsafe { bpf_probe_read_user((msg + MSGHDR_IOV) as *const u64) }.map_err(i64::from)?;
    let iov: Iovec = unsafe { bpf_probe_read_user(iov_ptr as *const Iovec) }.map_err(i64::from)?;
    capture(mapping, slot, iov.base, iov.len)
}

/// The `FD_SOCKS` value of the written fd, and its `WANT_SLOTS` slot, when it is a tracked
/// socket whose first bytes are still wanted. Any other write (an unrelated process's, one on
/// an untracked fd, one on a connection already named) costs the filter load alone, or the
/// lookup too on a false positive.
#[inline(always)]
fn unnamed_socket(ctx: &TracePointContext) -> Option<(*mut FdSock, u32)> {
    let (tgid, _) = current_ids();
    let fd = field::<u64>(ctx, tp_layout::SYS_ENTER_FD) as u32;
    // WANT_SLOTS only counts targets' tracked sockets still to be named: it is the target
    // check too, and answers for every write on the host but those.
    let slot = fd_slot(tgid, fd);
    if !maybe(&WANT_SLOTS, slot) {
        return None;
    }
    let mapping = FD_SOCKS.get_ptr_mut(&FdKey { tgid, fd })?;
    // SAFETY: pointer from the lookup just made.
    if !wants_first_bytes(unsafe { (*mapping).sk }) {
        return None;
    }
    Some((mapping, slot))
}

/// Marks the mapping `FD_NAMED` (its share of first bytes is taken) and lowers its
/// `WANT_SLOTS` count, unless the mapping changed since `bits` was read from it: then close()
/// or the socket's end cleared it, or the fd number's next connection replaced it, and that
/// path lowered the count (each lowers it only for a mapping that still wants first bytes).
/// Writes and close() of one fd do not overlap in Go (its fd mutex), but the socket's end can
/// come from a reset on another CPU: the check narrows that window to these few
/// instructions; a race inside them lowers the slot once too often, which can only cost a
/// later connection in the same slot its name (and a count at 0 wraps to "maybe" for good).
#[inline(always)]
fn mark_named(mapping: *mut FdSock, bits: u64, slot: u32) {
    // SAFETY: `mapping` points into the FD_SOCKS entry the caller looked up; the volatile
    // read is a fresh load of what other paths may have stored since.
    unsafe {
        if core::ptr::read_volatile(&(*mapping).sk) != bits {
            return;
        }
        (*mapping).sk = bits | FD_NAMED;
    }
    filter_lower(&WANT_SLOTS, slot, 1);
}

/// Copies the first bytes of a write on the socket `mapping` (an `FD_SOCKS` value) names, and
/// marks the mapping `FD_NAMED` once the connection's share is taken. The counters are in the
/// mapping, so this needs no `CONNS` lookup. `slot`: the mapping's `WANT_SLOTS` slot.
#[inline(always)]
fn capture(mapping: *mut FdSock, slot: u32, buf: u64, len: u64) -> Result<u32, i64> {
    // SAFETY: `mapping` points into the FD_SOCKS entry the caller just looked up.
    let (bits, writes, taken, connect_ns) = unsafe {
        (
            (*mapping).sk,
            (*mapping).captured_writes,
            (*mapping).captured_bytes,
            (*mapping).connect_ns,
        )
    };
    let sk = bits & FD_SOCK_MASK;
    if writes >= FIRST_BYTES_WRITES || taken as usize >= FIRST_BYTES_MAX {
        mark_named(mapping, bits, slot);
        return Ok(0);
    }
    let Some(copied) = send_first_bytes(sk, connect_ns, taken, buf, len) else {
        return Ok(0);
    };
    let (writes, taken) = (writes + 1, taken + copied);
    // SAFETY: as above.
    unsafe {
        (*mapping).captured_writes = writes;
        (*mapping).captured_bytes = taken;
    }
    if writes >= FIRST_BYTES_WRITES || taken as usize >= FIRST_BYTES_MAX {
        mark_named(mapping, bits, slot);
    }
    Ok(0)
}

/// Sends up to `len` bytes at user address `buf` (the next bytes a tracked socket `sk`
/// sends, after the `taken` already sent) to user space as a first-bytes record; returns how
/// many went, or None when nothing did (an empty write, a full ring).
#[inline(always)]
fn send_first_bytes(sk: u64, connect_ns: u64, taken: u32, buf: u64, len: u64) -> Option<u32> {
    if len == 0 || taken as usize >= FIRST_BYTES_MAX {
        return None;
    }
    let room = (FIRST_BYTES_MAX - taken as usize) as u64;
    let n = if len < room { len } else { room };
    // Restated so the verifier sees the bound on the size it checks against the record. The
    // volatile read keeps LLVM from dropping the check as redundant: verifiers before Linux
    // 6.7 learn nothing from comparing two unknown registers (`len < room`), only from a
    // comparison with a constant ("R2 min value is negative" on 6.1 otherwise).
    // SAFETY: a read of a local through a valid reference.
    let mut n = unsafe { core::ptr::read_volatile(&n) };
    if n > FIRST_BYTES_MAX as u64 {
        n = FIRST_BYTES_MAX as u64;
    }
    let event = FIRST_BYTES_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `event` is this CPU's scratch record (programs on one CPU do not preempt each
    // other); the copy size is at most the size of `data`; bpf_probe_read_user fails cleanly
    // (and zero-fills) on a bad pointer.
    let copied = unsafe {
        (*event).kind = EventKind::FirstBytes as u32;
        (*event).sk = sk;
        (*event).connect_ns = connect_ns;
        let ret = gen::bpf_probe_read_user(
            (*event).data.as_mut_ptr() as *mut c_void,
            n as u32,
            buf as *const c_void,
        );
        (*event).len = if ret == 0 { n as u32 } else { 0 };
        (*event).len
    };
    // Header plus the bytes copied, bounded for the verifier as `n` is above.
    // SAFETY: a read of a local through a valid reference.
    let mut used =
        unsafe { core::ptr::read_volatile(&(FIRST_BYTES_HEADER as u64 + u64::from(copied))) };
    if used > size_of::<FirstBytesEvent>() as u64 {
        used = size_of::<FirstBytesEvent>() as u64;
    }
    // SAFETY: `used` bytes from the start of the scratch record stay inside it.
    let record = unsafe { core::slice::from_raw_parts(event as *const u8, used as usize) };
    if EVENTS.output::<[u8]>(record, wakeup_flag()).is_err() {
        count(Stat::FirstBytesDrops);
        return None;
    }
    Some(copied)
}

/// Non-zero when the loader attached `sock_send` (first bytes by socket, at
/// `tcp_sendmsg_locked`) instead of the write syscalls' programs.
#[unsafe(no_mangle)]
static WRITES_FROM_SOCK: u32 = 0;

/// Where the bytes a `struct msghdr` sends start, from the running kernel's BTF (see
/// `tracer_common::global_names`).
#[unsafe(no_mangle)]
static MSG_ITER_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static ITER_TYPE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static ITER_IOV_OFFSET_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static ITER_UBUF_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static ITER_COUNT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static ITER_UBUF: u32 = 0;
#[unsafe(no_mangle)]
static ITER_IOVEC: u32 = 0;

/// True when first bytes are taken by socket at `tcp_sendmsg_locked`.
#[inline(always)]
pub fn writes_from_sock() -> bool {
    read_global(&WRITES_FROM_SOCK) != 0
}

/// `tcp/tcp_sendmsg_locked` as a raw tracepoint: `(struct sock *sk, struct msghdr *msg,
/// struct sk_buff *skb, int size_goal)` (user space checks that prototype in the kernel's
/// BTF), called in tcp_sendmsg_locked's copy loop before each chunk of the message is copied,
/// with the socket locked. Every TCP send on the host, whatever syscall made it, and nothing
/// else: unlike the write syscalls' tracepoints, attaching it does not send every syscall of
/// every process through the kernel's slow syscall path.
#[raw_tracepoint(tracepoint = "tcp_sendmsg_locked")]
pub fn sock_send(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let msg: u64 = ctx.arg(1);
    let _ = try_sock_send(sk, msg);
    0
}

fn try_sock_send(sk: u64, msg: u64) -> Result<u32, i64> {
    // The one load nearly every send on the host costs: only a target's tracked socket still
    // to be named passes.
    let slot = sock_slot(sk);
    if !maybe_in(&SOCK_SLOTS, slot, SOCK_WANT_BITS) {
        return Ok(0);
    }
    let conn = CONNS.get_ptr_mut(&sk).ok_or(0)?;
    // SAFETY: `conn` points into the CONNS entry just looked up; the socket is locked, so its
    // state changes (and the entry's removal at TCP_CLOSE) wait for this send.
    let (flags, writes, taken, connect_ns) = unsafe {
        (
            (*conn).flags,
            (*conn).captured_writes,
            (*conn).captured_bytes,
            (*conn).connect_ns,
        )
    };
    if flags & ConnFlags::NAMED != 0 {
        return Ok(0);
    }
    let (buf, len) = unsent_bytes(msg).ok_or(0)?;
    // Not counted when nothing went (an empty chunk, a full ring): the next send tries again.
    let copied = send_first_bytes(sk, connect_ns, taken, buf, len).ok_or(0)?;
    let (writes, taken) = (writes + 1, taken + copied);
    // SAFETY: as above.
    unsafe {
        (*conn).captured_writes = writes;
        (*conn).captured_bytes = taken;
        if writes >= FIRST_BYTES_WRITES || taken as usize >= FIRST_BYTES_MAX {
            (*conn).flags |= ConnFlags::NAMED;
            filter_lower(&SOCK_SLOTS, slot, SOCK_WANT);
        }
    }
    Ok(0)
}

/// The user memory the next chunk of `msg` comes from: (address, length), for a message from
/// a write, send or sendmsg of user memory (`ITER_UBUF`, or the current iovec of an
/// `ITER_IOVEC`); None for kernel memory (kTLS, splice) or a failed read.
#[inline(always)]
fn unsent_bytes(msg: u64) -> Option<(u64, u64)> {
    let iter = msg + u64::from(read_global(&MSG_ITER_OFFSET));
    // SAFETY: kernel memory read with bpf_probe_read_kernel, which checks the address and
    // fails cleanly; `msg` is the message tcp_sendmsg_locked is copying from.
    unsafe {
        let kind: u8 =
            bpf_probe_read_kernel((iter + u64::from(read_global(&ITER_TYPE_OFFSET))) as *const u8)
                .ok()?;
        let offset: u64 = bpf_probe_read_kernel(
            (iter + u64::from(read_global(&ITER_IOV_OFFSET_OFFSET))) as *const u64,
        )
        .ok()?;
        let count: u64 = bpf_probe_read_kernel(
            (iter + u64::from(read_global(&ITER_COUNT_OFFSET))) as *const u64,
        )
        .ok()?;
        let base: u64 =
            bpf_probe_read_kernel((iter + u64::from(read_global(&ITER_UBUF_OFFSET))) as *const u64)
                .ok()?;
        let kind = u32::from(kind);
        if kind == read_global(&ITER_UBUF) {
            // `ubuf` is the whole buffer, `iov_offset` how far the copy has come.
            return Some((base + offset, count));
        }
        if kind != read_global(&ITER_IOVEC) {
            return None;
        }
        // `__iov` (where `ubuf` is) points at the current iovec, `iov_offset` into it.
        let iov: Iovec = bpf_probe_read_kernel(base as *const Iovec).ok()?;
        if offset >= iov.len {
            return None;
        }
        let left = iov.len - offset;
        Some((iov.base + offset, if left < count { left } else { count }))
    }
}
