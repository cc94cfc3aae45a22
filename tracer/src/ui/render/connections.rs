//! The connections page: the open connections to one host, each with its verdict.

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
    model::state_name,
    ui::{state::effective, units, view::ConnRow},
};

fn verdict_text(row: &ConnRow) -> &'static str {
    row.verdict.map_or("ok", |r| r.as_str())
}

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
    let host = s.ui.selected_host.clone().unwrap_or_default();
    let conns = s.view.listed_conns(&host, s.ui);
    let summary = s.view.host(&host);
    let counts = summary.map_or_else(
        || "no open connection".to_owned(),
        |h| format!("{} open, {} leaked", h.open, h.leaked),
    );
    let block = titled(
        format!(" Connections to {} ({counts}) ", units::fit(&host, 40)),
        filters_text(s.ui, s.ui.conn_sort.label()),
        area.width,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if conns.is_empty() {
        let text = if summary.is_some_and(|h| h.open > 0) {
            "No open connection of this host has that verdict (r cycles the reason filter)."
                .to_owned()
        } else {
            format!("{host} has no open connection right now. Esc goes back to the hosts.")
        };
        frame.render_widget(
            Paragraph::new(text).style(DIM).wrap(Wrap { trim: true }),
            inner,
        );
        return;
    }
    let cols = [
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
            let values = [
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
            let mut row: Vec<String> = kept.iter().map(|&i| values[i].clone()).collect();
            row.push(units::fit(&k.local.to_string(), local_w as usize));
            if show_remote {
                row.push(units::fit(&k.remote.to_string(), remote_w as usize));
            }
            let style = if c.verdict.is_some() {
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

    use crate::ui::render::testkit::*;
    use crate::ui::state::Page;

    #[test]
    fn connections_of_a_host_80x24_and_120x40() {
        let f = session(&fixture_relay());
        let ui = with_page(Page::Connections, "127.0.0.12", None);
        assert_snapshot!("connections_80x24", render(&f, &ui, 80, 24));
        assert_snapshot!("connections_120x40", render(&f, &ui, 120, 40));
    }

    #[test]
    fn a_host_without_open_connections_says_so() {
        let f = session(&fixture_relay());
        let ui = with_page(Page::Connections, "10.9.9.9", None);
        assert!(render(&f, &ui, 80, 24).contains("10.9.9.9 has no open connection right now"));
    }
}
