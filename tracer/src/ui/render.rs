//! Drawing: one frame from the view-model, the UI state, the history and the session. Reads
//! only; never changes any of them (selection highlight and scrolling are worked out here
//! from the state, per frame).

use ratatui::{
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{
        Axis, Block, Chart, Clear, Dataset, GraphType, HighlightSpacing, Paragraph, Row, Table,
        TableState, Wrap,
    },
    Frame,
};

use crate::model::{classify::Graces, snapshot::HostSummary, state_name, Target};

use super::{
    explain,
    state::{effective, Page, UiState},
    trend::Trend,
    units,
    view::{ConnRow, View},
};

/// Below this the UI says so instead of drawing.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;

/// Where the data comes from, for the header.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceLabel {
    Live,
    Replay {
        file: String,
        speed: String,
        ended: bool,
    },
}

/// What stays the same for a whole session.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub source: SourceLabel,
    pub graces: Graces,
}

/// Everything one frame shows.
pub struct Screen<'a> {
    pub view: &'a View,
    pub ui: &'a UiState,
    pub trend: &'a Trend,
    pub session: &'a Session,
}

const LEAK: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().fg(Color::DarkGray);
const HEAD: Style = Style::new().add_modifier(Modifier::BOLD);
const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
const SERIES: [Color; 6] = [
    Color::Red,
    Color::Yellow,
    Color::Magenta,
    Color::Cyan,
    Color::Blue,
    Color::Green,
];

pub fn draw(frame: &mut Frame, s: &Screen) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "terminal too small: {}x{} (tracer needs at least {MIN_WIDTH}x{MIN_HEIGHT}); enlarge it or press q",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, s);
    match s.ui.page {
        Page::Hosts => draw_hosts(frame, body, s),
        Page::Connections => draw_connections(frame, body, s),
        Page::Detail => draw_detail(frame, body, s),
        Page::Trend => draw_trend(frame, body, s),
    }
    draw_footer(frame, footer, s);
    if s.ui.help {
        draw_help(frame, body);
    }
}

fn targets_text(targets: &[Target]) -> String {
    match targets {
        [] => "no target process yet".into(),
        [t] if t.comm.is_empty() => format!("pid {}", t.pid),
        [t] => format!("{} (pid {})", t.comm, t.pid),
        [first, ..] if targets.iter().all(|t| t.comm == first.comm) && targets.len() <= 3 => {
            let pids: Vec<String> = targets.iter().map(|t| t.pid.to_string()).collect();
            format!("{} (pids {})", first.comm, pids.join(", "))
        }
        [first, ..] if targets.iter().all(|t| t.comm == first.comm) => {
            format!("{} ({} processes)", first.comm, targets.len())
        }
        _ => {
            let each: Vec<String> = targets
                .iter()
                .map(|t| format!("{} {}", t.comm, t.pid))
                .collect();
            each.join(", ")
        }
    }
}

