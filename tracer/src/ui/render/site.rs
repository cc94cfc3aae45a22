//! One call site's page: what it obtained and how much of it leaked, its leaks (Enter opens
//! one's detail, as from the connections page), and its full stack, the call site marked.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{HighlightSpacing, Paragraph, Row, Table, TableState, Wrap},
    Frame,
};

use super::{
    sites::{frame_text_label, site_label},
    table::{fit_columns, right, scroll, titled, Col},
    Screen, DIM, HEAD, LEAK, SELECTED,
};
use crate::{
    model::{leak::LeakKind, snapshot::SiteSummary},
    ui::{state::effective, units, view::SiteLeakRow},
};

/// The site's figures: leaked of requests, by reason and kind; then the hosts.
fn summary(site: &SiteSummary) -> Vec<Line<'static>> {
    let leaked = Span::styled(
        format!("{} leaked", site.leaked),
        if site.leaked > 0 { LEAK } else { HEAD },
    );
    let mut text = format!(
        " of {} requests ({})",
        site.requests_total,
        units::percent(site.leaked, site.requests_total)
    );
    let reasons: Vec<String> = site
        .by_reason
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| format!("{} {n}", reason.as_str()))
        .collect();
    if !reasons.is_empty() {
        text.push_str(&format!(": {}", reasons.join(", ")));
    }
    let streams = site.by_kind.get(LeakKind::H2Stream);
    match streams {
        0 => {}
        1 => text.push_str(" (1 HTTP/2 stream)"),
        n => text.push_str(&format!(" ({n} HTTP/2 streams)")),
    }
    let mut lines = vec![Line::from(vec![Span::raw(" "), leaked, Span::raw(text)])];
    if !site.hosts.is_empty() {
        let mut hosts = format!(" to {}", site.hosts.join(", "));
        if !site.providers.is_empty() {
            hosts.push_str(&format!(" ({})", site.providers.join(", ")));
        }
        lines.push(Line::from(hosts));
    }
    lines
}

/// What a leak is: a connection, or stream N (`h2 #7`).
fn kind_text(row: &SiteLeakRow) -> String {
    match row.leak.kind {
        LeakKind::Connection => "conn".into(),
        LeakKind::H2Stream => row
            .leak
            .stream_id
            .map_or_else(|| "h2 #?".into(), |id| format!("h2 #{id}")),
    }
}

/// The site's leaks, the selected one highlighted.
fn draw_leaks(frame: &mut Frame, area: Rect, s: &Screen, leaks: &[SiteLeakRow]) {
    if leaks.is_empty() {
        let text = if s.ui.reason_filter.admits(None) {
            " None of its responses is leaked now."
        } else {
            " None of its leaks has that reason (r cycles the reason filter)."
        };
        frame.render_widget(Paragraph::new(text).style(DIM), area);
        return;
    }
    let cols = [
        Col {
            title: "KIND",
            width: 7,
            drop: 0,
        },
        Col {
            title: "REASON",
            width: 10,
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
            drop: 1,
        },
        Col {
            title: "PID/FD",
            width: 10,
            drop: 2,
        },
    ];
    // HOST always shows; LOCAL when there is room for both.
    let (kept, flex) = fit_columns(&cols, area.width.saturating_sub(1), 16, 1);
    let show_local = flex >= 18 + 1 + 21;
    let local_w = if show_local { 21 } else { 0 };
    let host_w = if show_local { flex - local_w - 1 } else { flex };
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
    widths.push(Constraint::Length(host_w));
    head.push("HOST".into());
    if show_local {
        widths.push(Constraint::Length(local_w));
        head.push("LOCAL".into());
    }
    let rows: Vec<Row> = leaks
        .iter()
        .map(|row| {
            let l = row.leak;
            let values = [
                kind_text(row),
                l.reason.as_str().to_owned(),
                right(units::secs(l.age_s), 6),
                right(units::secs(l.idle_s), 6),
                right(
                    format!(
                        "{}/{}",
                        l.pid,
                        l.fd.map_or_else(|| "?".into(), |fd| fd.to_string())
                    ),
                    10,
                ),
            ];
            let mut cells: Vec<String> = kept.iter().map(|&i| values[i].clone()).collect();
            let host = match &l.provider {
                Some(provider) => format!("{} ({provider})", l.host),
                None => l.host.clone(),
            };
            cells.push(units::fit(&host, host_w as usize));
            if show_local {
                cells.push(if row.conn.is_some() {
                    l.local.to_string()
                } else {
                    "–".into()
                });
            }
            Row::new(cells).style(LEAK)
        })
        .collect();
    let listed: Vec<_> = leaks.iter().map(SiteLeakRow::listed).collect();
    let selected = effective(s.ui.selected_leak.as_ref(), &listed)
        .and_then(|sel| listed.iter().position(|l| l == sel))
        .unwrap_or(0);
    let visible = area.height.saturating_sub(1) as usize;
    let mut state = TableState::new()
        .with_selected(Some(selected))
        .with_offset(scroll(selected, visible));
    let table = Table::new(rows, widths)
        .header(Row::new(head).style(HEAD))
        .column_spacing(1)
        .row_highlight_style(SELECTED)
        .highlight_symbol("▸")
        .highlight_spacing(HighlightSpacing::Always);
    frame.render_stateful_widget(table, area, &mut state);
}

