//! The host check behind `tracer check`, and the facts about this host that loading needs
//! too (tracefs, the kernel release, BTF, privileges): everything `load_and_attach` needs,
//! one line each with the fix for what is missing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use aya::maps::MapType;

use super::{
    btf::KernelBtf,
    hooks::{absent_error, probe, ROLES},
    loader::LiveKernel,
};

pub(super) const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

pub(super) fn tracefs_root() -> Result<PathBuf> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    bail!("tracefs is not mounted at /sys/kernel/tracing; run: mount -t tracefs nodev /sys/kernel/tracing")
}

pub(super) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Fails with one line when the kernel lacks what every hook path needs: BTF for the socket
/// offsets, and the BPF ring buffer for events.
pub(super) fn check_kernel_features(release: &str) -> Result<()> {
    if !Path::new(BTF_PATH).exists() {
        bail!(
            "this kernel ({release}) has no BTF at {BTF_PATH}: tracer needs Linux 5.8 or newer \
             built with CONFIG_DEBUG_INFO_BTF=y (Debian 11+, Ubuntu 20.10+, RHEL 8.2+ kernels are)"
        );
    }
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(true) => {}
        Ok(false) => bail!(
            "this kernel ({release}) has no BPF ring buffer (added in Linux 5.8): tracer needs \
             Linux 5.8 or newer with BTF"
        ),
        // An unexpected probe failure: loading will say what is wrong, more precisely.
        Err(e) => log::debug!("could not probe for the BPF ring buffer: {e}"),
    }
    Ok(())
}

/// One line of `tracer check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckLine {
    pub ok: bool,
    /// What was checked and what was found.
    pub what: String,
    /// What to do about it, for a failed check.
    pub fix: Option<String>,
}

impl CheckLine {
    fn pass(what: impl Into<String>) -> Self {
        Self {
            ok: true,
            what: what.into(),
            fix: None,
        }
    }

    fn fail(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            ok: false,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Effective capabilities of this process (CapEff in /proc/self/status).
fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0)
}

