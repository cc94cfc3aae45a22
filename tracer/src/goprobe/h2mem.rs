//! Reads an HTTP/2 client connection's open streams out of the relay's memory (issue 12).
//!
//! A uprobe costs microseconds per hit (about 23 µs on the development VM), so the Go layer
//! does not follow streams with per-request or per-read probes. One probe per *connection*
//! (`ClientConn.readLoop`'s entry) hands over the `*ClientConn`; at every sample the collector
//! reads that connection's `streams` map (`map[uint32]*clientStream`: the streams whose request
//! goroutine has not finished, exactly the ones a leak keeps) and each stream's response state.
//! The relay pays nothing per request for it; the tracer pays a few reads per stream per
//! sample.
//!
//! Everything read here is racy by nature (the relay runs on): every pointer is checked before
//! it is followed (a stream must point back to its connection and carry its map key as its ID),
//! every count is bounded, and a read that fails or does not check out drops that stream for
//! this sample only. Nothing here can affect the relay: it is only ever read.
//!
//! Layouts (Go source of each release; offsets from DWARF or offsets.toml):
//! - `clientStream`: `cc`, `ID`, `bufPipe` (`pipe{b pipeBuffer; err, breakErr error}`), `res`,
//!   `inflow.unsent`, `bytesRemain`; `dataBuffer{r, size, expected}` behind `bufPipe.b`.
//! - Go 1.21-1.23 maps (runtime/map.go): `hmap{count, flags, B, buckets, oldbuckets}`; a
//!   bucket of `map[uint32]*T` is `tophash [8]uint8; keys [8]uint32; elems [8]*T; overflow`.
//! - Go 1.24+ Swiss tables (internal/runtime/maps): `Map{used, dirPtr, dirLen}`; `dirLen` 0
//!   means `dirPtr` is the one group of a small map, else a directory of `*table`, each with
//!   `groups{data, lengthMask}`. A group is `ctrl uint64; slots [8]struct{key uint32; elem *T}`.

use std::collections::HashSet;

use super::offsets::{Field, Offsets};
use super::pclntab::{u32_at, u64_at};

/// Reads another process's memory (the collector's `/proc/PID/mem`; a byte array in tests).
pub trait Memory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    #[error("cannot read {len} bytes at {addr:#x}: {why}")]
    Unreadable { addr: u64, len: usize, why: String },
    #[error("{0}")]
    Implausible(String),
}

/// Bounds on what a map walk follows: far above any real connection (servers allow 100-250
/// concurrent streams), low enough that garbage cannot make a sample slow.
const MAX_STREAMS: u64 = 65_536;
const MAX_BUCKETS_LOG2: u8 = 16;
const MAX_OVERFLOW: usize = 64;
const MAX_DIRECTORY: u64 = 1 << 12;
const MAX_GROUPS: u64 = 1 << 16;

/// Map slots per hmap bucket and per Swiss group.
const SLOTS: usize = 8;
/// `hmap` bucket of `map[uint32]*T`: tophash, keys, elems, overflow pointer.
const BUCKET_KEYS: usize = 8;
const BUCKET_ELEMS: usize = BUCKET_KEYS + SLOTS * 4;
const BUCKET_OVERFLOW: usize = BUCKET_ELEMS + SLOTS * 8;
const BUCKET_SIZE: usize = BUCKET_OVERFLOW + 8;
/// tophash values from here up mark a live entry (below: empty or evacuated).
const MIN_TOP_HASH: u8 = 5;
/// hmap.flags: growing to the same size (the old array has as many buckets as the new).
const SAME_SIZE_GROW: u8 = 8;
/// Swiss group of `map[uint32]*T`: control word, then slots of key (padded) and elem.
const GROUP_SLOTS: usize = 8;
const SLOT_SIZE: usize = 16;
const SLOT_ELEM: usize = 8;
const GROUP_SIZE: usize = GROUP_SLOTS + SLOTS * SLOT_SIZE;

#[derive(Debug, Clone, Copy)]
enum MapLayout {
    Hmap {
        count: u64,
        flags: u64,
        b: u64,
        buckets: u64,
        oldbuckets: u64,
    },
    Swiss {
        used: u64,
        dir_ptr: u64,
        dir_len: u64,
        groups_data: u64,
        groups_mask: u64,
    },
}

