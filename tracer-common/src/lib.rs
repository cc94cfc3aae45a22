//! The ABI shared by the eBPF programs (`tracer-ebpf`) and the user side (`tracer`).
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so each one is `#[repr(C)]`,
//! `Copy`, free of `bool` and implicit padding, and pinned to its size by a compile-time check.
//! Changing a layout means changing both sides in the same commit.
#![no_std]

use core::mem::size_of;

/// Names of the maps in the eBPF object; the user side looks them up by these names.
pub mod map_names {
    /// Thread-group ids to trace (value: [`super::TargetFlags`] bits).
    pub const TARGETS: &str = "TARGETS";
    /// Process names whose new processes become targets at their first TCP connect.
    pub const TARGET_COMMS: &str = "TARGET_COMMS";
    /// Tracked upstream sockets: socket address -> [`super::ConnInfo`].
    pub const CONNS: &str = "CONNS";
    /// (tgid, fd) -> socket address, learned at connect; lets fd-based syscalls find the socket.
    pub const FD_SOCKS: &str = "FD_SOCKS";
    /// Thread id (mod its size) -> thread and fd of a connect() in progress.
    pub const PENDING_CONNECT: &str = "PENDING_CONNECT";
    /// Thread id -> socket address of a read syscall in progress on a tracked socket (syscall
    /// read path only).
    pub const PENDING_READ: &str = "PENDING_READ";
    /// Lifecycle events ring buffer ([`super::ConnEvent`] records).
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU counters indexed by [`super::Stat`].
    pub const STATS: &str = "STATS";
}

/// Names of the globals the loader sets before loading (`EbpfLoader::override_global`).
pub mod global_names {
    /// Byte offset of `tcp_sock.rcv_nxt` in the running kernel (from its BTF).
    pub const RCV_NXT_OFFSET: &str = "RCV_NXT_OFFSET";
    /// Byte offset of `tcp_sock.copied_seq` in the running kernel (from its BTF).
    pub const COPIED_SEQ_OFFSET: &str = "COPIED_SEQ_OFFSET";
    /// Byte offset of `sock.sk_flags` in the running kernel (from its BTF).
    pub const SK_FLAGS_OFFSET: &str = "SK_FLAGS_OFFSET";
    /// Byte offsets of `sock.sk_socket`, `socket.file` and `file.f_flags` (from its BTF):
    /// whether a socket is non-blocking when it connects.
    pub const SK_SOCKET_OFFSET: &str = "SK_SOCKET_OFFSET";
    pub const SOCKET_FILE_OFFSET: &str = "SOCKET_FILE_OFFSET";
    pub const FILE_FLAGS_OFFSET: &str = "FILE_FLAGS_OFFSET";
    /// Non-zero when the call-site probes are loaded (`--go-probes sites`): the state program
    /// then counts each tracked connect and close in `FD_GENS`, by which the HTTP/1.1 probe
    /// knows that a connection's fd it remembered may name another socket now.
    pub const SITE_FD_GENS: &str = "SITE_FD_GENS";
    /// Slots of each CPU's part of `GO_SITE_LOG` minus one (a power of two minus one): the
    /// loader sizes the log for the CPUs (`go::site_log_per_cpu`), 0 without call sites.
    pub const SITE_LOG_MASK: &str = "SITE_LOG_MASK";
    /// Non-zero when `TARGET_COMMS` holds names, so untargeted connects skip the comm lookup.
    pub const FOLLOW_COMMS: &str = "FOLLOW_COMMS";
    /// Non-zero when reads are counted at the read syscalls' exits instead of by
    /// `sock/sock_recv_length` (kernels before 6.3, or forced for tests).
    pub const READS_FROM_SYSCALLS: &str = "READS_FROM_SYSCALLS";
    /// Non-zero when the syscall a state change runs in is read from the thread's saved user
    /// registers (`bpf_task_pt_regs`, Linux 5.15; x86-64): connect()'s fd at SYN_SENT and
    /// close()'s at the process's close, with no syscall tracepoint attached.
    pub const SYSCALL_FROM_REGS: &str = "SYSCALL_FROM_REGS";
    /// Byte offsets of the syscall number and the first argument in `struct pt_regs` (from
    /// its BTF: `orig_ax` and `di` on x86-64).
    pub const PT_REGS_NR_OFFSET: &str = "PT_REGS_NR_OFFSET";
    pub const PT_REGS_ARG0_OFFSET: &str = "PT_REGS_ARG0_OFFSET";
    /// Non-zero when first bytes are copied at `tcp/tcp_sendmsg_locked` (keyed by socket)
    /// rather than at the write syscalls (keyed by fd).
    pub const WRITES_FROM_SOCK: &str = "WRITES_FROM_SOCK";
    /// Byte offsets of `msghdr.msg_iter` and of `iov_iter`'s `iter_type`, `iov_offset`,
    /// `ubuf` (the same place as `__iov`) and `count` (from the kernel's BTF), and the values
    /// of `ITER_UBUF` and `ITER_IOVEC` in `enum iter_type`.
    pub const MSG_ITER_OFFSET: &str = "MSG_ITER_OFFSET";
    pub const ITER_TYPE_OFFSET: &str = "ITER_TYPE_OFFSET";
    pub const ITER_IOV_OFFSET_OFFSET: &str = "ITER_IOV_OFFSET_OFFSET";
    pub const ITER_UBUF_OFFSET: &str = "ITER_UBUF_OFFSET";
    pub const ITER_COUNT_OFFSET: &str = "ITER_COUNT_OFFSET";
    pub const ITER_UBUF: &str = "ITER_UBUF";
    pub const ITER_IOVEC: &str = "ITER_IOVEC";
    /// Byte offsets in `struct sock` of what the raw `inet_sock_set_state` program reads of
    /// the socket (`sk_protocol`, and `__sk_common`'s `skc_family`, `skc_num`, `skc_dport`,
    /// `skc_rcv_saddr`, `skc_daddr`, `skc_v6_rcv_saddr`, `skc_v6_daddr`), from its BTF.
    pub const SK_PROTOCOL_OFFSET: &str = "SK_PROTOCOL_OFFSET";
    pub const SKC_FAMILY_OFFSET: &str = "SKC_FAMILY_OFFSET";
    pub const SKC_NUM_OFFSET: &str = "SKC_NUM_OFFSET";
    pub const SKC_DPORT_OFFSET: &str = "SKC_DPORT_OFFSET";
    pub const SKC_RCV_SADDR_OFFSET: &str = "SKC_RCV_SADDR_OFFSET";
    pub const SKC_DADDR_OFFSET: &str = "SKC_DADDR_OFFSET";
    pub const SKC_V6_RCV_SADDR_OFFSET: &str = "SKC_V6_RCV_SADDR_OFFSET";
    pub const SKC_V6_DADDR_OFFSET: &str = "SKC_V6_DADDR_OFFSET";
}

