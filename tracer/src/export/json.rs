//! `--json`: one snapshot object per line.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::model::Snapshot;

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    targets: Vec<u32>,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The writer underneath (every line is flushed to it as it is written).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn write(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.write_at(snapshot, super::now_rfc3339()?)
    }

    /// Writes `snapshot` stamped with `time` (RFC 3339).
    pub fn write_at(&mut self, snapshot: &Snapshot, time: String) -> Result<()> {
        let line = Line {
            kind: "snapshot",
            time,
            targets: snapshot.targets.iter().map(|t| t.pid).collect(),
            snapshot,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnTable, Graces, Target};

    #[test]
    fn a_snapshot_line_has_the_documented_shape() {
        let mut table = ConnTable::new();
        table.apply(crate::model::Input::Targets(vec![Target {
            pid: 7,
            comm: "relay".into(),
        }]));
        let snapshot = Snapshot::take(&table, 0, &Graces::default());
        let mut out = JsonLines::new(Vec::new());
        out.write_at(&snapshot, "2026-11-26T00:00:00Z".into())
            .expect("writes");
        let text = String::from_utf8(out.out).expect("utf8");
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["time"], "2026-11-26T00:00:00Z");
        assert_eq!(v["targets"], serde_json::json!([7]));
        assert!(v["hosts"].is_array());
        assert!(v["leaks"].is_array());
    }
}
