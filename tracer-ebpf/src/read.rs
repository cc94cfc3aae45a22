//! Reads on tracked sockets. A pooled or waiting Go connection's last read returned EAGAIN (a
//! goroutine waits on it); a leaked one's last read returned data and nothing reads again.
//! Counters stay in `CONNS`: no ring-buffer event per read.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{tp_layout, FdKey, Stat, MSG_PEEK};

use crate::{
    maps::{CONNS, FD_SOCKS, PENDING_READ},
    sock::{count, current_ids, is_target, sample_unread},
};

/// `sock/sock_recv_length` (Linux 6.3): every recvmsg on a socket, with its return value.
#[tracepoint]
pub fn sock_recv(ctx: TracePointContext) -> u32 {
    try_sock_recv(&ctx).unwrap_or(0)
}

fn try_sock_recv(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    if !is_target(tgid) {
        return Ok(0);
    }
    use tp_layout::sock_recv_length as tp;
    // SAFETY (reads): tracepoint fields at offsets checked by user space, via probe reads.
    let sk: u64 = unsafe { ctx.read_at(tp::SK) }.map_err(i64::from)?;
    let Some(conn) = CONNS.get_ptr_mut(&sk) else {
        return Ok(0);
    };
    let ret: i32 = unsafe { ctx.read_at(tp::RET) }.map_err(i64::from)?;
    let flags: i32 = unsafe { ctx.read_at(tp::FLAGS) }.map_err(i64::from)?;
    if flags & MSG_PEEK != 0 {
        return Ok(0);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `conn` points into the CONNS entry just looked up. Reads of one socket come from
    // one goroutine at a time in Go; a rare concurrent reader can only skew a counter.
    unsafe {
        (*conn).reads += 1;
        (*conn).last_read_ret = ret as i64;
        (*conn).last_read_ns = now;
        if ret > 0 {
            (*conn).bytes_read += ret as u64;
        }
    }
    sample_unread(sk, conn, now);
    count(Stat::ReadsSeen);
    Ok(0)
}

/// `syscalls/sys_enter_{read,readv,recvfrom,recvmsg}`: a read syscall starts on a target's fd.
/// Marks the socket as having a reader in the kernel: a thread blocked in read() is listening,
/// so its connection is not abandoned however long the upstream stays silent.
#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    try_enter_read(&ctx).unwrap_or(0)
}

fn try_enter_read(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if !is_target(tgid) {
        return Ok(0);
    }
    // SAFETY: the fd field of these syscall records, via a probe read.
    let fd: u64 = unsafe { ctx.read_at(tp_layout::SYS_ENTER_FD) }.map_err(i64::from)?;
    let key = FdKey { tgid, fd: fd as u32 };
    let Some(sk) = FD_SOCKS.get_ptr(&key) else {
        return Ok(0);
    };
    // SAFETY: pointer from the lookup just made.
    let sk = unsafe { *sk };
    let Some(conn) = CONNS.get_ptr_mut(&sk) else {
        return Ok(0);
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `conn` points into the CONNS entry just looked up.
    unsafe {
        if (*conn).reads_inflight == 0 {
            (*conn).read_inflight_since_ns = now;
        }
        (*conn).reads_inflight += 1;
    }
    PENDING_READ.insert(&tid, &sk, 0).map_err(i64::from)?;
    Ok(0)
}

/// `syscalls/sys_exit_{read,readv,recvfrom,recvmsg}`: the read syscall returned.
#[tracepoint]
pub fn exit_read(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_target(tgid) {
        return 0;
    }
    let Some(sk) = PENDING_READ.get_ptr(&tid) else {
        return 0;
    };
    // SAFETY: pointer from the lookup just made.
    let sk = unsafe { *sk };
    let _ = PENDING_READ.remove(&tid);
    if let Some(conn) = CONNS.get_ptr_mut(&sk) {
        // SAFETY: `conn` points into the CONNS entry just looked up.
        unsafe {
            if (*conn).reads_inflight > 0 {
                (*conn).reads_inflight -= 1;
            }
            if (*conn).reads_inflight == 0 {
                (*conn).read_inflight_since_ns = 0;
            }
        }
    }
    0
}
