//! The Go-aware layer's binary reading: what the relay's executable is, where the functions the
//! uprobes need are, and how to name a PC, read from the file as released (stripped with
//! `-ldflags "-s -w"`, static or dynamic, PIE or not, Go 1.21 to 1.27).
//!
//! Sources, all of which stripping keeps: the Go version from `.go.buildinfo` (buildinfo.rs),
//! functions and file:line from `.gopclntab` (pclntab.rs, pcvalue.rs), the text start and
//! funcdata base from the moduledata (moduledata.rs; Go 1.26 stopped writing the text start in
//! the pclntab header), and the machine code itself (code.rs: prologue check and RET sites).
//! Which function each probe role is, per Go release, is a table (symbols.rs). The struct field
//! offsets the probes read come from the binary's DWARF when it has some, else from a table per
//! Go minor release generated from the DWARF of the matrix stubs (dwarf.rs, offsets.rs,
//! offsets.toml); with both, they must agree.
//!
//! Anything unexpected refuses the whole Go layer with one line ([`GoLayerRefusal`]); tracing
//! goes on with kernel signals. A wrong address would put a breakpoint in the middle of an
//! instruction of a production relay: refusing is always the safe answer.

// `tracer check --pid` uses the inspection today; the uprobes (issue 12) and the call-site
// symbolization (issue 13) use the rest when they land. Until then what only they use is unused.
#![allow(dead_code)]

pub mod buildinfo;
pub mod code;
pub mod dwarf;
pub mod elf;
pub mod h2mem;
pub mod moduledata;
pub mod offsets;
pub mod pclntab;
pub mod pcvalue;
pub mod symbolize;
pub mod symbols;

#[cfg(test)]
mod matrix_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use buildinfo::{BuildInfo, BuildInfoError};
use code::{CodeError, Prologue};
use elf::GoElf;
use moduledata::FunctabSpan;
use offsets::{OffsetTable, Offsets, OffsetsError};
use pclntab::{Function, PcHeader, Pclntab, PclntabError};
use symbolize::{GoFuncData, SymbolTable};
use symbols::Role;

/// Why the Go layer attaches nothing to a binary. Each reads as the end of the sentence
/// "Go layer off for pid N: ...".
#[derive(Debug, thiserror::Error)]
pub enum GoLayerRefusal {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not an ELF executable ({0})")]
    NotElf(String),
    #[error("not an x86-64 binary ({0}); the Go layer reads amd64 code only")]
    UnsupportedArch(String),
    #[error("not a Go binary (no .gopclntab)")]
    NotGo,
    #[error("a Go binary whose build info cannot be read: {0}")]
    BuildInfo(#[from] BuildInfoError),
    #[error("{0} is older than go1.21, the oldest Go the layer knows")]
    TooOld(String),
    #[error("{0} is newer than go1.27, the newest Go whose layout the layer knows")]
    TooNew(String),
    #[error("{version}: {source}")]
    Pclntab {
        version: String,
        source: PclntabError,
    },
    #[error("{0}: no moduledata matches the pclntab, so the text start is unknown")]
    TextStartNotFound(String),
    #[error("{version}: the pclntab says text starts at {header:#x}, the moduledata says {moduledata:#x}")]
    TextStartMismatch {
        version: String,
        header: u64,
        moduledata: u64,
    },
    #[error("{version} has no net/http client ({name} not found)")]
    NoHttpClient { version: String, name: &'static str },
    #[error("{version} has part of the HTTP/2 client but not {name}")]
    MissingFunction { version: String, name: &'static str },
    #[error("{version}: {function}: {source}")]
    Code {
        version: String,
        function: String,
        source: CodeError,
    },
    #[error("{version}: {source}")]
    Offsets {
        version: String,
        source: OffsetsError,
    },
}

impl GoLayerRefusal {
    /// The line for logs and `tracer check --pid`.
    pub fn line(&self, pid: u32) -> String {
        format!("Go layer off for pid {pid}: {self}; tracing with kernel signals only")
    }
}

/// A Go executable read from disk: its ELF layout, build info and symbols.
#[derive(Debug)]
pub struct GoImage {
    pub path: PathBuf,
    pub elf: GoElf,
    pub build: BuildInfo,
    pub symbols: Arc<SymbolTable>,
}

/// A uprobe location: a link-time address and the file offset tracefs and aya take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSite {
    pub address: u64,
    pub file_offset: u64,
}

/// Where a function's probes go: its entry (after the prologue check) and every RET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSites {
    pub function: Function,
    pub prologue: Prologue,
    pub entry: ProbeSite,
    pub returns: Vec<ProbeSite>,
}

/// Where the call-site probes of one role go (issue 13): each call to its function from
/// net/http, where the kernel emulates the instruction instead of single-stepping it (a
/// single step is a debug trap: ~20 us on a VM, against well under 1 us here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerSites {
    /// Each `call` of the function: its arguments are in registers (RAX the receiver).
    pub calls: Vec<ProbeSite>,
    /// After each call, the first branch with RAX (the first result) untouched since.
    pub branches: Vec<ProbeSite>,
    /// After a call in a wrapper that returns at once: the wrapper's RET (single-stepped).
    pub returns: Vec<ProbeSite>,
}

