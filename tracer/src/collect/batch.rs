//! Reads a whole BPF hash map with BPF_MAP_LOOKUP_BATCH (Linux 5.6): a few syscalls per
//! thousands of entries, where aya's map iterator makes two per entry (next key, then lookup)
//! — 200k syscalls a second at 100k tracked connections. aya has no batch API, hence this.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsFd as _, AsRawFd, BorrowedFd},
};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{HashMap, Map, MapData},
    Pod,
};

/// `BPF_MAP_LOOKUP_BATCH` (uapi/linux/bpf.h, enum bpf_cmd).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call. A hash map returns whole buckets, and fails with ENOSPC only
/// when one bucket holds more than this, which a hashed map of this size never does.
const ENTRIES_PER_CALL: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// What a batch read found out about the kernel.
#[derive(Debug)]
pub enum BatchError {
    /// The kernel has no batch lookup for this map (before 5.6): read it another way.
    Unsupported,
    Io(io::Error),
}

/// Calls `each` with every (key, value) of the hash map behind `map`, a few thousand entries
/// per syscall, through one reused buffer (a copy of the whole map would be tens of MB at
/// 100k connections). Entries added or removed while it runs may or may not be seen; each
/// entry seen is whole (copied under its bucket's lock).
pub fn for_each<K: Pod + Default, V: Pod>(
    map: BorrowedFd<'_>,
    mut each: impl FnMut(K, &V),
) -> Result<(), BatchError> {
    let mut keys: Vec<K> = vec![K::default(); ENTRIES_PER_CALL];
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(ENTRIES_PER_CALL);
    // The token is the next bucket index for hash maps (a u32); u64 leaves room.
    let mut token: u64 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token as *const u64 as u64
            },
            out_batch: &mut token as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: ENTRIES_PER_CALL as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid bpf_attr prefix the kernel reads and writes (count,
        // out_batch); `keys` and `values` have room for `count` entries of the map's key and
        // value sizes (K and V are the map's types, checked when the map was opened), and the
        // kernel writes no more than `count` entries.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let err = (ret < 0).then(io::Error::last_os_error);
        let done = match &err {
            None => false,
            // The end of the map: this call's entries are still valid.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            // EINVAL: no batch ops for this map type; ENOTSUPP (524): not in this kernel.
            Some(e) if first && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(524)) => {
                return Err(BatchError::Unsupported)
            }
            Some(_) => return Err(BatchError::Io(err.unwrap_or_else(io::Error::last_os_error))),
        };
        let filled = (attr.count as usize).min(ENTRIES_PER_CALL);
        for (i, key) in keys.iter().take(filled).enumerate() {
            // SAFETY: the kernel wrote `filled` values, one per key, at the start of the
            // buffer; the pointer stays inside the allocation of ENTRIES_PER_CALL values.
            let value = unsafe { &*values.as_ptr().add(i).cast::<V>() };
            each(*key, value);
        }
        if done {
            return Ok(());
        }
        first = false;
    }
}

/// Every entry of a hash map (`HashMap` or `LruHashMap` of keys `K` and values `V`, checked
/// against the map's sizes): in batches, or entry by entry on kernels without batch lookups
/// (before 5.6). `what` names the map in an error.
pub fn entries<K: Pod + Default, V: Pod>(map: &Map, what: &str) -> Result<Vec<(K, V)>> {
    let typed: HashMap<&MapData, K, V> = map
        .try_into()
        .with_context(|| format!("opening the {what} map"))?;
    let mut out = Vec::new();
    let data = match map {
        Map::LruHashMap(data) | Map::HashMap(data) => data,
        _ => return Err(anyhow!("the {what} map is not a hash map")),
    };
    match for_each(data.fd().as_fd(), |key: K, value: &V| {
        out.push((key, *value))
    }) {
        Ok(()) => return Ok(out),
        Err(BatchError::Unsupported) => out.clear(),
        Err(BatchError::Io(e)) => return Err(e).with_context(|| format!("reading the {what} map")),
    }
    for item in typed.iter() {
        match item {
            Ok(entry) => out.push(entry),
            // Removed while we iterate.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading the {what} map")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    use super::*;

    /// A hash map created straight through bpf(2), so the test needs no eBPF object.
    fn create_hash_map(entries: u32) -> io::Result<OwnedFd> {
        #[repr(C)]
        #[derive(Default)]
        struct CreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        let attr = CreateAttr {
            map_type: 1, // BPF_MAP_TYPE_HASH
            key_size: 8,
            value_size: 24,
            max_entries: entries,
            map_flags: 0,
        };
        // SAFETY: a valid bpf_attr prefix for BPF_MAP_CREATE (cmd 0).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                0,
                &attr as *const CreateAttr,
                size_of::<CreateAttr>() as u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: bpf(2) returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn update(map: &OwnedFd, key: u64, value: [u64; 3]) {
        #[repr(C)]
        struct ElemAttr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let attr = ElemAttr {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u64 as u64,
            value: &value as *const [u64; 3] as u64,
            flags: 0,
        };
        // SAFETY: a valid bpf_attr prefix for BPF_MAP_UPDATE_ELEM (cmd 2).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                2,
                &attr as *const ElemAttr,
                size_of::<ElemAttr>() as u32,
            )
        };
        assert_eq!(ret, 0, "{}", io::Error::last_os_error());
    }

    #[test]
    fn reads_every_entry_of_a_map_larger_than_one_call() {
        let map = match create_hash_map(20_000) {
            Ok(map) => map,
            // Creating maps needs root (or CAP_BPF); the e2e tests cover the real map then.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && std::env::var("CI").is_err() => {
                eprintln!("skipped: {e} (needs root)");
                return;
            }
            Err(e) => panic!("creating a hash map: {e}"),
        };
        for key in 0..10_000u64 {
            update(&map, key * 7, [key, key + 1, key + 2]);
        }
        let mut out: Vec<(u64, [u64; 3])> = Vec::new();
        for_each(map.as_fd(), |k, v: &[u64; 3]| out.push((k, *v)))
            .expect("batch lookup works on 6.x");
        assert_eq!(out.len(), 10_000);
        out.sort_unstable();
        for (i, (key, value)) in out.iter().enumerate() {
            let i = i as u64;
            assert_eq!((*key, *value), (i * 7, [i, i + 1, i + 2]));
        }
    }

    #[test]
    fn an_empty_map_reads_as_empty() {
        let Ok(map) = create_hash_map(16) else {
            assert!(std::env::var("CI").is_err(), "CI runs as root");
            return;
        };
        let mut out: Vec<(u64, [u64; 3])> = Vec::new();
        for_each(map.as_fd(), |k, v: &[u64; 3]| out.push((k, *v)))
            .expect("batch lookup works on 6.x");
        assert!(out.is_empty());
    }
}
