//! HTTP/2 streams of the targets, from the Go-aware layer. Over HTTP/2 an unclosed response
//! body leaks a stream, not a connection: Go's single reader per connection keeps draining the
//! socket into per-stream buffers, so the kernel sees a healthy connection.
//!
//! The collector reads every open stream of every probed connection out of the relay's memory
//! at each sample (`StreamSample`): a stream is open while its connection's stream map holds
//! it, which is exactly while its request goroutine lives (a leaked body keeps it there; the
//! peer's END_STREAM, a reset, a cancelled context or the body's Close end it). No event per
//! read exists: the body bytes the application read are what arrived minus what is still
//! buffered ([`StreamSample::bytes_read`]), and a read happened between two samples when
//! that grew (see [`StreamTable::apply_sample`] for when it cannot be added up).

use std::collections::{HashMap, HashSet};

use super::StreamSample;

/// One open HTTP/2 stream of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Stream {
    pub pid: u32,
    /// The client stream's address in the process.
    pub stream: u64,
    /// Its connection (`*ClientConn`) in the process.
    pub conn: u64,
    /// The socket of its connection, when the probe followed the connection to it: the
    /// stream counts under that connection's host.
    pub fd: Option<i32>,
    pub stream_id: Option<u32>,
    /// When a sample first saw it.
    pub opened_ns: u64,
    /// When a sample first saw its response (headers received).
    pub responded_ns: Option<u64>,
    /// The response's address (0 before the headers).
    pub response: u64,
    /// Body bytes waiting in Go's stream buffer for the application.
    pub buffered_bytes: Option<u64>,
    /// Body bytes the application read (known when the response has a Content-Length).
    pub bytes_read: Option<u64>,
    /// The application was seen reading the body.
    pub read_seen: bool,
    /// The last sample that saw it read (or, for a stream first seen already read in part,
    /// the sample that first saw it).
    pub last_read_ns: Option<u64>,
    /// The application closed the body (the stream is being reset).
    pub body_closed: bool,
    /// The body's end arrived (or the stream failed): the stream is ending.
    pub body_done: bool,
    /// The previous sample of it, to tell reads apart from arrivals.
    pub(super) last: StreamSample,
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
    /// Streams that ended over the session.
    pub ended_total: u64,
}

impl StreamTable {
    /// One sample's reading of every stream of every probed connection, at `now_ns`. A stream
    /// the sample does not have ended. The application read between two samples when the
    /// bytes it read grew; when they cannot be added up (see `StreamSample::bytes_read`): the
    /// buffer shrank (only a read takes bytes out; arrivals add), the read position in the
    /// first chunk moved, the held-back window update changed, or fewer bytes of a known
    /// Content-Length remain.
    pub fn apply_sample(&mut self, streams: &[StreamSample], now_ns: u64) {
        let mut seen = HashSet::with_capacity(streams.len());
        for sample in streams {
            let key = (sample.pid, sample.stream);
            seen.insert(key);
            match self.open.get_mut(&key) {
                Some(s) => {
                    let prev = &s.last;
                    let read_now = match (prev.bytes_read(), sample.bytes_read()) {
                        (Some(before), Some(now)) => now > before,
                        _ => {
                            sample.buffered_bytes < prev.buffered_bytes
                                && sample.buffered_bytes.is_some()
                                || sample.first_chunk_read != prev.first_chunk_read
                                || sample.unsent != prev.unsent
                                || sample.bytes_remain != prev.bytes_remain && prev.response != 0
                        }
                    };
                    if read_now && sample.response != 0 {
                        s.read_seen = true;
                        s.last_read_ns = Some(now_ns);
                    }
                    if s.responded_ns.is_none() && sample.response != 0 {
                        s.responded_ns = Some(now_ns);
                        if sample.shows_a_read() {
                            s.read_seen = true;
                            s.last_read_ns = Some(now_ns);
                        }
                    }
                    s.update(sample);
                }
                None => {
                    let responded = sample.response != 0;
                    let read = responded && sample.shows_a_read();
                    let mut s = H2Stream {
                        pid: sample.pid,
                        stream: sample.stream,
                        conn: sample.conn,
                        fd: sample.fd,
                        stream_id: None,
                        opened_ns: now_ns,
                        responded_ns: responded.then_some(now_ns),
                        response: 0,
                        buffered_bytes: None,
                        bytes_read: None,
                        read_seen: read,
                        last_read_ns: read.then_some(now_ns),
                        body_closed: false,
                        body_done: false,
                        last: sample.clone(),
                    };
                    s.update(sample);
                    self.open.insert(key, s);
                }
            }
        }
        let before = self.open.len();
        self.open.retain(|key, _| seen.contains(key));
        self.ended_total += (before - self.open.len()) as u64;
    }

