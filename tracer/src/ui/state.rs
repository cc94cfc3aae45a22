//! What the person at the terminal chose: the page, the selection, sort, filters, pause. Kept
//! apart from the model (which it never changes) and from drawing (which only reads it), and
//! changed only by keys, so every rule here is a unit test.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::model::{classify::LeakReason, site::CallSite, ConnId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// One row per upstream host.
    Hosts,
    /// The open connections of the selected host.
    Connections,
    /// One connection: its timeline and why it is (not) judged leaked, its HTTP/2 streams
    /// and why the selected one is (not) leaked.
    Detail,
    /// Leaked connections over time for the top hosts.
    Trend,
    /// One row per call site of the relay (the line that obtained responses): its leaks by
    /// reason and kind, its requests, the fraction that leaked.
    Sites,
    /// One call site: its leaks (Enter opens one's detail) and its full stack.
    Site,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostSort {
    Leaked,
    Open,
    /// Connections opened per second, lately.
    Rate,
    /// Age of the oldest leak.
    Oldest,
    Name,
}

impl HostSort {
    pub fn label(self) -> &'static str {
        match self {
            Self::Leaked => "leaked",
            Self::Open => "open",
            Self::Rate => "conn/s",
            Self::Oldest => "oldest leak",
            Self::Name => "name",
        }
    }

    fn next(self) -> Self {
        match self {
            Self::Leaked => Self::Open,
            Self::Open => Self::Rate,
            Self::Rate => Self::Oldest,
            Self::Oldest => Self::Name,
            Self::Name => Self::Leaked,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnSort {
    /// Leaked first (by reason), then oldest first.
    Verdict,
    Age,
    Idle,
    Unread,
    Local,
}

impl ConnSort {
    pub fn label(self) -> &'static str {
        match self {
            Self::Verdict => "verdict",
            Self::Age => "age",
            Self::Idle => "idle",
            Self::Unread => "unread",
            Self::Local => "local address",
        }
    }

    fn next(self) -> Self {
        match self {
            Self::Verdict => Self::Age,
            Self::Age => Self::Idle,
            Self::Idle => Self::Unread,
            Self::Unread => Self::Local,
            Self::Local => Self::Verdict,
        }
    }
}

/// Which verdicts to show (`r` cycles through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasonFilter {
    All,
    /// Any leak.
    Leaked,
    Only(LeakReason),
}

impl ReasonFilter {
    pub fn label(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Leaked => "leaked",
            Self::Only(reason) => reason.as_str(),
        }
    }

    /// All, leaked, then each reason in `LeakReason::ALL` order, then all again.
    fn next(self) -> Self {
        let after = |i: usize| LeakReason::ALL.get(i).map_or(Self::All, |&r| Self::Only(r));
        match self {
            Self::All => Self::Leaked,
            Self::Leaked => after(0),
            Self::Only(reason) => after(
                LeakReason::ALL
                    .iter()
                    .position(|&r| r == reason)
                    .map_or(usize::MAX, |i| i + 1),
            ),
        }
    }

    /// Whether a connection with this verdict is shown.
    pub fn admits(self, verdict: Option<LeakReason>) -> bool {
        match self {
            Self::All => true,
            Self::Leaked => verdict.is_some(),
            Self::Only(reason) => verdict == Some(reason),
        }
    }
}

/// One HTTP/2 stream of a target: its process and the client stream's address there (what
/// the probes key it by; stream ids are only unique per connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub pid: u32,
    pub stream: u64,
}

/// One leak a call site's page lists: what selects it and what opening it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedLeak {
    /// Its connection (for an HTTP/2 stream, the one it is on).
    pub conn: ConnId,
    /// The host its connection counts under.
    pub host: String,
    /// A leaked HTTP/2 stream (None: the connection itself leaked).
    pub stream: Option<StreamKey>,
    /// Whether the view holds its connection: a stream the probes could not follow to a
    /// socket has no connection to detail.
    pub has_detail: bool,
}

/// What the loop must do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// The state changed: draw again.
    Redraw,
    /// Pause or resume (the loop freezes the view, and a replay's clock).
    PauseChanged,
    /// Write the shown snapshot as JSON to a file.
    Export,
    Quit,
}

