//! `cargo xtask setup`: checks the host and installs what building and running tracer needs.
//!
//! Every check is cheap (dpkg-query, rustup, `--version`, a stat) so a host that has
//! everything passes in well under a second; installing only happens for what is missing.
//! `cargo xtask setup` prepares for everything; demo, bench and test ask only for what they
//! use (`ensure_for`), and apt-get never installs Recommends.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{self, Progress};

/// The LLVM that bpf-linker is built against. It must be the LLVM of the pinned nightly
/// (tracer-ebpf/NIGHTLY; `rustc -vV` prints it), else linking the eBPF object fails.
const LLVM_MAJOR: u32 = 22;

/// bpf-linker release line known to work with aya 0.14 and LLVM 22.
const BPF_LINKER_MINOR: (u64, u64) = (0, 13);

/// The fixtures use only the standard library of Debian 12's Go (1.19).
const GO_MIN: (u32, u32) = (1, 19);

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Report only; install nothing.
    Check,
    /// Install what is missing; print every check.
    Install,
    /// Install what is missing; one summary line when nothing was missing (for demo, test).
    InstallQuiet,
}

/// What the host is being prepared for. Every command builds the tracer (the pinned nightly,
/// bpf-linker against LLVM, tracefs to run it) and the Go fixture; the rest is per command, so
/// `cargo xtask demo` on a fresh host does not install the kernel matrix's qemu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `cargo xtask demo`: what every command needs, and python3-venv for the newest Go of the
    /// matrix, which builds its relay.
    Demo,
    /// `cargo xtask bench`: also wrk (the load), bpftool (the kernel's run time per program)
    /// and caddy (a real Go reverse proxy to measure on).
    Bench,
    /// `cargo xtask test` and `test-kernels`: also ss (iproute2: the end-to-end harness, and
    /// the guests), bpftool (the lifecycle tests, the BTF offsets test), tmux (the terminal UI
    /// test), prometheus and promtool (the metrics tests), and for the kernel matrix qemu and
    /// busybox-static (its applets are the guests' userland, its cpio builds their initramfs).
    Test,
    /// `cargo xtask setup`: everything any command uses, for people working on tracer.
    All,
}

impl Purpose {
    /// The Debian packages beyond those every command needs (`build_packages`).
    fn extra_packages(self) -> &'static [&'static str] {
        match self {
            // python3-venv: the Go matrix's toolchains are PyPI wheels installed in venvs
            // (the demo's relay is built by the newest).
            Purpose::Demo => &["python3-venv"],
            Purpose::Bench => &["bpftool", "wrk", "caddy"],
            Purpose::Test => &[
                "python3-venv",
                "iproute2",
                "bpftool",
                "tmux",
                "prometheus",
                "qemu-system-x86",
                "busybox-static",
            ],
            Purpose::All => &[
                "python3-venv",
                "iproute2",
                "bpftool",
                "tmux",
                "prometheus",
                "wrk",
                "caddy",
                "qemu-system-x86",
                "busybox-static",
            ],
        }
    }

    /// Where there is no dpkg, the programs setup looks for instead (it cannot install them),
    /// with their Debian package names for the message.
    fn tools_without_dpkg(self) -> &'static [(&'static str, &'static str)] {
        const GO: (&str, &str) = ("go", "golang-go");
        match self {
            Purpose::Demo => &[GO],
            Purpose::Bench => &[GO, ("bpftool", "bpftool"), ("wrk", "wrk")],
            Purpose::Test | Purpose::All => &[
                GO,
                ("ss", "iproute2"),
                ("bpftool", "bpftool"),
                ("tmux", "tmux"),
            ],
        }
    }
}

/// The `setup` subcommand: everything, for developers.
pub fn run(mode: Mode) -> Result<()> {
    setup(mode, Purpose::All)
}

/// Runs setup for the tests (`cargo xtask test`, `test-kernels`) and the commands that have
/// not said what they need.
pub fn ensure() -> Result<()> {
    ensure_for(Purpose::Test)
}

