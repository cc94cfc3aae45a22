//! The trend page: leaked connections over the session, one line per top host, and a legend.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph},
    Frame,
};

use super::{Screen, DIM, HEAD};
use crate::ui::units;

/// One colour per top host, in rank order.
const SERIES: [Color; 6] = [
    Color::Red,
    Color::Yellow,
    Color::Magenta,
    Color::Cyan,
    Color::Blue,
    Color::Green,
];

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
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

#[cfg(test)]
mod tests {
    use insta::assert_snapshot;

    use crate::ui::render::testkit::*;
    use crate::ui::state::Page;

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
}