/// Every frame of the site's stack, innermost first: Go's own dimmed, the relay's plain, the
/// call site marked. When they do not all fit in `height` lines, Go's frames inside the call
/// site go first (one line says how many), then the outermost.
fn stack_lines(site: &SiteSummary, width: usize, height: usize) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled(
        " Stack (innermost first; → the call site, Go's own frames dimmed)",
        HEAD,
    )];
    let frames = if site.frames.is_empty() {
        &site.stack
    } else {
        &site.frames
    };
    if frames.is_empty() {
        lines.push(Line::styled(
            "   not known (its stack was dropped, or the recording began after it)",
            DIM,
        ));
        return lines;
    }
    let call_site = site.stack.first();
    let room = height.saturating_sub(1).max(1);
    let inner = call_site
        .and_then(|c| frames.iter().position(|f| f == c))
        .unwrap_or(0);
    // When everything does not fit, the innermost of Go's frames inside the call site
    // collapse to one line, as many as needed.
    let skip = if frames.len() > room && inner > 0 {
        let skip = inner.min(frames.len() + 1 - room);
        lines.push(Line::styled(
            format!("   … {skip} frames of Go's HTTP client"),
            DIM,
        ));
        skip
    } else {
        0
    };
    let left = frames.len() - skip;
    let fit = room.saturating_sub(usize::from(skip > 0));
    // The frames that fit, with a last line saying how many do not.
    let shown = if left > fit {
        // The call site at least.
        fit.saturating_sub(1).max(1)
    } else {
        left
    };
    for frame in frames.iter().skip(skip).take(shown) {
        let (mark, style) = if Some(frame) == call_site {
            (" → ", LEAK)
        } else if site.stack.contains(frame) {
            ("   ", Style::new())
        } else {
            ("   ", DIM)
        };
        let label = frame_text_label(frame, width.saturating_sub(3));
        lines.push(Line::styled(format!("{mark}{label}"), style));
    }
    if shown < left {
        lines.push(Line::styled(
            format!("   … {} more frames", left - shown),
            DIM,
        ));
    }
    lines
}

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
    let site = s.ui.selected_site.as_ref().and_then(|c| s.view.site(c));
    let title = match site {
        // The title gets what the right-hand filter leaves of the width.
        Some(site) => format!(
            " Site {} ",
            site_label(site, (area.width as usize).saturating_sub(30))
        ),
        None => " Site ".to_owned(),
    };
    let block = titled(
        title,
        format!(" reason: {} ", s.ui.reason_filter.label()),
        area.width,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (Some(site), Some(call_site)) = (site, s.ui.selected_site.as_ref()) else {
        let text = "This call site is no longer in the snapshot (its process exited). Esc goes \
                    back to the sites.";
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), inner);
        return;
    };
    let leaks = s.view.site_leaks(call_site, s.ui);
    let frames = site.frames.len().max(site.stack.len()).max(1);
    let avail = inner.height.saturating_sub(3);
    // The stack first (the call site in it must show), the leaks at least a few rows; the
    // leaks list scrolls.
    let want_leaks = leaks.len().max(1) as u16 + u16::from(!leaks.is_empty());
    let want_stack = frames as u16 + 2;
    let leaks_h = want_leaks.min(avail.saturating_sub(want_stack).max(4));
    let [summary_area, leaks_area, stack_area] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(leaks_h),
        Constraint::Min(0),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(summary(site)), summary_area);
    draw_leaks(frame, leaks_area, s, &leaks);
    let mut lines = vec![Line::from("")];
    lines.extend(stack_lines(
        site,
        stack_area.width as usize,
        stack_area.height.saturating_sub(1) as usize,
    ));
    frame.render_widget(Paragraph::new(lines), stack_area);
}

