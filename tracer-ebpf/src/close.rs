//! close(): the process let go of a tracked socket's fd.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{tp_layout, ConnFlags, FdKey};

use crate::{
    maps::{CONNS, FD_SLOTS, FD_SOCKS, FD_SOCK_MASK},
    sock::{current_ids, fd_slot, field, maybe, owns},
};

/// `syscalls/sys_enter_close`: marks the socket closed by the process before tcp_close runs,
/// so the TCP_CLOSE that follows is known to be ours and not the upstream's reset.
#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    try_enter_close(&ctx).unwrap_or(0)
}

fn try_enter_close(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    let fd = field::<u64>(ctx, tp_layout::SYS_ENTER_FD) as u32;
    // Every close on the host passes here: the filter answers for nearly all of them.
    if !maybe(&FD_SLOTS, fd_slot(tgid, fd)) {
        return Ok(0);
    }
    let Some(mapping) = FD_SOCKS.get_ptr_mut(&FdKey { tgid, fd }) else {
        return Ok(0);
    };
    // SAFETY: pointer from the lookup just made.
    let sk = unsafe { (*mapping).sk } & FD_SOCK_MASK;
    if sk == 0 {
        return Ok(0);
    }
    // The fd no longer names the socket; the entry stays for the fd number's next socket
    // (see `FD_SOCKS`). SAFETY: as above.
    unsafe { (*mapping).sk = 0 };
    let Some(conn) = CONNS.get_ptr_mut(&sk) else {
        return Ok(0);
    };
    // SAFETY: `conn` points into the CONNS entry just looked up.
    if !unsafe { owns(conn, tgid, fd) } {
        return Ok(0);
    }
    // No clock here: tcp_close runs as this syscall returns, and the FIN_WAIT1 or LAST_ACK it
    // causes (or, for an abort, the TCP_CLOSE) records local_close_ns a few microseconds later
    // (state.rs).
    // SAFETY: as above.
    unsafe { (*conn).flags |= ConnFlags::CLOSED_BY_PROCESS };
    Ok(0)
}
