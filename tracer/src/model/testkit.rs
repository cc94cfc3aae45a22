//! Builders of synthetic model inputs for the model's unit tests: one target process (`PID`)
//! talking to upstream hosts, times in CLOCK_MONOTONIC nanoseconds.

use std::net::SocketAddr;

use super::{
    tcp_state, ConnTable, GoLayer, Input, KernelConn, KernelEvent, KernelEventKind, KernelStats,
    RecvQ, Sample, SocketSample, StreamSample, Target,
};

pub const SEC: u64 = 1_000_000_000;
pub const MS: u64 = 1_000_000;
/// The traced relay.
pub const PID: u32 = 7;
/// A process the kernel runs in softirq context while packets arrive: unrelated to the target.
pub const OTHER_PID: u32 = 4242;

pub fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("{s} is not a socket address: {e}"))
}

/// The relay's side of a connection: its address and an ephemeral port.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 1, 0, 5], port))
}

/// A record as the kernel side has it right after connect(): SYN_SENT, no fd yet, nothing
/// read. Adjust with struct update syntax.
pub fn kconn(local_port: u16, remote: &str, connect_ns: u64) -> KernelConn {
    KernelConn {
        pid: PID,
        tid: PID + 1,
        fd: None,
        comm: "relay".into(),
        local: local(local_port),
        remote: addr(remote),
        state: tcp_state::SYN_SENT,
        connect_ns,
        established_ns: None,
        peer_fin_ns: None,
        local_close_ns: None,
        last_read_ns: None,
        last_read_ret: 0,
        reads: 0,
        bytes_read: 0,
        reads_inflight: 0,
        recv_q: None,
        closed_by_process: false,
        peer_fin_at_close: false,
    }
}

/// The same record once the handshake completed at `at_ns`.
pub fn established(conn: KernelConn, at_ns: u64) -> KernelConn {
    KernelConn {
        state: tcp_state::ESTABLISHED,
        established_ns: Some(at_ns),
        ..conn
    }
}

pub fn recv_q(bytes: u32, at_ns: u64) -> Option<RecvQ> {
    Some(RecvQ { bytes, at_ns })
}

fn event(kind: KernelEventKind, sk: u64, old_state: u32, ctx_pid: u32, conn: KernelConn) -> Input {
    Input::Kernel(KernelEvent {
        kind,
        old_state,
        ctx_pid,
        sk,
        conn,
    })
}

/// The Connect event (SYN_SENT from CLOSE, in the connecting thread).
pub fn connect(sk: u64, conn: KernelConn) -> Input {
    let ctx_pid = conn.pid;
    event(
        KernelEventKind::Connect,
        sk,
        tcp_state::CLOSE,
        ctx_pid,
        conn,
    )
}

/// A State event driven by a packet (softirq: the running process is unrelated).
pub fn state(sk: u64, old_state: u32, conn: KernelConn) -> Input {
    event(KernelEventKind::State, sk, old_state, OTHER_PID, conn)
}

/// The Close event (TCP_CLOSE), fired in `ctx_pid`'s context.
pub fn close(sk: u64, old_state: u32, ctx_pid: u32, conn: KernelConn) -> Input {
    event(KernelEventKind::Close, sk, old_state, ctx_pid, conn)
}

/// A socket of `pid` as sock_diag and /proc show it.
pub fn socket(
    pid: u32,
    fd: i32,
    local: SocketAddr,
    remote: &str,
    state: u32,
    recv_q: u32,
) -> SocketSample {
    SocketSample {
        pid,
        fd,
        local,
        remote: addr(remote),
        state,
        recv_q,
        // One inode per (process, fd), like the kernel's one per socket.
        inode: (u64::from(pid) << 20) + 9000 + fd as u64,
    }
}

pub fn sample(now_ns: u64, kernel: Vec<(u64, KernelConn)>, sockets: Vec<SocketSample>) -> Input {
    Input::Sample(Sample {
        streams: Vec::new(),
        now_ns,
        kernel,
        sockets: Some(sockets),
        stats: KernelStats::default(),
        scanned_ns: None,
    })
}

/// A sample that read the kernel map but did not scan the socket table.
pub fn map_only_sample(now_ns: u64, kernel: Vec<(u64, KernelConn)>) -> Input {
    Input::Sample(Sample {
        streams: Vec::new(),
        now_ns,
        kernel,
        sockets: None,
        stats: KernelStats::default(),
        scanned_ns: None,
    })
}

pub fn targets(pids: &[u32]) -> Input {
    Input::Targets(
        pids.iter()
            .map(|&pid| Target {
                pid,
                comm: format!("relay-{pid}"),
            })
            .collect(),
    )
}

/// The Go-aware layer attached to `PID`: from then on each sample's streams are all its open
/// streams.
pub fn go_layer_attached() -> Input {
    Input::GoLayer(GoLayer {
        pid: PID,
        attached: true,
        call_sites: true,
        line: "Go layer: go1.27.3 (stripped, static, non-PIE)".into(),
    })
}

/// `PID`'s HTTP/2 stream at address `stream` as a sample reads it from the relay: on the
/// connection whose socket is `fd`, its response headers in (or not), `arrived` body bytes
/// received of a response of unknown length, `read` of them read by the relay.
pub fn stream_sample(
    stream: u64,
    stream_id: u32,
    fd: Option<i32>,
    responded: bool,
    (arrived, read): (u64, u64),
) -> StreamSample {
    StreamSample {
        pid: PID,
        stream,
        conn: 0xc0c0_0000,
        fd,
        stream_id,
        response: if responded { 0xd000_0000 + stream } else { 0 },
        buffered_bytes: Some(arrived.saturating_sub(read)),
        first_chunk_read: 0,
        expected: -1 - arrived as i64,
        unsent: 0,
        bytes_remain: -1,
        content_length: responded.then_some(-1),
        body_done: false,
        body_closed: false,
    }
}

/// A table tracing `PID` that has seen `inputs`, in order.
pub fn table_after(inputs: impl IntoIterator<Item = Input>) -> ConnTable {
    let mut table = ConnTable::new();
    table.apply(targets(&[PID]));
    for input in inputs {
        table.apply(input);
    }
    table
}
