//! TCP state changes: a target's connect starts tracking (SYN_SENT), the upstream's FIN shows
//! as CLOSE_WAIT, the process's close as FIN_WAIT1/LAST_ACK, and TCP_CLOSE ends tracking.
//! Only the end (Close) is a ring-buffer event, with the whole record; the other changes are
//! written to `CONNS`, which user space samples every second, so a connection shows at the
//! first sample after its connect or at its Close, whichever comes first.
//!
//! State changes caused by incoming packets run in softirq context, where the current task
//! is unrelated: those are matched by socket (`CONNS`), never by pid.

use core::{
    ffi::c_void,
    mem::{size_of, MaybeUninit},
    ptr::{read_unaligned, write_unaligned},
};

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated as gen},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use tracer_common::{
    tcp_state, tp_layout::inet_sock_set_state as tp, ConnFlags, ConnInfo, EventKind, FdKey, Stat,
    TargetFlags, AF_INET, AF_INET6, COMM_LEN, IPPROTO_TCP,
};

use crate::{
    close::release_own_mapping,
    connect::adopt_by_comm,
    maps::{
        FdSock, CLOSING, CONNS, FD_MAPPED, FD_NAMED, FD_READER, FD_SLOTS, FD_SOCKS,
        PENDING_CONNECT, SOCK_SLOTS, SOCK_TRACKED, SOCK_WANT, WANT_SLOTS,
    },
    read::reads_from_syscalls,
    sock::{
        bump_fd_gen, connect_slot, count, current_ids, emit, fd_slot, field, filter_lower,
        filter_raise, in_syscall, maybe, nonblocking_file, read_global, sample_peer_fin,
        sample_unread, sock_slot, syscall_from_regs, target_flags, tid_slot, wants_first_bytes,
        zero_words, NR_CLOSE, NR_CONNECT,
    },
    write::writes_from_sock,
};

/// `sock/inet_sock_set_state` (Linux 4.16), the classic tracepoint: its record carries the
/// socket's addresses and ports. The fallback where the kernel's BTF lacks what the raw one
/// reads.
#[tracepoint]
pub fn sock_set_state(ctx: TracePointContext) -> u32 {
    let change = Record(&ctx);
    if !change.is_tcp() {
        return 0;
    }
    let sk: u64 = field(&ctx, tp::SKADDR);
    let old_state: i32 = field(&ctx, tp::OLDSTATE);
    let new_state: i32 = field(&ctx, tp::NEWSTATE);
    on_change(&ctx, &change, sk, old_state as u32, new_state as u32).unwrap_or(0)
}

/// `sock/inet_sock_set_state` as a raw tracepoint: called with the kernel's own `(struct sock
/// *sk, int oldstate, int newstate)` (user space checks that prototype in the kernel's BTF),
/// so no trace record is filled for the state changes of every TCP socket on the host; the
/// few fields a tracked connection needs are read from the socket (`Socket`).
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn sock_set_state_raw(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    // Each argument is a u64 slot; the ints are its low 32 bits.
    let old_state = ctx.arg::<u64>(1) as u32;
    let new_state = ctx.arg::<u64>(2) as u32;
    let _ = on_change(&ctx, &Socket(sk), sk, old_state, new_state);
    0
}

/// What a state change tells of its socket beyond its address and states: from the classic
/// tracepoint's record (`Record`) or read from the socket itself (`Socket`).
trait Change {
    /// Reading the protocol costs nothing (a record field): checked before anything else.
    /// Otherwise it is checked only where tracking would start; every other path passes the
    /// socket filter, which only TCP sockets are in.
    const FREE_PROTOCOL: bool;
    fn is_tcp(&self) -> bool;
    /// Local port, host order; 0 until connect() has picked one.
    fn sport(&self) -> u16;
    /// Stores the family, the ports (host order) and the local and remote addresses into
    /// `info` (4 bytes each for AF_INET, 16 for AF_INET6), and returns the family; the rest is
    /// left as it was when the family is neither.
    fn endpoints(&self, info: &mut ConnInfo) -> u16;
}

