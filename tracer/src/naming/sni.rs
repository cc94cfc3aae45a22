//! The server_name of a TLS ClientHello (RFC 8446 section 4.1.2, RFC 6066 section 3), read
//! from the first bytes a client wrote: TLS records carrying one handshake message, possibly
//! split over several records and cut anywhere.
//!
//! The parser reads as far as the bytes go and answers as soon as the server_name extension
//! is complete: a post-quantum key share can make a ClientHello longer than the 1 KiB captured,
//! and clients put server_name well before it. Every length field is checked against both the
//! enclosing structure (a lie is `NotRecognized`) and the bytes at hand (running out is
//! `NeedMore`).

use std::borrow::Cow;

use super::{normalize_hostname, Named, TLS_HANDSHAKE_RECORD};

const RECORD_HEADER_LEN: usize = 5;
/// TLSPlaintext.length may not exceed 2^14 (RFC 8446 section 5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const SERVER_NAME_HOST_NAME: u8 = 0;
const MAX_SESSION_ID_LEN: usize = 32;

/// Why parsing stopped short of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The bytes at hand end before the structure does.
    Truncated,
    /// A field contradicts the format: not a ClientHello, or none with a usable name.
    Malformed,
}

pub(super) fn parse(prefix: &[u8]) -> Named {
    let (handshake, stream_cut) = match reassemble_handshake(prefix) {
        Ok(reassembled) => reassembled,
        Err(Stop::Truncated) => return Named::NeedMore,
        Err(Stop::Malformed) => return Named::NotRecognized,
    };
    match server_name(&handshake) {
        Ok(name) => Named::Sni(name),
        // The handshake bytes ran out: more would follow only if the records were cut by the
        // end of the prefix, not by a record of another type.
        Err(Stop::Truncated) if stream_cut => Named::NeedMore,
        Err(_) => Named::NotRecognized,
    }
}

/// Concatenates the fragments of the leading handshake records. Returns the bytes and whether
/// the record stream was cut by the end of the prefix (rather than ended by another record
/// type, after which no more handshake bytes can come for this message).
fn reassemble_handshake(prefix: &[u8]) -> Result<(Cow<'_, [u8]>, bool), Stop> {
    let mut fragments: Vec<&[u8]> = Vec::new();
    let mut rest = prefix;
    loop {
        if rest.is_empty() {
            break;
        }
        if rest[0] != TLS_HANDSHAKE_RECORD {
            if fragments.is_empty() {
                return Err(Stop::Malformed);
            }
            // Another record type (ChangeCipherSpec, early data) after the handshake ones.
            return Ok((join(fragments), false));
        }
        let header = &rest[..rest.len().min(RECORD_HEADER_LEN)];
        check_record_header(header)?;
        if header.len() < RECORD_HEADER_LEN {
            if fragments.is_empty() {
                return Err(Stop::Truncated);
            }
            break;
        }
        let declared = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let body = &rest[RECORD_HEADER_LEN..];
        let available = declared.min(body.len());
        fragments.push(&body[..available]);
        rest = &body[available..];
        if available < declared {
            break;
        }
    }
    Ok((join(fragments), true))
}

/// Checks the bytes of a record header that are present: handshake type, version 3.0 to 3.4
/// (clients send 3.1 or 3.3 here), and a length of 1 to 2^14 (RFC 8446 forbids empty
/// handshake fragments).
fn check_record_header(header: &[u8]) -> Result<(), Stop> {
    let bad = match *header {
        [_, major, ..] if major != 3 => true,
        [_, _, minor, ..] if minor > 4 => true,
        [_, _, _, high, low] => {
            let len = usize::from(u16::from_be_bytes([high, low]));
            len == 0 || len > MAX_RECORD_LEN
        }
        [_, _, _, high] => usize::from(high) << 8 > MAX_RECORD_LEN,
        _ => false,
    };
    if bad {
        Err(Stop::Malformed)
    } else {
        Ok(())
    }
}

fn join(fragments: Vec<&[u8]>) -> Cow<'_, [u8]> {
    match fragments.as_slice() {
        [] => Cow::Borrowed(&[]),
        [only] => Cow::Borrowed(only),
        _ => Cow::Owned(fragments.concat()),
    }
}

