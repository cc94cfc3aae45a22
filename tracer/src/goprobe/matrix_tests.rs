//! The Go matrix: goprobe against real binaries from every Go release it supports, checked
//! against ground truth that does not come from goprobe (`go tool nm` of the unstripped twin,
//! and what the stub's own runtime said about its PCs).
//!
//! The binaries come from `cargo xtask go-matrix` (xtask/src/gomatrix.rs), found through
//! GO_MATRIX_DIR. Under CI=true a missing matrix fails; elsewhere the test skips and says why.
#![allow(clippy::unwrap_used)] // tests: a panic with a message is the failure report

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::buildinfo::GoVersion;
use super::code::RET_BYTE;
use super::elf::GoElf;
use super::offsets::{self, Offsets};
use super::symbols::{self, Role};
use super::*;

/// Checked by address against `go tool nm` besides the probe roles; the main.* ones also get
/// the prologue and RET checks (runtime.goexit is assembly: `nop; call goexit1`, no prologue,
/// no RET, and never probed).
const ALSO: &[&str] = &[
    "runtime.goexit",
    "main.main",
    "main.leaf",
    "main.middle",
    "main.(*roundTripper).get",
];

fn matrix_dir() -> Option<PathBuf> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let reason = match std::env::var_os("GO_MATRIX_DIR") {
        Some(dir) if Path::new(&dir).is_dir() => return Some(dir.into()),
        Some(dir) => format!("GO_MATRIX_DIR={} is not a directory", dir.to_string_lossy()),
        None => "GO_MATRIX_DIR is not set".to_owned(),
    };
    let reason = format!("the Go matrix test needs the matrix: {reason} (run: cargo xtask go-matrix, which prints the GO_MATRIX_DIR to use)");
    if in_ci {
        panic!("{reason}; under CI=true this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

struct Build {
    version: String,
    form: String,
    dir: PathBuf,
}

fn builds(matrix: &Path) -> Vec<Build> {
    let mut builds = Vec::new();
    let mut versions: Vec<_> = std::fs::read_dir(matrix)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("stub/goversion").is_file())
        .collect();
    versions.sort();
    for version_dir in versions {
        let stub = version_dir.join("stub");
        let version = std::fs::read_to_string(stub.join("goversion"))
            .unwrap()
            .trim()
            .to_owned();
        let mut forms: Vec<_> = std::fs::read_dir(&stub)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.join("built-from").is_file())
            .collect();
        forms.sort();
        for dir in forms {
            builds.push(Build {
                version: version.clone(),
                form: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
            });
        }
    }
    // A matrix with nothing built would make every test here pass without checking anything.
    assert!(
        !builds.is_empty(),
        "no stub builds under {}",
        matrix.display()
    );
    builds
}

/// `go tool nm` lines: "  6963a0 T main.main". ABI0 assembly functions are listed with an
/// `.abi0` suffix that .gopclntab does not have.
fn nm_entries(text: &str) -> HashMap<String, u64> {
    let mut entries = HashMap::new();
    for line in text.lines() {
        let mut parts = line.trim_start().splitn(3, ' ');
        let (Some(address), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if kind != "T" && kind != "t" {
            continue;
        }
        let Ok(address) = u64::from_str_radix(address, 16) else {
            continue;
        };
        let name = name.strip_suffix(".abi0").unwrap_or(name);
        entries.entry(name.to_owned()).or_insert(address);
    }
    entries
}

/// A line the stub printed: `truth|stack <pc-anchor> <function> <file> <line>`.
#[derive(Debug)]
struct Truth {
    kind: String,
    pc_from_anchor: i64,
    function: String,
    file: String,
    line: u32,
}

fn truths(text: &str) -> Vec<Truth> {
    text.lines()
        .filter(|line| line.starts_with("truth ") || line.starts_with("stack "))
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(
                parts.len(),
                5,
                "a truth line with spaces in a name? {line:?}"
            );
            Truth {
                kind: parts[0].to_owned(),
                pc_from_anchor: parts[1].parse().unwrap(),
                function: parts[2].to_owned(),
                file: parts[3].to_owned(),
                line: parts[4].parse().unwrap(),
            }
        })
        .collect()
}