/// The classic tracepoint's record.
struct Record<'a>(&'a TracePointContext);

impl Change for Record<'_> {
    const FREE_PROTOCOL: bool = true;
    fn is_tcp(&self) -> bool {
        field::<u16>(self.0, tp::PROTOCOL) == IPPROTO_TCP
    }
    fn sport(&self) -> u16 {
        field(self.0, tp::SPORT)
    }
    fn endpoints(&self, info: &mut ConnInfo) -> u16 {
        let ctx = self.0;
        let family: u16 = field(ctx, tp::FAMILY);
        if family != AF_INET && family != AF_INET6 {
            return family;
        }
        info.family = family;
        info.sport = self.sport();
        info.dport = field(ctx, tp::DPORT);
        let (saddr, daddr) = (info.saddr.as_mut_ptr(), info.daddr.as_mut_ptr());
        // SAFETY: 4 or 16 bytes stored into 16-byte arrays, which sit at 8-byte aligned
        // offsets of the record (the size check in tracer-common pins the layout).
        unsafe {
            if family == AF_INET {
                write_unaligned(saddr.cast::<u32>(), field::<u32>(ctx, tp::SADDR));
                write_unaligned(daddr.cast::<u32>(), field::<u32>(ctx, tp::DADDR));
            } else {
                write_unaligned(saddr.cast::<u64>(), field::<u64>(ctx, tp::SADDR_V6));
                write_unaligned(
                    saddr.cast::<u64>().add(1),
                    field::<u64>(ctx, tp::SADDR_V6 + 8),
                );
                write_unaligned(daddr.cast::<u64>(), field::<u64>(ctx, tp::DADDR_V6));
                write_unaligned(
                    daddr.cast::<u64>().add(1),
                    field::<u64>(ctx, tp::DADDR_V6 + 8),
                );
            }
        }
        family
    }
}

/// The socket, read at the running kernel's offsets (from its BTF, set by the loader): what
/// the classic record's `TP_fast_assign` reads, read only when it is used.
struct Socket(u64);

/// Byte offsets in `struct sock` (its `__sk_common` included) of `sk_protocol`,
/// `skc_family`, `skc_num`, `skc_dport`, `skc_rcv_saddr`, `skc_daddr`, `skc_v6_rcv_saddr` and
/// `skc_v6_daddr`, from the running kernel's BTF; set by the loader when it attaches
/// `sock_set_state_raw`.
#[unsafe(no_mangle)]
static SK_PROTOCOL_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SKC_FAMILY_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SKC_NUM_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SKC_DPORT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SKC_RCV_SADDR_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SKC_DADDR_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SKC_V6_RCV_SADDR_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SKC_V6_DADDR_OFFSET: u32 = 0;

/// Words read in one go from the start of `struct sock` (its `__sk_common`) where tracking
/// starts: the family, both ports and both families' addresses lie in its first 88 bytes on
/// the kernels the tests boot (6.1, 6.12, 6.18); a field the loader's BTF offset puts beyond
/// is read on its own. One 96-byte read costs about what a 2-byte one does; the fields one by
/// one took five (bench/RESULTS.md U).
const COMMON_WORDS: usize = 12;

impl Socket {
    /// The `T` at the offset in `global`, or zeroes when the read fails.
    #[inline(always)]
    fn read<T: Copy + Default>(&self, global: &u32) -> T {
        let offset = read_global(global);
        // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly; the socket is
        // the one the kernel is changing the state of.
        unsafe { bpf_probe_read_kernel((self.0 + u64::from(offset)) as *const T) }
            .unwrap_or_default()
    }

