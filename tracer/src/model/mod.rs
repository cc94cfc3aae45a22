//! The model: what we know about each upstream connection of the targets, the verdicts, and
//! the per-host aggregates. Pure data and rules: no I/O, no clocks (times come in the inputs),
//! so every rule is testable with synthetic inputs.

pub mod classify;
pub mod conn;
#[cfg(test)]
mod counting_sim;
pub mod leak;
pub mod site;
pub mod snapshot;
pub mod stream;
pub mod table;
#[cfg(test)]
pub(crate) mod testkit;

use std::net::{IpAddr, SocketAddr};

pub use classify::Graces;
pub use conn::ConnId;
pub use leak::{ByReason, LeakReason};
pub use snapshot::Snapshot;
pub use table::ConnTable;

/// TCP state numbers as the kernel has them.
pub use tracer_common::tcp_state;

/// Everything the collector tells the model, in the order it happened.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// A lifecycle event from the kernel side.
    Kernel(KernelEvent),
    /// A periodic look at the kernel's connection map and the targets' sockets.
    Sample(Sample),
    /// The set of traced processes changed (started, followed by name, exited).
    Targets(Vec<Target>),
    /// The name a traced socket's first bytes carried (TLS SNI or HTTP Host); `opened_ns`,
    /// its connect time, tells which socket at address `sk` it is.
    Named {
        sk: u64,
        opened_ns: u64,
        name: ConnName,
    },
    /// The kernel hook the collector chose for each role ("read" -> "sock/sock_recv_length").
    Hooks(Vec<(String, String)>),
    /// Hostnames the provider catalogue's names resolved to, per address: the fallback name
    /// of connections whose first bytes were not seen. Replaces the previous set.
    AddressNames(Vec<(IpAddr, ConnName)>),
    /// What the Go-aware layer makes of a target's binary: attached, or why not (one line).
    GoLayer(GoLayer),
    /// A stack the collector named from a target's `.gopclntab`, sent once before the first
    /// request it obtained (issue 13).
    SiteStack(site::SiteStack),
    /// A request handed to Go's transport by a known stack: which connection or HTTP/2
    /// response it obtained. Counts one request on the stack. (Recordings before version 7
    /// had one per request; the collector now sends `SiteRequests` and `SiteSeen`.)
    Site(site::SiteEvent),
    /// Requests the programs counted on a stack since the last such input.
    SiteRequests(site::SiteRequests),
    /// The request a connection last carried, as the collector read it at a sample: counts
    /// no request (`SiteRequests` does).
    SiteSeen(site::SiteEvent),
    /// HTTP/2 responses and the requests that obtained them, as the programs logged them
    /// since the last such input: counts no request.
    SiteResponses(Vec<site::SiteResponse>),
}

/// The Go-aware layer's state for one target process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GoLayer {
    pub pid: u32,
    pub attached: bool,
    /// The call-site probes are attached too (`--go-probes sites`).
    #[serde(default)]
    pub call_sites: bool,
    /// What it found ("go1.27.3 (stripped, static, non-PIE): ...") or why it stays off.
    pub line: String,
}

/// One open HTTP/2 client stream, as the collector read it from the relay's memory at a
/// sample (goprobe/h2mem.rs has where each field comes from).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamSample {
    pub pid: u32,
    /// The `*clientStream`: the stream's identity while it lives.
    pub stream: u64,
    /// Its `*ClientConn`.
    pub conn: u64,
    /// The connection's socket, when the probe followed the connection to it.
    pub fd: Option<i32>,
    /// The HTTP/2 stream id (odd, from 1; 0 before the request's headers went out).
    pub stream_id: u32,
    /// The response's address once its headers arrived, else 0.
    pub response: u64,
    /// Body bytes buffered for the application (`None` once the pipe dropped its buffer).
    pub buffered_bytes: Option<u64>,
    /// How far the application read into the first buffered chunk.
    pub first_chunk_read: u64,
    /// The response's Content-Length (-1 unknown) as the buffer started, minus every body
    /// byte that arrived since.
    pub expected: i64,
    /// Bytes read whose window update Go still holds back.
    pub unsent: i64,
    /// Content-Length minus the bytes the application read, or -1.
    pub bytes_remain: i64,
    /// The response's Content-Length (-1 unknown), once its headers arrived.
    pub content_length: Option<i64>,
    /// The body's end arrived, or the stream failed.
    pub body_done: bool,
    /// The application closed the body.
    pub body_closed: bool,
}