fn same_frame(frame: &symbolize::Frame, truth: &Truth) -> bool {
    frame.function == truth.function && frame.file == truth.file && frame.line == truth.line
}

/// Checks one binary; returns how long opening and inspecting it took and its size.
fn check_binary(
    build: &Build,
    binary: &str,
    nm: &HashMap<String, u64>,
    lines: &[Truth],
    twin: &Offsets,
) -> (Duration, u64) {
    let path = build.dir.join(binary);
    let what = format!(
        "go{}/{}/{binary}",
        build.version.trim_start_matches("go"),
        build.form
    );
    let started = Instant::now();
    let go = inspect(&path).unwrap_or_else(|err| panic!("{what}: {}", err.line(0)));
    let elapsed = started.elapsed();
    let file = std::fs::read(&path).unwrap();
    let image = &go.image;

    // (a) the version is the toolchain's.
    assert_eq!(image.version(), build.version, "{what}: version");
    assert_eq!(
        image.build.module_path.as_deref(),
        Some("example.com/gostub"),
        "{what}: module path"
    );
    assert_eq!(
        image.elf.has_symtab,
        binary == "full",
        "{what}: stripped or not"
    );
    assert!(go.http2, "{what}: the HTTP/2 client is linked");
    let (static_linked, pie) = match build.form.as_str() {
        "default" | "trimpath" | "static-external" => (true, false),
        "dynamic" => (false, false),
        "pie" => (false, true),
        other => panic!("unknown form {other}"),
    };
    assert_eq!(image.elf.static_linked, static_linked, "{what}: static");
    assert_eq!(image.elf.pie, pie, "{what}: PIE");
    let line = go.line();
    let release = offsets::release_of(&image.build.version);
    let source = if binary == "full" {
        "offsets from DWARF".to_owned()
    } else {
        format!("offsets from the {release} table")
    };
    assert!(
        line.ends_with(&format!(
            "HTTP/1.1 and HTTP/2 round trips found, prologues ok, {source}"
        )),
        "{line}"
    );
    // (e) struct offsets: a stripped build's (from the table) are its unstripped twin's DWARF's,
    // and so are an unstripped build's (from its own DWARF, cross-checked with the table).
    for &field in offsets::Field::ALL {
        assert_eq!(
            go.offsets.get(field),
            twin.get(field),
            "{what}: {} ({})",
            field.key(),
            go.offsets.describe()
        );
    }

    // (b) entries equal `go tool nm` of the unstripped build; (d) prologues and RETs.
    let version = &image.build.version;
    for role in Role::ALL {
        let name = symbols::name_of(role, version).unwrap();
        let sites = go
            .probe(role)
            .unwrap_or_else(|| panic!("{what}: {role:?} ({name}) not found"));
        assert_eq!(sites.function.name, name);
        let want = nm
            .get(name)
            .unwrap_or_else(|| panic!("{what}: go tool nm has no {name}"));
        assert_eq!(sites.function.entry, *want, "{what}: entry of {name}");
        check_sites(&what, sites, &file);
        if build.form == "default" && binary == "stripped" {
            eprintln!(
                "{what}: {name}: {} bytes, prologue {}, {} RETs",
                sites.function.end - sites.function.entry,
                sites.prologue.describe(),
                sites.returns.len()
            );
        }
    }
    // (d') call sites: every call of the round trips from net/http is a `call rel32` to the
    // function's entry, and where its result is seen is an instruction the kernel emulates
    // (jcc, jmp, call) or, in a wrapper, a RET; the common path (Transport.RoundTripOpt)
    // has a branch in every release.
    for role in [Role::H1RoundTrip, Role::H2RoundTrip] {
        let entry = go.probe(role).unwrap().function.entry;
        let callers = go
            .callers(role)
            .unwrap_or_else(|why| panic!("{what}: {role:?} callers: {why}"));
        assert!(!callers.calls.is_empty(), "{what}: {role:?}: no call");
        for call in &callers.calls {
            let at = call.file_offset as usize;
            assert_eq!(file[at], 0xe8, "{what}: call byte at {:#x}", call.address);
            let rel = i32::from_le_bytes(file[at + 1..at + 5].try_into().unwrap());
            assert_eq!(
                (call.address + 5).wrapping_add_signed(i64::from(rel)),
                entry,
                "{what}: the call at {:#x} calls the {role:?} function",
                call.address
            );
        }
        if role == Role::H2RoundTrip {
            assert!(
                !callers.branches.is_empty(),
                "{what}: no branch after a call"
            );
            for branch in &callers.branches {
                let bytes = &file[branch.file_offset as usize..][..2];
                let emulated = matches!(bytes[0], 0x70..=0x7f | 0xe8 | 0xe9 | 0xeb)
                    || bytes[0] == 0x0f && (0x80..=0x8f).contains(&bytes[1]);
                assert!(emulated, "{what}: {bytes:02x?} at {:#x}", branch.address);
            }
            for ret in &callers.returns {
                assert_eq!(file[ret.file_offset as usize], RET_BYTE, "{what}");
            }
            assert_eq!(
                callers.calls.len(),
                callers.branches.len() + callers.returns.len(),
                "{what}: one site after each call"
            );
        } else {
            assert!(callers.branches.is_empty() && callers.returns.is_empty());
        }
        if build.form == "default" && binary == "stripped" {
            eprintln!(
                "{what}: {role:?}: {} calls, {} branches after, {} wrapper RETs",
                callers.calls.len(),
                callers.branches.len(),
                callers.returns.len()
            );
        }
    }
    let sites_line = go.call_sites_line();
    assert!(
        sites_line.starts_with("call sites (--go-probes sites): HTTP/1.1: 1 call(s) of the round trip; HTTP/2: 1 branch(es) after")
            && sites_line.ends_with("on instructions the kernel emulates"),
        "{what}: {sites_line}"
    );
    let found = image.find_functions(ALSO).unwrap();
    for (name, function) in ALSO.iter().zip(found) {
        let function = function.unwrap_or_else(|| panic!("{what}: {name} not found"));
        let want = nm
            .get(*name)
            .unwrap_or_else(|| panic!("{what}: go tool nm has no {name}"));
        assert_eq!(function.entry, *want, "{what}: entry of {name}");
        if name.starts_with("main.") {
            let sites = image
                .code_sites(&function)
                .unwrap_or_else(|err| panic!("{what}: {name}: {err}"));
            check_sites(&what, &sites, &file);
        }
    }

    // (c) PC -> function, file:line equals what the stub's runtime said, inlined frames too.
    let main_entry = image.find_functions(&["main.main"]).unwrap()[0]
        .as_ref()
        .unwrap()
        .entry;
    let pc_of = |truth: &Truth| main_entry.checked_add_signed(truth.pc_from_anchor).unwrap();
    let table = &image.symbols;
    assert!(
        table.gofunc.is_some(),
        "{what}: funcdata (inline trees) found"
    );
    let mut checked = 0;
    for (i, truth) in lines.iter().enumerate() {
        // A return address: the call is at pc - 1, as in Go's own traceback.
        let frames = table.frames_at(pc_of(truth) - 1).unwrap();
        assert!(
            frames.first().is_some_and(|frame| same_frame(frame, truth)),
            "{what}: pc main.main{:+} is {truth:?}, goprobe says {frames:?}",
            truth.pc_from_anchor
        );
        if truth.kind == "stack" {
            // runtime.Callers lists an inlined call's parents as lines of their own; goprobe
            // expands them from the one physical return address.
            for (depth, frame) in frames.iter().enumerate().skip(1) {
                let parent = &lines[i + depth];
                assert!(
                    parent.kind == "stack" && same_frame(frame, parent),
                    "{what}: inlined parent {depth} of {truth:?} is {parent:?}, goprobe says {frame:?}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "{what}: only {checked} truth lines");
    assert!(
        lines.iter().any(|t| t.function == "main.inlined"),
        "{what}: the stub's inlined frame"
    );

    // The per-PC symbolizer gives the same frames (bias 0: link-time addresses).
    let mut symbolizer = symbolize::Symbolizer::new(Arc::clone(table), 0);
    let leaf = lines.iter().find(|t| t.kind == "stack").unwrap();
    let frames = symbolizer.return_address(pc_of(leaf));
    assert!(same_frame(&frames[0], leaf), "{what}: symbolizer");
    (elapsed, file.len() as u64)
}

/// (d): every RET site is inside the function and is a 0xc3 byte at its file offset in the
/// file as read here, and the entry's file offset is where the entry's bytes are.
fn check_sites(what: &str, sites: &CodeSites, file: &[u8]) {
    let function = &sites.function;
    assert!(
        !sites.returns.is_empty(),
        "{what}: {} has no RET",
        function.name
    );
    for ret in &sites.returns {
        assert!(
            ret.address > function.entry && ret.address < function.end,
            "{what}: RET {:#x} outside {} {:#x}..{:#x}",
            ret.address,
            function.name,
            function.entry,
            function.end
        );
        assert_eq!(
            file[ret.file_offset as usize], RET_BYTE,
            "{what}: byte at the RET site {:#x} of {}",
            ret.address, function.name
        );
        assert_eq!(
            ret.file_offset - sites.entry.file_offset,
            ret.address - function.entry
        );
    }
}

#[test]
fn every_go_release_and_form_reads_right() {
    let Some(matrix) = matrix_dir() else {
        return;
    };
    let builds = builds(&matrix);
    let mut versions: Vec<&str> = builds.iter().map(|b| b.version.as_str()).collect();
    versions.dedup();
    let mut slowest = (Duration::ZERO, 0, String::new());
    for build in &builds {
        let nm = nm_entries(&std::fs::read_to_string(build.dir.join("full.nm")).unwrap());
        let truth = truths(&std::fs::read_to_string(build.dir.join("truth")).unwrap());
        let twin = dwarf_offsets(&build.dir.join("full"));
        for binary in ["stripped", "full"] {
            let (elapsed, size) = check_binary(build, binary, &nm, &truth, &twin);
            if elapsed > slowest.0 {
                slowest = (
                    elapsed,
                    size,
                    format!("{}/{}/{binary}", build.version, build.form),
                );
            }
        }
    }
    eprintln!(
        "go matrix: {} builds x 2 checked ({}); slowest inspect: {:?} for {} ({:.1} MB)",
        builds.len(),
        versions.join(", "),
        slowest.0,
        slowest.2,
        slowest.1 as f64 / 1e6
    );
    // Issue 12's minimum: 1.21, 1.24 (Swiss maps), 1.26 (no text start in the pclntab header)
    // and 1.27 (net/http/internal/http2).
    for release in ["go1.21.", "go1.24.", "go1.26.", "go1.27."] {
        assert!(
            versions.iter().any(|v| v.starts_with(release)),
            "the matrix has no {release}x: {versions:?}"
        );
    }
}

/// Damaged real binaries: each refuses with its own reason, none panics.
#[test]
fn damaged_binaries_are_refused() {
    let Some(matrix) = matrix_dir() else {
        return;
    };
    let builds = builds(&matrix);
    for build in &builds {
        if build.form != "default" && build.form != "pie" {
            continue;
        }
        let path = build.dir.join("stripped");
        let data = std::fs::read(&path).unwrap();
        let elf = GoElf::parse(data.clone()).unwrap();
        let section = |name: &str| {
            elf.section(name)
                .or_else(|| elf.section(&format!(".data.rel.ro{name}")))
                .map(|s| (s.file_offset as usize, s.size as usize))
                .unwrap()
        };
        let (pclntab, pclntab_size) = section(".gopclntab");
        let (buildinfo, buildinfo_size) = section(".go.buildinfo");
        let open = |data: Vec<u8>| {
            GoImage::from_elf(path.clone(), GoElf::parse(data).unwrap()).and_then(inspect_image)
        };
        let what = format!("{}/{}", build.version, build.form);

        let mut bad_magic = data.clone();
        bad_magic[pclntab..pclntab + 4].copy_from_slice(&0xffff_fff2u32.to_le_bytes());
        let err = open(bad_magic).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("unknown pclntab magic 0xfffffff2"),
            "{what}: {err}"
        );

        let mut old = data.clone();
        let blob = &mut old[buildinfo..buildinfo + buildinfo_size];
        let at = blob
            .windows(build.version.len())
            .position(|w| w == build.version.as_bytes())
            .unwrap();
        // Same length, so the uvarint length stays right: "go1.2x.y" -> "go1.20.y".
        blob[at + 5] = b'0';
        let err = open(old).unwrap_err();
        assert!(matches!(err, GoLayerRefusal::TooOld(_)), "{what}: {err}");

        let mut no_module = data.clone();
        for name in [".go.module", ".noptrdata"] {
            if let Some(s) = elf.section(name) {
                let start = s.file_offset as usize;
                no_module[start..start + s.size as usize].fill(0);
            }
        }
        let from_126 = GoVersion::parse(&build.version).unwrap().release() >= (1, 26);
        match open(no_module) {
            // From 1.26 the text start is only in the moduledata.
            Err(GoLayerRefusal::TextStartNotFound(_)) if from_126 => {}
            // Before, the header has it; without funcdata only inline names are lost.
            Ok(go) if !from_126 => assert!(go.image.symbols.gofunc.is_none(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }

        // Garbage over the middle of the pclntab (function records, pc tables): a refusal or
        // a table whose lookups fail cleanly, never a panic.
        for fill in [0x00u8, 0xff, 0x80] {
            let mut garbage = data.clone();
            let start = pclntab + pclntab_size / 3;
            garbage[start..start + pclntab_size / 3].fill(fill);
            if let Ok(go) = open(garbage) {
                let table = &go.image.symbols;
                for i in (0..table.pclntab.function_count()).step_by(97) {
                    if let Ok(entry) = table.pclntab.entry_of(i) {
                        let _ = table.frames_at(entry + 5);
                    }
                }
            }
        }
    }
}

/// The toolchains' own binaries: cmd/go (17 MB in 1.27, a net/http client built by the Go
/// team's release process) must inspect cleanly; the compiler has no HTTP client and must say
/// so. Prints how long reading each took.
#[test]
fn toolchain_binaries_inspect_or_refuse_clearly() {
    let Some(matrix) = matrix_dir() else {
        return;
    };
    let mut versions: Vec<_> = std::fs::read_dir(&matrix)
        .unwrap()
        .map(|entry| entry.unwrap().path().join("stub"))
        .filter(|stub| stub.join("goroot").is_file())
        .collect();
    versions.sort();
    assert!(
        !versions.is_empty(),
        "no goroot files under {}",
        matrix.display()
    );
    for stub in versions {
        let goroot = PathBuf::from(std::fs::read_to_string(stub.join("goroot")).unwrap());
        let version = std::fs::read_to_string(stub.join("goversion")).unwrap();
        let version = version.trim();

        let go = goroot.join("bin/go");
        let size = std::fs::metadata(&go).unwrap().len();
        let started = Instant::now();
        let binary = inspect(&go).unwrap_or_else(|err| panic!("{}", err.line(0)));
        let elapsed = started.elapsed();
        assert_eq!(binary.image.version(), version);
        eprintln!(
            "{} ({:.1} MB, {} functions) in {elapsed:?}",
            binary.line(),
            size as f64 / 1e6,
            binary.image.symbols.pclntab.function_count()
        );

        let compile = goroot.join("pkg/tool/linux_amd64/compile");
        match inspect(&compile) {
            Err(err @ GoLayerRefusal::NoHttpClient { .. }) => {
                eprintln!("{}", err.line(0));
                assert!(err.to_string().starts_with(version), "{err}");
            }
            other => panic!(
                "{}: expected no HTTP client, got {other:?}",
                compile.display()
            ),
        }
    }
}

/// The toolchain directories of GO_MATRIX_DIR and, when set, GO_OFFSETS_EXTRA_DIR (more patch
/// releases of the same minors, `cargo xtask go-offsets --also 1.27.0`): (goversion, stub dir).
fn offset_sources(matrix: &Path) -> Vec<(GoVersion, PathBuf)> {
    let mut dirs = vec![matrix.to_path_buf()];
    if let Some(extra) = std::env::var_os("GO_OFFSETS_EXTRA_DIR") {
        dirs.push(extra.into());
    }
    let mut sources = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let stub = entry.unwrap().path().join("stub");
            let Ok(version) = std::fs::read_to_string(stub.join("goversion")) else {
                continue;
            };
            sources.push((GoVersion::parse(version.trim()).unwrap(), stub));
        }
    }
    sources.sort_by_key(|(v, _)| (v.major, v.minor, v.patch));
    sources
}

/// The offsets of `full` (an unstripped stub) from its own DWARF.
fn dwarf_offsets(full: &Path) -> Offsets {
    let image = GoImage::open(full).unwrap_or_else(|err| panic!("{}", err.line(0)));
    let dwarf = dwarf::DwarfTypes::read(&image.elf)
        .unwrap_or_else(|err| panic!("{}: {err}", full.display()))
        .unwrap_or_else(|| panic!("{}: no DWARF", full.display()));
    offsets::from_dwarf(&dwarf, &image.build.version, true)
        .unwrap_or_else(|err| panic!("{}: {err}", full.display()))
}

/// The table's text, generated from the DWARF of each toolchain's unstripped stub (default
/// form). Patch releases of one minor must agree field by field, or this fails.
fn generated_table(matrix: &Path) -> String {
    let mut rows: std::collections::BTreeMap<(u32, u32), (Vec<String>, Offsets)> =
        Default::default();
    for (version, stub) in offset_sources(matrix) {
        let found = dwarf_offsets(&stub.join("default/full"));
        match rows.entry(version.release()) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert((vec![version.raw.clone()], found));
            }
            std::collections::btree_map::Entry::Occupied(mut row) => {
                let (from, first) = row.get_mut();
                for &field in offsets::Field::ALL {
                    assert_eq!(
                        found.get(field),
                        first.get(field),
                        "{} and {} differ in {}: one table per minor release is wrong here",
                        version.raw,
                        from[0],
                        field.key()
                    );
                }
                from.push(version.raw.clone());
            }
        }
    }
    let mut text = String::from(
        "# Struct field offsets per Go minor release, for relay binaries without DWARF (stripped\n\
         # with -ldflags \"-s -w\"), embedded in the tracer. Generated by `cargo xtask go-offsets`\n\
         # from the DWARF of tests/gostub built unstripped by each toolchain in `from` (patch\n\
         # releases listed together agreed on every field). Regenerate, do not edit by hand.\n\
         # Keys and the Go type each lives in: tracer/src/goprobe/offsets.rs (Field).\n",
    );
    for ((major, minor), (from, found)) in rows {
        let from: Vec<String> = from.iter().map(|v| format!("{v:?}")).collect();
        text.push_str(&format!(
            "\n[\"go{major}.{minor}\"]\nfrom = [{}]\n\n[\"go{major}.{minor}\".fields]\n",
            from.join(", ")
        ));
        for &field in offsets::Field::ALL {
            if !field.applies(minor) {
                continue;
            }
            text.push_str(&format!(
                "{:?} = {}\n",
                field.key(),
                found.get(field).unwrap()
            ));
        }
    }
    text
}

/// `cargo xtask go-offsets` runs this with GO_OFFSETS_WRITE=1 to (re)write offsets.toml; without
/// it, it fails when the checked-in offsets are not what the matrix's DWARF says.
#[test]
#[ignore = "generator: cargo xtask go-offsets"]
fn generate_offsets_table() {
    let Some(matrix) = matrix_dir() else {
        return;
    };
    let text = generated_table(&matrix);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/goprobe/offsets.toml");
    if std::env::var("GO_OFFSETS_WRITE").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
        eprintln!("go-offsets: wrote {}", path.display());
    } else {
        // Offsets only: `from` lists whatever patch releases the last writer compared.
        let checked_in = std::fs::read_to_string(&path).unwrap();
        assert!(
            offsets::OffsetTable::parse(&checked_in).unwrap()
                == offsets::OffsetTable::parse(&text).unwrap(),
            "{} is not what the matrix's DWARF says; regenerate: cargo xtask go-offsets",
            path.display()
        );
    }
}