fn draw_header(frame: &mut Frame, area: Rect, s: &Screen) {
    let snap = &s.view.snapshot;
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    let mut first: Vec<Span> = vec![Span::styled(" tracer ", bar.add_modifier(Modifier::BOLD))];
    let source = match &s.session.source {
        SourceLabel::Live => " LIVE ".to_owned(),
        SourceLabel::Replay {
            file,
            speed,
            ended: false,
        } => format!(" REPLAY {file} {speed} "),
        SourceLabel::Replay {
            file, ended: true, ..
        } => format!(" REPLAY {file} (ended) "),
    };
    first.push(Span::styled(
        source,
        Style::new().bg(Color::Cyan).fg(Color::Black),
    ));
    if s.ui.paused {
        first.push(Span::styled(
            " PAUSED ",
            Style::new().bg(Color::Yellow).fg(Color::Black),
        ));
    }
    let uptime = s
        .trend
        .started_ns()
        .map_or(0, |t| s.view.now_ns.saturating_sub(t));
    let rate = s
        .trend
        .event_rate()
        .map_or_else(|| "–".to_owned(), units::rate);
    let lost = snap.kernel.events_lost;
    let badges: usize = first.iter().map(|span| span.content.chars().count()).sum();
    // What fits after the badges: the lost-event count matters more than the rate.
    let room = (area.width as usize).saturating_sub(badges);
    let targets = targets_text(&snap.targets);
    let up = format!(" · up {}", units::span(uptime));
    let rate = format!(" · {rate} events/s");
    let lost_text = format!(" · {lost} lost");
    let mut middle = format!(" {targets}{up}{rate}");
    if middle.chars().count() + lost_text.chars().count() > room {
        middle = format!(" {targets}{up}");
    }
    if middle.chars().count() + lost_text.chars().count() > room {
        middle = format!(
            " {}",
            units::fit(&targets, room.saturating_sub(lost_text.chars().count() + 1))
        );
    }
    first.push(Span::raw(middle));
    first.push(Span::styled(
        lost_text,
        if lost > 0 { LEAK } else { Style::new() },
    ));
    if snap.kernel.conn_map_full > 0 {
        first.push(Span::styled(
            format!(" · {} not tracked (map full)", snap.kernel.conn_map_full),
            LEAK,
        ));
    }
    let g = &s.session.graces;
    let second = Line::from(vec![
        Span::raw(" open "),
        Span::styled(snap.open_total.to_string(), HEAD),
        Span::raw(" · leaked "),
        Span::styled(
            snap.leaked_total.to_string(),
            if snap.leaked_total > 0 { LEAK } else { HEAD },
        ),
        Span::styled(
            format!(
                " · graces: close_wait {}, unread {}, abandoned {}",
                units::grace(g.close_wait),
                units::grace(g.unread),
                units::grace(g.abandon)
            ),
            DIM,
        ),
        // The one hook that differs between kernels (6.3+ or the syscall fallback).
        Span::styled(
            snap.hooks
                .get("read")
                .map_or_else(String::new, |hook| format!(" · reads: {hook}")),
            DIM,
        ),
    ]);
    frame.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
}

/// A column: its title, width, and whether it may be dropped when space is short (higher
/// goes first; 0 never).
struct Col {
    title: &'static str,
    width: u16,
    drop: u8,
}

/// Which columns fit in `width` besides `flex_min` for the flexible ones, dropping the most
/// droppable first. Returns the kept indices and the width left for the flexible columns.
fn fit_columns(cols: &[Col], width: u16, flex_min: u16, flex_count: u16) -> (Vec<usize>, u16) {
    let mut kept: Vec<usize> = (0..cols.len()).collect();
    loop {
        let fixed: u16 = kept.iter().map(|&i| cols[i].width + 1).sum();
        let needed = fixed + flex_min + flex_count.saturating_sub(1);
        if needed <= width {
            return (kept, width - fixed - flex_count.saturating_sub(1));
        }
        let Some(worst) = kept
            .iter()
            .copied()
            .filter(|&i| cols[i].drop > 0)
            .max_by_key(|&i| (cols[i].drop, i))
        else {
            return (kept, flex_min.min(width));
        };
        kept.retain(|&i| i != worst);
    }
}

fn right(s: String, width: u16) -> String {
    format!("{s:>w$}", w = width as usize)
}

/// A sparkline of `values` in exactly `width` characters (right-aligned; the oldest values
/// fall off the left if there are too many).
fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    let shown = &values[values.len().saturating_sub(width)..];
    let mut s = " ".repeat(width - shown.len());
    for &v in shown {
        s.push(if v == 0 || max == 0 {
            ' '
        } else {
            BARS[((v * 7).div_ceil(max)) as usize]
        });
    }
    s
}

/// The row window that keeps `selected` visible in `height` rows.
fn scroll(selected: usize, height: usize) -> usize {
    if height == 0 {
        0
    } else {
        selected.saturating_sub(height - 1)
    }
}

