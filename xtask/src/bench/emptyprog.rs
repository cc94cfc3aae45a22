//! Empty eBPF programs (`r0 = 0; exit`) on the raw tracepoints the tracer runs a program on
//! for every socket read, send and state change: the bench's calibration.
//!
//! kernel.bpf_stats_enabled charges each run the time between two clock reads around the
//! program, so part of what it reports is its own clock (on a VM, where `sched_clock` is a
//! paravirtual read, most of it), and a program that does nothing still reports tens of ns.
//! An empty program on the same hook, under the same load, measures that floor; and with the
//! stats off it measures what merely having a program on the hook costs (the kernel's call).
//!
//! Loaded with two `bpf(2)` calls (BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN) rather than aya:
//! two instructions need no ELF object, and the bench should not build a second one.

use std::{
    collections::BTreeMap,
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Result};

use super::ProgStat;

/// (raw tracepoint, the tracer's program on it) for each per-event hook.
const HOOKS: &[(&str, &str)] = &[
    ("sock_recv_length", "sock_recv"),
    ("tcp_sendmsg_locked", "sock_send"),
    ("inet_sock_set_state", "sock_set_state_raw"),
];

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
/// Large enough for both commands' attributes; the kernel wants the rest zero.
const ATTR_SIZE: usize = 128;

/// The empty programs, attached while this lives (closing the link fds detaches them).
pub struct EmptyPrograms {
    /// (the tracer's program on the same hook, program fd, link fd).
    progs: Vec<(&'static str, OwnedFd, OwnedFd)>,
}

impl EmptyPrograms {
    /// Attaches one empty program to each hook this kernel has (a hook it lacks, the tracer
    /// does not use either: it falls back to another path, which has no calibration).
    pub fn attach() -> Result<EmptyPrograms> {
        let mut progs = Vec::new();
        for (hook, tracer_prog) in HOOKS {
            let prog = load_empty()?;
            match open_raw_tracepoint(hook, &prog) {
                Ok(link) => progs.push((*tracer_prog, prog, link)),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => bail!("attaching an empty program to raw tracepoint {hook}: {e}"),
            }
        }
        Ok(EmptyPrograms { progs })
    }

    /// Counters of the empty program on each hook (kernel.bpf_stats_enabled, from its fd's
    /// fdinfo), keyed by the tracer's program there.
    pub fn counters(&self) -> Result<BTreeMap<String, ProgStat>> {
        let mut out = BTreeMap::new();
        for (name, prog, _) in &self.progs {
            let text = fs::read_to_string(format!("/proc/self/fdinfo/{}", prog.as_raw_fd()))?;
            out.insert((*name).to_owned(), parse_fdinfo(&text));
        }
        Ok(out)
    }
}

/// `run_time_ns` and `run_cnt` of a program fd's fdinfo.
fn parse_fdinfo(text: &str) -> ProgStat {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    ProgStat {
        uprobe: false,
        run_time_ns: field("run_time_ns:"),
        run_cnt: field("run_cnt:"),
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of ATTR_SIZE bytes for `cmd`, and every
    // pointer in it points at memory that outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put(attr: &mut [u8; ATTR_SIZE], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Loads `r0 = 0; exit` as a raw tracepoint program named `bench_empty`.
fn load_empty() -> Result<OwnedFd> {
    // mov64 r0, 0 (opcode 0xb7); exit (0x95): 8 bytes each.
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let mut attr = [0u8; ATTR_SIZE];
    // union bpf_attr for BPF_PROG_LOAD: prog_type u32, insn_cnt u32, insns u64, license u64,
    // log_level u32, log_size u32, log_buf u64, kern_version u32, prog_flags u32,
    // prog_name [16]u8 (at 48).
    put(&mut attr, 0, &BPF_PROG_TYPE_RAW_TRACEPOINT.to_ne_bytes());
    put(&mut attr, 4, &2u32.to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, b"bench_empty");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(e) => bail!("loading an empty raw tracepoint program: {e}"),
    }
}

fn open_raw_tracepoint(name: &str, prog: &OwnedFd) -> std::io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name)?;
    let mut attr = [0u8; ATTR_SIZE];
    // raw_tracepoint: name u64, prog_fd u32.
    put(&mut attr, 0, &(name.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 8, &(prog.as_raw_fd() as u32).to_ne_bytes());
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counters_of_a_program_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t17\nprog_jited:\t1\nprog_tag:\t59f4a931744dcdc6\nmemlock:\t4096\nprog_id:\t12326\nrun_time_ns:\t35401226\nrun_cnt:\t400000\nrecursion_misses:\t0\n";
        assert_eq!(
            parse_fdinfo(text),
            ProgStat {
                uprobe: false,
                run_time_ns: 35_401_226,
                run_cnt: 400_000
            }
        );
        assert_eq!(parse_fdinfo("prog_type:\t17\n"), ProgStat::default());
    }
}
