//! The help overlay: the keys, and what the columns and verdicts mean.

use ratatui::{
    layout::{Alignment, Rect},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph},
    Frame,
};

use super::{DIM, HEAD};
use crate::model::LeakReason;

const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  j k", "move; PgUp PgDn, g G: page, top, bottom"),
    ("Enter", "open: host → connections → one; site → its leaks"),
    ("Esc", "back (on the hosts: clear the text filter)"),
    ("Tab", "hosts → connections → trend → call sites"),
    ("s", "change the sort of this list"),
    ("/", "filter hosts by text (name or address)"),
    ("r", "show all / leaked / one reason"),
    ("p", "pause the display (a replay pauses its clock)"),
    ("e", "export the shown snapshot as JSON to a file"),
    ("q  Ctrl-C", "quit"),
];

/// After the keys and each leak reason.
const COLUMNS: &[(&str, &str)] = &[
    (
        "h2_stream",
        "an HTTP/2 stream leaked; its connection is fine",
    ),
    ("H2LK", "leaked HTTP/2 streams, counted in LEAKED"),
    ("CL_UNRD", "closed before reading the response (no leak)"),
    ("CONN/S", "connections opened per second, last 10s"),
    ("LEAK%", "a call site's leaks now per request it made"),
];

/// The keys, what each leak reason means, and the columns that need saying.
fn help() -> Vec<(&'static str, &'static str)> {
    let mut help = KEYS.to_vec();
    help.extend(LeakReason::ALL.map(|r| (r.as_str(), r.summary())));
    help.extend_from_slice(COLUMNS);
    help
}

pub(super) fn draw(frame: &mut Frame, body: Rect) {
    let help = help();
    let width = body.width.min(64);
    let height = body.height.min(help.len() as u16 + 3);
    let area = Rect {
        x: body.x + (body.width - width) / 2,
        y: body.y + (body.height - height) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line> = help
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
    use insta::assert_snapshot;

    use crate::ui::render::testkit::*;
    use crate::ui::state::UiState;

    #[test]
    fn help_80x24() {
        let f = session(&fixture_relay());
        let ui = UiState {
            help: true,
            ..UiState::new()
        };
        assert_snapshot!("help_80x24", render(&f, &ui, 80, 24));
    }
}