/// The offsets table against the DWARF of every build: an edited table (one offset off, a
/// different field for each build so all get their turn) is caught on every unstripped
/// binary; a release missing from the table refuses, stripped or not; so does a binary that
/// says it is go1.28. And the DWARF reader's own refusals on a real binary.
#[test]
fn offsets_tables_are_checked_against_dwarf() {
    let Some(matrix) = matrix_dir() else {
        return;
    };
    let builds = builds(&matrix);
    let table = offsets::OffsetTable::embedded().unwrap();
    let fields = offsets::Field::ALL;
    let mut caught = std::collections::BTreeSet::new();
    for (i, build) in builds.iter().enumerate() {
        let what = format!("{}/{}", build.version, build.form);
        let release = offsets::release_of(&GoVersion::parse(&build.version).unwrap());
        let open = |binary: &str| GoImage::open(&build.dir.join(binary)).unwrap();

        let minor = GoVersion::parse(&build.version).unwrap().release().1;
        let applicable: Vec<_> = fields
            .iter()
            .copied()
            .filter(|f| f.applies(minor))
            .collect();
        // The first field no build has had edited yet (fields of one map layout apply to
        // some releases only).
        let field = applicable
            .iter()
            .copied()
            .find(|f| !caught.contains(f.key()))
            .unwrap_or(applicable[i % applicable.len()]);
        let right = table
            .lookup(&GoVersion::parse(&build.version).unwrap())
            .unwrap()
            .get(field)
            .unwrap();
        let edited = table.with_offset(&release, field, right + 8);
        match inspect_image_with(open("full"), &edited) {
            Err(GoLayerRefusal::Offsets {
                source:
                    offsets::OffsetsError::Mismatch {
                        field: key,
                        dwarf,
                        table,
                        ..
                    },
                ..
            }) if key == field.key() && dwarf == right && table == right + 8 => {
                caught.insert(field.key());
            }
            other => panic!(
                "{what}: an edited {} was not caught: {other:?}",
                field.key()
            ),
        }
        // Without DWARF the table is all there is: which is why this test checks it.
        let stripped = inspect_image_with(open("stripped"), &edited).unwrap();
        assert_eq!(stripped.offsets.get(field), Some(right + 8), "{what}");

        let without = table.without(&release);
        for binary in ["full", "stripped"] {
            let err = inspect_image_with(open(binary), &without).unwrap_err();
            assert_eq!(
                err.line(7),
                format!(
                    "Go layer off for pid 7: {}: no struct offsets for {release} (add it: cargo xtask go-offsets, see the README's \"Adding a Go version\"); tracing with kernel signals only",
                    build.version
                ),
                "{what}/{binary}"
            );
        }

        if build.form != "default" {
            continue;
        }
        // A binary that says go1.28: the symbols refuse it, and so would the offsets.
        let full = build.dir.join("full");
        let mut data = std::fs::read(&full).unwrap();
        let elf = GoElf::parse(data.clone()).unwrap();
        let info = elf.section(".go.buildinfo").unwrap();
        let (start, size) = (info.file_offset as usize, info.size as usize);
        let at = data[start..start + size]
            .windows(build.version.len())
            .position(|w| w == build.version.as_bytes())
            .unwrap();
        // "go1.2x.y" -> "go1.28.y": same length, so the uvarint length stays right.
        data[start + at + 5] = b'8';
        let newer = GoImage::from_elf(full.clone(), GoElf::parse(data).unwrap()).unwrap();
        let err = offsets::resolve(&newer, true, table).unwrap_err();
        assert!(
            matches!(&err, offsets::OffsetsError::UnknownRelease { release } if release == "go1.28"),
            "{what}: {err}"
        );
        let err = inspect_image(newer).unwrap_err();
        assert!(matches!(err, GoLayerRefusal::TooNew(_)), "{what}: {err}");

        // The DWARF reader: types and sizes as Go declares them, and clean refusals.
        let image = open("full");
        let types = dwarf::DwarfTypes::read(&image.elf).unwrap().unwrap();
        let goid = types.member("runtime.g", "goid").unwrap();
        assert_eq!((goid.go_kind, goid.size), (Some(11), Some(8)), "{what}");
        let sysfd = types.member("net.netFD", "pfd.Sysfd").unwrap();
        assert_eq!(sysfd.type_name.as_deref(), Some("int"), "{what}");
        let tconn = types.member("crypto/tls.Conn", "conn").unwrap();
        assert_eq!(
            (tconn.type_name.as_deref(), tconn.go_kind, tconn.size),
            (Some("net.Conn"), Some(20), Some(16)),
            "{what}"
        );
        assert!(matches!(
            types.member("net.netFD", "pfd.nope"),
            Err(dwarf::DwarfError::NoMember { .. })
        ));
        assert!(matches!(
            types.member("net.netFD", "pfd.Sysfd.x"),
            Err(dwarf::DwarfError::NotAStruct { .. })
        ));
        assert!(matches!(
            types.member("net.noSuchType", "x"),
            Err(dwarf::DwarfError::NoStruct(_))
        ));
        assert!(
            dwarf::DwarfTypes::read(&open("stripped").elf)
                .unwrap()
                .is_none(),
            "{what}: a stripped build has no DWARF"
        );
    }
    assert_eq!(
        caught.len(),
        fields.len().min(builds.len()),
        "every field's edit was caught somewhere: {caught:?}"
    );
}

