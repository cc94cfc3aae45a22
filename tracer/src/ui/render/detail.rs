//! The detail page: one connection's verdict, its timeline, and why (ui::explain).

use ratatui::{
    layout::Rect,
    style::{Color, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Wrap},
    Frame,
};

use super::{Screen, DIM, HEAD, LEAK};
use crate::{
    model::table::Origin,
    ui::{explain, units},
};

/// Words of `text` in lines of at most `width` characters, each starting with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> Vec<Line<'static>> {
    let room = width.saturating_sub(indent.chars().count()).max(10);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
            lines.push(Line::from(format!("{indent}{line}")));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(Line::from(format!("{indent}{line}")));
    }
    lines
}

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
    let id = s.ui.selected_conn.clone();
    let row = id.as_ref().and_then(|id| s.view.conn(id));
    let title = id.as_ref().map_or_else(
        || " Connection ".to_owned(),
        |id| format!(" Connection {} → {} ", id.local, id.remote),
    );
    let block = Block::bordered().title(Line::styled(title, HEAD));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(row) = row else {
        let text = "This connection is no longer open: it was closed, or its process exited, since it was \
                    listed. Esc goes back to the host's connections.";
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), inner);
        return;
    };
    let c = &row.conn;
    let now = s.view.now_ns;
    let start = s.trend.started_ns().unwrap_or(now);
    let why = explain::explain(row, now, &s.session.graces);
    let width = inner.width as usize;
    let verdict_style = if row.verdict.is_some() {
        LEAK
    } else {
        Style::new().fg(Color::Green)
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(why.verdict.clone(), verdict_style),
        Span::raw(format!(
            "   {} · pid {} ({}) fd {} · {}",
            row.host,
            c.pid,
            c.comm,
            c.fd.map_or_else(|| "?".into(), |fd| fd.to_string()),
            match c.origin {
                Origin::Traced => "traced from connect()",
                Origin::PreExisting => "open before tracing",
            }
        )),
    ])];
    lines.push(Line::from(""));
    lines.push(Line::styled(" Timeline (t+ since tracing started)", HEAD));
    for event in explain::timeline(c) {
        let (at, ago) = match event.at_ns {
            Some(at) if at >= start => (
                format!("t+{}", units::span(at - start)),
                format!("{} ago", units::span(now.saturating_sub(at))),
            ),
            Some(at) => (
                format!("t-{}", units::span(start - at)),
                format!("{} ago", units::span(now.saturating_sub(at))),
            ),
            None => ("now".to_owned(), String::new()),
        };
        let when = format!("   {at:>8} {ago:>10}  ");
        let indent = " ".repeat(when.chars().count());
        for (i, line) in wrap(&event.what, width, &indent).into_iter().enumerate() {
            let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
            let text = text.get(indent.len()..).unwrap_or_default().to_owned();
            let lead = if i == 0 {
                Span::styled(when.clone(), DIM)
            } else {
                Span::raw(indent.clone())
            };
            lines.push(Line::from(vec![lead, Span::raw(text)]));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(" Why", HEAD));
    lines.extend(wrap(&why.why, width, "   "));
    if let Some(cause) = &why.cause {
        lines.push(Line::styled(" What usually causes it", HEAD));
        lines.extend(wrap(cause, width, "   "));
    }
    // The relay's line that obtained the leaked response (its last request's, for a reused
    // connection), when the Go-aware probes saw it.
    let leak = s
        .view
        .snapshot
        .leaks
        .iter()
        .find(|l| l.id() == row.id() && l.call_site.is_some());
    if let Some(leak) = leak {
        lines.push(Line::styled(" Obtained at (the relay's stack)", HEAD));
        for frame_line in &leak.stack {
            lines.extend(wrap(frame_line, width, "   "));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

#[cfg(test)]
mod tests {
    use insta::assert_snapshot;
    use ratatui::text::Line;

    use super::wrap;
    use crate::model::testkit::*;
    use crate::ui::render::testkit::*;
    use crate::{model::ConnId, ui::state::Page};

    #[test]
    fn detail_of_a_close_wait_leak_explains_it() {
        let f = session(&fixture_relay());
        let id = ConnId {
            pid: PID,
            local: local(40001),
            remote: addr("127.0.0.12:18080"),
        };
        let ui = with_page(Page::Detail, "127.0.0.12", Some(id));
        let frame = render(&f, &ui, 80, 24);
        let text: Vec<&str> = frame
            .split(|c: char| c.is_whitespace() || c == '│' || c == '"')
            .filter(|w| !w.is_empty())
            .collect();
        let text = text.join(" ");
        assert!(text.contains("LEAKED (close_wait)"), "{frame}");
        assert!(
            text.contains("this process never closed its side"),
            "{frame}"
        );
        assert!(text.contains("early return on a non-200 status"), "{frame}");
        assert_snapshot!("detail_close_wait_80x24", frame);
        let id = ConnId {
            pid: PID,
            local: local(40100),
            remote: addr("127.0.0.11:18080"),
        };
        let ui = with_page(Page::Detail, "127.0.0.11", Some(id));
        assert_snapshot!("detail_healthy_120x40", render(&f, &ui, 120, 40));
    }

    #[test]
    fn a_connection_closed_since_it_was_listed_says_so() {
        let f = session(&fixture_relay());
        let gone = ConnId {
            pid: PID,
            local: local(1),
            remote: addr("127.0.0.12:18080"),
        };
        let ui = with_page(Page::Detail, "127.0.0.12", Some(gone));
        assert!(render(&f, &ui, 80, 24).contains("no longer open"));
    }

    #[test]
    fn wraps_words_with_an_indent() {
        assert_eq!(
            wrap("aaaa bbbb cccc", 12, "  "),
            vec![Line::from("  aaaa bbbb"), Line::from("  cccc")]
        );
    }
}
