//! Recordings: `tracer record` writes the stream of model inputs, each with the monotonic time
//! it was received; `tracer replay` feeds them back through the same model and outputs, at the
//! recorded pace or faster, with no root and no eBPF. The model never sees the difference: it
//! judged by the times inside the inputs and the clock it is given, and replay gives it the
//! recorded clock.
//!
//! A recording holds what the model holds: socket addresses, states, counters, times, process
//! ids and names. Never payload bytes: `recordable` decides, per kind of input, what goes in.
//!
//! File format (integers little-endian; version 1, before samples could leave the
//! socket table out, is refused with a message saying so):
//!
//! ```text
//! magic      8 bytes  "TRCRREC\0"
//! version    u16      7 (5 and 6 still read: 6 added the sample's last field, `scanned_ns`,
//!                     7 the call-site inputs read at samples; 4, before call sites, does
//!                     not)
//! frames     each: u32 length, then that many bytes of postcard (serde) encoding
//!   first    Header
//!   then     Frame::Input { at_ns, input }  (at_ns: CLOCK_MONOTONIC when received)
//!   last     Frame::End { at_ns }           (when the recording stopped)
//! ```
//!
//! A file without its End frame was cut off (the recorder was killed, the disk filled) and is
//! refused as truncated, like one that ends inside a frame.

pub mod player;

use std::{
    fmt,
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::model::{Graces, Input};

const MAGIC: [u8; 8] = *b"TRCRREC\0";
pub const VERSION: u16 = 7;
/// The oldest version this tracer still reads. Version 5 replaced HTTP/2 stream events with
/// streams read at each sample (an input kind removed, the sample's streams changed) and
/// added call sites, so version 4 recordings no longer decode: refused with a line saying so.
/// A version that only adds inputs after the others can keep this where it is. Version 6 added
/// a last field to the sample (`Sample::scanned_ns`), which ends its frame: a version 5
/// frame reads with that field absent (`RecordingReader::next_frame`).
pub const OLDEST_READABLE: u16 = 5;
/// The first version whose samples end with `Sample::scanned_ns`.
const SCAN_TIME_SINCE: u16 = 6;
/// No frame is this large (a sample of a million sockets is ~150 MB); a larger length is
/// corruption, not data.
const MAX_FRAME: u32 = 1 << 30;

/// What the recording was of, and the settings it was made with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Version of the tracer that recorded it.
    pub tracer_version: String,
    /// Wall clock at the start, Unix time in nanoseconds (replay stamps its JSON lines from it).
    pub started_unix_ns: i128,
    /// CLOCK_MONOTONIC at the start: the recorded clock's zero.
    pub started_ns: u64,
    /// The targets as given on the command line.
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// The graces given to `tracer record`: replay uses them unless told otherwise.
    pub graces: RecordedGraces,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedGraces {
    pub close_wait_ns: u64,
    pub unread_ns: u64,
    pub abandon_ns: u64,
}

impl From<Graces> for RecordedGraces {
    fn from(g: Graces) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            close_wait_ns: ns(g.close_wait),
            unread_ns: ns(g.unread),
            abandon_ns: ns(g.abandon),
        }
    }
}

impl From<RecordedGraces> for Graces {
    fn from(g: RecordedGraces) -> Self {
        Self {
            close_wait: Duration::from_nanos(g.close_wait_ns),
            unread: Duration::from_nanos(g.unread_ns),
            abandon: Duration::from_nanos(g.abandon_ns),
        }
    }
}

/// One frame after the header. (An End is rare and small; boxing the input would cost an
/// allocation per frame for nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    Input { at_ns: u64, input: Input },
    End { at_ns: u64 },
}

/// Whether an input may be written to a recording. Exhaustive on purpose: a new kind of input
/// must be decided here, and one carrying payload bytes must never be recorded.
fn recordable(input: &Input) -> bool {
    match input {
        Input::Kernel(_) | Input::Sample(_) | Input::Targets(_) => true,
        // Hostnames and provider names only: the first bytes they came from never reach the
        // model (the collector parses and drops them).
        Input::Named { .. } | Input::AddressNames(_) => true,
        Input::Hooks(_) => true,
        // The Go layer's one line about a binary.
        Input::GoLayer(_) => true,
        // Function names, file paths and lines of the relay's code, response addresses and
        // fds: nothing the relay sent or received.
        Input::SiteStack(_)
        | Input::Site(_)
        | Input::SiteSeen(_)
        | Input::SiteRequests(_)
        | Input::SiteResponses(_) => true,
    }
}

