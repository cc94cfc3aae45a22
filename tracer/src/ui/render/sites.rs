//! The sites page: each line of the relay that obtained responses (its call site), with its
//! leaks by reason (and by kind when HTTP/2 streams are seen), the requests it made and the
//! fraction of them that leaked, the triage signal; and the hosts its leaks went to.

use ratatui::{
    layout::{Constraint, Rect},
    style::{Color, Style},
    widgets::{HighlightSpacing, Paragraph, Row, Table, TableState, Wrap},
    Frame,
};

use super::{
    table::{fit_columns, right, scroll, titled, Col},
    Screen, DIM, HEAD, SELECTED,
};
use crate::{
    model::{leak::LeakKind, snapshot::SiteSummary, LeakReason},
    ui::{state::effective, units},
};

/// The function's name without its package path (`adaptor.DoRequest` for
/// `github.com/songquanpeng/one-api/relay/adaptor.DoRequest`); a generic's type arguments,
/// which may hold paths of their own, are kept whole.
fn short_function(function: &str) -> &str {
    let head = function.find('[').map_or(function, |i| &function[..i]);
    match head.rfind('/') {
        Some(slash) => &function[slash + 1..],
        None => function,
    }
}

/// The function's name without its package (`(*Adaptor).DoRequest` for
/// `github.com/x/relay/adaptor.(*Adaptor).DoRequest`).
fn bare_function(function: &str) -> &str {
    let short = short_function(function);
    short.split_once('.').map_or(short, |(_, name)| name)
}

/// The last `n` elements of a file's path.
fn file_tail(file: &str, n: usize) -> &str {
    let mut cut = file.len();
    for _ in 0..n {
        match file[..cut].rfind('/') {
            Some(i) => cut = i,
            None => return file,
        }
    }
    &file[cut + 1..]
}

/// "function file:line", longest first: whole; without the function's package path; with
/// the file's last three, two, one path elements; without the function's package.
fn label_forms(function: &str, file: &str, line: u32) -> [String; 6] {
    let short = short_function(function);
    let bare = bare_function(function);
    [
        (function, file),
        (short, file),
        (short, file_tail(file, 3)),
        (short, file_tail(file, 2)),
        (short, file_tail(file, 1)),
        (bare, file_tail(file, 1)),
    ]
    .map(|(name, path)| format!("{name} {path}:{line}"))
}

/// The first of `forms` that fits in `width`.
fn fitting(forms: &[String], width: usize) -> Option<usize> {
    forms.iter().position(|f| f.chars().count() <= width)
}

/// "function file:line" in at most `width` characters. What goes first when it does not fit:
/// the function's package path, the file's directories, the function's package, then the end
/// of the function's name; the file's name and the line number stay whole while they fit.
pub(super) fn frame_label(function: &str, file: &str, line: u32, width: usize) -> String {
    let mut forms = label_forms(function, file, line);
    if let Some(i) = fitting(&forms, width) {
        return std::mem::take(&mut forms[i]);
    }
    let bare = bare_function(function);
    let place = format!("{}:{line}", file_tail(file, 1));
    let room = width.saturating_sub(place.chars().count() + 1);
    if room >= 6 {
        return format!("{} {place}", units::fit(bare, room));
    }
    units::fit(&format!("{bare} {place}"), width)
}

/// The sites' labels in a column of `width`, all in the same (longest) form that each fits
/// in, so the rows read alike; those that fit in none are cut one by one.
fn site_labels(sites: &[&SiteSummary], width: usize) -> Vec<String> {
    let forms: Vec<[String; 6]> = sites
        .iter()
        .map(|s| label_forms(&s.call_site.function, &s.call_site.file, s.call_site.line))
        .collect();
    let common = forms
        .iter()
        .map(|f| fitting(f, width))
        .try_fold(0, |most, i| i.map(|i| most.max(i)));
    match common {
        Some(i) => forms
            .into_iter()
            .map(|mut f| std::mem::take(&mut f[i]))
            .collect(),
        None => sites.iter().map(|s| site_label(s, width)).collect(),
    }
}

