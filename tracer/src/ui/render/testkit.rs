//! The page tests' fixtures: a session whose inputs arrive over time, so the history has a
//! shape, and a frame of it drawn on a test terminal at a fixed size and instant.

use std::time::Duration;

use ratatui::{backend::TestBackend, Terminal};

use super::{draw, Screen, Session, SourceLabel};
use crate::model::{
    classify::Graces, tcp_state::CLOSE_WAIT, testkit::*, ConnId, ConnTable, Input, KernelConn,
    KernelStats, Sample,
};
use crate::ui::{
    state::{Page, UiState},
    trend::Trend,
    view::View,
};

pub(super) const GRACES: Graces = Graces {
    close_wait: Duration::from_secs(2),
    unread: Duration::from_secs(3),
    abandon: Duration::from_secs(4),
};
/// The session starts at 100 s of the monotonic clock; frames are drawn at 160 s.
pub(super) const START: u64 = 100 * SEC;
pub(super) const NOW: u64 = 160 * SEC;

pub(super) fn close_wait(port: u16, remote: &str, at: u64) -> KernelConn {
    KernelConn {
        fd: Some(i32::from(port % 100)),
        state: CLOSE_WAIT,
        peer_fin_ns: Some(at + SEC),
        last_read_ns: Some(at + SEC / 2),
        last_read_ret: 325,
        reads: 2,
        bytes_read: 325,
        recv_q: recv_q(1, at + SEC),
        ..established(kconn(port, remote, at), at + MS)
    }
}

pub(super) fn unread(port: u16, remote: &str, at: u64) -> KernelConn {
    KernelConn {
        fd: Some(i32::from(port % 100)),
        recv_q: recv_q(130_048, at + SEC),
        ..established(kconn(port, remote, at), at)
    }
}

pub(super) fn abandoned(port: u16, remote: &str, at: u64) -> KernelConn {
    KernelConn {
        fd: Some(i32::from(port % 100)),
        last_read_ns: Some(at + SEC),
        last_read_ret: 295,
        reads: 2,
        bytes_read: 295,
        ..established(kconn(port, remote, at), at)
    }
}

pub(super) fn pooled(port: u16, remote: &str, at: u64) -> KernelConn {
    KernelConn {
        fd: Some(i32::from(port % 100)),
        last_read_ns: Some(at + SEC),
        last_read_ret: -11,
        reads: 5,
        bytes_read: 4000,
        ..established(kconn(port, remote, at), at)
    }
}

/// A session: the inputs arrive over time (one sample every 10 s) so the history has a
/// shape; the table and history are as they are at NOW.
pub(super) struct Fixture {
    pub(super) table: ConnTable,
    pub(super) trend: Trend,
}

/// An HTTP/2 stream of `PID` as the Go-aware probes report it, on the connection whose
/// socket is `fd` (None: the probes could not follow it to one).
pub(super) struct SyntheticStream {
    /// The client stream's address in the relay.
    pub(super) stream: u64,
    pub(super) fd: Option<i32>,
    pub(super) id: u32,
    pub(super) opened: u64,
    /// When its response headers arrived (None: still waiting).
    pub(super) responded: Option<u64>,
    /// Body bytes received once the headers are in.
    pub(super) arrived: u64,
    /// Bytes the relay read of them, from `last_read` on.
    pub(super) read: u64,
    pub(super) last_read: Option<u64>,
}

pub(super) fn session(conns: &[KernelConn]) -> Fixture {
    session_with_streams(conns, &[])
}

/// A session whose relay also has these HTTP/2 streams, with the Go layer attached.
pub(super) fn session_with_streams(conns: &[KernelConn], streams: &[SyntheticStream]) -> Fixture {
    let mut table = ConnTable::new();
    table.apply(targets(&[PID]));
    if !streams.is_empty() {
        table.apply(go_layer_attached());
    }
    let mut trend = Trend::starting_at(START);
    for at in (START..=NOW).step_by(10 * SEC as usize) {
        trend.catch_up(&table, at, &GRACES);
        let stream_samples = streams
            .iter()
            .filter(|s| s.opened <= at)
            .map(|s| {
                let responded = s.responded.is_some_and(|t| t <= at);
                let read = if s.last_read.is_some_and(|t| t <= at) {
                    s.read
                } else {
                    0
                };
                let arrived = if responded { s.arrived } else { 0 };
                stream_sample(s.stream, s.id, s.fd, responded, (arrived, read))
            })
            .collect();
        let kernel = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.connect_ns <= at)
            .map(|(i, c)| (i as u64 + 1, c.clone()))
            .collect();
        let stats = KernelStats {
            events_sent: (at - START) / SEC * 12,
            ..KernelStats::default()
        };
        table.apply(Input::Sample(Sample {
            streams: stream_samples,
            now_ns: at,
            kernel,
            sockets: Some(vec![]),
            stats,
        }));
    }
    trend.catch_up(&table, NOW, &GRACES);
    Fixture { table, trend }
}

