//! HTTP/2 streams of the targets, from the Go-aware probes. Over HTTP/2 an unclosed response
//! body leaks a stream, not a connection: Go's single reader per connection keeps draining the
//! socket into per-stream buffers, so the kernel sees a healthy connection. A stream is open
//! from its request goroutine's start to its end (`StreamEvent`), and its body reads come from
//! the probes' map (`StreamSample`).

use std::collections::{HashMap, HashSet};

use super::{StreamEvent, StreamEventKind, StreamSample};

/// One open HTTP/2 stream of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Stream {
    pub pid: u32,
    /// The client stream's address in the process.
    pub stream: u64,
    /// The socket of its connection, when the probes followed the connection to it: the
    /// stream counts under that connection's host.
    pub fd: Option<i32>,
    pub stream_id: Option<u32>,
    pub opened_ns: u64,
    /// When the round trip handed the response to the caller (headers received).
    pub responded_ns: Option<u64>,
    /// When the caller closed the body.
    pub body_closed_ns: Option<u64>,
    pub reads: u64,
    pub bytes_read: u64,
    pub last_read_ns: Option<u64>,
    pub reads_inflight: u32,
}

impl H2Stream {
    /// The last sign that someone uses the stream: its last body read, else its response,
    /// else its start.
    pub fn last_activity_ns(&self) -> u64 {
        self.last_read_ns
            .or(self.responded_ns)
            .unwrap_or(self.opened_ns)
            .max(self.opened_ns)
    }
}

/// Every open stream of the targets, by process and stream address.
#[derive(Clone, Debug, Default)]
pub struct StreamTable {
    open: HashMap<(u32, u64), H2Stream>,
    /// Streams that ended, per process, over the session.
    pub ended_total: u64,
}

impl StreamTable {
    pub fn apply_event(&mut self, event: &StreamEvent) {
        let key = (event.pid, event.stream);
        match &event.kind {
            StreamEventKind::Opened { fd } => {
                // An address reused by a new stream after a lost end: the new one replaces it.
                self.open.insert(
                    key,
                    H2Stream {
                        pid: event.pid,
                        stream: event.stream,
                        fd: *fd,
                        stream_id: None,
                        opened_ns: event.at_ns,
                        responded_ns: None,
                        body_closed_ns: None,
                        reads: 0,
                        bytes_read: 0,
                        last_read_ns: None,
                        reads_inflight: 0,
                    },
                );
            }
            StreamEventKind::Responded => {
                if let Some(s) = self.open.get_mut(&key) {
                    s.responded_ns = Some(event.at_ns);
                }
            }
            StreamEventKind::BodyClosed => {
                if let Some(s) = self.open.get_mut(&key) {
                    s.body_closed_ns = Some(event.at_ns);
                }
            }
            StreamEventKind::Ended => {
                if self.open.remove(&key).is_some() {
                    self.ended_total += 1;
                }
            }
        }
    }

    /// The probes' map is the newest truth about reads. A stream the map no longer has ended
    /// (its end event was lost, or is still queued: both end it).
    pub fn apply_sample(&mut self, streams: &[StreamSample], probes_attached: bool) {
        let mut seen = HashSet::with_capacity(streams.len());
        for sample in streams {
            let key = (sample.pid, sample.stream);
            seen.insert(key);
            if let Some(s) = self.open.get_mut(&key) {
                s.stream_id = sample.stream_id.or(s.stream_id);
                s.reads = sample.reads;
                s.bytes_read = sample.bytes_read;
                s.last_read_ns = sample.last_read_ns;
                s.reads_inflight = sample.reads_inflight;
            }
        }
        if probes_attached {
            self.open.retain(|key, _| seen.contains(key));
        }
    }

    /// Streams of processes that are no longer targets went with them.
    pub fn retain_pids(&mut self, alive: &HashSet<u32>) {
        self.open.retain(|(pid, _), _| alive.contains(pid));
    }

    pub fn open(&self) -> impl Iterator<Item = &H2Stream> {
        self.open.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testkit::SEC;

    fn event(kind: StreamEventKind, stream: u64, at_ns: u64) -> StreamEvent {
        StreamEvent {
            kind,
            pid: 7,
            stream,
            at_ns,
        }
    }

    #[test]
    fn a_stream_lives_from_its_start_to_its_end_and_takes_its_reads_from_samples() {
        let mut t = StreamTable::default();
        t.apply_event(&event(StreamEventKind::Opened { fd: Some(9) }, 0xc000, SEC));
        t.apply_event(&event(StreamEventKind::Responded, 0xc000, 2 * SEC));
        // Events of a stream never opened (probes attached mid-stream) change nothing.
        t.apply_event(&event(StreamEventKind::Responded, 0xd000, 2 * SEC));
        t.apply_sample(
            &[StreamSample {
                pid: 7,
                stream: 0xc000,
                stream_id: Some(3),
                reads: 2,
                bytes_read: 8192,
                last_read_ns: Some(3 * SEC),
                reads_inflight: 1,
            }],
            true,
        );
        let s = t.open().next().expect("one open stream").clone();
        assert_eq!(t.open().count(), 1);
        assert_eq!(
            (s.fd, s.stream_id, s.responded_ns, s.reads, s.bytes_read),
            (Some(9), Some(3), Some(2 * SEC), 2, 8192)
        );
        assert_eq!(s.reads_inflight, 1);
        assert_eq!(s.last_activity_ns(), 3 * SEC);
        t.apply_event(&event(StreamEventKind::Ended, 0xc000, 4 * SEC));
        assert_eq!(t.open().count(), 0);
        assert_eq!(t.ended_total, 1);
    }

    #[test]
    fn a_stream_missing_from_the_map_ended_and_exited_processes_take_theirs() {
        let mut t = StreamTable::default();
        t.apply_event(&event(StreamEventKind::Opened { fd: None }, 1, SEC));
        t.apply_event(&event(StreamEventKind::Opened { fd: None }, 2, SEC));
        // Without probes there is no map to trust.
        t.apply_sample(&[], false);
        assert_eq!(t.open().count(), 2);
        let only_two = StreamSample {
            pid: 7,
            stream: 2,
            stream_id: None,
            reads: 0,
            bytes_read: 0,
            last_read_ns: None,
            reads_inflight: 0,
        };
        t.apply_sample(&[only_two], true);
        assert_eq!(t.open().map(|s| s.stream).collect::<Vec<_>>(), vec![2]);
        t.retain_pids(&HashSet::from([8]));
        assert_eq!(t.open().count(), 0);
    }
}