/// The packages whose functions call the round trips the call-site probes watch.
const CALLER_PACKAGES: &[&str] = &["net/http.", "net/http/"];

impl GoImage {
    /// Reads `path` (e.g. /proc/PID/exe). Refuses non-Go files, Go older than 1.21 and any
    /// table that does not check out; does not yet look for the probe functions.
    pub fn open(path: &Path) -> Result<Self, GoLayerRefusal> {
        let elf = GoElf::open(path)?;
        Self::from_elf(path.to_path_buf(), elf)
    }

    pub fn from_elf(path: PathBuf, elf: GoElf) -> Result<Self, GoLayerRefusal> {
        // Go's internal linker names it .data.rel.ro.gopclntab in a PIE before Go 1.26.
        let section = elf
            .section(".gopclntab")
            .or_else(|| elf.section(".data.rel.ro.gopclntab"))
            .ok_or(GoLayerRefusal::NotGo)?;
        let build = buildinfo::read(&elf)?;
        let version = build.version.raw.clone();
        if build.version.release() < symbols::OLDEST_KNOWN {
            return Err(GoLayerRefusal::TooOld(version));
        }
        let pclntab_error = |source| GoLayerRefusal::Pclntab {
            version: version.clone(),
            source,
        };
        let bytes = elf
            .section_bytes(section)
            .ok_or_else(|| pclntab_error(PclntabError::Corrupt("section outside the file".into())))?
            .to_vec();
        let header = PcHeader::parse(&bytes).map_err(pclntab_error)?;
        // Parse once against the header's text start to read the function table's span...
        let provisional = Pclntab::parse(bytes, header.text_start).map_err(pclntab_error)?;
        let span = FunctabSpan {
            first: offset_of(&provisional, 0),
            last: offset_of(&provisional, header.nfunc),
        };
        // ...then settle the text start from the moduledata.
        let module = moduledata::find(&elf, section.address, &header, &span, &build.version);
        let text = match (header.text_start, module) {
            (0, None) => return Err(GoLayerRefusal::TextStartNotFound(version)),
            (0, Some(module)) => module.text,
            (from_header, Some(module)) if module.text != from_header => {
                return Err(GoLayerRefusal::TextStartMismatch {
                    version,
                    header: from_header,
                    moduledata: module.text,
                })
            }
            (from_header, _) => from_header,
        };
        let pclntab = if text == header.text_start {
            provisional
        } else {
            Pclntab::parse(provisional.into_bytes(), text).map_err(pclntab_error)?
        };
        let gofunc = module.and_then(|m| m.gofunc).and_then(|address| {
            let section = elf.section_at(address)?;
            let all = elf.section_bytes(section)?;
            let skip = usize::try_from(address - section.address).ok()?;
            Some(GoFuncData {
                address,
                bytes: all.get(skip..)?.to_vec(),
            })
        });
        Ok(Self {
            path,
            elf,
            build,
            symbols: Arc::new(SymbolTable { pclntab, gofunc }),
        })
    }

    pub fn version(&self) -> &str {
        &self.build.version.raw
    }