/// Why a recording cannot be read. Each says which file and what to do.
#[derive(Debug)]
pub enum RecordingError {
    /// The file does not exist (a usage error: exit 2).
    NotFound(PathBuf),
    Io {
        path: PathBuf,
        error: io::Error,
    },
    NotARecording(PathBuf),
    Version {
        path: PathBuf,
        version: u16,
    },
    Truncated {
        path: PathBuf,
        offset: u64,
    },
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

impl fmt::Display for RecordingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound(path) => write!(f, "no such recording: {} (check the path)", path.display()),
            Self::Io { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::NotARecording(path) => write!(
                f,
                "{} is not a tracer recording (make one with: tracer record --out FILE --pid PID)",
                path.display()
            ),
            Self::Version { path, version } => write!(
                f,
                "{} is a version {version} recording and this tracer reads versions {OLDEST_READABLE} to {VERSION}; replay it with the tracer that recorded it",
                path.display()
            ),
            Self::Truncated { path, offset } => write!(
                f,
                "{} is truncated at byte {offset}: the recording was cut off before it finished (was tracer record killed or the disk full?)",
                path.display()
            ),
            Self::Corrupt { path, offset, what } => write!(
                f,
                "{} is corrupt at byte {offset} ({what}); record it again",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RecordingError {}

/// Writes a recording: the header at once, then frames; `finish` writes the End frame.
pub struct RecordingWriter<W: Write> {
    out: BufWriter<W>,
    frames: u64,
    bytes: u64,
}

impl<W: Write> RecordingWriter<W> {
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut w = Self {
            out: BufWriter::new(out),
            frames: 0,
            bytes: 0,
        };
        w.out.write_all(&MAGIC)?;
        w.out.write_all(&VERSION.to_le_bytes())?;
        w.bytes = (MAGIC.len() + 2) as u64;
        w.write_frame(header)?;
        Ok(w)
    }

    fn write_frame<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(io::Error::other)?;
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME)
            .ok_or_else(|| {
                io::Error::other(format!("a frame of {} bytes is too large", bytes.len()))
            })?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&bytes)?;
        self.bytes += 4 + u64::from(len);
        Ok(())
    }

    /// Appends one input received at `at_ns` (CLOCK_MONOTONIC).
    pub fn write_input(&mut self, at_ns: u64, input: &Input) -> io::Result<()> {
        if !recordable(input) {
            return Ok(());
        }
        #[derive(Serialize)]
        enum FrameRef<'a> {
            Input { at_ns: u64, input: &'a Input },
        }
        // Same encoding as Frame::Input (variant 0), without cloning the input.
        self.write_frame(&FrameRef::Input { at_ns, input })?;
        self.frames += 1;
        Ok(())
    }

    /// Pushes what is buffered to the file, so a killed recorder loses at most the last moment.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the End frame and flushes. Returns (inputs written, file size in bytes).
    pub fn finish(mut self, at_ns: u64) -> io::Result<(u64, u64)> {
        self.write_frame(&Frame::End { at_ns })?;
        self.out.flush()?;
        Ok((self.frames, self.bytes))
    }
}

/// Reads a recording frame by frame.
pub struct RecordingReader<R: Read> {
    path: PathBuf,
    input: R,
    offset: u64,
    header: Header,
    ended: bool,
    /// The recording's format version.
    version: u16,
}

