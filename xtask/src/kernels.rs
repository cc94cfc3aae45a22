//! `cargo xtask test-kernels`: the end-to-end verdict tests inside the kernels production hosts
//! run, under qemu software emulation (TCG; this machine's /dev/kvm cannot run guests).
//!
//! For each kernel series (Debian's 6.1, which has no `sock_recv_length`, and 6.12): the newest
//! Debian package is downloaded and unpacked once into target/kernels/ (not installed), an
//! initramfs is built from busybox-static, the release tracer, the Go fixture, the tests
//! crate's test binaries of `GUEST_SUITES` (verdicts, fallback paths, HTTP/2 streams, call
//! sites) with the Go relays they drive (tests/goscenarios and tests/gosites, built by the
//! Go matrix's 1.27), `ss`, the libraries `ldd` lists for them and the kernel's sock_diag
//! modules, and the guest's /init runs those tests and powers off. The host
//! reads the serial console, bounds each boot in time, and prints per kernel the hooks the
//! tracer chose and the result.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::build::{self, Artifacts};
use crate::setup;
use crate::util::{self, Progress};

/// A kernel series and how Debian names its image packages.
struct Series {
    label: &'static str,
    /// Package name = prefix + a number + suffix, e.g. linux-image-6.1.0-56-amd64.
    prefix: &'static str,
    suffix: &'static str,
    why: &'static str,
}

const SERIES: &[Series] = &[
    Series {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
        why: "Debian 12's kernel: no sock_recv_length, reads come from the syscalls",
    },
    Series {
        label: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64",
        why: "a recent LTS kernel with sock_recv_length",
    },
];

