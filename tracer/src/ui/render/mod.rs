//! Drawing: one frame from the view-model, the UI state, the history and the session. Reads
//! only; never changes any of them (selection highlight and scrolling are worked out here
//! from the state, per frame).
//!
//! One file per part of the screen: the `header` and `footer` every page shares, the pages
//! (`hosts`, `connections`, `detail`, `trend`, `sites`, `site`), the `help` overlay, and
//! `table`, what the list pages share.

mod connections;
mod detail;
mod footer;
mod header;
mod help;
mod hosts;
mod site;
mod sites;
mod table;
#[cfg(test)]
mod testkit;
mod trend;

use ratatui::{
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    widgets::{Paragraph, Wrap},
    Frame,
};

use crate::model::classify::Graces;

use super::{
    state::{Page, UiState},
    trend::Trend,
    view::View,
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
    let [header_area, body, footer_area] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    header::draw(frame, header_area, s);
    match s.ui.page {
        Page::Hosts => hosts::draw(frame, body, s),
        Page::Connections => connections::draw(frame, body, s),
        Page::Detail => detail::draw(frame, body, s),
        Page::Trend => trend::draw(frame, body, s),
        Page::Sites => sites::draw(frame, body, s),
        Page::Site => site::draw(frame, body, s),
    }
    footer::draw(frame, footer_area, s);
    if s.ui.help {
        help::draw(frame, body);
    }
}

#[cfg(test)]
mod tests {
    use insta::assert_snapshot;
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::model::testkit::*;
    use crate::{model::ConnId, ui::render::testkit::*};

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
        for page in [
            Page::Hosts,
            Page::Connections,
            Page::Detail,
            Page::Trend,
            Page::Sites,
            Page::Site,
        ] {
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
        // The call sites' pages with call sites to show.
        let f = site_session();
        let mut ui = with_page(Page::Sites, "127.0.0.12", None);
        let frame = render(&f, &ui, MIN_WIDTH, MIN_HEIGHT);
        assert!(
            frame.contains("▸relay… image.go:829"),
            "the line stays whole:\n{frame}"
        );
        ui.page = Page::Site;
        ui.selected_site = f.table.sites().requests_by_site().into_keys().next();
        let frame = render(&f, &ui, MIN_WIDTH, MIN_HEIGHT);
        assert!(frame.contains(" leaked of "), "{frame}");
    }
}
