//! What /proc says about a process: its socket fds, its name and its start time.

use std::collections::HashMap;
use std::io::ErrorKind;

use anyhow::{anyhow, Context, Result};

// The kernel keeps at most TASK_COMM_LEN - 1 = 15 bytes of a process name
// (TASK_COMM_LEN in include/linux/sched.h), so a longer name given by the user can
// only ever match its first 15 bytes.
const COMM_MAX_LEN: usize = 15;

/// Maps socket inode -> fd number for every socket fd of `pid` (reads /proc/PID/fd/*
/// links "socket:[N]").
pub fn socket_inodes(pid: u32) -> Result<HashMap<u64, i32>> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| proc_error(pid, &dir, e))?;
    let mut sockets = HashMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| proc_error(pid, &dir, e))?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let target = match std::fs::read_link(entry.path()) {
            Ok(target) => target,
            // The fd was closed between listing and reading it: it has no socket now.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("reading the link /proc/{pid}/fd/{fd}"))
            }
        };
        if let Some(inode) = target.to_str().and_then(parse_socket_link) {
            sockets.insert(inode, fd);
        }
    }
    Ok(sockets)
}

/// The process's comm (/proc/PID/comm, without its trailing newline).
pub fn comm(pid: u32) -> Result<String> {
    let path = format!("/proc/{pid}/comm");
    let text = std::fs::read_to_string(&path).map_err(|e| proc_error(pid, &path, e))?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// Every pid whose comm equals `name` (scan /proc; skip processes that vanish while
/// scanning). A `name` longer than the kernel's 15-byte comm is matched on its first
/// 15 bytes, since that is all the kernel keeps.
pub fn pids_by_comm(name: &str) -> Result<Vec<u32>> {
    let wanted = truncate_to_comm(name);
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc to find processes by name")? {
        let entry = entry.context("listing /proc to find processes by name")?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = format!("/proc/{pid}/comm");
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim_end_matches('\n') == wanted => pids.push(pid),
            Ok(_) => {}
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// Start time of the process in clock ticks since boot (field 22 of /proc/PID/stat),
/// used to detect pid reuse.
pub fn start_time_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| proc_error(pid, &path, e))?;
    parse_start_time(&stat).with_context(|| format!("parsing {path}"))
}

/// The process's executable as the kernel holds it: readable even when the file was replaced
/// or deleted since it started, and, from the host, inside another mount namespace.
pub fn exe_path(pid: u32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/{pid}/exe"))
}

/// True when the process exists and is not a zombie: a process that exited but was not yet
/// reaped by its parent holds no sockets any more.
pub fn exists(pid: u32) -> bool {
    // /proc/0 does not exist, but keep pid 0 from ever meaning "the caller".
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => process_state(&stat) != Some('Z'),
        Err(_) => false,
    }
}

/// Field 3 of /proc/PID/stat, the process state (R, S, D, Z, ...).
/// The section every Go executable since Go 1.13 has, stripped or not (debug/buildinfo).
const GO_BUILDINFO_SECTION: &[u8] = b".go.buildinfo";

/// True when the process runs a Go program (its executable has Go's build-info section). Go's
/// runtime makes every socket non-blocking. False when unreadable or not a 64-bit ELF file.
pub fn is_go_program(pid: u32) -> bool {
    std::fs::File::open(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|f| elf_has_section(f, GO_BUILDINFO_SECTION))
        .unwrap_or(false)
}