impl StreamSample {
    /// Body bytes the application read: the bytes that arrived (the buffer's `expected`
    /// started at the response's Content-Length, -1 when unknown, and every arrival is taken
    /// off it) minus the bytes still buffered. `None` when that does not add up: before the
    /// headers, once the buffer is dropped, or when the response's Content-Length changed
    /// after the buffer was made (a gzip body Go decompresses): then a known length still
    /// gives `bytes_remain`'s view, else only [`Self::shows_a_read`]'s signs remain.
    pub fn bytes_read(&self) -> Option<u64> {
        let length = self.content_length?;
        let buffered = i64::try_from(self.buffered_bytes?).ok()?;
        let arrived = length.checked_sub(self.expected)?;
        let read = arrived.checked_sub(buffered)?;
        let consistent = (0..=arrived).contains(&read)
            && (self.bytes_remain < 0 || length < 0 || self.bytes_remain == length - read);
        if consistent {
            return u64::try_from(read).ok();
        }
        None
    }

    /// Whether this one reading shows the application has read some of the body: bytes read
    /// when they add up, else a read position inside the first chunk or a held-back window
    /// update (only reads make either).
    pub fn shows_a_read(&self) -> bool {
        if let Some(read) = self.bytes_read() {
            return read > 0;
        }
        self.first_chunk_read > 0 || self.unsent > 0
    }
}

/// Where a connection's name came from, most trusted first.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum NameSource {
    /// The server_name of its TLS ClientHello.
    Sni,
    /// The Host header of its first HTTP/1.x request.
    HttpHost,
    /// Its address was one the catalogue's hostnames resolved to.
    Dns,
}

/// The upstream's name and provider, never anything else of what was sent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnName {
    pub host: String,
    /// The catalogue's provider for `host` ("openai", "anthropic", ...).
    pub provider: Option<String>,
    pub source: NameSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KernelEventKind {
    Connect,
    State,
    Close,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelEvent {
    pub kind: KernelEventKind,
    pub old_state: u32,
    /// Process running when the event fired (unrelated for softirq-driven changes).
    pub ctx_pid: u32,
    /// The socket's kernel address: the identity of a traced connection.
    pub sk: u64,
    pub conn: KernelConn,
}

/// The kernel side's record of one socket, decoded. Times are CLOCK_MONOTONIC nanoseconds;
/// `None` means it has not happened.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelConn {
    pub pid: u32,
    pub tid: u32,
    pub fd: Option<i32>,
    pub comm: std::sync::Arc<str>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u32,
    pub connect_ns: u64,
    pub established_ns: Option<u64>,
    pub peer_fin_ns: Option<u64>,
    pub local_close_ns: Option<u64>,
    pub last_read_ns: Option<u64>,
    pub last_read_ret: i64,
    pub reads: u64,
    pub bytes_read: u64,
    pub reads_inflight: u32,
    /// `rcv_nxt - copied_seq` (an unread FIN counts 1) and when it was sampled.
    pub recv_q: Option<RecvQ>,
    pub closed_by_process: bool,
    /// The peer's FIN had arrived when the socket reached TCP_CLOSE.
    pub peer_fin_at_close: bool,
}

/// A receive-queue sample: `rcv_nxt - copied_seq`, what `ss` shows as Recv-Q.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecvQ {
    pub bytes: u32,
    pub at_ns: u64,
}

/// A periodic observation. Sockets are read before the kernel map, so any socket of a
/// target that the kernel tracks is guaranteed to be in `kernel` too. The kernel map is read
/// at every sample; the socket table only when the collector read it this time (it paces
/// those reads by what the last one cost).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub now_ns: u64,
    /// Every entry of the kernel's connection map.
    pub kernel: Vec<(u64, KernelConn)>,
    /// The targets' TCP sockets as the socket table has them: every one (a full scan, from
    /// sock_diag matched to /proc/PID/fd), or every one already known (a refresh: the kernel
    /// map's open connections and those the last full scan found, looked up by address; a
    /// socket nobody knew of waits for the next full scan). `None` when the socket table was
    /// not read for this sample.
    pub sockets: Option<Vec<SocketSample>>,
    /// Every open HTTP/2 stream the Go-aware probes follow (empty without them).
    #[serde(default)]
    pub streams: Vec<StreamSample>,
    pub stats: KernelStats,
    /// When the read of the socket table in `sockets` started (CLOCK_MONOTONIC ns), if not at
    /// `now_ns`. Each queue in it was read at that time or later, and a read of many sockets
    /// takes a second or more: a read that the kernel map shows during it is newer than what
    /// the scan says of that socket, which is why the scan's queues are dated from here and
    /// not from `now_ns`. `None` in recordings before version 6, where they were dated
    /// `now_ns`. Last in the struct: recordings of version 5 end a sample's frame before it
    /// (see record/mod.rs).
    pub scanned_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketSample {
    pub pid: u32,
    pub fd: i32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u32,
    /// sock_diag's idiag_rqueue (= rcv_nxt - copied_seq for connected sockets).
    pub recv_q: u32,
    pub inode: u64,
}