fn filters_text(ui: &UiState, sort: &str) -> String {
    let mut t = format!(" sort: {sort} · reason: {} ", ui.reason_filter.label());
    if !ui.host_filter.is_empty() {
        t.push_str(&format!("· filter: {} ", ui.host_filter));
    }
    t
}

/// The host as listed: with its provider when the catalogue knows it (after the name, so a
/// narrow column cuts the provider, not the name).
fn host_label(h: &HostSummary) -> String {
    match &h.provider {
        Some(provider) => format!("{} ({provider})", h.host),
        None => h.host.clone(),
    }
}

/// A bordered block with `title` on the left and `right` on the right when both fit.
fn titled<'a>(title: String, right: String, width: u16) -> Block<'a> {
    let fits = title.chars().count() + right.chars().count() + 4 <= width as usize;
    let block = Block::bordered().title(Line::styled(title, HEAD));
    if fits {
        block.title_top(Line::from(right).right_aligned())
    } else {
        block
    }
}

fn draw_hosts(frame: &mut Frame, area: Rect, s: &Screen) {
    let hosts = s.view.listed_hosts(s.ui, s.trend);
    let total_hosts = s.view.snapshot.hosts.len();
    let title = if hosts.len() == total_hosts {
        format!(" Upstream hosts ({total_hosts}) ")
    } else {
        format!(" Upstream hosts ({} of {total_hosts}) ", hosts.len())
    };
    let block = titled(
        title,
        filters_text(s.ui, s.ui.host_sort.label()),
        area.width,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if hosts.is_empty() {
        let text = if total_hosts == 0 {
            "No upstream connection seen yet: waiting for the target to connect somewhere."
                .to_owned()
        } else {
            "No host matches the filters (Esc clears the text filter, r cycles the reason)."
                .to_owned()
        };
        frame.render_widget(
            Paragraph::new(text).style(DIM).wrap(Wrap { trim: true }),
            inner,
        );
        return;
    }
    let wide = inner.width >= 100;
    let cols = [
        Col {
            title: "OPEN",
            width: 4,
            drop: 0,
        },
        Col {
            title: "LEAKED",
            width: 6,
            drop: 0,
        },
        Col {
            title: if wide { "CLOSE_WAIT" } else { "C_WAIT" },
            width: if wide { 10 } else { 6 },
            drop: 0,
        },
        Col {
            title: "UNREAD",
            width: 6,
            drop: 0,
        },
        Col {
            title: if wide { "ABANDONED" } else { "ABAND" },
            width: if wide { 9 } else { 5 },
            drop: 0,
        },
        Col {
            title: if wide { "CLOSED_UNREAD" } else { "CL_UNRD" },
            width: if wide { 13 } else { 7 },
            drop: 3,
        },
        Col {
            title: "CONN/S",
            width: 6,
            drop: 2,
        },
        Col {
            title: "OLDEST",
            width: 6,
            drop: 4,
        },
    ];
    // One column goes to the highlight symbol; HOST and TREND share what is left.
    let (kept, flex) = fit_columns(&cols, inner.width.saturating_sub(1), 14, 1);
    // The host name first (up to 32 columns), the trend gets the rest if that is 6 or more.
    let show_trend = flex >= 14 + 1 + 6;
    let host_w = if show_trend {
        (flex - 7).clamp(14, 32)
    } else {
        flex
    };
    let trend_w = if show_trend { flex - host_w - 1 } else { 0 };

    let mut widths = vec![Constraint::Length(host_w)];
    widths.extend(kept.iter().map(|&i| Constraint::Length(cols[i].width)));
    let mut head: Vec<String> = vec!["HOST".into()];
    head.extend(
        kept.iter()
            .map(|&i| right(cols[i].title.into(), cols[i].width)),
    );
    if show_trend {
        widths.push(Constraint::Length(trend_w));
        head.push(
            if trend_w >= 16 {
                "LEAKED OVER TIME"
            } else {
                "TREND"
            }
            .into(),
        );
    }

    let cells = |h: &HostSummary| -> Vec<String> {
        let values = [
            h.open.to_string(),
            h.leaked.to_string(),
            h.by_reason.close_wait.to_string(),
            h.by_reason.unread.to_string(),
            h.by_reason.abandoned.to_string(),
            h.closed_unread_total.to_string(),
            s.trend
                .open_rate(&h.host)
                .map_or_else(|| "–".into(), units::rate),
            h.oldest_leak_age_s.map_or_else(|| "–".into(), units::secs),
        ];
        kept.iter()
            .map(|&i| right(values[i].clone(), cols[i].width))
            .collect()
    };
    let mut rows = Vec::new();
    for h in &hosts {
        let mut row = vec![units::fit(&host_label(h), host_w as usize)];
        row.extend(cells(h));
        if show_trend {
            row.push(sparkline(
                &s.trend.leaked_series(&h.host, trend_w as usize),
                trend_w as usize,
            ));
        }
        let style = if h.leaked > 0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        rows.push(Row::new(row).style(style));
    }

    // The totals row stays at the bottom, under the scrolling rows.
    let [list_area, total_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    let listed: Vec<String> = hosts.iter().map(|h| h.host.clone()).collect();
    let selected = effective(s.ui.selected_host.as_ref(), &listed)
        .and_then(|sel| listed.iter().position(|h| h == sel))
        .unwrap_or(0);
    let visible = list_area.height.saturating_sub(1) as usize;
    let mut state = TableState::new()
        .with_selected(Some(selected))
        .with_offset(scroll(selected, visible));
    let table = Table::new(rows, widths.clone())
        .header(Row::new(head).style(HEAD))
        .column_spacing(1)
        .row_highlight_style(SELECTED)
        .highlight_symbol("▸")
        .highlight_spacing(HighlightSpacing::Always);
    frame.render_stateful_widget(table, list_area, &mut state);

    let sum = |f: fn(&HostSummary) -> u64| hosts.iter().map(|h| f(h)).sum::<u64>();
    let rate: f64 = hosts
        .iter()
        .filter_map(|h| s.trend.open_rate(&h.host))
        .sum();
    let oldest = hosts
        .iter()
        .filter_map(|h| h.oldest_leak_age_s)
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
    let values = [
        sum(|h| h.open).to_string(),
        sum(|h| h.leaked).to_string(),
        sum(|h| h.by_reason.close_wait).to_string(),
        sum(|h| h.by_reason.unread).to_string(),
        sum(|h| h.by_reason.abandoned).to_string(),
        sum(|h| h.closed_unread_total).to_string(),
        if s.trend.has_rates() {
            units::rate(rate)
        } else {
            "–".into()
        },
        oldest.map_or_else(|| "–".into(), units::secs),
    ];
    let label = match hosts.len() {
        1 => "TOTAL (1 host)".to_owned(),
        n => format!("TOTAL ({n} hosts)"),
    };
    let mut total = vec![units::fit(&label, host_w as usize)];
    total.extend(
        kept.iter()
            .map(|&i| right(values[i].clone(), cols[i].width)),
    );
    if show_trend {
        total.push(sparkline(
            &s.trend.leaked_total_series(trend_w as usize),
            trend_w as usize,
        ));
    }
    let totals = Table::new([Row::new(total).style(HEAD)], widths)
        .column_spacing(1)
        .highlight_symbol(" ")
        .highlight_spacing(HighlightSpacing::Always);
    frame.render_stateful_widget(totals, total_area, &mut TableState::new());
}

fn verdict_text(row: &ConnRow) -> &'static str {
    row.verdict.map_or("ok", |r| r.as_str())
}

fn draw_connections(frame: &mut Frame, area: Rect, s: &Screen) {
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

fn draw_detail(frame: &mut Frame, area: Rect, s: &Screen) {
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
                crate::model::table::Origin::Traced => "traced from connect()",
                crate::model::table::Origin::PreExisting => "open before tracing",
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
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_trend(frame: &mut Frame, area: Rect, s: &Screen) {
    let block = Block::bordered().title(Line::styled(
        " Leaked connections over time (top hosts) ",
        HEAD,
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let top = s.trend.top_hosts(SERIES.len());
    let series: Vec<(String, Vec<(f64, f64)>)> = if top.is_empty() {
        vec![("all hosts".to_owned(), s.trend.chart_series(None))]
    } else {
        top.iter()
            .map(|h| (h.clone(), s.trend.chart_series(Some(h))))
            .collect()
    };
    let legend_rows = if top.is_empty() {
        1
    } else {
        top.len().div_ceil(2) as u16
    };
    let [chart_area, legend_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(legend_rows)]).areas(inner);
    let x_max = series
        .iter()
        .flat_map(|(_, d)| d.last().map(|p| p.0))
        .fold(10.0_f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, d)| d.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max);
    let datasets: Vec<Dataset> = series
        .iter()
        .enumerate()
        .map(|(i, (_, data))| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(SERIES[i % SERIES.len()]))
                .data(data)
        })
        .collect();
    let chart = Chart::new(datasets)
        .x_axis(
            Axis::default()
                .bounds([0.0, x_max])
                .labels(vec![
                    Span::raw("t+0"),
                    Span::raw(format!("t+{}", units::secs(x_max / 2.0))),
                    Span::raw(format!("t+{}", units::secs(x_max))),
                ])
                .style(DIM),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, y_max])
                .labels(vec![Span::raw("0"), Span::raw(format!("{y_max:.0}"))])
                .style(DIM),
        )
        .legend_position(None);
    frame.render_widget(chart, chart_area);
    let mut legend = Vec::new();
    if top.is_empty() {
        legend.push(Line::styled(
            " No leaks so far in this session: the line is all hosts together.",
            DIM,
        ));
    } else {
        let half = (legend_area.width / 2) as usize;
        for pair in top.chunks(2).enumerate() {
            let (row, hosts) = pair;
            let mut spans = Vec::new();
            for (j, host) in hosts.iter().enumerate() {
                let i = row * 2 + j;
                let now = s.view.host(host).map_or(0, |h| h.leaked);
                let text = units::fit(&format!("{host}: {now} leaked now"), half.saturating_sub(4));
                spans.push(Span::styled(
                    " ■ ",
                    Style::new().fg(SERIES[i % SERIES.len()]),
                ));
                spans.push(Span::raw(format!("{text:<w$}", w = half.saturating_sub(3))));
            }
            legend.push(Line::from(spans));
        }
    }
    frame.render_widget(Paragraph::new(legend), legend_area);
}