    /// Functions by exact name, in one pass over the table.
    pub fn find_functions(&self, names: &[&str]) -> Result<Vec<Option<Function>>, GoLayerRefusal> {
        self.symbols
            .pclntab
            .find_many(names)
            .map_err(|source| GoLayerRefusal::Pclntab {
                version: self.version().to_owned(),
                source,
            })
    }

    /// The probe sites of `function`, after checking its prologue and decoding all of it.
    pub fn code_sites(&self, function: &Function) -> Result<CodeSites, CodeError> {
        let not_in_file = CodeError::NotInFile {
            entry: function.entry,
            end: function.end,
        };
        let code = self.code_of(function).ok_or(not_in_file.clone())?;
        let prologue = code::check_prologue(code, function.entry)?;
        let site = |address: u64| self.probe_site(address).ok_or(not_in_file.clone());
        let returns = code::ret_sites(code, function.entry)?
            .into_iter()
            .map(site)
            .collect::<Result<_, _>>()?;
        Ok(CodeSites {
            function: function.clone(),
            prologue,
            entry: site(function.entry)?,
            returns,
        })
    }

    /// A function's machine code as the file holds it, if it lies in an executable segment.
    fn code_of(&self, function: &Function) -> Option<&[u8]> {
        self.elf
            .read(function.entry, function.end.saturating_sub(function.entry))
            .filter(|_| self.elf.is_executable(function.entry))
    }

    /// The functions of net/http (and its internal packages): the round trips' callers.
    pub fn net_http_functions(&self) -> Result<Vec<Function>, GoLayerRefusal> {
        self.symbols
            .pclntab
            .with_prefix(CALLER_PACKAGES)
            .map_err(|source| GoLayerRefusal::Pclntab {
                version: self.version().to_owned(),
                source,
            })
    }

    fn probe_site(&self, address: u64) -> Option<ProbeSite> {
        self.elf.file_offset(address).map(|file_offset| ProbeSite {
            address,
            file_offset,
        })
    }

    /// Every call to `callee` from `functions` (`net_http_functions`), and (with `results`)
    /// where each call's result is seen (an error if one call has no such place). Callers
    /// are found by their bytes first (an `e8` whose rel32 lands on the callee), then decoded
    /// whole from their checked prologue, so every site is an instruction boundary.
    pub fn callers_of(
        &self,
        functions: &[Function],
        callee: &Function,
        results: bool,
    ) -> Result<CallerSites, GoLayerRefusal> {
        let refusal = |function: &str, source| GoLayerRefusal::Code {
            version: self.version().to_owned(),
            function: function.to_owned(),
            source,
        };
        let mut sites = CallerSites::default();
        for function in functions {
            let Some(code) = self.code_of(function) else {
                continue;
            };
            if !may_call(code, function.entry, callee.entry) {
                continue;
            }
            code::check_prologue(code, function.entry)
                .map_err(|source| refusal(&function.name, source))?;
            let not_in_file = |at: u64| {
                refusal(
                    &function.name,
                    CodeError::NotInFile {
                        entry: at,
                        end: at + 1,
                    },
                )
            };
            for (call, after) in code::calls_to(code, function.entry, callee.entry)
                .map_err(|source| refusal(&function.name, source))?
            {
                sites
                    .calls
                    .push(self.probe_site(call).ok_or_else(|| not_in_file(call))?);
                if !results {
                    continue;
                }
                let after = after.map_err(|source| refusal(&function.name, source))?;
                let (list, at) = match after {
                    code::AfterCall::Branch(at) => (&mut sites.branches, at),
                    code::AfterCall::Ret(at) => (&mut sites.returns, at),
                };
                list.push(self.probe_site(at).ok_or_else(|| not_in_file(at))?);
            }
        }
        Ok(sites)
    }
}

/// Whether `code` at `entry` holds the bytes of a `call rel32` to `target` anywhere (a cheap
/// filter before decoding; a match inside another instruction is then told apart).
fn may_call(code: &[u8], entry: u64, target: u64) -> bool {
    code.windows(code::CALL_REL32_LEN)
        .enumerate()
        .any(|(i, w)| {
            let rel = i32::from_le_bytes([w[1], w[2], w[3], w[4]]);
            w[0] == 0xe8
                && (entry + i as u64 + code::CALL_REL32_LEN as u64)
                    .wrapping_add_signed(i64::from(rel))
                    == target
        })
}

