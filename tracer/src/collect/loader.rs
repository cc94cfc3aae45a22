//! Loads the eBPF programs with this kernel's offsets and attaches the hooks chosen for each
//! role (collect::hooks), after the host checks (collect::check) that say in one line what
//! is missing, the kernel that has it, and how to fix it.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use aya::{programs::Program, Ebpf, EbpfLoader};
use tracer_common::global_names;

use super::{
    btf::KernelBtf,
    check::{check_kernel_features, check_privileges, kernel_release, tracefs_root, BTF_PATH},
    hooks::{choose, forced_read_hook, Attachment, KernelView, Need, ROLES},
};

/// The running kernel as the hook choice sees it: tracefs format files and, for raw
/// tracepoints' prototypes, its BTF.
pub(super) struct LiveKernel<'a> {
    pub(super) tracefs: &'a Path,
    pub(super) btf: Option<&'a KernelBtf>,
}

impl KernelView for LiveKernel<'_> {
    fn format(&self, group: &str, event: &str) -> Option<String> {
        let path = self
            .tracefs
            .join("events")
            .join(group)
            .join(event)
            .join("format");
        std::fs::read_to_string(path).ok()
    }

    fn raw_args(&self, event: &str) -> Option<Vec<String>> {
        self.btf?.raw_tracepoint_args(event)
    }

    fn btf_has(&self, need: &Need) -> bool {
        let Some(btf) = self.btf else {
            return false;
        };
        match need {
            Need::Member(strct, member) => btf.member_offset(strct, member).is_ok(),
            Need::Enumerator(name) => btf.enumerator(name).is_some(),
            Need::Arch(_) => false,
        }
    }
}

/// Loads `program` (once: `attached` lists those done) and, unless `defer`, attaches it to
/// `tracepoints` as its type wants: a classic tracepoint by (group, event), a raw one by event.
fn load_program(ebpf: &mut Ebpf, program: &str, release: &str) -> Result<()> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("the eBPF object has no program {program} (build mismatch)"))?;
    let loaded = match prog {
        Program::TracePoint(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        _ => {
            return Err(anyhow!(
                "{program} is not a tracepoint program (build mismatch)"
            ))
        }
    };
    loaded.with_context(|| format!("the kernel ({release}) refused the {program} program"))
}

fn attach_program(ebpf: &mut Ebpf, program: &str, tracepoints: &[(&str, &str)]) -> Result<()> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("the eBPF object has no program {program} (build mismatch)"))?;
    for (group, event) in tracepoints {
        let attached = match prog {
            Program::TracePoint(p) => p.attach(group, event).map(drop),
            Program::RawTracePoint(p) => p.attach(event).map(drop),
            _ => {
                return Err(anyhow!(
                    "{program} is not a tracepoint program (build mismatch)"
                ))
            }
        };
        attached
            .with_context(|| format!("attaching {program} to the {group}/{event} tracepoint"))?;
    }
    Ok(())
}

/// The kernel hook chosen for one role on this machine, for the log, the hooks line and the UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookChoice {
    /// connect, state, read, close or first_write.
    pub role: &'static str,
    /// The tracepoint, as group/event: `sock/sock_recv_length`, `syscalls/sys_exit_read`.
    pub hook: String,
    /// Programs of this role loaded but attached only once a target has a socket whose
    /// reads can wait (`HookPath::on_blocking_reads`), by their first tracepoint.
    pub on_blocking_reads: Option<String>,
}