/// Installs what is missing for `purpose`; one line when nothing is.
pub fn ensure_for(purpose: Purpose) -> Result<()> {
    setup(Mode::InstallQuiet, purpose)
}

/// Packages every command needs: bpf-linker's build (LLVM with Polly; zstd and zlib, which
/// LLVM's static libraries link against) and the Go fixture's.
fn build_packages() -> Vec<String> {
    vec![
        format!("llvm-{LLVM_MAJOR}-dev"),
        format!("libpolly-{LLVM_MAJOR}-dev"),
        "libzstd-dev".into(),
        "zlib1g-dev".into(),
        "golang-go".into(),
    ]
}

/// The Debian packages `purpose` needs, in install order.
fn debian_packages(purpose: Purpose) -> Vec<String> {
    let mut packages = build_packages();
    packages.extend(purpose.extra_packages().iter().map(|p| p.to_string()));
    packages
}

/// What one check found.
struct Finding {
    name: String,
    state: State,
}

enum State {
    /// What was found, and a few words for the one-line summary.
    Present {
        detail: String,
        short: String,
    },
    /// Could not be checked here (not counted as missing).
    Unknown(String),
    Missing {
        problem: String,
        fix: Fix,
    },
}

enum Fix {
    /// Commands setup can run itself.
    Run {
        needs_root: bool,
        /// What is being done, for the progress line.
        doing: String,
        /// Roughly how long it takes.
        estimate: &'static str,
        actions: Vec<Action>,
        /// Why the commands cannot run yet (another step must succeed first).
        blocked_by: Option<String>,
    },
    /// Only a person can do this.
    Manual(String),
}

struct Action {
    /// How a person would type it.
    display: String,
    cmd: Command,
}

impl Action {
    fn new(cmd: Command) -> Self {
        Action {
            display: util::command_line(&cmd),
            cmd,
        }
    }

    fn with_display(display: String, cmd: Command) -> Self {
        Action { display, cmd }
    }
}

struct Host {
    root: bool,
    debian: bool,
    nightly: String,
    purpose: Purpose,
}

impl Host {
    fn detect(purpose: Purpose) -> Result<Self> {
        Ok(Host {
            purpose,
            root: util::is_root(),
            debian: util::find_on_path("dpkg-query").is_some()
                && util::find_on_path("apt-get").is_some(),
            nightly: read_nightly()?,
        })
    }
}

/// The pinned nightly from tracer-ebpf/NIGHTLY (the same file tracer/build.rs reads).
pub fn read_nightly() -> Result<String> {
    let path = util::workspace_root().join("tracer-ebpf/NIGHTLY");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the pinned nightly from {}", path.display()))?;
    let name = text.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!(
            "{} must hold one toolchain name like nightly-2026-05-19, found {text:?}",
            path.display()
        );
    }
    Ok(name.to_string())
}

