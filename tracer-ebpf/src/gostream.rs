//! HTTP/2 client connections inside a target's Go binary (issue 12): one uprobe, attached by
//! user space per target process at the entry of Go's h2 `(*ClientConn).readLoop` (goprobe
//! found it and checked its prologue; never uretprobes: Go moves goroutine stacks, and a
//! uretprobe's return-address rewrite would corrupt them).
//!
//! The read loop runs once per connection, for the connection's whole life, so this costs one
//! hit per connection and nothing per request or per read. It records the `*ClientConn` (and
//! its socket fd) in `GO_CONNS`; user space reads each recorded connection's `streams` map and
//! its streams out of the process's memory at every sample (goprobe/h2mem.rs) and removes the
//! entry once the connection is closed.
//!
//! Go's register ABI (Go 1.17+, internal/abi and the ABIInternal spec): integer arguments and
//! results in RAX, RBX, RCX, RDI, RSI, R8-R11 (a method's receiver first), the current g in
//! R14, which holds it at every entry and RET of a Go function.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::bpf_ktime_get_ns,
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap},
    programs::ProbeContext,
};
use tracer_common::go::{GoConnInfo, GoConnKey, GoProcess, MAX_GO_CONNS, MAX_GO_PROCS};

use crate::{
    goconn::{self, field_at, ConnChain},
    sock::current_ids,
};

/// BPF_F_NO_COMMON_LRU (uapi/linux/bpf.h): each CPU keeps its own LRU list, so an insert
/// takes no lock shared by every CPU. A stream's entry is made on one CPU and may be removed
/// on another, which this allows; eviction is per CPU (a CPU evicts among the entries it made),
/// which only matters when the map is full.
const NO_COMMON_LRU: u32 = 1 << 1;

/// tgid -> where this process's Go structs keep what the probes read (from goprobe, per Go
/// version). Filled by user space when it attaches the probes to the process, removed when it
/// detaches them: the one lookup every probe makes first, so a process that is not (or no
/// longer) a probed target costs that lookup and nothing more.
#[map]
pub static GO_PROCS: HashMap<u32, GoProcess> = HashMap::with_max_entries(MAX_GO_PROCS, 0);

/// (tgid, `*ClientConn`) -> when its read loop started and its socket fd. Removed by user
/// space when the connection is closed (or its process is gone); LRU for connections whose
/// end was missed (a target killed).
#[map]
pub static GO_CONNS: LruHashMap<GoConnKey, GoConnInfo> =
    LruHashMap::with_max_entries(MAX_GO_CONNS, NO_COMMON_LRU);

/// CLOCK_MONOTONIC, as every record of the kernel side.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: bpf_ktime_get_ns takes nothing and only reads the clock.
    unsafe { bpf_ktime_get_ns() }
}

/// The registers at the probe.
#[inline(always)]
fn regs(ctx: &ProbeContext) -> *const pt_regs {
    ctx.regs
}

/// RAX: the receiver at an entry, the first result at a RET.
#[inline(always)]
fn rax(ctx: &ProbeContext) -> u64 {
    // SAFETY: a uprobe program's context is the pt_regs of the probed task, which the
    // verifier lets it read directly.
    unsafe { (*regs(ctx)).rax }
}

/// The socket fd under a client connection: its `tconn` (a `*tls.Conn`, or a `*net.TCPConn`
/// for cleartext h2) followed to the socket (goconn.rs), or -1.
#[inline(always)]
fn conn_fd(layout: &GoProcess, cc: u64) -> i32 {
    let chain = ConnChain {
        tls_conn: layout.tls_conn,
        tcp_conn_fd: layout.tcp_conn_fd,
        netfd_sysfd: layout.netfd_sysfd,
        tls_conn_type_hash: layout.tls_conn_type_hash,
        tcp_conn_type_hash: layout.tcp_conn_type_hash,
    };
    // Once per HTTP/2 connection: no itabs kept between hits.
    let mut known = [0; 2];
    field_at(cc, layout.conn_tconn)
        .and_then(|tconn| goconn::conn_fd(tconn, &chain, &mut known))
        .unwrap_or(-1)
}

/// The probed process's layout: the filter every probe starts with.
#[inline(always)]
fn layout_of(tgid: u32) -> Option<GoProcess> {
    // SAFETY: a copy of the value out of the map entry just found.
    GO_PROCS.get_ptr(&tgid).map(|p| unsafe { *p })
}

/// Entry of `(*ClientConn).readLoop(cc)` (Go 1.21-1.26: net/http's `(*http2ClientConn)`;
/// 1.27: net/http/internal/http2's): a new HTTP/2 client connection. RAX = cc.
#[uprobe]
pub fn enter_h2_read_loop(ctx: ProbeContext) -> u32 {
    let (tgid, _) = current_ids();
    let Some(layout) = layout_of(tgid) else {
        return 0;
    };
    let cc = rax(&ctx);
    if cc == 0 {
        return 0;
    }
    let info = GoConnInfo {
        opened_ns: now(),
        fd: conn_fd(&layout, cc),
        _pad: 0,
    };
    let key = GoConnKey {
        tgid,
        _pad: 0,
        conn: cc,
    };
    // A full map evicts its oldest entry (LRU); nothing to count here.
    let _ = GO_CONNS.insert(&key, &info, 0);
    0
}