/// True when the 64-bit little-endian ELF file has a section named `name`; None when it is
/// not one. Reads the section headers and their name table only.
fn elf_has_section(file: std::fs::File, name: &[u8]) -> Option<bool> {
    use std::os::unix::fs::FileExt as _;
    let read = |at: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, at).ok()?;
        Some(buf)
    };
    let u16_at =
        |b: &[u8], at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    // Elf64_Ehdr (include/uapi/linux/elf.h): ELFCLASS64 and ELFDATA2LSB at bytes 4 and 5.
    let header = read(0, 64)?;
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize) = (u64_at(&header, 0x28)?, usize::from(u16_at(&header, 0x3a)?));
    let (shnum, shstrndx) = (
        usize::from(u16_at(&header, 0x3c)?),
        u64::from(u16_at(&header, 0x3e)?),
    );
    if shentsize < 0x28 || shnum == 0 || shnum > 4096 {
        return None;
    }
    let sections = read(shoff, shentsize * shnum)?;
    // Elf64_Shdr: sh_name at 0, sh_offset at 0x18, sh_size at 0x20.
    let names_at = usize::try_from(shstrndx).ok()? * shentsize;
    let names_size = u64_at(&sections, names_at + 0x20)?.min(1 << 20);
    let names = read(
        u64_at(&sections, names_at + 0x18)?,
        usize::try_from(names_size).ok()?,
    )?;
    Some((0..shnum).any(|i| {
        u32_at(&sections, i * shentsize)
            .and_then(|at| names.get(usize::try_from(at).ok()?..))
            .is_some_and(|rest| rest.split(|b| *b == 0).next() == Some(name))
    }))
}

fn process_state(stat: &str) -> Option<char> {
    let close = stat.rfind(')')?;
    stat[close + 1..].trim_start().chars().next()
}

fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn parse_start_time(stat: &str) -> Result<u64> {
    // Field 2 is "(comm)" and comm may hold spaces and ')', but nothing after it
    // can hold a ')', so the fields proper start after the last one.
    let close = stat
        .rfind(')')
        .ok_or_else(|| anyhow!("no ')' closing the process name"))?;
    // After ')' come field 3 (state) onwards, so field 22 is the 20th of them.
    let field = stat[close + 1..]
        .split_ascii_whitespace()
        .nth(22 - 3)
        .ok_or_else(|| anyhow!("fewer than 22 fields"))?;
    field
        .parse()
        .with_context(|| format!("field 22 (starttime) is {field:?}, not a number"))
}