fn setup(mode: Mode, purpose: Purpose) -> Result<()> {
    let started = Instant::now();
    let host = Host::detect(purpose)?;
    let checks: [fn(&Host) -> Result<Finding>; 5] = [
        check_packages,
        check_go,
        check_nightly,
        check_bpf_linker,
        check_tracefs,
    ];

    let verbose = mode != Mode::InstallQuiet;
    let mut present = Vec::new();
    let mut installed_any = false;
    // Steps that are missing and were not (or could not be) fixed here.
    let mut outstanding: Vec<(String, bool)> = Vec::new();

    for check in checks {
        let finding = check(&host)?;
        let (problem, fix) = match finding.state {
            State::Present { detail, short } => {
                if verbose {
                    println!("✓ {}: {detail}", finding.name);
                }
                present.push(short);
                continue;
            }
            State::Unknown(note) => {
                println!("? {}: {note}", finding.name);
                continue;
            }
            State::Missing { problem, fix } => (problem, fix),
        };
        println!("✗ {}: {problem}", finding.name);
        match fix {
            Fix::Manual(text) => {
                println!("    fix: {text}");
                outstanding.push((finding.name, false));
            }
            Fix::Run {
                needs_root,
                doing,
                estimate,
                actions,
                blocked_by,
            } => {
                let allowed = !needs_root || host.root;
                if mode == Mode::Check || !allowed || blocked_by.is_some() {
                    print_fix(&actions, needs_root && !host.root, blocked_by.as_deref());
                    outstanding.push((finding.name, needs_root && !host.root));
                    continue;
                }
                let progress = Progress::start(format!("setup: {doing}"), estimate);
                for mut action in actions {
                    util::run(&mut action.cmd).with_context(|| {
                        format!(
                            "could not install {} (command: {})",
                            finding.name, action.display
                        )
                    })?;
                }
                progress.done();
                installed_any = true;
                // Installing must have fixed it; anything else is a bug to see now, not at build.
                match check(&host)?.state {
                    State::Present { detail, short } => {
                        println!("✓ {}: {detail}", finding.name);
                        present.push(short);
                    }
                    State::Unknown(note) => println!("? {}: {note}", finding.name),
                    State::Missing { problem, .. } => {
                        bail!(
                            "{} is still missing after installing it: {problem}",
                            finding.name
                        )
                    }
                }
            }
        }
    }

    if outstanding.is_empty() {
        let elapsed = util::format_elapsed(started.elapsed());
        if !verbose && !installed_any {
            println!("setup: ok ({}; checked in {elapsed})", present.join(", "));
        } else if installed_any {
            println!("setup: done in {elapsed}");
        } else {
            println!("setup: everything present (checked in {elapsed})");
        }
        return Ok(());
    }

    let names: Vec<&str> = outstanding.iter().map(|(name, _)| name.as_str()).collect();
    if mode == Mode::Check {
        bail!("missing: {} (fixes above)", names.join(", "));
    }
    let root_only: Vec<&str> = outstanding
        .iter()
        .filter(|(_, needs_root)| *needs_root)
        .map(|(name, _)| name.as_str())
        .collect();
    if !root_only.is_empty() {
        bail!(
            "{} need root: run the commands above as root, or: sudo -E env \"PATH=$PATH\" cargo xtask setup",
            root_only.join(" and ")
        );
    }
    bail!("missing: {} (fixes above)", names.join(", "));
}

fn print_fix(actions: &[Action], needs_sudo: bool, blocked_by: Option<&str>) {
    let sudo = if needs_sudo { "sudo " } else { "" };
    let commands: Vec<String> = actions
        .iter()
        .map(|action| format!("{sudo}{}", action.display))
        .collect();
    let mut line = format!("    fix: {}", commands.join(" && "));
    if let Some(reason) = blocked_by {
        let _ = write!(line, "  (after: {reason})");
    }
    println!("{line}");
}

// ---------------------------------------------------------------------------------------------
// 1. Debian packages (or, on other hosts, the tools themselves)

fn check_packages(host: &Host) -> Result<Finding> {
    if !host.debian {
        return Ok(check_tools_without_dpkg(host.purpose));
    }
    let packages = debian_packages(host.purpose);
    let mut query = Command::new("dpkg-query");
    query
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(&packages);
    // dpkg-query exits 1 when a package is unknown to dpkg, and still lists the others.
    let output = util::capture(&mut query).context("checking Debian packages")?;
    let statuses = String::from_utf8_lossy(&output.stdout);
    let missing: Vec<String> = packages
        .iter()
        .filter(|package| !dpkg_installed(&statuses, package))
        .cloned()
        .collect();
    let name = "Debian packages".to_string();
    if missing.is_empty() {
        return Ok(Finding {
            name,
            state: State::Present {
                detail: format!("installed: {}", packages.join(" ")),
                short: "Debian packages".into(),
            },
        });
    }
    let mut update = Command::new("apt-get");
    update.arg("update");
    let mut install = Command::new("apt-get");
    // Recommends would bring a desktop's worth (qemu's GUI with GTK and GStreamer, a node
    // exporter daemon with prometheus) that no command uses; what they use is in Depends.
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing);
    let install_display = format!(
        "DEBIAN_FRONTEND=noninteractive {}",
        util::command_line(&install)
    );
    Ok(Finding {
        name,
        state: State::Missing {
            problem: format!("not installed: {}", missing.join(" ")),
            fix: Fix::Run {
                needs_root: true,
                doing: format!("installing Debian packages {}", missing.join(" ")),
                estimate: "about 1-3 minutes, depending on the mirror",
                actions: vec![
                    Action::new(update),
                    Action::with_display(install_display, install),
                ],
                blocked_by: None,
            },
        },
    })
}

