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

pub(super) fn session(conns: &[KernelConn]) -> Fixture {
    let mut table = ConnTable::new();
    table.apply(targets(&[PID]));
    let mut trend = Trend::starting_at(START);
    for at in (START..=NOW).step_by(10 * SEC as usize) {
        trend.catch_up(&table, at, &GRACES);
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
            streams: Vec::new(),
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
