//! The two header lines every page shares: where the data comes from, the targets, uptime,
//! event rate and losses; then the totals, the graces and the read hook in use.

use ratatui::{
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use super::{Screen, SourceLabel, DIM, HEAD, LEAK};
use crate::{
    model::{leak::LeakKind, LeakReason, Target},
    ui::units,
};

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

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Screen) {
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
    let h2_leaks: u64 = snap
        .hosts
        .iter()
        .map(|h| h.by_kind.get(LeakKind::H2Stream))
        .sum();
    let second = Line::from(vec![
        Span::raw(" open "),
        Span::styled(snap.open_total.to_string(), HEAD),
        Span::raw(" · leaked "),
        Span::styled(
            snap.leaked_total.to_string(),
            if snap.leaked_total > 0 { LEAK } else { HEAD },
        ),
        // How many of them are HTTP/2 streams, when any is.
        Span::styled(
            match h2_leaks {
                0 => String::new(),
                n => format!(" ({n} h2 streams)"),
            },
            LEAK,
        ),
        Span::styled(
            format!(
                " · graces: {}",
                LeakReason::ALL
                    .map(|r| format!("{} {}", r.as_str(), units::grace(r.grace(g))))
                    .join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Target;

    #[test]
    fn targets_are_named_by_command_and_pids() {
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
}
