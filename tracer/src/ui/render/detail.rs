//! The detail page: one connection's verdict, its HTTP/2 streams (the selected one explained),
//! its timeline, and why (ui::explain).

use ratatui::{
    layout::Rect,
    style::{Color, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Wrap},
    Frame,
};

use super::{table::scroll, Screen, DIM, HEAD, LEAK};
use crate::{
    model::{leak::LeakKind, snapshot::Leak, table::Origin},
    ui::{
        explain,
        state::effective,
        units,
        view::{ConnRow, StreamRow},
    },
};

/// Stream rows shown at most; the list scrolls to the selected one.
const STREAM_ROWS: usize = 6;

/// A stream that is not leaked, in a word.
fn stream_state(s: &StreamRow) -> &'static str {
    let st = &s.stream;
    if st.body_closed {
        "body closed"
    } else if st.responded_ns.is_none() {
        "awaiting headers"
    } else if st.body_done {
        "ending"
    } else if st.buffered_bytes.unwrap_or(0) == 0 {
        "caught up"
    } else {
        "ok"
    }
}

/// The connection's streams, the selected one marked, then why it is (not) leaked.
fn stream_lines(row: &ConnRow, s: &Screen, width: usize) -> Vec<Line<'static>> {
    let now = s.view.now_ns;
    let keys: Vec<_> = row.streams.iter().map(StreamRow::key).collect();
    let selected = effective(s.ui.selected_stream.as_ref(), &keys)
        .and_then(|k| keys.iter().position(|x| x == k))
        .unwrap_or(0);
    let leaked = row.leaked_streams();
    let mut lines = vec![
        Line::from(""),
        Line::styled(
            format!(
                " HTTP/2 streams on it: {} open, {leaked} leaked{}",
                row.streams.len(),
                if row.streams.len() > 1 {
                    " (↑↓ picks one)"
                } else {
                    ""
                }
            ),
            HEAD,
        ),
        Line::styled(
            format!(
                "   {:>6} {:>7} {:>7} {:>9} {:>9}  VERDICT",
                "STREAM", "AGE", "IDLE", "READ", "BUFFERED"
            ),
            DIM,
        ),
    ];
    let first = scroll(selected, STREAM_ROWS);
    for (i, st) in row.streams.iter().enumerate().skip(first).take(STREAM_ROWS) {
        let t = &st.stream;
        let text = format!(
            " {} {:>6} {:>7} {:>7} {:>9} {:>9}  {}",
            if i == selected { "▸" } else { " " },
            t.stream_id.map_or_else(|| "?".into(), |id| id.to_string()),
            units::span(now.saturating_sub(t.opened_ns)),
            units::span(now.saturating_sub(t.last_activity_ns())),
            t.bytes_read.map_or_else(|| "?".into(), units::bytes),
            st.buffered_bytes.map_or_else(|| "–".into(), units::bytes),
            st.verdict.map_or_else(|| stream_state(st), |r| r.as_str()),
        );
        lines.push(if st.verdict.is_some() {
            Line::styled(text, LEAK)
        } else {
            Line::from(text)
        });
    }
    let hidden = row.streams.len().saturating_sub(first + STREAM_ROWS) + first;
    if hidden > 0 {
        lines.push(Line::styled(format!("   … {hidden} more"), DIM));
    }
    if let Some(st) = row.streams.get(selected) {
        let why = explain::explain_stream(st, now, &s.session.graces);
        let style = if st.verdict.is_some() {
            LEAK
        } else {
            Style::new().fg(Color::Green)
        };
        lines.push(Line::from(vec![
            Span::styled(" Stream ", HEAD),
            Span::styled(
                st.stream
                    .stream_id
                    .map_or_else(|| "?".into(), |id| id.to_string()),
                HEAD,
            ),
            Span::raw(": "),
            Span::styled(why.verdict.clone(), style),
        ]));
        lines.extend(wrap(&why.why, width, "   "));
        if let Some(cause) = &why.cause {
            lines.extend(wrap(cause, width, "   "));
        }
        // The relay's line that obtained its response, when the probes saw it.
        let leak = s.view.snapshot.leaks.iter().find(|l| {
            l.kind == LeakKind::H2Stream
                && l.id() == row.id()
                && l.stream_id == st.stream.stream_id
                && l.call_site.is_some()
        });
        if let Some(leak) = leak {
            lines.extend(obtained_at(leak, width));
        }
    }
    lines
}