/// Where each field the reader needs lives, for one binary.
#[derive(Debug, Clone)]
pub struct StreamReader {
    conn_streams: u64,
    conn_closed: u64,
    stream_conn: u64,
    stream_id: u64,
    stream_res: u64,
    stream_pipe_b: u64,
    stream_pipe_err: u64,
    stream_pipe_break: u64,
    stream_unsent: u64,
    stream_bytes_remain: u64,
    /// Bytes of a clientStream read in one go: up to the last field read, plus its size.
    stream_span: usize,
    data_r: u64,
    data_size: u64,
    data_expected: u64,
    response_content_length: u64,
    map: MapLayout,
    /// Following a connection to its socket, and finding a goroutine parked on one.
    conn_tconn: u64,
    tls_conn: u64,
    tcp_conn_fd: u64,
    netfd_sysfd: u64,
    poll_fd: u64,
    poll_rg: u64,
    g_sched_sp: u64,
    g_stack_hi: u64,
}

/// `abi.Type.Hash` (copied into every itab) of `*crypto/tls.Conn` and `*net.TCPConn` in one
/// Go release: an interface's dynamic type is checked before its data is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTypeHashes {
    pub tls_conn: u32,
    pub tcp_conn: u32,
}

/// Offset of `hash` in an itab (inter, _type, hash), Go 1.21 to 1.27.
const ITAB_HASH: u64 = 16;
/// The most of a parked goroutine's stack read when looking for its connection.
const MAX_STACK_SCAN: u64 = 64 << 10;

/// What one sample makes of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnState {
    /// `ClientConn.closed`: the connection is done and its streams with it.
    pub closed: bool,
    pub streams: Vec<StreamState>,
    /// Map slots whose stream did not check out (read mid-update, or freed): skipped.
    pub skipped: usize,
}

/// One open stream as read from memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The `*clientStream`.
    pub stream: u64,
    pub id: u32,
    /// The response (`*http.Response`, 1.27's `*ClientResponse`): 0 until the headers came.
    pub response: u64,
    /// Body bytes buffered for the application (`None` once the pipe dropped its buffer).
    pub buffered: Option<u64>,
    /// How far the application read into the first buffered chunk (`dataBuffer.r`).
    pub first_chunk_read: u64,
    /// The response's ContentLength (-1 unknown) minus the body bytes that arrived
    /// (`dataBuffer.expected`).
    pub expected: i64,
    /// Read bytes whose flow-control window update is still held back (`inflow.unsent`).
    pub unsent: i64,
    /// Content-Length minus what the application read, or -1 (`bytesRemain`).
    pub bytes_remain: i64,
    /// The response's Content-Length (-1 unknown; `None` before the headers).
    pub content_length: Option<i64>,
    /// The pipe has an error: the peer ended the body (io.EOF) or the stream failed.
    pub body_done: bool,
    /// The pipe has a break error: the application closed the body.
    pub body_closed: bool,
}

fn need(offsets: &Offsets, field: Field) -> Result<u64, String> {
    offsets
        .get(field)
        .ok_or_else(|| format!("no offset for {}", field.key()))
}

impl StreamReader {
    /// The reader for a binary of Go 1.`minor` with these offsets. `swiss` is false for a
    /// 1.24/1.25 build with GOEXPERIMENT=noswissmap (the old maps), which has no table row:
    /// refused.
    pub fn new(offsets: &Offsets, minor: u32, swiss_disabled: bool) -> Result<Self, String> {
        if swiss_disabled && minor >= 24 {
            return Err("built with GOEXPERIMENT=noswissmap, whose map layout the stream reader does not know".to_owned());
        }
        let o = |f| need(offsets, f);
        let map = if minor <= 23 {
            MapLayout::Hmap {
                count: o(Field::HmapCount)?,
                flags: o(Field::HmapFlags)?,
                b: o(Field::HmapB)?,
                buckets: o(Field::HmapBuckets)?,
                oldbuckets: o(Field::HmapOldbuckets)?,
            }
        } else {
            MapLayout::Swiss {
                used: o(Field::SwissMapUsed)?,
                dir_ptr: o(Field::SwissMapDirPtr)?,
                dir_len: o(Field::SwissMapDirLen)?,
                groups_data: o(Field::SwissTableGroupsData)?,
                groups_mask: o(Field::SwissTableGroupsLengthMask)?,
            }
        };
        let stream_fields = [
            (Field::H2StreamConn, 8),
            (Field::H2StreamId, 4),
            (Field::H2StreamRes, 8),
            (Field::H2StreamPipeBuffer, 16),
            (Field::H2StreamPipeErr, 16),
            (Field::H2StreamPipeBreakErr, 16),
            (Field::H2StreamInflowUnsent, 4),
            (Field::H2StreamBytesRemain, 8),
        ];
        let mut span = 0u64;
        for (field, size) in stream_fields {
            span = span.max(o(field)? + size);
        }
        Ok(Self {
            conn_streams: o(Field::H2ConnStreams)?,
            conn_closed: o(Field::H2ConnClosed)?,
            stream_conn: o(Field::H2StreamConn)?,
            stream_id: o(Field::H2StreamId)?,
            stream_res: o(Field::H2StreamRes)?,
            stream_pipe_b: o(Field::H2StreamPipeBuffer)?,
            stream_pipe_err: o(Field::H2StreamPipeErr)?,
            stream_pipe_break: o(Field::H2StreamPipeBreakErr)?,
            stream_unsent: o(Field::H2StreamInflowUnsent)?,
            stream_bytes_remain: o(Field::H2StreamBytesRemain)?,
            stream_span: usize::try_from(span).map_err(|_| "clientStream too large")?,
            data_r: o(Field::H2DataBufferR)?,
            data_size: o(Field::H2DataBufferSize)?,
            data_expected: o(Field::H2DataBufferExpected)?,
            response_content_length: o(Field::H2ResponseContentLength)?,
            map,
            conn_tconn: o(Field::H2ConnTconn)?,
            tls_conn: o(Field::TlsConnConn)?,
            tcp_conn_fd: o(Field::TcpConnFd)?,
            netfd_sysfd: o(Field::NetFdSysfd)?,
            poll_fd: o(Field::PollDescFd)?,
            poll_rg: o(Field::PollDescRg)?,
            g_sched_sp: o(Field::GSchedSp)?,
            g_stack_hi: o(Field::GStackHi)?,
        })
    }

