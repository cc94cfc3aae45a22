//! Every map of the eBPF side. All are bounded; maps whose entries can be orphaned (a missed
//! close, a thread that died mid-syscall) are LRU so they can never fill up for good.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    ConnInfo, FdKey, COMM_LEN, EVENTS_RING_BYTES, MAX_CONNS, MAX_FD_SOCKS, MAX_PENDING,
    MAX_TARGETS, MAX_TARGET_COMMS, STAT_COUNT,
};

/// tgid -> TargetFlags. Filled by user space (and by `connect` for followed comms).
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Process names to follow: a process with one of these comms becomes a target at its first
/// connect, so a relay that restarts is traced from its first request.
#[map]
pub static TARGET_COMMS: HashMap<[u8; COMM_LEN], u8> =
    HashMap::with_max_entries(MAX_TARGET_COMMS, 0);

/// Socket address -> what we know about that upstream connection. Entries are removed when
/// the socket reaches TCP_CLOSE (state.rs), the one cleanup path.
#[map]
pub static CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// (tgid, fd) -> socket address, so fd-based syscalls (read, write, close) find the socket.
/// Bit 0 of the value is `FD_NAMED`. close() sets the value to 0 rather than deleting the
/// entry, and the next tracked connect on that fd number (Go reuses the lowest free one)
/// overwrites it in place: a store instead of a delete and an insert per connection. Stale
/// entries cost nothing but their slot, and LRU reclaims those.
#[map]
pub static FD_SOCKS: LruHashMap<FdKey, u64> = LruHashMap::with_max_entries(MAX_FD_SOCKS, 0);

/// Bit 0 of an `FD_SOCKS` value: the connection's first bytes were taken (or its share of them
/// used up), so writes need nothing more. Free because socket addresses are slab objects
/// aligned to at least 8 bytes.
pub const FD_NAMED: u64 = 1;

/// Thread id -> fd of a connect() in progress, or `NO_CONNECT`. A target thread's entry is
/// kept between its connects and rewritten in place (Go runs connects on a few long-lived
/// threads); LRU reclaims the entries of threads that are gone.
#[map]
pub static PENDING_CONNECT: LruHashMap<u32, u32> = LruHashMap::with_max_entries(MAX_PENDING, 0);

/// A `PENDING_CONNECT` value: the thread is not in a connect().
pub const NO_CONNECT: u32 = u32::MAX;

/// Thread id -> socket of a read syscall in progress on a tracked socket, or 0. Kept and
/// rewritten in place like `PENDING_CONNECT`.
#[map]
pub static PENDING_READ: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_PENDING, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);