/// True when dpkg-query's `${Package} ${Status}` lines say `package` is installed (for any
/// architecture). Status is "want error state": "install ok installed", "hold ok installed";
/// "deinstall ok config-files" and "install ok half-configured" are not installed.
fn dpkg_installed(statuses: &str, package: &str) -> bool {
    statuses.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(package) && words.nth(2) == Some("installed")
    })
}

/// Without dpkg we cannot install, only look for the tools (LLVM is checked when bpf-linker
/// must be built).
fn check_tools_without_dpkg(purpose: Purpose) -> Finding {
    let tools = purpose.tools_without_dpkg();
    let missing: Vec<(&str, &str)> = tools
        .iter()
        .copied()
        .filter(|(tool, _)| find_tool(tool).is_none())
        .collect();
    let name = "tools".to_string();
    if missing.is_empty() {
        let found: Vec<&str> = tools.iter().map(|(tool, _)| *tool).collect();
        return Finding {
            name,
            state: State::Present {
                detail: format!("{} found", found.join(", ")),
                short: "tools".into(),
            },
        };
    }
    let (tools, packages): (Vec<&str>, Vec<&str>) = missing.into_iter().unzip();
    Finding {
        name,
        state: State::Missing {
            problem: format!("not found: {}", tools.join(" ")),
            fix: Fix::Manual(format!(
                "not a Debian/Ubuntu host, so setup cannot install them: install {} with your \
                 package manager (Debian names: {})",
                tools.join(" "),
                packages.join(" ")
            )),
        },
    }
}

/// A tool on PATH, or in the sbin directories that a non-root PATH often lacks.
fn find_tool(name: &str) -> Option<PathBuf> {
    util::find_on_path(name).or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/local/sbin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| util::is_executable(path))
    })
}

// ---------------------------------------------------------------------------------------------
// Go

fn check_go(host: &Host) -> Result<Finding> {
    let name = "Go".to_string();
    let Some(go) = util::find_on_path("go") else {
        let fix = if host.debian {
            Fix::Manual("install golang-go (see Debian packages above)".into())
        } else {
            Fix::Manual(format!(
                "install Go >= {}.{} (https://go.dev/dl/) and put it on PATH",
                GO_MIN.0, GO_MIN.1
            ))
        };
        return Ok(Finding {
            name,
            state: State::Missing {
                problem: "`go` not found on PATH".into(),
                fix,
            },
        });
    };
    let text = util::stdout_of(Command::new(&go).arg("version")).context("checking Go")?;
    let Some(version) = parse_go_version(&text) else {
        bail!(
            "cannot read the Go version from `{} version`: {text:?}",
            go.display()
        );
    };
    if version < GO_MIN {
        return Ok(Finding {
            name,
            state: State::Missing {
                problem: format!(
                    "{} is Go {}.{}; the fixtures need Go >= {}.{}",
                    go.display(),
                    version.0,
                    version.1,
                    GO_MIN.0,
                    GO_MIN.1
                ),
                fix: Fix::Manual(format!(
                    "install Go >= {}.{} (https://go.dev/dl/) and put it first on PATH",
                    GO_MIN.0, GO_MIN.1
                )),
            },
        });
    }
    Ok(Finding {
        name,
        state: State::Present {
            detail: format!(
                "{}.{} at {} (the fixtures need >= {}.{})",
                version.0,
                version.1,
                go.display(),
                GO_MIN.0,
                GO_MIN.1
            ),
            short: format!("Go {}.{}", version.0, version.1),
        },
    })
}