/// A stack frame as the snapshot words it ("function file:line"), shortened as `frame_label`.
pub(super) fn frame_text_label(frame: &str, width: usize) -> String {
    let parsed = frame.rsplit_once(' ').and_then(|(function, place)| {
        let (file, line) = place.rsplit_once(':')?;
        Some((function, file, line.parse().ok()?))
    });
    match parsed {
        Some((function, file, line)) => frame_label(function, file, line, width),
        None => units::fit(frame, width),
    }
}

/// A leak reason's column title: its name, or a shorter one on a narrow screen (as the
/// hosts page has them).
fn reason_title(reason: LeakReason, wide: bool) -> &'static str {
    match reason {
        LeakReason::CloseWait if !wide => "C_WAIT",
        LeakReason::Abandoned if !wide => "ABAND",
        LeakReason::CloseWait => "CLOSE_WAIT",
        LeakReason::Unread => "UNREAD",
        LeakReason::Abandoned => "ABANDONED",
    }
}

/// Whether the kind column shows: only when the Go-aware probes see HTTP/2 streams (else
/// every leak is a connection and the column would repeat LEAKED).
fn shows_kinds(s: &Screen) -> bool {
    let snapshot = &s.view.snapshot;
    snapshot
        .sites
        .iter()
        .any(|site| site.by_kind.get(LeakKind::H2Stream) > 0)
        || snapshot.hosts.iter().any(|h| h.open_streams > 0)
}

/// The site as the first column shows it and a site's page titles it.
pub(super) fn site_label(site: &SiteSummary, width: usize) -> String {
    let c = &site.call_site;
    frame_label(&c.function, &c.file, c.line, width)
}

/// The hosts of a site's leaks, for its HOSTS cell.
fn hosts_text(site: &SiteSummary) -> String {
    if site.hosts.is_empty() {
        "–".to_owned()
    } else {
        site.hosts.join(", ")
    }
}

/// What the page says instead of a list: why there is no call site to show.
fn why_empty(s: &Screen) -> String {
    let snapshot = &s.view.snapshot;
    if !snapshot.sites.is_empty() {
        return "No call site has leaks of that reason (r cycles the reason filter).".to_owned();
    }
    let layers = &snapshot.go_layer;
    if layers.iter().any(|l| l.attached) && !layers.iter().any(|l| l.call_sites) {
        return "Call sites are off: the Go-aware layer follows HTTP/2 streams only (--go-probes \
                auto, nothing per request). --go-probes sites names the line behind every leak, \
                for a uprobe hit per request."
            .to_owned();
    }
    if layers.iter().any(|l| l.attached) {
        return "No request seen at Go's transport yet: a line of the relay shows here once it \
                sends a request through net/http."
            .to_owned();
    }
    let mut text = "No call site: they come from the Go-aware probes on the relay's own binary \
                    (Go 1.21 or newer), which are not attached to any target."
        .to_owned();
    for layer in layers {
        text.push(' ');
        text.push_str(&layer.line);
    }
    text
}

/// The figure columns that fit, and what is left for SITE and HOSTS.
struct SiteColumns {
    /// LEAKED, one per leak reason, (CONN/H2,) REQUESTS, LEAK%.
    cols: Vec<Col>,
    kinds: bool,
    kept: Vec<usize>,
    site_w: u16,
    /// None when the hosts do not fit.
    hosts_w: Option<u16>,
}

/// SITE gets at least this much before HOSTS shows at all.
const SITE_MIN: u16 = 24;
const SITE_WITH_HOSTS: u16 = 36;
const HOSTS_MIN: u16 = 12;

