//! tracer's kernel side: follows every TCP connection a target process opens, from connect to
//! close, and hands lifecycle changes to user space. Per-read counters stay in `CONNS`.
//!
//! Only tracepoints and syscall tracepoints are used: they exist on every kernel we target,
//! including ones built without kprobes or fentry. One module per hook family.
#![no_std]
#![no_main]
// `atomic_xadd` for the counting filters (sock.rs): the BPF target's atomic types have no
// fetch_add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod close;
mod connect;
mod goconn;
mod gosite;
mod gostream;
mod maps;
mod read;
mod sock;
mod state;
mod write;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so this never runs.
    loop {}
}

/// GPL-compatible: bpf_probe_read_kernel and the tracepoints we use require it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