/// Field offsets of the tracepoint records the eBPF side reads, as
/// `/sys/kernel/tracing/events/<group>/<event>/format` lists them. These layouts have been stable
/// since Linux 4.16 (inet_sock_set_state) and 6.3 (sock_recv_length); the user side checks them
/// against the running kernel's format files before loading, so a kernel that moved a field
/// gets a clear error instead of wrong verdicts.
pub mod tp_layout {
    /// `sock/inet_sock_set_state`.
    pub mod inet_sock_set_state {
        pub const SKADDR: usize = 8;
        pub const OLDSTATE: usize = 16;
        pub const NEWSTATE: usize = 20;
        pub const SPORT: usize = 24;
        pub const DPORT: usize = 26;
        pub const FAMILY: usize = 28;
        pub const PROTOCOL: usize = 30;
        pub const SADDR: usize = 32;
        pub const DADDR: usize = 36;
        pub const SADDR_V6: usize = 40;
        pub const DADDR_V6: usize = 56;
    }
    /// `sock/sock_recv_length` (Linux 6.3+).
    pub mod sock_recv_length {
        pub const SK: usize = 8;
        pub const PROTOCOL: usize = 18;
        pub const RET: usize = 20;
        pub const FLAGS: usize = 24;
    }
    /// `syscalls/sys_enter_{connect,close,read,readv,recvfrom,recvmsg}`: the fd argument.
    pub const SYS_ENTER_FD: usize = 16;
    /// `syscalls/sys_enter_{write,sendto}`: the buffer and its length; `sys_enter_writev`:
    /// the iovec array and its length; `sys_enter_sendmsg`: the user_msghdr. The length also
    /// of `sys_enter_{read,recvfrom}` (bytes) and `sys_enter_readv` (iovecs).
    pub const SYS_ENTER_BUF: usize = 24;
    pub const SYS_ENTER_LEN: usize = 32;
    /// `syscalls/sys_exit_*`: the return value.
    pub const SYS_EXIT_RET: usize = 16;
    /// `syscalls/sys_enter_recvfrom` and `sys_enter_recvmsg`: the flags argument (for MSG_PEEK).
    pub const SYS_ENTER_RECVFROM_FLAGS: usize = 40;
    pub const SYS_ENTER_RECVMSG_FLAGS: usize = 32;

    /// Raw tracepoint programs (`raw_tp`): they read the tracepoint's `TP_PROTO` arguments,
    /// not its record, so the user side checks the kernel's prototype (its BTF
    /// `btf_trace_<event>` typedef) instead of a format file: (program, event, argument types
    /// after the leading `void *`, as C spells them).
    pub const RAW_ARGS: &[(&str, &str, &[&str])] = &[
        (
            "sock_set_state_raw",
            "inet_sock_set_state",
            &["struct sock *", "int", "int"],
        ),
        (
            "sock_recv",
            "sock_recv_length",
            &["struct sock *", "int", "int"],
        ),
        (
            "sock_send",
            "tcp_sendmsg_locked",
            &[
                "struct sock *",
                "struct msghdr *",
                "struct sk_buff *",
                "int",
            ],
        ),
    ];