/// Every boot, tests included, must end within this (software emulation is slow).
const BOOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The end-to-end tests run in each guest: (test target of the tests crate, test name filters;
/// none means all). The fixture's verdicts with the tracer attached first, the connections
/// opened before it and the processes followed by name; and the syscall read path forced,
/// so both read paths run on 6.12. The rest of the suite runs on the host only.
const GUEST_SUITES: &[(&str, &[&str])] = &[
    (
        "verdicts",
        &[
            "fixture_verdicts_are_exact_and_untargeted_processes_are_ignored",
            "connections_opened_before_the_tracer_started_are_judged",
            "processes_named_by_comm_are_followed_from_their_start",
        ],
    ),
    ("fallback", &[]),
    // The Go-aware layer (uprobes on the relay's binary, its memory read at each sample) on
    // the older kernels too: one Go release, every scenario, exact.
    ("h2_streams", &["go1_27_stripped_streams_are_exact"]),
    // The call-site probes (`--go-probes sites`), whose programs the kernel's verifier checks
    // only when they attach: one Go release, every scenario's line; and the uprobes' pid
    // filter, which the HTTP/2 probes rely on as their process check.
    (
        "sites",
        &[
            "every_leak_names_its_scenarios_line_go_1_27_trimpath",
            "another_process_of_the_same_binary_is_not_probed",
        ],
    ),
];

/// The Go release whose scenario relay (tests/goscenarios) the guests run.
const GUEST_GO: &str = "1.27";
/// Where the guests find it (GO_SCENARIOS_DIR).
const GUEST_SCENARIOS_DIR: &str = "/usr/lib/goscenarios";
/// Where the guests find the call-site test's fixture (tests/gosites, built by the matrix's
/// newest toolchain as tests/tests/sites.rs builds it on the host; GO_SITES_DIR).
const GUEST_SITES_DIR: &str = "/usr/lib/gosites";
/// tests/gosites, from the workspace's root.
const SITES_SOURCE: &str = "tests/gosites";

/// Kernel modules the tests need that Debian builds as modules: sock_diag for TCP (the
/// tracer's socket samples and `ss`). In load order.
const MODULES: &[&str] = &["inet_diag", "tcp_diag"];

/// Lines the guest's /init prints for the host to parse.
const MARK: &str = "TRACER-GUEST:";

pub fn run(only: Option<&str>) -> Result<()> {
    setup::ensure().context("test-kernels")?;
    let artifacts = build::build().context("test-kernels")?;
    matrix(&artifacts, only).context("test-kernels")
}

/// What happened in one guest.
struct Outcome {
    label: &'static str,
    release: String,
    verdict: Verdict,
    hooks: Option<String>,
    boot: Option<Duration>,
    tests: Option<Duration>,
    log: PathBuf,
}

enum Verdict {
    Pass,
    Fail(String),
    Skipped(String),
}

/// Boots every kernel (or the one labelled `only`) and runs the guest tests in each.
pub fn matrix(artifacts: &Artifacts, only: Option<&str>) -> Result<()> {
    let series: Vec<&Series> = SERIES
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.label))
        .collect();
    if series.is_empty() {
        let labels: Vec<&str> = SERIES.iter().map(|s| s.label).collect();
        bail!(
            "no kernel series {:?}; choose one of {}",
            only.unwrap_or(""),
            labels.join(", ")
        );
    }
    let tools = Tools::find()?;
    let root = util::workspace_root();
    let kernels_dir = build::target_dir(&root)?.join("kernels");
    fs::create_dir_all(&kernels_dir)
        .with_context(|| format!("cannot create {}", kernels_dir.display()))?;
    let test_binaries = guest_test_binaries(&root)?;
    // The guests run the release binary of `cargo xtask dist` (static, musl): so every test
    // run proves that it works on a host without a Rust toolchain or the build's glibc.
    let tracer = crate::dist::build_static()?.path;
    println!(
        "test-kernels: the guests run the static binary {}",
        tracer.display()
    );
    let matrix = crate::gomatrix::ensure()
        .context("test-kernels: the Go matrix (the guests' HTTP/2 scenario relay)")?;
    let sites = guest_sites_fixture(&matrix, &root, &kernels_dir)?;
    let staging = kernels_dir.join("guest-root");
    stage_guest_root(
        &staging,
        &tools,
        &tracer,
        artifacts,
        &test_binaries,
        &matrix.scenarios_dir,
        &sites,
    )?;

    let mut outcomes = Vec::new();
    for series in series {
        let kernel = cached_or_download(series, &kernels_dir, &tools)?;
        println!(
            "test-kernels: {} ({}): {}",
            series.label, kernel.package, series.why
        );
        if let Some(reason) = kernel.unsupported_reason() {
            // Under CI a kernel of the matrix that cannot run is a failure: nothing was tested.
            let verdict = if util::in_ci() {
                println!("test-kernels: {} cannot run: {reason}", kernel.release);
                Verdict::Fail(format!("cannot run it ({reason}), and CI forbids skipping"))
            } else {
                println!("test-kernels: SKIPPING {}: {reason}", kernel.release);
                Verdict::Skipped(reason)
            };
            outcomes.push(Outcome {
                label: series.label,
                release: kernel.release.clone(),
                verdict,
                hooks: None,
                boot: None,
                tests: None,
                log: kernel.dir.join("serial.log"),
            });
            continue;
        }
        let initrd = build_initramfs(&staging, &kernel, &tools)?;
        outcomes.push(boot(series.label, &kernel, &initrd, &tools)?);
    }

    println!("test-kernels: results (qemu TCG single-threaded, -smp 2, 1 GiB; host kernel {} runs the full suite above):", host_release());
    let mut failed = Vec::new();
    for o in &outcomes {
        let took = match (o.boot, o.tests) {
            (Some(b), Some(t)) => format!(
                "boot {}, tests {}",
                util::format_elapsed(b),
                util::format_elapsed(t)
            ),
            (Some(b), None) => format!("boot {}", util::format_elapsed(b)),
            _ => String::new(),
        };
        let hooks = o.hooks.as_deref().unwrap_or("hooks: none reported");
        match &o.verdict {
            Verdict::Pass => println!("  {:<22} PASS  {took}  {hooks}", o.release),
            Verdict::Fail(why) => {
                println!(
                    "  {:<22} FAIL  {took}  {why} (serial log: {})",
                    o.release,
                    o.log.display()
                );
                failed.push(o.label);
            }
            Verdict::Skipped(why) => println!("  {:<22} SKIPPED  {why}", o.release),
        }
    }
    let ran = outcomes
        .iter()
        .filter(|o| !matches!(o.verdict, Verdict::Skipped(_)))
        .count();
    println!(
        "test-kernels: {} of {ran} kernels passed",
        ran - failed.len()
    );
    if !failed.is_empty() {
        bail!(
            "the guest tests failed on kernel {} (output above)",
            failed.join(" and ")
        );
    }
    if ran == 0 {
        bail!("no kernel ran the guest tests (all skipped, output above)");
    }
    Ok(())
}

fn host_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The host tools the matrix needs.
struct Tools {
    qemu: PathBuf,
    busybox: PathBuf,
    ss: PathBuf,
}

