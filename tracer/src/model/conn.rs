//! One upstream connection of a target process, as the model knows it, and who it is.

use std::net::SocketAddr;

use super::{tcp_state, unread_data, ConnName, KernelConn, RecvQ, SocketSample};

/// Who a connection is, for people and every output: its process and its two addresses,
/// stable across frames and snapshots while it is open. (The table's own key, `ConnKey`, is
/// the kernel's socket address or the socket inode, which nobody outside the model sees.)
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub pid: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// How a connection came to be in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Seen from its connect() on: full history.
    Traced,
    /// Already open when tracing started: found through sock_diag and /proc, judged from
    /// socket samples only (no read history, so never judged `abandoned`).
    PreExisting,
}

/// Identity of a connection in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnKey {
    /// The socket's kernel address.
    Socket(u64),
    /// The socket inode of a pre-existing connection (from sock_diag and /proc/PID/fd).
    Inode(u64),
}

/// One upstream connection of a target process.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConn {
    pub origin: Origin,
    pub pid: u32,
    pub fd: Option<i32>,
    pub comm: std::sync::Arc<str>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The name its own first bytes carried (TLS SNI or HTTP Host), if they were seen.
    pub name: Option<ConnName>,
    /// The host it is counted under: its own name, else the name its address resolved from,
    /// else the address itself.
    pub host: String,
    pub provider: Option<String>,
    pub state: u32,
    /// connect() time, or when first seen for a pre-existing connection.
    pub opened_ns: u64,
    pub established_ns: Option<u64>,
    /// When the upstream's FIN arrived (or CLOSE_WAIT was first seen).
    pub peer_fin_ns: Option<u64>,
    pub local_close_ns: Option<u64>,
    pub last_read_ns: Option<u64>,
    pub last_read_ret: Option<i64>,
    pub reads: u64,
    pub bytes_read: u64,
    pub reads_inflight: u32,
    /// Freshest receive-queue sample, from the kernel side or sock_diag.
    pub recv_q: Option<RecvQ>,
    /// When a receive-queue sample last showed nothing unread: every byte queued now arrived
    /// after it, so none of them has waited longer than since then.
    pub queue_empty_ns: Option<u64>,
    /// Consecutive samples in which the kernel side no longer had this socket.
    pub(super) missing_samples: u8,
}

impl UpstreamConn {
    pub fn id(&self) -> ConnId {
        ConnId {
            pid: self.pid,
            local: self.local,
            remote: self.remote,
        }
    }

    /// Open from the process's point of view: not closed by it, not fully closed by TCP.
    pub fn is_open(&self) -> bool {
        self.local_close_ns.is_none()
            && matches!(
                self.state,
                tcp_state::SYN_SENT | tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT
            )
    }

    /// Response bytes waiting unread (an unread FIN is not counted).
    pub fn unread_bytes(&self) -> u32 {
        self.recv_q.map_or(0, |q| unread_data(q.bytes, self.state))
    }

    /// The raw receive queue (`ss` Recv-Q), FIN included.
    pub fn recv_q_bytes(&self) -> u32 {
        self.recv_q.map_or(0, |q| q.bytes)
    }

    /// The last sign that someone uses the connection: its last read, else its establishment,
    /// else its opening.
    pub fn last_activity_ns(&self) -> u64 {
        self.last_read_ns
            .or(self.established_ns)
            .unwrap_or(self.opened_ns)
            .max(self.opened_ns)
    }

    pub fn set_recv_q(&mut self, bytes: u32, at_ns: u64) {
        if self.recv_q.is_none_or(|q| q.at_ns <= at_ns) {
            self.recv_q = Some(RecvQ { bytes, at_ns });
            if unread_data(bytes, self.state) == 0 {
                self.queue_empty_ns = Some(at_ns);
            }
        }
    }

    /// Since when the bytes in the receive queue have waited at most: the last sign of a
    /// reader, or the last sample that saw the queue empty when that came later (an SSE event
    /// caught in the instant between its arrival and its read is not a response left unread
    /// since the stream's previous read).
    pub fn unread_since_ns(&self) -> u64 {
        self.last_activity_ns()
            .max(self.queue_empty_ns.unwrap_or(0))
    }

    /// A connection with nothing observed yet but who it is and when it was first seen.
    pub(super) fn base(
        origin: Origin,
        pid: u32,
        fd: Option<i32>,
        comm: std::sync::Arc<str>,
        (local, remote): (SocketAddr, SocketAddr),
        state: u32,
        opened_ns: u64,
    ) -> Self {
        Self {
            origin,
            pid,
            fd,
            comm,
            local,
            remote,
            name: None,
            // Set when the table takes the connection (`ConnTable::track_new`), from its name
            // or its address: formatting the address here for every connection was a tenth of
            // the tracer's CPU under churn.
            host: String::new(),
            provider: None,
            state,
            opened_ns,
            established_ns: None,
            peer_fin_ns: None,
            local_close_ns: None,
            last_read_ns: None,
            last_read_ret: None,
            reads: 0,
            bytes_read: 0,
            reads_inflight: 0,
            recv_q: None,
            queue_empty_ns: None,
            missing_samples: 0,
        }
    }

    pub(super) fn from_kernel(conn: &KernelConn) -> Self {
        let mut c = Self::base(
            Origin::Traced,
            conn.pid,
            conn.fd,
            conn.comm.clone(),
            (conn.local, conn.remote),
            conn.state,
            conn.connect_ns,
        );
        c.update_from_kernel(conn);
        c
    }

    /// The kernel record is always the newest truth for everything it tracks.
    pub(super) fn update_from_kernel(&mut self, conn: &KernelConn) {
        self.state = conn.state;
        if conn.fd.is_some() {
            self.fd = conn.fd;
        }
        // The source port is chosen during connect(); the SYN_SENT record may predate it.
        if conn.local.port() != 0 {
            self.local = conn.local;
        }
        self.established_ns = conn.established_ns;
        self.peer_fin_ns = conn.peer_fin_ns;
        self.local_close_ns = conn.local_close_ns;
        self.last_read_ns = conn.last_read_ns;
        self.last_read_ret = (conn.reads > 0).then_some(conn.last_read_ret);
        self.reads = conn.reads;
        self.bytes_read = conn.bytes_read;
        self.reads_inflight = conn.reads_inflight;
        if let Some(q) = conn.recv_q {
            self.set_recv_q(q.bytes, q.at_ns);
        }
        self.missing_samples = 0;
    }

    pub(super) fn from_socket(s: &SocketSample, now_ns: u64, comm: std::sync::Arc<str>) -> Self {
        let mut c = Self::base(
            Origin::PreExisting,
            s.pid,
            Some(s.fd),
            comm,
            (s.local, s.remote),
            s.state,
            now_ns,
        );
        c.established_ns = (s.state == tcp_state::ESTABLISHED || s.state == tcp_state::CLOSE_WAIT)
            .then_some(now_ns);
        c.peer_fin_ns = (s.state == tcp_state::CLOSE_WAIT).then_some(now_ns);
        c.set_recv_q(s.recv_q, now_ns);
        c
    }

    #[cfg(test)]
    pub fn for_test(origin: Origin) -> Self {
        Self::base(
            origin,
            1,
            Some(3),
            "relay".into(),
            (
                SocketAddr::from(([127, 0, 0, 1], 40000)),
                SocketAddr::from(([127, 0, 0, 12], 443)),
            ),
            tcp_state::ESTABLISHED,
            0,
        )
    }
}