fn draw_footer(frame: &mut Frame, area: Rect, s: &Screen) {
    let line = if s.ui.editing_filter.is_some() {
        Line::from(vec![
            Span::styled(" filter hosts: ", HEAD),
            Span::raw(format!("{}█", s.ui.host_filter)),
            Span::styled("   Enter keep · Esc cancel", DIM),
        ])
    } else if let Some(message) = &s.ui.message {
        Line::styled(
            format!(" {message}"),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )
    } else {
        let keys: &[&str] = match s.ui.page {
            Page::Hosts => &[
                "↑↓ move",
                "Enter open",
                "Tab view",
                "s sort",
                "/ filter",
                "r reason",
                "p pause",
                "e export",
            ],
            Page::Connections => &[
                "↑↓ move",
                "Enter why",
                "Esc back",
                "s sort",
                "r reason",
                "Tab view",
                "p pause",
                "e export",
            ],
            Page::Detail => &["Esc back", "Tab view", "p pause", "e export"],
            Page::Trend => &["Tab view", "Esc back", "p pause", "e export"],
        };
        // Help and quit always show; the others while they fit, in order.
        let tail = " · ? help · q quit";
        let room = (area.width as usize).saturating_sub(tail.chars().count() + 1);
        let mut text = String::new();
        for key in keys {
            let next = if text.is_empty() {
                (*key).to_owned()
            } else {
                format!("{text} · {key}")
            };
            if next.chars().count() > room {
                break;
            }
            text = next;
        }
        Line::styled(format!(" {text}{tail}"), DIM)
    };
    frame.render_widget(Paragraph::new(line), area);
}

