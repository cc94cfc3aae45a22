//! Checks that this host can run the tracer, then loads and attaches the eBPF programs.
//! Every failure here is one line that names what is missing and how to fix it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{programs::TracePoint, Ebpf, EbpfLoader};
use tracer_common::{global_names, tp_layout};

use super::btf::KernelBtf;

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Each program and the tracepoints it attaches to.
const ATTACHMENTS: &[(&str, &[(&str, &str)])] = &[
    ("enter_connect", &[("syscalls", "sys_enter_connect")]),
    ("exit_connect", &[("syscalls", "sys_exit_connect")]),
    ("sock_set_state", &[("sock", "inet_sock_set_state")]),
    ("sock_recv", &[("sock", "sock_recv_length")]),
    (
        "enter_read",
        &[
            ("syscalls", "sys_enter_read"),
            ("syscalls", "sys_enter_readv"),
            ("syscalls", "sys_enter_recvfrom"),
            ("syscalls", "sys_enter_recvmsg"),
        ],
    ),
    (
        "exit_read",
        &[
            ("syscalls", "sys_exit_read"),
            ("syscalls", "sys_exit_readv"),
            ("syscalls", "sys_exit_recvfrom"),
            ("syscalls", "sys_exit_recvmsg"),
        ],
    ),
    ("enter_close", &[("syscalls", "sys_enter_close")]),
];

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
        let offset = line.split(';').find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

/// Verifies the tracepoints exist and their records are laid out as the eBPF side reads them.
fn check_tracepoints(tracefs: &Path) -> Result<()> {
    for (group, event, field, offset) in tp_layout::CHECKS {
        let path = tracefs.join("events").join(group).join(event).join("format");
        let format = match std::fs::read_to_string(&path) {
            Ok(format) => format,
            Err(_) if *event == "sock_recv_length" => bail!(
                "this kernel ({}) has no sock/sock_recv_length tracepoint (added in Linux 6.3); \
                 tracer needs Linux 6.3 or newer for now",
                kernel_release()
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "the tracepoint {group}/{event} is missing ({}); tracer needs a kernel \
                         with CONFIG_FTRACE_SYSCALLS and tracepoints",
                        path.display()
                    )
                })
            }
        };
        match format_offset(&format, field) {
            Some(actual) if actual == *offset => {}
            actual => bail!(
                "the {group}/{event} tracepoint of this kernel ({}) has field {field} at {:?}, \
                 tracer expects offset {offset}; this kernel is not supported yet (please report it)",
                kernel_release(),
                actual
            ),
        }
    }
    Ok(())
}

/// Lets the load work on kernels that still charge BPF memory to RLIMIT_MEMLOCK (before 5.11);
/// newer kernels account it to the memory cgroup and ignore the limit, so failing is fine.
fn raise_memlock_rlimit() {
    let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if ret != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK (fine on kernels with memcg accounting)");
    }
}

pub fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tracer loads eBPF programs and needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN); run it with sudo")
    }
    Ok(())
}

/// Checks the host, loads the programs with this kernel's offsets, and attaches them all.
pub fn load_and_attach(follow_comms: bool) -> Result<Ebpf> {
    check_privileges()?;
    let tracefs = tracefs_root()?;
    check_tracepoints(&tracefs)?;
    let btf = KernelBtf::load(Path::new(BTF_PATH))?;
    let rcv_nxt = btf.member_offset("tcp_sock", "rcv_nxt")?;
    let copied_seq = btf.member_offset("tcp_sock", "copied_seq")?;
    // `sk_flags` is a macro for `__sk_common.skc_flags` (include/net/sock.h).
    let sk_flags = btf.member_offset("sock", "__sk_common")? + btf.member_offset("sock_common", "skc_flags")?;
    let follow = u32::from(follow_comms);
    raise_memlock_rlimit();

    let mut ebpf = EbpfLoader::new()
        .override_global(global_names::RCV_NXT_OFFSET, &rcv_nxt, true)
        .override_global(global_names::COPIED_SEQ_OFFSET, &copied_seq, true)
        .override_global(global_names::SK_FLAGS_OFFSET, &sk_flags, true)
        .override_global(global_names::FOLLOW_COMMS, &follow, true)
        .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer")))
        .context("loading the eBPF programs into the kernel failed (the kernel's verifier or BPF support refused them)")?;

    for (program, tracepoints) in ATTACHMENTS {
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("the eBPF object has no program {program} (build mismatch)"))?
            .try_into()
            .with_context(|| format!("{program} is not a tracepoint program"))?;
        prog.load().with_context(|| format!("the kernel refused the {program} program"))?;
        for (group, event) in *tracepoints {
            prog.attach(group, event)
                .with_context(|| format!("attaching {program} to the {group}/{event} tracepoint"))?;
        }
    }
    Ok(ebpf)
}

#[cfg(test)]
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
}