/// `layout <struct> <field> <offset> <field type>` lines the stub printed from Go's reflect:
/// (struct, field) -> (offset, field type). Type names are reflect's (`http2.clientStream`,
/// `poll.FD`): the package's last path element, not DWARF's import path.
fn reflect_layouts(text: &str) -> HashMap<(String, String), (u64, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("layout "))
        .map(|line| {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "a layout line: {line:?}");
            (
                (parts[0].to_owned(), parts[1].to_owned()),
                (parts[2].parse().unwrap(), parts[3].to_owned()),
            )
        })
        .collect()
}

/// A field's offset as reflect says, `None` when the stub's walk did not reach its struct.
fn reflect_offset(
    layouts: &HashMap<(String, String), (u64, String)>,
    dwarf_type: &str,
    path: &str,
) -> Option<u64> {
    let mut ty = dwarf_type.rsplit('/').next().unwrap().to_owned();
    let mut offset = 0;
    for segment in path.split('.') {
        let (here, field_type) = layouts.get(&(ty.clone(), segment.to_owned()))?;
        offset += here;
        ty = field_type.clone();
    }
    Some(offset)
}

/// The table's offsets (so also DWARF's: the other tests tie the two) equal what Go's own
/// reflect says in every build, for every field the stub's walk from its responses reaches.
/// runtime.g is not reachable by reflect, nor is 1.27's internal/http2.ClientRequest (no field
/// of a type the stub holds leads to it); DWARF alone vouches for those.
#[test]
fn offsets_equal_what_go_reflect_says() {
    let Some(matrix) = matrix_dir() else {
        return;
    };
    let builds = builds(&matrix);
    let table = offsets::OffsetTable::embedded().unwrap();
    for build in &builds {
        let what = format!("{}/{}", build.version, build.form);
        let version = GoVersion::parse(&build.version).unwrap();
        let layouts = reflect_layouts(&std::fs::read_to_string(build.dir.join("truth")).unwrap());
        assert!(
            !layouts.is_empty(),
            "{what}: the stub printed no layout lines (rebuild it: cargo xtask go-matrix)"
        );
        let ours = table.lookup(&version).unwrap();
        let mut unreached = Vec::new();
        for &field in offsets::Field::ALL {
            if !field.applies(version.minor) {
                continue;
            }
            let (ty, path) = field.location(version.minor);
            match reflect_offset(&layouts, &ty, path) {
                Some(offset) => assert_eq!(
                    ours.get(field),
                    Some(offset),
                    "{what}: {} ({ty}.{path}): table vs reflect",
                    field.key()
                ),
                None => unreached.push(field.key()),
            }
        }
        // The runtime's own structs are out of reflect's reach: DWARF is their only source.
        let mut allowed = vec![
            "runtime.g.goid",
            "runtime.g.stack.lo",
            "runtime.g.stack.hi",
            "runtime.g.sched.sp",
            "runtime.pollDesc.fd",
            "runtime.pollDesc.rg.value",
            "runtime.hmap.count",
            "runtime.hmap.flags",
            "runtime.hmap.B",
            "runtime.hmap.buckets",
            "runtime.hmap.oldbuckets",
            "maps.Map.used",
            "maps.Map.dirPtr",
            "maps.Map.dirLen",
            "maps.table.groups.data",
            "maps.table.groups.lengthMask",
        ];
        if version.minor >= 27 {
            allowed.extend(["h2.request.Host", "h2.request.URL"]);
        }
        assert!(
            unreached.iter().all(|key| allowed.contains(key)),
            "{what}: reflect did not reach {unreached:?}"
        );
    }
}