impl Tools {
    fn find() -> Result<Self> {
        let find = |name: &str, package: &str| {
            util::find_on_path(name)
                .or_else(|| ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| util::is_executable(p)))
                .ok_or_else(|| anyhow!("`{name}` not found; run: cargo xtask setup (or: apt-get install {package})"))
        };
        let tools = Tools {
            qemu: find("qemu-system-x86_64", "qemu-system-x86")?,
            busybox: find("busybox", "busybox-static")?,
            ss: find("ss", "iproute2")?,
        };
        if !ldd(&tools.busybox)?.is_empty() {
            bail!(
                "{} is dynamically linked; the guests need busybox-static: apt-get install busybox-static",
                tools.busybox.display()
            );
        }
        for tool in ["apt-cache", "apt-get", "dpkg"] {
            if util::find_on_path(tool).is_none() {
                bail!("`{tool}` not found: the kernel matrix fetches Debian's kernel packages and needs a Debian or Ubuntu host");
            }
        }
        Ok(tools)
    }
}

/// The test binaries of `GUEST_SUITES`, built (debug, as `cargo test` builds them).
fn guest_test_binaries(root: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let mut cargo = util::cargo();
    cargo.current_dir(root).args(["test", "-p", "tracer-e2e"]);
    for (target, _) in GUEST_SUITES {
        cargo.args(["--test", target]);
    }
    cargo
        .args(["--no-run", "--message-format=json"])
        .stderr(Stdio::inherit());
    let text =
        util::stdout_of(&mut cargo).context("building the end-to-end tests for the guests")?;
    GUEST_SUITES
        .iter()
        .map(|(target, _)| {
            executable_of(&text, target).map(|path| (*target, path)).ok_or_else(|| {
                anyhow!("cargo built the end-to-end tests but named no executable for the `{target}` test target")
            })
        })
        .collect()
}

/// Where a suite's test binary lives in the guest.
fn guest_test_path(target: &str) -> String {
    format!("/usr/bin/tracer-e2e-{target}")
}

/// The executable of test target `target` in cargo's `--message-format=json` output.
fn executable_of(messages: &str, target: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == target)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// The shared libraries `ldd` lists for `binary` (none for a static binary).
fn ldd(binary: &Path) -> Result<Vec<PathBuf>> {
    let output =
        util::capture(Command::new("ldd").arg(binary)).context("running ldd (part of libc-bin)")?;
    // ldd exits 1 for "not a dynamic executable".
    Ok(parse_ldd(&String::from_utf8_lossy(&output.stdout)))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)";
            // the vDSO has no file.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `from` to `root`/`to` (creating directories), keeping its permissions.
fn install(root: &Path, from: &Path, to: &str) -> Result<()> {
    let dest = root.join(to.trim_start_matches('/'));
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::copy(from, &dest)
        .with_context(|| format!("cannot copy {} to {}", from.display(), dest.display()))?;
    Ok(())
}