/// (major, minor) of a release string like "6.1.0-56-amd64".
fn version_of(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Everything `load_and_attach` needs, checked without loading anything: one line each, with
/// the fix for what is missing (`tracer check`).
pub fn check_host() -> Vec<CheckLine> {
    // Capability numbers from include/uapi/linux/capability.h.
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_BPF: u64 = 1 << 39;
    let mut lines = Vec::new();
    let release = kernel_release();
    match version_of(&release) {
        Some(v) if v >= (5, 8) => {
            lines.push(CheckLine::pass(format!("kernel {release} (5.8 or newer)")))
        }
        _ => lines.push(CheckLine::fail(
            format!("kernel {release}: older than 5.8 (no BPF ring buffer)"),
            "run tracer on Linux 5.8 or newer with BTF",
        )),
    }
    let caps = effective_capabilities();
    let missing = missing_capabilities();
    if missing.is_empty() {
        lines.push(CheckLine::pass(
            "privileges: CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE",
        ));
    } else {
        lines.push(CheckLine::fail(
            format!("privileges: missing {}", missing.join(", ")),
            "run tracer as root (sudo tracer ...), or grant those capabilities",
        ));
    }
    let tracefs = tracefs_root();
    match &tracefs {
        Ok(root) => lines.push(CheckLine::pass(format!(
            "tracefs mounted at {}",
            root.display()
        ))),
        Err(_) => match std::fs::read_dir("/sys/kernel/tracing") {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                lines.push(CheckLine::fail(
                    "tracefs at /sys/kernel/tracing cannot be read (permission denied)",
                    "run tracer as root (sudo tracer ...)",
                ))
            }
            _ => lines.push(CheckLine::fail(
                "tracefs is not mounted",
                "mount -t tracefs nodev /sys/kernel/tracing",
            )),
        },
    }
    match KernelBtf::load(Path::new(BTF_PATH)) {
        Ok(btf) => {
            lines.push(CheckLine::pass(format!("BTF at {BTF_PATH}")));
            let offsets: Result<Vec<u32>> = [("tcp_sock", "rcv_nxt"), ("tcp_sock", "copied_seq"), ("sock_common", "skc_flags")]
                .iter()
                .map(|(strct, member)| btf.member_offset(strct, member))
                .collect();
            match offsets {
                Ok(o) => lines.push(CheckLine::pass(format!(
                    "socket fields in BTF: tcp_sock.rcv_nxt@{}, tcp_sock.copied_seq@{}, sock_common.skc_flags@{}",
                    o[0], o[1], o[2]
                ))),
                Err(e) => lines.push(CheckLine::fail(format!("socket fields in BTF: {e:#}"), "please report this kernel")),
            }
        }
        Err(e) => lines.push(CheckLine::fail(
            format!("{e:#}"),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian 11+, Ubuntu 20.10+, RHEL 8.2+)",
        )),
    }
    if caps & CAP_BPF != 0 || caps & CAP_SYS_ADMIN != 0 {
        match aya::sys::is_map_supported(MapType::RingBuf) {
            Ok(true) => lines.push(CheckLine::pass("BPF ring buffer")),
            Ok(false) => lines.push(CheckLine::fail(
                "no BPF ring buffer",
                "run tracer on Linux 5.8 or newer",
            )),
            Err(e) => lines.push(CheckLine::fail(
                format!("BPF ring buffer: cannot probe ({e})"),
                "run tracer as root",
            )),
        }
    }
    if let Ok(root) = &tracefs {
        // The raw tracepoints' prototypes come from BTF, whose absence is a line of its own.
        let btf = KernelBtf::load(Path::new(BTF_PATH)).ok();
        let kernel = LiveKernel {
            tracefs: root,
            btf: btf.as_ref(),
        };
        for role in ROLES {
            let mut absent = Vec::new();
            let mut chosen = None;
            for path in role.paths {
                match probe(path, &kernel) {
                    Ok(()) => {
                        chosen = Some(path);
                        break;
                    }
                    Err(why) => absent.push((path, why)),
                }
            }
            let skipped: Vec<String> = absent
                .iter()
                .map(|(p, _)| format!("{} absent", p.hook))
                .collect();
            match chosen {
                Some(path) => lines.push(CheckLine::pass(format!(
                    "{} hook: {}{}",
                    role.name,
                    path.hook,
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", skipped.join(", "))
                    }
                ))),
                None => {
                    let (path, why) = absent
                        .pop()
                        .map_or((None, None), |(p, w)| (Some(p), Some(w)));
                    let what = match (path, why) {
                        (Some(path), Some(why)) => {
                            format!("{:#}", absent_error(role, path, why, &release))
                        }
                        _ => format!("no {} hook known", role.name),
                    };
                    lines.push(CheckLine::fail(what, "run tracer on a kernel that has this tracepoint (see README: Requirements)"));
                }
            }
        }
    }
    match version_of(&release) {
        Some(v) if v >= (5, 11) => lines.push(CheckLine::pass(
            "BPF memory is charged to the memory cgroup (5.11+): RLIMIT_MEMLOCK does not matter",
        )),
        _ => {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the valid struct we pass.
            let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
            if ok && (limit.rlim_max == libc::RLIM_INFINITY || caps & CAP_SYS_ADMIN != 0) {
                lines.push(CheckLine::pass(
                    "RLIMIT_MEMLOCK can be raised for the BPF maps",
                ));
            } else {
                lines.push(CheckLine::fail(
                    "RLIMIT_MEMLOCK is limited and this kernel charges BPF maps to it",
                    "run tracer as root, or raise the limit: ulimit -l unlimited",
                ));
            }
        }
    }
    lines
}

/// The capabilities tracer needs without root, with why (numbers from
/// include/uapi/linux/capability.h).
pub const NEEDED_CAPABILITIES: &[(u32, &str, &str)] = &[
    (39, "CAP_BPF", "load the programs and create the maps"),
    (
        38,
        "CAP_PERFMON",
        "attach to tracepoints and read kernel memory from the programs",
    ),
    (
        2,
        "CAP_DAC_READ_SEARCH",
        "read the tracepoint ids and formats in tracefs",
    ),
    (
        19,
        "CAP_SYS_PTRACE",
        "read another user's /proc/PID/fd to find its sockets",
    ),
];

/// The needed capabilities this process lacks (none for root).
pub fn missing_capabilities() -> Vec<&'static str> {
    let caps = effective_capabilities();
    NEEDED_CAPABILITIES
        .iter()
        .filter(|(bit, _, _)| caps & (1u64 << bit) == 0)
        .map(|(_, name, _)| *name)
        .collect()
}

pub fn check_privileges() -> Result<()> {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        bail!(
            "tracer loads eBPF programs and lacks {}: run it with sudo, or grant CAP_BPF, \
             CAP_PERFMON, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (see README: Requirements)",
            missing.join(", ")
        )
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_are_read_from_release_strings() {
        assert_eq!(version_of("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(version_of("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(version_of("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(version_of("unknown"), None);
        assert!(version_of("5.4.0").is_some_and(|v| v < (5, 8)));
    }
}
