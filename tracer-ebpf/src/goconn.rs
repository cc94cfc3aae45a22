//! The socket fd behind a Go `net.Conn` interface, read from a target's memory by the Go-aware
//! uprobes: the interface holds a `*crypto/tls.Conn` (whose `conn` field is again a net.Conn,
//! a `*net.TCPConn` when dialed by net/http) or a `*net.TCPConn`; a TCPConn embeds
//! `conn{fd *netFD}`, and `netFD.pfd.Sysfd` is the fd. Every interface hop checks the dynamic
//! type first: the itab's copy of the type hash, read once, then the itab's address, which
//! the caller may keep for its next hits; any failed read or unexpected type gives `None`.
//! Four user reads from an interface to its fd once the itabs are known, against eight when
//! each hop read the hash and the two words apart (bench/RESULTS.md O).
//!
//! gosite.rs follows persistConn.conn with it, gostream.rs an h2 ClientConn.tconn.

use aya_ebpf::helpers::bpf_probe_read_user;
use tracer_common::go::{GoProcess, ITAB_HASH_OFFSET};

/// Offsets and type hashes of the chain, per process (`GoProcess::UNKNOWN` where unknown).
pub struct ConnChain {
    pub tls_conn: u32,
    pub tcp_conn_fd: u32,
    pub netfd_sysfd: u32,
    pub tls_conn_type_hash: u32,
    pub tcp_conn_type_hash: u32,
}

/// Reads a `T` at `addr` in the probed process; `None` when the address is 0 or the read fails
/// (the page is not there): never a guess, and never a fault in the process.
#[inline(always)]
pub fn read_user<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user copies from the user address space with fault handling; a
    // bad address returns an error and touches nothing.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// `base + offset` for an offset user space knows, else `None`.
#[inline(always)]
pub fn field_at(base: u64, offset: u32) -> Option<u64> {
    (base != 0 && offset != GoProcess::UNKNOWN).then_some(base + u64::from(offset))
}

/// Whether the itab `itab` is of the dynamic type with type hash `hash`: its hash read once,
/// then the itab's address remembered in `known` (an itab lives as long as its process, and
/// one interface and dynamic type have one itab), so later hops compare addresses instead of
/// reading the hash again (a user read costs about 100 ns here, bench/RESULTS.md).
#[inline(always)]
fn is_type(itab: u64, hash: u32, known: &mut u64) -> bool {
    if itab == 0 {
        return false;
    }
    if itab == *known {
        return true;
    }
    match read_user::<u32>(itab + ITAB_HASH_OFFSET) {
        Some(seen) if seen == hash => {
            *known = itab;
            true
        }
        _ => false,
    }
}

/// The fd of the `net.Conn` interface value at address `iface`. `known` holds the itabs of
/// `*crypto/tls.Conn` and `*net.TCPConn` as `net.Conn` once seen (0 before): the caller's
/// per-process copy, kept across probe hits.
#[inline(always)]
pub fn conn_fd(iface: u64, chain: &ConnChain, known: &mut [u64; 2]) -> Option<i32> {
    if chain.tls_conn_type_hash == 0 || chain.tcp_conn_type_hash == 0 {
        return None;
    }
    // An interface value is two words: the itab, then the data pointer. One read for both.
    let [itab, data] = read_user::<[u64; 2]>(iface)?;
    // A cleartext connection's itab, once known, is taken before the TLS check, which would
    // read its hash again at every hit.
    let tcp = if itab != 0 && itab == known[1] {
        data
    } else if is_type(itab, chain.tls_conn_type_hash, &mut known[0]) {
        let [inner_itab, inner] = read_user::<[u64; 2]>(field_at(data, chain.tls_conn)?)?;
        if !is_type(inner_itab, chain.tcp_conn_type_hash, &mut known[1]) {
            return None;
        }
        inner
    } else if is_type(itab, chain.tcp_conn_type_hash, &mut known[1]) {
        data
    } else {
        return None;
    };
    let netfd: u64 = read_user(field_at(tcp, chain.tcp_conn_fd)?)?;
    let sysfd: i64 = read_user(field_at(netfd, chain.netfd_sysfd)?)?;
    (0..=i64::from(i32::MAX))
        .contains(&sysfd)
        .then_some(sysfd as i32)
}