    /// The connection at `conn` (a `*ClientConn`) and its open streams.
    pub fn read_conn(&self, mem: &dyn Memory, conn: u64) -> Result<ConnState, MemError> {
        let closed = read_u8(mem, conn + self.conn_closed)? != 0;
        let map = read_u64(mem, conn + self.conn_streams)?;
        let mut state = ConnState {
            closed,
            ..ConnState::default()
        };
        if map == 0 {
            return Ok(state);
        }
        let entries = self.map_entries(mem, map)?;
        for (key, stream) in entries {
            match self.read_stream(mem, conn, key, stream) {
                Ok(s) => state.streams.push(s),
                Err(_) => state.skipped += 1,
            }
        }
        state.streams.sort_by_key(|s| s.id);
        Ok(state)
    }

    fn read_stream(
        &self,
        mem: &dyn Memory,
        conn: u64,
        key: u32,
        stream: u64,
    ) -> Result<StreamState, MemError> {
        let mut raw = vec![0u8; self.stream_span];
        mem.read(stream, &mut raw)?;
        let at = |off: u64| usize::try_from(off).unwrap_or(usize::MAX);
        let u64_at = |off: u64| field_u64(&raw, at(off));
        let owner = u64_at(self.stream_conn)?;
        let id = field_u32(&raw, at(self.stream_id))?;
        if owner != conn || id != key {
            return Err(MemError::Implausible(format!(
                "stream {stream:#x}: conn {owner:#x} id {id}, expected {conn:#x} id {key}"
            )));
        }
        let response = u64_at(self.stream_res)?;
        // Interfaces: (itab, data). A set error has a non-nil itab.
        let body_done = u64_at(self.stream_pipe_err)? != 0;
        let body_closed = u64_at(self.stream_pipe_break)? != 0;
        let buffer = u64_at(self.stream_pipe_b + 8)?;
        let unsent = i64::from(field_u32(&raw, at(self.stream_unsent))? as i32);
        let bytes_remain = u64_at(self.stream_bytes_remain)? as i64;
        let (buffered, first_chunk_read, expected) = if buffer == 0 {
            (None, 0, 0)
        } else {
            let size = read_u64(mem, buffer + self.data_size)? as i64;
            let r = read_u64(mem, buffer + self.data_r)? as i64;
            if !(0..=1 << 40).contains(&size) || !(0..=1 << 40).contains(&r) {
                return Err(MemError::Implausible(format!(
                    "stream {stream:#x}: buffer size {size}, r {r}"
                )));
            }
            let expected = read_u64(mem, buffer + self.data_expected)? as i64;
            (Some(size as u64), r as u64, expected)
        };
        let content_length = if response == 0 {
            None
        } else {
            Some(read_u64(mem, response + self.response_content_length)? as i64)
        };
        Ok(StreamState {
            stream,
            id,
            response,
            buffered,
            first_chunk_read,
            expected,
            unsent,
            bytes_remain,
            content_length,
            body_done,
            body_closed,
        })
    }