/// (major, minor) from `go version` output: "go version go1.19.8 linux/amd64",
/// "go version go1.21rc2 linux/amd64", "go version devel go1.23-8a5b1c linux/amd64".
fn parse_go_version(text: &str) -> Option<(u32, u32)> {
    let version = text
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("go"))
        .find(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = version.split('.');
    let major = leading_number(parts.next()?)?;
    let minor = leading_number(parts.next()?)?;
    Some((u32::try_from(major).ok()?, u32::try_from(minor).ok()?))
}

fn leading_number(text: &str) -> Option<u64> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

// ---------------------------------------------------------------------------------------------
// 2. The pinned nightly with rust-src

fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    // A check must never download a toolchain behind our back.
    cmd.env("RUSTUP_AUTO_INSTALL", "0");
    cmd
}

fn check_nightly(host: &Host) -> Result<Finding> {
    let nightly = &host.nightly;
    let name = format!("{nightly} with rust-src");
    if util::find_on_path("rustup").is_none() {
        return Ok(Finding {
            name,
            state: State::Missing {
                problem: "`rustup` not found on PATH".into(),
                fix: Fix::Manual(format!(
                    "install rustup (https://rustup.rs), then run: cargo xtask setup (or: rustup toolchain install {nightly} --profile minimal --component rust-src)"
                )),
            },
        });
    }
    let version = util::capture(rustup().args(["run", nightly, "rustc", "-vV"]))
        .context("checking the pinned nightly")?;
    if !version.status.success() {
        let mut install = rustup();
        install.args([
            "toolchain",
            "install",
            nightly,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]);
        return Ok(Finding {
            name,
            state: State::Missing {
                problem: format!("toolchain {nightly} (from tracer-ebpf/NIGHTLY) is not installed"),
                fix: Fix::Run {
                    needs_root: false,
                    doing: format!("installing {nightly} with rust-src"),
                    estimate: "about 1 minute",
                    actions: vec![Action::new(install)],
                    blocked_by: None,
                },
            },
        });
    }
    let llvm = parse_rustc_llvm_major(&String::from_utf8_lossy(&version.stdout));
    if let Some(llvm) = llvm.filter(|&major| major != LLVM_MAJOR) {
        return Ok(Finding {
            name,
            state: State::Missing {
                problem: format!(
                    "{nightly} uses LLVM {llvm}, but setup builds bpf-linker against LLVM {LLVM_MAJOR}"
                ),
                fix: Fix::Manual(format!(
                    "set LLVM_MAJOR to {llvm} in xtask/src/setup.rs (packages llvm-{llvm}-dev \
                     libpolly-{llvm}-dev) or pin a nightly with LLVM {LLVM_MAJOR} in tracer-ebpf/NIGHTLY"
                )),
            },
        });
    }
    let components = util::stdout_of(rustup().args([
        "component",
        "list",
        "--toolchain",
        nightly,
        "--installed",
    ]))
    .context("checking the pinned nightly's components")?;
    if !has_component(&components, "rust-src") {
        let mut add = rustup();
        add.args(["component", "add", "rust-src", "--toolchain", nightly]);
        return Ok(Finding {
            name,
            state: State::Missing {
                problem: format!("{nightly} lacks rust-src (build-std needs it)"),
                fix: Fix::Run {
                    needs_root: false,
                    doing: format!("adding rust-src to {nightly}"),
                    estimate: "about 20 seconds",
                    actions: vec![Action::new(add)],
                    blocked_by: None,
                },
            },
        });
    }
    let llvm_note = llvm
        .map(|major| format!(", LLVM {major}"))
        .unwrap_or_default();
    Ok(Finding {
        name,
        state: State::Present {
            detail: format!("installed (from tracer-ebpf/NIGHTLY{llvm_note})"),
            short: format!("{nightly} + rust-src"),
        },
    })
}

/// The LLVM major version from `rustc -vV` ("LLVM version: 22.1.4").
fn parse_rustc_llvm_major(text: &str) -> Option<u32> {
    let version = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("LLVM version:"))?;
    let major = leading_number(version.trim())?;
    u32::try_from(major).ok()
}

