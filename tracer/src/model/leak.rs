//! What a leak is, as data: the kind of thing leaked and why it is called leaked. Every
//! output iterates `LeakReason::ALL`, so a new reason is one variant here plus its rule in
//! `classify` and its words in `ui::explain`; a new kind (an HTTP/2 stream) is a variant of
//! `LeakKind`, which every leak carries.

use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// Why an open connection is called leaked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakReason {
    /// The upstream closed the connection and the process has not closed its side.
    CloseWait,
    /// Response bytes wait in the receive queue and nothing reads them.
    Unread,
    /// The last read returned data and nothing has read since (reading was abandoned).
    Abandoned,
}

impl LeakReason {
    /// In the order every output lists them.
    pub const ALL: [LeakReason; 3] = [Self::CloseWait, Self::Unread, Self::Abandoned];

    /// Its name in JSON, CSV, Prometheus labels and on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CloseWait => "close_wait",
            Self::Unread => "unread",
            Self::Abandoned => "abandoned",
        }
    }

    /// What it means, in a few words (the UI's help).
    pub fn summary(self) -> &'static str {
        match self {
            Self::CloseWait => "upstream closed; this process never did",
            Self::Unread => "response bytes wait; nothing reads them",
            Self::Abandoned => "last read got data; nobody read again",
        }
    }

    /// How long its condition must hold before it is called a leak.
    pub fn grace(self, graces: &Graces) -> Duration {
        match self {
            Self::CloseWait => graces.close_wait,
            Self::Unread => graces.unread,
            Self::Abandoned => graces.abandon,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The kind of thing that leaked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// An HTTP/1.1 connection that never went back to the pool (judged from TCP signals).
    Connection,
    /// An HTTP/2 stream whose body nobody finished (judged from the Go-aware probes): its
    /// goroutine and buffers stay, on a connection the kernel sees as healthy.
    H2Stream,
}

impl LeakKind {
    pub const ALL: [LeakKind; 2] = [Self::Connection, Self::H2Stream];

    /// Its name in JSON, Prometheus labels and on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::H2Stream => "h2_stream",
        }
    }

    /// The reasons a leak of this kind can have: a stream has no CLOSE_WAIT of its own (the
    /// peer's END_STREAM ends it; `classify::judge_stream` says only unread or abandoned).
    /// Outputs that list every (kind, reason) pair list these, so no series is always zero.
    pub fn reasons(self) -> &'static [LeakReason] {
        match self {
            Self::Connection => &LeakReason::ALL,
            Self::H2Stream => &[LeakReason::Unread, LeakReason::Abandoned],
        }
    }
}

/// Leaks counted per kind; serialised as `{"connection": N, "h2_stream": N}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByKind([u64; LeakKind::ALL.len()]);

impl ByKind {
    pub fn get(&self, kind: LeakKind) -> u64 {
        self.0[kind as usize]
    }

    pub fn add(&mut self, kind: LeakKind) {
        self.0[kind as usize] += 1;
    }

    pub fn merge(&mut self, other: &ByKind) {
        for kind in LeakKind::ALL {
            self.0[kind as usize] += other.get(kind);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (LeakKind, u64)> + '_ {
        LeakKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }

    /// `n` leaked connections and no stream (tests).
    #[cfg(test)]
    pub fn connections(n: u64) -> Self {
        let mut counts = Self::default();
        counts.0[LeakKind::Connection as usize] = n;
        counts
    }
}

impl Serialize for ByKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(LeakKind::ALL.len()))?;
        for (kind, n) in self.iter() {
            map.serialize_entry(kind.as_str(), &n)?;
        }
        map.end()
    }
}

/// How long each condition must hold before it is called a leak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Graces {
    pub close_wait: Duration,
    pub unread: Duration,
    pub abandon: Duration,
}

impl Default for Graces {
    fn default() -> Self {
        Self {
            close_wait: Duration::from_secs(5),
            unread: Duration::from_secs(10),
            abandon: Duration::from_secs(30),
        }
    }
}

/// Leaks counted per reason; serialised as `{"close_wait": N, "unread": N, "abandoned": N}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByReason([u64; LeakReason::ALL.len()]);

impl ByReason {
    /// Leaks with `reason`.
    pub fn get(&self, reason: LeakReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn add(&mut self, reason: LeakReason) {
        self.0[reason.index()] += 1;
    }

    pub fn merge(&mut self, other: &ByReason) {
        for reason in LeakReason::ALL {
            self.0[reason.index()] += other.get(reason);
        }
    }

    /// Leaks of every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each reason with its count, in `LeakReason::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (LeakReason, u64)> + '_ {
        LeakReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }

    /// From counts in `LeakReason::ALL` order (tests).
    #[cfg(test)]
    pub fn of(counts: [u64; LeakReason::ALL.len()]) -> Self {
        Self(counts)
    }
}

impl Serialize for ByReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(LeakReason::ALL.len()))?;
        for (reason, n) in self.iter() {
            map.serialize_entry(reason.as_str(), &n)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut counts = ByReason::default();
        for (i, reason) in LeakReason::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                counts.add(reason);
            }
        }
        assert_eq!(
            counts
                .iter()
                .map(|(r, n)| (r.as_str(), n))
                .collect::<Vec<_>>(),
            vec![("close_wait", 1), ("unread", 2), ("abandoned", 3)]
        );
        assert_eq!(counts.total(), 6);
        let mut sum = counts.clone();
        sum.merge(&counts);
        assert_eq!(sum.get(LeakReason::Abandoned), 6);
    }

    #[test]
    fn by_reason_serialises_as_the_named_counts_it_always_had() {
        let counts = ByReason::of([2, 0, 1]);
        assert_eq!(
            serde_json::to_string(&counts).expect("serialises"),
            r#"{"close_wait":2,"unread":0,"abandoned":1}"#
        );
        for reason in LeakReason::ALL {
            assert_eq!(
                serde_json::to_value(reason).expect("serialises"),
                serde_json::json!(reason.as_str())
            );
        }
        for kind in LeakKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).expect("serialises"),
                serde_json::json!(kind.as_str())
            );
        }
        let mut kinds = ByKind::default();
        kinds.add(LeakKind::H2Stream);
        assert_eq!(
            serde_json::to_string(&kinds).expect("serialises"),
            r#"{"connection":0,"h2_stream":1}"#
        );
    }

    #[test]
    fn each_reason_has_its_own_grace() {
        let graces = Graces {
            close_wait: Duration::from_secs(1),
            unread: Duration::from_secs(2),
            abandon: Duration::from_secs(3),
        };
        let secs: Vec<u64> = LeakReason::ALL
            .iter()
            .map(|r| r.grace(&graces).as_secs())
            .collect();
        assert_eq!(secs, vec![1, 2, 3]);
    }
}
