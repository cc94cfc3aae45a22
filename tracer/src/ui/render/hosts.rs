//! The hosts page: each upstream host with its open and leaked connections by reason (and,
//! when the Go-aware probes see HTTP/2 streams, how many of the leaks are streams), its
//! connection rate, its oldest leak and its leaks over time, and a totals row under the list.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    widgets::{HighlightSpacing, Paragraph, Row, Table, TableState, Wrap},
    Frame,
};

use super::{
    table::{filters_text, fit_columns, right, scroll, titled, Col},
    Screen, DIM, HEAD, SELECTED,
};
use crate::{
    model::{leak::LeakKind, snapshot::HostSummary, ByReason, LeakReason},
    ui::{state::effective, units},
};

/// A leak reason's column title: its name, or a shorter one on a narrow screen.
fn reason_title(reason: LeakReason, wide: bool) -> &'static str {
    match reason {
        LeakReason::CloseWait if !wide => "C_WAIT",
        LeakReason::Abandoned if !wide => "ABAND",
        LeakReason::CloseWait => "CLOSE_WAIT",
        LeakReason::Unread => "UNREAD",
        LeakReason::Abandoned => "ABANDONED",
    }
}

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
    let hosts = s.view.listed_hosts(s.ui, s.trend);
    let total_hosts = s.view.snapshot.hosts.len();
    let block = titled(
        title(hosts.len(), total_hosts),
        filters_text(s.ui, s.ui.host_sort.label()),
        area.width,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if hosts.is_empty() {
        draw_why_empty(frame, inner, total_hosts);
        return;
    }
    // The streams column shows only when there are streams: with the probes off (the
    // default) every leak is a connection and the column would always read 0.
    let streams = s
        .view
        .snapshot
        .hosts
        .iter()
        .any(|h| h.open_streams > 0 || h.by_kind.get(LeakKind::H2Stream) > 0);
    let columns = HostColumns::fit(inner.width, streams);
    // The totals row stays at the bottom, under the scrolling rows.
    let [list_area, total_area] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    draw_host_list(frame, list_area, s, &hosts, &columns);
    draw_totals(frame, total_area, s, &hosts, &columns);
}

fn title(listed: usize, total: usize) -> String {
    if listed == total {
        format!(" Upstream hosts ({total}) ")
    } else {
        format!(" Upstream hosts ({listed} of {total}) ")
    }
}

/// Nothing seen yet, or nothing left after the filters: says which, and what to do.
fn draw_why_empty(frame: &mut Frame, area: Rect, total_hosts: usize) {
    let text = if total_hosts == 0 {
        "No upstream connection seen yet: waiting for the target to connect somewhere."
    } else {
        "No host matches the filters (Esc clears the text filter, r cycles the reason)."
    };
    frame.render_widget(
        Paragraph::new(text).style(DIM).wrap(Wrap { trim: true }),
        area,
    );
}

/// The figure columns that fit the width, and what is left for HOST and the trend.
struct HostColumns {
    /// OPEN, LEAKED, (H2_LEAKED,) one per leak reason, CLOSED_UNREAD, CONN/S and OLDEST.
    cols: Vec<Col>,
    /// Whether H2_LEAKED is among them.
    streams: bool,
    /// Indices into `cols` of the columns shown.
    kept: Vec<usize>,
    host_w: u16,
    /// None when the trend does not fit.
    trend_w: Option<u16>,
}

impl HostColumns {
    fn fit(width: u16, streams: bool) -> Self {
        let wide = width >= 100;
        let mut cols = vec![
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
        ];
        if streams {
            let title = if wide { "H2_LEAKED" } else { "H2LK" };
            cols.push(Col {
                title,
                width: title.len() as u16,
                drop: 0,
            });
        }
        cols.extend(LeakReason::ALL.map(|reason| {
            let title = reason_title(reason, wide);
            Col {
                title,
                width: title.len() as u16,
                drop: 0,
            }
        }));
        cols.extend([
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
        ]);
        // One column goes to the highlight symbol; HOST and TREND share what is left.
        let (kept, flex) = fit_columns(&cols, width.saturating_sub(1), 14, 1);
        // The host name first (up to 32 columns), the trend gets the rest if that is 6 or more.
        let show_trend = flex >= 14 + 1 + 6;
        let host_w = if show_trend {
            (flex - 7).clamp(14, 32)
        } else {
            flex
        };
        let trend_w = show_trend.then(|| flex - host_w - 1);
        Self {
            cols,
            streams,
            kept,
            host_w,
            trend_w,
        }
    }