/// The stack that obtained a leak's response (for a reused connection, its last request's):
/// its call site first.
fn obtained_at(leak: &Leak, width: usize) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled(
        " Obtained at (the relay's stack, its call site first)",
        HEAD,
    )];
    for frame_line in &leak.stack {
        lines.extend(wrap(frame_line, width, "   "));
    }
    lines
}

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
    let mut first = vec![Span::styled(why.verdict.clone(), verdict_style)];
    // First after the connection's own verdict, so a narrow screen cuts the rest instead.
    if row.leaked_streams() > 0 {
        first.push(Span::styled(
            format!(" · {} HTTP/2 streams LEAKED", row.leaked_streams()),
            LEAK,
        ));
    }
    first.push(Span::raw(format!(
        "   {} · pid {} ({}) fd {} · {}",
        row.host,
        c.pid,
        c.comm,
        c.fd.map_or_else(|| "?".into(), |fd| fd.to_string()),
        match c.origin {
            Origin::Traced => "traced from connect()",
            Origin::PreExisting => "open before tracing",
        }
    )));
    let mut lines = vec![Line::from(first)];
    if !row.streams.is_empty() {
        lines.extend(stream_lines(row, s, width));
    }
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
    // The relay's line that obtained the leaked response, when the Go-aware probes saw it
    // (a leaked stream's is under the stream).
    let leak =
        s.view.snapshot.leaks.iter().find(|l| {
            l.kind == LeakKind::Connection && l.id() == row.id() && l.call_site.is_some()
        });
    if let Some(leak) = leak {
        lines.extend(obtained_at(leak, width));
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
    use crate::{
        model::ConnId,
        ui::state::{Page, StreamKey},
    };

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

    /// The frame's words, one space apart (borders and wrapping gone).
    fn words(frame: &str) -> String {
        frame
            .split(|c: char| c.is_whitespace() || c == '│' || c == '"')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_connections_detail_lists_its_streams_and_explains_the_worst() {
        let (conns, streams) = fixture_h2();
        let f = session_with_streams(&conns, &streams);
        let id = ConnId {
            pid: PID,
            local: local(40201),
            remote: addr("127.0.0.21:443"),
        };
        let ui = with_page(Page::Detail, "127.0.0.21", Some(id.clone()));
        let frame = render(&f, &ui, 80, 24);
        let text = words(&frame);
        assert!(
            text.contains("healthy · 2 HTTP/2 streams LEAKED 127.0.0.21"),
            "{frame}"
        );
        assert!(
            text.contains("HTTP/2 streams on it: 4 open, 2 leaked"),
            "{frame}"
        );
        // Leaked first (unread, then abandoned), then the others by id.
        // The stream rows: a stream id first (after the selection mark).
        let order: Vec<&str> = frame
            .lines()
            .filter(|l| {
                l.trim_start_matches(['"', '│', ' ', '▸'])
                    .starts_with(|c: char| c.is_ascii_digit())
            })
            .filter_map(|l| {
                ["unread", "abandoned", "caught up", "awaiting headers"]
                    .into_iter()
                    .find(|v| l.trim_end_matches(['│', '"', ' ']).ends_with(v))
            })
            .collect();
        assert_eq!(
            order,
            ["unread", "abandoned", "caught up", "awaiting headers"],
            "{frame}"
        );
        // The first, the unread one, is explained.
        assert!(
            text.contains(
                "Stream 7: LEAKED (unread) HTTP/2 stream 7 on 127.0.0.21: the response headers \
                 arrived 50.0s ago and the relay has not read one byte of the body since"
            ),
            "{frame}"
        );
        assert!(
            text.contains(
                "an unclosed body keeps the stream (its goroutine and buffer), not the connection"
            ),
            "{frame}"
        );
        assert_snapshot!("detail_h2_unread_80x24", frame);

        // Picking the abandoned one explains it instead.
        let mut ui = ui;
        ui.selected_stream = Some(StreamKey {
            pid: PID,
            stream: 0xc000_1009,
        });
        let frame = render(&f, &ui, 120, 40);
        let text = words(&frame);
        assert!(
            text.contains(
                "Stream 9: LEAKED (abandoned) HTTP/2 stream 9 on 127.0.0.21: the relay read 12.0 KiB \
                 of the body, the last read seen 30.0s ago"
            ),
            "{frame}"
        );
        assert!(text.contains("SSE"), "{frame}");
        assert_snapshot!("detail_h2_abandoned_120x40", frame);
    }

    /// The lines under the heading that starts with `heading`, up to the next blank line.
    fn section<'a>(frame: &'a str, heading: &str) -> Vec<&'a str> {
        frame
            .lines()
            .map(|l| l.trim_matches(|c: char| c == '"' || c == '│').trim())
            .skip_while(|l| !l.starts_with(heading))
            .skip(1)
            .take_while(|l| !l.is_empty() && !l.starts_with('└'))
            .collect()
    }

    #[test]
    fn a_leaks_detail_names_the_relays_line_that_obtained_it() {
        let f = site_session();
        // A connection leaked in CLOSE_WAIT: its last request's stack.
        let id = ConnId {
            pid: PID,
            local: local(40203),
            remote: addr("127.0.0.12:18080"),
        };
        let frame = render(
            &f,
            &with_page(Page::Detail, "127.0.0.12", Some(id)),
            120,
            40,
        );
        assert_eq!(
            section(&frame, "Obtained at (the relay's stack, its call site first)"),
            [
                "github.com/songquanpeng/one-api/relay/controller.relayImage /build/one-api/relay/controller/image.go:829",
                "github.com/songquanpeng/one-api/relay/controller.Relay /build/one-api/relay/controller/relay.go:61",
                "github.com/gin-gonic/gin.(*Context).Next /root/go/pkg/mod/github.com/gin-gonic/gin@v1.9.1/context.go:174",
            ],
            "{frame}"
        );
        // A healthy connection whose streams leaked: each leaked stream has its own site,
        // under the stream; the connection itself has none.
        let h2 = ConnId {
            pid: PID,
            local: local(40201),
            remote: addr("127.0.0.21:443"),
        };
        let mut ui = with_page(Page::Detail, "127.0.0.21", Some(h2));
        let frame = render(&f, &ui, 120, 40);
        let text = words(&frame);
        assert!(text.contains("Stream 7: LEAKED (unread)"), "{frame}");
        let stack = section(
            &frame,
            "Obtained at (the relay's stack, its call site first)",
        );
        assert_eq!(
            stack.first().copied(),
            Some("github.com/songquanpeng/one-api/relay/controller.relayImage /build/one-api/relay/controller/image.go:829"),
            "{frame}"
        );
        assert_eq!(
            frame.matches("Obtained at").count(),
            1,
            "the stream's site only:\n{frame}"
        );
        let timeline = frame.find("Timeline").expect("a timeline");
        assert!(
            frame.find("Obtained at").is_some_and(|at| at < timeline),
            "with the stream, above the connection's timeline:\n{frame}"
        );
        // Stream 9, picked: its own site.
        ui.selected_stream = Some(StreamKey {
            pid: PID,
            stream: 0xc000_1009,
        });
        let frame = render(&f, &ui, 120, 40);
        assert!(
            words(&frame).contains("Stream 9: LEAKED (abandoned)"),
            "{frame}"
        );
        assert_eq!(
            section(&frame, "Obtained at").first().copied(),
            Some("github.com/songquanpeng/one-api/relay/controller.relayChat /build/one-api/relay/controller/chat.go:212"),
            "{frame}"
        );
        // A stream that is not leaked: no site is claimed for it.
        ui.selected_stream = Some(StreamKey {
            pid: PID,
            stream: 0xc000_100b,
        });
        assert!(!render(&f, &ui, 120, 40).contains("Obtained at"));
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
