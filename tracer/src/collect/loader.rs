//! Checks that this host can run the tracer, picks the kernel hook for each role, then loads
//! and attaches the eBPF programs. Every failure here is one line that names what is missing,
//! the kernel that has it, and how to fix it.
//!
//! Hook probing: each role (connect, state, read, close, first_write) lists the ways this
//! tracer can serve it, best first. A way is present when every tracepoint it attaches to has
//! a format file in tracefs and the fields the eBPF side reads sit at the offsets it expects
//! (tracer_common::tp_layout). The first present way is chosen, unless a test forces another
//! (`TRACER_READ_HOOK`). Only the read role has a fallback today: everything else has been a
//! tracepoint since Linux 4.16 or earlier, and the BPF ring buffer (5.8) sets the floor anyway.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{maps::MapType, programs::TracePoint, Ebpf, EbpfLoader};
use tracer_common::{global_names, tp_layout};

use super::btf::KernelBtf;

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Forces the read hook (`syscalls` or `sock_recv_length`), so the fallback path is tested on
/// kernels that have the better one. Not a CLI flag: it exists for tests.
pub const READ_HOOK_ENV: &str = "TRACER_READ_HOOK";

/// A program and the tracepoints (group, event) it attaches to.
type Attachment = (&'static str, &'static [(&'static str, &'static str)]);

/// The read syscalls' entries: they map (tgid, fd) to the socket and count reads in progress
/// (a thread blocked in read() is listening), on both read paths.
const SYSCALL_READ_ENTRIES: &[Attachment] = &[
    (
        "enter_read",
        &[
            ("syscalls", "sys_enter_read"),
            ("syscalls", "sys_enter_readv"),
        ],
    ),
    ("enter_recvfrom", &[("syscalls", "sys_enter_recvfrom")]),
    ("enter_recvmsg", &[("syscalls", "sys_enter_recvmsg")]),
];

/// The read syscalls' exits, on the syscall path only: they end the reads in progress and
/// count each read (with sock_recv_length, `sock_recv` does both).
const SYSCALL_READ_EXITS: &[Attachment] = &[(
    "exit_read",
    &[
        ("syscalls", "sys_exit_read"),
        ("syscalls", "sys_exit_readv"),
        ("syscalls", "sys_exit_recvfrom"),
        ("syscalls", "sys_exit_recvmsg"),
    ],
)];

/// Syscall tracepoints need CONFIG_FTRACE_SYSCALLS (on in every distribution kernel).
const NEEDS_SYSCALL_TRACEPOINTS: &str =
    "syscall tracepoints (a kernel built with CONFIG_FTRACE_SYSCALLS=y, as distribution kernels are)";

/// One way to serve a role.
#[derive(Debug)]
struct HookPath {
    /// Short name, as `TRACER_READ_HOOK` takes it.
    key: &'static str,
    /// The hook as the hooks line and the UI name it.
    hook: &'static str,
    attachments: &'static [&'static [Attachment]],
    /// What a kernel needs for this path, for the error when no path of the role is present.
    needs: &'static str,
    /// Reads are counted at the read syscalls' exits (`READS_FROM_SYSCALLS`).
    reads_from_syscalls: bool,
}

#[derive(Debug)]
struct Role {
    name: &'static str,
    /// Best first.
    paths: &'static [HookPath],
}

