//! The Go version and module path from `.go.buildinfo`, which `-ldflags "-s -w"` keeps.
//!
//! Layout from Go's debug/buildinfo/buildinfo.go (and cmd/link/internal/ld/data.go, which
//! writes it): a 32-byte header, `"\xff Go buildinf:"` (14 bytes), the pointer size (1 byte),
//! flags (1 byte: bit 0 big-endian, bit 1 "strings inline"). Since Go 1.18 the strings follow
//! inline at offset 32, each a uvarint length and the bytes: the version (`go1.27.3`), then
//! the module info (`runtime/debug.BuildInfo` as text, between two 16-byte sentinels). Before
//! 1.18 the header held two pointers to string headers instead; the layer does not read those.

use std::fmt;

use super::elf::GoElf;
use super::pcvalue::read_uvarint64;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_SIZE: usize = 32;
/// The linker aligns the blob to 16 bytes (debug/buildinfo's buildInfoAlign).
const ALIGN: usize = 16;
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE_STRINGS: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildInfoError {
    #[error("no Go build info (no .go.buildinfo section and no \"\\xff Go buildinf:\" blob)")]
    Missing,
    #[error("Go build info in the pre-1.18 pointer format (Go older than 1.18)")]
    PointerFormat,
    #[error("Go build info for a big-endian target")]
    BigEndian,
    #[error("Go build info is truncated or malformed")]
    Malformed,
    #[error("Go version {0:?} in the build info is not of the form go1.N[.P]")]
    BadVersion(String),
}

/// A Go release, as `runtime.Version()` reports it (`go1.27.3`, `go1.22rc1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The string as written in the binary, e.g. `go1.27.3` or `go1.24.11 X:boringcrypto`.
    pub raw: String,
}

impl GoVersion {
    /// Parses `go1.N`, `go1.N.P`, `go1.NrcK`, `go1.NbetaK`, with anything after a space ignored
    /// (GOEXPERIMENT suffixes). `devel` builds are not releases: no layout can be vouched for.
    pub fn parse(raw: &str) -> Result<Self, BuildInfoError> {
        let bad = || BuildInfoError::BadVersion(raw.to_owned());
        let word = raw.split_whitespace().next().ok_or_else(bad)?;
        let rest = word.strip_prefix("go").ok_or_else(bad)?;
        let mut numbers = rest.splitn(3, '.');
        let number = |part: Option<&str>| -> Result<u32, BuildInfoError> {
            let part = part.ok_or_else(bad)?;
            let digits: &str = part
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or_default();
            digits.parse().map_err(|_| bad())
        };
        let major = number(numbers.next())?;
        let minor = number(numbers.next())?;
        let patch = match numbers.next() {
            Some(part) => number(Some(part))?,
            None => 0,
        };
        Ok(Self {
            major,
            minor,
            patch,
            raw: raw.to_owned(),
        })
    }

    /// `(major, minor)` for comparing releases.
    pub fn release(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: GoVersion,
    /// The main package's path (`path` line), e.g. `github.com/songquanpeng/one-api`.
    pub main_path: Option<String>,
    /// The main module's path (`mod` line), when built in module mode.
    pub module_path: Option<String>,
}

/// Reads the build info of `elf`: the `.go.buildinfo` section, or (for linkers that renamed
/// sections) the first 16-aligned magic in the file, as debug/buildinfo searches.
pub fn read(elf: &GoElf) -> Result<BuildInfo, BuildInfoError> {
    let blob = match elf.section(".go.buildinfo") {
        Some(section) => elf
            .section_bytes(section)
            .ok_or(BuildInfoError::Malformed)?,
        None => find_magic(elf.bytes()).ok_or(BuildInfoError::Missing)?,
    };
    parse(blob)
}

fn find_magic(data: &[u8]) -> Option<&[u8]> {
    (0..data.len())
        .step_by(ALIGN)
        .find(|&at| data[at..].starts_with(MAGIC))
        .map(|at| &data[at..])
}

pub fn parse(blob: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    if !blob.starts_with(MAGIC) {
        return Err(BuildInfoError::Missing);
    }
    let header = blob.get(..HEADER_SIZE).ok_or(BuildInfoError::Malformed)?;
    let flags = header[15];
    if flags & FLAG_INLINE_STRINGS == 0 {
        return Err(BuildInfoError::PointerFormat);
    }
    if flags & FLAG_BIG_ENDIAN != 0 {
        return Err(BuildInfoError::BigEndian);
    }
    let rest = &blob[HEADER_SIZE..];
    let (version, rest) = inline_string(rest)?;
    let (modinfo, _) = inline_string(rest)?;
    let version =
        GoVersion::parse(std::str::from_utf8(version).map_err(|_| BuildInfoError::Malformed)?)?;
    // The module info sits between two 16-byte binary sentinels (cmd/go/internal/modload's
    // infoStart/infoEnd); debug/buildinfo strips them when the 17th byte from the end is a
    // newline.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[16..modinfo.len() - 16]
    } else {
        modinfo
    };
    let modinfo = String::from_utf8_lossy(modinfo);
    let field = |key: &str| {
        modinfo.lines().find_map(|line| {
            let mut parts = line.split('\t');
            (parts.next() == Some(key))
                .then(|| parts.next().map(str::to_owned))
                .flatten()
        })
    };
    Ok(BuildInfo {
        version,
        main_path: field("path"),
        module_path: field("mod"),
    })
}