#[cfg(test)]
mod tests {
    use insta::assert_snapshot;

    use crate::model::{site::CallSite, LeakReason};
    use crate::ui::render::testkit::*;
    use crate::ui::state::{ListedLeak, Page, ReasonFilter, StreamKey, UiState};

    const APP: &str = "github.com/songquanpeng/one-api/relay/controller";

    fn site_page(function: &str, file: &str, line: u32) -> UiState {
        UiState {
            page: Page::Site,
            selected_site: Some(CallSite {
                function: format!("{APP}.{function}"),
                file: format!("/build/one-api/relay/controller/{file}"),
                line,
            }),
            ..UiState::new()
        }
    }

    /// The frame's rows that list a leak (KIND first), their words one space apart.
    fn leak_rows(frame: &str) -> Vec<String> {
        frame
            .lines()
            .map(|l| {
                l.trim_matches(|c: char| c == '"' || c == '│')
                    .trim_start_matches('▸')
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|l| l.starts_with("conn ") || l.starts_with("h2 #"))
            .collect()
    }

    #[test]
    fn a_sites_page_lists_its_leaks_and_its_whole_stack() {
        let f = site_session();
        let ui = site_page("relayImage", "image.go", 829);
        let frame = render(&f, &ui, 80, 24);
        assert!(
            frame.contains(
                "3 leaked of 12 requests (25%): close_wait 2, unread 1 (1 HTTP/2 stream)"
            ),
            "{frame}"
        );
        assert_eq!(
            leak_rows(&frame),
            [
                // KIND REASON AGE IDLE PID/FD HOST
                "conn close_wait 35.0s 34.5s 7/33 127.0.0.12",
                "conn close_wait 25.0s 24.5s 7/34 127.0.0.12",
                // Its age counts from the first sample that saw it.
                "h2 #7 unread 50.0s 50.0s 7/31 127.0.0.21",
            ],
            "{frame}"
        );
        // Innermost first; the call site marked; Go's frames and the relay's callers too.
        let stack: Vec<&str> = frame
            .lines()
            .skip_while(|l| !l.contains("Stack (innermost first"))
            .skip(1)
            .map(|l| l.trim_matches(|c: char| c == '"' || c == '│').trim())
            .take_while(|l| !l.starts_with('└'))
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            stack.first().copied(),
            Some("net/http.(*Transport).roundTrip /usr/lib/go/src/net/http/transport.go:590"),
            "{frame}"
        );
        let marked: Vec<&&str> = stack.iter().filter(|l| l.starts_with('→')).collect();
        assert_eq!(
            marked,
            [&"→ controller.relayImage /build/one-api/relay/controller/image.go:829"],
            "{frame}"
        );
        assert!(
            stack.iter().any(|l| l.contains("controller.Relay /build/one-api/relay/controller/relay.go:61")),
            "{frame}"
        );
        assert!(
            stack.iter().any(|l| l.contains("runtime.goexit")),
            "{frame}"
        );
        assert_snapshot!("site_80x24", frame);
        assert_snapshot!("site_120x40", render(&f, &ui, 120, 40));
    }

