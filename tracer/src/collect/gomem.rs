//! Reads a target's memory for the Go layer's stream reader (goprobe/h2mem.rs): `/proc/PID/mem`,
//! which the kernel lets a process with ptrace rights over the target read (root, or
//! CAP_SYS_PTRACE; Yama's ptrace_scope 3 forbids it for everyone). Reads only: the target is
//! never stopped, written or signalled.

use std::{fs::File, io, os::unix::fs::FileExt as _};

use crate::goprobe::h2mem::{MemError, Memory};

pub struct ProcessMemory {
    file: File,
}

impl ProcessMemory {
    pub fn open(pid: u32) -> io::Result<Self> {
        Ok(Self {
            file: File::open(format!("/proc/{pid}/mem"))?,
        })
    }
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.file
            .read_exact_at(buf, addr)
            .map_err(|e| MemError::Unreadable {
                addr,
                len: buf.len(),
                why: e.to_string(),
            })
    }
}

/// Every socket of `pid` registered with one of its epoll instances, with the registration's
/// data word (Go's netpoller stores its per-fd pollDesc there), from `/proc/PID/fdinfo`.
pub fn epoll_sockets(pid: u32) -> anyhow::Result<Vec<(i32, u64)>> {
    let sockets: std::collections::HashSet<i32> =
        super::procfs::socket_inodes(pid)?.into_values().collect();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if link.as_os_str() != "anon_inode:[eventpoll]" {
            continue;
        }
        let name = entry.file_name();
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", name.to_string_lossy()))
        else {
            continue;
        };
        out.extend(
            parse_epoll_fdinfo(&info)
                .into_iter()
                .filter(|(fd, _)| sockets.contains(fd)),
        );
    }
    Ok(out)
}

/// `tfd:        7 events:       19 data:     7f3a00000007  pos:0 ino:... sdev:...` lines.
fn parse_epoll_fdinfo(text: &str) -> Vec<(i32, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut fd = None;
            let mut data = None;
            while let Some(word) = words.next() {
                match word {
                    "tfd:" => fd = words.next().and_then(|w| w.parse::<i32>().ok()),
                    "data:" => data = words.next().and_then(|w| u64::from_str_radix(w, 16).ok()),
                    _ => {}
                }
            }
            Some((fd?, data?))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_epoll_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n\
                    tfd:        3 events: 80000019 data: ffffffffffffffff  pos:0 ino:3fc sdev:d\n\
                    tfd:        7 events: 80002019 data:     7f3a00000007  pos:0 ino:1 sdev:9\n";
        assert_eq!(
            parse_epoll_fdinfo(text),
            [(3, u64::MAX), (7, 0x7f3a_0000_0007)]
        );
    }

    #[test]
    fn reads_its_own_memory_and_refuses_unmapped_addresses() {
        let value: u64 = 0x1122_3344_5566_7788;
        let mem = ProcessMemory::open(std::process::id()).unwrap();
        let mut buf = [0u8; 8];
        mem.read(&value as *const u64 as u64, &mut buf).unwrap();
        assert_eq!(u64::from_ne_bytes(buf), value);
        assert!(matches!(
            mem.read(8, &mut buf),
            Err(MemError::Unreadable {
                addr: 8,
                len: 8,
                ..
            })
        ));
    }
}