fn inline_string(data: &[u8]) -> Result<(&[u8], &[u8]), BuildInfoError> {
    let (len, used) = read_uvarint64(data).ok_or(BuildInfoError::Malformed)?;
    let len = usize::try_from(len).map_err(|_| BuildInfoError::Malformed)?;
    let bytes = data
        .get(used..)
        .and_then(|rest| rest.get(..len))
        .ok_or(BuildInfoError::Malformed)?;
    Ok((bytes, &data[used + len..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn blob(flags: u8, version: &str, modinfo: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(8);
        out.push(flags);
        out.resize(HEADER_SIZE, 0);
        for text in [version.as_bytes(), modinfo] {
            assert!(text.len() < 128, "one-byte uvarint in the test");
            out.push(text.len() as u8);
            out.extend_from_slice(text);
        }
        out
    }

    /// The real sentinels are binary (not UTF-8): cmd/go/internal/modload/build.go.
    const SENTINEL: &[u8; 16] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";

    #[test]
    fn reads_version_and_paths_between_sentinels() {
        let mut modinfo = SENTINEL.to_vec();
        modinfo.extend_from_slice(
            b"path\texample.com/relay\nmod\texample.com/relay\t(devel)\t\nbuild\t-trimpath=true\n",
        );
        modinfo.extend_from_slice(SENTINEL);
        let info = parse(&blob(FLAG_INLINE_STRINGS, "go1.27.3", &modinfo)).unwrap();
        assert_eq!(info.version.raw, "go1.27.3");
        assert_eq!(info.version.release(), (1, 27));
        assert_eq!(info.version.patch, 3);
        assert_eq!(info.main_path.as_deref(), Some("example.com/relay"));
        assert_eq!(info.module_path.as_deref(), Some("example.com/relay"));
    }

    #[test]
    fn refuses_pointer_format_big_endian_missing_and_truncated() {
        assert_eq!(
            parse(&blob(0, "go1.17", b"")),
            Err(BuildInfoError::PointerFormat)
        );
        assert_eq!(
            parse(&blob(
                FLAG_INLINE_STRINGS | FLAG_BIG_ENDIAN,
                "go1.21.0",
                b""
            )),
            Err(BuildInfoError::BigEndian)
        );
        assert_eq!(parse(b"\x7fELF"), Err(BuildInfoError::Missing));
        let mut cut = blob(FLAG_INLINE_STRINGS, "go1.27.3", b"");
        cut.truncate(HEADER_SIZE + 4);
        assert_eq!(parse(&cut), Err(BuildInfoError::Malformed));
        assert_eq!(parse(&cut[..20]), Err(BuildInfoError::Malformed));
    }

    #[test]
    fn versions() {
        let v = GoVersion::parse("go1.21.13").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 13));
        let v = GoVersion::parse("go1.22rc1").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 22, 0));
        let v = GoVersion::parse("go1.24.11 X:boringcrypto").unwrap();
        assert_eq!(v.release(), (1, 24));
        for bad in ["devel go1.27-abc", "", "go", "go1", "gox.y"] {
            assert!(
                matches!(GoVersion::parse(bad), Err(BuildInfoError::BadVersion(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn finds_the_magic_aligned() {
        let mut data = vec![0u8; 48];
        data.extend(blob(FLAG_INLINE_STRINGS, "go1.25.5", b""));
        assert_eq!(
            parse(find_magic(&data).unwrap()).unwrap().version.raw,
            "go1.25.5"
        );
        // Unaligned copies are not build info (debug/buildinfo only looks at 16-byte steps).
        let mut shifted = vec![0u8; 3];
        shifted.extend(blob(FLAG_INLINE_STRINGS, "go1.25.5", b""));
        assert!(find_magic(&shifted).is_none());
    }
}