fn truncate_to_comm(name: &str) -> &str {
    if name.len() <= COMM_MAX_LEN {
        return name;
    }
    let mut end = COMM_MAX_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

// ESRCH: the process is being torn down and its /proc entries no longer answer.
fn vanished(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Turns a failure to read a /proc file of `pid` into an error a person can act on.
fn proc_error(pid: u32, path: &str, e: std::io::Error) -> anyhow::Error {
    if vanished(&e) && !exists(pid) {
        anyhow!("no process with pid {pid} (is it running? check with: ps -p {pid})")
    } else if e.kind() == ErrorKind::PermissionDenied {
        anyhow!("cannot read {path}: permission denied (run tracer as root)")
    } else {
        anyhow!(e).context(format!("reading {path}"))
    }
}

#[cfg(test)]
// A test fails by panicking, so unwrapping is how it reports.
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn tells_a_go_program_by_its_build_info_section() {
        // This test is Rust: an ELF file with sections, none of them Go's.
        let me = std::fs::File::open("/proc/self/exe").unwrap();
        assert_eq!(elf_has_section(me, b".text"), Some(true));
        assert!(!is_go_program(std::process::id()));
        let not_elf = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(elf_has_section(not_elf, b".text"), None);
        // The fixture relay is Go, when the end-to-end tests built it.
        if let Some(fixture) = std::env::var_os("FIXTURE_BIN") {
            let f = std::fs::File::open(fixture).unwrap();
            assert_eq!(elf_has_section(f, GO_BUILDINFO_SECTION), Some(true));
        }
    }
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    // Pids are at most 2^22 (PID_MAX_LIMIT, include/linux/threads.h), so this one
    // can never exist.
    const BOGUS_PID: u32 = 999_999_999;

    #[test]
    fn finds_own_socket_fd() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode = parse_socket_link(link.to_str().unwrap()).unwrap();
        let sockets = socket_inodes(std::process::id()).unwrap();
        assert_eq!(sockets.get(&inode), Some(&fd));
        // Only sockets: stdin/stdout are not (under cargo test they are pipes or ttys).
        let stdin_link = std::fs::read_link("/proc/self/fd/0");
        if let Ok(l) = stdin_link {
            if !l.to_string_lossy().starts_with("socket:") {
                assert!(!sockets.values().any(|&f| f == 0));
            }
        }
    }

    #[test]
    fn own_comm_and_lookup_by_name() {
        let me = std::process::id();
        let name = comm(me).unwrap();
        assert!(!name.is_empty() && !name.ends_with('\n'));
        let expected = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(name, expected.trim_end_matches('\n'));
        assert!(pids_by_comm(&name).unwrap().contains(&me));
        assert!(!pids_by_comm("no-such-process-name").unwrap().contains(&me));
    }

    #[test]
    fn long_names_match_on_the_kernel_prefix() {
        assert_eq!(truncate_to_comm("relay-upstream-proxy"), "relay-upstream-");
        assert_eq!(truncate_to_comm("short"), "short");
        // 14 ASCII bytes then a 2-byte char: cutting at 15 would split the char.
        assert_eq!(truncate_to_comm("abcdefghijklmné"), "abcdefghijklmn");
    }

    #[test]
    fn own_start_time_is_stable_and_in_the_past() {
        let me = std::process::id();
        let start = start_time_ticks(me).unwrap();
        assert_eq!(start, start_time_ticks(me).unwrap());
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((start as f64) <= (uptime + 1.0) * ticks_per_second);
        // pid 1 started before us.
        assert!(start_time_ticks(1).unwrap() <= start);
    }

    #[test]
    fn start_time_survives_hostile_comm() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".to_string();
        fields[22 - 3] = "123456".to_string();
        let stat = format!("42 (evil) 1 2 (x) ) {}\n", fields.join(" "));
        assert_eq!(parse_start_time(&stat).unwrap(), 123456);
        assert!(parse_start_time("42 (no close paren 1 2 3").is_err());
        assert!(parse_start_time("42 (short) S 1 2").is_err());
    }

    #[test]
    fn bogus_pid_says_so() {
        assert!(exists(std::process::id()));
        assert!(!exists(BOGUS_PID));
        assert!(!exists(0));
        let want = format!(
            "no process with pid {BOGUS_PID} (is it running? check with: ps -p {BOGUS_PID})"
        );
        for e in [
            socket_inodes(BOGUS_PID).unwrap_err(),
            comm(BOGUS_PID).unwrap_err(),
            start_time_ticks(BOGUS_PID).unwrap_err(),
        ] {
            assert_eq!(format!("{e:#}"), want);
        }
    }

    const UNPRIVILEGED_CHILD: &str = "TRACER_PROCFS_TEST_UNPRIVILEGED";

    /// Reading another user's fds must fail with the "run as root" advice. As root we
    /// cannot be refused, so the test re-runs itself as user nobody.
    #[test]
    fn permission_denied_says_run_as_root() {
        let want = "cannot read /proc/1/fd: permission denied (run tracer as root)";
        if std::env::var_os(UNPRIVILEGED_CHILD).is_some() || unsafe { libc::geteuid() } != 0 {
            assert_eq!(format!("{:#}", socket_inodes(1).unwrap_err()), want);
            return;
        }
        use std::os::unix::process::CommandExt;
        // module_path!() starts with the crate name, which test filters leave out.
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let test = format!("{module}::permission_denied_says_run_as_root");
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(UNPRIVILEGED_CHILD, "1")
            .uid(65534)
            .gid(65534)
            .output();
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                println!("skipping: cannot run the test binary as user nobody: {e}");
                return;
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "unprivileged run failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Guard against the filter matching nothing, which would pass vacuously.
        assert!(
            stdout.contains("1 passed"),
            "unprivileged run ran no test:\n{stdout}"
        );
    }

    #[test]
    fn permission_error_text() {
        let e = proc_error(
            1234,
            "/proc/1234/fd",
            std::io::Error::from(ErrorKind::PermissionDenied),
        );
        assert_eq!(
            e.to_string(),
            "cannot read /proc/1234/fd: permission denied (run tracer as root)"
        );
    }

    #[test]
    fn zombies_do_not_exist() {
        assert_eq!(process_state("42 (a) b) Z 1 2 3"), Some('Z'));
        assert_eq!(process_state("42 (relay) S 1 2 3"), Some('S'));
        assert_eq!(process_state("garbage"), None);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it has exited.
        for _ in 0..100 {
            if !exists(pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!exists(pid), "an exited, unreaped child counts as gone");
        child.wait().unwrap();
    }
}