/// Walks a ClientHello handshake message (possibly cut) to its server_name.
fn server_name(handshake: &[u8]) -> Result<String, Stop> {
    let mut message = Cursor::new(handshake);
    if message.u8()? != HANDSHAKE_CLIENT_HELLO {
        return Err(Stop::Malformed);
    }
    let body_len = message.u24()?;
    let mut hello = message.nested(body_len)?;

    let [major, _minor] = hello.array::<2>()?; // legacy_version
    if major != 3 {
        return Err(Stop::Malformed);
    }
    hello.skip(32)?; // random
    let session_id_len = usize::from(hello.u8()?);
    if session_id_len > MAX_SESSION_ID_LEN {
        return Err(Stop::Malformed);
    }
    hello.skip(session_id_len)?;
    let cipher_suites_len = usize::from(hello.u16()?);
    if cipher_suites_len < 2 || cipher_suites_len % 2 != 0 {
        return Err(Stop::Malformed);
    }
    hello.skip(cipher_suites_len)?;
    let compression_len = usize::from(hello.u8()?);
    if compression_len == 0 {
        return Err(Stop::Malformed);
    }
    hello.skip(compression_len)?;
    if hello.at_declared_end() {
        // A ClientHello without extensions (SSL 3.0 style) names no server.
        return Err(Stop::Malformed);
    }
    let extensions_len = usize::from(hello.u16()?);
    let mut extensions = hello.nested(extensions_len)?;
    while !extensions.at_declared_end() {
        let extension_type = extensions.u16()?;
        let data_len = usize::from(extensions.u16()?);
        let data = extensions.nested(data_len)?;
        // Unknown and GREASE (0x?a?a) extensions are skipped by their length, as a server does.
        if extension_type == EXTENSION_SERVER_NAME {
            return host_name(data);
        }
    }
    Err(Stop::Malformed)
}

/// The host_name entry of a server_name extension's ServerNameList. The whole list must parse
/// (it is a few bytes, and in practice ends with the name): a corrupted name length would
/// otherwise pass for a shorter name.
fn host_name(mut data: Cursor<'_>) -> Result<String, Stop> {
    let list_len = usize::from(data.u16()?);
    let mut list = data.nested(list_len)?;
    if !data.at_declared_end() {
        return Err(Stop::Malformed);
    }
    let mut host_name = None;
    while !list.at_declared_end() {
        let name_type = list.u8()?;
        let name_len = usize::from(list.u16()?);
        let mut name = list.nested(name_len)?;
        if name_type == SERVER_NAME_HOST_NAME {
            // RFC 6066: at most one name per type.
            if host_name.is_some() {
                return Err(Stop::Malformed);
            }
            host_name = Some(name.take(name_len)?);
        }
    }
    let raw = host_name.ok_or(Stop::Malformed)?;
    // RFC 6066: no trailing dot in a host_name; refuse what is not a hostname rather than
    // report a wrong one.
    if raw.ends_with(b".") {
        return Err(Stop::Malformed);
    }
    normalize_hostname(raw).ok_or(Stop::Malformed)
}

/// A read position in a structure whose declared end (`limit`) may lie beyond the bytes at hand
/// (`data`): reading past `limit` is `Malformed`, past `data` is `Truncated`.
#[derive(Debug, Clone, Copy)]
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    limit: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Cursor {
            data,
            pos: 0,
            limit: usize::MAX,
        }
    }

    fn at_declared_end(&self) -> bool {
        self.pos >= self.limit
    }

    /// The end of the next `len` bytes, if they fit the declared structure.
    fn end_of(&self, len: usize) -> Result<usize, Stop> {
        match self.pos.checked_add(len) {
            Some(end) if end <= self.limit => Ok(end),
            _ => Err(Stop::Malformed),
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Stop> {
        let end = self.end_of(len)?;
        let bytes = self.data.get(self.pos..end).ok_or(Stop::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// Moves past `len` bytes that need not be at hand: what follows them may still be cut.
    fn skip(&mut self, len: usize) -> Result<(), Stop> {
        self.pos = self.end_of(len)?;
        Ok(())
    }

    /// A cursor over the next `len` bytes (declared, maybe not at hand); moves past them.
    fn nested(&mut self, len: usize) -> Result<Cursor<'a>, Stop> {
        let end = self.end_of(len)?;
        let inner = Cursor {
            data: self.data,
            pos: self.pos,
            limit: end,
        };
        self.pos = end;
        Ok(inner)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| Stop::Malformed)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }

    fn u24(&mut self) -> Result<usize, Stop> {
        let [a, b, c] = self.array::<3>()?;
        Ok(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c))
    }
}
