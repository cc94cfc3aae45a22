//! Every map of the eBPF side. All are bounded; maps whose entries can be orphaned (a missed
//! close, a thread that died mid-syscall) are LRU so they can never fill up for good.
//!
//! Cost model, measured on the 2-vCPU development VM under `cargo xtask bench` load (bpf_stats
//! on): a program that returns at once costs about 70 ns, and every cache line it touches that
//! the load has evicted adds 40–100 ns. A hash lookup touches several (the table, a bucket, an
//! element) behind a helper call and a hash; an array lookup, which the verifier inlines, one.
//! The hooks fire for every process and socket on the host, nearly all of them untracked, so
//! each hash map that they look up is guarded by a counting filter (`*_SLOTS`): a small array
//! of counters indexed by a hash of the key, where zero means "no entry with a key in this
//! slot". The counters are only ever too high (a false positive costs the lookup that was
//! saved), never too low: each is raised before its entry exists and lowered once, on the one
//! path that removes it.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    ConnInfo, FdKey, FirstBytesEvent, COMM_LEN, EVENTS_RING_BYTES, MAX_CONNS, MAX_FD_SOCKS,
    MAX_PENDING, MAX_TARGETS, MAX_TARGET_COMMS, STAT_COUNT,
};

/// tgid -> TargetFlags. Filled by user space (and by state.rs at a followed comm's first TCP
/// connect).
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

/// (tgid, fd) -> the socket and what the fd-based syscalls (read, write, close) need about it.
/// Made only for a socket that one of those hooks will look up (`state::fd_mapping_wanted`,
/// `ConnFlags::FD_MAPPED`): none for a Go relay's sockets on a kernel that takes first bytes
/// and reads by socket and close()'s fd from the registers. close() sets `sk` to 0 rather
/// than deleting the entry, and the next tracked connect on that
/// fd number (Go reuses the lowest free one) overwrites it in place: a store instead of a
/// delete and an insert per connection. A socket that ends while its fd is still open clears
/// its own mapping at TCP_CLOSE. Stale entries cost nothing but their slot, and LRU reclaims
/// those.
#[map]
pub static FD_SOCKS: LruHashMap<FdKey, FdSock> = LruHashMap::with_max_entries(MAX_FD_SOCKS, 0);

/// Value of `FD_SOCKS`. Writes touches `sk` (its `FD_NAMED` bit) and the counters, reads
/// `nonblocking`, each with plain stores to its own fields, so neither undoes the other.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FdSock {
    /// The socket address and the `FD_NAMED` bit; 0 once the fd was closed.
    pub sk: u64,
    /// Bytes of the first writes that went to user space for naming (write.rs), at most
    /// FIRST_BYTES_MAX.
    pub captured_bytes: u32,
    /// Those writes, at most FIRST_BYTES_WRITES.
    pub captured_writes: u16,
    /// Non-zero when the socket's last read did not wait (MSG_DONTWAIT: a non-blocking socket,
    /// as every Go socket is), so the next one will not either: `enter_read` does not count
    /// it in progress (read.rs).
    pub nonblocking: u16,
    /// The socket's `ConnInfo::connect_ns`, sent with its first bytes (write.rs).
    pub connect_ns: u64,
}

/// `FdSock::sk`'s parts (the socket address, the `FD_NAMED` bit), and whether the mapping
/// still wants first bytes: in tracer-common, where they are unit-tested.
pub use tracer_common::fd_sock::{wants_first_bytes, FD_NAMED, FD_SOCK_MASK};

/// Slots of each counting filter (a power of two). Small on purpose: a filter is only cheap
/// while its slots stay in the cache and its pages in the TLB (at 2^17 slots, a filter load
/// was the dearest instruction of sock_recv). With thousands of tracked sockets more slots are
/// taken and more untracked calls fall through to the lookup, which is only what they cost
/// without a filter.
pub const SLOT_BITS: u32 = 14;
pub const SLOTS: u32 = 1 << SLOT_BITS;

/// Slots of `PENDING_CONNECT` (a power of two): threads connecting at the same moment whose
/// ids are equal modulo this collide.
pub const CONNECT_SLOTS: u32 = 1 << 16;

/// Two counting filters by socket address (`sock::sock_slot`) in one array, so that the
/// state, read and send hooks of one socket share the slot's cache line: the low 16 bits
/// (`SOCK_TRACKED`) count `CONNS` entries, raised when tracking starts and lowered when it
/// ends (state.rs); the high 16 bits (`SOCK_WANT`) count those whose first bytes are still
/// wanted when they are copied at `tcp_sendmsg_locked` (write.rs), raised with the low half
/// and lowered once, when the socket's share is taken (`ConnFlags::NAMED`) or its tracking
/// ends. Both change under the socket's lock (sendmsg holds it; state changes wait for it),
/// so neither count can go one too low. A send on any other socket, or on a connection
/// already named, costs the load of this slot. Each half holds at most the tracked sockets in
/// its slot, far below 2^16 (MAX_CONNS / SLOTS is 16), so neither carries into the other;
/// the tracked check reads the whole slot (a wanted socket is a tracked one).
#[map]
pub static SOCK_SLOTS: Array<u32> = Array::with_max_entries(SLOTS, 0);

