//! Turns the kernel side's raw records into the model's types.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use anyhow::{anyhow, Result};
use tracer_common::{
    ConnEvent, ConnFlags, ConnInfo, EventKind, AF_INET, COMM_LEN, FIRST_BYTES_HEADER,
    FIRST_BYTES_MAX,
};

use crate::model::{KernelConn, KernelEvent, KernelEventKind, RecvQ};

fn addr(family: u16, bytes: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    };
    SocketAddr::new(ip, port)
}

fn nonzero(ns: u64) -> Option<u64> {
    (ns != 0).then_some(ns)
}

thread_local! {
    /// Process names already decoded: a relay's connections share one or a few, so each
    /// connection holds a reference rather than its own copy (100k connections are decoded
    /// every second). Bounded: cleared when it grows past `MAX_COMMS`.
    static COMMS: RefCell<HashMap<[u8; COMM_LEN], Arc<str>>> = RefCell::new(HashMap::new());
}
const MAX_COMMS: usize = 4096;

fn comm(raw: &[u8; COMM_LEN]) -> Arc<str> {
    COMMS.with_borrow_mut(|comms| {
        if let Some(name) = comms.get(raw) {
            return name.clone();
        }
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name: Arc<str> = String::from_utf8_lossy(&raw[..len]).into();
        if comms.len() >= MAX_COMMS {
            comms.clear();
        }
        comms.insert(*raw, name.clone());
        name
    })
}

pub fn conn(info: &ConnInfo) -> KernelConn {
    KernelConn {
        pid: info.tgid,
        tid: info.tid,
        fd: (info.flags & ConnFlags::FD_KNOWN != 0).then_some(info.fd),
        comm: comm(&info.comm),
        local: addr(info.family, &info.saddr, info.sport),
        remote: addr(info.family, &info.daddr, info.dport),
        state: info.state,
        connect_ns: info.connect_ns,
        established_ns: nonzero(info.established_ns),
        peer_fin_ns: nonzero(info.peer_fin_ns),
        local_close_ns: nonzero(info.local_close_ns),
        last_read_ns: nonzero(info.last_read_ns),
        last_read_ret: info.last_read_ret,
        reads: info.reads,
        bytes_read: info.bytes_read,
        reads_inflight: info.reads_inflight,
        recv_q: (info.flags & ConnFlags::UNREAD_SAMPLED != 0).then_some(RecvQ {
            bytes: info.unread_bytes,
            at_ns: info.unread_sampled_ns,
        }),
        closed_by_process: info.flags & ConnFlags::CLOSED_BY_PROCESS != 0,
        peer_fin_at_close: info.flags & ConnFlags::PEER_FIN_AT_CLOSE != 0,
    }
}

/// One ring-buffer record. (Decoded and consumed one at a time: not worth a Box.)
#[allow(clippy::large_enum_variant)]
pub enum Record<'a> {
    Conn(KernelEvent),
    /// A prefix of what the process wrote on socket `sk`: for naming only, never kept.
    FirstBytes {
        sk: u64,
        /// Which socket at `sk`: its connect time.
        connect_ns: u64,
        bytes: &'a [u8],
    },
    /// A request handed to Go's transport, with its stack (call sites).
    Site(super::gosites::RawSite),
}

/// Decodes one ring-buffer record of either kind.
pub fn record(bytes: &[u8]) -> Result<Record<'_>> {
    let kind = bytes
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| anyhow!("empty event record"))?;
    if kind == EventKind::Site as u32 {
        return super::gosites::decode(bytes).map(Record::Site);
    }
    if kind != EventKind::FirstBytes as u32 {
        return event(bytes).map(Record::Conn);
    }
    // Only the bytes used are sent: the header, then `len` bytes.
    if bytes.len() < FIRST_BYTES_HEADER {
        return Err(anyhow!("short first-bytes record: {} bytes", bytes.len()));
    }
    let len = u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let word = |at: usize| {
        <[u8; 8]>::try_from(&bytes[at..at + 8])
            .map(u64::from_ne_bytes)
            .map_err(|_| anyhow!("bad first-bytes record"))
    };
    let (sk, connect_ns) = (word(8)?, word(16)?);
    let data = &bytes[FIRST_BYTES_HEADER..];
    if len > data.len().min(FIRST_BYTES_MAX) {
        return Err(anyhow!(
            "first-bytes record says {len} bytes but carries {}",
            data.len()
        ));
    }
    Ok(Record::FirstBytes {
        sk,
        connect_ns,
        bytes: &data[..len],
    })
}