const ROLES: &[Role] = &[
    Role {
        name: "connect",
        paths: &[HookPath {
            key: "syscalls",
            hook: "syscalls/sys_enter_connect",
            attachments: &[&[
                ("enter_connect", &[("syscalls", "sys_enter_connect")]),
                ("exit_connect", &[("syscalls", "sys_exit_connect")]),
            ]],
            needs: NEEDS_SYSCALL_TRACEPOINTS,
            reads_from_syscalls: false,
        }],
    },
    Role {
        name: "state",
        paths: &[HookPath {
            key: "inet_sock_set_state",
            hook: "sock/inet_sock_set_state",
            attachments: &[&[("sock_set_state", &[("sock", "inet_sock_set_state")])]],
            needs: "the sock/inet_sock_set_state tracepoint (Linux 4.16 or newer)",
            reads_from_syscalls: false,
        }],
    },
    Role {
        name: "read",
        paths: &[
            HookPath {
                key: "sock_recv_length",
                hook: "sock/sock_recv_length",
                attachments: &[
                    &[("sock_recv", &[("sock", "sock_recv_length")])],
                    SYSCALL_READ_ENTRIES,
                ],
                needs: "the sock/sock_recv_length tracepoint (Linux 6.3 or newer)",
                reads_from_syscalls: false,
            },
            HookPath {
                key: "syscalls",
                hook: "syscalls/sys_exit_read",
                attachments: &[SYSCALL_READ_ENTRIES, SYSCALL_READ_EXITS],
                needs: NEEDS_SYSCALL_TRACEPOINTS,
                reads_from_syscalls: true,
            },
        ],
    },
    Role {
        name: "close",
        paths: &[HookPath {
            key: "syscalls",
            hook: "syscalls/sys_enter_close",
            attachments: &[&[("enter_close", &[("syscalls", "sys_enter_close")])]],
            needs: NEEDS_SYSCALL_TRACEPOINTS,
            reads_from_syscalls: false,
        }],
    },
    Role {
        name: "first_write",
        paths: &[HookPath {
            key: "syscalls",
            hook: "syscalls/sys_enter_write",
            attachments: &[&[
                (
                    "enter_write",
                    &[
                        ("syscalls", "sys_enter_write"),
                        ("syscalls", "sys_enter_sendto"),
                    ],
                ),
                ("enter_writev", &[("syscalls", "sys_enter_writev")]),
                ("enter_sendmsg", &[("syscalls", "sys_enter_sendmsg")]),
            ]],
            needs: NEEDS_SYSCALL_TRACEPOINTS,
            reads_from_syscalls: false,
        }],
    },
];

/// The kernel hook chosen for one role on this machine, for the log, the hooks line and the UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookChoice {
    /// connect, state, read, close or first_write.
    pub role: &'static str,
    /// The tracepoint, as group/event: `sock/sock_recv_length`, `syscalls/sys_exit_read`.
    pub hook: String,
}

/// `connect=syscalls/sys_enter_connect state=sock/inet_sock_set_state read=...`.
pub fn describe_hooks(hooks: &[HookChoice]) -> String {
    hooks
        .iter()
        .map(|h| format!("{}={}", h.role, h.hook))
        .collect::<Vec<_>>()
        .join(" ")
}

fn tracefs_root() -> Result<PathBuf> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    bail!("tracefs is not mounted at /sys/kernel/tracing; run: mount -t tracefs nodev /sys/kernel/tracing")
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The offset of `field` in a tracepoint's format file, if the tracepoint and field exist.
fn format_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        // "const void * skaddr", "__u8 saddr[4]": the name is the last word, minus any [N].
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line
            .split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

/// Why a hook path cannot be used on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Absent {
    /// A tracepoint it attaches to has no format file (group/event).
    Missing(String),
    /// A field the eBPF side reads is elsewhere (or gone) in this kernel's record.
    Layout {
        tracepoint: String,
        field: &'static str,
        expected: usize,
        actual: Option<usize>,
    },
}

/// Checks that every tracepoint of `path` exists and has the layout the eBPF side reads.
/// `format` returns the format file of (group, event), None when the tracepoint is missing.
fn probe(path: &HookPath, format: &dyn Fn(&str, &str) -> Option<String>) -> Result<(), Absent> {
    for (_, tracepoints) in path.attachments.iter().flat_map(|set| set.iter()) {
        for (group, event) in *tracepoints {
            let Some(text) = format(group, event) else {
                return Err(Absent::Missing(format!("{group}/{event}")));
            };
            let fields = tp_layout::CHECKS
                .iter()
                .filter(|(g, e, _, _)| g == group && e == event);
            for (_, _, field, expected) in fields {
                let actual = format_offset(&text, field);
                if actual != Some(*expected) {
                    return Err(Absent::Layout {
                        tracepoint: format!("{group}/{event}"),
                        field,
                        expected: *expected,
                        actual,
                    });
                }
            }
        }
    }
    Ok(())
}

