//! The host an HTTP/1.x request is for (RFC 9112 section 3.2): the authority of an
//! absolute-form or CONNECT request target, else the first Host header of the first request.
//! Only complete lines count: a header cut by the end of the prefix is `NeedMore`, never a
//! shortened name.

use super::{normalize_hostname, Named};

/// Methods a relay sends upstream. HTTP/2's connection preface starts with "PRI", which is not
/// here, so an h2c connection is `NotRecognized`.
const METHODS: [&[u8]; 9] = [
    b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"CONNECT", b"TRACE",
];
const VERSIONS: [&[u8]; 2] = [b"HTTP/1.1", b"HTTP/1.0"];

pub(super) fn parse(prefix: &[u8]) -> Named {
    let (method, after_method) = match scan_method(prefix) {
        MethodScan::Found { method, rest } => (method, rest),
        MethodScan::Partial => return Named::NeedMore,
        MethodScan::NotHttp => return Named::NotRecognized,
    };
    let Some((request_line, headers)) = next_line(after_method) else {
        return need_more_if_plausible(after_method);
    };
    let Some((target, version)) = split_once(request_line, b' ') else {
        return Named::NotRecognized;
    };
    if target.is_empty() || !VERSIONS.contains(&version) || !target.iter().all(|&b| is_vchar(b)) {
        return Named::NotRecognized;
    }
    if let Some(authority) = target_authority(method, target) {
        return host_of_authority(authority).map_or(Named::NotRecognized, Named::HttpHost);
    }
    host_header(headers)
}

enum MethodScan<'a> {
    /// A known method and what follows its space.
    Found {
        method: &'a [u8],
        rest: &'a [u8],
    },
    /// The whole prefix is the beginning of a method (or a whole method, before its space).
    Partial,
    NotHttp,
}

fn scan_method(prefix: &[u8]) -> MethodScan<'_> {
    match split_once(prefix, b' ') {
        Some((method, rest)) if METHODS.contains(&method) => MethodScan::Found { method, rest },
        Some(_) => MethodScan::NotHttp,
        None if METHODS.iter().any(|m| m.starts_with(prefix)) => MethodScan::Partial,
        None => MethodScan::NotHttp,
    }
}

/// The authority a request target names itself: absolute-form ("http://host:port/path",
/// which takes precedence over Host) and CONNECT's authority-form ("host:port").
fn target_authority<'a>(method: &[u8], target: &'a [u8]) -> Option<&'a [u8]> {
    if method == b"CONNECT" {
        return Some(target);
    }
    let scheme_end = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..scheme_end];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    // userinfo@host: the host is after the last '@'.
    Some(authority.rsplit(|&b| b == b'@').next().unwrap_or(authority))
}

/// Reads header lines up to the first Host, or the blank line that ends the headers.
fn host_header(mut headers: &[u8]) -> Named {
    loop {
        let Some((line, rest)) = next_line(headers) else {
            return need_more_if_plausible(headers);
        };
        if line.is_empty() {
            return Named::NotRecognized; // end of headers, no Host
        }
        let Some((name, value)) = split_once(line, b':') else {
            return Named::NotRecognized;
        };
        // A header name is a token: no whitespace before the colon, no obsolete line folding.
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Named::NotRecognized;
        }
        if !value.iter().all(|&b| is_field_byte(b)) {
            return Named::NotRecognized;
        }
        if name.eq_ignore_ascii_case(b"host") {
            let value = value.trim_ascii();
            return host_of_authority(value).map_or(Named::NotRecognized, Named::HttpHost);
        }
        headers = rest;
    }
}

/// "host", "host:port", "host:" (RFC 3986 allows an empty port) or an IP literal in brackets,
/// which names no host (the collector already has the address).
fn host_of_authority(authority: &[u8]) -> Option<String> {
    if authority.starts_with(b"[") {
        return None;
    }
    let host = match split_once_last(authority, b':') {
        Some((host, port)) if port.iter().all(u8::is_ascii_digit) => host,
        Some(_) => return None,
        None => authority,
    };
    normalize_hostname(host)
}

/// The next line without its terminator (CRLF, or a bare LF as RFC 9112 section 2.2 lets a
/// recipient accept) and what follows it; `None` if no line end is at hand.
fn next_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (line, rest) = split_once(bytes, b'\n')?;
    Some((line.strip_suffix(b"\r").unwrap_or(line), rest))
}

/// An unterminated line at the end of the prefix: `NeedMore` if it could still become a valid
/// line, `NotRecognized` if it already holds bytes no request line or header has.
fn need_more_if_plausible(partial: &[u8]) -> Named {
    let plausible = match partial.split_last() {
        Some((b'\r', head)) => head.iter().all(|&b| is_field_byte(b)),
        _ => partial.iter().all(|&b| is_field_byte(b)),
    };
    if plausible {
        Named::NeedMore
    } else {
        Named::NotRecognized
    }
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

fn split_once_last(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().rposition(|&b| b == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Visible ASCII (RFC 5234 VCHAR).
fn is_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// A byte of a field value or request line: VCHAR, space, tab, or obs-text (RFC 9110 5.5).
fn is_field_byte(b: u8) -> bool {
    is_vchar(b) || b == b' ' || b == b'\t' || b >= 0x80
}

/// A token character (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
