//! The connections page: the open connections to one host, each with its verdict and, when
//! the Go-aware probes see them, its open HTTP/2 streams.

use ratatui::{
    layout::{Constraint, Rect},
    style::Style,
    widgets::{HighlightSpacing, Paragraph, Row, Table, TableState, Wrap},
    Frame,
};

use super::{
    table::{filters_text, fit_columns, right, scroll, titled, Col},
    Screen, DIM, HEAD, LEAK, SELECTED,
};
use crate::{
    model::{leak::LeakKind, state_name},
    ui::{state::effective, units, view::ConnRow},
};

/// Its own verdict; else `h2_stream` when streams on it leaked (the connection itself is
/// healthy); else ok.
fn verdict_text(row: &ConnRow) -> &'static str {
    match row.verdict {
        Some(reason) => reason.as_str(),
        None if row.leaked_streams() > 0 => LeakKind::H2Stream.as_str(),
        None => "ok",
    }
}

/// Open streams, and how many leaked: `4`, `4 (2!)`.
fn streams_text(row: &ConnRow) -> String {
    match row.leaked_streams() {
        0 => row.streams.len().to_string(),
        leaked => format!("{} ({leaked}!)", row.streams.len()),
    }
}

/// What the page says instead of a list: why it is empty.
fn why_empty(s: &Screen, host: &str) -> String {
    let summary = s.view.host(host);
    let orphans: Vec<_> = s
        .view
        .orphan_streams
        .iter()
        .filter(|st| st.host == host)
        .collect();
    if !orphans.is_empty() {
        let leaked = orphans.iter().filter(|st| st.verdict.is_some()).count();
        return format!(
            "{} open HTTP/2 streams ({leaked} leaked) whose connection the Go-aware probes could not \
             follow to a socket: they count here, and their leaks (kind h2_stream) are in the JSON \
             snapshot (e exports it). Esc goes back to the hosts.",
            orphans.len()
        );
    }
    if summary.is_some_and(|h| h.open > 0) {
        "No open connection of this host has that verdict (r cycles the reason filter).".to_owned()
    } else {
        format!("{host} has no open connection right now. Esc goes back to the hosts.")
    }
}

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
    let host = s.ui.selected_host.clone().unwrap_or_default();
    let conns = s.view.listed_conns(&host, s.ui);
    let summary = s.view.host(&host);
    let counts = summary.map_or_else(
        || "no open connection".to_owned(),
        |h| match h.open_streams {
            0 => format!("{} open, {} leaked", h.open, h.leaked),
            n => format!(
                "{} open, {} leaked; {n} h2 streams, {} leaked",
                h.open,
                h.leaked,
                h.by_kind.get(LeakKind::H2Stream)
            ),
        },
    );
    let block = titled(
        format!(" Connections to {} ({counts}) ", units::fit(&host, 40)),
        filters_text(s.ui, s.ui.conn_sort.label()),
        area.width,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if conns.is_empty() {
        let text = why_empty(s, &host);
        frame.render_widget(
            Paragraph::new(text).style(DIM).wrap(Wrap { trim: true }),
            inner,
        );
        return;
    }
    // The streams column shows when a listed connection carries HTTP/2 streams.
    let streams = conns.iter().any(|c| !c.streams.is_empty());
    let mut cols = vec![
        Col {
            title: "VERDICT",
            width: 10,
            drop: 0,
        },
        Col {
            title: "STATE",
            width: 11,
            drop: 0,
        },
        Col {
            title: "AGE",
            width: 6,
            drop: 0,
        },
        Col {
            title: "IDLE",
            width: 6,
            drop: 0,
        },
        Col {
            title: "UNREAD",
            width: 9,
            drop: 0,
        },
        Col {
            title: "READ",
            width: 9,
            drop: 2,
        },
        Col {
            title: "PID/FD",
            width: 12,
            drop: 1,
        },
    ];
    if streams {
        cols.insert(
            2,
            Col {
                title: "STREAMS",
                width: 7,
                drop: 0,
            },
        );
    }
    // LOCAL always shows; REMOTE when there is room for both.
    let avail = inner.width.saturating_sub(1);
    let (kept, flex) = fit_columns(&cols, avail, 15, 1);
    let show_remote = flex > 2 * 21;
    let local_w = if show_remote { flex / 2 } else { flex };
    let remote_w = if show_remote { flex - local_w - 1 } else { 0 };

    let mut widths: Vec<Constraint> = kept
        .iter()
        .map(|&i| Constraint::Length(cols[i].width))
        .collect();
    let mut head: Vec<String> = kept
        .iter()
        .map(|&i| {
            if i >= 2 {
                right(cols[i].title.into(), cols[i].width)
            } else {
                cols[i].title.into()
            }
        })
        .collect();
    widths.push(Constraint::Length(local_w));
    head.push("LOCAL".into());
    if show_remote {
        widths.push(Constraint::Length(remote_w));
        head.push("REMOTE".into());
    }
    let now = s.view.now_ns;
    let rows: Vec<Row> = conns
        .iter()
        .map(|c| {
            let k = &c.conn;
            let mut values = vec![
                verdict_text(c).to_owned(),
                state_name(k.state).to_owned(),
                right(units::span(now.saturating_sub(k.opened_ns)), 6),
                right(units::span(now.saturating_sub(k.last_activity_ns())), 6),
                right(units::bytes(u64::from(k.unread_bytes())), 9),
                right(units::bytes(k.bytes_read), 9),
                right(
                    format!(
                        "{}/{}",
                        k.pid,
                        k.fd.map_or_else(|| "?".into(), |fd| fd.to_string())
                    ),
                    12,
                ),
            ];
            if streams {
                values.insert(2, right(streams_text(c), 7));
            }
            let mut row: Vec<String> = kept.iter().map(|&i| values[i].clone()).collect();
            row.push(units::fit(&k.local.to_string(), local_w as usize));
            if show_remote {
                row.push(units::fit(&k.remote.to_string(), remote_w as usize));
            }
            let style = if c.verdict.is_some() || c.leaked_streams() > 0 {
                LEAK
            } else {
                Style::new()
            };
            Row::new(row).style(style)
        })
        .collect();
    let listed: Vec<_> = conns.iter().map(|c| c.id()).collect();
    let selected = effective(s.ui.selected_conn.as_ref(), &listed)
        .and_then(|sel| listed.iter().position(|c| c == sel))
        .unwrap_or(0);
    let visible = inner.height.saturating_sub(1) as usize;
    let mut state = TableState::new()
        .with_selected(Some(selected))
        .with_offset(scroll(selected, visible));
    let table = Table::new(rows, widths)
        .header(Row::new(head).style(HEAD))
        .column_spacing(1)
        .row_highlight_style(SELECTED)
        .highlight_symbol("▸")
        .highlight_spacing(HighlightSpacing::Always);
    frame.render_stateful_widget(table, inner, &mut state);
}