    /// The socket's first `COMMON_WORDS` words, or zeroes when the read fails (family 0,
    /// which no caller tracks).
    #[inline(always)]
    fn common(&self) -> [u64; COMMON_WORDS] {
        // SAFETY: as in `read`.
        unsafe { bpf_probe_read_kernel(self.0 as *const [u64; COMMON_WORDS]) }
            .unwrap_or([0; COMMON_WORDS])
    }

    /// The `T` at the offset in `global`, from `common` when it lies there, else read on
    /// its own. The offsets are constants to the verifier (frozen .rodata), so it sees a
    /// fixed place in the stack copy.
    #[inline(always)]
    fn in_common<T: Copy + Default>(&self, common: &[u64; COMMON_WORDS], global: &u32) -> T {
        let offset = read_global(global) as usize;
        if offset + size_of::<T>() <= COMMON_WORDS * 8 {
            // SAFETY: `size_of::<T>()` bytes at `offset` lie inside `common`, checked above;
            // the read is unaligned-safe.
            unsafe { read_unaligned(common.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
        } else {
            self.read(global)
        }
    }
}

impl Change for Socket {
    const FREE_PROTOCOL: bool = false;
    fn is_tcp(&self) -> bool {
        // One byte: `sk_protocol` is a u16 since Linux 5.6 and a byte-aligned 8-bit field
        // before; the protocol numbers fit, and x86-64 keeps the low byte first.
        u16::from(self.read::<u8>(&SK_PROTOCOL_OFFSET)) == IPPROTO_TCP
    }
    fn sport(&self) -> u16 {
        // `skc_num` is in host order (`inet_num`).
        self.read(&SKC_NUM_OFFSET)
    }
    fn endpoints(&self, info: &mut ConnInfo) -> u16 {
        let common = self.common();
        let family: u16 = self.in_common(&common, &SKC_FAMILY_OFFSET);
        if family != AF_INET && family != AF_INET6 {
            return family;
        }
        info.family = family;
        // `skc_num` is in host order (`inet_num`), `skc_dport` in network order.
        info.sport = self.in_common(&common, &SKC_NUM_OFFSET);
        info.dport = u16::from_be(self.in_common::<u16>(&common, &SKC_DPORT_OFFSET));
        let (saddr, daddr) = (info.saddr.as_mut_ptr(), info.daddr.as_mut_ptr());
        // SAFETY: 4 or 16 bytes stored into 16-byte arrays; the addresses are in network
        // order in the socket, as in the record.
        unsafe {
            if family == AF_INET {
                write_unaligned(
                    saddr.cast::<u32>(),
                    self.in_common(&common, &SKC_RCV_SADDR_OFFSET),
                );
                write_unaligned(
                    daddr.cast::<u32>(),
                    self.in_common(&common, &SKC_DADDR_OFFSET),
                );
            } else {
                write_unaligned(
                    saddr.cast::<[u64; 2]>(),
                    self.in_common(&common, &SKC_V6_RCV_SADDR_OFFSET),
                );
                write_unaligned(
                    daddr.cast::<[u64; 2]>(),
                    self.in_common(&common, &SKC_V6_DADDR_OFFSET),
                );
            }
        }
        family
    }
}

/// A TCP state change of socket `sk`, from either program.
#[inline(always)]
fn on_change<C: EbpfContext, A: Change>(
    ctx: &C,
    change: &A,
    sk: u64,
    old_state: u32,
    new_state: u32,
) -> Result<u32, i64> {
    // After the process's close (FIN_WAIT1, which recorded it) nothing in these changes is
    // used: the connection is no longer open, and TCP_CLOSE reports the state it ended from.
    // So they cost no lookup, and the record keeps saying FIN_WAIT1 until the end.
    if matches!(new_state, tcp_state::FIN_WAIT2 | tcp_state::CLOSING) {
        return Ok(0);
    }

    if new_state == tcp_state::SYN_SENT && old_state == tcp_state::CLOSE {
        // connect() runs this in the connecting thread's context, so the pid is meaningful.
        return start_tracking(ctx, change, sk);
    }

    // Every TCP socket on the host passes here: an untracked one costs a filter load, or
    // this lookup on a false positive.
    if !maybe(&SOCK_SLOTS, sock_slot(sk)) {
        return Ok(0);
    }
    let Some(conn) = CONNS.get_ptr_mut(&sk) else {
        return Ok(0);
    };
    // tcp_v4_connect enters SYN_SENT before inet_hash_connect picks the source port, so the
    // port is learned from the first change after it.
    // SAFETY: `conn` points into the CONNS entry just looked up; entries are only removed below
    // on this socket's own TCP_CLOSE, which the kernel serialises under the socket lock.
    unsafe {
        if (*conn).sport == 0 {
            (*conn).sport = change.sport();
        }
        (*conn).state = new_state;
    }
    // No event for the changes before TCP_CLOSE: user space reads the state and its times
    // from the map every second, and the Close event carries the whole record. Only the
    // changes whose time the model uses take the clock, and only those where the receive
    // queue tells something (the upstream's FIN, the process's close, the end) sample it.
    match new_state {
        tcp_state::ESTABLISHED => {
            // No event: user space takes an open connection from the map at its next sample
            // (every second) and a short one from its Close, which carries the whole record.
            // A Connect event here cost a ring record in the kernel and a model input in the
            // tracer for every connection (about a quarter of the tracer's CPU with a new
            // upstream connection per request).
            let now = unsafe { bpf_ktime_get_ns() };
            // SAFETY: as above.
            unsafe {
                if (*conn).established_ns == 0 {
                    (*conn).established_ns = now;
                }
            }
        }
        tcp_state::CLOSE_WAIT => {
            let now = unsafe { bpf_ktime_get_ns() };
            // SAFETY: as above.
            unsafe { (*conn).peer_fin_ns = now };
            sample_unread(sk, conn, now);
        }
        tcp_state::FIN_WAIT1 | tcp_state::LAST_ACK => {
            note_closed_by_process(sk, conn);
            let now = unsafe { bpf_ktime_get_ns() };
            // SAFETY: as above.
            unsafe {
                if (*conn).local_close_ns == 0 {
                    (*conn).local_close_ns = now;
                }
            }
            sample_unread(sk, conn, now);
        }
        tcp_state::CLOSE => {
            note_closed_by_process(sk, conn);
            end_tracking(sk, conn, old_state);
        }
        _ => {}
    }
    Ok(0)
}

/// Marks the socket closed by the process when this change comes from the close() the
/// current thread is making on it: tcp_close runs in the closing thread before it returns to
/// user space. That close() is known from the thread's saved registers (`in_syscall`), or,
/// where those are not read, from `CLOSING`, noted by close.rs at the syscall's entry.
#[inline(always)]
fn note_closed_by_process(sk: u64, conn: *mut ConnInfo) {
    // SAFETY: `conn` points into the CONNS entry the caller holds.
    let (flags, tgid, fd) = unsafe { ((*conn).flags, (*conn).tgid, (*conn).fd) };
    if flags & ConnFlags::CLOSED_BY_PROCESS != 0 {
        return;
    }
    let (current, tid) = current_ids();
    if syscall_from_regs() {
        // Another process's thread (this change runs in softirq), or an fd never learned.
        if current != tgid || flags & ConnFlags::FD_KNOWN == 0 {
            return;
        }
        // The fd as close() took it (an int): compared as 32 bits.
        if in_syscall(NR_CLOSE).is_none_or(|arg| arg as u32 != fd as u32) {
            return;
        }
        // SAFETY: as above.
        unsafe { (*conn).flags |= ConnFlags::CLOSED_BY_PROCESS };
        bump_fd_gen(tgid, fd);
        if flags & ConnFlags::FD_MAPPED != 0 {
            // What close.rs does at the syscall's entry: the fd no longer names the socket.
            release_own_mapping(tgid, fd as u32, sk);
        }
        return;
    }
    let Some(slot) = CLOSING.get_ptr_mut(tid_slot(tid)) else {
        return;
    };
    // SAFETY: pointers into the array map just looked up and into the CONNS entry the caller
    // holds. Only this thread writes a slot that names it.
    unsafe {
        if (*slot).tid == tid && (*slot).sk == sk {
            (*slot).sk = 0;
            (*conn).flags |= ConnFlags::CLOSED_BY_PROCESS;
            bump_fd_gen(tgid, fd);
        }
    }
}

/// The socket reached TCP_CLOSE: hand its final record to user space and forget it.
#[inline(always)]
fn end_tracking(sk: u64, conn: *mut ConnInfo, old_state: u32) {
    let now = unsafe { bpf_ktime_get_ns() };
    // At TCP_CLOSE from close() the receive queue was already purged but copied_seq was not
    // advanced, so this sample still says how much response was thrown away.
    sample_unread(sk, conn, now);
    sample_peer_fin(sk, conn);
    // SAFETY: `conn` points into the live CONNS entry; we copy the key fields before removing it.
    let (tgid, fd, flags) = unsafe { ((*conn).tgid, (*conn).fd, (*conn).flags) };
    if flags & ConnFlags::CLOSED_BY_PROCESS != 0 {
        // close() aborted it (unread data: a reset) or it never got past SYN_SENT: no
        // FIN_WAIT1 or LAST_ACK recorded the close (close.rs takes no clock).
        // SAFETY: as above.
        unsafe {
            if (*conn).local_close_ns == 0 {
                (*conn).local_close_ns = now;
            }
        }
    }
    emit(EventKind::Close, old_state, tcp_state::CLOSE, sk, now, conn);
    if flags & ConnFlags::FD_KNOWN != 0 {
        // A reset ends a socket whose fd is still open: its fd may come to name another.
        bump_fd_gen(tgid, fd);
    }
    // Fails only when LRU evicted the entry since the lookup; the filters were raised for it
    // all the same.
    let _ = CONNS.remove(&sk);
    // Both halves in one add, as start_tracking raised them; the high half too when it ended
    // before its first bytes were all taken (see `SOCK_SLOTS`).
    let sock_filter = if flags & ConnFlags::NAMED == 0 {
        SOCK_TRACKED + SOCK_WANT
    } else {
        SOCK_TRACKED
    };
    filter_lower(&SOCK_SLOTS, sock_slot(sk), sock_filter);
    let mapped = flags & ConnFlags::FD_MAPPED != 0;
    let reads_counted = flags & ConnFlags::READS_COUNTED != 0;
    if !mapped && !reads_counted {
        return;
    }
    let slot = fd_slot(tgid, fd as u32);
    if mapped {
        filter_lower(&FD_SLOTS, slot, FD_MAPPED);
    }
    if reads_counted {
        filter_lower(&FD_SLOTS, slot, FD_READER);
    }
    // CLOSED_BY_PROCESS means close() found this socket through its fd and cleared the
    // mapping then (the usual end). Otherwise the fd is still open (a reset, a failed
    // connect): clear the mapping, or the address, once reused by another tracked socket,
    // would be found through this fd.
    if mapped && flags & ConnFlags::CLOSED_BY_PROCESS == 0 {
        release_own_mapping(tgid, fd as u32, sk);
    }
}

/// Whether a tracked socket's fd gets an `FD_SOCKS` mapping (and its `FD_MAPPED` count): only
/// where an fd-keyed hook looks it up. The write syscalls' entries take first bytes by fd
/// (`by_sock` false), the read syscalls' entries count the reads in progress of a socket
/// whose reads are counted, and close()'s entry finds the socket by its fd where the state
/// change cannot read close()'s fd from the registers. A Go relay on a kernel that takes
/// first bytes by socket and reads the registers needs none: per connection, two lookups
/// of cold map memory and two atomic adds less (bench/RESULTS.md M). A socket whose reads
/// start waiting later is mapped then (read.rs).
#[inline(always)]
pub fn fd_mapping_wanted(by_sock: bool, reads_counted: bool) -> bool {
    !by_sock || reads_counted || !syscall_from_regs()
}

/// Maps process `tgid`'s fd `fd` to the tracked socket `sk` in `FD_SOCKS` (its `FD_MAPPED`
/// count raised by the caller). `by_sock`: first bytes are taken by socket, so the fd path
/// never wants them.
#[inline(always)]
pub fn map_fd(tgid: u32, fd: u32, sk: u64, by_sock: bool, nonblocking: bool, connect_ns: u64) {
    let key = FdKey { tgid, fd };
    let mapping = FdSock {
        // Named from the start when first bytes are taken by socket: the write syscalls'
        // programs are not attached then, and nothing lowers `WANT_SLOTS` for it.
        sk: if by_sock { sk | FD_NAMED } else { sk },
        captured_bytes: 0,
        captured_writes: 0,
        nonblocking: u16::from(nonblocking),
        connect_ns,
    };
    match FD_SOCKS.get_ptr_mut(&key) {
        // The fd number's entry from an earlier connection (see `FD_SOCKS`).
        Some(old) => {
            // SAFETY: pointer from the lookup just made.
            let old_bits = unsafe { (*old).sk };
            // SAFETY: as above.
            unsafe { *old = mapping };
            if wants_first_bytes(old_bits) {
                // A socket whose end was not seen, still wanting first bytes: replaced
                // here, so its count goes (the new one's was raised by the caller).
                filter_lower(&WANT_SLOTS, fd_slot(tgid, fd), 1);
            }
        }
        None => {
            let _ = FD_SOCKS.insert(&key, &mapping, 0);
        }
    }
}

/// A target thread is connecting this socket: start tracking it.
#[inline(always)]
fn start_tracking<C: EbpfContext, A: Change>(ctx: &C, change: &A, sk: u64) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    let Some(target) =
        target_flags(tgid).or_else(|| adopt_by_comm(tgid).then_some(TargetFlags::BY_COMM))
    else {
        return Ok(0);
    };
    if !A::FREE_PROTOCOL && !change.is_tcp() {
        return Ok(0);
    }
    // The fd of this thread's connect() (from its registers, or noted by enter_connect), or
    // -1: none for a SYN_SENT outside connect() (TCP Fast Open's sendmsg, io_uring). Not an
    // Option: LLVM may spill a None's undefined payload from a register the verifier knows as
    // never written, which it refuses ("R3 !read_ok").
    let mut fd: i64 = -1;
    if syscall_from_regs() {
        // The fd connect() was called with, from this thread's registers: SYN_SENT runs in
        // connect() (`in_syscall`).
        if let Some(arg) = in_syscall(NR_CONNECT) {
            fd = i64::from(arg as i32);
        }
    } else if let Some(slot) = PENDING_CONNECT.get_ptr_mut(connect_slot(tid)) {
        // SAFETY: pointer from the lookup just made, to an aligned u64 that threads store
        // whole (see `PENDING_CONNECT`).
        let pending = unsafe { *slot };
        if pending != 0 && (pending >> 32) as u32 == tid {
            fd = i64::from(pending as u32);
            // Taken: a later SYN_SENT on this thread outside connect() gets no stale fd.
            // SAFETY: as above.
            unsafe { *slot = 0 };
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let mut info = MaybeUninit::<ConnInfo>::uninit();
    // SAFETY: ConnInfo is plain integers and byte arrays (all zeroes is a valid value), and
    // zero_words covers all of it.
    let info = unsafe {
        zero_words(info.as_mut_ptr().cast(), size_of::<ConnInfo>() / 8);
        info.assume_init_mut()
    };
    info.tgid = tgid;
    info.tid = tid;
    info.fd = -1;
    info.state = tcp_state::SYN_SENT;
    info.connect_ns = now;
    // Straight into the record: aya's wrapper would zero a buffer of its own first.
    // SAFETY: the helper writes at most `COMM_LEN` bytes into the array.
    let _ = unsafe {
        gen::bpf_get_current_comm(info.comm.as_mut_ptr().cast::<c_void>(), COMM_LEN as u32)
    };
    let family = change.endpoints(info);
    if family != AF_INET && family != AF_INET6 {
        return Ok(0);
    }
    // Go's sockets are non-blocking from the start: their reads never wait, so enter_read
    // has nothing to count for them (the syscall read path notes every read all the same).
    // A Go target's are known to be (Go's runtime opens every socket with SOCK_NONBLOCK):
    // three chained reads less per connection. A socket one makes blocking later shows at
    // its first read that waits (read.rs, `note_blocking_mode`).
    let nonblocking = target & TargetFlags::GO != 0 || nonblocking_file(sk);
    if nonblocking {
        info.flags |= ConnFlags::NONBLOCKING_READS;
    }
    // First bytes are wanted from the socket's first send (write.rs) when they are copied
    // there; on the syscall path through the fd's mapping below, so nothing is pending here.
    let by_sock = writes_from_sock();
    if !by_sock {
        info.flags |= ConnFlags::NAMED;
    }
    if fd >= 0 {
        info.fd = fd as i32;
        info.flags |= ConnFlags::FD_KNOWN;
        // The fd names a new socket: a call-site probe that remembered it follows it again.
        bump_fd_gen(tgid, info.fd);
        let reads_counted = !nonblocking || reads_from_syscalls();
        if reads_counted {
            info.flags |= ConnFlags::READS_COUNTED;
        }
        if fd_mapping_wanted(by_sock, reads_counted) {
            info.flags |= ConnFlags::FD_MAPPED;
        }
    }
    let info: &ConnInfo = info;
    // Raised before the entries exist, so a filter never hides them (see maps.rs).
    let fd_mapped = info.flags & ConnFlags::FD_MAPPED != 0;
    let reads_counted = info.flags & ConnFlags::READS_COUNTED != 0;
    let fd_filter = if reads_counted {
        FD_MAPPED + FD_READER
    } else {
        FD_MAPPED
    };
    let slot = fd_slot(tgid, info.fd as u32);
    if reads_counted {
        // Tells user space to attach the read syscalls' entries, if it has not (see there).
        count(Stat::ReadersCounted);
    }
    // Its first bytes are wanted from now on: by socket at tcp_sendmsg_locked (the high half
    // of its `SOCK_SLOTS` slot), by fd at the write syscalls (`WANT_SLOTS`).
    let sock_filter = if by_sock {
        SOCK_TRACKED + SOCK_WANT
    } else {
        SOCK_TRACKED
    };
    // Not taken by socket: the fd is mapped (`fd_mapping_wanted`) when it is known.
    let want_fd = !by_sock && fd_mapped;
    filter_raise(&SOCK_SLOTS, sock_slot(sk), sock_filter);
    if fd_mapped {
        filter_raise(&FD_SLOTS, slot, fd_filter);
    }
    if want_fd {
        filter_raise(&WANT_SLOTS, slot, 1);
    }
    if CONNS.insert(&sk, info, 0).is_err() {
        filter_lower(&SOCK_SLOTS, sock_slot(sk), sock_filter);
        if fd_mapped {
            filter_lower(&FD_SLOTS, slot, fd_filter);
        }
        if want_fd {
            filter_lower(&WANT_SLOTS, slot, 1);
        }
        count(Stat::ConnMapFull);
        warn!(
            ctx,
            "tracer: cannot track a connection of pid {}: the connection map is full", tgid
        );
        return Ok(0);
    }
    if fd_mapped {
        map_fd(tgid, info.fd as u32, sk, by_sock, nonblocking, now);
    }
    Ok(0)
}