/// The part of the guest's root file system that is the same for every kernel.
fn stage_guest_root(
    staging: &Path,
    tools: &Tools,
    tracer: &Path,
    artifacts: &Artifacts,
    test_binaries: &[(&str, PathBuf)],
    scenarios: &Path,
    sites: &Path,
) -> Result<()> {
    if staging.exists() {
        fs::remove_dir_all(staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    for dir in [
        "bin",
        "usr/bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "etc",
        "lib/modules",
        GUEST_SCENARIOS_DIR.trim_start_matches('/'),
        GUEST_SITES_DIR.trim_start_matches('/'),
    ] {
        fs::create_dir_all(staging.join(dir))
            .with_context(|| format!("cannot create {}", staging.display()))?;
    }
    install(staging, &tools.busybox, "/bin/busybox")?;
    let mut binaries = vec![
        (tracer.to_path_buf(), "/usr/bin/tracer".to_owned()),
        (artifacts.fixture.clone(), "/usr/bin/fixture".to_owned()),
        (tools.ss.clone(), "/usr/bin/ss".to_owned()),
    ];
    binaries.extend(
        test_binaries
            .iter()
            .map(|(target, path)| (path.clone(), guest_test_path(target))),
    );
    let relay = fs::read_dir(scenarios)
        .with_context(|| format!("cannot read {}", scenarios.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&format!("goscenarios-{GUEST_GO}.")) && !name.ends_with(".built-from")
        })
        .ok_or_else(|| {
            anyhow!(
                "no goscenarios-{GUEST_GO}.* in {} (cargo xtask go-matrix builds it)",
                scenarios.display()
            )
        })?;
    let relay_in_guest = in_guest_dir(GUEST_SCENARIOS_DIR, &relay);
    binaries.push((relay, relay_in_guest));
    binaries.push((sites.to_path_buf(), in_guest_dir(GUEST_SITES_DIR, sites)));
    let mut libraries = BTreeSet::new();
    for (from, to) in &binaries {
        install(staging, from, to)?;
        libraries.extend(ldd(from)?);
    }
    for library in &libraries {
        let to = library.to_string_lossy();
        install(staging, library, &to)?;
    }
    // Loopback names for anything that looks them up.
    fs::write(
        staging.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )
    .context("writing the guest's /etc/hosts")?;
    let init = staging.join("init");
    fs::write(&init, guest_init()).context("writing the guest's /init")?;
    set_executable(&init)?;
    Ok(())
}

/// Where a binary goes in the guest: its own name in `dir`.
fn in_guest_dir(dir: &str, binary: &Path) -> String {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{dir}/{name}")
}

/// tests/gosites built by the matrix's `GUEST_GO` toolchain, stripped and with `-trimpath`
/// (what tests/tests/sites.rs's test of that release builds on the host), static: the
/// guests have no Go toolchain. `<kernels>/gosites-<version>`, rebuilt when its sources or
/// the toolchain change.
fn guest_sites_fixture(
    matrix: &crate::gomatrix::GoMatrix,
    root: &Path,
    kernels_dir: &Path,
) -> Result<PathBuf> {
    let toolchain = matrix
        .toolchains
        .iter()
        .find(|t| t.version.starts_with(&format!("{GUEST_GO}.")))
        .ok_or_else(|| anyhow!("the Go matrix has no go{GUEST_GO} toolchain"))?;
    let binary = kernels_dir.join(format!("gosites-{}", toolchain.version));
    crate::gomatrix::build_stripped_package(&toolchain.go, &root.join(SITES_SOURCE), &binary)
        .with_context(|| {
            format!(
                "test-kernels: building {SITES_SOURCE} with go{}",
                toolchain.version
            )
        })?;
    Ok(binary)
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// The guest's /init: mount what the tracer needs, run the tests, print the result, power off.
fn guest_init() -> String {
    let modules: Vec<String> = MODULES
        .iter()
        .map(|m| format!("/lib/modules/{m}.ko"))
        .collect();
    let suites: Vec<String> = GUEST_SUITES
        .iter()
        .map(|(target, filters)| {
            let mut command = format!("{} --test-threads=1", guest_test_path(target));
            if !filters.is_empty() {
                command.push_str(&format!(" --exact {}", filters.join(" ")));
            }
            format!("echo \"{MARK} suite {target}\"\n{command} || rc=1")
        })
        .collect();
    let suites = suites.join("\n");
    format!(
        r#"#!/bin/busybox sh
# Generated by xtask/src/kernels.rs: runs the verdict tests and powers off.
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tracefs tracefs /sys/kernel/tracing
mount -t tmpfs tmpfs /tmp
ip link set lo up
for m in {modules}; do insmod "$m" || echo "{MARK} cannot load $m"; done
export CI=true TRACER_BIN=/usr/bin/tracer FIXTURE_BIN=/usr/bin/fixture HOME=/root TMPDIR=/tmp
export GO_SCENARIOS_DIR={GUEST_SCENARIOS_DIR} GO_SITES_DIR={GUEST_SITES_DIR}
release=$(uname -r)
echo "{MARK} up kernel=$release uptime=$(cut -d' ' -f1 /proc/uptime)s"
if tracer run --pid 1 --duration 1s >/dev/null 2>/tmp/tracer.err && grep -q 'tracer: hooks:' /tmp/tracer.err; then
    echo "{MARK} $(grep 'tracer: hooks:' /tmp/tracer.err)"
else
    echo "{MARK} the tracer did not start:"
    cat /tmp/tracer.err
fi
rc=0
{suites}
if [ "$rc" = 0 ]; then
    echo "{MARK} PASS kernel=$release uptime=$(cut -d' ' -f1 /proc/uptime)s"
else
    echo "{MARK} FAIL kernel=$release"
fi
poweroff -f
"#,
        modules = modules.join(" "),
    )
}

/// A kernel unpacked in target/kernels/<package>/.
struct Kernel {
    package: String,
    release: String,
    dir: PathBuf,
}

/// Marks a complete unpack (an interrupted one is redone).
const READY: &str = "ready";

impl Kernel {
    fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    fn config(&self) -> String {
        fs::read_to_string(self.dir.join("config")).unwrap_or_default()
    }

    /// Why the tracer cannot run on this kernel at all, from its build config.
    fn unsupported_reason(&self) -> Option<String> {
        let config = self.config();
        let has = |option: &str| config.lines().any(|l| l == format!("{option}=y"));
        [
            (
                "CONFIG_DEBUG_INFO_BTF",
                "built without BTF (CONFIG_DEBUG_INFO_BTF)",
            ),
            (
                "CONFIG_BPF_SYSCALL",
                "built without BPF (CONFIG_BPF_SYSCALL)",
            ),
            (
                "CONFIG_FTRACE_SYSCALLS",
                "built without syscall tracepoints (CONFIG_FTRACE_SYSCALLS)",
            ),
        ]
        .iter()
        .find(|(option, _)| !has(option))
        .map(|(_, why)| why.to_string())
    }
}

/// The number in a package name of `series`, e.g. 56 in linux-image-6.1.0-56-amd64.
fn package_number(series: &Series, name: &str) -> Option<u64> {
    let middle = name
        .strip_prefix(series.prefix)?
        .strip_suffix(series.suffix)?;
    if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    middle.parse().ok()
}

/// The newest package of `series` among `names`.
fn newest<'a>(series: &Series, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .filter_map(|n| package_number(series, n).map(|v| (v, n)))
        .max()
        .map(|(_, n)| n)
}

/// A kernel of `series` unpacked earlier (the newest one), else the newest Debian package,
/// downloaded and unpacked now.
fn cached_or_download(series: &Series, kernels_dir: &Path, tools: &Tools) -> Result<Kernel> {
    let entries = fs::read_dir(kernels_dir)
        .with_context(|| format!("cannot list {}", kernels_dir.display()))?;
    let cached: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(READY).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    if let Some(package) = newest(series, cached.iter().map(String::as_str)) {
        return load_kernel(package, &kernels_dir.join(package));
    }
    let text = util::stdout_of(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &format!("^{}", series.prefix.replace('.', "\\.")),
    ]))
    .context("looking up Debian's kernel packages")?;
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let Some(package) = newest(series, names.into_iter()) else {
        bail!(
            "apt-cache knows no {}N{} package; run: apt-get update (the kernel matrix takes Debian 12's kernels from its archive)",
            series.prefix,
            series.suffix
        );
    };
    download(package, kernels_dir, tools)?;
    load_kernel(package, &kernels_dir.join(package))
}