#[cfg(test)]
mod tests {
    use insta::assert_snapshot;

    use crate::model::{snapshot::UNKNOWN_CONNECTION_HOST, LeakReason};
    use crate::ui::render::testkit::*;
    use crate::ui::state::{Page, ReasonFilter};

    #[test]
    fn connections_of_a_host_80x24_and_120x40() {
        let f = session(&fixture_relay());
        let ui = with_page(Page::Connections, "127.0.0.12", None);
        assert_snapshot!("connections_80x24", render(&f, &ui, 80, 24));
        assert_snapshot!("connections_120x40", render(&f, &ui, 120, 40));
    }

    #[test]
    fn connections_carrying_leaked_http2_streams_say_so() {
        let (conns, streams) = fixture_h2();
        let f = session_with_streams(&conns, &streams);
        let ui = with_page(Page::Connections, "127.0.0.21", None);
        let frame = render(&f, &ui, 80, 24);
        let rows: Vec<String> = frame
            .lines()
            .filter(|l| l.contains("10.1.0.5:"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        // The one whose streams leaked first, though the connection itself is healthy.
        assert_eq!(rows.len(), 2, "{frame}");
        assert!(
            rows[0].contains("h2_stream ESTABLISHED 4 (2!)") && rows[0].contains(":40201"),
            "{frame}"
        );
        assert!(
            rows[1].contains("ok ESTABLISHED 1") && rows[1].contains(":40202"),
            "{frame}"
        );
        assert!(
            frame.contains("2 open, 2 leaked; 5 h2 streams, 2 leaked"),
            "{frame}"
        );
        assert_snapshot!("h2_connections_80x24", frame);
        // "leaked only" keeps the connection whose streams leaked; "close_wait" does not.
        let mut ui = ui;
        ui.reason_filter = ReasonFilter::Leaked;
        assert!(render(&f, &ui, 80, 24).contains(":40201"));
        ui.reason_filter = ReasonFilter::Only(LeakReason::Abandoned);
        assert!(render(&f, &ui, 80, 24).contains(":40201"));
        ui.reason_filter = ReasonFilter::Only(LeakReason::CloseWait);
        assert!(!render(&f, &ui, 80, 24).contains(":40201"));
    }

    #[test]
    fn streams_without_a_known_connection_are_explained() {
        let (conns, streams) = fixture_h2();
        let f = session_with_streams(&conns, &streams);
        let ui = with_page(Page::Connections, UNKNOWN_CONNECTION_HOST, None);
        let frame: String = render(&f, &ui, 120, 24)
            .split(|c: char| c.is_whitespace() || c == '│' || c == '"')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            frame.contains("1 open HTTP/2 streams (1 leaked) whose connection the Go-aware probes could not follow"),
            "{frame}"
        );
    }

    #[test]
    fn a_host_without_open_connections_says_so() {
        let f = session(&fixture_relay());
        let ui = with_page(Page::Connections, "10.9.9.9", None);
        assert!(render(&f, &ui, 80, 24).contains("10.9.9.9 has no open connection right now"));
    }
}