impl SiteColumns {
    fn fit(width: u16, kinds: bool, hosts_need: u16) -> Self {
        let wide = width >= 100;
        let col = |title: &'static str, drop: u8| Col {
            title,
            width: title.chars().count() as u16,
            drop,
        };
        let mut cols = vec![col("LEAKED", 0)];
        cols.extend(LeakReason::ALL.map(|reason| col(reason_title(reason, wide), 0)));
        if kinds {
            cols.push(col("CONN/H2", 2));
        }
        cols.push(col(if wide { "REQUESTS" } else { "REQS" }, 0));
        // Room for "100%" and "<0.1%".
        cols.push(col("LEAK%", 0));
        // One column goes to the highlight symbol.
        let (kept, _) = fit_columns(&cols, width.saturating_sub(1), SITE_MIN, 1);
        // What is left: below SITE_MIN on a very narrow screen, and the label is made for it.
        let fixed: u16 = kept.iter().map(|&i| cols[i].width + 1).sum();
        let flex = width.saturating_sub(1 + fixed).max(1);
        // HOSTS gets what its longest list needs, up to 2/5 of what is left, when SITE keeps
        // enough.
        let hosts_w = (flex >= SITE_WITH_HOSTS + 1 + HOSTS_MIN).then(|| {
            let most = (flex * 2 / 5)
                .min(flex - 1 - SITE_WITH_HOSTS)
                .max(HOSTS_MIN);
            hosts_need.clamp(HOSTS_MIN, most)
        });
        let site_w = hosts_w.map_or(flex, |h| flex - 1 - h);
        Self {
            cols,
            kinds,
            kept,
            site_w,
            hosts_w,
        }
    }

    fn widths(&self) -> Vec<Constraint> {
        let mut widths = vec![Constraint::Length(self.site_w)];
        widths.extend(
            self.kept
                .iter()
                .map(|&i| Constraint::Length(self.cols[i].width)),
        );
        widths.extend(self.hosts_w.map(Constraint::Length));
        widths
    }

    fn header(&self) -> Row<'static> {
        let mut head: Vec<String> = vec!["SITE".into()];
        head.extend(
            self.kept
                .iter()
                .map(|&i| right(self.cols[i].title.into(), self.cols[i].width)),
        );
        if self.hosts_w.is_some() {
            head.push("HOSTS".into());
        }
        Row::new(head).style(HEAD)
    }

    fn cells(&self, site: &SiteSummary, label: String) -> Vec<String> {
        let mut figures = vec![site.leaked.to_string()];
        figures.extend(site.by_reason.iter().map(|(_, n)| n.to_string()));
        if self.kinds {
            figures.push(format!(
                "{}/{}",
                site.by_kind.get(LeakKind::Connection),
                site.by_kind.get(LeakKind::H2Stream)
            ));
        }
        figures.push(site.requests_total.to_string());
        figures.push(units::percent(site.leaked, site.requests_total));
        let mut row = vec![label];
        row.extend(
            self.kept
                .iter()
                .map(|&i| right(figures[i].clone(), self.cols[i].width)),
        );
        if let Some(hosts_w) = self.hosts_w {
            row.push(units::fit(&hosts_text(site), hosts_w as usize));
        }
        row
    }
}

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
    let sites = s.view.listed_sites(s.ui);
    let total = s.view.snapshot.sites.len();
    let title = if sites.len() == total {
        format!(" Call sites ({total}) ")
    } else {
        format!(" Call sites ({} of {total}) ", sites.len())
    };
    let block = titled(
        title,
        format!(
            " sort: leaked, requests · reason: {} ",
            s.ui.reason_filter.label()
        ),
        area.width,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if sites.is_empty() {
        frame.render_widget(
            Paragraph::new(why_empty(s))
                .style(DIM)
                .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    }
    let hosts_need = sites
        .iter()
        .map(|site| hosts_text(site).chars().count())
        .max()
        .unwrap_or(0);
    let columns = SiteColumns::fit(
        inner.width,
        shows_kinds(s),
        u16::try_from(hosts_need).unwrap_or(u16::MAX),
    );
    let labels = site_labels(&sites, columns.site_w as usize);
    let rows: Vec<Row> = sites
        .iter()
        .zip(labels)
        .map(|(site, label)| {
            let style = if site.leaked > 0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            Row::new(columns.cells(site, label)).style(style)
        })
        .collect();
    let listed: Vec<_> = sites.iter().map(|site| site.call_site.clone()).collect();
    let selected = effective(s.ui.selected_site.as_ref(), &listed)
        .and_then(|sel| listed.iter().position(|c| c == sel))
        .unwrap_or(0);
    let visible = inner.height.saturating_sub(1) as usize;
    let mut state = TableState::new()
        .with_selected(Some(selected))
        .with_offset(scroll(selected, visible));
    let table = Table::new(rows, columns.widths())
        .header(columns.header())
        .column_spacing(1)
        .row_highlight_style(SELECTED)
        .highlight_symbol("▸")
        .highlight_spacing(HighlightSpacing::Always);
    frame.render_stateful_widget(table, inner, &mut state);
}

#[cfg(test)]
mod tests {
    use insta::assert_snapshot;

    use super::{frame_label, frame_text_label, site_labels};
    use crate::model::LeakReason;
    use crate::ui::render::{testkit::*, Screen, Session, SourceLabel};
    use crate::ui::{
        state::{Page, ReasonFilter, UiState},
        view::View,
    };

    fn sites_page() -> UiState {
        UiState {
            page: Page::Sites,
            ..UiState::new()
        }
    }

    /// The row of the site whose label contains `site`, its words one space apart.
    fn row(frame: &str, site: &str) -> String {
        frame
            .lines()
            .find(|l| l.contains(site))
            .unwrap_or_else(|| panic!("no row for {site}:\n{frame}"))
            .trim_matches(|c: char| c == '"' || c == '│')
            .trim_start_matches('▸')
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn sites_list_leaks_by_reason_requests_and_the_leaked_fraction_most_leaks_first() {
        let f = site_session();
        let frame = render(&f, &sites_page(), 80, 24);
        // SITE LEAKED C_WAIT UNREAD ABAND CONN/H2 REQS LEAK%
        assert_eq!(
            row(&frame, "relayImage"),
            "relayImage image.go:829 3 2 1 0 2/1 12 25%",
            "{frame}"
        );
        assert_eq!(
            row(&frame, "relayChat"),
            "relayChat chat.go:212 2 0 1 1 0/2 40 5.0%",
            "{frame}"
        );
        assert_eq!(
            row(&frame, "ListModels"),
            "ListModels models.go:57 0 0 0 0 0/0 30 0%",
            "{frame}"
        );
        let order: Vec<usize> = ["relayImage", "relayChat", "ListModels"]
            .iter()
            .map(|site| frame.find(site).expect("listed"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{frame}");
        assert!(frame.contains("Call sites (3)"), "{frame}");
        assert!(frame.contains("▸relayImage"), "{frame}");
        assert!(frame.contains("Enter open"), "{frame}");
        assert_snapshot!("sites_80x24", frame);

        let frame = render(&f, &sites_page(), 120, 40);
        // ... CONN/H2 REQUESTS LEAK% HOSTS: each site's leaks' hosts.
        assert!(
            row(&frame, "relayImage").ends_with("2/1 12 25% 127.0.0.12, 127.0.0.21"),
            "{frame}"
        );
        assert!(
            row(&frame, "relayChat").ends_with("0/2 40 5.0% (unknown connection),…"),
            "{frame}"
        );
        assert!(row(&frame, "ListModels").ends_with("30 0% –"), "{frame}");
        assert_snapshot!("sites_120x40", frame);
    }

    #[test]
    fn the_reason_filter_keeps_the_sites_with_such_leaks() {
        let f = site_session();
        let mut ui = sites_page();
        ui.reason_filter = ReasonFilter::Leaked;
        let frame = render(&f, &ui, 80, 24);
        assert!(frame.contains("Call sites (2 of 3)"), "{frame}");
        assert!(!frame.contains("ListModels"), "{frame}");
        ui.reason_filter = ReasonFilter::Only(LeakReason::Abandoned);
        let frame = render(&f, &ui, 80, 24);
        assert!(
            frame.contains("relayChat") && !frame.contains("relayImage"),
            "{frame}"
        );
        ui.reason_filter = ReasonFilter::Only(LeakReason::CloseWait);
        let frame = render(&f, &ui, 80, 24);
        assert!(
            frame.contains("relayImage") && !frame.contains("relayChat"),
            "{frame}"
        );
    }

    #[test]
    fn without_sites_the_page_says_why() {
        // The Go layer is not attached (a session of kernel signals only).
        let f = session(&fixture_relay());
        let frame = render(&f, &sites_page(), 80, 24);
        let text = frame
            .split(|c: char| c.is_whitespace() || c == '│' || c == '"')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains("No call site: they come from the Go-aware probes"),
            "{frame}"
        );
        // Attached, but no request yet.
        let (conns, streams) = fixture_h2();
        let mut f = session_with_streams(&conns, &streams);
        let frame = render(&f, &sites_page(), 120, 24);
        assert!(
            frame.contains("No request seen at Go's transport yet"),
            "{frame}"
        );
        // Attached for HTTP/2 streams only (the default): call sites are off, and how to turn
        // them on.
        f.table
            .apply(crate::model::Input::GoLayer(crate::model::GoLayer {
                pid: crate::model::testkit::PID,
                attached: true,
                call_sites: false,
                line: "Go layer: go1.27.3 ...".into(),
            }));
        let frame = render(&f, &sites_page(), 120, 24);
        let flat = frame
            .split(|c: char| c.is_whitespace() || c == '│' || c == '"')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            flat.contains("Call sites are off") && flat.contains("--go-probes sites"),
            "{frame}"
        );
        // Sites, but none with a leak now.
        let f = site_session();
        let mut view = View::build(&f.table, NOW, &GRACES);
        view.snapshot.sites.retain(|site| site.leaked == 0);
        let session = Session {
            source: SourceLabel::Live,
            graces: GRACES,
        };
        let ui = UiState {
            reason_filter: ReasonFilter::Leaked,
            ..sites_page()
        };
        let screen = Screen {
            view: &view,
            ui: &ui,
            trend: &f.trend,
            session: &session,
        };
        let frame = render_screen(&screen, 80, 24);
        assert!(
            frame.contains("No call site has leaks of that reason"),
            "{frame}"
        );
    }

    #[test]
    fn labels_keep_the_line_and_shorten_the_rest_first() {
        let f = "github.com/songquanpeng/one-api/relay/controller.RelayImage";
        let file = "/build/one-api/relay/controller/image.go";
        let label = |width| frame_label(f, file, 829, width);
        assert_eq!(label(200), format!("{f} {file}:829"), "whole when it fits");
        assert_eq!(
            label(70),
            "controller.RelayImage /build/one-api/relay/controller/image.go:829"
        );
        assert_eq!(
            label(60),
            "controller.RelayImage relay/controller/image.go:829"
        );
        assert_eq!(label(45), "controller.RelayImage controller/image.go:829");
        assert_eq!(label(40), "controller.RelayImage image.go:829");
        assert_eq!(label(25), "RelayImage image.go:829");
        assert_eq!(label(20), "RelayI… image.go:829");
        assert_eq!(label(12), "RelayImage …");
        // Methods and closures keep their receiver and suffix; generic type arguments hold
        // paths of their own, so the package path ends before them.
        assert_eq!(
            frame_label(
                "example.com/relay/adaptor.(*Adaptor).DoRequest.func1",
                "/a/b.go",
                7,
                30
            ),
            "(*Adaptor).DoRequest.f… b.go:7"
        );
        assert_eq!(
            frame_label(
                "example.com/relay/x.Do[go.shape.*example.com/y.T]",
                "/x.go",
                3,
                40
            ),
            "x.Do[go.shape.*example.com/y.T] /x.go:3"
        );
        assert_eq!(
            frame_text_label(
                "net/http.(*Client).Do /usr/lib/go/src/net/http/client.go:590",
                40
            ),
            "http.(*Client).Do net/http/client.go:590"
        );
        assert_eq!(frame_text_label("no location", 8), "no loca…");
    }

    #[test]
    fn a_column_of_labels_is_shortened_alike() {
        let f = site_session();
        let view = View::build(&f.table, NOW, &GRACES);
        let mut sites: Vec<_> = view.snapshot.sites.iter().collect();
        // "controller.ListModels models.go:57" needs 34; the others fit in 33 as they are.
        assert_eq!(
            site_labels(&sites, 33),
            [
                "relayImage image.go:829",
                "relayChat chat.go:212",
                "ListModels models.go:57"
            ]
        );
        assert_eq!(
            site_labels(&sites, 34),
            [
                "controller.relayImage image.go:829",
                "controller.relayChat chat.go:212",
                "controller.ListModels models.go:57"
            ]
        );
        // One that fits in no form is cut on its own; the others stay whole.
        sites.truncate(2);
        assert_eq!(
            site_labels(&sites, 21),
            ["relayIm… image.go:829", "relayChat chat.go:212"]
        );
    }
}