/// The rows the current page lists, in order, as the loop computed them for this frame.
#[derive(Clone, Debug, Default)]
pub struct Listed {
    pub hosts: Vec<String>,
    /// The connections of the selected host (when a host is selected).
    pub conns: Vec<ConnId>,
    /// The HTTP/2 streams of the selected connection (on its detail page).
    pub streams: Vec<StreamKey>,
    /// The call sites the sites page lists.
    pub sites: Vec<CallSite>,
    /// The leaks of the selected call site (on its page).
    pub site_leaks: Vec<ListedLeak>,
}

/// How far PageUp/PageDown move.
const PAGE: usize = 10;

#[derive(Clone, Debug)]
pub struct UiState {
    pub page: Page,
    pub help: bool,
    pub paused: bool,
    pub host_sort: HostSort,
    pub conn_sort: ConnSort,
    /// Hosts whose name (or an address) contains this, case-insensitively.
    pub host_filter: String,
    /// While `/` is being typed: the filter before, restored by Esc.
    pub editing_filter: Option<String>,
    pub reason_filter: ReasonFilter,
    /// Selections are by identity, so they stay on the same row when rows reorder.
    pub selected_host: Option<String>,
    pub selected_conn: Option<ConnId>,
    /// The stream explained on the detail page (its connection's worst when None).
    pub selected_stream: Option<StreamKey>,
    pub selected_site: Option<CallSite>,
    /// The leak highlighted on a call site's page.
    pub selected_leak: Option<ListedLeak>,
    /// Where Esc on the detail page goes back to: the connections it was opened from, or
    /// the call site.
    pub detail_from: Page,
    /// One line for the footer (an exported file's path, an error), until the next key.
    pub message: Option<String>,
}

impl Default for UiState {
    fn default() -> Self {
        Self::new()
    }
}

/// The selected item if it is listed, else the first: what the highlight shows.
pub fn effective<'a, T: PartialEq>(selected: Option<&T>, listed: &'a [T]) -> Option<&'a T> {
    selected
        .and_then(|s| listed.iter().find(|x| *x == s))
        .or_else(|| listed.first())
}

fn moved<T: PartialEq + Clone>(selected: Option<&T>, listed: &[T], delta: isize) -> Option<T> {
    if listed.is_empty() {
        return None;
    }
    let at = selected.and_then(|s| listed.iter().position(|x| x == s));
    let to = match at {
        // Nothing highlighted yet: the first row is shown as selected, move from there.
        None => 0usize.saturating_add_signed(delta.max(0)),
        Some(i) => i.saturating_add_signed(delta),
    };
    listed.get(to.min(listed.len() - 1)).cloned()
}

impl UiState {
    pub fn new() -> Self {
        Self {
            page: Page::Hosts,
            help: false,
            paused: false,
            host_sort: HostSort::Leaked,
            conn_sort: ConnSort::Verdict,
            host_filter: String::new(),
            editing_filter: None,
            reason_filter: ReasonFilter::All,
            selected_host: None,
            selected_conn: None,
            selected_stream: None,
            selected_site: None,
            selected_leak: None,
            detail_from: Page::Connections,
            message: None,
        }
    }