const HELP: &[(&str, &str)] = &[
    ("↑ ↓  j k", "move; PgUp PgDn, g G: page, top, bottom"),
    ("Enter", "open: host → its connections → one connection"),
    ("Esc", "back (on the hosts: clear the text filter)"),
    ("Tab", "hosts → connections → trend"),
    ("s", "change the sort of this list"),
    ("/", "filter hosts by text (name or address)"),
    ("r", "show all / leaked / one reason"),
    ("p", "pause the display (a replay pauses its clock)"),
    ("e", "export the shown snapshot as JSON to a file"),
    ("q  Ctrl-C", "quit"),
    ("", ""),
    ("close_wait", "upstream closed; this process never did"),
    ("unread", "response bytes wait; nothing reads them"),
    ("abandoned", "last read got data; nobody read again"),
    ("CL_UNRD", "closed before reading the response (no leak)"),
    ("CONN/S", "connections opened per second, last 10s"),
];

fn draw_help(frame: &mut Frame, body: Rect) {
    let width = body.width.min(64);
    let height = body.height.min(HELP.len() as u16 + 3);
    let area = Rect {
        x: body.x + (body.width - width) / 2,
        y: body.y + (body.height - height) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<11}"), HEAD),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::styled(" any key closes this help", DIM));
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" Help ")
                .title_alignment(Alignment::Center),
        ),
        area,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use insta::assert_snapshot;
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::model::{
        tcp_state::CLOSE_WAIT, testkit::*, ConnTable, Input, KernelConn, KernelStats, Sample,
    };
    use crate::ui::state::{ConnId, Page};

    const GRACES: Graces = Graces {
        close_wait: Duration::from_secs(2),
        unread: Duration::from_secs(3),
        abandon: Duration::from_secs(4),
    };
    /// The session starts at 100 s of the monotonic clock; frames are drawn at 160 s.
    const START: u64 = 100 * SEC;
    const NOW: u64 = 160 * SEC;

    fn close_wait(port: u16, remote: &str, at: u64) -> KernelConn {
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

    fn unread(port: u16, remote: &str, at: u64) -> KernelConn {
        KernelConn {
            fd: Some(i32::from(port % 100)),
            recv_q: recv_q(130_048, at + SEC),
            ..established(kconn(port, remote, at), at)
        }
    }

    fn abandoned(port: u16, remote: &str, at: u64) -> KernelConn {
        KernelConn {
            fd: Some(i32::from(port % 100)),
            last_read_ns: Some(at + SEC),
            last_read_ret: 295,
            reads: 2,
            bytes_read: 295,
            ..established(kconn(port, remote, at), at)
        }
    }

    fn pooled(port: u16, remote: &str, at: u64) -> KernelConn {
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
    struct Fixture {
        table: ConnTable,
        trend: Trend,
    }

    fn session(conns: &[KernelConn]) -> Fixture {
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
                now_ns: at,
                kernel,
                sockets: Some(vec![]),
                stats,
            }));
        }
        trend.catch_up(&table, NOW, &GRACES);
        Fixture { table, trend }
    }

    fn fixture_relay() -> Vec<KernelConn> {
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

    fn render(f: &Fixture, ui: &UiState, width: u16, height: u16) -> String {
        let session = Session {
            source: SourceLabel::Live,
            graces: GRACES,
        };
        let view = View::build(&f.table, NOW, &GRACES);
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
        terminal
            .draw(|frame| {
                draw(
                    frame,
                    &Screen {
                        view: &view,
                        ui,
                        trend: &f.trend,
                        session: &session,
                    },
                )
            })
            .expect("draws");
        terminal.backend().to_string()
    }

    fn with_page(page: Page, host: &str, conn: Option<ConnId>) -> UiState {
        UiState {
            page,
            selected_host: Some(host.into()),
            selected_conn: conn,
            ..UiState::new()
        }
    }

    #[test]
    fn empty_session_80x24() {
        let f = session(&[]);
        assert_snapshot!(render(&f, &UiState::new(), 80, 24));
    }

    #[test]
    fn one_leaking_host_80x24() {
        let f = session(&[
            close_wait(40001, "127.0.0.12:18080", 105 * SEC),
            close_wait(40002, "127.0.0.12:18080", 125 * SEC),
            pooled(40003, "127.0.0.12:18080", 101 * SEC),
        ]);
        assert_snapshot!(render(&f, &UiState::new(), 80, 24));
    }

    #[test]
    fn fixture_hosts_80x24_and_120x40() {
        let f = session(&fixture_relay());
        assert_snapshot!("fixture_hosts_80x24", render(&f, &UiState::new(), 80, 24));
        assert_snapshot!("fixture_hosts_120x40", render(&f, &UiState::new(), 120, 40));
    }

    #[test]
    fn many_hosts_scroll_to_the_selection() {
        let conns: Vec<KernelConn> = (0..40u16)
            .map(|i| {
                let remote = format!("10.0.{}.{}:443", i / 10, i % 10 + 1);
                if i % 3 == 0 {
                    close_wait(41000 + i, &remote, 110 * SEC)
                } else {
                    pooled(41000 + i, &remote, 110 * SEC)
                }
            })
            .collect();
        let f = session(&conns);
        let ui = UiState {
            selected_host: Some("10.0.3.10".into()),
            ..UiState::new()
        };
        let frame = render(&f, &ui, 80, 24);
        assert!(
            frame.contains("▸10.0.3.10"),
            "the selected host is scrolled into view:\n{frame}"
        );
        assert_snapshot!(frame);
    }

    #[test]
    fn long_hostnames_are_cut_with_an_ellipsis() {
        // Host names come from naming (issue 4); a snapshot's host field is what is shown.
        let f = session(&fixture_relay());
        let mut view = View::build(&f.table, NOW, &GRACES);
        for h in &mut view.snapshot.hosts {
            h.host = format!(
                "{}.very-long-provider-name.openai.azure.example.com",
                h.host.replace(['.', ':'], "-")
            );
        }
        let session = Session {
            source: SourceLabel::Replay {
                file: "relay.rec".into(),
                speed: "1x".into(),
                ended: false,
            },
            graces: GRACES,
        };
        let ui = UiState {
            paused: true,
            ..UiState::new()
        };
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        terminal
            .draw(|frame| {
                draw(
                    frame,
                    &Screen {
                        view: &view,
                        ui: &ui,
                        trend: &f.trend,
                        session: &session,
                    },
                )
            })
            .expect("draws");
        assert_snapshot!(terminal.backend().to_string());
    }

    #[test]
    fn connections_of_a_host_80x24_and_120x40() {
        let f = session(&fixture_relay());
        let ui = with_page(Page::Connections, "127.0.0.12", None);
        assert_snapshot!("connections_80x24", render(&f, &ui, 80, 24));
        assert_snapshot!("connections_120x40", render(&f, &ui, 120, 40));
    }

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
    fn trend_80x24() {
        let f = session(&fixture_relay());
        assert_snapshot!(render(
            &f,
            &with_page(Page::Trend, "127.0.0.12", None),
            80,
            24
        ));
    }

    #[test]
    fn help_and_filter_input_80x24() {
        let f = session(&fixture_relay());
        let ui = UiState {
            help: true,
            ..UiState::new()
        };
        assert_snapshot!("help_80x24", render(&f, &ui, 80, 24));
        let ui = UiState {
            host_filter: "127.0.0.1".into(),
            editing_filter: Some(String::new()),
            ..UiState::new()
        };
        assert_snapshot!("filter_80x24", render(&f, &ui, 80, 24));
    }

    #[test]
    fn tiny_terminals_say_so() {
        let f = session(&fixture_relay());
        for (w, h) in [(40, 10), (20, 4), (1, 1), (59, 40), (200, 11)] {
            let frame = render(&f, &UiState::new(), w, h);
            if w >= 20 {
                assert!(frame.contains("terminal too small"), "{w}x{h}:\n{frame}");
            }
        }
        // Nothing to draw on at all: no panic either.
        let mut terminal = Terminal::new(TestBackend::new(0, 0)).expect("terminal");
        let view = View::build(&f.table, NOW, &GRACES);
        let session = Session {
            source: SourceLabel::Live,
            graces: GRACES,
        };
        let ui = UiState::new();
        terminal
            .draw(|frame| {
                draw(
                    frame,
                    &Screen {
                        view: &view,
                        ui: &ui,
                        trend: &f.trend,
                        session: &session,
                    },
                )
            })
            .expect("draws");
        assert_snapshot!("tiny_40x10", render(&f, &UiState::new(), 40, 10));
        // Just at the minimum, every page draws.
        for page in [Page::Hosts, Page::Connections, Page::Detail, Page::Trend] {
            let ui = with_page(
                page,
                "127.0.0.12",
                Some(ConnId {
                    pid: PID,
                    local: local(40001),
                    remote: addr("127.0.0.12:18080"),
                }),
            );
            let frame = render(&f, &ui, MIN_WIDTH, MIN_HEIGHT);
            assert!(!frame.contains("terminal too small"), "{page:?}:\n{frame}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(sparkline(&[0, 1, 2, 4], 6), "   ▃▅█");
        assert_eq!(sparkline(&[0, 0], 3), "   ");
        assert_eq!(sparkline(&[1, 2, 3], 2), "▆█");
        assert_eq!(scroll(3, 10), 0);
        assert_eq!(scroll(15, 10), 6);
        let cols = [
            Col {
                title: "A",
                width: 5,
                drop: 0,
            },
            Col {
                title: "B",
                width: 5,
                drop: 1,
            },
            Col {
                title: "C",
                width: 5,
                drop: 2,
            },
        ];
        assert_eq!(fit_columns(&cols, 40, 10, 1), (vec![0, 1, 2], 22));
        assert_eq!(fit_columns(&cols, 25, 10, 1), (vec![0, 1], 13));
        assert_eq!(
            fit_columns(&cols, 12, 10, 1),
            (vec![0], 10),
            "too narrow: the flexible column gets its minimum"
        );
        assert_eq!(
            wrap("aaaa bbbb cccc", 12, "  "),
            vec![Line::from("  aaaa bbbb"), Line::from("  cccc")]
        );
        let t = |pids: &[u32], comm: &str| {
            targets_text(
                &pids
                    .iter()
                    .map(|&pid| Target {
                        pid,
                        comm: comm.into(),
                    })
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(t(&[], ""), "no target process yet");
        assert_eq!(t(&[7], "relay"), "relay (pid 7)");
        assert_eq!(t(&[7, 8], "relay"), "relay (pids 7, 8)");
        assert_eq!(t(&[1, 2, 3, 4], "relay"), "relay (4 processes)");
    }

    #[test]
    fn empty_and_filtered_pages_say_why_they_are_empty() {
        let f = session(&fixture_relay());
        let ui = UiState {
            host_filter: "nomatch".into(),
            ..UiState::new()
        };
        assert!(render(&f, &ui, 80, 24).contains("No host matches the filters"));
        let ui = with_page(Page::Connections, "10.9.9.9", None);
        assert!(render(&f, &ui, 80, 24).contains("10.9.9.9 has no open connection right now"));
        let gone = ConnId {
            pid: PID,
            local: local(1),
            remote: addr("127.0.0.12:18080"),
        };
        let ui = with_page(Page::Detail, "127.0.0.12", Some(gone));
        assert!(render(&f, &ui, 80, 24).contains("no longer open"));
    }
}