    /// (group, event, field, offset) for every field above, for the user side's check.
    pub const CHECKS: &[(&str, &str, &str, usize)] = &[
        (
            "sock",
            "inet_sock_set_state",
            "skaddr",
            inet_sock_set_state::SKADDR,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "oldstate",
            inet_sock_set_state::OLDSTATE,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "newstate",
            inet_sock_set_state::NEWSTATE,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "sport",
            inet_sock_set_state::SPORT,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "dport",
            inet_sock_set_state::DPORT,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "family",
            inet_sock_set_state::FAMILY,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "protocol",
            inet_sock_set_state::PROTOCOL,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "saddr",
            inet_sock_set_state::SADDR,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "daddr",
            inet_sock_set_state::DADDR,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "saddr_v6",
            inet_sock_set_state::SADDR_V6,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "daddr_v6",
            inet_sock_set_state::DADDR_V6,
        ),
        ("sock", "sock_recv_length", "sk", sock_recv_length::SK),
        (
            "sock",
            "sock_recv_length",
            "protocol",
            sock_recv_length::PROTOCOL,
        ),
        ("sock", "sock_recv_length", "ret", sock_recv_length::RET),
        ("sock", "sock_recv_length", "flags", sock_recv_length::FLAGS),
        ("syscalls", "sys_enter_connect", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_close", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_read", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_readv", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_recvfrom", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_recvmsg", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_read", "count", SYS_ENTER_LEN),
        ("syscalls", "sys_enter_readv", "vlen", SYS_ENTER_LEN),
        ("syscalls", "sys_enter_recvfrom", "size", SYS_ENTER_LEN),
        (
            "syscalls",
            "sys_enter_recvfrom",
            "flags",
            SYS_ENTER_RECVFROM_FLAGS,
        ),
        (
            "syscalls",
            "sys_enter_recvmsg",
            "flags",
            SYS_ENTER_RECVMSG_FLAGS,
        ),
        ("syscalls", "sys_enter_write", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_write", "buf", SYS_ENTER_BUF),
        ("syscalls", "sys_enter_write", "count", SYS_ENTER_LEN),
        ("syscalls", "sys_enter_sendto", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_sendto", "buff", SYS_ENTER_BUF),
        ("syscalls", "sys_enter_sendto", "len", SYS_ENTER_LEN),
        ("syscalls", "sys_enter_writev", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_writev", "vec", SYS_ENTER_BUF),
        ("syscalls", "sys_enter_writev", "vlen", SYS_ENTER_LEN),
        ("syscalls", "sys_enter_sendmsg", "fd", SYS_ENTER_FD),
        ("syscalls", "sys_enter_sendmsg", "msg", SYS_ENTER_BUF),
        ("syscalls", "sys_exit_connect", "ret", SYS_EXIT_RET),
        ("syscalls", "sys_exit_read", "ret", SYS_EXIT_RET),
        ("syscalls", "sys_exit_readv", "ret", SYS_EXIT_RET),
        ("syscalls", "sys_exit_recvfrom", "ret", SYS_EXIT_RET),
        ("syscalls", "sys_exit_recvmsg", "ret", SYS_EXIT_RET),
    ];
}

/// Bounds of the maps. Sized for 100k concurrent tracked connections with headroom.
pub const MAX_TARGETS: u32 = 4096;
pub const MAX_TARGET_COMMS: u32 = 64;
pub const MAX_CONNS: u32 = 262_144;
pub const MAX_FD_SOCKS: u32 = 262_144;
/// One entry per thread blocked in connect() or read() on a tracked socket.
pub const MAX_PENDING: u32 = 65_536;
/// Ring buffer size in bytes (a power of two and a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 8 << 20;

/// Unread bytes in the ring buffer above which a submit wakes the reader at once; below it
/// the reader is not woken per event (a wakeup costs more than the event) and drains the ring
/// on its own short timer instead (see `RING_DRAIN_EVERY_MS`).
pub const RING_WAKEUP_BYTES: u64 = (EVENTS_RING_BYTES / 8) as u64;
/// How often user space drains the ring buffer without being woken, while records come.
pub const RING_DRAIN_EVERY_MS: u64 = 50;
/// The longest it waits between two drains when nothing comes.
pub const RING_DRAIN_IDLE_MS: u64 = 1000;

/// Length of a task's comm, including the NUL (the kernel's TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub mod tcp_state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const FIN_WAIT2: u32 = 5;
    pub const TIME_WAIT: u32 = 6;
    pub const CLOSE: u32 = 7;
    pub const CLOSE_WAIT: u32 = 8;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
    pub const CLOSING: u32 = 11;
    pub const NEW_SYN_RECV: u32 = 12;
}

/// Address families (include/linux/socket.h).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// IPPROTO_TCP (include/uapi/linux/in.h).
pub const IPPROTO_TCP: u16 = 6;
/// Bit of `sock.sk_flags` that tcp_fin() sets when the peer's FIN arrives: SOCK_DONE, second
/// in `enum sock_flags` (include/net/sock.h), where it has been since Linux 2.6.
pub const SOCK_DONE_BIT: u64 = 1 << 1;
/// MSG_PEEK (include/linux/socket.h): a peek consumes nothing, so it is not a read.
pub const MSG_PEEK: i32 = 2;
/// MSG_DONTWAIT (include/linux/socket.h): set on every read of a non-blocking socket
/// (sock_read_iter adds it for O_NONBLOCK files), so the read did not wait.
pub const MSG_DONTWAIT: i32 = 0x40;
/// The `sk` word of the kernel side's `FD_SOCKS` values ((tgid, fd) -> socket): the socket
/// address, with a flag in its low bits, which are free because socket addresses are slab
/// objects aligned to at least 8 bytes. Kernel-side only; here so that it is unit-tested.
pub mod fd_sock {
    /// The connection's first bytes were taken (or its share of them used up), so writes
    /// need nothing more.
    pub const FD_NAMED: u64 = 1;
    /// The socket address; 0 once the fd was closed.
    pub const FD_SOCK_MASK: u64 = !7;

    /// True when the mapping names a socket whose first bytes are still wanted: not closed
    /// and not yet `FD_NAMED`. Each kernel path that ends this lowers the mapping's
    /// `WANT_SLOTS` count once.
    #[inline(always)]
    pub fn wants_first_bytes(bits: u64) -> bool {
        bits & FD_SOCK_MASK != 0 && bits & FD_NAMED == 0
    }
}

/// O_NONBLOCK in `file.f_flags` (include/uapi/asm-generic/fcntl.h; x86 and arm64 use the
/// generic value).
pub const O_NONBLOCK: u32 = 0o4000;

/// Value bits of the `TARGETS` map.
pub struct TargetFlags;
impl TargetFlags {
    /// Added by the user side from `--pid` or a `/proc` scan.
    pub const EXPLICIT: u32 = 1;
    /// Added by the kernel side because its comm matched `TARGET_COMMS`.
    pub const BY_COMM: u32 = 2;
    /// A Go program (its executable has Go's build-info section), set by the user side: Go's
    /// runtime opens every socket non-blocking, so the kernel side takes that as known at
    /// connect instead of reading it from the socket's file.
    pub const GO: u32 = 4;
}

/// Bits of [`ConnInfo::flags`].
pub struct ConnFlags;
impl ConnFlags {
    /// The fd was learned at connect, so close() and read syscalls can be matched to the socket.
    pub const FD_KNOWN: u32 = 1;
    /// `unread_bytes` holds a sample (the loader passed the BTF offsets).
    pub const UNREAD_SAMPLED: u32 = 2;
    /// The process called close() on the fd.
    pub const CLOSED_BY_PROCESS: u32 = 4;
    /// The peer's FIN had arrived when the socket reached TCP_CLOSE (sampled at close only).
    pub const PEER_FIN_AT_CLOSE: u32 = 8;
    /// The socket was non-blocking at connect (as Go's are), or its last read did not wait
    /// (MSG_DONTWAIT). Reads on such a socket never wait in the kernel, so they are not
    /// counted in `reads_inflight` (it stays 0) until a read waits. Kernel-side bookkeeping.
    pub const NONBLOCKING_READS: u32 = 16;
    /// The kernel side counts this socket's reads in progress (its fd is in the filter that
    /// `enter_read` checks). Kernel-side bookkeeping.
    pub const READS_COUNTED: u32 = 32;
    /// First bytes are copied at `tcp_sendmsg_locked` and this socket's share is taken (or it
    /// never wanted any). Kernel-side bookkeeping.
    pub const NAMED: u32 = 64;
    /// The fd has an `FD_SOCKS` mapping (and its `FD_MAPPED` count) naming this socket: made
    /// only where an fd-keyed hook will look it up (the write syscalls, the read syscalls'
    /// entries, close()'s entry). Kernel-side bookkeeping.
    pub const FD_MAPPED: u32 = 128;
}

/// Key of `FD_SOCKS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}
const _: () = assert!(size_of::<FdKey>() == 8);

/// Everything the kernel side knows about one tracked upstream socket (value of `CONNS`).
///
/// Times are `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); 0 means "not yet". Addresses are in network
/// byte order as the kernel stores them (IPv4 in the first four bytes); ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub tgid: u32,
    /// The thread that called connect().
    pub tid: u32,
    /// The fd passed to connect(), or -1 when it was not seen.
    pub fd: i32,
    /// Current TCP state ([`tcp_state`]).
    pub state: u32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    /// Writes whose first bytes went to user space for naming, at most FIRST_BYTES_WRITES
    /// (when they are copied at `tcp_sendmsg_locked`; on the syscall path the counters are in
    /// the kernel side's fd map). Kernel-side bookkeeping.
    pub captured_writes: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; COMM_LEN],
    pub connect_ns: u64,
    pub established_ns: u64,
    /// When the upstream's FIN arrived (the socket entered CLOSE_WAIT).
    pub peer_fin_ns: u64,
    /// When the process closed or shut down its side.
    pub local_close_ns: u64,
    /// When a read (recvmsg on this socket) last returned.
    pub last_read_ns: u64,
    pub bytes_read: u64,
    pub reads: u64,
    /// Return value of the last read: bytes, 0 at EOF, or -errno (-11 is EAGAIN).
    pub last_read_ret: i64,
    /// `rcv_nxt - copied_seq` at `unread_sampled_ns` (counts an unread FIN as 1).
    pub unread_bytes: u32,
    /// Read syscalls in progress on this socket (a reader blocked in the kernel is listening).
    /// Not counted on a socket whose reads do not wait ([`ConnFlags::NONBLOCKING_READS`]).
    pub reads_inflight: u32,
    pub unread_sampled_ns: u64,
    /// [`ConnFlags`] bits.
    pub flags: u32,
    /// Bytes of those writes, at most FIRST_BYTES_MAX. Kernel-side bookkeeping.
    pub captured_bytes: u32,
}
const _: () = assert!(size_of::<ConnInfo>() == 160);