/// `rustup component list --installed` prints one name a line: "rust-src",
/// "rustc-x86_64-unknown-linux-gnu" (without --installed, "rust-src (installed)").
fn has_component(listing: &str, component: &str) -> bool {
    listing
        .lines()
        .any(|line| line.split_whitespace().next() == Some(component))
}

// ---------------------------------------------------------------------------------------------
// 3. bpf-linker 0.13 built against LLVM 22

fn check_bpf_linker(host: &Host) -> Result<Finding> {
    let name = "bpf-linker".to_string();
    let on_path = util::find_on_path("bpf-linker");
    let found = on_path.clone().or_else(|| {
        util::cargo_bin_dir()
            .map(|dir| dir.join("bpf-linker"))
            .filter(|path| util::is_executable(path))
    });
    let problem = match &found {
        None => "not found on PATH nor in $CARGO_HOME/bin".to_string(),
        Some(path) => match inspect_bpf_linker(path)? {
            Ok((version, llvm)) => {
                let short = format!("bpf-linker {version}");
                let mut detail = format!("{version} ({llvm}) at {}", path.display());
                if on_path.is_none() {
                    detail.push_str(" (not on PATH; xtask build adds $CARGO_HOME/bin)");
                }
                return Ok(Finding {
                    name,
                    state: State::Present { detail, short },
                });
            }
            Err(problem) => problem,
        },
    };
    install_bpf_linker(host, name, problem, found.is_some())
}

/// Ok((version, LLVM note)) when `path` is a usable bpf-linker, else Err(what is wrong).
fn inspect_bpf_linker(path: &Path) -> Result<Result<(String, String), String>> {
    let output =
        util::capture(Command::new(path).arg("--version")).context("checking bpf-linker")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(version) = parse_bpf_linker_version(&text).filter(|_| output.status.success()) else {
        return Ok(Err(format!(
            "`{} --version` does not work: {:?}",
            path.display(),
            text.trim()
        )));
    };
    let (major, minor, patch) = version;
    let version = format!("{major}.{minor}.{patch}");
    if (major, minor) != BPF_LINKER_MINOR {
        let (want_major, want_minor) = BPF_LINKER_MINOR;
        return Ok(Err(format!(
            "{} is {version}; need {want_major}.{want_minor}.x",
            path.display()
        )));
    }
    // Cargo records the features of what it installed; a bpf-linker from elsewhere is trusted.
    let cargo_bin = util::cargo_bin_dir();
    let from_cargo = cargo_bin
        .as_deref()
        .is_some_and(|dir| path.parent() == Some(dir));
    let features = cargo_bin
        .as_deref()
        .filter(|_| from_cargo)
        .and_then(cargo_installed_features);
    let llvm_feature = format!("llvm-{LLVM_MAJOR}");
    match features {
        None => Ok(Ok((version, "LLVM not checked".into()))),
        Some(features) if features.contains(&llvm_feature) => {
            Ok(Ok((version, format!("built with LLVM {LLVM_MAJOR}"))))
        }
        Some(features) => Ok(Err(format!(
            "{} {version} was built without the {llvm_feature} feature (features: [{}]), so its LLVM may not match the nightly's",
            path.display(),
            features.join(",")
        ))),
    }
}

fn install_bpf_linker(
    host: &Host,
    name: String,
    problem: String,
    replace: bool,
) -> Result<Finding> {
    let llvm_bin = PathBuf::from(format!("/usr/lib/llvm-{LLVM_MAJOR}/bin"));
    let path = util::path_with(std::slice::from_ref(&llvm_bin))?;
    let mut install = rustup();
    install
        .env("PATH", path)
        .args(["run", "stable", "cargo", "install", "bpf-linker"])
        .args([
            "--version",
            &format!("^{}.{}", BPF_LINKER_MINOR.0, BPF_LINKER_MINOR.1),
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ]);
    if replace {
        // Also replaces a build of the right version against the wrong LLVM.
        install.arg("--force");
    }
    let display = format!(
        "PATH={}:$PATH {}",
        llvm_bin.display(),
        util::command_line(&install)
    );
    let blocked_by = if util::find_on_path("rustup").is_none() {
        Some("rustup is installed".to_string())
    } else if host.debian && !llvm_bin.join("llvm-config").exists() {
        Some(format!(
            "llvm-{LLVM_MAJOR}-dev and libpolly-{LLVM_MAJOR}-dev are installed"
        ))
    } else {
        None
    };
    Ok(Finding {
        name,
        state: State::Missing {
            problem,
            fix: Fix::Run {
                needs_root: false,
                doing: format!("building bpf-linker with LLVM {LLVM_MAJOR}"),
                estimate: "about 1 minute",
                actions: vec![Action::with_display(display, install)],
                blocked_by,
            },
        },
    })
}

