//! Hook choice: each role (connect, state, read, close, first_write) lists the ways this
//! tracer can serve it, best first (`ROLES`, a table of data, so a new kernel path is a row
//! here and a program on the eBPF side). A way is present when every tracepoint it attaches to
//! has a format file in tracefs and the fields the eBPF side reads sit at the offsets it
//! expects (tracer_common::tp_layout); for a raw tracepoint program, whose arguments are the
//! tracepoint's prototype rather than its record, when the kernel's BTF gives that prototype
//! the argument types it expects (`tp_layout::RAW_ARGS`). The first present way is chosen,
//! unless a test forces another (`TRACER_READ_HOOK`; `syscalls` there puts every role on its
//! last resort, as a kernel before 5.15 without the BTF the better paths read would be). A
//! path may also need things of the kernel's BTF or of the machine (`Need`): the connect and close roles read the
//! syscall's fd from the thread's saved registers at the state change the syscall makes
//! (x86-64, `bpf_task_pt_regs`: Linux 5.15), and the first-write role copies first bytes at
//! `tcp/tcp_sendmsg_locked`, whose message layout comes from BTF; both fall back to syscall
//! tracepoints, which put every syscall of every process on the host through the kernel's
//! slow syscall path while attached. The state role is a raw tracepoint where the kernel's
//! BTF has its prototype and the socket fields it reads, else the classic one (Linux 4.16);
//! the BPF ring buffer (5.8) sets the floor anyway.

use anyhow::{anyhow, bail, Result};
use tracer_common::tp_layout;

/// Forces the read hook (`syscalls`, `sock_recv_length` or `raw_sock_recv_length`), so the
/// fallback paths are tested on kernels that have the better one; `syscalls` puts every role
/// on its last resort (the syscall paths, the classic state tracepoint). Not a CLI flag: it
/// exists for tests.
pub const READ_HOOK_ENV: &str = "TRACER_READ_HOOK";

/// A program and the tracepoints (group, event) it attaches to. Whether it is a classic or a
/// raw tracepoint program is the eBPF object's to say (the loader attaches each as its type
/// wants); `tp_layout::RAW_ARGS` lists the raw ones' expected prototypes.
pub(super) type Attachment = (&'static str, &'static [(&'static str, &'static str)]);

/// What the hook choice asks of the running kernel (tracefs and BTF), so tests can stand in.
pub(super) trait KernelView {
    /// The format file of tracepoint (group, event); None when the kernel has no such one.
    fn format(&self, group: &str, event: &str) -> Option<String>;
    /// The argument types of `event`'s raw tracepoint prototype (see `KernelBtf`); None when
    /// unknown.
    fn raw_args(&self, event: &str) -> Option<Vec<String>>;
    /// Whether the kernel's BTF has this member or enumerator.
    fn btf_has(&self, need: &Need) -> bool;
}