fn absent_error(role: &Role, path: &HookPath, why: Absent, release: &str) -> anyhow::Error {
    match why {
        Absent::Missing(tracepoint) => anyhow!(
            "this kernel ({release}) has no {tracepoint} tracepoint, which tracer's {} hook \
             needs: {}",
            role.name,
            path.needs
        ),
        Absent::Layout {
            tracepoint,
            field,
            expected,
            actual,
        } => anyhow!(
            "the {tracepoint} tracepoint of this kernel ({release}) has field {field} at {}, \
             tracer expects offset {expected}; this kernel is not supported yet (please report it)",
            actual.map_or_else(
                || "no offset (the field is gone)".to_owned(),
                |a| format!("offset {a}")
            )
        ),
    }
}

/// Picks the best present path for each role; `forced_read` (a `HookPath::key`) overrides the
/// read role's choice and must then be present.
fn choose<'a>(
    roles: &'a [Role],
    forced_read: Option<&str>,
    format: &dyn Fn(&str, &str) -> Option<String>,
    release: &str,
) -> Result<Vec<(&'a Role, &'a HookPath)>> {
    let mut chosen = Vec::new();
    for role in roles {
        if let (Some(key), "read") = (forced_read, role.name) {
            let Some(path) = role.paths.iter().find(|p| p.key == key) else {
                let keys: Vec<&str> = role.paths.iter().map(|p| p.key).collect();
                bail!(
                    "{READ_HOOK_ENV}={key} is not a read hook; use one of {} or unset it",
                    keys.join(", ")
                );
            };
            probe(path, format).map_err(|why| absent_error(role, path, why, release))?;
            log::info!("read hook forced by {READ_HOOK_ENV}={key}: {}", path.hook);
            chosen.push((role, path));
            continue;
        }
        let mut last_absent = None;
        let mut found = None;
        for path in role.paths {
            match probe(path, format) {
                Ok(()) => {
                    found = Some(path);
                    break;
                }
                Err(why) => {
                    match &why {
                        Absent::Missing(tp) => {
                            log::info!("{} hook {}: this kernel has no {tp}", role.name, path.hook)
                        }
                        Absent::Layout { .. } => log::warn!(
                            "{} hook {} not used: {}",
                            role.name,
                            path.hook,
                            absent_error(role, path, why.clone(), release)
                        ),
                    }
                    // Report the last resort's problem: the better paths are optional.
                    last_absent = Some((path, why));
                }
            }
        }
        match (found, last_absent) {
            (Some(path), _) => chosen.push((role, path)),
            (None, Some((path, why))) => return Err(absent_error(role, path, why, release)),
            (None, None) => bail!(
                "tracer knows no hook for its {} role (build mismatch)",
                role.name
            ),
        }
    }
    Ok(chosen)
}

/// The read hook a test asked for through `TRACER_READ_HOOK`, if any.
fn forced_read_hook() -> Option<String> {
    std::env::var(READ_HOOK_ENV)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && v != "auto")
}

