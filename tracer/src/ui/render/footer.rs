//! The footer line: the filter being typed, a message, or the keys of this page (as many as
//! fit, then help and quit).

use ratatui::{
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{Screen, DIM, HEAD};
use crate::ui::state::Page;

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
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
            // Its streams, when it carries some, are picked with the arrows.
            Page::Detail
                if s.ui
                    .selected_conn
                    .as_ref()
                    .and_then(|id| s.view.conn(id))
                    .is_some_and(|c| c.streams.len() > 1) =>
            {
                &["↑↓ stream", "Esc back", "Tab view", "p pause", "e export"]
            }
            Page::Detail => &["Esc back", "Tab view", "p pause", "e export"],
            Page::Trend => &["Tab view", "Esc back", "p pause", "e export"],
            Page::Sites => &[
                "↑↓ move",
                "Enter open",
                "Esc back",
                "r reason",
                "Tab view",
                "p pause",
                "e export",
            ],
            Page::Site => &[
                "↑↓ move",
                "Enter why",
                "Esc back",
                "r reason",
                "Tab view",
                "p pause",
                "e export",
            ],
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

#[cfg(test)]
mod tests {
    use insta::assert_snapshot;

    use crate::ui::render::testkit::*;
    use crate::ui::state::UiState;

    #[test]
    fn filter_input_80x24() {
        let f = session(&fixture_relay());
        let ui = UiState {
            host_filter: "127.0.0.1".into(),
            editing_filter: Some(String::new()),
            ..UiState::new()
        };
        assert_snapshot!("filter_80x24", render(&f, &ui, 80, 24));
    }
}