/// What a path needs besides its tracepoints.
#[derive(Debug)]
pub(super) enum Need {
    /// A member of a struct in the kernel's BTF (struct, member).
    Member(&'static str, &'static str),
    /// An enumerator in the kernel's BTF: the helpers a kernel has are `enum bpf_func_id`'s.
    Enumerator(&'static str),
    /// The machine's architecture (`std::env::consts::ARCH`): syscall numbers and registers.
    Arch(&'static str),
}

/// Reading connect()'s and close()'s fd from the thread's saved user registers at the state
/// change they make (eBPF `sock::in_syscall`).
const SYSCALL_REGS: &[Need] = &[
    Need::Arch("x86_64"),
    Need::Enumerator("BPF_FUNC_get_current_task_btf"),
    Need::Enumerator("BPF_FUNC_task_pt_regs"),
    Need::Member("pt_regs", "orig_ax"),
    Need::Member("pt_regs", "di"),
];

/// What `sock_send` reads of the message tcp_sendmsg_locked copies from (eBPF
/// `write::unsent_bytes`).
const MSG_LAYOUT: &[Need] = &[
    Need::Member("msghdr", "msg_iter"),
    Need::Member("iov_iter", "iter_type"),
    Need::Member("iov_iter", "iov_offset"),
    Need::Member("iov_iter", "ubuf"),
    Need::Member("iov_iter", "__iov"),
    Need::Member("iov_iter", "count"),
    Need::Enumerator("ITER_UBUF"),
    Need::Enumerator("ITER_IOVEC"),
];

/// What `sock_set_state_raw` reads of the socket (eBPF `state::Socket`).
const SOCK_FIELDS: &[Need] = &[
    Need::Member("sock", "sk_protocol"),
    Need::Member("sock_common", "skc_family"),
    Need::Member("sock_common", "skc_num"),
    Need::Member("sock_common", "skc_dport"),
    Need::Member("sock_common", "skc_rcv_saddr"),
    Need::Member("sock_common", "skc_daddr"),
    Need::Member("sock_common", "skc_v6_rcv_saddr"),
    Need::Member("sock_common", "skc_v6_daddr"),
];

const NEEDS_SYSCALL_REGS: &str =
    "bpf_task_pt_regs (Linux 5.15 or newer) and the kernel's struct pt_regs in BTF, on x86-64";

/// The read syscalls' entries: they map (tgid, fd) to the socket and count reads in progress
/// (a thread blocked in read() is listening). On the syscall path from the start; with
/// sock_recv_length deferred until a target has a socket whose reads can wait.
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
pub(super) struct HookPath {
    /// Short name, as `TRACER_READ_HOOK` takes it.
    pub(super) key: &'static str,
    /// The hook as the hooks line and the UI name it.
    pub(super) hook: &'static str,
    pub(super) attachments: &'static [&'static [Attachment]],
    /// Loaded at start but attached only once a target has a socket whose reads can wait in
    /// the kernel (blocking at connect, or a read that waited), or a target is not a Go
    /// program: Go's sockets are all non-blocking, so a Go relay never needs them.
    pub(super) on_blocking_reads: &'static [&'static [Attachment]],
    /// What a kernel needs for this path, for the error when no path of the role is present.
    pub(super) needs: &'static str,
    /// Reads are counted at the read syscalls' exits (`READS_FROM_SYSCALLS`).
    pub(super) reads_from_syscalls: bool,
    /// What else the path needs of the kernel or the machine.
    pub(super) requires: &'static [Need],
}

#[derive(Debug)]
pub(super) struct Role {
    pub(super) name: &'static str,
    /// Best first.
    pub(super) paths: &'static [HookPath],
}

/// The connect and close roles' better path: the syscall's fd read from the thread's saved
/// registers by the state program, at the state change the syscall makes before it returns;
/// nothing attached of its own, no hook on the syscall.
const SYSCALL_REGS_PATH: HookPath = HookPath {
    key: "regs",
    hook: "inet_sock_set_state+task_pt_regs",
    attachments: &[],
    on_blocking_reads: &[],
    needs: NEEDS_SYSCALL_REGS,
    reads_from_syscalls: false,
    requires: SYSCALL_REGS,
};