/// Two counting filters by (tgid, fd) (`sock::fd_slot`) in one array, so that the read, write
/// and close hooks of one fd share the slot's cache line: the low 16 bits (`FD_MAPPED`) count
/// the tracked sockets whose fd is mapped (`FD_SOCKS`), raised when the mapping is made (at
/// connect, or at the first read that waits, read.rs) and lowered when tracking ends
/// (state.rs), so they never depend on seeing close(), and guard `FD_SOCKS` for writes and
/// close(); the high 16 bits (`FD_READER`) count those whose reads `enter_read` counts in
/// progress (`ConnFlags::READS_COUNTED`): sockets whose reads may wait, and every one on the
/// syscall read path. A Go process's reads never pass the high half. Each half holds at most
/// the tracked sockets in its slot, far below 2^16 (MAX_FD_SOCKS / SLOTS is 16), so neither
/// carries into the other.
#[map]
pub static FD_SLOTS: Array<u32> = Array::with_max_entries(SLOTS, 0);

/// Counting filter by (tgid, fd) (`sock::fd_slot`) of the tracked sockets whose first bytes
/// are still wanted: raised with `FD_MAPPED` when tracking starts, lowered when the mapping
/// stops wanting them (write.rs marks it `FD_NAMED`, close() or the socket's end clears it,
/// or the fd number's next connection replaces it). The write hooks look only at this: a
/// write on a connection already named (every write of a keep-alive connection after its
/// first two) costs this one array load, as a write on any other fd does, instead of an
/// `FD_SOCKS` lookup more. Its own array, not a third part of `FD_SLOTS`: a count that went
/// one too low (see write.rs) must not borrow from another filter.
#[map]
pub static WANT_SLOTS: Array<u32> = Array::with_max_entries(SLOTS, 0);

/// Slot `fd_slot(tgid, fd)`: how many tracked connects and closes of the fds in that slot the
/// state program has seen (wrapping), counted only with the call-site probes loaded
/// (`sock::bump_fd_gen`). The HTTP/1.1 call-site probe keeps the fd it followed a
/// `persistConn` to with the count then (gosite.rs `GO_SITE_CONNS`): a count that moved
/// means that fd may name another socket now, and the probe follows the connection again.
#[map]
pub static FD_GENS: Array<u32> = Array::with_max_entries(SLOTS, 0);

/// `SOCK_SLOTS` halves (see there): one of each, as the amount to add, and the high half's
/// bits.
pub const SOCK_TRACKED: u32 = 1;
pub const SOCK_WANT: u32 = 1 << 16;
pub const SOCK_WANT_BITS: u32 = 0xffff_0000;

/// `FD_SLOTS` halves (see there): one of each, as the amount to add.
pub const FD_MAPPED: u32 = 1;
pub const FD_READER: u32 = 1 << 16;
/// `FD_SLOTS` halves, as the bits that hold them.
pub const FD_MAPPED_BITS: u32 = 0xffff;
pub const FD_READER_BITS: u32 = 0xffff_0000;

/// Slot `tid % CONNECT_SLOTS`: the thread and the fd of a connect() in progress, as
/// `tid << 32 | fd`, or 0. A direct-mapped table rather than a hash map: connect() and the
/// SYN_SENT it causes pay an array access instead of a hash insert, delete and lookup, and it
/// cannot fill up. Two threads whose ids collide here and connect at the same moment make one
/// of the connections untied to its fd (never tied to a wrong one: the slot names its thread).
#[map]
pub static PENDING_CONNECT: Array<u64> = Array::with_max_entries(CONNECT_SLOTS, 0);

/// Thread id -> socket of a read syscall in progress on a tracked socket, or 0 (syscall read
/// path only, see read.rs). A thread's entry is kept between its reads and rewritten in place;
/// LRU reclaims the entries of threads that are gone.
#[map]
pub static PENDING_READ: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_PENDING, 0);

/// Counting filter of the non-zero `PENDING_READ` values, by thread id (`sock::tid_slot`).
#[map]
pub static PENDING_READ_SLOTS: Array<u32> = Array::with_max_entries(SLOTS, 0);

/// Slot `tid % SLOTS`: the socket a thread's close() let go of (close.rs), so that the state
/// change tcp_close makes right after in that thread's context (FIN_WAIT1, LAST_ACK, or
/// TCP_CLOSE for an abort) marks it `CLOSED_BY_PROCESS` with the `CONNS` entry it has in hand,
/// rather than close() looking the entry up itself.
#[map]
pub static CLOSING: Array<Closing> = Array::with_max_entries(SLOTS, 0);

/// Value of `CLOSING`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Closing {
    pub sk: u64,
    pub tid: u32,
    pub _pad: u32,
}

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// One first-bytes record per CPU, filled before it goes to `EVENTS` with only its used bytes
/// (`bpf_ringbuf_output`): an HTTP request head is a tenth of the 1 KiB a reserved record
/// takes, and ring space is what a burst of new connections runs out of.
#[map]
pub static FIRST_BYTES_SCRATCH: PerCpuArray<FirstBytesEvent> = PerCpuArray::with_max_entries(1, 0);
