//! The page tests' fixtures: a session whose inputs arrive over time, so the history has a
//! shape, and a frame of it drawn on a test terminal at a fixed size and instant.

use std::time::Duration;

use ratatui::{backend::TestBackend, Terminal};

use super::{draw, Screen, Session, SourceLabel};
use crate::model::{
    classify::Graces,
    site::{SiteEvent, SiteFrame, SiteKey, SiteStack},
    tcp_state::CLOSE_WAIT,
    testkit::*,
    ConnId, ConnTable, Input, KernelConn, KernelStats, Sample,
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
    session_with_sites(conns, streams, &[], Vec::new())
}

/// A session whose relay also has these HTTP/2 streams and these stacks, each request
/// (`SiteEvent`) arriving with the first sample at or after it.
pub(super) fn session_with_sites(
    conns: &[KernelConn],
    streams: &[SyntheticStream],
    stacks: &[SiteStack],
    mut requests: Vec<SiteEvent>,
) -> Fixture {
    let mut table = ConnTable::new();
    table.apply(targets(&[PID]));
    if !streams.is_empty() || !stacks.is_empty() {
        table.apply(go_layer_attached());
    }
    for stack in stacks {
        table.apply(Input::SiteStack(stack.clone()));
    }
    requests.sort_by_key(|r| r.at_ns);
    let mut requests = requests.into_iter().peekable();
    let mut trend = Trend::starting_at(START);
    for at in (START..=NOW).step_by(10 * SEC as usize) {
        while let Some(request) = requests.next_if(|r| r.at_ns <= at) {
            table.apply(Input::Site(request));
        }
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
            scanned_ns: None,
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

/// A frame of the relay's code, as `.gopclntab` names it.
fn frame(function: &str, file: &str, line: u32, library: bool) -> SiteFrame {
    SiteFrame {
        function: function.into(),
        file: file.into(),
        line,
        library,
    }
}

/// The frames of a request of one-api's `controller.<handler>` at `file:line`, handed to
/// Go's HTTP/1.1 transport (or its HTTP/2 client): Go's frames, then the relay's, innermost
/// first.
pub(super) fn relay_frames(handler: &str, file: &str, line: u32, h2: bool) -> Vec<SiteFrame> {
    const GO: &str = "/usr/lib/go/src/net/http";
    const APP: &str = "github.com/songquanpeng/one-api/relay/controller";
    let mut frames = if h2 {
        vec![
            frame(
                "net/http.(*http2ClientConn).RoundTrip",
                &format!("{GO}/h2_bundle.go"),
                8230,
                true,
            ),
            frame(
                "net/http.(*http2Transport).RoundTripOpt",
                &format!("{GO}/h2_bundle.go"),
                7598,
                true,
            ),
        ]
    } else {
        vec![frame(
            "net/http.(*Transport).roundTrip",
            &format!("{GO}/transport.go"),
            590,
            true,
        )]
    };
    frames.extend([
        frame(
            "net/http.(*Transport).RoundTrip",
            &format!("{GO}/roundtrip.go"),
            17,
            true,
        ),
        frame("net/http.send", &format!("{GO}/client.go"), 259, true),
        frame(
            "net/http.(*Client).do",
            &format!("{GO}/client.go"),
            724,
            true,
        ),
        frame(
            "net/http.(*Client).Do",
            &format!("{GO}/client.go"),
            590,
            true,
        ),
        frame(
            &format!("{APP}.{handler}"),
            &format!("/build/one-api/relay/controller/{file}"),
            line,
            false,
        ),
        frame(
            &format!("{APP}.Relay"),
            "/build/one-api/relay/controller/relay.go",
            61,
            false,
        ),
        frame(
            "github.com/gin-gonic/gin.(*Context).Next",
            "/root/go/pkg/mod/github.com/gin-gonic/gin@v1.9.1/context.go",
            174,
            false,
        ),
        frame(
            "runtime.goexit",
            "/usr/lib/go/src/runtime/asm_amd64.s",
            1700,
            true,
        ),
    ]);
    frames
}

/// The HTTP/2 relay of `fixture_h2` (plus a second connection to 127.0.0.12 leaked in
/// CLOSE_WAIT, fd 34), whose requests came from three lines of one-api:
/// - `relayImage` (image.go:829): 12 requests; its leaks are both CLOSE_WAIT connections and
///   stream 7 (unread) on 127.0.0.21;
/// - `relayChat` (chat.go:212): 40 requests; stream 9 (abandoned) on 127.0.0.21 and the
///   stream whose connection is not known (unread);
/// - `ListModels` (models.go:57): 30 requests, two healthy streams among them.
pub(super) fn site_session() -> Fixture {
    let (mut conns, streams) = fixture_h2();
    conns.push(KernelConn {
        fd: Some(34),
        ..close_wait(40204, "127.0.0.12:18080", 135 * SEC)
    });
    let stacks = [
        (1, relay_frames("relayImage", "image.go", 829, false)),
        (2, relay_frames("relayImage", "image.go", 829, true)),
        (3, relay_frames("relayChat", "chat.go", 212, true)),
        (4, relay_frames("ListModels", "models.go", 57, false)),
        (5, relay_frames("ListModels", "models.go", 57, true)),
    ]
    .map(|(id, frames)| SiteStack { id, frames });
    let request = |stack: u32, key: SiteKey, at_ns: u64| SiteEvent {
        pid: PID,
        key,
        stack,
        at_ns,
    };
    let conn = |fd: i32| SiteKey::Connection { fd };
    // A stream's response, as `stream_sample` has it.
    let response = |stream: u64| SiteKey::H2Response {
        response: 0xd000_0000 + stream,
    };
    let mut requests = Vec::new();
    // Earlier requests, on connections gone since (fds 50 on).
    for i in 0..9 {
        requests.push(request(
            1,
            conn(50 + i),
            101 * SEC + u64::from(i as u32) * SEC,
        ));
    }
    for i in 0..38 {
        requests.push(request(3, conn(60), 101 * SEC + u64::from(i as u32) * SEC));
    }
    for i in 0..28 {
        requests.push(request(4, conn(61), 101 * SEC + u64::from(i as u32) * SEC));
    }
    requests.extend([
        // The leaks: the last request on each leaked connection, the leaked streams'.
        request(1, conn(33), 125 * SEC + SEC / 2),
        request(1, conn(34), 135 * SEC + SEC / 2),
        request(2, response(0xc000_1007), 105 * SEC + SEC / 2),
        request(3, response(0xc000_1009), 120 * SEC + SEC / 2),
        request(3, response(0xc000_3003), 140 * SEC + SEC / 2),
        // The healthy ones.
        request(5, response(0xc000_100b), 145 * SEC + SEC / 2),
        request(5, response(0xc000_2001), 155 * SEC + SEC / 2),
    ]);
    session_with_sites(&conns, &streams, &stacks, requests)
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
