//! The headless table: per-host counts and the leaks (connections, and HTTP/2 streams with
//! their stream id), redrawn in place on a terminal, appended as blocks otherwise (logs,
//! pipes).

use std::io::{IsTerminal, Write};

use crate::model::{leak::LeakKind, Graces, LeakReason, Snapshot};

pub struct PlainTable<W: Write> {
    out: W,
    redraw: bool,
}

/// Most leaked connections listed under the hosts; the rest are counted.
const MAX_LEAK_ROWS: usize = 20;

impl PlainTable<std::io::Stdout> {
    pub fn new(out: std::io::Stdout) -> Self {
        let redraw = out.is_terminal();
        Self { out, redraw }
    }
}

impl<W: Write> PlainTable<W> {
    pub fn write(
        &mut self,
        snapshot: &Snapshot,
        graces: &Graces,
        last: bool,
    ) -> std::io::Result<()> {
        let text = render(snapshot, graces);
        if self.redraw && !last {
            // Home and clear, then draw: one write so the screen never shows half a table.
            write!(self.out, "\x1b[H\x1b[2J{text}")?;
        } else {
            writeln!(self.out, "{text}")?;
        }
        self.out.flush()
    }
}

/// A reason's column: as wide as its name, at least 7.
fn reason_width(reason: LeakReason) -> usize {
    reason.as_str().len().max(7)
}

fn trunc(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub fn render(snapshot: &Snapshot, graces: &Graces) -> String {
    let mut s = String::new();
    let pids: Vec<String> = snapshot
        .targets
        .iter()
        .map(|t| {
            if t.comm.is_empty() {
                t.pid.to_string()
            } else {
                format!("{} ({})", t.pid, t.comm)
            }
        })
        .collect();
    s.push_str(&format!(
        "tracer — targets: {}   open: {}   leaked: {}   events lost: {}\n",
        if pids.is_empty() {
            "none yet".to_owned()
        } else {
            pids.join(", ")
        },
        snapshot.open_total,
        snapshot.leaked_total,
        snapshot.kernel.events_lost,
    ));
    let graces_text: Vec<String> = LeakReason::ALL
        .iter()
        .map(|r| format!("{} {:?}", r.as_str(), r.grace(graces)))
        .collect();
    s.push_str(&format!("graces: {}\n\n", graces_text.join(", ")));
    s.push_str(&format!("{:<28} {:>6} {:>7}", "HOST", "OPEN", "LEAKED"));
    for reason in LeakReason::ALL {
        let name = reason.as_str().to_uppercase();
        s.push_str(&format!(" {name:>w$}", w = reason_width(reason)));
    }
    s.push_str(&format!(" {:>13} {:>7}\n", "CLOSED_UNREAD", "TOTAL"));
    if snapshot.hosts.is_empty() {
        s.push_str("(no upstream connections seen yet)\n");
    }
    for h in &snapshot.hosts {
        s.push_str(&format!(
            "{:<28} {:>6} {:>7}",
            trunc(&h.host, 28),
            h.open,
            h.leaked
        ));
        for (reason, n) in h.by_reason.iter() {
            s.push_str(&format!(" {n:>w$}", w = reason_width(reason)));
        }
        s.push_str(&format!(
            " {:>13} {:>7}\n",
            h.closed_unread_total, h.connections_total
        ));
    }
    if !snapshot.leaks.is_empty() {
        s.push_str(&format!(
            "\n{:<8} {:>5} {:<23} {:<23} {:>6} {:<12} {:<11} {:>8} {:>8} {:>9}\n",
            "PID", "FD", "LOCAL", "REMOTE", "STREAM", "REASON", "STATE", "AGE", "IDLE", "UNREAD"
        ));
        for l in snapshot.leaks.iter().take(MAX_LEAK_ROWS) {
            // A leaked HTTP/2 stream names its stream; its connection (the other columns)
            // is healthy.
            let stream = match l.kind {
                LeakKind::Connection => "–".to_owned(),
                LeakKind::H2Stream => l
                    .stream_id
                    .map_or_else(|| "?".to_owned(), |id| id.to_string()),
            };
            s.push_str(&format!(
                "{:<8} {:>5} {:<23} {:<23} {:>6} {:<12} {:<11} {:>7.1}s {:>7.1}s {:>9}\n",
                l.pid,
                l.fd.map_or_else(|| "?".to_owned(), |fd| fd.to_string()),
                trunc(&l.local.to_string(), 23),
                trunc(&l.remote.to_string(), 23),
                stream,
                l.reason.as_str(),
                l.state,
                l.age_s,
                l.idle_s,
                l.unread_bytes
            ));
        }
        if snapshot.leaks.len() > MAX_LEAK_ROWS {
            s.push_str(&format!(
                "… and {} more leaks\n",
                snapshot.leaks.len() - MAX_LEAK_ROWS
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        leak::LeakKind,
        testkit::{go_layer_attached, stream_sample, table_after, SEC},
        Input, Sample,
    };

    #[test]
    fn a_leaked_stream_is_listed_with_its_stream_id() {
        let table = table_after([
            go_layer_attached(),
            Input::Sample(Sample {
                now_ns: 3 * SEC,
                streams: vec![stream_sample(1, 7, None, true, (4096, 0))],
                ..Sample::default()
            }),
        ]);
        let graces = Graces::default();
        let snapshot = Snapshot::take(&table, 60 * SEC, &graces);
        assert_eq!(snapshot.leaks[0].kind, LeakKind::H2Stream);
        let text = render(&snapshot, &graces);
        let header = text
            .lines()
            .find(|l| l.starts_with("PID"))
            .expect("a leak list");
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("7 "))
            .expect("the leak")
            .split_whitespace()
            .collect();
        assert!(header.contains("STREAM REASON"), "{text}");
        assert_eq!(row[4..6], ["7", "unread"], "{text}");
    }
}