pub(super) const ROLES: &[Role] = &[
    Role {
        name: "connect",
        paths: &[
            // connect()'s fd read at SYN_SENT, which connect() reaches before it returns.
            SYSCALL_REGS_PATH,
            HookPath {
            key: "syscalls",
            hook: "syscalls/sys_enter_connect",
            attachments: &[&[
                ("enter_connect", &[("syscalls", "sys_enter_connect")]),
                ("exit_connect", &[("syscalls", "sys_exit_connect")]),
            ]],
            on_blocking_reads: &[],
            needs: NEEDS_SYSCALL_TRACEPOINTS,
            reads_from_syscalls: false,
            requires: &[],
        },
        ],
    },
    Role {
        name: "state",
        paths: &[
            // The same tracepoint, called directly with the kernel's own arguments: no trace
            // record is filled for the state changes of every TCP socket on the host.
            HookPath {
                key: "raw_inet_sock_set_state",
                hook: "raw_tp/inet_sock_set_state",
                attachments: &[&[("sock_set_state_raw", &[("sock", "inet_sock_set_state")])]],
                on_blocking_reads: &[],
                needs: "the sock/inet_sock_set_state tracepoint (Linux 4.16 or newer) with its prototype and struct sock_common in the kernel's BTF",
                reads_from_syscalls: false,
                requires: SOCK_FIELDS,
            },
            HookPath {
            key: "inet_sock_set_state",
            hook: "sock/inet_sock_set_state",
            attachments: &[&[("sock_set_state", &[("sock", "inet_sock_set_state")])]],
            on_blocking_reads: &[],
            needs: "the sock/inet_sock_set_state tracepoint (Linux 4.16 or newer)",
            reads_from_syscalls: false,
            requires: &[],
        },
        ],
    },
    Role {
        name: "read",
        paths: &[
            // The same tracepoint, called directly with the kernel's own arguments: no trace
            // record is filled for it, and the program needs no protocol check (the socket
            // filter answers for non-TCP sockets too).
            HookPath {
                key: "raw_sock_recv_length",
                hook: "raw_tp/sock_recv_length",
                attachments: &[&[("sock_recv", &[("sock", "sock_recv_length")])]],
                on_blocking_reads: &[SYSCALL_READ_ENTRIES],
                needs: "the sock/sock_recv_length tracepoint (Linux 6.3 or newer) with its prototype in the kernel's BTF",
                reads_from_syscalls: false,
                requires: &[],
            },
            HookPath {
                key: "sock_recv_length",
                hook: "sock/sock_recv_length",
                attachments: &[&[("sock_recv_tp", &[("sock", "sock_recv_length")])]],
                on_blocking_reads: &[SYSCALL_READ_ENTRIES],
                needs: "the sock/sock_recv_length tracepoint (Linux 6.3 or newer)",
                reads_from_syscalls: false,
                requires: &[],
            },
            HookPath {
                key: "syscalls",
                hook: "syscalls/sys_exit_read",
                attachments: &[SYSCALL_READ_ENTRIES, SYSCALL_READ_EXITS],
                on_blocking_reads: &[],
                needs: NEEDS_SYSCALL_TRACEPOINTS,
                reads_from_syscalls: true,
                requires: &[],
            },
        ],
    },
    Role {
        name: "close",
        paths: &[
            // close()'s fd read at the state change tcp_close makes before close() returns.
            SYSCALL_REGS_PATH,
            HookPath {
                key: "syscalls",
                hook: "syscalls/sys_enter_close",
                attachments: &[&[("enter_close", &[("syscalls", "sys_enter_close")])]],
                on_blocking_reads: &[],
                needs: NEEDS_SYSCALL_TRACEPOINTS,
                reads_from_syscalls: false,
                requires: &[],
            },
        ],
    },
    Role {
        name: "first_write",
        paths: &[
            // Every TCP send, keyed by socket, before its bytes are copied.
            HookPath {
                key: "raw_tcp_sendmsg_locked",
                hook: "raw_tp/tcp_sendmsg_locked",
                attachments: &[&[("sock_send", &[("tcp", "tcp_sendmsg_locked")])]],
                on_blocking_reads: &[],
                needs: "the tcp/tcp_sendmsg_locked tracepoint (Linux 6.16 or newer) with its prototype and struct iov_iter in the kernel's BTF",
                reads_from_syscalls: false,
                requires: MSG_LAYOUT,
            },
            HookPath {
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
            on_blocking_reads: &[],
            needs: NEEDS_SYSCALL_TRACEPOINTS,
            reads_from_syscalls: false,
            requires: &[],
        },
        ],
    },
];

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
pub(super) enum Absent {
    /// A tracepoint it attaches to has no format file (group/event).
    Missing(String),
    /// A field the eBPF side reads is elsewhere (or gone) in this kernel's record.
    Layout {
        tracepoint: String,
        field: &'static str,
        expected: usize,
        actual: Option<usize>,
    },
    /// Something the path needs of the kernel's BTF or of the machine is not there.
    Lacks(String),
    /// A raw tracepoint's prototype is not the one its program reads (or is unknown).
    Prototype {
        tracepoint: String,
        expected: Vec<String>,
        actual: Option<Vec<String>>,
    },
}