/// `connect=syscalls/sys_enter_connect state=sock/inet_sock_set_state read=...`; a role with
/// programs deferred until a blocking socket appears says so after a `+`.
pub fn describe_hooks(hooks: &[HookChoice]) -> String {
    hooks
        .iter()
        .map(|h| match &h.on_blocking_reads {
            Some(deferred) => format!("{}={}+{deferred}(on-blocking-socket)", h.role, h.hook),
            None => format!("{}={}", h.role, h.hook),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Programs loaded at start and attached later, when a target has a socket whose reads can
/// wait (`HookPath::on_blocking_reads`): until then a Go relay's reads run one program.
#[derive(Default)]
pub struct DeferredHooks {
    pending: Vec<Attachment>,
}

impl DeferredHooks {
    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Attaches the deferred programs (loaded already); nothing is pending afterwards, even
    /// on an error (which is returned once, for the log).
    pub fn attach(&mut self, ebpf: &mut Ebpf, why: &str) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        for (program, tracepoints) in &pending {
            attach_program(ebpf, program, tracepoints)?;
        }
        if !pending.is_empty() {
            eprintln!(
                "tracer: {why}: attached the read syscalls' entries to count reads in progress"
            );
        }
        Ok(())
    }
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

/// The CPUs the kernel may run programs on (what per-CPU maps hold a value for).
fn cpu_count() -> Result<u32> {
    let cpus = aya::util::nr_cpus()
        .map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))
        .context("counting this machine's CPUs")?;
    Ok(u32::try_from(cpus).unwrap_or(u32::MAX))
}

/// Slots of each CPU's part of the HTTP/2 call-site log (`GO_SITE_LOG`) on this machine: the
/// loader sizes the map with it, the collector reads it by it.
pub fn site_log_per_cpu() -> Result<u32> {
    Ok(tracer_common::go::site_log_per_cpu(cpu_count()?))
}

/// Checks the host, picks a hook per role, loads the programs with this kernel's offsets, and
/// attaches the chosen ones. Returns the hooks chosen, in role order. `sites`: the call-site
/// probes will be attached (`--go-probes sites`), so the state program counts each tracked
/// fd's connects and closes for them (`SITE_FD_GENS`).
pub fn load_and_attach(
    follow_comms: bool,
    sites: bool,
) -> Result<(Ebpf, Vec<HookChoice>, DeferredHooks)> {
    check_privileges()?;
    let tracefs = tracefs_root()?;
    let release = kernel_release();
    // Before the ring buffer probe, which creates a map (charged to the limit before 5.11).
    raise_memlock_rlimit();
    check_kernel_features(&release)?;
    let btf = KernelBtf::load(Path::new(BTF_PATH))?;
    let kernel = LiveKernel {
        tracefs: &tracefs,
        btf: Some(&btf),
    };
    let chosen = choose(ROLES, forced_read_hook().as_deref(), &kernel, &release)?;
    let reads_from_syscalls = u32::from(chosen.iter().any(|(_, path)| path.reads_from_syscalls));
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
    let fd_gens = u32::from(sites);
    // The HTTP/2 call-site log: a part per CPU, allocated only with call sites.
    let (log_mask, log_slots) = if sites {
        let cpus = cpu_count()?;
        let per_cpu = tracer_common::go::site_log_per_cpu(cpus);
        (per_cpu - 1, per_cpu.saturating_mul(cpus))
    } else {
        (0, 1)
    };
    let role_key = |name: &str| {
        chosen
            .iter()
            .find(|(role, _)| role.name == name)
            .map(|(_, path)| path.key)
    };
    // Members and enumerators of a path not chosen stay 0: its programs never read them. A
    // chosen path's are present (the choice checked its `Need`s).
    let offset = |strct: &str, member: &str| btf.member_offset(strct, member).unwrap_or(0);
    let value = |name: &str| btf.enumerator(name).map_or(0, |v| v as u32);
    // One flag for connect and close: both roles take `SYSCALL_REGS_PATH` or neither (the
    // same needs, the same forcing).
    let from_regs = u32::from(role_key("connect") == Some("regs"));
    let writes_from_sock = u32::from(role_key("first_write") == Some("raw_tcp_sendmsg_locked"));
    let (regs_nr, regs_arg0) = (offset("pt_regs", "orig_ax"), offset("pt_regs", "di"));
    let msg_iter = offset("msghdr", "msg_iter");
    let iter_type = offset("iov_iter", "iter_type");
    let iter_iov_offset = offset("iov_iter", "iov_offset");
    let iter_ubuf = offset("iov_iter", "ubuf");
    let iter_count = offset("iov_iter", "count");
    let (ubuf, iovec) = (value("ITER_UBUF"), value("ITER_IOVEC"));
    // `struct sock` begins with its `__sk_common` (include/net/sock.h), whose members the raw
    // state program reads through the socket pointer.
    let common = offset("sock", "__sk_common");
    let sk_common = |member: &str| common + offset("sock_common", member);
    let sk_protocol = offset("sock", "sk_protocol");
    let (skc_family, skc_num, skc_dport) = (
        sk_common("skc_family"),
        sk_common("skc_num"),
        sk_common("skc_dport"),
    );
    let (skc_saddr, skc_daddr) = (sk_common("skc_rcv_saddr"), sk_common("skc_daddr"));
    let (skc_v6_saddr, skc_v6_daddr) = (sk_common("skc_v6_rcv_saddr"), sk_common("skc_v6_daddr"));

    let mut ebpf = EbpfLoader::new()
        .override_global(global_names::RCV_NXT_OFFSET, &rcv_nxt, true)
        .override_global(global_names::COPIED_SEQ_OFFSET, &copied_seq, true)
        .override_global(global_names::SK_FLAGS_OFFSET, &sk_flags, true)
        .override_global(global_names::SK_SOCKET_OFFSET, &sk_socket, true)
        .override_global(global_names::SOCKET_FILE_OFFSET, &socket_file, true)
        .override_global(global_names::FILE_FLAGS_OFFSET, &file_flags, true)
        .override_global(global_names::FOLLOW_COMMS, &follow, true)
        .override_global(global_names::SITE_FD_GENS, &fd_gens, true)
        .override_global(global_names::SITE_LOG_MASK, &log_mask, true)
        .map_max_entries(tracer_common::go::GO_SITE_LOG, log_slots)
        .override_global(global_names::READS_FROM_SYSCALLS, &reads_from_syscalls, true)
        .override_global(global_names::SYSCALL_FROM_REGS, &from_regs, true)
        .override_global(global_names::PT_REGS_NR_OFFSET, &regs_nr, true)
        .override_global(global_names::PT_REGS_ARG0_OFFSET, &regs_arg0, true)
        .override_global(global_names::WRITES_FROM_SOCK, &writes_from_sock, true)
        .override_global(global_names::MSG_ITER_OFFSET, &msg_iter, true)
        .override_global(global_names::ITER_TYPE_OFFSET, &iter_type, true)
        .override_global(global_names::ITER_IOV_OFFSET_OFFSET, &iter_iov_offset, true)
        .override_global(global_names::ITER_UBUF_OFFSET, &iter_ubuf, true)
        .override_global(global_names::ITER_COUNT_OFFSET, &iter_count, true)
        .override_global(global_names::ITER_UBUF, &ubuf, true)
        .override_global(global_names::ITER_IOVEC, &iovec, true)
        .override_global(global_names::SK_PROTOCOL_OFFSET, &sk_protocol, true)
        .override_global(global_names::SKC_FAMILY_OFFSET, &skc_family, true)
        .override_global(global_names::SKC_NUM_OFFSET, &skc_num, true)
        .override_global(global_names::SKC_DPORT_OFFSET, &skc_dport, true)
        .override_global(global_names::SKC_RCV_SADDR_OFFSET, &skc_saddr, true)
        .override_global(global_names::SKC_DADDR_OFFSET, &skc_daddr, true)
        .override_global(global_names::SKC_V6_RCV_SADDR_OFFSET, &skc_v6_saddr, true)
        .override_global(global_names::SKC_V6_DADDR_OFFSET, &skc_v6_daddr, true)
        .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer")))
        .context("loading the eBPF programs into the kernel failed (the kernel's verifier or BPF support refused them)")?;

    // A program may serve two paths (the read syscalls): load and attach it once.
    let mut attached: Vec<&str> = Vec::new();
    let mut hooks = Vec::new();
    let mut deferred = DeferredHooks::default();
    for (role, path) in &chosen {
        let now = path.attachments.iter().flat_map(|set| set.iter());
        let later = path.on_blocking_reads.iter().flat_map(|set| set.iter());
        for (attach_now, (program, tracepoints)) in
            now.map(|a| (true, a)).chain(later.map(|a| (false, a)))
        {
            if attached.contains(program) {
                continue;
            }
            attached.push(program);
            // Deferred programs are loaded now too: a verifier refusal shows at start.
            load_program(&mut ebpf, program, &release)?;
            if !attach_now {
                deferred.pending.push((program, tracepoints));
                continue;
            }
            attach_program(&mut ebpf, program, tracepoints)?;
        }
        let on_blocking_reads = path
            .on_blocking_reads
            .iter()
            .flat_map(|set| set.iter())
            .flat_map(|(_, tps)| tps.iter())
            .next()
            .map(|(group, event)| format!("{group}/{event}"));
        log::info!("{} hook: {}", role.name, path.hook);
        hooks.push(HookChoice {
            role: role.name,
            hook: path.hook.to_owned(),
            on_blocking_reads,
        });
    }
    Ok((ebpf, hooks, deferred))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_hooks_on_one_line() {
        let hooks = [
            HookChoice {
                role: "connect",
                hook: "syscalls/sys_enter_connect".into(),
                on_blocking_reads: None,
            },
            HookChoice {
                role: "read",
                hook: "syscalls/sys_exit_read".into(),
                on_blocking_reads: None,
            },
        ];
        assert_eq!(
            describe_hooks(&hooks),
            "connect=syscalls/sys_enter_connect read=syscalls/sys_exit_read"
        );
        let deferred = [HookChoice {
            role: "read",
            hook: "sock/sock_recv_length".into(),
            on_blocking_reads: Some("syscalls/sys_enter_read".into()),
        }];
        assert_eq!(
            describe_hooks(&deferred),
            "read=sock/sock_recv_length+syscalls/sys_enter_read(on-blocking-socket)"
        );
    }
}