impl ConnInfo {
    /// A zeroed record, for the kernel side to fill in place.
    pub const fn zeroed() -> Self {
        Self {
            tgid: 0,
            tid: 0,
            fd: -1,
            state: 0,
            family: 0,
            sport: 0,
            dport: 0,
            captured_writes: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            comm: [0; COMM_LEN],
            connect_ns: 0,
            established_ns: 0,
            peer_fin_ns: 0,
            local_close_ns: 0,
            last_read_ns: 0,
            bytes_read: 0,
            reads: 0,
            last_read_ret: 0,
            unread_bytes: 0,
            reads_inflight: 0,
            unread_sampled_ns: 0,
            flags: 0,
            captured_bytes: 0,
        }
    }
}

/// Kinds of [`ConnEvent`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A target's connection got established. The kernel side no longer sends it: an open
    /// connection reaches user space through the `CONNS` sample, a short one through its
    /// Close. Kept so the numbering and decoding (and recordings that hold it) stay.
    Connect = 1,
    /// A tracked socket changed TCP state (not to CLOSE). The kernel side no longer sends it:
    /// a change between connect and close reaches user space through the `CONNS` sample, and
    /// the Close event carries the final record. Kept so the numbering and decoding stay.
    State = 2,
    /// A tracked socket reached CLOSE; the kernel side forgot it.
    Close = 3,
    /// The first bytes the process wrote on a tracked socket ([`FirstBytesEvent`]).
    FirstBytes = 4,
    // 5 was an HTTP/2 stream's lifecycle record: the Go layer now reads streams from the
    // relay's memory at each sample instead (tracer-ebpf/src/gostream.rs).
    /// A request handed to Go's transport, with the caller's stack ([`go::SiteRecord`]).
    Site = 6,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Connect),
            2 => Some(Self::State),
            3 => Some(Self::Close),
            4 => Some(Self::FirstBytes),
            6 => Some(Self::Site),
            _ => None,
        }
    }
}