/// Reads a plain-data record of type `T` (a `what` record) from the start of `bytes`, if it
/// is long enough.
pub fn plain<T: aya::Pod>(bytes: &[u8], what: &str) -> Result<T> {
    if bytes.len() < size_of::<T>() {
        return Err(anyhow!(
            "short {what} record: {} bytes, expected {}",
            bytes.len(),
            size_of::<T>()
        ));
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes, T is Pod (plain data: every bit
    // pattern valid), and read_unaligned does not require alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// Decodes one connection lifecycle record.
pub fn event(bytes: &[u8]) -> Result<KernelEvent> {
    let raw: ConnEvent = plain(bytes, "event")?;
    let kind = match EventKind::from_u32(raw.kind) {
        Some(EventKind::Connect) => KernelEventKind::Connect,
        Some(EventKind::State) => KernelEventKind::State,
        Some(EventKind::Close) => KernelEventKind::Close,
        Some(EventKind::FirstBytes | EventKind::Site) | None => {
            return Err(anyhow!("unknown event kind {}", raw.kind))
        }
    };
    Ok(KernelEvent {
        kind,
        old_state: raw.old_state,
        ctx_pid: raw.ctx_tgid,
        sk: raw.sk,
        conn: conn(&raw.conn),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{tcp_state, AF_INET6};

    fn first_bytes(len: u32, data: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(EventKind::FirstBytes as u32).to_ne_bytes());
        raw.extend_from_slice(&len.to_ne_bytes());
        raw.extend_from_slice(&0xffff_8800_1234_0000u64.to_ne_bytes());
        raw.extend_from_slice(&7_000_000_123u64.to_ne_bytes());
        raw.extend_from_slice(data);
        raw
    }

    #[test]
    fn a_first_bytes_record_carries_only_its_used_bytes() {
        let raw = first_bytes(5, b"GET /");
        match record(&raw) {
            Ok(Record::FirstBytes {
                sk,
                connect_ns,
                bytes,
            }) => {
                assert_eq!(
                    (sk, connect_ns, bytes),
                    (0xffff_8800_1234_0000, 7_000_000_123, &b"GET /"[..])
                );
            }
            _ => panic!("not decoded as first bytes"),
        }
        // Ring records are padded to 8 bytes: trailing bytes beyond `len` are ignored.
        let padded = first_bytes(5, b"GET /\0\0\0");
        assert!(
            matches!(record(&padded), Ok(Record::FirstBytes { bytes, .. }) if bytes == b"GET /")
        );
        let lying = first_bytes(9, b"GET /");
        assert!(
            record(&lying).is_err(),
            "a length beyond the record is refused"
        );
        assert!(record(&raw[..20]).is_err(), "a cut header is refused");
    }

    fn info() -> ConnInfo {
        let mut i = ConnInfo::zeroed();
        i.tgid = 42;
        i.family = AF_INET;
        i.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        i.daddr[..4].copy_from_slice(&[127, 0, 0, 12]);
        i.sport = 40000;
        i.dport = 18080;
        i.comm[..5].copy_from_slice(b"relay");
        i.state = tcp_state::CLOSE_WAIT;
        i
    }

    #[test]
    fn decodes_addresses_comm_and_optional_fields() {
        let mut i = info();
        i.fd = 7;
        i.flags = ConnFlags::FD_KNOWN | ConnFlags::UNREAD_SAMPLED;
        i.unread_bytes = 1;
        i.unread_sampled_ns = 5;
        let c = conn(&i);
        assert_eq!(c.local.to_string(), "127.0.0.1:40000");
        assert_eq!(c.remote.to_string(), "127.0.0.12:18080");
        assert_eq!(&*c.comm, "relay");
        assert_eq!(c.fd, Some(7));
        assert_eq!(c.recv_q, Some(RecvQ { bytes: 1, at_ns: 5 }));
        assert_eq!(c.established_ns, None);
        assert!(!c.closed_by_process);
    }

    #[test]
    fn fd_and_recv_q_are_absent_without_their_flags() {
        let mut i = info();
        i.fd = 7;
        i.unread_bytes = 9;
        let c = conn(&i);
        assert_eq!(c.fd, None);
        assert_eq!(c.recv_q, None);
    }

    #[test]
    fn decodes_ipv6() {
        let mut i = info();
        i.family = AF_INET6;
        i.daddr = std::net::Ipv6Addr::LOCALHOST.octets();
        assert_eq!(conn(&i).remote.to_string(), "[::1]:18080");
    }

    #[test]
    fn decodes_a_ring_record_and_rejects_bad_ones() {
        let raw = ConnEvent {
            kind: EventKind::Close as u32,
            old_state: tcp_state::ESTABLISHED,
            new_state: tcp_state::CLOSE,
            ctx_tgid: 42,
            sk: 0xffff_0000_1234_5678,
            ts_ns: 99,
            conn: info(),
        };
        // SAFETY (test): viewing a plain-data struct as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const ConnEvent).cast::<u8>(),
                size_of::<ConnEvent>(),
            )
        };
        let e = event(bytes).expect("decodes");
        assert_eq!(e.kind, KernelEventKind::Close);
        assert_eq!(e.sk, 0xffff_0000_1234_5678);
        assert_eq!(e.conn.pid, 42);
        assert!(event(&bytes[..100]).is_err());
        let mut bad = bytes.to_vec();
        bad[0] = 77;
        assert!(event(&bad).is_err());
    }
}
