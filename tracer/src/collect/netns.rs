//! Network namespaces of the targets. A relay in a container has its own network namespace:
//! its sockets are listed only by a sock_diag dump made from inside that namespace (a dump
//! lists the namespace of the netlink socket, which is the creating thread's). The scan groups
//! the targets by namespace and dumps each from a short-lived thread that enters it, so no
//! thread of the tracer ever changes namespace for anything else.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs::File,
    os::fd::AsRawFd as _,
};

use anyhow::{Context as _, Result};

use super::sockdiag::{self, StateMask, TcpSockInfo};

/// A network namespace, by the inode of its `/proc/PID/ns/net` (as `lsns` and `ip netns
/// identify` show it).
pub type NetNs = u64;

/// The network namespace of `pid`; `None` when the process is gone.
pub fn of_pid(pid: u32) -> Option<NetNs> {
    ns_inode(&format!("/proc/{pid}/ns/net"))
}

/// The tracer's own network namespace.
pub fn own() -> Option<NetNs> {
    ns_inode("/proc/self/ns/net")
}

fn ns_inode(path: &str) -> Option<NetNs> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// `pids` grouped by network namespace, each with one of its pids to enter it through.
pub fn group(pids: &[u32]) -> BTreeMap<NetNs, u32> {
    let mut groups = BTreeMap::new();
    for &pid in pids {
        if let Some(ns) = of_pid(pid) {
            groups.entry(ns).or_insert(pid);
        }
    }
    groups
}

/// The TCP sockets in `states` whose inode is in `inodes`, dumped from the network namespace
/// `pid` is in (from a thread of its own when that is not the tracer's).
pub fn dump_in_namespace_of(
    pid: u32,
    states: StateMask,
    inodes: HashSet<u64>,
) -> Result<Vec<TcpSockInfo>> {
    let keep = move |s: &TcpSockInfo| s.inode != 0 && inodes.contains(&s.inode);
    in_namespace_of(pid, move || sockdiag::dump_tcp_where(states, keep))
}

/// The TCP sockets among `wanted` (local, remote) that exist now in the network namespace `pid`
/// is in, by exact lookups (`sockdiag::lookup_tcp`), each at its request's place.
pub fn lookup_in_namespace_of(
    pid: u32,
    wanted: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
) -> Result<Vec<Option<TcpSockInfo>>> {
    in_namespace_of(pid, move || sockdiag::lookup_tcp(&wanted))
}

/// Runs `ask` (a sock_diag query, which answers for the namespace of the thread that opens its
/// netlink socket) in the network namespace `pid` is in: here when that is the tracer's, else
/// on a thread of its own that enters it.
fn in_namespace_of<T: Send + 'static>(
    pid: u32,
    ask: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if of_pid(pid).is_some_and(|ns| Some(ns) == own()) {
        return ask();
    }
    // Opened here, before the thread: a process that exits meanwhile is an error now, not a
    // namespace entered half-way.
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("opening the network namespace of pid {pid}"))?;
    std::thread::Builder::new()
        .name(format!("netns-{pid}"))
        .spawn(move || {
            // SAFETY: setns on a valid, open namespace fd with CLONE_NEWNET changes only this
            // thread's network namespace; the thread ends after the query and shares no state.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if entered != 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| {
                    format!(
                        "entering the network namespace of pid {pid} (needs CAP_SYS_ADMIN; in a container, run the tracer with --pid=host and --privileged)"
                    )
                });
            }
            ask()
        })
        .context("starting the namespace scan thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace scan thread of pid {pid} panicked"))?
}

/// Says on the log, once per namespace, that its sockets could not be scanned (scans repeat
/// every few seconds; the reason does not change).
pub fn warn_once(ns: NetNs, error: &anyhow::Error) {
    static WARNED: std::sync::Mutex<BTreeSet<NetNs>> = std::sync::Mutex::new(BTreeSet::new());
    let first = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(ns);
    if first {
        log::warn!("cannot scan the sockets of network namespace {ns}: {error:#}; connections open there before tracing started are not seen");
    } else {
        log::debug!("socket scan of network namespace {ns}: {error:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_in_its_own_namespace_and_a_missing_pid_in_none() {
        let me = std::process::id();
        assert!(own().is_some());
        assert_eq!(of_pid(me), own());
        assert_eq!(of_pid(0), None, "pid 0 has no /proc entry");
        let groups = group(&[me, 0]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups.get(&own().expect("own ns")), Some(&me));
    }
}
