//! Names upstream connections: the hostname a connection's first bytes carry (TLS SNI or the
//! HTTP/1.x Host header), the provider a hostname belongs to (the catalogue), and, when the
//! first bytes were not seen, the hostnames an address was resolved from (the address book).
//!
//! Requests carry API keys: the parsers borrow the captured prefix, return only the name, and
//! keep, log or copy nothing else of it.

pub mod catalogue;
mod http_host;
pub mod resolver;
mod sni;

/// What a connection's first bytes say about its destination name. Never keeps the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// The server_name of a TLS ClientHello, lowercased.
    Sni(String),
    /// The Host of the first HTTP/1.x request (or the authority of an absolute-form or CONNECT
    /// request target), lowercased, port and trailing dot removed.
    HttpHost(String),
    /// A valid beginning of a ClientHello or HTTP/1.x request, cut before the name. Once the
    /// capture is over (the prefix reached its limit or the connection wrote nothing more), this
    /// means the name was not in the bytes captured.
    NeedMore,
    /// Neither a ClientHello nor an HTTP/1.x request (HTTP/2, another protocol, garbage), or one
    /// that carries no usable name (no server_name, no Host, an IP literal in brackets).
    NotRecognized,
}

/// The first TLS record byte: content type 22, handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Parses a prefix (at most 1 KiB, the first write or two) of what the process sent on a
/// connection. TLS: a ClientHello's server_name (robust to truncation, GREASE values, many
/// extensions, a ClientHello split over several TLS records within the prefix). Plain
/// HTTP/1.x: the Host header (case-insensitive, port stripped, first request only). Never
/// panics, never reads past the buffer.
pub fn name_from_first_bytes(prefix: &[u8]) -> Named {
    match prefix.first() {
        None => Named::NeedMore,
        Some(&TLS_HANDSHAKE_RECORD) => sni::parse(prefix),
        Some(_) => http_host::parse(prefix),
    }
}

/// The longest hostname DNS can carry, without the trailing dot (RFC 1035 section 2.3.4).
const MAX_HOSTNAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Returns `raw` as a lowercase hostname if it is one: dot-separated labels of 1 to 63 letters,
/// digits, '-' (not at either end) or '_' (seen in real service names), 253 bytes at most, one
/// trailing dot allowed and removed. IPv4 literals pass (they are digits and dots).
fn normalize_hostname(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > MAX_HOSTNAME_LEN {
        return None;
    }
    let labels_ok = name.split(|&b| b == b'.').all(|label| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with(b"-")
            && !label.ends_with(b"-")
    });
    // Every byte was checked to be ASCII, so this conversion cannot fail.
    labels_ok.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