fn offset_of(table: &Pclntab, index: usize) -> u32 {
    // entry_of is text_start + entryoff; the provisional table's text start may be zero.
    let entry = if index < table.function_count() {
        table.entry_of(index).unwrap_or_default()
    } else {
        table.text_end()
    };
    u32::try_from(entry - table.text_start()).unwrap_or(u32::MAX)
}

/// A Go relay binary the Go layer can probe: every role's function found and checked.
#[derive(Debug)]
pub struct GoBinary {
    pub image: GoImage,
    pub probes: Vec<(Role, CodeSites)>,
    /// The HTTP/2 client is linked (not built with the `nethttpomithttp2` tag).
    pub http2: bool,
    /// The struct field offsets the probes read, and where they came from.
    pub offsets: Offsets,
    /// Where the call-site probes go for each round trip, or why they cannot (then call
    /// sites are off and streams still work).
    pub call_sites: Result<Vec<(Role, CallerSites)>, String>,
}

impl GoBinary {
    pub fn probe(&self, role: Role) -> Option<&CodeSites> {
        self.probes
            .iter()
            .find_map(|(r, sites)| (*r == role).then_some(sites))
    }

    /// Where `role`'s call-site probes go (its callers), or why there are none.
    pub fn callers(&self, role: Role) -> Result<&CallerSites, String> {
        let all = self.call_sites.as_ref().map_err(Clone::clone)?;
        all.iter()
            .find_map(|(r, sites)| (*r == role).then_some(sites))
            .ok_or_else(|| format!("no {role:?} function to find the callers of"))
    }

    /// Where `--go-probes sites` would put the call-site probes, or why it cannot.
    pub fn call_sites_line(&self) -> String {
        let count = |role| {
            self.callers(role)
                .map(|c| (c.calls.len(), c.branches.len(), c.returns.len()))
        };
        match (
            count(Role::H1RoundTrip),
            self.http2.then(|| count(Role::H2RoundTrip)),
        ) {
            (Ok((h1, _, _)), h2) => {
                let h2 = match h2 {
                    Some(Ok((_, branches, rets))) => format!(
                        "; HTTP/2: {branches} branch(es) after the round trip's calls{}",
                        if rets > 0 {
                            format!(" and {rets} wrapper RET(s) (single-stepped, off the Transport's path)")
                        } else {
                            String::new()
                        }
                    ),
                    Some(Err(why)) => format!("; HTTP/2: none ({why})"),
                    None => String::new(),
                };
                format!("call sites (--go-probes sites): HTTP/1.1: {h1} call(s) of the round trip{h2}, on instructions the kernel emulates")
            }
            (Err(why), _) => format!("call sites (--go-probes sites) cannot attach: {why}"),
        }
    }

    /// "Go layer: /proc/123/exe is go1.27.3 (stripped, static, non-PIE): HTTP/1.1 and HTTP/2
    /// round trips found, prologues ok, offsets from the go1.27 table".
    pub fn line(&self) -> String {
        format!(
            "Go layer: {} is {} ({}): {}, prologues ok, {}",
            self.image.path.display(),
            self.image.version(),
            self.image.elf.describe_form(),
            if self.http2 {
                "HTTP/1.1 and HTTP/2 round trips found"
            } else {
                "HTTP/1.1 round trip found, no HTTP/2 client linked"
            },
            self.offsets.describe()
        )
    }
}

/// Reads the binary at `path` and finds and checks every function the Go layer probes.
pub fn inspect(path: &Path) -> Result<GoBinary, GoLayerRefusal> {
    inspect_image(GoImage::open(path)?)
}

pub fn inspect_image(image: GoImage) -> Result<GoBinary, GoLayerRefusal> {
    let table = OffsetTable::embedded().map_err(|source| GoLayerRefusal::Offsets {
        version: image.version().to_owned(),
        source,
    })?;
    inspect_image_with(image, table)
}