    /// The socket fd under the connection at `conn`: ClientConn.tconn (a `*tls.Conn`, or a
    /// `*net.TCPConn` for cleartext h2) -> tls.Conn.conn -> TCPConn's conn.fd -> pfd.Sysfd,
    /// every interface's dynamic type checked first. `None` when anything does not check out.
    pub fn conn_fd(&self, mem: &dyn Memory, conn: u64, hashes: ConnTypeHashes) -> Option<i32> {
        let iface = |at: u64, hash: u32| -> Option<u64> {
            let itab = read_u64(mem, at).ok()?;
            if itab == 0 {
                return None;
            }
            let mut seen = [0u8; 4];
            mem.read(itab + ITAB_HASH, &mut seen).ok()?;
            (u32::from_le_bytes(seen) == hash)
                .then(|| read_u64(mem, at + 8).ok())
                .flatten()
        };
        let tconn = conn.checked_add(self.conn_tconn)?;
        let tcp = match iface(tconn, hashes.tls_conn) {
            Some(tls) => iface(tls.checked_add(self.tls_conn)?, hashes.tcp_conn)?,
            None => iface(tconn, hashes.tcp_conn)?,
        };
        let netfd = read_u64(mem, tcp.checked_add(self.tcp_conn_fd)?).ok()?;
        let sysfd = read_u64(mem, netfd.checked_add(self.netfd_sysfd)?).ok()? as i64;
        i32::try_from(sysfd).ok().filter(|fd| *fd >= 0)
    }

    /// The HTTP/2 connection whose read loop is parked reading socket `fd`, found from the
    /// netpoller: `poll_desc` is the runtime's pollDesc for `fd` (epoll's event data), whose
    /// `rg` is the parked goroutine; its stack holds the `*ClientConn` (the read loop's
    /// receiver, or the `clientConnReadLoop` that points to it). Every word of the stack is a
    /// candidate, and only one whose socket chain leads back to `fd` is taken. This finds the
    /// connections a relay opened before the tracer started (the read-loop probe sees only
    /// later ones). `None`: not an HTTP/2 connection (an HTTP/1.1 connection's reader, or no
    /// goroutine parked on it right now).
    pub fn conn_parked_on(
        &self,
        mem: &dyn Memory,
        poll_desc: u64,
        fd: i32,
        hashes: ConnTypeHashes,
    ) -> Option<u64> {
        if read_u64(mem, poll_desc.checked_add(self.poll_fd)?).ok()? != u64::try_from(fd).ok()? {
            return None;
        }
        let g = read_u64(mem, poll_desc.checked_add(self.poll_rg)?).ok()?;
        if g <= 2 {
            // pdNil, pdReady, pdWait: nobody parked.
            return None;
        }
        let sp = read_u64(mem, g.checked_add(self.g_sched_sp)?).ok()?;
        let hi = read_u64(mem, g.checked_add(self.g_stack_hi)?).ok()?;
        if sp == 0 || hi <= sp || sp % 8 != 0 {
            return None;
        }
        let len = usize::try_from((hi - sp).min(MAX_STACK_SCAN)).ok()?;
        let mut stack = vec![0u8; len];
        mem.read(sp, &mut stack).ok()?;
        let words: Vec<u64> = stack
            .chunks_exact(8)
            .filter_map(|w| u64_at(w, 0))
            .filter(|w| *w >= 0x1000 && w % 8 == 0)
            .collect();
        let is_conn = |cand: u64| self.conn_fd(mem, cand, hashes) == Some(fd);
        if let Some(conn) = words.iter().copied().find(|w| is_conn(*w)) {
            return Some(conn);
        }
        // One hop: a stack word pointing at a struct whose first field is the connection.
        words
            .iter()
            .filter_map(|w| read_u64(mem, *w).ok())
            .find(|cand| *cand >= 0x1000 && cand % 8 == 0 && is_conn(*cand))
    }