    /// Handles one key. `listed` is what the current page shows, as last drawn.
    pub fn on_key(&mut self, key: KeyEvent, listed: &Listed) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
            return Action::Quit;
        }
        self.message = None;
        if self.editing_filter.is_some() {
            return self.on_filter_key(key);
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::Redraw
            };
        }
        match key.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('?') | KeyCode::F(1) => {
                self.help = true;
                Action::Redraw
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                Action::PauseChanged
            }
            KeyCode::Char('e') => Action::Export,
            KeyCode::Char('s') => {
                match self.page {
                    Page::Hosts => self.host_sort = self.host_sort.next(),
                    Page::Connections => self.conn_sort = self.conn_sort.next(),
                    Page::Detail | Page::Trend | Page::Sites | Page::Site => {
                        return Action::Nothing
                    }
                }
                Action::Redraw
            }
            KeyCode::Char('r') => {
                self.reason_filter = self.reason_filter.next();
                Action::Redraw
            }
            KeyCode::Char('/') => {
                self.editing_filter = Some(self.host_filter.clone());
                if self.page != Page::Hosts {
                    self.page = Page::Hosts;
                }
                Action::Redraw
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1, listed),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1, listed),
            KeyCode::PageUp => self.move_by(-(PAGE as isize), listed),
            KeyCode::PageDown => self.move_by(PAGE as isize, listed),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2, listed),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2, listed),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => self.open(listed),
            KeyCode::Esc | KeyCode::Left | KeyCode::Backspace | KeyCode::Char('h') => self.back(),
            KeyCode::Tab => self.tab(listed, true),
            KeyCode::BackTab => self.tab(listed, false),
            _ => Action::Nothing,
        }
    }

    fn on_filter_key(&mut self, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Enter => {
                self.editing_filter = None;
            }
            KeyCode::Esc => {
                if let Some(before) = self.editing_filter.take() {
                    self.host_filter = before;
                }
            }
            KeyCode::Backspace => {
                self.host_filter.pop();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.host_filter.clear();
            }
            KeyCode::Char(c) if !c.is_control() && self.host_filter.chars().count() < 64 => {
                self.host_filter.push(c);
            }
            _ => return Action::Nothing,
        }
        Action::Redraw
    }

    fn move_by(&mut self, delta: isize, listed: &Listed) -> Action {
        match self.page {
            Page::Hosts => {
                self.selected_host = moved(self.selected_host.as_ref(), &listed.hosts, delta)
            }
            Page::Connections => {
                self.selected_conn = moved(self.selected_conn.as_ref(), &listed.conns, delta)
            }
            Page::Detail if !listed.streams.is_empty() => {
                self.selected_stream = moved(self.selected_stream.as_ref(), &listed.streams, delta)
            }
            Page::Sites => {
                self.selected_site = moved(self.selected_site.as_ref(), &listed.sites, delta)
            }
            Page::Site => {
                self.selected_leak = moved(self.selected_leak.as_ref(), &listed.site_leaks, delta)
            }
            Page::Detail | Page::Trend => return Action::Nothing,
        }
        Action::Redraw
    }

    fn open(&mut self, listed: &Listed) -> Action {
        match self.page {
            Page::Hosts => {
                // A connection selected under another host is not listed under this one, so
                // the highlight starts on the first row there.
                let Some(host) = effective(self.selected_host.as_ref(), &listed.hosts).cloned()
                else {
                    return Action::Nothing;
                };
                self.selected_host = Some(host);
                self.page = Page::Connections;
            }
            Page::Connections => {
                let Some(conn) = effective(self.selected_conn.as_ref(), &listed.conns).cloned()
                else {
                    return Action::Nothing;
                };
                self.selected_conn = Some(conn);
                // Its worst stream first.
                self.selected_stream = None;
                self.detail_from = Page::Connections;
                self.page = Page::Detail;
            }
            Page::Sites => {
                let Some(site) = effective(self.selected_site.as_ref(), &listed.sites).cloned()
                else {
                    return Action::Nothing;
                };
                self.selected_site = Some(site);
                // A leak selected under another site is not listed under this one.
                self.selected_leak = None;
                self.page = Page::Site;
            }
            Page::Site => {
                let Some(leak) =
                    effective(self.selected_leak.as_ref(), &listed.site_leaks).cloned()
                else {
                    return Action::Nothing;
                };
                if !leak.has_detail {
                    self.message = Some(
                        "this HTTP/2 stream's connection is not known (the probes could not follow \
                         it to a socket): no detail to show"
                            .to_owned(),
                    );
                    self.selected_leak = Some(leak);
                    return Action::Redraw;
                }
                // The detail of its connection, the leaked stream explained; Esc comes back.
                self.selected_host = Some(leak.host.clone());
                self.selected_conn = Some(leak.conn.clone());
                self.selected_stream = leak.stream;
                self.selected_leak = Some(leak);
                self.detail_from = Page::Site;
                self.page = Page::Detail;
            }
            Page::Detail | Page::Trend => return Action::Nothing,
        }
        Action::Redraw
    }

    fn back(&mut self) -> Action {
        self.page = match self.page {
            Page::Detail => self.detail_from,
            Page::Site => Page::Sites,
            Page::Connections | Page::Trend | Page::Sites => Page::Hosts,
            Page::Hosts if !self.host_filter.is_empty() => {
                self.host_filter.clear();
                Page::Hosts
            }
            Page::Hosts => return Action::Nothing,
        };
        Action::Redraw
    }

    /// Tab: Hosts -> Connections (of the highlighted host) -> Trend -> Sites -> Hosts; a page
    /// opened from one (a connection's detail, a site's leaks) counts as that one.
    fn tab(&mut self, listed: &Listed, forward: bool) -> Action {
        let host = effective(self.selected_host.as_ref(), &listed.hosts).cloned();
        let to_connections = |s: &mut Self| match host.clone() {
            Some(h) => {
                s.selected_host = Some(h);
                Page::Connections
            }
            None => Page::Trend,
        };
        self.page = match (self.page, forward) {
            (Page::Hosts, true) => to_connections(self),
            (Page::Connections | Page::Detail, true) => Page::Trend,
            (Page::Trend, true) => Page::Sites,
            (Page::Sites | Page::Site, true) => Page::Hosts,
            (Page::Hosts, false) => Page::Sites,
            (Page::Sites | Page::Site, false) => Page::Trend,
            (Page::Trend, false) => {
                if host.is_some() {
                    to_connections(self)
                } else {
                    Page::Hosts
                }
            }
            (Page::Connections | Page::Detail, false) => Page::Hosts,
        };
        Action::Redraw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ch(c: char) -> KeyEvent {
        key(KeyCode::Char(c))
    }

    fn conn(port: u16) -> ConnId {
        ConnId {
            pid: 7,
            local: ([127, 0, 0, 1], port).into(),
            remote: ([127, 0, 0, 12], 18080).into(),
        }
    }

    fn listed() -> Listed {
        Listed {
            hosts: vec![
                "127.0.0.12".into(),
                "127.0.0.13".into(),
                "127.0.0.11".into(),
            ],
            conns: vec![conn(40001), conn(40002)],
            ..Listed::default()
        }
    }

    #[test]
    fn arrows_and_jk_move_within_the_list_and_stop_at_its_ends() {
        let mut ui = UiState::new();
        let l = listed();
        assert_eq!(
            effective(ui.selected_host.as_ref(), &l.hosts),
            Some(&l.hosts[0]),
            "the first is highlighted"
        );
        assert_eq!(ui.on_key(key(KeyCode::Down), &l), Action::Redraw);
        assert_eq!(ui.selected_host.as_deref(), Some("127.0.0.13"));
        ui.on_key(ch('j'), &l);
        ui.on_key(ch('j'), &l);
        assert_eq!(
            ui.selected_host.as_deref(),
            Some("127.0.0.11"),
            "stops at the end"
        );
        ui.on_key(ch('k'), &l);
        assert_eq!(ui.selected_host.as_deref(), Some("127.0.0.13"));
        ui.on_key(key(KeyCode::PageUp), &l);
        assert_eq!(
            ui.selected_host.as_deref(),
            Some("127.0.0.12"),
            "stops at the top"
        );
        ui.on_key(ch('G'), &l);
        assert_eq!(ui.selected_host.as_deref(), Some("127.0.0.11"));
        ui.on_key(ch('g'), &l);
        assert_eq!(ui.selected_host.as_deref(), Some("127.0.0.12"));
        // Up from "nothing selected yet" stays on the first row.
        let mut fresh = UiState::new();
        fresh.on_key(key(KeyCode::Up), &l);
        assert_eq!(fresh.selected_host.as_deref(), Some("127.0.0.12"));
    }

    #[test]
    fn the_selection_follows_its_host_when_rows_reorder() {
        let mut ui = UiState::new();
        ui.on_key(key(KeyCode::Down), &listed());
        let reordered = Listed {
            hosts: vec!["127.0.0.13".into(), "127.0.0.12".into()],
            ..Listed::default()
        };
        assert_eq!(
            effective(ui.selected_host.as_ref(), &reordered.hosts).map(String::as_str),
            Some("127.0.0.13")
        );
        ui.on_key(key(KeyCode::Down), &reordered);
        assert_eq!(ui.selected_host.as_deref(), Some("127.0.0.12"));
        // Gone from the list: the highlight falls back to the first row.
        let gone = Listed {
            hosts: vec!["127.0.0.11".into()],
            ..Listed::default()
        };
        assert_eq!(
            effective(ui.selected_host.as_ref(), &gone.hosts).map(String::as_str),
            Some("127.0.0.11")
        );
    }

    #[test]
    fn enter_drills_down_and_esc_comes_back() {
        let mut ui = UiState::new();
        let l = listed();
        ui.on_key(key(KeyCode::Down), &l);
        assert_eq!(ui.on_key(key(KeyCode::Enter), &l), Action::Redraw);
        assert_eq!(
            (ui.page, ui.selected_host.as_deref()),
            (Page::Connections, Some("127.0.0.13"))
        );
        ui.on_key(key(KeyCode::Down), &l);
        ui.on_key(key(KeyCode::Enter), &l);
        assert_eq!(
            (ui.page, ui.selected_conn.clone()),
            (Page::Detail, Some(conn(40002)))
        );
        assert_eq!(
            ui.on_key(key(KeyCode::Enter), &l),
            Action::Nothing,
            "nothing below the detail"
        );
        ui.on_key(key(KeyCode::Esc), &l);
        assert_eq!(ui.page, Page::Connections);
        assert_eq!(ui.selected_conn, Some(conn(40002)), "the selection is kept");
        ui.on_key(key(KeyCode::Esc), &l);
        assert_eq!(ui.page, Page::Hosts);
        assert_eq!(ui.on_key(key(KeyCode::Esc), &l), Action::Nothing);

        // Enter on another host: its list does not have the old connection, so the highlight
        // is on its first row.
        ui.on_key(key(KeyCode::Up), &l);
        ui.on_key(key(KeyCode::Enter), &l);
        assert_eq!(
            (ui.page, ui.selected_host.as_deref()),
            (Page::Connections, Some("127.0.0.12"))
        );
        let other = Listed {
            hosts: l.hosts.clone(),
            conns: vec![conn(50001), conn(50002)],
            ..Listed::default()
        };
        assert_eq!(
            effective(ui.selected_conn.as_ref(), &other.conns),
            Some(&conn(50001))
        );
        ui.on_key(key(KeyCode::Enter), &other);
        assert_eq!(ui.selected_conn, Some(conn(50001)));
        // With no rows there is nothing to open.
        let mut empty = UiState::new();
        assert_eq!(
            empty.on_key(key(KeyCode::Enter), &Listed::default()),
            Action::Nothing
        );
        assert_eq!(empty.page, Page::Hosts);
    }

    #[test]
    fn on_a_connections_detail_the_arrows_move_among_its_streams() {
        let stream = |n: u64| StreamKey {
            pid: 7,
            stream: 0xc000_0000 + n,
        };
        let mut ui = UiState::new();
        let mut l = listed();
        ui.on_key(key(KeyCode::Enter), &l);
        ui.on_key(key(KeyCode::Enter), &l);
        assert_eq!((ui.page, ui.selected_stream), (Page::Detail, None));
        l.streams = vec![stream(1), stream(2), stream(3)];
        assert_eq!(
            effective(ui.selected_stream.as_ref(), &l.streams),
            Some(&stream(1)),
            "the first listed (its worst) is explained"
        );
        ui.on_key(key(KeyCode::Down), &l);
        ui.on_key(ch('j'), &l);
        assert_eq!(ui.selected_stream, Some(stream(3)));
        ui.on_key(ch('j'), &l);
        assert_eq!(ui.selected_stream, Some(stream(3)), "stops at the end");
        ui.on_key(key(KeyCode::Up), &l);
        assert_eq!(ui.selected_stream, Some(stream(2)));
        assert_eq!(ui.selected_conn, Some(conn(40001)), "the connection stays");
        // Back and into another connection: its worst stream first again.
        ui.on_key(key(KeyCode::Esc), &l);
        ui.on_key(key(KeyCode::Down), &l);
        ui.on_key(key(KeyCode::Enter), &l);
        assert_eq!(
            (ui.selected_conn.clone(), ui.selected_stream),
            (Some(conn(40002)), None)
        );
        // A connection without streams: nothing to move.
        l.streams.clear();
        assert_eq!(ui.on_key(key(KeyCode::Down), &l), Action::Nothing);
    }

    #[test]
    fn tab_cycles_hosts_connections_trend_sites() {
        let mut ui = UiState::new();
        let l = listed();
        ui.on_key(key(KeyCode::Tab), &l);
        assert_eq!(
            (ui.page, ui.selected_host.as_deref()),
            (Page::Connections, Some("127.0.0.12"))
        );
        ui.on_key(key(KeyCode::Tab), &l);
        assert_eq!(ui.page, Page::Trend);
        ui.on_key(key(KeyCode::Tab), &l);
        assert_eq!(ui.page, Page::Sites);
        ui.on_key(key(KeyCode::Tab), &l);
        assert_eq!(ui.page, Page::Hosts);
        ui.on_key(key(KeyCode::BackTab), &l);
        assert_eq!(ui.page, Page::Sites);
        ui.on_key(key(KeyCode::BackTab), &l);
        assert_eq!(ui.page, Page::Trend);
        ui.on_key(key(KeyCode::BackTab), &l);
        assert_eq!(ui.page, Page::Connections);
        // A site's page counts as the sites page.
        ui.page = Page::Site;
        ui.on_key(key(KeyCode::Tab), &l);
        assert_eq!(ui.page, Page::Hosts);
        ui.page = Page::Site;
        ui.on_key(key(KeyCode::BackTab), &l);
        assert_eq!(ui.page, Page::Trend);
        // No host to show connections of: Tab skips to the trend.
        let mut empty = UiState::new();
        empty.on_key(key(KeyCode::Tab), &Listed::default());
        assert_eq!(empty.page, Page::Trend);
    }

    #[test]
    fn s_cycles_the_sort_of_the_current_page() {
        let mut ui = UiState::new();
        let l = listed();
        let mut seen = vec![ui.host_sort];
        for _ in 0..5 {
            assert_eq!(ui.on_key(ch('s'), &l), Action::Redraw);
            seen.push(ui.host_sort);
        }
        use HostSort::*;
        assert_eq!(seen, vec![Leaked, Open, Rate, Oldest, Name, Leaked]);
        assert_eq!(
            ui.conn_sort,
            ConnSort::Verdict,
            "the connections' sort is its own"
        );
        ui.on_key(key(KeyCode::Enter), &l);
        ui.on_key(ch('s'), &l);
        assert_eq!((ui.host_sort, ui.conn_sort), (Leaked, ConnSort::Age));
        for page in [Page::Trend, Page::Sites, Page::Site] {
            ui.page = page;
            assert_eq!(ui.on_key(ch('s'), &l), Action::Nothing, "{page:?}");
        }
    }

    #[test]
    fn slash_edits_the_host_filter_live_and_esc_restores_it() {
        let mut ui = UiState::new();
        let l = listed();
        ui.page = Page::Trend;
        ui.on_key(ch('/'), &l);
        assert_eq!(
            (ui.page, ui.editing_filter.as_deref()),
            (Page::Hosts, Some(""))
        );
        for c in "12q".chars() {
            assert_eq!(ui.on_key(ch(c), &l), Action::Redraw, "q is typed, not quit");
        }
        assert_eq!(ui.host_filter, "12q");
        ui.on_key(key(KeyCode::Backspace), &l);
        ui.on_key(key(KeyCode::Enter), &l);
        assert_eq!(
            (ui.host_filter.as_str(), ui.editing_filter.is_none()),
            ("12", true)
        );
        // Editing again and cancelling keeps what was applied.
        ui.on_key(ch('/'), &l);
        ui.on_key(ch('x'), &l);
        assert_eq!(ui.host_filter, "12x");
        ui.on_key(key(KeyCode::Esc), &l);
        assert_eq!(ui.host_filter, "12");
        // Esc on the hosts page clears an applied filter.
        ui.on_key(key(KeyCode::Esc), &l);
        assert_eq!(ui.host_filter, "");
        // Ctrl-U clears while typing; Ctrl-C still quits.
        ui.on_key(ch('/'), &l);
        ui.on_key(ch('a'), &l);
        ui.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL), &l);
        assert_eq!(ui.host_filter, "");
        assert_eq!(
            ui.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &l),
            Action::Quit
        );
    }

    #[test]
    fn r_cycles_the_reason_filter() {
        let mut ui = UiState::new();
        let mut seen = vec![ui.reason_filter.label()];
        for _ in 0..5 {
            ui.on_key(ch('r'), &listed());
            seen.push(ui.reason_filter.label());
        }
        assert_eq!(
            seen,
            vec!["all", "leaked", "close_wait", "unread", "abandoned", "all"]
        );
        assert!(ReasonFilter::All.admits(None));
        assert!(!ReasonFilter::Leaked.admits(None));
        assert!(ReasonFilter::Leaked.admits(Some(LeakReason::Unread)));
        assert!(ReasonFilter::Only(LeakReason::Unread).admits(Some(LeakReason::Unread)));
        assert!(!ReasonFilter::Only(LeakReason::Unread).admits(Some(LeakReason::CloseWait)));
    }

    fn call_site(line: u32) -> CallSite {
        CallSite {
            function: "main.relayImage".into(),
            file: "/src/relay/image.go".into(),
            line,
        }
    }

    fn site_leak(port: u16, stream: Option<u64>, has_detail: bool) -> ListedLeak {
        ListedLeak {
            conn: conn(port),
            host: "127.0.0.12".into(),
            stream: stream.map(|stream| StreamKey { pid: 7, stream }),
            has_detail,
        }
    }

    fn with_sites() -> Listed {
        Listed {
            sites: vec![call_site(829), call_site(900), call_site(950)],
            site_leaks: vec![
                site_leak(40001, None, true),
                site_leak(40002, Some(0xc000_1007), true),
                site_leak(40003, Some(0xc000_3003), false),
            ],
            ..listed()
        }
    }

    #[test]
    fn on_the_sites_page_the_arrows_move_among_sites_and_enter_lists_ones_leaks() {
        let mut ui = UiState {
            page: Page::Sites,
            ..UiState::new()
        };
        let l = with_sites();
        assert_eq!(
            effective(ui.selected_site.as_ref(), &l.sites),
            Some(&call_site(829)),
            "the first (most leaks) is highlighted"
        );
        assert_eq!(ui.on_key(key(KeyCode::Down), &l), Action::Redraw);
        ui.on_key(ch('j'), &l);
        ui.on_key(ch('j'), &l);
        assert_eq!(ui.selected_site, Some(call_site(950)), "stops at the end");
        ui.on_key(key(KeyCode::Up), &l);
        assert_eq!(ui.selected_site, Some(call_site(900)));
        assert_eq!(
            ui.selected_host, None,
            "the hosts' selection is not touched"
        );
        assert_eq!(ui.on_key(key(KeyCode::Enter), &l), Action::Redraw);
        assert_eq!(
            (ui.page, ui.selected_site.clone(), ui.selected_leak.clone()),
            (Page::Site, Some(call_site(900)), None)
        );
        // On the site's page the arrows move among its leaks.
        ui.on_key(key(KeyCode::Down), &l);
        assert_eq!(
            ui.selected_leak,
            Some(site_leak(40002, Some(0xc000_1007), true))
        );
        assert_eq!(ui.selected_site, Some(call_site(900)), "the site stays");
        // Esc: back to the sites, the site still selected; Esc again: the hosts.
        assert_eq!(ui.on_key(key(KeyCode::Esc), &l), Action::Redraw);
        assert_eq!(
            (ui.page, ui.selected_site.clone()),
            (Page::Sites, Some(call_site(900)))
        );
        ui.on_key(key(KeyCode::Esc), &l);
        assert_eq!(ui.page, Page::Hosts);
        // No site listed: nothing to open.
        let mut empty = UiState {
            page: Page::Sites,
            ..UiState::new()
        };
        assert_eq!(
            empty.on_key(key(KeyCode::Enter), &Listed::default()),
            Action::Nothing
        );
        assert_eq!(empty.page, Page::Sites);
        assert_eq!(
            empty.on_key(key(KeyCode::Down), &Listed::default()),
            Action::Redraw
        );
        assert_eq!(empty.selected_site, None);
    }

    #[test]
    fn enter_on_a_sites_leak_opens_its_detail_and_esc_comes_back_to_the_site() {
        let mut ui = UiState {
            page: Page::Site,
            selected_site: Some(call_site(829)),
            // Left over from an earlier connection's detail.
            selected_stream: Some(StreamKey { pid: 7, stream: 1 }),
            ..UiState::new()
        };
        let l = with_sites();
        // A leaked connection: its detail, no stream picked (its worst first).
        ui.on_key(key(KeyCode::Enter), &l);
        assert_eq!(
            (
                ui.page,
                ui.selected_host.as_deref(),
                ui.selected_conn.clone(),
                ui.selected_stream
            ),
            (Page::Detail, Some("127.0.0.12"), Some(conn(40001)), None)
        );
        assert_eq!(
            ui.on_key(key(KeyCode::Enter), &l),
            Action::Nothing,
            "nothing below the detail"
        );
        assert_eq!(ui.on_key(key(KeyCode::Esc), &l), Action::Redraw);
        assert_eq!(ui.page, Page::Site, "back where it was opened from");
        // A leaked stream: its connection's detail with that stream explained.
        ui.on_key(key(KeyCode::Down), &l);
        ui.on_key(key(KeyCode::Enter), &l);
        assert_eq!(
            (ui.page, ui.selected_conn.clone(), ui.selected_stream),
            (
                Page::Detail,
                Some(conn(40002)),
                Some(StreamKey {
                    pid: 7,
                    stream: 0xc000_1007
                })
            )
        );
        ui.on_key(key(KeyCode::Esc), &l);
        assert_eq!(
            (ui.page, ui.selected_leak.clone()),
            (Page::Site, Some(site_leak(40002, Some(0xc000_1007), true))),
            "the leak stays selected"
        );
        // A stream whose connection is not known: a message, no detail.
        ui.on_key(key(KeyCode::Down), &l);
        assert_eq!(ui.on_key(key(KeyCode::Enter), &l), Action::Redraw);
        assert_eq!(ui.page, Page::Site);
        assert!(
            ui.message
                .as_deref()
                .is_some_and(|m| m.contains("connection is not known")),
            "{:?}",
            ui.message
        );
        // Opened from the connections page, Esc goes back there again.
        ui.page = Page::Connections;
        ui.on_key(key(KeyCode::Enter), &l);
        assert_eq!(ui.page, Page::Detail);
        ui.on_key(key(KeyCode::Esc), &l);
        assert_eq!(ui.page, Page::Connections);
        // No leak listed (the filter hides them all): nothing to open.
        ui.page = Page::Site;
        ui.selected_leak = None;
        let none = Listed {
            site_leaks: vec![],
            ..with_sites()
        };
        assert_eq!(ui.on_key(key(KeyCode::Enter), &none), Action::Nothing);
        assert_eq!(ui.page, Page::Site);
    }

    #[test]
    fn p_pauses_and_resumes_and_help_and_quit() {
        let mut ui = UiState::new();
        let l = listed();
        assert_eq!(ui.on_key(ch('p'), &l), Action::PauseChanged);
        assert!(ui.paused);
        // Moving around while paused works; it only freezes the data.
        ui.on_key(key(KeyCode::Down), &l);
        assert_eq!(ui.selected_host.as_deref(), Some("127.0.0.13"));
        assert_eq!(ui.on_key(ch('p'), &l), Action::PauseChanged);
        assert!(!ui.paused);

        assert_eq!(ui.on_key(ch('?'), &l), Action::Redraw);
        assert!(ui.help);
        assert_eq!(
            ui.on_key(ch('j'), &l),
            Action::Redraw,
            "any key closes the help"
        );
        assert!(!ui.help);
        assert_eq!(
            ui.selected_host.as_deref(),
            Some("127.0.0.13"),
            "and does nothing else"
        );
        assert_eq!(ui.on_key(ch('e'), &l), Action::Export);
        ui.message = Some("exported".into());
        assert_eq!(ui.on_key(ch('x'), &l), Action::Nothing);
        assert_eq!(ui.message, None, "a key clears the message");
        assert_eq!(ui.on_key(ch('q'), &l), Action::Quit);
        let release = KeyEvent {
            kind: KeyEventKind::Release,
            ..ch('q')
        };
        assert_eq!(
            ui.on_key(release, &l),
            Action::Nothing,
            "key releases are ignored"
        );
    }
}