pub(super) fn fixture_relay() -> Vec<KernelConn> {
    let mut conns = Vec::new();
    for (i, at) in [105, 125, 145].iter().enumerate() {
        let port = 40000 + i as u16 * 10;
        conns.push(close_wait(port + 1, "127.0.0.12:18080", at * SEC));
        conns.push(unread(port + 2, "127.0.0.13:18080", at * SEC));
        conns.push(abandoned(port + 3, "127.0.0.16:18080", at * SEC));
    }
    conns.push(pooled(40100, "127.0.0.11:18080", 101 * SEC));
    conns.push(pooled(40101, "127.0.0.17:18080", 101 * SEC));
    conns.push(pooled(40102, "[::1]:18080", 101 * SEC));
    conns
}

/// An HTTP/2 relay: two pooled connections to 127.0.0.21 (fds 31, 32) carrying streams, one
/// HTTP/1.1 connection to 127.0.0.12 leaked in CLOSE_WAIT (fd 33), and a stream whose
/// connection the probes could not follow.
pub(super) fn fixture_h2() -> (Vec<KernelConn>, Vec<SyntheticStream>) {
    let h2 = |port: u16, fd: i32| KernelConn {
        fd: Some(fd),
        reads: 400,
        bytes_read: 9_400_000,
        last_read_ns: Some(NOW - SEC / 2),
        ..pooled(port, "127.0.0.21:443", 101 * SEC)
    };
    let conns = vec![
        h2(40201, 31),
        h2(40202, 32),
        KernelConn {
            fd: Some(33),
            ..close_wait(40203, "127.0.0.12:18080", 125 * SEC)
        },
    ];
    let stream = |stream: u64, fd: Option<i32>, id: u32, opened: u64| SyntheticStream {
        stream,
        fd,
        id,
        opened,
        responded: Some(opened + SEC / 2),
        arrived: 4 << 20,
        read: 0,
        last_read: None,
    };
    let streams = vec![
        // Its headers arrived and its body was never read: unread.
        stream(0xc000_1007, Some(31), 7, 105 * SEC),
        // Read in part, then dropped: abandoned.
        SyntheticStream {
            arrived: (4 << 20) + 12_288,
            read: 12_288,
            last_read: Some(130 * SEC),
            ..stream(0xc000_1009, Some(31), 9, 120 * SEC)
        },
        // An SSE stream between events: everything that came was read.
        SyntheticStream {
            arrived: 2_048,
            read: 2_048,
            last_read: Some(150 * SEC),
            ..stream(0xc000_100b, Some(31), 11, 145 * SEC)
        },
        // Waiting for its response headers.
        SyntheticStream {
            responded: None,
            ..stream(0xc000_100d, Some(31), 13, 158 * SEC)
        },
        // On the other connection, read to its end soon: not leaked yet.
        SyntheticStream {
            arrived: 1_900,
            read: 900,
            last_read: Some(NOW - SEC),
            ..stream(0xc000_2001, Some(32), 1, 155 * SEC)
        },
        // The probes did not find its connection.
        stream(0xc000_3003, None, 3, 140 * SEC),
    ];
    (conns, streams)
}

pub(super) fn render(f: &Fixture, ui: &UiState, width: u16, height: u16) -> String {
    let session = Session {
        source: SourceLabel::Live,
        graces: GRACES,
    };
    let view = View::build(&f.table, NOW, &GRACES);
    render_screen(
        &Screen {
            view: &view,
            ui,
            trend: &f.trend,
            session: &session,
        },
        width,
        height,
    )
}

/// One frame of `screen` on a `width` x `height` test terminal, as text.
pub(super) fn render_screen(screen: &Screen, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
    terminal.draw(|frame| draw(frame, screen)).expect("draws");
    terminal.backend().to_string()
}

pub(super) fn with_page(page: Page, host: &str, conn: Option<ConnId>) -> UiState {
    UiState {
        page,
        selected_host: Some(host.into()),
        selected_conn: conn,
        ..UiState::new()
    }
}