/// Counters kept by the kernel side, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelStats {
    pub events_sent: u64,
    pub events_lost: u64,
    pub conn_map_full: u64,
    pub reads_seen: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
}

/// How far the model is behind the clock. Inputs wait in a queue before they are applied;
/// when the tracer falls behind (a burst of connections), the table shows the kernel as it
/// was some time ago, and judging it by the clock now would age every connection by that
/// delay: a connection whose close is still queued would sit in CLOSE_WAIT past its grace.
/// Each sample says when it was taken, so the delay is known when it is applied, and the
/// table is judged at the clock minus that delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputLag {
    ns: u64,
}

impl InputLag {
    /// Notes `input`, applied to the table at `applied_ns` (the sample clock).
    pub fn observe(&mut self, input: &Input, applied_ns: u64) {
        if let Input::Sample(sample) = input {
            self.ns = applied_ns.saturating_sub(sample.now_ns);
        }
    }

    /// The delay as of the last sample applied.
    pub fn behind_ns(&self) -> u64 {
        self.ns
    }

    /// The time to judge the table at when the clock says `now_ns`.
    pub fn judge_at(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.ns)
    }
}

/// Bytes of response data waiting unread, given a raw `rcv_nxt - copied_seq` and the state.
/// Once the upstream's FIN has arrived it is counted in rcv_nxt and consumed only after all
/// data before it, so a non-zero queue in those states includes exactly one FIN.
pub fn unread_data(recv_q: u32, state: u32) -> u32 {
    let fin_received = matches!(
        state,
        tcp_state::CLOSE_WAIT | tcp_state::LAST_ACK | tcp_state::CLOSING
    );
    if fin_received {
        recv_q.saturating_sub(1)
    } else {
        recv_q
    }
}

/// ss-style name of a TCP state.
pub fn state_name(state: u32) -> &'static str {
    match state {
        tcp_state::ESTABLISHED => "ESTABLISHED",
        tcp_state::SYN_SENT => "SYN_SENT",
        tcp_state::SYN_RECV => "SYN_RECV",
        tcp_state::FIN_WAIT1 => "FIN_WAIT1",
        tcp_state::FIN_WAIT2 => "FIN_WAIT2",
        tcp_state::TIME_WAIT => "TIME_WAIT",
        tcp_state::CLOSE => "CLOSE",
        tcp_state::CLOSE_WAIT => "CLOSE_WAIT",
        tcp_state::LAST_ACK => "LAST_ACK",
        tcp_state::LISTEN => "LISTEN",
        tcp_state::CLOSING => "CLOSING",
        tcp_state::NEW_SYN_RECV => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_data_discounts_the_fin_only_after_it_arrived() {
        assert_eq!(unread_data(1, tcp_state::CLOSE_WAIT), 0);
        assert_eq!(unread_data(219, tcp_state::CLOSE_WAIT), 218);
        assert_eq!(unread_data(0, tcp_state::CLOSE_WAIT), 0);
        assert_eq!(unread_data(130_048, tcp_state::ESTABLISHED), 130_048);
        assert_eq!(unread_data(1, tcp_state::ESTABLISHED), 1);
    }

    #[test]
    fn the_table_is_judged_as_of_its_last_sample_delay() {
        let mut lag = InputLag::default();
        assert_eq!(lag.judge_at(50), 50, "no sample yet: the clock");
        let sample = |now_ns| {
            Input::Sample(Sample {
                now_ns,
                ..Sample::default()
            })
        };
        // Taken at 10 s, applied at 16 s: six seconds behind.
        lag.observe(&sample(10_000_000_000), 16_000_000_000);
        assert_eq!(lag.behind_ns(), 6_000_000_000);
        assert_eq!(lag.judge_at(17_000_000_000), 11_000_000_000);
        // Other inputs do not change it; a sample applied at once clears it.
        lag.observe(&Input::Targets(Vec::new()), 30_000_000_000);
        assert_eq!(lag.behind_ns(), 6_000_000_000);
        lag.observe(&sample(20_000_000_000), 20_000_000_500);
        assert_eq!(lag.judge_at(21_000_000_000), 20_999_999_500);
        // A clock behind the sample (a replay's rounding) never goes negative.
        lag.observe(&sample(40), 30);
        assert_eq!(lag.judge_at(5), 5);
    }

    #[test]
    fn state_names_match_ss() {
        assert_eq!(state_name(tcp_state::CLOSE_WAIT), "CLOSE_WAIT");
        assert_eq!(state_name(tcp_state::ESTABLISHED), "ESTABLISHED");
        assert_eq!(state_name(99), "UNKNOWN");
    }
}
