//! The help overlay: the keys, and what the columns and verdicts mean.

use ratatui::{
    layout::{Alignment, Rect},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph},
    Frame,
};

use super::{DIM, HEAD};

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

pub(super) fn draw(frame: &mut Frame, body: Rect) {
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
