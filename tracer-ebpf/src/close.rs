//! close(): the process let go of a tracked socket's fd. On kernels where the state change
//! tcp_close makes can read the syscall's fd from the thread's registers (state.rs), this
//! tracepoint is not attached.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{tp_layout, FdKey};

use crate::{
    maps::{FdSock, CLOSING, FD_MAPPED_BITS, FD_SLOTS, FD_SOCKS, FD_SOCK_MASK, WANT_SLOTS},
    sock::{current_ids, fd_slot, field, filter_lower, maybe_in, tid_slot, wants_first_bytes},
};

/// The fd no longer names the socket: clears its `FD_SOCKS` mapping (`mapping`, whose value
/// was `bits`; `slot` its filter slot). The entry stays for the fd number's next socket (see
/// `FD_SOCKS`).
#[inline(always)]
pub fn release_mapping(mapping: *mut FdSock, bits: u64, slot: u32) {
    // SAFETY: `mapping` points into the FD_SOCKS entry the caller just looked up.
    unsafe { (*mapping).sk = 0 };
    if wants_first_bytes(bits) {
        // Released before its first bytes were all taken (see `WANT_SLOTS`).
        filter_lower(&WANT_SLOTS, slot, 1);
    }
}

/// Releases the mapping of process `tgid`'s fd `fd` if it still names socket `sk` (another
/// tracked socket may have taken the fd number since).
#[inline(always)]
pub fn release_own_mapping(tgid: u32, fd: u32, sk: u64) {
    if let Some(mapping) = FD_SOCKS.get_ptr_mut(&FdKey { tgid, fd }) {
        // SAFETY: pointer from the lookup just made.
        let bits = unsafe { (*mapping).sk };
        if bits & FD_SOCK_MASK == sk {
            release_mapping(mapping, bits, fd_slot(tgid, fd));
        }
    }
}

/// `syscalls/sys_enter_close`: notes the socket closed by the process before tcp_close runs,
/// so the TCP_CLOSE that follows is known to be ours and not the upstream's reset.
#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    try_enter_close(&ctx).unwrap_or(0)
}

fn try_enter_close(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    let fd = field::<u64>(ctx, tp_layout::SYS_ENTER_FD) as u32;
    let slot = fd_slot(tgid, fd);
    // Every close on the host passes here: the filter answers for nearly all of them.
    if !maybe_in(&FD_SLOTS, slot, FD_MAPPED_BITS) {
        return Ok(0);
    }
    let Some(mapping) = FD_SOCKS.get_ptr_mut(&FdKey { tgid, fd }) else {
        return Ok(0);
    };
    // SAFETY: pointer from the lookup just made.
    let bits = unsafe { (*mapping).sk };
    let sk = bits & FD_SOCK_MASK;
    if sk == 0 {
        return Ok(0);
    }
    release_mapping(mapping, bits, slot);
    // No CONNS lookup here: tcp_close runs in this thread before it returns to user space,
    // and the state change it makes (FIN_WAIT1, LAST_ACK, or TCP_CLOSE for an abort) marks
    // the socket closed by the process and takes the time, with the entry in hand (state.rs).
    if let Some(slot) = CLOSING.get_ptr_mut(tid_slot(tid)) {
        // SAFETY: pointer into the array map just looked up.
        unsafe {
            (*slot).tid = tid;
            (*slot).sk = sk;
        }
    }
    Ok(0)
}