    /// Streams of processes that are no longer targets went with them.
    pub fn retain_pids(&mut self, alive: &HashSet<u32>) {
        self.open.retain(|(pid, _), _| alive.contains(pid));
    }

    pub fn open(&self) -> impl Iterator<Item = &H2Stream> {
        self.open.values()
    }
}

impl H2Stream {
    /// A stream whose response came at `responded_ns` (if any) and of whose 4 MiB buffered
    /// body nothing was read (tests elsewhere build on it).
    #[cfg(test)]
    pub fn for_test(stream_id: u32, opened_ns: u64, responded_ns: Option<u64>) -> Self {
        H2Stream {
            pid: 7,
            stream: 0xc000_1000 + u64::from(stream_id),
            conn: 0xc000_0100,
            fd: Some(9),
            stream_id: Some(stream_id),
            opened_ns,
            responded_ns,
            response: responded_ns.map_or(0, |_| 0xc000_2000),
            buffered_bytes: Some(4 << 20),
            bytes_read: Some(0),
            read_seen: false,
            last_read_ns: None,
            body_closed: false,
            body_done: false,
            last: StreamSample::default(),
        }
    }

    fn update(&mut self, sample: &StreamSample) {
        self.conn = sample.conn;
        self.fd = sample.fd.or(self.fd);
        self.stream_id = (sample.stream_id != 0).then_some(sample.stream_id);
        self.response = sample.response;
        self.buffered_bytes = sample.buffered_bytes;
        self.bytes_read = sample.bytes_read();
        self.body_closed = sample.body_closed;
        self.body_done = sample.body_done;
        self.last = sample.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testkit::SEC;

    fn sample(stream: u64) -> StreamSample {
        StreamSample {
            pid: 7,
            stream,
            conn: 0xc0c0,
            fd: Some(9),
            stream_id: 3,
            response: 0,
            buffered_bytes: Some(0),
            first_chunk_read: 0,
            expected: -1,
            unsent: 0,
            bytes_remain: -1,
            content_length: None,
            body_done: false,
            body_closed: false,
        }
    }

    /// A response of unknown length of which `arrived` bytes came, `buffered` still unread.
    fn body(stream: u64, arrived: u64, buffered: u64) -> StreamSample {
        StreamSample {
            response: 0xd000,
            buffered_bytes: Some(buffered),
            content_length: Some(-1),
            expected: -1 - arrived as i64,
            ..sample(stream)
        }
    }

    fn responded(stream: u64, buffered: u64) -> StreamSample {
        body(stream, buffered, buffered)
    }

    #[test]
    fn a_stream_lives_while_samples_have_it() {
        let mut t = StreamTable::default();
        t.apply_sample(&[sample(1), sample(2)], SEC);
        t.apply_sample(&[responded(1, 4 << 20), sample(2)], 2 * SEC);
        let s = t.open().find(|s| s.stream == 1).expect("stream 1").clone();
        assert_eq!(t.open().count(), 2);
        assert_eq!(
            (s.fd, s.stream_id, s.opened_ns, s.responded_ns),
            (Some(9), Some(3), SEC, Some(2 * SEC))
        );
        assert_eq!(s.buffered_bytes, Some(4 << 20));
        assert!(!s.read_seen);
        assert_eq!(s.last_activity_ns(), 2 * SEC);
        t.apply_sample(&[sample(2)], 3 * SEC);
        assert_eq!(t.open().map(|s| s.stream).collect::<Vec<_>>(), vec![2]);
        assert_eq!(t.ended_total, 1);
        t.retain_pids(&HashSet::from([8]));
        assert_eq!(t.open().count(), 0);
    }

    #[test]
    fn reads_are_told_apart_from_arrivals() {
        let mut t = StreamTable::default();
        t.apply_sample(&[responded(1, 16_384)], SEC);
        // More data arrived: not a read.
        t.apply_sample(&[responded(1, 65_536)], 2 * SEC);
        let s = t.open().next().expect("open").clone();
        assert!(!s.read_seen, "arrivals are not reads");
        assert_eq!(s.bytes_read, Some(0));
        // Read exactly 64 KiB (whole chunks), refilled by the window update: bytes add up.
        t.apply_sample(&[body(1, 131_072, 65_536)], 3 * SEC);
        let s = t.open().next().expect("open").clone();
        assert!(s.read_seen);
        assert_eq!(
            (s.bytes_read, s.last_read_ns),
            (Some(65_536), Some(3 * SEC))
        );
        // Nothing changes: no read.
        t.apply_sample(&[body(1, 131_072, 65_536)], 9 * SEC);
        assert_eq!(t.open().next().and_then(|s| s.last_read_ns), Some(3 * SEC));
    }

    #[test]
    fn without_bytes_that_add_up_the_buffer_and_read_marks_tell() {
        // A gzip body Go decompresses: the response's length changed after the buffer was
        // made, so arrivals cannot be counted.
        let gzip = |buffered: u64, first_chunk_read: u64| StreamSample {
            content_length: Some(-1),
            expected: 5_000,
            bytes_remain: 9_000,
            first_chunk_read,
            ..responded(1, buffered)
        };
        assert_eq!(gzip(100, 0).bytes_read(), None);
        let mut t = StreamTable::default();
        t.apply_sample(&[gzip(16_384, 0)], SEC);
        t.apply_sample(&[gzip(65_536, 0)], 2 * SEC);
        assert!(!t.open().next().expect("open").read_seen);
        t.apply_sample(&[gzip(60_000, 0)], 3 * SEC);
        assert_eq!(t.open().next().and_then(|s| s.last_read_ns), Some(3 * SEC));
        t.apply_sample(&[gzip(65_536, 4096)], 4 * SEC);
        assert_eq!(t.open().next().and_then(|s| s.last_read_ns), Some(4 * SEC));
        t.apply_sample(&[gzip(65_536, 4096)], 9 * SEC);
        assert_eq!(t.open().next().and_then(|s| s.last_read_ns), Some(4 * SEC));
    }

    #[test]
    fn a_stream_first_seen_read_in_part_counts_as_read_from_then() {
        let mut t = StreamTable::default();
        let part = body(1, (4 << 20) + 100, 4 << 20);
        t.apply_sample(&[part], 5 * SEC);
        let s = t.open().next().expect("open").clone();
        assert!(s.read_seen);
        assert_eq!(s.last_read_ns, Some(5 * SEC));
        // Known length: bytes read are measured.
        let mut t = StreamTable::default();
        let known = StreamSample {
            content_length: Some(10_000),
            bytes_remain: 7_000,
            // 7,096 bytes arrived, 4,096 of them wait.
            expected: 10_000 - 7_096,
            ..responded(2, 4096)
        };
        t.apply_sample(&[known], SEC);
        let s = t.open().next().expect("open").clone();
        assert_eq!(s.bytes_read, Some(3_000));
        assert!(s.read_seen);
    }
}