    /// (key, value) of every live entry of a `map[uint32]*T` at `map` (the map header).
    fn map_entries(&self, mem: &dyn Memory, map: u64) -> Result<Vec<(u32, u64)>, MemError> {
        let mut out = Vec::new();
        match self.map {
            MapLayout::Hmap {
                count,
                flags,
                b,
                buckets,
                oldbuckets,
            } => {
                let count = read_u64(mem, map + count)?;
                if count > MAX_STREAMS {
                    return Err(MemError::Implausible(format!("map of {count} entries")));
                }
                if count == 0 {
                    return Ok(out);
                }
                let flags = read_u8(mem, map + flags)?;
                let b = read_u8(mem, map + b)?;
                if b > MAX_BUCKETS_LOG2 {
                    return Err(MemError::Implausible(format!("map with 2^{b} buckets")));
                }
                let buckets = read_u64(mem, map + buckets)?;
                let old = read_u64(mem, map + oldbuckets)?;
                read_buckets(mem, buckets, 1u64 << b, &mut out)?;
                if old != 0 {
                    // Growing: entries not yet moved are only in the old array (moved ones
                    // are marked there, so nothing counts twice).
                    let old_b = if flags & SAME_SIZE_GROW != 0 || b == 0 {
                        b
                    } else {
                        b - 1
                    };
                    read_buckets(mem, old, 1u64 << old_b, &mut out)?;
                }
            }
            MapLayout::Swiss {
                used,
                dir_ptr,
                dir_len,
                groups_data,
                groups_mask,
            } => {
                let used = read_u64(mem, map + used)?;
                if used > MAX_STREAMS {
                    return Err(MemError::Implausible(format!("map of {used} entries")));
                }
                if used == 0 {
                    return Ok(out);
                }
                let dir = read_u64(mem, map + dir_ptr)?;
                let dir_len = read_u64(mem, map + dir_len)?;
                if dir == 0 {
                    return Ok(out);
                }
                if dir_len == 0 {
                    // A small map: one group, no table.
                    read_groups(mem, dir, 1, &mut out)?;
                } else {
                    if dir_len > MAX_DIRECTORY {
                        return Err(MemError::Implausible(format!("map directory of {dir_len}")));
                    }
                    let mut raw = vec![0u8; usize::try_from(dir_len * 8).unwrap_or(0)];
                    mem.read(dir, &mut raw)?;
                    let mut seen = HashSet::new();
                    for chunk in raw.chunks_exact(8) {
                        let table = u64_at(chunk, 0).unwrap_or(0);
                        // Several directory slots share a table until it splits.
                        if table == 0 || !seen.insert(table) {
                            continue;
                        }
                        let data = read_u64(mem, table + groups_data)?;
                        let mask = read_u64(mem, table + groups_mask)?;
                        if mask >= MAX_GROUPS {
                            return Err(MemError::Implausible(format!(
                                "map table of {} groups",
                                mask.saturating_add(1)
                            )));
                        }
                        read_groups(mem, data, mask + 1, &mut out)?;
                    }
                }
            }
        }
        if out.len() as u64 > MAX_STREAMS {
            return Err(MemError::Implausible(format!(
                "map walk found {} entries",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// The runtime's pollDesc behind an epoll registration's data word in Go 1.`minor`: a tagged
/// pointer (runtime/tagptr_64bit.go, linux/amd64). Up to 1.24: 48 address bits and 8-byte
/// alignment, so the tag is the low 19 bits; from 1.25: 49 address bits and 512-byte
/// alignment (tagptr.go's tagAlignBits 9), the tag the low 24 bits.
pub fn poll_desc_of_epoll_data(data: u64, minor: u32) -> u64 {
    let (tag_bits, align_bits) = if minor >= 25 { (24, 9) } else { (19, 3) };
    (((data as i64) >> tag_bits) << align_bits) as u64
}

fn read_buckets(
    mem: &dyn Memory,
    array: u64,
    n: u64,
    out: &mut Vec<(u32, u64)>,
) -> Result<(), MemError> {
    if array == 0 {
        return Ok(());
    }
    let mut raw = vec![0u8; usize::try_from(n).unwrap_or(0) * BUCKET_SIZE];
    mem.read(array, &mut raw)?;
    for bucket in raw.chunks_exact(BUCKET_SIZE) {
        let mut bucket = bucket.to_vec();
        for _ in 0..MAX_OVERFLOW {
            bucket_entries(&bucket, out);
            let overflow = u64_at(&bucket, BUCKET_OVERFLOW).unwrap_or(0);
            if overflow == 0 {
                break;
            }
            mem.read(overflow, &mut bucket)?;
        }
    }
    Ok(())
}

fn bucket_entries(bucket: &[u8], out: &mut Vec<(u32, u64)>) {
    for i in 0..SLOTS {
        if bucket[i] < MIN_TOP_HASH {
            continue;
        }
        let key = u32_at(bucket, BUCKET_KEYS + 4 * i).unwrap_or(0);
        let elem = u64_at(bucket, BUCKET_ELEMS + 8 * i).unwrap_or(0);
        if elem != 0 {
            out.push((key, elem));
        }
    }
}

fn read_groups(
    mem: &dyn Memory,
    data: u64,
    n: u64,
    out: &mut Vec<(u32, u64)>,
) -> Result<(), MemError> {
    if data == 0 {
        return Ok(());
    }
    let mut raw = vec![0u8; usize::try_from(n).unwrap_or(0) * GROUP_SIZE];
    mem.read(data, &mut raw)?;
    for group in raw.chunks_exact(GROUP_SIZE) {
        for i in 0..GROUP_SLOTS {
            // Control byte: high bit clear = full (the rest are 7 hash bits); 0x80 empty,
            // 0xfe deleted.
            if group[i] & 0x80 != 0 {
                continue;
            }
            let slot = GROUP_SLOTS + i * SLOT_SIZE;
            let key = u32_at(group, slot).unwrap_or(0);
            let elem = u64_at(group, slot + SLOT_ELEM).unwrap_or(0);
            if elem != 0 {
                out.push((key, elem));
            }
        }
    }
    Ok(())
}

fn field_u64(raw: &[u8], at: usize) -> Result<u64, MemError> {
    u64_at(raw, at)
        .ok_or_else(|| MemError::Implausible(format!("field at {at} outside the struct read")))
}

fn field_u32(raw: &[u8], at: usize) -> Result<u32, MemError> {
    u32_at(raw, at)
        .ok_or_else(|| MemError::Implausible(format!("field at {at} outside the struct read")))
}

fn read_u64(mem: &dyn Memory, addr: u64) -> Result<u64, MemError> {
    let mut b = [0u8; 8];
    mem.read(addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_u8(mem: &dyn Memory, addr: u64) -> Result<u8, MemError> {
    let mut b = [0u8; 1];
    mem.read(addr, &mut b)?;
    Ok(b[0])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::goprobe::offsets::{OffsetTable, OffsetsSource};

    /// A sparse address space: regions written by the test, everything else unreadable.
    #[derive(Default)]
    struct FakeMemory {
        regions: BTreeMap<u64, Vec<u8>>,
    }

    impl FakeMemory {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            let len = bytes.len() as u64;
            // Merge into an existing region covering it, else a new one.
            if let Some((start, region)) = self
                .regions
                .range_mut(..=addr)
                .next_back()
                .filter(|(s, r)| addr + len <= **s + r.len() as u64)
            {
                let at = (addr - start) as usize;
                region[at..at + bytes.len()].copy_from_slice(bytes);
                return;
            }
            self.regions.insert(addr, bytes.to_vec());
        }
        fn zeroed(&mut self, addr: u64, len: usize) {
            self.regions.insert(addr, vec![0; len]);
        }
        fn u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
        fn u32(&mut self, addr: u64, v: u32) {
            self.put(addr, &v.to_le_bytes());
        }
        fn u8(&mut self, addr: u64, v: u8) {
            self.put(addr, &[v]);
        }
    }

    impl Memory for FakeMemory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let unreadable = || MemError::Unreadable {
                addr,
                len: buf.len(),
                why: "unmapped".to_owned(),
            };
            let (start, region) = self
                .regions
                .range(..=addr)
                .next_back()
                .ok_or_else(unreadable)?;
            let at = (addr - start) as usize;
            let bytes = region.get(at..at + buf.len()).ok_or_else(unreadable)?;
            buf.copy_from_slice(bytes);
            Ok(())
        }
    }

    fn offsets(release: &str) -> Offsets {
        let minor: u32 = release.trim_start_matches("go1.").parse().unwrap();
        let table = OffsetTable::embedded().unwrap();
        let version = crate::goprobe::buildinfo::GoVersion::parse(&format!("{release}.1")).unwrap();
        let found = table.lookup(&version).unwrap();
        assert_eq!(found.source, OffsetsSource::Table(release.to_owned()));
        assert!(Field::ALL
            .iter()
            .all(|f| f.applies(minor) == found.get(*f).is_some()));
        found
    }

    const CONN: u64 = 0xc000_1000;
    const MAP: u64 = 0xc000_2000;

    /// Writes a clientStream at `addr` (with a dataBuffer and response) the way Go lays it out.
    fn put_stream(mem: &mut FakeMemory, o: &Offsets, addr: u64, id: u32, buffered: u64, r: u64) {
        let at = |f: Field| addr + o.get(f).unwrap();
        mem.zeroed(addr, 1024);
        mem.u64(at(Field::H2StreamConn), CONN);
        mem.u32(at(Field::H2StreamId), id);
        let response = addr + 0x10_0000;
        mem.zeroed(response, 512);
        mem.u64(
            response + o.get(Field::H2ResponseContentLength).unwrap(),
            u64::MAX,
        ); // -1
        mem.u64(at(Field::H2StreamRes), response);
        let buffer = addr + 0x20_0000;
        mem.zeroed(buffer, 128);
        mem.u64(buffer + o.get(Field::H2DataBufferSize).unwrap(), buffered);
        mem.u64(buffer + o.get(Field::H2DataBufferR).unwrap(), r);
        let expected = -1 - (buffered + r) as i64;
        mem.u64(
            buffer + o.get(Field::H2DataBufferExpected).unwrap(),
            expected as u64,
        );
        mem.u64(at(Field::H2StreamPipeBuffer), 0xdead_0001); // itab
        mem.u64(at(Field::H2StreamPipeBuffer) + 8, buffer);
        mem.u64(at(Field::H2StreamBytesRemain), u64::MAX); // -1
    }

    fn put_conn(mem: &mut FakeMemory, o: &Offsets) {
        mem.zeroed(CONN, 1024);
        mem.u64(CONN + o.get(Field::H2ConnStreams).unwrap(), MAP);
    }

    #[test]
    fn reads_an_hmap_of_streams_with_overflow_and_growth() {
        let o = offsets("go1.21");
        let reader = StreamReader::new(&o, 21, false).unwrap();
        let mut mem = FakeMemory::default();
        put_conn(&mut mem, &o);
        let (buckets, old, overflow) = (0xc100_0000u64, 0xc200_0000u64, 0xc300_0000u64);
        mem.zeroed(MAP, 64);
        mem.u64(MAP + o.get(Field::HmapCount).unwrap(), 4);
        mem.u8(MAP + o.get(Field::HmapB).unwrap(), 1);
        mem.u64(MAP + o.get(Field::HmapBuckets).unwrap(), buckets);
        mem.u64(MAP + o.get(Field::HmapOldbuckets).unwrap(), old);
        mem.zeroed(buckets, 2 * BUCKET_SIZE);
        mem.zeroed(old, BUCKET_SIZE);
        mem.zeroed(overflow, BUCKET_SIZE);
        let entry = |mem: &mut FakeMemory, bucket: u64, slot: u64, top: u8, key: u32, val: u64| {
            mem.u8(bucket + slot, top);
            mem.u32(bucket + BUCKET_KEYS as u64 + 4 * slot, key);
            mem.u64(bucket + BUCKET_ELEMS as u64 + 8 * slot, val);
        };
        let s = |i: u64| 0xc400_0000 + i * 0x40_0000;
        entry(&mut mem, buckets, 0, 9, 1, s(1));
        entry(&mut mem, buckets, 3, 1, 99, s(9)); // emptyOne: not live
        entry(&mut mem, buckets + BUCKET_SIZE as u64, 7, 200, 3, s(3));
        mem.u64(
            buckets + BUCKET_SIZE as u64 + BUCKET_OVERFLOW as u64,
            overflow,
        );
        entry(&mut mem, overflow, 0, 77, 5, s(5));
        entry(&mut mem, old, 2, 2, 1, s(1)); // evacuated: already in the new array
        entry(&mut mem, old, 4, 50, 7, s(7)); // not yet moved
        for (i, id) in [(1, 1), (3, 3), (5, 5), (7, 7)] {
            put_stream(&mut mem, &o, s(i), id, 4 << 20, 0);
        }
        let state = reader.read_conn(&mem, CONN).unwrap();
        let ids: Vec<u32> = state.streams.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 3, 5, 7]);
        assert_eq!(state.skipped, 0);
        assert!(!state.closed);
        let first = &state.streams[0];
        assert_eq!(first.buffered, Some(4 << 20));
        assert_eq!(first.content_length, Some(-1));
        assert_eq!((first.first_chunk_read, first.unsent), (0, 0));
        assert_eq!(first.expected, -1 - (4 << 20));
    }

    #[test]
    fn reads_swiss_maps_small_and_with_a_directory() {
        let o = offsets("go1.27");
        let reader = StreamReader::new(&o, 27, false).unwrap();
        let s = |i: u64| 0xc400_0000 + i * 0x40_0000;
        let slot = |mem: &mut FakeMemory, group: u64, i: u64, key: u32, val: u64| {
            mem.u32(group + GROUP_SLOTS as u64 + i * SLOT_SIZE as u64, key);
            mem.u64(group + GROUP_SLOTS as u64 + i * SLOT_SIZE as u64 + 8, val);
        };
        // Small map: dirLen 0, dirPtr is the group.
        let mut mem = FakeMemory::default();
        put_conn(&mut mem, &o);
        let group = 0xc100_0000u64;
        mem.zeroed(MAP, 64);
        mem.u64(MAP + o.get(Field::SwissMapUsed).unwrap(), 2);
        mem.u64(MAP + o.get(Field::SwissMapDirPtr).unwrap(), group);
        mem.zeroed(group, GROUP_SIZE);
        // ctrl: slot 0 full (hash bits 0x12), slot 1 empty, slot 2 deleted, slot 5 full.
        mem.u64(
            group,
            u64::from_le_bytes([0x12, 0x80, 0xfe, 0x80, 0x80, 0x33, 0x80, 0x80]),
        );
        slot(&mut mem, group, 0, 1, s(1));
        slot(&mut mem, group, 2, 9, s(9));
        slot(&mut mem, group, 5, 3, s(3));
        put_stream(&mut mem, &o, s(1), 1, 100, 40);
        put_stream(&mut mem, &o, s(3), 3, 0, 0);
        let state = reader.read_conn(&mem, CONN).unwrap();
        let ids: Vec<u32> = state.streams.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(state.streams[0].first_chunk_read, 40);

        // A directory of two slots sharing one table, and a second table.
        let (dir, t1, t2, g1, g2) = (
            0xe500_0000u64,
            0xe510_0000,
            0xe520_0000,
            0xe530_0000,
            0xe540_0000,
        );
        mem.u64(MAP + o.get(Field::SwissMapUsed).unwrap(), 3);
        mem.u64(MAP + o.get(Field::SwissMapDirPtr).unwrap(), dir);
        mem.u64(MAP + o.get(Field::SwissMapDirLen).unwrap(), 3);
        mem.zeroed(dir, 24);
        mem.u64(dir, t1);
        mem.u64(dir + 8, t1);
        mem.u64(dir + 16, t2);
        for (t, g, groups) in [(t1, g1, 2u64), (t2, g2, 1)] {
            mem.zeroed(t, 64);
            mem.u64(t + o.get(Field::SwissTableGroupsData).unwrap(), g);
            mem.u64(
                t + o.get(Field::SwissTableGroupsLengthMask).unwrap(),
                groups - 1,
            );
            mem.zeroed(g, GROUP_SIZE * groups as usize);
            for k in 0..groups {
                mem.u64(g + k * GROUP_SIZE as u64, u64::from_le_bytes([0x80; 8]));
            }
        }
        mem.u8(g1 + GROUP_SIZE as u64 + 7, 0x01);
        slot(&mut mem, g1 + GROUP_SIZE as u64, 7, 5, s(5));
        mem.u8(g2, 0x02);
        slot(&mut mem, g2, 0, 7, s(7));
        mem.u8(g2 + 1, 0x03);
        slot(&mut mem, g2, 1, 11, s(11)); // points at a stream of another connection
        put_stream(&mut mem, &o, s(5), 5, 10, 0);
        put_stream(&mut mem, &o, s(7), 7, 10, 0);
        put_stream(&mut mem, &o, s(11), 11, 10, 0);
        mem.u64(s(11) + o.get(Field::H2StreamConn).unwrap(), CONN + 8);
        let state = reader.read_conn(&mem, CONN).unwrap();
        let ids: Vec<u32> = state.streams.iter().map(|s| s.id).collect();
        assert_eq!(
            ids,
            [5, 7],
            "each table once; a stream of another connection skipped"
        );
        assert_eq!(state.skipped, 1);
    }

    #[test]
    fn epoll_data_unpacks_per_release() {
        // Packed as the runtime packs them: ptr << (tagBits - alignBits) | tag.
        let pd: u64 = 0x7f3a_1234_5600;
        assert_eq!(poll_desc_of_epoll_data(pd << 16 | 0x5_4321, 21), pd);
        assert_eq!(poll_desc_of_epoll_data(pd << 15 | 0xab_cdef, 27), pd);
    }

    #[test]
    fn garbage_is_bounded_and_refused() {
        let o = offsets("go1.22");
        let reader = StreamReader::new(&o, 22, false).unwrap();
        let mut mem = FakeMemory::default();
        put_conn(&mut mem, &o);
        mem.zeroed(MAP, 64);
        mem.u64(MAP + o.get(Field::HmapCount).unwrap(), 5);
        mem.u8(MAP + o.get(Field::HmapB).unwrap(), 40);
        assert!(matches!(
            reader.read_conn(&mem, CONN),
            Err(MemError::Implausible(_))
        ));
        mem.u64(MAP + o.get(Field::HmapCount).unwrap(), u64::MAX);
        assert!(reader.read_conn(&mem, CONN).is_err());
        // Unmapped connection.
        assert!(matches!(
            reader.read_conn(&mem, 0x10),
            Err(MemError::Unreadable { .. })
        ));
        // A closed connection with no map.
        mem.u64(CONN + o.get(Field::H2ConnStreams).unwrap(), 0);
        mem.u8(CONN + o.get(Field::H2ConnClosed).unwrap(), 1);
        let state = reader.read_conn(&mem, CONN).unwrap();
        assert!(state.closed && state.streams.is_empty());
        assert!(StreamReader::new(&offsets("go1.24"), 24, true).is_err());
    }
}
