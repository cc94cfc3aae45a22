//! close(): the process let go of a tracked socket's fd.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{tp_layout, ConnFlags, FdKey};

use crate::{
    maps::{CONNS, FD_NAMED, FD_SOCKS},
    sock::{current_ids, field},
};

/// `syscalls/sys_enter_close`: marks the socket closed by the process before tcp_close runs,
/// so the TCP_CLOSE that follows is known to be ours and not the upstream's reset.
#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    try_enter_close(&ctx).unwrap_or(0)
}

fn try_enter_close(ctx: &TracePointContext) -> Result<u32, i64> {
    // FD_SOCKS is keyed by (tgid, fd) and only holds targets' tracked sockets: its lookup is
    // the target check too.
    let (tgid, _) = current_ids();
    let fd: u64 = field(ctx, tp_layout::SYS_ENTER_FD);
    let key = FdKey {
        tgid,
        fd: fd as u32,
    };
    let Some(mapping) = FD_SOCKS.get_ptr_mut(&key) else {
        return Ok(0);
    };
    // SAFETY: pointer from the lookup just made.
    let sk = unsafe { *mapping } & !FD_NAMED;
    if sk == 0 {
        return Ok(0);
    }
    // The fd no longer names the socket; the entry stays for the fd number's next socket
    // (see `FD_SOCKS`). SAFETY: as above.
    unsafe { *mapping = 0 };
    if let Some(conn) = CONNS.get_ptr_mut(&sk) {
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: `conn` points into the CONNS entry just looked up.
        unsafe {
            (*conn).flags |= ConnFlags::CLOSED_BY_PROCESS;
            if (*conn).local_close_ns == 0 {
                (*conn).local_close_ns = now;
            }
        }
    }
    Ok(0)
}