    #[test]
    fn when_the_stack_does_not_fit_gos_frames_inside_the_call_site_go_first() {
        let f = site_session();
        let ui = site_page("relayImage", "image.go", 829);
        let frame = render(&f, &ui, 80, 19);
        let stack: Vec<&str> = frame
            .lines()
            .skip_while(|l| !l.contains("Stack (innermost first"))
            .skip(1)
            .map(|l| l.trim_matches(|c: char| c == '"' || c == '│').trim())
            .take_while(|l| !l.starts_with('└'))
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            stack,
            [
                "… 5 frames of Go's HTTP client",
                "→ controller.relayImage /build/one-api/relay/controller/image.go:829",
                "controller.Relay /build/one-api/relay/controller/relay.go:61",
                "gin.(*Context).Next gin-gonic/gin@v1.9.1/context.go:174",
                "runtime.goexit /usr/lib/go/src/runtime/asm_amd64.s:1700",
            ],
            "{frame}"
        );
        // A line taller: only as many of Go's frames collapse as need to.
        let frame = render(&f, &ui, 80, 20);
        assert!(frame.contains("… 4 frames of Go's HTTP client"), "{frame}");
        assert!(
            frame.contains("net/http.(*Client).Do /usr/lib/go/src/net/http/client.go:590"),
            "{frame}"
        );
        assert!(!frame.contains("net/http.(*Client).do "), "{frame}");
        // Still shorter: the call site stays, the outer frames go.
        let frame = render(&f, &ui, 80, 17);
        assert!(frame.contains("→ controller.relayImage"), "{frame}");
        assert!(frame.contains("more frames"), "{frame}");
        assert_eq!(
            leak_rows(&frame).len(),
            3,
            "the leaks keep their rows:\n{frame}"
        );
    }

    #[test]
    fn a_site_whose_stream_has_no_known_connection_lists_it_without_an_address() {
        let f = site_session();
        let mut ui = site_page("relayChat", "chat.go", 212);
        let frame = render(&f, &ui, 120, 40);
        let rows = leak_rows(&frame);
        assert_eq!(rows.len(), 2, "{frame}");
        assert!(
            rows.iter()
                .any(|r| r.starts_with("h2 #3 unread") && r.ends_with("(unknown connection) –")),
            "{frame}"
        );
        assert!(
            rows.iter().any(
                |r| r.starts_with("h2 #9 abandoned") && r.contains("127.0.0.21 10.1.0.5:40201")
            ),
            "{frame}"
        );
        // What Enter opens: stream 9 on its connection's detail; the other has none.
        let view = crate::ui::view::View::build(&f.table, NOW, &GRACES);
        let call_site = ui.selected_site.clone().expect("a site");
        let listed: Vec<ListedLeak> = view
            .site_leaks(&call_site, &ui)
            .iter()
            .map(|l| l.listed())
            .collect();
        let stream = |stream: u64| {
            Some(StreamKey {
                pid: crate::model::testkit::PID,
                stream,
            })
        };
        assert_eq!(
            listed
                .iter()
                .map(|l| (l.host.as_str(), l.stream, l.has_detail))
                .collect::<Vec<_>>(),
            [
                ("(unknown connection)", stream(0xc000_3003), false),
                ("127.0.0.21", stream(0xc000_1009), true),
            ]
        );
        // The reason filter applies to its leaks too.
        ui.reason_filter = ReasonFilter::Only(LeakReason::Abandoned);
        let rows = leak_rows(&render(&f, &ui, 120, 40));
        assert_eq!(rows.len(), 1);
        assert!(rows[0].starts_with("h2 #9 abandoned"), "{rows:?}");
        ui.reason_filter = ReasonFilter::Only(LeakReason::CloseWait);
        assert!(render(&f, &ui, 120, 40).contains("None of its leaks has that reason"));
        // A site without leaks says so.
        let frame = render(&f, &site_page("ListModels", "models.go", 57), 80, 24);
        assert!(frame.contains("0 leaked of 30 requests (0%)"), "{frame}");
        assert!(
            frame.contains("None of its responses is leaked now"),
            "{frame}"
        );
        // A site gone from the snapshot.
        let frame = render(&f, &site_page("Gone", "gone.go", 1), 80, 24);
        assert!(frame.contains("no longer in the snapshot"), "{frame}");
    }

    #[test]
    fn the_selected_leak_is_highlighted() {
        let f = site_session();
        let mut ui = site_page("relayImage", "image.go", 829);
        ui.selected_leak = Some(ListedLeak {
            conn: crate::model::ConnId {
                pid: crate::model::testkit::PID,
                local: crate::model::testkit::local(40201),
                remote: crate::model::testkit::addr("127.0.0.21:443"),
            },
            host: "127.0.0.21".into(),
            stream: Some(StreamKey {
                pid: crate::model::testkit::PID,
                stream: 0xc000_1007,
            }),
            has_detail: true,
        });
        let frame = render(&f, &ui, 80, 24);
        assert!(frame.lines().any(|l| l.contains("▸h2 #7")), "{frame}");
    }
}