/// Checks that every tracepoint of `path` exists and has the layout (or, for a raw tracepoint
/// program, the prototype) the eBPF side reads.
pub(super) fn probe(path: &HookPath, kernel: &dyn KernelView) -> Result<(), Absent> {
    for need in path.requires {
        let present = match need {
            Need::Arch(arch) => std::env::consts::ARCH == *arch,
            Need::Member(..) | Need::Enumerator(_) => kernel.btf_has(need),
        };
        if !present {
            return Err(Absent::Lacks(match need {
                Need::Arch(arch) => format!("runs on {arch} only"),
                Need::Member(strct, member) => {
                    format!("needs {strct}.{member} in the kernel's BTF")
                }
                Need::Enumerator(name) => format!("needs {name} in the kernel's BTF"),
            }));
        }
    }
    let all = path.attachments.iter().chain(path.on_blocking_reads);
    for (program, tracepoints) in all.flat_map(|set| set.iter()) {
        for (group, event) in *tracepoints {
            let Some(text) = kernel.format(group, event) else {
                return Err(Absent::Missing(format!("{group}/{event}")));
            };
            let raw = tp_layout::RAW_ARGS
                .iter()
                .find(|(p, e, _)| p == program && e == event);
            if let Some((_, _, expected)) = raw {
                let actual = kernel.raw_args(event);
                if actual.as_deref().is_none_or(|a| a != *expected) {
                    return Err(Absent::Prototype {
                        tracepoint: format!("{group}/{event}"),
                        expected: expected.iter().map(|a| (*a).to_owned()).collect(),
                        actual,
                    });
                }
                continue;
            }
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

pub(super) fn absent_error(
    role: &Role,
    path: &HookPath,
    why: Absent,
    release: &str,
) -> anyhow::Error {
    match why {
        Absent::Lacks(what) => anyhow!(
            "tracer's {} hook {} {what}, which this kernel ({release}) lacks: it needs {}",
            role.name,
            path.hook,
            path.needs
        ),
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
        Absent::Prototype {
            tracepoint,
            expected,
            actual,
        } => anyhow!(
            "the {tracepoint} tracepoint of this kernel ({release}) has {}, tracer's raw \
             tracepoint program expects ({}); this kernel is not supported on that path",
            actual.map_or_else(
                || "no prototype in the kernel's BTF".to_owned(),
                |a| format!("arguments ({})", a.join(", "))
            ),
            expected.join(", ")
        ),
    }
}

/// Picks the best present path for each role; `forced_read` (a `HookPath::key`) overrides the
/// read role's choice and must then be present.
pub(super) fn choose<'a>(
    roles: &'a [Role],
    forced_read: Option<&str>,
    kernel: &dyn KernelView,
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
            probe(path, kernel).map_err(|why| absent_error(role, path, why, release))?;
            log::info!("read hook forced by {READ_HOOK_ENV}={key}: {}", path.hook);
            chosen.push((role, path));
            continue;
        }
        // `syscalls` stands for a kernel where nothing better is usable: every role takes its
        // last resort (the syscall paths, the classic state tracepoint), so those paths are
        // tested on any kernel.
        if let (Some("syscalls"), Some(path)) = (forced_read, role.paths.last()) {
            probe(path, kernel).map_err(|why| absent_error(role, path, why, release))?;
            log::info!(
                "{} hook forced by {READ_HOOK_ENV}=syscalls: {}",
                role.name,
                path.hook
            );
            chosen.push((role, path));
            continue;
        }
        let mut last_absent = None;
        let mut found = None;
        for path in role.paths {
            match probe(path, kernel) {
                Ok(()) => {
                    found = Some(path);
                    break;
                }
                Err(why) => {
                    match &why {
                        Absent::Missing(tp) => {
                            log::info!("{} hook {}: this kernel has no {tp}", role.name, path.hook)
                        }
                        Absent::Lacks(what) => {
                            log::info!("{} hook {} not used: {what}", role.name, path.hook)
                        }
                        Absent::Layout { .. } | Absent::Prototype { .. } => log::warn!(
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
pub(super) fn forced_read_hook() -> Option<String> {
    std::env::var(READ_HOOK_ENV)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && v != "auto")
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

    /// A kernel's tracefs formats, whether its BTF has the raw tracepoints' prototypes, and
    /// the members and enumerators it lacks (all others are there).
    struct FakeKernel<F> {
        format: F,
        prototypes: bool,
        btf_lacks: &'static [&'static str],
    }

    impl<F: Fn(&str, &str) -> Option<String>> KernelView for FakeKernel<F> {
        fn format(&self, group: &str, event: &str) -> Option<String> {
            (self.format)(group, event)
        }
        fn raw_args(&self, event: &str) -> Option<Vec<String>> {
            let exists = ["sock", "tcp"]
                .iter()
                .any(|group| (self.format)(group, event).is_some());
            if !self.prototypes || !exists {
                return None;
            }
            tp_layout::RAW_ARGS
                .iter()
                .find(|(_, e, _)| *e == event)
                .map(|(_, _, args)| args.iter().map(|a| (*a).to_owned()).collect())
        }
        fn btf_has(&self, need: &Need) -> bool {
            let name = match need {
                Need::Member(_, member) => *member,
                Need::Enumerator(name) => *name,
                Need::Arch(_) => return false,
            };
            !self.btf_lacks.contains(&name)
        }
    }

    /// A kernel with every tracepoint except those listed.
    fn kernel_without(
        missing: &'static [&'static str],
    ) -> FakeKernel<impl Fn(&str, &str) -> Option<String>> {
        FakeKernel {
            format: move |group: &str, event: &str| {
                (!missing.contains(&event)).then(|| good_format(group, event))
            },
            prototypes: true,
            btf_lacks: &[],
        }
    }

    fn hooks_of(chosen: &[(&Role, &HookPath)]) -> String {
        chosen
            .iter()
            .map(|(r, p)| format!("{}={}", r.name, p.hook))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_new_kernel_hooks_no_syscall() {
        let chosen = choose(ROLES, None, &kernel_without(&[]), "6.18").unwrap();
        assert_eq!(
            hooks_of(&chosen),
            "connect=inet_sock_set_state+task_pt_regs state=raw_tp/inet_sock_set_state \
             read=raw_tp/sock_recv_length close=inet_sock_set_state+task_pt_regs \
             first_write=raw_tp/tcp_sendmsg_locked"
        );
        let programs: Vec<&str> = chosen
            .iter()
            .flat_map(|(_, p)| p.attachments.iter().flat_map(|set| set.iter()))
            .flat_map(|(_, tps)| tps.iter().map(|(group, _)| *group))
            .collect();
        assert!(!programs.contains(&"syscalls"), "{programs:?}");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn each_socket_path_falls_back_to_its_syscalls_alone() {
        // 6.12: no tcp_sendmsg_locked tracepoint; registers as on 6.18.
        let chosen = choose(
            ROLES,
            None,
            &kernel_without(&["tcp_sendmsg_locked"]),
            "6.12",
        )
        .unwrap();
        assert_eq!(
            hooks_of(&chosen),
            "connect=inet_sock_set_state+task_pt_regs state=raw_tp/inet_sock_set_state \
             read=raw_tp/sock_recv_length close=inet_sock_set_state+task_pt_regs \
             first_write=syscalls/sys_enter_write"
        );
        // A kernel before 5.15 has no bpf_task_pt_regs; one whose iov_iter moved its buffer
        // elsewhere cannot be read at tcp_sendmsg_locked, nor one without IPv6 (no
        // skc_v6_daddr) the socket by the raw state program.
        let kernel = FakeKernel {
            format: |group: &str, event: &str| Some(good_format(group, event)),
            prototypes: true,
            btf_lacks: &["BPF_FUNC_task_pt_regs", "ubuf", "skc_v6_daddr"],
        };
        let chosen = choose(ROLES, None, &kernel, "5.10").unwrap();
        assert_eq!(
            hooks_of(&chosen),
            "connect=syscalls/sys_enter_connect state=sock/inet_sock_set_state \
             read=raw_tp/sock_recv_length close=syscalls/sys_enter_close \
             first_write=syscalls/sys_enter_write"
        );
    }

    #[test]
    fn a_kernel_with_sock_recv_length_reads_through_it() {
        let chosen = choose(ROLES, None, &kernel_without(&[]), "6.18").unwrap();
        assert!(chosen.iter().all(|(_, p)| !p.reads_from_syscalls));
        // sock_recv ends each read: the syscall exits are not hooked at all.
        let read = chosen.iter().find(|(r, _)| r.name == "read").unwrap().1;
        let programs: Vec<&str> = read
            .attachments
            .iter()
            .flat_map(|set| set.iter())
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(programs, ["sock_recv"]);
        // Go's sockets never wait in read(): the entries wait for a socket whose reads can.
        assert!(!programs.contains(&"enter_read"));
        let deferred: Vec<&str> = read
            .on_blocking_reads
            .iter()
            .flat_map(|set| set.iter())
            .map(|(p, _)| *p)
            .collect();
        assert!(deferred.contains(&"enter_read"));
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
        assert!(
            programs.contains(&"exit_read")
                && !programs.contains(&"sock_recv")
                && !programs.contains(&"sock_recv_tp")
        );
        // exit_read needs every read noted at entry: nothing deferred.
        assert!(programs.contains(&"enter_read") && read.on_blocking_reads.is_empty());
    }

    #[test]
    fn a_moved_field_falls_back_to_the_syscalls_rather_than_misreading() {
        let moved = |group: &str, event: &str| {
            let text = good_format(group, event);
            Some(if event == "sock_recv_length" {
                text.replace("offset:20;", "offset:24;")
            } else {
                text
            })
        };
        let read_key = |kernel: &dyn KernelView| {
            choose(ROLES, None, kernel, "7.0")
                .unwrap()
                .iter()
                .find(|(r, _)| r.name == "read")
                .unwrap()
                .1
                .key
        };
        // The raw tracepoint reads the prototype, not the record: a moved field is no matter.
        let kernel = FakeKernel {
            format: moved,
            prototypes: true,
            btf_lacks: &[],
        };
        assert_eq!(read_key(&kernel), "raw_sock_recv_length");
        // Without the prototype in BTF the record is read, and a moved field rules it out.
        let kernel = FakeKernel {
            format: moved,
            prototypes: false,
            btf_lacks: &[],
        };
        assert_eq!(read_key(&kernel), "syscalls");
    }

    #[test]
    fn a_changed_prototype_rules_out_the_raw_tracepoint() {
        struct Changed;
        impl KernelView for Changed {
            fn format(&self, group: &str, event: &str) -> Option<String> {
                Some(good_format(group, event))
            }
            fn raw_args(&self, _: &str) -> Option<Vec<String>> {
                Some(vec!["struct sock *".into(), "int".into()])
            }
            fn btf_has(&self, _: &Need) -> bool {
                true
            }
        }
        let chosen = choose(ROLES, None, &Changed, "7.0").unwrap();
        let read = chosen.iter().find(|(r, _)| r.name == "read").unwrap().1;
        assert_eq!(read.key, "sock_recv_length");
        let err = choose(ROLES, Some("raw_sock_recv_length"), &Changed, "7.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("arguments (struct sock *, int)")
                && err.contains("(struct sock *, int, int)"),
            "{err}"
        );
    }

    #[test]
    fn the_read_hook_can_be_forced() {
        let chosen = choose(ROLES, Some("syscalls"), &kernel_without(&[]), "6.18").unwrap();
        assert!(chosen
            .iter()
            .any(|(r, p)| r.name == "read" && p.reads_from_syscalls));
        // `syscalls` is the picture of a kernel before 5.15: every role that can, on syscalls.
        assert_eq!(
            hooks_of(&chosen),
            "connect=syscalls/sys_enter_connect state=sock/inet_sock_set_state \
             read=syscalls/sys_exit_read close=syscalls/sys_enter_close \
             first_write=syscalls/sys_enter_write"
        );
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
        assert_eq!(err, "TRACER_READ_HOOK=kprobe is not a read hook; use one of raw_sock_recv_length, sock_recv_length, syscalls or unset it");
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
        // Without bpf_task_pt_regs (before 5.15), connect() needs its syscall tracepoint.
        let kernel = FakeKernel {
            format: |group: &str, event: &str| {
                (event != "sys_enter_connect").then(|| good_format(group, event))
            },
            prototypes: true,
            btf_lacks: &["BPF_FUNC_task_pt_regs"],
        };
        let err = choose(ROLES, None, &kernel, "5.10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_FTRACE_SYSCALLS"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }
}
