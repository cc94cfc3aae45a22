//! HTTP/2 client streams inside a target's Go binary (issue 12): uprobes that user space
//! attaches, per target process, at the entries of Go's h2 client functions and at the RET
//! instructions goprobe decoded in them (never uretprobes: Go moves goroutine stacks, and a
//! uretprobe's return-address rewrite would corrupt them).
//!
//! Go's register ABI (Go 1.17+, internal/abi and the ABIInternal spec): integer arguments and
//! results in RAX, RBX, RCX, RDI, RSI, R8-R11 (a method's receiver first), the current g in
//! R14, which holds it at every entry and RET of a Go function.
//!
//! A stream is open from `(*clientStream).writeRequest` (its own goroutine, `go
//! cs.doRequest`) entering to it returning: it returns once the peer ended the stream, or on a
//! reset, a cancelled context or a closed body. A body neither read to the end nor closed keeps
//! it parked: a leaked stream. In-flight state between an entry and its RETs is keyed by
//! (tgid, g) in `GO_INFLIGHT` (LRU: a goroutine that never returns, or a target killed, leaves
//! entries only until they age out), and removed at every RET.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap},
    programs::ProbeContext,
};
use tracer_common::{
    go::{
        go_key, GoKey, GoProcess, StreamInfo, StreamKey, StreamRecord, StreamWhat,
        ITAB_HASH_OFFSET, MAX_GO_INFLIGHT, MAX_GO_PROCS, MAX_GO_STREAMS,
    },
    EventKind, Stat,
};