/// (major, minor, patch) from "bpf-linker 0.13.0".
fn parse_bpf_linker_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut words = text.split_whitespace();
    if words.next()? != "bpf-linker" {
        return None;
    }
    let version = words.next()?.trim_start_matches('v');
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = leading_number(parts.next()?)?;
    Some((major, minor, patch))
}

/// The features bpf-linker was installed with, from cargo's install record
/// ($CARGO_HOME/.crates2.json); None when cargo has no record of it.
fn cargo_installed_features(cargo_bin: &Path) -> Option<Vec<String>> {
    let record = cargo_bin.parent()?.join(".crates2.json");
    let text = std::fs::read_to_string(record).ok()?;
    features_from_crates2(&text, "bpf-linker")
}

fn features_from_crates2(text: &str, krate: &str) -> Option<Vec<String>> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let prefix = format!("{krate} ");
    let (_, install) = json
        .get("installs")?
        .as_object()?
        .iter()
        .find(|(key, _)| key.starts_with(&prefix))?;
    let features = install
        .get("features")?
        .as_array()?
        .iter()
        .filter_map(|feature| feature.as_str().map(str::to_string))
        .collect();
    Some(features)
}

// ---------------------------------------------------------------------------------------------
// 4. tracefs

fn check_tracefs(_host: &Host) -> Result<Finding> {
    let name = "tracefs".to_string();
    let events = Path::new(TRACEFS).join("events");
    match events.try_exists() {
        Ok(true) => Ok(Finding {
            name,
            state: State::Present {
                detail: format!("mounted at {TRACEFS}"),
                short: "tracefs".into(),
            },
        }),
        Ok(false) => {
            let mut mount = Command::new("mount");
            mount.args(["-t", "tracefs", "nodev", TRACEFS]);
            Ok(Finding {
                name,
                state: State::Missing {
                    problem: format!("not mounted at {TRACEFS}"),
                    fix: Fix::Run {
                        needs_root: true,
                        doing: format!("mounting tracefs at {TRACEFS}"),
                        estimate: "a moment",
                        actions: vec![Action::new(mount)],
                        blocked_by: None,
                    },
                },
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Ok(Finding {
            name,
            state: State::Unknown(format!(
                "cannot look in {TRACEFS} without root (the demo and the end-to-end tests run as root; check with: sudo ls {TRACEFS}/events)"
            )),
        }),
        Err(err) => Err(err).with_context(|| format!("checking {}", events.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_installs_what_it_uses_and_setup_installs_everything() {
        let demo = debian_packages(Purpose::Demo);
        assert!(
            demo.contains(&"golang-go".to_string()) && demo.contains(&"llvm-22-dev".to_string())
        );
        assert!(
            demo.iter().any(|p| p == "python3-venv"),
            "the demo's relay is built by the matrix's newest Go, a PyPI wheel in a venv"
        );
        for heavy in [
            "qemu-system-x86",
            "prometheus",
            "busybox-static",
            "wrk",
            "tmux",
        ] {
            assert!(
                !demo.iter().any(|p| p == heavy),
                "the demo does not use {heavy}"
            );
        }
        let test = debian_packages(Purpose::Test);
        assert!(test.iter().any(|p| p == "qemu-system-x86") && !test.iter().any(|p| p == "wrk"));
        assert!(debian_packages(Purpose::Bench).iter().any(|p| p == "wrk"));
        let all = debian_packages(Purpose::All);
        for purpose in [Purpose::Demo, Purpose::Bench, Purpose::Test] {
            let needed = debian_packages(purpose);
            assert!(
                needed.iter().all(|p| all.contains(p)),
                "`cargo xtask setup` installs everything {purpose:?} needs"
            );
            let mut unique = needed.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                needed.len(),
                "{purpose:?} lists a package twice"
            );
        }
    }

    #[test]
    fn reads_bpf_linker_versions() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n"),
            Some((0, 13, 0))
        );
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.2-dev"),
            Some((0, 13, 2))
        );
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.9.15"),
            Some((0, 9, 15))
        );
        assert_eq!(parse_bpf_linker_version(""), None);
        assert_eq!(parse_bpf_linker_version("something 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version("bpf-linker"), None);
        assert_eq!(parse_bpf_linker_version("bpf-linker x.y"), None);
    }

    #[test]
    fn reads_go_versions() {
        assert_eq!(
            parse_go_version("go version go1.19.8 linux/amd64\n"),
            Some((1, 19))
        );
        assert_eq!(
            parse_go_version("go version go1.21rc2 linux/amd64"),
            Some((1, 21))
        );
        assert_eq!(
            parse_go_version("go version go1.22.0 linux/amd64"),
            Some((1, 22))
        );
        assert_eq!(
            parse_go_version("go version devel go1.23-8a5b1c Tue linux/amd64"),
            Some((1, 23))
        );
        assert_eq!(
            parse_go_version("go version go1.18.1 linux/amd64"),
            Some((1, 18))
        );
        assert!(parse_go_version("go version go1.18.1 linux/amd64").is_some_and(|v| v < GO_MIN));
        assert!(parse_go_version("go version go1.100.0 linux/amd64").is_some_and(|v| v >= GO_MIN));
        assert_eq!(parse_go_version("bash: go: command not found"), None);
    }

    #[test]
    fn reads_dpkg_statuses() {
        let statuses = "\
bpftool install ok installed
golang-go deinstall ok config-files
tmux install ok half-configured
zlib1g-dev install ok installed
zlib1g-dev unknown ok not-installed
iproute2 hold ok installed
";
        assert!(dpkg_installed(statuses, "bpftool"));
        assert!(
            dpkg_installed(statuses, "iproute2"),
            "held packages are installed"
        );
        assert!(
            dpkg_installed(statuses, "zlib1g-dev"),
            "installed for one architecture"
        );
        assert!(
            !dpkg_installed(statuses, "golang-go"),
            "only config files left"
        );
        assert!(!dpkg_installed(statuses, "tmux"), "half-configured");
        assert!(
            !dpkg_installed(statuses, "llvm-22-dev"),
            "not listed at all"
        );
        assert!(!dpkg_installed(statuses, "bpf"), "whole names only");
    }

    #[test]
    fn reads_rustc_llvm_version() {
        let text =
            "rustc 1.97.0-nightly (9eb3be26b 2026-05-18)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(parse_rustc_llvm_major(text), Some(22));
        assert_eq!(parse_rustc_llvm_major("rustc 1.97.0\n"), None);
    }

    #[test]
    fn finds_components() {
        let listing = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_component(listing, "rust-src"));
        assert!(has_component("rust-src (installed)\n", "rust-src"));
        assert!(!has_component(listing, "clippy"));
        assert!(!has_component(
            "rust-std-x86_64-unknown-linux-gnu\n",
            "rust-src"
        ));
    }

    #[test]
    fn reads_cargo_install_features() {
        let text = r#"{"installs":{"bpf-linker 0.13.0 (registry+https://github.com/rust-lang/crates.io-index)":{"version_req":"^0.13","bins":["bpf-linker"],"features":["llvm-22"],"all_features":false,"no_default_features":true}}}"#;
        assert_eq!(
            features_from_crates2(text, "bpf-linker"),
            Some(vec!["llvm-22".to_string()])
        );
        assert_eq!(features_from_crates2(text, "bpf"), None);
        assert_eq!(features_from_crates2("not json", "bpf-linker"), None);
    }
}