/// A lifecycle record in the `EVENTS` ring buffer: what happened, plus the socket's full
/// record right after it happened (so user space never needs a racy map lookup for it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    /// An [`EventKind`] value.
    pub kind: u32,
    pub old_state: u32,
    pub new_state: u32,
    /// tgid of the task running when the event fired (unrelated in softirq context).
    pub ctx_tgid: u32,
    /// The socket's kernel address: the key that ties events and map entries together.
    pub sk: u64,
    pub ts_ns: u64,
    pub conn: ConnInfo,
}
const _: () = assert!(size_of::<ConnEvent>() == 192);

/// How much of what a process sends on a new connection is copied for naming it: the TLS
/// ClientHello (server_name) or the HTTP/1.x request head (Host). User space parses the name
/// and drops the bytes at once; nothing else of the payload is ever copied.
pub const FIRST_BYTES_MAX: usize = 1024;
/// Only the first writes of a connection are looked at.
pub const FIRST_BYTES_WRITES: u16 = 2;

/// A prefix of one write on a tracked socket, for naming the connection (`EVENTS` record with
/// kind [`EventKind::FirstBytes`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FirstBytesEvent {
    /// [`EventKind::FirstBytes`].
    pub kind: u32,
    /// Valid bytes in `data`.
    pub len: u32,
    pub sk: u64,
    /// The connection's `ConnInfo::connect_ns`: which socket at address `sk` wrote them (the
    /// kernel reuses a freed socket's memory at once).
    pub connect_ns: u64,
    pub data: [u8; FIRST_BYTES_MAX],
}
/// Bytes of a first-bytes record before `data`; a record is this plus `len` bytes long.
pub const FIRST_BYTES_HEADER: usize = 24;
const _: () = assert!(size_of::<FirstBytesEvent>() == FIRST_BYTES_HEADER + FIRST_BYTES_MAX);

/// Indexes of the per-CPU `STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Events dropped because the ring buffer was full.
    RingbufDrops = 0,
    /// Connects not tracked because `CONNS` was full.
    ConnMapFull = 1,
    /// Events written to the ring buffer.
    EventsSent = 2,
    /// Reads counted on tracked sockets.
    ReadsSeen = 3,
    /// First-bytes records dropped because the ring buffer was full.
    FirstBytesDrops = 4,
    /// Tracked sockets whose reads may wait in the kernel (`ConnFlags::READS_COUNTED`): blocking
    /// at connect, or a read waited. Go's sockets never are. User space attaches the read
    /// syscalls' entries, which count reads in progress, once this is non-zero.
    ReadersCounted = 5,
}
pub const STAT_COUNT: u32 = 6;