use crate::{
    maps::EVENTS,
    sock::{count, current_ids, wakeup_flag},
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

/// (tgid, stream address) -> the open stream and its body reads, sampled whole by user space
/// at each sample. Removed at writeRequest's return (the one cleanup path); LRU for streams
/// whose end was missed.
#[map]
pub static GO_STREAMS: LruHashMap<StreamKey, StreamInfo> =
    LruHashMap::with_max_entries(MAX_GO_STREAMS, NO_COMMON_LRU);

/// Per goroutine: the stream (writeRequest, body Read) or request (round trip) between the
/// entry and the RET of a probed function; per request: the stream writing it. See `go_key`.
#[map]
pub static GO_INFLIGHT: LruHashMap<GoKey, u64> =
    LruHashMap::with_max_entries(MAX_GO_INFLIGHT, NO_COMMON_LRU);

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

/// RBX: the first argument after the receiver.
#[inline(always)]
fn rbx(ctx: &ProbeContext) -> u64 {
    // SAFETY: as in `rax`.
    unsafe { (*regs(ctx)).rbx }
}

/// R14: the current goroutine's g.
#[inline(always)]
fn g(ctx: &ProbeContext) -> u64 {
    // SAFETY: as in `rax`.
    unsafe { (*regs(ctx)).r14 }
}

/// Reads a `T` at `addr` in the probed process; `None` when the address is unknown or the read
/// fails (the page is not there): never a guess, and never a fault in the process.
#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user copies from the user address space with fault handling; a
    // bad address returns an error and touches nothing.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// `base + offset` for an offset user space knows, else `None`.
#[inline(always)]
fn field_at(base: u64, offset: u32) -> Option<u64> {
    (base != 0 && offset != GoProcess::UNKNOWN).then_some(base + u64::from(offset))
}

/// The data word of the interface at `at` when its dynamic type has the type hash `hash`
/// (the itab's copy of it), else `None`.
#[inline(always)]
fn iface_data_if(at: u64, hash: u32) -> Option<u64> {
    let itab: u64 = read_user(at)?;
    let seen: u32 = read_user(itab + ITAB_HASH_OFFSET)?;
    if seen != hash {
        return None;
    }
    read_user(at + 8)
}

/// The socket fd under a client stream: cs.cc -> ClientConn.tconn (a `*tls.Conn`, or a
/// `*net.TCPConn` for cleartext h2) -> tls.Conn.conn (a `*net.TCPConn`) -> conn.fd (`*netFD`)
/// -> pfd.Sysfd. Every interface hop checks the dynamic type first; any failed read or
/// unexpected type gives -1.
#[inline(always)]
fn stream_fd(layout: &GoProcess, cs: u64) -> i32 {
    stream_fd_inner(layout, cs).unwrap_or(-1)
}

#[inline(always)]
fn stream_fd_inner(layout: &GoProcess, cs: u64) -> Option<i32> {
    let cc: u64 = read_user(field_at(cs, layout.stream_conn)?)?;
    let tconn = field_at(cc, layout.conn_tconn)?;
    let tcp = match iface_data_if(tconn, layout.tls_conn_type_hash) {
        Some(tls) => iface_data_if(field_at(tls, layout.tls_conn)?, layout.tcp_conn_type_hash)?,
        None => iface_data_if(tconn, layout.tcp_conn_type_hash)?,
    };
    let netfd: u64 = read_user(field_at(tcp, layout.tcp_conn_fd)?)?;
    let sysfd: i64 = read_user(field_at(netfd, layout.netfd_sysfd)?)?;
    (0..=i64::from(i32::MAX))
        .contains(&sysfd)
        .then_some(sysfd as i32)
}

/// The stream's HTTP/2 id, 0 when unknown (and before writeRequest assigned it).
#[inline(always)]
fn stream_id(layout: &GoProcess, cs: u64) -> u32 {
    field_at(cs, layout.stream_id)
        .and_then(read_user::<u32>)
        .unwrap_or(0)
}

/// Sends a stream's lifecycle record. A full ring buffer drops it and counts the drop (the
/// model re-syncs open streams from the `GO_STREAMS` sample).
#[inline(always)]
fn emit_stream(what: StreamWhat, tgid: u32, stream: u64, fd: i32, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<StreamRecord>(0) else {
        count(Stat::RingbufDrops);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to a reserved ring-buffer record of the right size that only we
    // own until submit.
    unsafe {
        (*record).kind = EventKind::Stream as u32;
        (*record).what = what as u32;
        (*record).tgid = tgid;
        (*record).fd = fd;
        (*record).stream = stream;
        (*record).ts_ns = now;
    }
    entry.submit(wakeup_flag());
    count(Stat::EventsSent);
}

#[inline(always)]
fn key(tgid: u32, what: u32, addr: u64) -> GoKey {
    GoKey { tgid, what, addr }
}

/// The probed process's layout: the filter every probe starts with.
#[inline(always)]
fn layout_of(tgid: u32) -> Option<GoProcess> {
    // SAFETY: a copy of the value out of the map entry just found.
    GO_PROCS.get_ptr(&tgid).map(|p| unsafe { *p })
}

/// Entry of `(*clientStream).writeRequest(cs, req, ...)` (Go 1.21-1.26: net/http's
/// `(*http2clientStream).writeRequest`; 1.27: net/http/internal/http2's): the stream opens.
/// RAX = cs, RBX = req.
#[uprobe]
pub fn enter_h2_write_request(ctx: ProbeContext) -> u32 {
    try_enter_h2_write_request(&ctx).unwrap_or(0)
}

fn try_enter_h2_write_request(ctx: &ProbeContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    let Some(layout) = layout_of(tgid) else {
        return Ok(0);
    };
    let (cs, req, g) = (rax(ctx), rbx(ctx), g(ctx));
    if cs == 0 || g == 0 {
        return Ok(0);
    }
    let at = now();
    let fd = stream_fd(&layout, cs);
    let info = StreamInfo {
        opened_ns: at,
        last_read_ns: 0,
        reads: 0,
        bytes_read: 0,
        request: req,
        fd,
        stream_id: 0,
        reads_inflight: 0,
        _pad: 0,
    };
    GO_STREAMS.insert(
        &StreamKey {
            tgid,
            _pad: 0,
            stream: cs,
        },
        &info,
        0,
    )?;
    GO_INFLIGHT.insert(&key(tgid, go_key::WRITE_REQUEST, g), &cs, 0)?;
    if req != 0 {
        GO_INFLIGHT.insert(&key(tgid, go_key::REQUEST, req), &cs, 0)?;
    }
    emit_stream(StreamWhat::Opened, tgid, cs, fd, at);
    Ok(0)
}

/// Each RET of `writeRequest`: the stream ended (the peer ended it, or it was reset or
/// cancelled). Its map entries go.
#[uprobe]
pub fn exit_h2_write_request(ctx: ProbeContext) -> u32 {
    try_exit_h2_write_request(&ctx).unwrap_or(0)
}

fn try_exit_h2_write_request(ctx: &ProbeContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    if layout_of(tgid).is_none() {
        return Ok(0);
    }
    let by_g = key(tgid, go_key::WRITE_REQUEST, g(ctx));
    // SAFETY: a copy of the value out of the map entry just found.
    let Some(cs) = GO_INFLIGHT.get_ptr(&by_g).map(|p| unsafe { *p }) else {
        // Entered before the probes were attached: never opened here, nothing to end.
        return Ok(0);
    };
    let _ = GO_INFLIGHT.remove(&by_g);
    let stream = StreamKey {
        tgid,
        _pad: 0,
        stream: cs,
    };
    if let Some(info) = GO_STREAMS.get_ptr(&stream) {
        // SAFETY: a copy of a field of the map entry just found.
        let req = unsafe { (*info).request };
        if req != 0 {
            let _ = GO_INFLIGHT.remove(&key(tgid, go_key::REQUEST, req));
        }
    }
    let _ = GO_STREAMS.remove(&stream);
    emit_stream(StreamWhat::Ended, tgid, cs, -1, now());
    Ok(0)
}

/// Entry of the h2 round trip (1.21-1.22 `(*http2ClientConn).RoundTrip`, 1.23-1.26
/// `roundTrip`, 1.27 net/http/internal/http2's `(*ClientConn).roundTrip`), RBX = req: the
/// goroutine's request, for its RET.
#[uprobe]
pub fn enter_h2_round_trip(ctx: ProbeContext) -> u32 {
    try_enter_h2_round_trip(&ctx).unwrap_or(0)
}

fn try_enter_h2_round_trip(ctx: &ProbeContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    if layout_of(tgid).is_none() {
        return Ok(0);
    }
    let (req, g) = (rbx(ctx), g(ctx));
    if req == 0 || g == 0 {
        return Ok(0);
    }
    GO_INFLIGHT.insert(&key(tgid, go_key::ROUND_TRIP, g), &req, 0)?;
    Ok(0)
}

/// Each RET of the h2 round trip: RAX = the response (nil on error). A response means the
/// headers arrived for the stream writing this request (writeRequest entered before: the
/// round trip waits for the headers it sends).
#[uprobe]
pub fn exit_h2_round_trip(ctx: ProbeContext) -> u32 {
    try_exit_h2_round_trip(&ctx).unwrap_or(0)
}

fn try_exit_h2_round_trip(ctx: &ProbeContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    let Some(layout) = layout_of(tgid) else {
        return Ok(0);
    };
    let by_g = key(tgid, go_key::ROUND_TRIP, g(ctx));
    // SAFETY: a copy of the value out of the map entry just found.
    let Some(req) = GO_INFLIGHT.get_ptr(&by_g).map(|p| unsafe { *p }) else {
        return Ok(0);
    };
    let _ = GO_INFLIGHT.remove(&by_g);
    let by_req = key(tgid, go_key::REQUEST, req);
    // SAFETY: as above.
    let Some(cs) = GO_INFLIGHT.get_ptr(&by_req).map(|p| unsafe { *p }) else {
        return Ok(0);
    };
    // The link is needed once: a retried request gets a new stream and a new link.
    let _ = GO_INFLIGHT.remove(&by_req);
    if rax(ctx) != 0 {
        // The headers went out before the response came: the stream has its id now, which
        // a stream never read would otherwise never show.
        let id = stream_id(&layout, cs);
        if let Some(info) = GO_STREAMS.get_ptr_mut(&StreamKey {
            tgid,
            _pad: 0,
            stream: cs,
        }) {
            if id != 0 {
                // SAFETY: `info` points into the map entry just found.
                unsafe { (*info).stream_id = id };
            }
        }
        emit_stream(StreamWhat::Responded, tgid, cs, -1, now());
    }
    Ok(0)
}

/// Entry of the response body's `transportResponseBody.Read(b, p)`: a value receiver whose one
/// field is the stream, so RAX = cs. A read in progress (a goroutine blocked here is
/// listening).
#[uprobe]
pub fn enter_h2_body_read(ctx: ProbeContext) -> u32 {
    try_enter_h2_body_read(&ctx).unwrap_or(0)
}

fn try_enter_h2_body_read(ctx: &ProbeContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    let Some(layout) = layout_of(tgid) else {
        return Ok(0);
    };
    let (cs, g) = (rax(ctx), g(ctx));
    let stream = StreamKey {
        tgid,
        _pad: 0,
        stream: cs,
    };
    let Some(info) = GO_STREAMS.get_ptr_mut(&stream) else {
        return Ok(0);
    };
    GO_INFLIGHT.insert(&key(tgid, go_key::BODY_READ, g), &cs, 0)?;
    // SAFETY: `info` points into the map entry just found. Plain stores: reads of one body
    // from two goroutines at once are not something Go's body supports.
    unsafe {
        (*info).reads_inflight += 1;
        // Known since the round trip returned, unless that was before the probes came.
        if (*info).stream_id == 0 {
            (*info).stream_id = stream_id(&layout, cs);
        }
    }
    Ok(0)
}

/// Each RET of `transportResponseBody.Read`: RAX = n, the bytes read.
#[uprobe]
pub fn exit_h2_body_read(ctx: ProbeContext) -> u32 {
    try_exit_h2_body_read(&ctx).unwrap_or(0)
}

fn try_exit_h2_body_read(ctx: &ProbeContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    if layout_of(tgid).is_none() {
        return Ok(0);
    }
    let by_g = key(tgid, go_key::BODY_READ, g(ctx));
    // SAFETY: a copy of the value out of the map entry just found.
    let Some(cs) = GO_INFLIGHT.get_ptr(&by_g).map(|p| unsafe { *p }) else {
        return Ok(0);
    };
    let _ = GO_INFLIGHT.remove(&by_g);
    let Some(info) = GO_STREAMS.get_ptr_mut(&StreamKey {
        tgid,
        _pad: 0,
        stream: cs,
    }) else {
        return Ok(0);
    };
    let n = rax(ctx) as i64;
    let at = now();
    // SAFETY: `info` points into the map entry just found.
    unsafe {
        if (*info).reads_inflight > 0 {
            (*info).reads_inflight -= 1;
        }
        if n > 0 {
            (*info).reads += 1;
            (*info).bytes_read += n as u64;
            (*info).last_read_ns = at;
        }
    }
    Ok(0)
}

/// Entry of the response body's `transportResponseBody.Close(b)`: RAX = cs. Closing resets a
/// stream the peer has not ended; writeRequest's return ends it.
#[uprobe]
pub fn enter_h2_body_close(ctx: ProbeContext) -> u32 {
    try_enter_h2_body_close(&ctx).unwrap_or(0)
}

fn try_enter_h2_body_close(ctx: &ProbeContext) -> Result<u32, i64> {
    let (tgid, _) = current_ids();
    if layout_of(tgid).is_none() {
        return Ok(0);
    }
    let cs = rax(ctx);
    // Only streams the probes saw open: a body read to the end and closed after its stream
    // ended (the common, healthy case) sends nothing.
    let stream = StreamKey {
        tgid,
        _pad: 0,
        stream: cs,
    };
    if GO_STREAMS.get_ptr(&stream).is_none() {
        return Ok(0);
    }
    emit_stream(StreamWhat::BodyClosed, tgid, cs, -1, now());
    Ok(0)
}
