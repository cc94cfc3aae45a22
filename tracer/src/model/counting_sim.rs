//! A simulation of what the collector hands the model: sockets opened and closed at a few
//! reused kernel addresses, their events queued in the ring, the kernel map read at any point
//! after a drain, and socket-table scans taken at one moment and delivered with a later
//! sample. However the steps interleave, every connection counts once.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::testkit::*;
use super::{tcp_state, ConnTable, Input, KernelConn, SocketSample};

const UP: &str = "10.0.0.12:443";
const UP_HOST: &str = "10.0.0.12";
/// Kernel addresses a new socket may take: few, so they are reused often.
const ADDRESSES: u64 = 3;
const MAX_SOCKETS: usize = 12;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// SYN_SENT: map entry in, Connect queued.
    Connecting,
    Established,
    /// Close queued, map entry not yet deleted, socket gone from the socket table.
    Closing,
    Gone,
}

struct Sock {
    sk: u64,
    port: u16,
    connect_ns: u64,
    established_ns: Option<u64>,
    stage: Stage,
}

impl Sock {
    fn record(&self) -> KernelConn {
        let conn = kconn(self.port, UP, self.connect_ns);
        match (self.stage, self.established_ns) {
            (Stage::Connecting, _) | (_, None) => conn,
            (Stage::Established, Some(at)) => established(conn, at),
            (Stage::Closing | Stage::Gone, Some(at)) => KernelConn {
                state: tcp_state::CLOSE,
                closed_by_process: true,
                ..established(conn, at)
            },
        }
    }

    fn in_socket_table(&self, fd: i32) -> Option<SocketSample> {
        (self.stage == Stage::Established)
            .then(|| socket(PID, fd, local(self.port), UP, tcp_state::ESTABLISHED, 0))
    }
}

/// What the simulated kernel and collector did.
#[derive(Default)]
struct Sim {
    now: u64,
    socks: Vec<Sock>,
    ring: VecDeque<Input>,
    /// A drain happened since the last map read: a sample may read the map now.
    drained: bool,
    /// A scan taken (its sockets, when) that the next sample delivers.
    scan: Option<(Vec<SocketSample>, u64)>,
    log: Vec<String>,
}

impl Sim {
    fn tick(&mut self) {
        self.now += MS;
    }

    fn map(&self) -> Vec<(u64, KernelConn)> {
        self.socks
            .iter()
            .filter(|s| {
                matches!(
                    s.stage,
                    Stage::Connecting | Stage::Established | Stage::Closing
                )
            })
            .map(|s| (s.sk, s.record()))
            .collect()
    }

    fn nth_in(&self, stages: &[Stage], pick: usize) -> Option<usize> {
        let found: Vec<usize> = (0..self.socks.len())
            .filter(|&i| stages.contains(&self.socks[i].stage))
            .collect();
        (!found.is_empty()).then(|| found[pick % found.len()])
    }

    fn step(&mut self, table: &mut ConnTable, op: u8, pick: usize) {
        self.tick();
        match op % 8 {
            0 => {
                let held: Vec<u64> = self
                    .socks
                    .iter()
                    .filter(|s| s.stage != Stage::Gone)
                    .map(|s| s.sk)
                    .collect();
                let Some(sk) = (1..=ADDRESSES).find(|a| !held.contains(a)) else {
                    return;
                };
                if self.socks.len() >= MAX_SOCKETS {
                    return;
                }
                let sock = Sock {
                    sk,
                    port: 40_000 + self.socks.len() as u16,
                    connect_ns: self.now,
                    established_ns: None,
                    stage: Stage::Connecting,
                };
                // The kernel sends no event at connect or establishment: the map has it.
                self.log.push(format!("connect sk={sk} port={}", sock.port));
                self.socks.push(sock);
            }
            1 => {
                if let Some(i) = self.nth_in(&[Stage::Connecting], pick) {
                    let now = self.now;
                    let s = &mut self.socks[i];
                    s.established_ns = Some(now);
                    s.stage = Stage::Established;
                    self.log.push(format!("establish port={}", s.port));
                }
            }
            2 => {
                if let Some(i) = self.nth_in(&[Stage::Connecting, Stage::Established], pick) {
                    self.step_close(i);
                }
            }
            3 => {
                if let Some(i) = self.nth_in(&[Stage::Closing], pick) {
                    self.socks[i].stage = Stage::Gone;
                    self.log.push(format!("delete port={}", self.socks[i].port));
                }
            }
            4 => self.drain(table),
            5 | 6 => self.sample(table, op % 8 == 6, pick),
            _ => {
                if self.scan.is_none() {
                    self.scan = Some((self.socket_table(), self.now));
                    self.log.push("scan".into());
                }
            }
        }
    }