impl RecordingReader<BufReader<File>> {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let file = File::open(path).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => RecordingError::NotFound(path.to_owned()),
            _ => RecordingError::Io {
                path: path.to_owned(),
                error,
            },
        })?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(RecordingError::NotARecording(path.to_owned()));
        }
        Self::new(path, BufReader::with_capacity(1 << 16, file))
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl<R: Read> RecordingReader<R> {
    pub fn new(path: &Path, mut input: R) -> Result<Self, RecordingError> {
        let io_err = |error| RecordingError::Io {
            path: path.to_owned(),
            error,
        };
        let mut start = [0u8; MAGIC.len() + 2];
        let n = read_full(&mut input, &mut start).map_err(io_err)?;
        if n < MAGIC.len() || start[..MAGIC.len()] != MAGIC {
            return Err(RecordingError::NotARecording(path.to_owned()));
        }
        if n < start.len() {
            return Err(RecordingError::Truncated {
                path: path.to_owned(),
                offset: n as u64,
            });
        }
        let version = u16::from_le_bytes([start[MAGIC.len()], start[MAGIC.len() + 1]]);
        if !(OLDEST_READABLE..=VERSION).contains(&version) {
            return Err(RecordingError::Version {
                path: path.to_owned(),
                version,
            });
        }
        let mut reader = Self {
            path: path.to_owned(),
            input,
            offset: start.len() as u64,
            header: Header {
                tracer_version: String::new(),
                started_unix_ns: 0,
                started_ns: 0,
                pids: vec![],
                comms: vec![],
                graces: Graces::default().into(),
            },
            ended: false,
            version,
        };
        let header_at = reader.offset;
        let Some(bytes) = reader.read_frame_bytes()? else {
            return Err(RecordingError::Truncated {
                path: path.to_owned(),
                offset: header_at,
            });
        };
        reader.header = postcard::from_bytes(&bytes).map_err(|e| RecordingError::Corrupt {
            path: path.to_owned(),
            offset: header_at,
            what: format!("unreadable header: {e}"),
        })?;
        Ok(reader)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next frame's bytes; None at a clean end of input (between frames).
    fn read_frame_bytes(&mut self) -> Result<Option<Vec<u8>>, RecordingError> {
        let at = self.offset;
        let mut len = [0u8; 4];
        let n = read_full(&mut self.input, &mut len).map_err(|error| RecordingError::Io {
            path: self.path.clone(),
            error,
        })?;
        if n == 0 {
            return Ok(None);
        }
        if n < len.len() {
            return Err(RecordingError::Truncated {
                path: self.path.clone(),
                offset: at + n as u64,
            });
        }
        let len = u32::from_le_bytes(len);
        if len == 0 || len > MAX_FRAME {
            return Err(RecordingError::Corrupt {
                path: self.path.clone(),
                offset: at,
                what: format!("a frame length of {len} bytes"),
            });
        }
        // Grows as data arrives, so a corrupt length cannot allocate a gigabyte up front.
        let mut bytes = Vec::new();
        let got = (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut bytes)
            .map_err(|error| RecordingError::Io {
                path: self.path.clone(),
                error,
            })?;
        self.offset = at + 4 + got as u64;
        if got < len as usize {
            return Err(RecordingError::Truncated {
                path: self.path.clone(),
                offset: self.offset,
            });
        }
        Ok(Some(bytes))
    }

    /// The next frame, or None after the End frame. A file that stops before its End frame is
    /// an error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RecordingError> {
        if self.ended {
            return Ok(None);
        }
        let at = self.offset;
        let Some(mut bytes) = self.read_frame_bytes()? else {
            return Err(RecordingError::Truncated {
                path: self.path.clone(),
                offset: at,
            });
        };
        if self.version < SCAN_TIME_SINCE {
            // A version 5 sample ends before its last field, `scanned_ns`: the byte of an
            // absent Option completes it. Any other frame ends before this byte, and a
            // frame's trailing bytes are not read.
            bytes.push(0);
        }
        let frame: Frame = postcard::from_bytes(&bytes).map_err(|e| RecordingError::Corrupt {
            path: self.path.clone(),
            offset: at,
            what: format!("unreadable frame: {e}"),
        })?;
        if let Frame::End { .. } = frame {
            self.ended = true;
            let mut rest = [0u8; 1];
            let trailing =
                read_full(&mut self.input, &mut rest).map_err(|error| RecordingError::Io {
                    path: self.path.clone(),
                    error,
                })?;
            if trailing > 0 {
                return Err(RecordingError::Corrupt {
                    path: self.path.clone(),
                    offset: self.offset,
                    what: "data after the end of the recording".into(),
                });
            }
        }
        Ok(Some(frame))
    }
}

/// What a whole recording holds, found by reading it through.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub header: Header,
    pub inputs: u64,
    pub end_ns: u64,
}