fn load_kernel(package: &str, dir: &Path) -> Result<Kernel> {
    let release = fs::read_to_string(dir.join("release"))
        .with_context(|| format!("{} is incomplete; remove it and run again", dir.display()))?;
    Ok(Kernel {
        package: package.to_owned(),
        release: release.trim().to_owned(),
        dir: dir.to_path_buf(),
    })
}

/// apt-get download + dpkg -x, keeping only what the guests need (the image, its config and
/// the sock_diag modules; the rest is hundreds of MB).
fn download(package: &str, kernels_dir: &Path, tools: &Tools) -> Result<()> {
    let work = kernels_dir.join(format!(".download-{package}"));
    let dest = kernels_dir.join(package);
    for dir in [&work, &dest] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let progress = Progress::start(
        format!("test-kernels: apt-get download {package}"),
        "about 100 MB, once; cached in target/kernels",
    );
    util::run(
        Command::new("apt-get")
            .current_dir(&work)
            .args(["download", package]),
    )
    .with_context(|| {
        format!("downloading {package} (if the archive moved on, run: apt-get update)")
    })?;
    let deb = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| {
            anyhow!(
                "apt-get download {package} left no .deb in {}",
                work.display()
            )
        })?;
    let unpacked = work.join("root");
    util::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))
        .with_context(|| format!("unpacking {}", deb.display()))?;

    let boot = unpacked.join("boot");
    let find_boot = |prefix: &str| -> Result<PathBuf> {
        fs::read_dir(&boot)
            .with_context(|| format!("{package} has no /boot"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .ok_or_else(|| anyhow!("{package} has no /boot/{prefix}*"))
    };
    let vmlinuz = find_boot("vmlinuz-")?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or_else(|| anyhow!("cannot read the kernel release from {}", vmlinuz.display()))?
        .to_owned();
    fs::create_dir_all(dest.join("modules"))
        .with_context(|| format!("cannot create {}", dest.display()))?;
    fs::copy(&vmlinuz, dest.join("vmlinuz")).context("keeping the kernel image")?;
    fs::copy(find_boot("config-")?, dest.join("config")).context("keeping the kernel config")?;
    let ipv4 = unpacked
        .join("lib/modules")
        .join(&release)
        .join("kernel/net/ipv4");
    for module in MODULES {
        let plain = ipv4.join(format!("{module}.ko"));
        let xz = ipv4.join(format!("{module}.ko.xz"));
        let out = dest.join("modules").join(format!("{module}.ko"));
        if plain.is_file() {
            fs::copy(&plain, &out).with_context(|| format!("keeping {}", plain.display()))?;
        } else if xz.is_file() {
            // busybox's insmod loads plain modules only.
            let file =
                File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
            util::run(
                Command::new(&tools.busybox)
                    .args(["xz", "-dc"])
                    .arg(&xz)
                    .stdout(file),
            )
            .with_context(|| format!("decompressing {}", xz.display()))?;
        } else {
            bail!(
                "{package} has no {module} module in {}; the guests need it for sock_diag",
                ipv4.display()
            );
        }
    }
    fs::write(dest.join("release"), &release).context("recording the kernel release")?;
    fs::write(dest.join(READY), "").context("marking the kernel unpacked")?;
    fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    progress.done();
    Ok(())
}

/// The guest root plus this kernel's modules, as a newc cpio archive (busybox's cpio: the
/// host may have no cpio).
fn build_initramfs(staging: &Path, kernel: &Kernel, tools: &Tools) -> Result<PathBuf> {
    let modules_dir = staging.join("lib/modules");
    fs::remove_dir_all(&modules_dir)
        .with_context(|| format!("cannot remove {}", modules_dir.display()))?;
    fs::create_dir_all(&modules_dir)
        .with_context(|| format!("cannot create {}", modules_dir.display()))?;
    for module in MODULES {
        let name = format!("{module}.ko");
        fs::copy(
            kernel.dir.join("modules").join(&name),
            modules_dir.join(&name),
        )
        .with_context(|| format!("copying {name} of {}", kernel.release))?;
    }
    let out = kernel.dir.join("initramfs.cpio");
    let file = File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let bb = tools.busybox.to_string_lossy();
    let script = format!("{bb} find . | {bb} cpio -o -H newc");
    let output = Command::new(&tools.busybox)
        .args(["sh", "-c", &script])
        .current_dir(staging)
        .stdout(file)
        .output()
        .with_context(|| format!("running {script}"))?;
    if !output.status.success() {
        bail!(
            "building the initramfs failed ({}): {}",
            util::describe_status(output.status),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(out)
}

/// Boots `kernel` with `initrd`, streams its console, and reads the result.
fn boot(label: &'static str, kernel: &Kernel, initrd: &Path, tools: &Tools) -> Result<Outcome> {
    let log_path = kernel.dir.join("serial.log");
    let mut log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut qemu = Command::new(&tools.qemu);
    // One host thread runs both vCPUs (thread=single). With a thread per vCPU (MTTCG) a vCPU
    // can run a stale translation of kernel text another vCPU just patched: once a 6.12 guest
    // hit the int3 of a finished static-key patch in sock_recvmsg (its sock_recv_length
    // tracepoint) and panicked ("Oops: int3", the bytes there already the new nop). The guest
    // still has two CPUs, interleaved, so per-CPU maps and cross-CPU ordering are exercised.
    qemu.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-m",
        "1024",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(kernel.vmlinuz())
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 quiet panic=-1"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    println!(
        "test-kernels: booting {} under qemu (software emulation; boot and tests take a few minutes, at most {})...",
        kernel.release,
        util::format_elapsed(BOOT_TIMEOUT)
    );
    let started = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("cannot start {}", util::command_line(&qemu)))?;
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n') {
                let Ok(line) = line else { break };
                let text = printable(&String::from_utf8_lossy(&line));
                if tx.send(text).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut outcome = Outcome {
        label,
        release: kernel.release.clone(),
        verdict: Verdict::Fail("the guest ended without a result line".into()),
        hooks: None,
        boot: None,
        tests: None,
        log: log_path.clone(),
    };
    let mut up_at = None;
    let mut timed_out = false;
    let mut console = Vec::new();
    loop {
        let left = BOOT_TIMEOUT.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                console.push(line.clone());
                println!("  [{label}] {line}");
                if let Some(event) = line.split_once(MARK).map(|(_, rest)| rest.trim()) {
                    if event.starts_with("up ") {
                        up_at = Some(Instant::now());
                        outcome.boot = Some(started.elapsed());
                    } else if let Some(hooks) = event.strip_prefix("tracer: ") {
                        outcome.hooks = Some(hooks.to_owned());
                    } else if event.starts_with("PASS ") {
                        outcome.verdict = Verdict::Pass;
                    } else if event.starts_with("FAIL ") {
                        outcome.verdict =
                            Verdict::Fail(format!("the guest tests failed ({event})"));
                    }
                    if event.starts_with("PASS ") || event.starts_with("FAIL ") {
                        outcome.tests = up_at.map(|t| t.elapsed());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        let _ = child.kill();
        outcome.verdict = Verdict::Fail(format!(
            "timed out after {} (killed qemu)",
            util::format_elapsed(BOOT_TIMEOUT)
        ));
    }
    // The guest's PASS only says no suite failed: a suite that ran no test (a renamed test, a
    // filter matching nothing) passes too. Each suite must have run its tests.
    if matches!(outcome.verdict, Verdict::Pass) {
        if let Err(why) = check_guest_suites(&console) {
            outcome.verdict = Verdict::Fail(why);
        }
    }
    let status = child.wait().context("waiting for qemu")?;
    if !timed_out && !status.success() && matches!(outcome.verdict, Verdict::Pass) {
        outcome.verdict = Verdict::Fail(format!(
            "qemu exited with {}",
            util::describe_status(status)
        ));
    }
    println!(
        "test-kernels: {} {} after {}",
        kernel.release,
        match &outcome.verdict {
            Verdict::Pass => "passed".to_owned(),
            Verdict::Fail(why) => format!("FAILED: {why};"),
            Verdict::Skipped(why) => format!("skipped: {why}"),
        },
        util::format_elapsed(started.elapsed())
    );
    Ok(outcome)
}

/// What libtest printed for one guest suite: "test result: ok. 3 passed; 0 failed; ...".
#[derive(Debug, PartialEq)]
struct SuiteResult {
    ok: bool,
    passed: usize,
}

/// Reads a libtest summary line ("test result: ok. 3 passed; 0 failed; 0 ignored; ...").
fn parse_test_result(line: &str) -> Option<SuiteResult> {
    let rest = &line[line.find("test result: ")? + "test result: ".len()..];
    let (status, counts) = rest.split_once(". ")?;
    let passed = counts
        .split(';')
        .find_map(|part| part.trim().strip_suffix(" passed"))?
        .trim()
        .parse()
        .ok()?;
    Some(SuiteResult {
        ok: status == "ok",
        passed,
    })
}

/// Checks the guest's console: every suite of GUEST_SUITES started, and its test harness
/// reported ok with tests passed: exactly its named tests when it names them, else at least
/// one. So a renamed test (a filter that matches nothing) or an empty suite fails.
fn check_guest_suites(console: &[String]) -> std::result::Result<(), String> {
    let mut results: Vec<(String, Option<SuiteResult>)> = Vec::new();
    for line in console {
        if let Some(target) = line
            .split_once(MARK)
            .and_then(|(_, rest)| rest.trim().strip_prefix("suite "))
        {
            results.push((target.trim().to_owned(), None));
        } else if let (Some(result), Some((_, slot))) =
            (parse_test_result(line), results.last_mut())
        {
            if slot.is_none() {
                *slot = Some(result);
            }
        }
    }
    for (target, filters) in GUEST_SUITES {
        let Some((_, result)) = results.iter().find(|(t, _)| t == target) else {
            return Err(format!("suite {target} never started"));
        };
        let Some(result) = result else {
            return Err(format!("suite {target} printed no \"test result\" line"));
        };
        if !result.ok {
            return Err(format!("suite {target} failed"));
        }
        if filters.is_empty() && result.passed == 0 {
            return Err(format!("suite {target} ran no test"));
        }
        if !filters.is_empty() && result.passed != filters.len() {
            return Err(format!(
                "suite {target} passed {} tests, expected {} ({}): a test was renamed?",
                result.passed,
                filters.len(),
                filters.join(", ")
            ));
        }
    }
    Ok(())
}

/// A console line without terminal control sequences (the firmware clears the screen).
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-byte, or ESC and one character.
            if chars.next_if_eq(&'[').is_some() {
                while chars.next().is_some_and(|c| !c.is_ascii_alphabetic()) {}
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_package_of_a_series() {
        let names = [
            "linux-image-6.1.0-47-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-57-cloud-amd64",
            "linux-image-6.1.0-58-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.99+deb12-amd64",
            "linux-image-6.12.120+deb12-rt-amd64",
        ];
        assert_eq!(
            newest(&SERIES[0], names.into_iter()),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            newest(&SERIES[1], names.into_iter()),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        assert_eq!(newest(&SERIES[0], ["linux-image-amd64"].into_iter()), None);
    }

    #[test]
    fn strips_terminal_control_sequences() {
        assert_eq!(
            printable("\u{1b}c\u{1b}[?7l\u{1b}[2JTRACER-GUEST: up\r"),
            "TRACER-GUEST: up"
        );
        assert_eq!(printable("plain\tline"), "plain\tline");
    }

    #[test]
    fn reads_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn finds_the_test_executable_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"tracer_e2e","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"verdicts","kind":["test"]},"executable":"/t/debug/deps/verdicts-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable_of(messages, "verdicts"),
            Some(PathBuf::from("/t/debug/deps/verdicts-abc"))
        );
        assert_eq!(executable_of(messages, "naming"), None);
    }

    fn guest_console(results: &[(&str, &str)]) -> Vec<String> {
        let mut lines = vec![format!("{MARK} up kernel=6.1 uptime=3s")];
        for (target, result) in results {
            lines.push(format!("{MARK} suite {target}"));
            lines.push("running 3 tests".to_owned());
            lines.push(format!(
                "test result: {result}; 0 ignored; 0 measured; 0 filtered out; finished in 40.1s"
            ));
        }
        lines.push(format!("{MARK} PASS kernel=6.1 uptime=99s"));
        lines
    }

    #[test]
    fn reads_libtest_result_lines() {
        assert_eq!(
            parse_test_result("test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out; finished in 1.2s"),
            Some(SuiteResult { ok: true, passed: 3 })
        );
        assert_eq!(
            parse_test_result("[   9.1] test result: FAILED. 1 passed; 2 failed; 0 ignored"),
            Some(SuiteResult {
                ok: false,
                passed: 1
            })
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn a_guest_suite_must_run_its_tests() {
        let verdicts = GUEST_SUITES[0].1.len();
        // Every suite ran all its filtered tests (one, for a suite without filters).
        let results: Vec<(&str, String)> = GUEST_SUITES
            .iter()
            .map(|(suite, filters)| {
                (
                    *suite,
                    format!("ok. {} passed; 0 failed", filters.len().max(1)),
                )
            })
            .collect();
        let results: Vec<(&str, &str)> = results.iter().map(|(t, r)| (*t, r.as_str())).collect();
        let good = guest_console(&results);
        assert_eq!(check_guest_suites(&good), Ok(()));
        for bad in [
            // A renamed test: the filters match one test fewer.
            vec![
                ("verdicts", format!("ok. {} passed; 0 failed", verdicts - 1)),
                ("fallback", "ok. 1 passed; 0 failed".to_owned()),
            ],
            // A suite that ran nothing.
            vec![
                ("verdicts", format!("ok. {verdicts} passed; 0 failed")),
                ("fallback", "ok. 0 passed; 0 failed".to_owned()),
            ],
            // A suite that never ran.
            vec![("verdicts", format!("ok. {verdicts} passed; 0 failed"))],
            vec![
                ("verdicts", format!("FAILED. {verdicts} passed; 1 failed")),
                ("fallback", "ok. 1 passed; 0 failed".to_owned()),
            ],
        ] {
            let bad: Vec<(&str, &str)> = bad.iter().map(|(t, r)| (*t, r.as_str())).collect();
            assert!(check_guest_suites(&guest_console(&bad)).is_err(), "{bad:?}");
        }
        // A suite marker with no result line (the test binary crashed).
        let mut crashed = good.clone();
        let last_result = crashed.iter().rposition(|l| l.contains("test result:"));
        crashed.remove(last_result.expect("the console has result lines"));
        assert!(check_guest_suites(&crashed).is_err());
    }

    #[test]
    fn the_guest_init_runs_the_tests_and_powers_off() {
        let init = guest_init();
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        for (target, filters) in GUEST_SUITES {
            assert!(init.contains(&format!("/usr/bin/tracer-e2e-{target} --test-threads=1")));
            for filter in *filters {
                assert!(init.contains(filter));
            }
        }
        assert!(init.contains("insmod \"$m\"") && init.contains("/lib/modules/tcp_diag.ko"));
        assert!(init.trim_end().ends_with("poweroff -f"));
    }
}
