//! connect(): remember which fd a thread is connecting, so the socket that
//! `inet_sock_set_state` reports next on the same thread can be tied to it.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{helpers::generated as gen, macros::tracepoint, programs::TracePointContext};
use tracer_common::{tp_layout, TargetFlags, COMM_LEN};

use crate::{
    maps::{PENDING_CONNECT, TARGETS, TARGET_COMMS},
    sock::{connect_slot, current_ids, field, read_global},
};

/// Non-zero when user space asked to follow processes by name (`--comm`).
#[unsafe(no_mangle)]
static FOLLOW_COMMS: u32 = 0;

/// `syscalls/sys_enter_connect` (syscall tracepoints: Linux 2.6.37).
#[tracepoint]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    try_enter_connect(&ctx).unwrap_or(0)
}

fn try_enter_connect(ctx: &TracePointContext) -> Result<u32, i64> {
    // Noted for every connect on the host, target or not: an array store costs less than the
    // TARGETS lookup that would decide, and only a TCP connect reaches SYN_SENT, where
    // start_tracking makes that lookup once (state.rs).
    let (_, tid) = current_ids();
    let fd = field::<u64>(ctx, tp_layout::SYS_ENTER_FD) as u32;
    if let Some(slot) = PENDING_CONNECT.get_ptr_mut(connect_slot(tid)) {
        // SAFETY: pointer into the array map just looked up; one aligned 8-byte store, so a
        // reader sees this thread's fd or another thread's, never a mix.
        unsafe { *slot = u64::from(tid) << 32 | u64::from(fd) };
    }
    Ok(0)
}

/// A process whose name the user follows becomes a target at its first TCP connect.
#[inline(always)]
pub fn adopt_by_comm(tgid: u32) -> bool {
    if read_global(&FOLLOW_COMMS) == 0 {
        return false;
    }
    let mut comm = MaybeUninit::<[u8; COMM_LEN]>::uninit();
    // Into an uninitialised buffer: aya's wrapper would zero one with a memset call first.
    // SAFETY: the helper fills all `COMM_LEN` bytes (NUL-padded, or zeroed on failure).
    let comm = unsafe {
        if gen::bpf_get_current_comm(comm.as_mut_ptr().cast::<c_void>(), COMM_LEN as u32) != 0 {
            return false;
        }
        comm.assume_init()
    };
    if TARGET_COMMS.get_ptr(&comm).is_none() {
        return false;
    }
    TARGETS.insert(&tgid, &TargetFlags::BY_COMM, 0).is_ok()
}

/// `syscalls/sys_exit_connect`: the socket (if any) was tied to the fd while the call ran.
#[tracepoint]
pub fn exit_connect(_ctx: TracePointContext) -> u32 {
    // An array access for every connect on the host; the slot names its thread, so only this
    // thread's own pending connect is cleared.
    let (_, tid) = current_ids();
    if let Some(slot) = PENDING_CONNECT.get_ptr_mut(connect_slot(tid)) {
        // SAFETY: pointer into the array map just looked up (see `PENDING_CONNECT`).
        unsafe {
            if *slot != 0 && (*slot >> 32) as u32 == tid {
                *slot = 0;
            }
        }
    }
    0
}