/// Reads the whole file once, so a bad file is reported before anything is shown.
pub fn check(path: &Path) -> Result<Summary, RecordingError> {
    let mut reader = RecordingReader::open(path)?;
    let mut inputs = 0;
    let mut end_ns = reader.header().started_ns;
    while let Some(frame) = reader.next_frame()? {
        match frame {
            Frame::Input { .. } => inputs += 1,
            Frame::End { at_ns } => end_ns = at_ns,
        }
    }
    Ok(Summary {
        header: reader.header().clone(),
        inputs,
        end_ns,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::model::testkit::*;

    fn header() -> Header {
        Header {
            tracer_version: "0.1.0".into(),
            started_unix_ns: 1_790_000_000_000_000_000,
            started_ns: 5 * SEC,
            pids: vec![PID],
            comms: vec!["relay".into()],
            graces: Graces {
                close_wait: Duration::from_secs(2),
                unread: Duration::from_secs(3),
                abandon: Duration::from_millis(4500),
            }
            .into(),
        }
    }

    /// Every kind of input, with IPv4 and IPv6 addresses and optional fields set and unset.
    fn inputs() -> Vec<(u64, Input)> {
        let up = established(kconn(40001, "10.0.0.12:443", 6 * SEC), 6 * SEC);
        let v6 = crate::model::KernelConn {
            local: addr("[::1]:40002"),
            remote: addr("[::1]:18080"),
            fd: Some(9),
            recv_q: recv_q(1, 7 * SEC),
            peer_fin_ns: Some(7 * SEC),
            last_read_ret: -11,
            ..up.clone()
        };
        vec![
            (5 * SEC, targets(&[PID, 8])),
            (6 * SEC, connect(1, kconn(0, "10.0.0.12:443", 6 * SEC))),
            (
                6 * SEC + 1,
                state(1, crate::model::tcp_state::SYN_SENT, up.clone()),
            ),
            (
                7 * SEC,
                close(2, crate::model::tcp_state::CLOSE_WAIT, PID, v6.clone()),
            ),
            (
                8 * SEC,
                Input::Sample(crate::model::Sample {
                    // An HTTP/2 stream as read from the relay: addresses and counts only.
                    streams: vec![crate::model::testkit::stream_sample(
                        0xc000_1234,
                        7,
                        Some(9),
                        true,
                        (4 << 20, 512),
                    )],
                    now_ns: 8 * SEC,
                    kernel: vec![(1, up), (2, v6)],
                    sockets: Some(vec![socket(PID, 12, local(40001), "10.0.0.12:443", 1, 300)]),
                    stats: crate::model::KernelStats {
                        events_sent: 10,
                        events_lost: 1,
                        conn_map_full: 0,
                        reads_seen: 99,
                    },
                    // The socket scan began half a second before the sample.
                    scanned_ns: Some(8 * SEC - SEC / 2),
                }),
            ),
        ]
    }

    fn write_all(inputs: &[(u64, Input)], end_ns: u64) -> Vec<u8> {
        let mut w = RecordingWriter::new(Vec::new(), &header()).expect("header");
        for (at, input) in inputs {
            w.write_input(*at, input).expect("input");
        }
        let (count, size) = {
            w.out.flush().expect("flush");
            (w.frames, w.bytes)
        };
        assert_eq!(count, inputs.len() as u64);
        let (frames, total) = {
            w.write_frame(&Frame::End { at_ns: end_ns }).expect("end");
            w.out.flush().expect("flush");
            (w.frames, w.bytes)
        };
        assert_eq!(frames, count);
        assert!(total > size);
        let bytes = w.out.get_ref().clone();
        assert_eq!(bytes.len() as u64, total, "the byte count is the file size");
        bytes
    }

    fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Frame>), RecordingError> {
        let mut r = RecordingReader::new(Path::new("test.rec"), Cursor::new(bytes))?;
        let mut frames = Vec::new();
        while let Some(frame) = r.next_frame()? {
            frames.push(frame);
        }
        Ok((r.header().clone(), frames))
    }

    #[test]
    fn inputs_read_back_equal_with_their_times_and_the_header() {
        let inputs = inputs();
        let bytes = write_all(&inputs, 9 * SEC);
        assert!(bytes.starts_with(b"TRCRREC\0\x07\x00"));
        let (h, frames) = read_all(&bytes).expect("reads");
        assert_eq!(h, header());
        let mut expected: Vec<Frame> = inputs
            .into_iter()
            .map(|(at_ns, input)| Frame::Input { at_ns, input })
            .collect();
        expected.push(Frame::End { at_ns: 9 * SEC });
        assert_eq!(frames, expected);
        assert_eq!(
            Graces::from(h.graces),
            Graces {
                close_wait: Duration::from_secs(2),
                unread: Duration::from_secs(3),
                abandon: Duration::from_millis(4500)
            }
        );
    }

    #[test]
    fn finish_reports_what_it_wrote() {
        let mut w = RecordingWriter::new(Vec::new(), &header()).expect("header");
        for (at, input) in inputs() {
            w.write_input(at, &input).expect("input");
        }
        let (frames, bytes) = w.finish(9 * SEC).expect("finish");
        assert_eq!(frames, 5);
        assert_eq!(bytes, write_all(&inputs(), 9 * SEC).len() as u64);
    }

    #[test]
    fn a_file_cut_anywhere_is_truncated_and_says_where() {
        let bytes = write_all(&inputs(), 9 * SEC);
        // Cut inside the version, the header, a length, a frame, and before the End frame.
        for cut in (9..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            match read_all(&bytes[..cut]) {
                Err(RecordingError::Truncated { offset, .. }) => {
                    assert!(offset <= cut as u64, "cut at {cut}, reported {offset}");
                }
                other => panic!("cut at {cut} of {}: {other:?}", bytes.len()),
            }
        }
        let message = read_all(&bytes[..bytes.len() - 3])
            .expect_err("truncated")
            .to_string();
        assert!(
            message.starts_with("test.rec is truncated at byte"),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }

    #[test]
    fn call_sites_are_recorded_and_version_4_recordings_are_refused() {
        use crate::model::site::{
            SiteEvent, SiteFrame, SiteKey, SiteRequests, SiteResponse, SiteStack,
        };
        let mut inputs = inputs();
        inputs.push((
            7 * SEC,
            Input::SiteStack(SiteStack {
                id: 3,
                frames: vec![SiteFrame {
                    function: "main.relay".into(),
                    file: "relay/image.go".into(),
                    line: 829,
                    library: false,
                }],
            }),
        ));
        inputs.push((
            7 * SEC,
            Input::Site(SiteEvent {
                pid: 9,
                key: SiteKey::H2Response { response: 0xc000 },
                stack: 3,
                at_ns: 7 * SEC,
            }),
        ));
        inputs.push((
            8 * SEC,
            Input::SiteRequests(SiteRequests {
                pid: 9,
                stack: 3,
                requests: 41,
            }),
        ));
        inputs.push((
            8 * SEC,
            Input::SiteResponses(vec![SiteResponse {
                pid: 9,
                response: 0xc000_0200,
                stack: 3,
                at_ns: 8 * SEC,
            }]),
        ));
        inputs.push((
            8 * SEC,
            Input::SiteSeen(SiteEvent {
                pid: 9,
                key: SiteKey::Connection { fd: 12 },
                stack: 3,
                at_ns: 8 * SEC,
            }),
        ));
        let bytes = write_all(&inputs, 9 * SEC);
        let (_, frames) = read_all(&bytes).expect("reads");
        let read: Vec<Input> = frames
            .into_iter()
            .filter_map(|f| match f {
                Frame::Input { input, .. } => Some(input),
                Frame::End { .. } => None,
            })
            .collect();
        assert_eq!(read, inputs.into_iter().map(|(_, i)| i).collect::<Vec<_>>());
        // Version 4 had HTTP/2 stream events and other samples: refused, not misread.
        let mut v4 = write_all(&self::inputs(), 9 * SEC);
        v4[8] = 4;
        assert!(matches!(
            read_all(&v4),
            Err(RecordingError::Version { version: 4, .. })
        ));
    }

    /// A version 5 recording: `inputs` written as version 5 did, each sample's frame ending
    /// before its last field (`scanned_ns`, which must be absent: one zero byte).
    fn write_version_5(inputs: &[(u64, Input)]) -> Vec<u8> {
        let v6 = write_all(inputs, 9 * SEC);
        let mut v5 = v6[..10].to_vec();
        v5[8] = 5;
        let mut at = 10;
        let mut first = true;
        while at < v6.len() {
            let len = u32::from_le_bytes([v6[at], v6[at + 1], v6[at + 2], v6[at + 3]]) as usize;
            let mut frame = v6[at + 4..at + 4 + len].to_vec();
            if !first {
                if let Ok(Frame::Input {
                    input: Input::Sample(sample),
                    ..
                }) = postcard::from_bytes::<Frame>(&frame)
                {
                    assert_eq!(sample.scanned_ns, None, "version 5 had no scan time");
                    assert_eq!(frame.pop(), Some(0));
                }
            }
            first = false;
            v5.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            v5.extend_from_slice(&frame);
            at += 4 + len;
        }
        v5
    }

    #[test]
    fn version_5_recordings_still_read_their_samples_without_a_scan_time() {
        let inputs: Vec<(u64, Input)> = inputs()
            .into_iter()
            .map(|(at, input)| match input {
                Input::Sample(sample) => (
                    at,
                    Input::Sample(crate::model::Sample {
                        scanned_ns: None,
                        ..sample
                    }),
                ),
                other => (at, other),
            })
            .collect();
        let v5 = write_version_5(&inputs);
        assert_ne!(
            v5,
            write_all(&inputs, 9 * SEC),
            "a sample frame is a byte shorter"
        );
        let (_, frames) = read_all(&v5).expect("version 5 reads");
        let read: Vec<(u64, Input)> = frames
            .into_iter()
            .filter_map(|f| match f {
                Frame::Input { at_ns, input } => Some((at_ns, input)),
                Frame::End { .. } => None,
            })
            .collect();
        assert_eq!(read, inputs);
    }

    #[test]
    fn foreign_newer_and_damaged_files_are_refused_clearly() {
        let bytes = write_all(&inputs(), 9 * SEC);
        assert!(matches!(
            read_all(b"{\"type\":\"snapshot\"}"),
            Err(RecordingError::NotARecording(_))
        ));
        assert!(matches!(
            read_all(b""),
            Err(RecordingError::NotARecording(_))
        ));
        for version in [4u8, 8] {
            let mut other = bytes.clone();
            other[8] = version;
            let err = read_all(&other).expect_err("version");
            assert!(
                matches!(err, RecordingError::Version { version: v, .. } if v == u16::from(version)),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("version {version} recording")),
                "{err}"
            );
        }

        // A huge length: corrupt, and no gigabyte is allocated.
        let mut huge = bytes.clone();
        let first_frame =
            10 + 4 + u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
        huge[first_frame..first_frame + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_all(&huge),
            Err(RecordingError::Corrupt { .. })
        ));
        // A flipped variant tag inside a frame.
        let mut flipped = bytes.clone();
        flipped[first_frame + 4] = 0x7f;
        let err = read_all(&flipped).expect_err("corrupt");
        assert!(
            matches!(err, RecordingError::Corrupt { offset, .. } if offset == first_frame as u64),
            "{err:?}"
        );
        // Garbage after the end.
        let mut trailing = bytes;
        trailing.push(0);
        assert!(matches!(
            read_all(&trailing),
            Err(RecordingError::Corrupt { .. })
        ));
    }

    #[test]
    fn check_reads_a_file_through_and_missing_files_are_named() {
        let dir = std::env::temp_dir().join(format!("tracer-record-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("ok.rec");
        std::fs::write(&path, write_all(&inputs(), 9 * SEC)).expect("write");
        let summary = check(&path).expect("a good file");
        assert_eq!(
            (summary.inputs, summary.end_ns, summary.header),
            (5, 9 * SEC, header())
        );

        let missing = dir.join("nope.rec");
        let err = check(&missing).expect_err("missing");
        assert!(matches!(err, RecordingError::NotFound(_)));
        assert!(err.to_string().contains("nope.rec"), "{err}");
        assert!(matches!(check(&dir), Err(RecordingError::NotARecording(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_sample_costs_tens_of_bytes_per_socket() {
        // Compactness matters: a recorder on a busy relay samples every second.
        let conn = established(kconn(40001, "10.0.0.12:443", 6 * SEC), 6 * SEC);
        let sample = Input::Sample(crate::model::Sample {
            streams: Vec::new(),
            now_ns: 8 * SEC,
            kernel: (0..100).map(|i| (i, conn.clone())).collect(),
            sockets: None,
            stats: Default::default(),
            scanned_ns: None,
        });
        let size = postcard::to_stdvec(&sample).expect("encodes").len();
        assert!(size < 100 * 80, "{size} bytes for 100 sockets");
    }
}