    fn widths(&self) -> Vec<Constraint> {
        let mut widths = vec![Constraint::Length(self.host_w)];
        widths.extend(
            self.kept
                .iter()
                .map(|&i| Constraint::Length(self.cols[i].width)),
        );
        widths.extend(self.trend_w.map(Constraint::Length));
        widths
    }

    fn header(&self) -> Row<'static> {
        let mut head: Vec<String> = vec!["HOST".into()];
        head.extend(
            self.kept
                .iter()
                .map(|&i| right(self.cols[i].title.into(), self.cols[i].width)),
        );
        if let Some(trend_w) = self.trend_w {
            head.push(
                if trend_w >= 16 {
                    "LEAKED OVER TIME"
                } else {
                    "TREND"
                }
                .into(),
            );
        }
        Row::new(head).style(HEAD)
    }

    /// One row's cells: `label` cut to the HOST column, the kept figures right-aligned, and
    /// the sparkline of `series(width)` when the trend shows (asked for only then).
    fn cells(
        &self,
        label: &str,
        figures: Vec<String>,
        series: impl FnOnce(usize) -> Vec<u64>,
    ) -> Vec<String> {
        let mut row = vec![units::fit(label, self.host_w as usize)];
        row.extend(
            self.kept
                .iter()
                .map(|&i| right(figures[i].clone(), self.cols[i].width)),
        );
        if let Some(trend_w) = self.trend_w {
            row.push(sparkline(&series(trend_w as usize), trend_w as usize));
        }
        row
    }
}

/// The host list, scrolled so the selected host shows; leaking hosts in red.
fn draw_host_list(
    frame: &mut Frame,
    area: Rect,
    s: &Screen,
    hosts: &[&HostSummary],
    columns: &HostColumns,
) {
    let rows: Vec<Row> = hosts
        .iter()
        .map(|h| {
            let cells = columns.cells(&host_label(h), host_figures(h, s, columns), |width| {
                s.trend.leaked_series(&h.host, width)
            });
            let style = if h.leaked > 0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            Row::new(cells).style(style)
        })
        .collect();
    let listed: Vec<String> = hosts.iter().map(|h| h.host.clone()).collect();
    let selected = effective(s.ui.selected_host.as_ref(), &listed)
        .and_then(|sel| listed.iter().position(|h| h == sel))
        .unwrap_or(0);
    let visible = area.height.saturating_sub(1) as usize;
    let mut state = TableState::new()
        .with_selected(Some(selected))
        .with_offset(scroll(selected, visible));
    let table = Table::new(rows, columns.widths())
        .header(columns.header())
        .column_spacing(1)
        .row_highlight_style(SELECTED)
        .highlight_symbol("▸")
        .highlight_spacing(HighlightSpacing::Always);
    frame.render_stateful_widget(table, area, &mut state);
}

/// The host as listed: with its provider when the catalogue knows it (after the name, so a
/// narrow column cuts the provider, not the name).
fn host_label(h: &HostSummary) -> String {
    match &h.provider {
        Some(provider) => format!("{} ({provider})", h.host),
        None => h.host.clone(),
    }
}

/// One host's figures, in column order.
fn host_figures(h: &HostSummary, s: &Screen, columns: &HostColumns) -> Vec<String> {
    let mut figures = vec![h.open.to_string(), h.leaked.to_string()];
    if columns.streams {
        figures.push(h.by_kind.get(LeakKind::H2Stream).to_string());
    }
    figures.extend(h.by_reason.iter().map(|(_, n)| n.to_string()));
    figures.extend([
        h.closed_unread_total.to_string(),
        s.trend
            .open_rate(&h.host)
            .map_or_else(|| "–".into(), units::rate),
        h.oldest_leak_age_s.map_or_else(|| "–".into(), units::secs),
    ]);
    figures
}