    fn socket_table(&self) -> Vec<SocketSample> {
        self.socks
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.in_socket_table(3 + i as i32))
            .collect()
    }

    fn drain(&mut self, table: &mut ConnTable) {
        self.log.push("drain".into());
        while let Some(input) = self.ring.pop_front() {
            table.apply(input);
        }
        self.drained = true;
    }

    /// A sample: the map read now (only ever after a drain), with the scan if `with_scan`.
    /// The map is read entry by entry: unless `split` is 0, the kernel takes a step (which
    /// one depends on `split`) after the entries at addresses below `split` were read.
    fn sample(&mut self, table: &mut ConnTable, with_scan: bool, split: usize) {
        if !self.drained {
            self.drain(table);
            return;
        }
        self.drained = false;
        let split = split as u64;
        let mut kernel: Vec<(u64, KernelConn)> = self
            .map()
            .into_iter()
            .filter(|(sk, _)| *sk < split)
            .collect();
        if split > 0 {
            let op = (split + self.now / MS) % 4;
            self.step(table, op as u8, split as usize);
        }
        kernel.extend(self.map().into_iter().filter(|(sk, _)| *sk >= split));
        let (sockets, scanned_ns) = match self.scan.take() {
            Some((sockets, at)) if with_scan => (Some(sockets), Some(at)),
            other => {
                self.scan = other;
                (None, None)
            }
        };
        self.log.push(format!(
            "sample map={:?} scan={:?}",
            kernel
                .iter()
                .map(|(sk, c)| (*sk, c.local.port()))
                .collect::<Vec<_>>(),
            sockets
                .as_ref()
                .map(|s: &Vec<SocketSample>| s.iter().map(|s| s.local.port()).collect::<Vec<_>>())
        ));
        table.apply(Input::Sample(super::Sample {
            streams: Vec::new(),
            now_ns: self.now,
            kernel,
            sockets,
            stats: super::KernelStats::default(),
            scanned_ns,
        }));
    }

    /// Closes what is open and lets the collector catch up.
    fn finish(&mut self, table: &mut ConnTable) {
        for i in 0..self.socks.len() {
            if matches!(self.socks[i].stage, Stage::Connecting | Stage::Established) {
                self.step_close(i);
            }
        }
        for s in &mut self.socks {
            s.stage = Stage::Gone;
        }
        for _ in 0..3 {
            self.tick();
            self.drain(table);
            self.scan = Some((self.socket_table(), self.now));
            self.sample(table, true, 0);
        }
    }

    /// Socket `i` reaches TCP_CLOSE: its Close is queued; its map entry goes later.
    fn step_close(&mut self, i: usize) {
        let s = &mut self.socks[i];
        self.log.push(format!("close port={}", s.port));
        let old = if s.stage == Stage::Established {
            tcp_state::ESTABLISHED
        } else {
            tcp_state::SYN_SENT
        };
        s.stage = Stage::Closing;
        self.ring.push_back(close(s.sk, old, PID, s.record()));
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_connection_counts_once_however_events_samples_and_scans_interleave(
        ops in proptest::collection::vec((0u8..8, 0usize..4), 1..80)
    ) {
        let mut table = ConnTable::new();
        table.apply(targets(&[PID]));
        let mut sim = Sim::default();
        for (op, pick) in ops {
            sim.step(&mut table, op, pick);
        }
        sim.finish(&mut table);
        let opened = sim.socks.len() as u64;
        let counted = table
            .hosts()
            .get(UP_HOST)
            .map_or(0, |t| t.connections_total);
        prop_assert_eq!(counted, opened, "steps:\n{}", sim.log.join("\n"));
        prop_assert_eq!(table.conns().count(), 0, "steps:\n{}", sim.log.join("\n"));
    }
}