/// [`inspect_image`] with another offsets table (tests: an edited copy must be caught).
pub fn inspect_image_with(image: GoImage, table: &OffsetTable) -> Result<GoBinary, GoLayerRefusal> {
    let version = image.build.version.clone();
    if version.release() > symbols::NEWEST_KNOWN {
        return Err(GoLayerRefusal::TooNew(version.raw));
    }
    let mut names = Vec::new();
    for role in Role::ALL {
        // Every known release has a name for every role (symbols.rs tests that).
        let name =
            symbols::name_of(role, &version).ok_or(GoLayerRefusal::TooNew(version.raw.clone()))?;
        names.push((role, name));
    }
    let found = image.find_functions(&names.iter().map(|(_, name)| *name).collect::<Vec<_>>())?;
    let mut probes = Vec::new();
    let mut missing_h2 = None;
    for ((role, name), function) in names.iter().zip(found) {
        let Some(function) = function else {
            if *role == Role::H1RoundTrip {
                return Err(GoLayerRefusal::NoHttpClient {
                    version: version.raw,
                    name,
                });
            }
            missing_h2.get_or_insert(*name);
            continue;
        };
        let sites = image
            .code_sites(&function)
            .map_err(|source| GoLayerRefusal::Code {
                version: version.raw.clone(),
                function: function.name.clone(),
                source,
            })?;
        probes.push((*role, sites));
    }
    let h2_found = probes
        .iter()
        .filter(|(role, _)| *role != Role::H1RoundTrip)
        .count();
    if let Some(name) = missing_h2 {
        if h2_found > 0 {
            return Err(GoLayerRefusal::MissingFunction {
                version: version.raw,
                name,
            });
        }
    }
    let http2 = h2_found > 0;
    let offsets =
        offsets::resolve(&image, http2, table).map_err(|source| GoLayerRefusal::Offsets {
            version: version.raw.clone(),
            source,
        })?;
    // One pass over the function table for both round trips' callers.
    let callers = image.net_http_functions().map_err(|e| e.to_string());
    let call_sites = probes
        .iter()
        .filter(|(role, _)| matches!(role, Role::H1RoundTrip | Role::H2RoundTrip))
        .map(|(role, sites)| {
            let functions = callers.as_ref().map_err(Clone::clone)?;
            let callers = image
                .callers_of(functions, &sites.function, *role == Role::H2RoundTrip)
                .map_err(|e| e.to_string())?;
            if callers.calls.is_empty() {
                return Err(format!(
                    "{}: no call to {} found in net/http",
                    version.raw, sites.function.name
                ));
            }
            Ok((*role, callers))
        })
        .collect();
    Ok(GoBinary {
        image,
        probes,
        http2,
        offsets,
        call_sites,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_non_go_binary_is_refused_in_one_line() {
        let err = inspect(Path::new("/bin/ls")).unwrap_err();
        assert!(matches!(err, GoLayerRefusal::NotGo), "{err:?}");
        assert_eq!(
            err.line(123),
            "Go layer off for pid 123: not a Go binary (no .gopclntab); tracing with kernel signals only"
        );
    }

    #[test]
    fn unreadable_and_non_elf_files_are_refused() {
        let err = inspect(Path::new("/nonexistent/relay")).unwrap_err();
        assert!(matches!(err, GoLayerRefusal::Unreadable { .. }), "{err:?}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("relay.sh");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 1\n").unwrap();
        let err = inspect(&script).unwrap_err();
        assert!(matches!(err, GoLayerRefusal::NotElf(_)), "{err:?}");
        assert!(
            err.line(7).contains("not an ELF executable"),
            "{}",
            err.line(7)
        );
    }

    #[test]
    fn refusal_lines_name_the_version_and_the_cause() {
        assert_eq!(
            GoLayerRefusal::TooOld("go1.20.5".into()).line(9),
            "Go layer off for pid 9: go1.20.5 is older than go1.21, the oldest Go the layer knows; tracing with kernel signals only"
        );
        let err = GoLayerRefusal::Pclntab {
            version: "go1.27.3".into(),
            source: PclntabError::UnknownMagic(0xfffffff2),
        };
        assert_eq!(
            err.line(9),
            "Go layer off for pid 9: go1.27.3: unknown pclntab magic 0xfffffff2; tracing with kernel signals only"
        );
    }
}
