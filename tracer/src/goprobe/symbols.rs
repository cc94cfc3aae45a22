//! Which function each probe role is, per Go release: data, not code.
//!
//! Names as `.gopclntab` (and runtime.FuncForPC) spells them, read from `go tool nm` of the
//! stub built by each toolchain of the matrix (`cargo xtask go-matrix`); the matrix test
//! checks every row against every release. Changes seen:
//! - 1.21-1.22: the h2 client's round trip is `(*http2ClientConn).RoundTrip`. From 1.23 that is
//!   a wrapper and the work is in `roundTrip` (which the transport also calls directly).
//! - 1.27: HTTP/2 moves out of net/http's `http2`-prefixed bundle into
//!   `net/http/internal/http2`, with the prefixes dropped.

use super::buildinfo::GoVersion;

/// The newest Go release whose names (and, later, struct layouts) are known.
pub const NEWEST_KNOWN: (u32, u32) = (1, 27);
/// The oldest: the register ABI, pclntab 1.20 layout and these names all hold from here on.
pub const OLDEST_KNOWN: (u32, u32) = (1, 21);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// An HTTP/1.1 request handed to a pooled connection (its `persistConn` leads to the fd).
    H1RoundTrip,
    /// An HTTP/2 request handed to a client connection (leads to the stream).
    H2RoundTrip,
    /// A client connection's read loop: runs once per connection, for its whole life (the
    /// Go layer's per-connection probe: it registers the `*ClientConn` whose streams map the
    /// collector reads).
    H2ReadLoop,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::H1RoundTrip, Role::H2RoundTrip, Role::H2ReadLoop];
}

struct Row {
    role: Role,
    /// Go 1.x minor releases this name holds for, inclusive.
    since: u32,
    until: u32,
    name: &'static str,
}

const fn row(role: Role, since: u32, until: u32, name: &'static str) -> Row {
    Row {
        role,
        since,
        until,
        name,
    }
}

const NAMES: &[Row] = &[
    row(
        Role::H1RoundTrip,
        21,
        27,
        "net/http.(*persistConn).roundTrip",
    ),
    row(
        Role::H2RoundTrip,
        21,
        22,
        "net/http.(*http2ClientConn).RoundTrip",
    ),
    row(
        Role::H2RoundTrip,
        23,
        26,
        "net/http.(*http2ClientConn).roundTrip",
    ),
    row(
        Role::H2RoundTrip,
        27,
        27,
        "net/http/internal/http2.(*ClientConn).roundTrip",
    ),
    row(
        Role::H2ReadLoop,
        21,
        26,
        "net/http.(*http2ClientConn).readLoop",
    ),
    row(
        Role::H2ReadLoop,
        27,
        27,
        "net/http/internal/http2.(*ClientConn).readLoop",
    ),
];

/// The function name of `role` in binaries built by `version`, `None` outside the known
/// releases.
pub fn name_of(role: Role, version: &GoVersion) -> Option<&'static str> {
    let (major, minor) = version.release();
    if major != 1 {
        return None;
    }
    NAMES
        .iter()
        .find(|row| row.role == role && (row.since..=row.until).contains(&minor))
        .map(|row| row.name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_one_name_in_every_known_release() {
        for minor in OLDEST_KNOWN.1..=NEWEST_KNOWN.1 {
            let version = GoVersion::parse(&format!("go1.{minor}.0")).unwrap();
            for role in Role::ALL {
                let rows = NAMES
                    .iter()
                    .filter(|row| row.role == role && (row.since..=row.until).contains(&minor))
                    .count();
                assert_eq!(rows, 1, "{role:?} in go1.{minor}");
                assert!(name_of(role, &version).is_some());
            }
        }
        let newer = GoVersion::parse("go1.28.0").unwrap();
        assert_eq!(name_of(Role::H1RoundTrip, &newer), None);
        let older = GoVersion::parse("go1.20.5").unwrap();
        assert_eq!(name_of(Role::H1RoundTrip, &older), None);
    }
}
