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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