/// The totals of the listed hosts, in the same columns, under the list.
fn draw_totals(
    frame: &mut Frame,
    area: Rect,
    s: &Screen,
    hosts: &[&HostSummary],
    columns: &HostColumns,
) {
    let sum = |f: fn(&HostSummary) -> u64| hosts.iter().map(|h| f(h)).sum::<u64>();
    let rate: f64 = hosts
        .iter()
        .filter_map(|h| s.trend.open_rate(&h.host))
        .sum();
    let oldest = hosts
        .iter()
        .filter_map(|h| h.oldest_leak_age_s)
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
    let mut by_reason = ByReason::default();
    for h in hosts {
        by_reason.merge(&h.by_reason);
    }
    let mut figures = vec![sum(|h| h.open).to_string(), sum(|h| h.leaked).to_string()];
    if columns.streams {
        figures.push(sum(|h| h.by_kind.get(LeakKind::H2Stream)).to_string());
    }
    figures.extend(by_reason.iter().map(|(_, n)| n.to_string()));
    figures.extend([
        sum(|h| h.closed_unread_total).to_string(),
        if s.trend.has_rates() {
            units::rate(rate)
        } else {
            "–".into()
        },
        oldest.map_or_else(|| "–".into(), units::secs),
    ]);
    let label = match hosts.len() {
        1 => "TOTAL (1 host)".to_owned(),
        n => format!("TOTAL ({n} hosts)"),
    };
    let total = columns.cells(&label, figures, |width| s.trend.leaked_total_series(width));
    let totals = Table::new([Row::new(total).style(HEAD)], columns.widths())
        .column_spacing(1)
        .highlight_symbol(" ")
        .highlight_spacing(HighlightSpacing::Always);
    frame.render_stateful_widget(totals, area, &mut TableState::new());
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

#[cfg(test)]
mod tests {
    use insta::assert_snapshot;

    use super::sparkline;
    use crate::model::{testkit::*, KernelConn};
    use crate::ui::render::{testkit::*, Screen, Session, SourceLabel};
    use crate::ui::{state::UiState, view::View};

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
    fn hosts_with_http2_streams_show_their_leaked_streams_apart() {
        let (conns, streams) = fixture_h2();
        let f = session_with_streams(&conns, &streams);
        let frame = render(&f, &UiState::new(), 80, 24);
        let row = |host: &str| -> String {
            frame
                .lines()
                .find(|l| l.contains(host))
                .unwrap_or_else(|| panic!("no row for {host}:\n{frame}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        // OPEN LEAKED H2LK C_WAIT UNREAD ABAND: the two leaked streams of .21 are its leaks.
        assert!(
            row("127.0.0.21").contains("127.0.0.21 2 2 2 0 1 1"),
            "{frame}"
        );
        assert!(
            row("127.0.0.12").contains("127.0.0.12 1 1 0 1 0 0"),
            "{frame}"
        );
        assert!(
            row("(unknown connecti").contains("(unknown connecti… 0 1 1 0 1 0"),
            "{frame}"
        );
        assert!(row("TOTAL").contains("3 4 3 1 2 1"), "{frame}");
        assert_snapshot!("h2_hosts_80x24", frame);
        assert_snapshot!("h2_hosts_120x40", render(&f, &UiState::new(), 120, 40));
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
        let screen = Screen {
            view: &view,
            ui: &ui,
            trend: &f.trend,
            session: &session,
        };
        assert_snapshot!(render_screen(&screen, 80, 24));
    }

    #[test]
    fn a_filter_that_matches_no_host_says_so() {
        let f = session(&fixture_relay());
        let ui = UiState {
            host_filter: "nomatch".into(),
            ..UiState::new()
        };
        assert!(render(&f, &ui, 80, 24).contains("No host matches the filters"));
    }

    #[test]
    fn sparklines() {
        assert_eq!(sparkline(&[0, 1, 2, 4], 6), "   ▃▅█");
        assert_eq!(sparkline(&[0, 0], 3), "   ");
        assert_eq!(sparkline(&[1, 2, 3], 2), "▆█");
    }
}