/// The Go-aware HTTP/2 stream probes (uprobes on a target's Go binary, issue 12): their maps,
/// the per-process layout user space hands them, and the stream records they send.
pub mod go {
    use core::mem::size_of;

    /// Names of the Go layer's maps in the eBPF object.
    pub mod map_names {
        /// tgid -> [`super::GoProcess`]: processes whose binary has the probes attached.
        pub const GO_PROCS: &str = "GO_PROCS";
        /// [`super::GoConnKey`] -> [`super::GoConnInfo`]: HTTP/2 client connections.
        pub const GO_CONNS: &str = "GO_CONNS";
    }

    /// Bounds of the Go layer's maps.
    pub const MAX_GO_PROCS: u32 = 1024;
    /// HTTP/2 client connections followed at once, all targets together (LRU: a connection
    /// whose end was missed, e.g. a target killed, ages out).
    pub const MAX_GO_CONNS: u32 = 16_384;

    /// Key of `GO_CONNS`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct GoConnKey {
        pub tgid: u32,
        pub _pad: u32,
        /// The `*ClientConn` in the process.
        pub conn: u64,
    }
    const _: () = assert!(size_of::<GoConnKey>() == 16);

    /// One HTTP/2 client connection (value of `GO_CONNS`), from its read loop's start.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct GoConnInfo {
        /// `bpf_ktime_get_ns()` when its read loop started.
        pub opened_ns: u64,
        /// Its socket fd, or -1 when the probe could not follow the connection there.
        pub fd: i32,
        pub _pad: u32,
    }
    const _: () = assert!(size_of::<GoConnInfo>() == 16);

    /// Where the probes find things in one process's Go structs (value of `GO_PROCS`), from
    /// goprobe's offsets for its Go version. A field the layer does not know is `UNKNOWN`: the
    /// probe then reads nothing through it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct GoProcess {
        /// ClientConn.tconn (net.Conn interface).
        pub conn_tconn: u32,
        /// tls.Conn.conn (net.Conn interface).
        pub tls_conn: u32,
        /// net.TCPConn's conn.fd (*netFD).
        pub tcp_conn_fd: u32,
        /// netFD.pfd.Sysfd (int).
        pub netfd_sysfd: u32,
        /// Type hash (`abi.Type.Hash`, also `itab.hash`) of `*crypto/tls.Conn` and of
        /// `*net.TCPConn`: the interface's dynamic type is checked before its data is followed.
        pub tls_conn_type_hash: u32,
        pub tcp_conn_type_hash: u32,
        pub _pad: [u32; 2],
    }
    const _: () = assert!(size_of::<GoProcess>() == 32);

    impl GoProcess {
        pub const UNKNOWN: u32 = u32::MAX;
    }

    /// Offset of `hash` in Go's itab (runtime/runtime2.go `itab`, internal/abi `ITab`:
    /// inter, _type, hash), the same in Go 1.21 to 1.27.
    pub const ITAB_HASH_OFFSET: u64 = 16;

    /// Name of the call-site probes' process table: slot `tgid % SITE_PROC_SLOTS` ->
    /// [`SiteProcess`] of that tgid (an array: the HTTP/1.1 probe finds its process with a
    /// load and a compare, no hash lookup).
    pub const GO_SITE_SLOTS: &str = "GO_SITE_SLOTS";
    /// Slots of `GO_SITE_SLOTS` (a power of two).
    pub const SITE_PROC_SLOTS: u32 = 1024;

    /// Process `tgid`'s slot in `GO_SITE_SLOTS`: the probe reads it there, user space fills it.
    pub const fn site_proc_slot(tgid: u32) -> u32 {
        tgid & (SITE_PROC_SLOTS - 1)
    }

    /// Name of the call-site probes' overflow map: tgid -> [`SiteProcess`], for a process
    /// whose `GO_SITE_SLOTS` slot another target holds.
    pub const GO_SITE_PROCS: &str = "GO_SITE_PROCS";
    /// The stacks whose frames user space has been sent, per process, each with the requests
    /// counted on it (`GO_SITE_STACKS`: [`SiteStackKey`] -> u64), apart from those a CPU still
    /// holds in `GO_SITE_LAST`.
    pub const GO_SITE_STACKS: &str = "GO_SITE_STACKS";
    /// Each CPU's last stack found in `GO_SITE_STACKS` and the requests it counted on it since
    /// (a per-CPU array of one [`SiteLast`]): a request on the same stack skips the lookup and
    /// adds one here; another stack adds them to `GO_SITE_STACKS` first. User space zeroes it
    /// with any key it removes from `GO_SITE_STACKS`.
    pub const GO_SITE_LAST: &str = "GO_SITE_LAST";
    /// Bound of `GO_SITE_STACKS` (an LRU: an evicted stack is only sent whole again).
    pub const MAX_SITE_STACKS: u32 = 4096;

    /// Value of `GO_SITE_LAST`: a CPU's last stack and the requests it counted on it that are
    /// not yet in `GO_SITE_STACKS`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SiteLast {
        pub key: SiteStackKey,
        pub pending: u64,
    }
    const _: () = assert!(size_of::<SiteLast>() == 24);

    /// A stack sent whole once (key of `GO_SITE_STACKS`): the process and the stack's hash.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct SiteStackKey {
        pub tgid: u32,
        pub _pad: u32,
        pub hash: u64,
    }
    const _: () = assert!(size_of::<SiteStackKey>() == 16);

    /// The hash the programs give a stack (`pcs` with zeros past its depth): 64-bit FNV-1a
    /// over whole words; user space only compares it, never recomputes it.
    pub const fn stack_hash(pcs: &[u64; MAX_SITE_FRAMES]) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        let mut i = 0;
        while i < MAX_SITE_FRAMES {
            hash = (hash ^ pcs[i]).wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        hash
    }

    /// Return addresses a call-site record holds: the transport's own frames (6 on HTTP/1.1,
    /// 8 on HTTP/2, from the probe to `(*Client).Do`) plus the 8 application frames a leak's
    /// stack shows. The frames are read from a copy of the stack (tracer-ebpf/src/gosite.rs),
    /// so their number costs little beyond the walk.
    pub const MAX_SITE_FRAMES: usize = 16;

    /// Where the call-site probes (tracer-ebpf/src/gosite.rs) find an HTTP/1.1 connection's
    /// socket, for one process (value of `GO_SITE_SLOTS` and `GO_SITE_PROCS`);
    /// `GoProcess::UNKNOWN` where unknown.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SiteProcess {
        /// The process (0: a free `GO_SITE_SLOTS` slot).
        pub tgid: u32,
        /// persistConn.conn (net.Conn interface).
        pub pconn_conn: u32,
        /// tls.Conn.conn, net.TCPConn's conn.fd, netFD.pfd.Sysfd, and the type hashes of
        /// `*crypto/tls.Conn` and `*net.TCPConn`, as in [`GoProcess`].
        pub tls_conn: u32,
        pub tcp_conn_fd: u32,
        pub netfd_sysfd: u32,
        pub tls_conn_type_hash: u32,
        pub tcp_conn_type_hash: u32,
        pub _pad: u32,
        /// The itabs of `*crypto/tls.Conn` and `*net.TCPConn` as `net.Conn`, learned by the
        /// probes from their type hashes (0 until then; user space writes 0).
        pub itabs: [u64; 2],
    }
    const _: () = assert!(size_of::<SiteProcess>() == 48);
    const _: () = assert!(SITE_PROC_SLOTS.is_power_of_two());

    /// Name of the HTTP/1.1 call-site probe's map of connections: (tgid, `*persistConn`) ->
    /// [`SiteConnFd`], the fd the probe followed the connection to and its last request.
    pub const GO_SITE_CONNS: &str = "GO_SITE_CONNS";
    /// Connections whose fd the HTTP/1.1 call-site probe remembers (`GO_SITE_CONNS`, an LRU),
    /// all targets together: far above the connections a relay keeps to its providers.
    pub const MAX_SITE_CONNS: u32 = 16_384;
    /// How long the HTTP/1.1 probe trusts an fd it remembered, in ns: it follows the
    /// connection again after this, whatever the fd's generation says.
    pub const SITE_CONN_TTL_NS: u64 = 1_000_000_000;

    /// Name of the HTTP/2 call-site probes' log of responses (an array, mmapable): each CPU
    /// writes its part in turn, [`SiteLogged`] per response, and user space reads what was
    /// written since its last drain. A hash map insert per request cost the probe more than
    /// the rest of its hit (bench/RESULTS.md S).
    pub const GO_SITE_LOG: &str = "GO_SITE_LOG";
    /// Name of the log's write counts (a per-CPU array of one u64: responses each CPU wrote).
    pub const GO_SITE_LOG_NEXT: &str = "GO_SITE_LOG_NEXT";
    /// `GO_SITE_LOG` slots in all, at most (each CPU's part a power of two of at least
    /// `SITE_LOG_MIN_PER_CPU`): user space reads the log at every drain (50 ms while
    /// requests come, at most a second after a pause), so a CPU overwrites entries not read
    /// only past 16k responses a second on 2 CPUs.
    pub const SITE_LOG_SLOTS: u32 = 32_768;
    pub const SITE_LOG_MIN_PER_CPU: u32 = 1024;

    /// Slots of each CPU's part of `GO_SITE_LOG` on a machine of `cpus` CPUs: `SITE_LOG_SLOTS`
    /// shared out, a power of two, at least `SITE_LOG_MIN_PER_CPU`.
    pub const fn site_log_per_cpu(cpus: u32) -> u32 {
        let share = SITE_LOG_SLOTS / if cpus == 0 { 1 } else { cpus };
        let mut per_cpu = SITE_LOG_MIN_PER_CPU;
        while per_cpu * 2 <= share {
            per_cpu *= 2;
        }
        per_cpu
    }

    /// An HTTP/2 response and the request that obtained it (`GO_SITE_LOG`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SiteLogged {
        pub tgid: u32,
        pub _pad: u32,
        /// The response's address (what its stream's `res` field holds).
        pub response: u64,
        pub obtained: SiteObtained,
    }
    const _: () = assert!(size_of::<SiteLogged>() == 32);

    /// Key of `GO_SITE_CONNS`: a `*persistConn` of a process.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct SiteConnKey {
        pub tgid: u32,
        pub _pad: u32,
        pub pconn: u64,
    }
    const _: () = assert!(size_of::<SiteConnKey>() == 16);

    /// A request handed to the transport: its stack's [`stack_hash`] and when (CLOCK_MONOTONIC
    /// ns): a connection's last request in `GO_SITE_CONNS`, a response's in `GO_SITE_LOG`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SiteObtained {
        pub stack: u64,
        pub at_ns: u64,
    }
    const _: () = assert!(size_of::<SiteObtained>() == 16);

    /// Value of `GO_SITE_CONNS`: the connection's fd as followed from its `persistConn`, the
    /// fd's generation in `FD_GENS` then, and when; and the last request on the connection
    /// (`stack` 0 before the first whose stack was sent).
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct SiteConnFd {
        pub fd: i32,
        pub gen: u32,
        pub followed_ns: u64,
        pub last: SiteObtained,
    }
    const _: () = assert!(size_of::<SiteConnFd>() == 32);

    /// Which hand-off a [`SiteRecord`] comes from.
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SiteWhat {
        /// A call of `net/http.(*persistConn).roundTrip`.
        H1 = 1,
        /// Just after the HTTP/2 round trip returned a response.
        H2 = 2,
    }

    impl SiteWhat {
        pub const fn from_u32(v: u32) -> Option<Self> {
            match v {
                1 => Some(Self::H1),
                2 => Some(Self::H2),
                _ => None,
            }
        }
    }

    /// A stack seen for the first time in a process (`EVENTS` record of kind
    /// [`super::EventKind::Site`]), sent once with its return addresses
    /// ([`SiteStackRecord`]). Requests send nothing: the programs count them per stack
    /// (`GO_SITE_STACKS`, `GO_SITE_LAST`), keep each connection's last one in a map user
    /// space reads at its samples (`GO_SITE_CONNS`) and log each HTTP/2 response's, which it
    /// reads at its drains (`GO_SITE_LOG`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct SiteRecord {
        /// [`super::EventKind::Site`].
        pub kind: u32,
        /// A [`SiteWhat`] value: where the stack was seen.
        pub what: u32,
        pub tgid: u32,
        pub _pad0: u32,
        pub ts_ns: u64,
        /// Where the probe fired (the instruction pointer).
        pub ip: u64,
        /// [`stack_hash`] of the stack.
        pub stack: u64,
        /// Return addresses that follow in the [`SiteStackRecord`].
        pub depth: u32,
        pub _pad: u32,
    }
    const _: () = assert!(size_of::<SiteRecord>() == 48);

    /// A [`SiteRecord`] with its stack: return addresses innermost first (frame 0 the
    /// probed function's caller, as a return address), zeros past `depth`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct SiteStackRecord {
        pub site: SiteRecord,
        pub pcs: [u64; MAX_SITE_FRAMES],
    }
    const _: () = assert!(size_of::<SiteStackRecord>() == 48 + 8 * MAX_SITE_FRAMES);
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are repr(C), Copy, contain only integers and byte arrays, and have
    // no implicit padding (the size checks above would catch added padding), so every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::FdKey {}
    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for super::FirstBytesEvent {}
    unsafe impl aya::Pod for super::go::GoConnKey {}
    unsafe impl aya::Pod for super::go::GoConnInfo {}
    unsafe impl aya::Pod for super::go::GoProcess {}
    unsafe impl aya::Pod for super::go::SiteProcess {}
    unsafe impl aya::Pod for super::go::SiteRecord {}
    unsafe impl aya::Pod for super::go::SiteStackRecord {}
    unsafe impl aya::Pod for super::go::SiteStackKey {}
    unsafe impl aya::Pod for super::go::SiteLast {}
    unsafe impl aya::Pod for super::go::SiteConnKey {}
    unsafe impl aya::Pod for super::go::SiteObtained {}
    unsafe impl aya::Pod for super::go::SiteConnFd {}
    unsafe impl aya::Pod for super::go::SiteLogged {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_wants_first_bytes_until_named_or_closed() {
        use fd_sock::*;
        let sk = 0xffff_8880_1234_5600_u64;
        assert!(wants_first_bytes(sk));
        assert!(!wants_first_bytes(sk | FD_NAMED));
        // Closed: 0, or 0 with a stale flag.
        assert!(!wants_first_bytes(0));
        assert!(!wants_first_bytes(FD_NAMED));
        assert_eq!((sk | FD_NAMED) & FD_SOCK_MASK, sk);
    }
}