/// Fails with one line when the kernel lacks what every hook path needs: BTF for the socket
/// offsets, and the BPF ring buffer for events.
fn check_kernel_features(release: &str) -> Result<()> {
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

/// Lets the load work on kernels that still charge BPF memory to RLIMIT_MEMLOCK (before 5.11);
/// newer kernels account it to the memory cgroup and ignore the limit, so failing is fine.
fn raise_memlock_rlimit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if ret != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK (fine on kernels with memcg accounting)");
    }
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
        let format = |group: &str, event: &str| {
            std::fs::read_to_string(root.join("events").join(group).join(event).join("format")).ok()
        };
        for role in ROLES {
            let mut absent = Vec::new();
            let mut chosen = None;
            for path in role.paths {
                match probe(path, &format) {
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

/// Checks the host, picks a hook per role, loads the programs with this kernel's offsets, and
/// attaches the chosen ones. Returns the hooks chosen, in role order.
pub fn load_and_attach(follow_comms: bool) -> Result<(Ebpf, Vec<HookChoice>)> {
    check_privileges()?;
    let tracefs = tracefs_root()?;
    let release = kernel_release();
    // Before the ring buffer probe, which creates a map (charged to the limit before 5.11).
    raise_memlock_rlimit();
    check_kernel_features(&release)?;
    let format = |group: &str, event: &str| {
        std::fs::read_to_string(
            tracefs
                .join("events")
                .join(group)
                .join(event)
                .join("format"),
        )
        .ok()
    };
    let chosen = choose(ROLES, forced_read_hook().as_deref(), &format, &release)?;
    let reads_from_syscalls = u32::from(chosen.iter().any(|(_, path)| path.reads_from_syscalls));
    let btf = KernelBtf::load(Path::new(BTF_PATH))?;
    let rcv_nxt = btf.member_offset("tcp_sock", "rcv_nxt")?;
    let copied_seq = btf.member_offset("tcp_sock", "copied_seq")?;
    // `sk_flags` is a macro for `__sk_common.skc_flags` (include/net/sock.h).
    let sk_flags = btf.member_offset("sock", "__sk_common")?
        + btf.member_offset("sock_common", "skc_flags")?;
    // Whether a socket is non-blocking when it connects (sk->sk_socket->file->f_flags): only
    // an optimisation, so a kernel without one of them traces all the same (0: unknown).
    let optional = |strct: &str, member: &str| {
        btf.member_offset(strct, member)
            .map_err(|e| log::debug!("{e:#}"))
            .unwrap_or(0)
    };
    let sk_socket = optional("sock", "sk_socket");
    let socket_file = optional("socket", "file");
    let file_flags = optional("file", "f_flags");
    let follow = u32::from(follow_comms);

    let mut ebpf = EbpfLoader::new()
        .override_global(global_names::RCV_NXT_OFFSET, &rcv_nxt, true)
        .override_global(global_names::COPIED_SEQ_OFFSET, &copied_seq, true)
        .override_global(global_names::SK_FLAGS_OFFSET, &sk_flags, true)
        .override_global(global_names::SK_SOCKET_OFFSET, &sk_socket, true)
        .override_global(global_names::SOCKET_FILE_OFFSET, &socket_file, true)
        .override_global(global_names::FILE_FLAGS_OFFSET, &file_flags, true)
        .override_global(global_names::FOLLOW_COMMS, &follow, true)
        .override_global(global_names::READS_FROM_SYSCALLS, &reads_from_syscalls, true)
        .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer")))
        .context("loading the eBPF programs into the kernel failed (the kernel's verifier or BPF support refused them)")?;

    // A program may serve two paths (the read syscalls): load and attach it once.
    let mut attached: Vec<&str> = Vec::new();
    let mut hooks = Vec::new();
    for (role, path) in &chosen {
        for (program, tracepoints) in path.attachments.iter().flat_map(|set| set.iter()) {
            if attached.contains(program) {
                continue;
            }
            attached.push(program);
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| {
                    anyhow!("the eBPF object has no program {program} (build mismatch)")
                })?
                .try_into()
                .with_context(|| format!("{program} is not a tracepoint program"))?;
            prog.load()
                .with_context(|| format!("the kernel ({release}) refused the {program} program"))?;
            for (group, event) in *tracepoints {
                prog.attach(group, event).with_context(|| {
                    format!("attaching {program} to the {group}/{event} tracepoint")
                })?;
            }
        }
        log::info!("{} hook: {}", role.name, path.hook);
        hooks.push(HookChoice {
            role: role.name,
            hook: path.hook.to_owned(),
        });
    }
    Ok((ebpf, hooks))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: inet_sock_set_state
ID: 1500
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
";

    #[test]
    fn finds_field_offsets_in_a_format_file() {
        assert_eq!(format_offset(FORMAT, "skaddr"), Some(8));
        assert_eq!(format_offset(FORMAT, "saddr"), Some(32));
        assert_eq!(format_offset(FORMAT, "saddr_v6"), Some(40));
        assert_eq!(format_offset(FORMAT, "daddr"), None);
    }

    /// A format file with every field tracer reads for (group, event) at its expected offset.
    fn good_format(group: &str, event: &str) -> String {
        let mut text = format!("name: {event}\nformat:\n");
        for (_, _, field, offset) in tp_layout::CHECKS
            .iter()
            .filter(|(g, e, _, _)| *g == group && *e == event)
        {
            text.push_str(&format!(
                "\tfield:long {field};\toffset:{offset};\tsize:8;\tsigned:0;\n"
            ));
        }
        text
    }

    /// A kernel with every tracepoint except those listed.
    fn kernel_without(missing: &'static [&'static str]) -> impl Fn(&str, &str) -> Option<String> {
        move |group, event| (!missing.contains(&event)).then(|| good_format(group, event))
    }

    fn hooks_of(chosen: &[(&Role, &HookPath)]) -> String {
        chosen
            .iter()
            .map(|(r, p)| format!("{}={}", r.name, p.hook))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_kernel_with_sock_recv_length_reads_through_it() {
        let chosen = choose(ROLES, None, &kernel_without(&[]), "6.18").unwrap();
        assert_eq!(
            hooks_of(&chosen),
            "connect=syscalls/sys_enter_connect state=sock/inet_sock_set_state \
             read=sock/sock_recv_length close=syscalls/sys_enter_close first_write=syscalls/sys_enter_write"
        );
        assert!(chosen.iter().all(|(_, p)| !p.reads_from_syscalls));
        // sock_recv ends each read: the syscall exits are not hooked at all.
        let read = chosen.iter().find(|(r, _)| r.name == "read").unwrap().1;
        let programs: Vec<&str> = read
            .attachments
            .iter()
            .flat_map(|set| set.iter())
            .map(|(p, _)| *p)
            .collect();
        assert!(programs.contains(&"sock_recv") && programs.contains(&"enter_read"));
        assert!(!programs.contains(&"exit_read"));
    }

    #[test]
    fn a_kernel_before_6_3_reads_through_the_syscalls() {
        let chosen = choose(ROLES, None, &kernel_without(&["sock_recv_length"]), "6.1.0").unwrap();
        let read = chosen.iter().find(|(r, _)| r.name == "read").unwrap().1;
        assert_eq!(read.hook, "syscalls/sys_exit_read");
        assert!(read.reads_from_syscalls);
        // The read syscall programs are attached in both cases; sock_recv only with its hook.
        let programs: Vec<&str> = read
            .attachments
            .iter()
            .flat_map(|set| set.iter())
            .map(|(p, _)| *p)
            .collect();
        assert!(programs.contains(&"exit_read") && !programs.contains(&"sock_recv"));
    }

    #[test]
    fn a_moved_field_falls_back_to_the_syscalls_rather_than_misreading() {
        let format = |group: &str, event: &str| {
            let text = good_format(group, event);
            Some(if event == "sock_recv_length" {
                text.replace("offset:20;", "offset:24;")
            } else {
                text
            })
        };
        let chosen = choose(ROLES, None, &format, "7.0").unwrap();
        assert_eq!(
            chosen.iter().find(|(r, _)| r.name == "read").unwrap().1.key,
            "syscalls"
        );
    }

    #[test]
    fn the_read_hook_can_be_forced() {
        let chosen = choose(ROLES, Some("syscalls"), &kernel_without(&[]), "6.18").unwrap();
        assert!(chosen
            .iter()
            .any(|(r, p)| r.name == "read" && p.reads_from_syscalls));
        let err = choose(
            ROLES,
            Some("sock_recv_length"),
            &kernel_without(&["sock_recv_length"]),
            "6.1.0",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("has no sock/sock_recv_length") && err.contains("Linux 6.3"),
            "{err}"
        );
        let err = choose(ROLES, Some("kprobe"), &kernel_without(&[]), "6.18")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "TRACER_READ_HOOK=kprobe is not a read hook; use one of sock_recv_length, syscalls or unset it");
    }

    #[test]
    fn a_missing_required_hook_is_one_line_naming_the_kernel_it_needs() {
        let err = choose(
            ROLES,
            None,
            &kernel_without(&["inet_sock_set_state"]),
            "4.14.0",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "this kernel (4.14.0) has no sock/inet_sock_set_state tracepoint, which tracer's state \
             hook needs: the sock/inet_sock_set_state tracepoint (Linux 4.16 or newer)"
        );
        let err = choose(ROLES, None, &kernel_without(&["sys_enter_connect"]), "5.10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_FTRACE_SYSCALLS"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn describes_the_hooks_on_one_line() {
        let hooks = [
            HookChoice {
                role: "connect",
                hook: "syscalls/sys_enter_connect".into(),
            },
            HookChoice {
                role: "read",
                hook: "syscalls/sys_exit_read".into(),
            },
        ];
        assert_eq!(
            describe_hooks(&hooks),
            "connect=syscalls/sys_enter_connect read=syscalls/sys_exit_read"
        );
    }

    #[test]
    fn kernel_versions_are_read_from_release_strings() {
        assert_eq!(version_of("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(version_of("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(version_of("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(version_of("unknown"), None);
        assert!(version_of("5.4.0").is_some_and(|v| v < (5, 8)));
    }
}
