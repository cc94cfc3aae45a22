//! The address fallback: when a connection's first bytes were not seen (the tracer started
//! after the handshake), its remote address is looked up among the addresses the catalogue's
//! hostnames resolved to.
//!
//! Resolution runs on a thread of its own (getaddrinfo blocks), on a schedule that follows the
//! TTL when the resolver gives one and a fixed period otherwise; callers only read a table
//! behind a lock held for a map lookup. An address stays mapped for a while after it left the
//! answers: a leaked connection outlives the DNS rotation that handed out its address.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

/// One answer of a resolver for one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub addresses: Vec<IpAddr>,
    /// How long the answer may be cached, when the resolver knows (the system resolver does
    /// not).
    pub ttl: Option<Duration>,
}

/// When to resolve again, and how long to remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// The period when the resolver gives no TTL.
    pub default_refresh: Duration,
    /// A TTL is raised to at least this, so that a TTL of 0 does not make a busy loop.
    pub min_refresh: Duration,
    /// A TTL is lowered to at most this.
    pub max_refresh: Duration,
    /// The wait before trying a hostname again after its resolution failed, doubled with each
    /// failure in a row up to `max_retry_after_failure`: a name that never resolves (a host
    /// without outside DNS, a catalogue entry gone) is not asked for every minute all day.
    pub retry_after_failure: Duration,
    /// The longest of those waits.
    pub max_retry_after_failure: Duration,
    /// How long an address stays mapped to a hostname after the last answer that had it.
    pub keep_addresses_for: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            default_refresh: Duration::from_secs(5 * 60),
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(60 * 60),
            retry_after_failure: Duration::from_secs(60),
            max_retry_after_failure: Duration::from_secs(10 * 60),
            keep_addresses_for: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A CDN can hand out more addresses over a day than we care to remember for one hostname.
const MAX_ADDRESSES_PER_HOST: usize = 256;

/// Address -> hostname table, filled in the background.
///
/// An address several hostnames resolved to (a CDN, a shared gateway) is reported as the
/// alphabetically first of them by [`AddressBook::lookup`], so that the same connection always
/// gets the same name.
#[derive(Debug)]
pub struct AddressBook {
    table: Arc<RwLock<AddressTable>>,
    /// Dropping it tells the worker to stop (it notices at its next wake-up).
    _stop: mpsc::Sender<()>,
}

/// Address (IPv4-mapped IPv6 addresses as IPv4) -> hostnames, sorted.
type AddressTable = HashMap<IpAddr, Vec<String>>;

impl AddressBook {
    /// Resolves `hosts` with the system resolver (getaddrinfo: no TTL, so `default_refresh`).
    pub fn spawn(hosts: Vec<String>, policy: RefreshPolicy) -> io::Result<Self> {
        Self::spawn_with_resolver(hosts, policy, system_resolve)
    }

    /// Resolves `hosts` with `resolve`, on a thread of its own; returns at once, before the
    /// first answer.
    pub fn spawn_with_resolver<R>(
        hosts: Vec<String>,
        policy: RefreshPolicy,
        mut resolve: R,
    ) -> io::Result<Self>
    where
        R: FnMut(&str) -> io::Result<Resolution> + Send + 'static,
    {
        let table = Arc::new(RwLock::new(AddressTable::new()));
        let (stop, stopped) = mpsc::channel::<()>();
        let published = Arc::clone(&table);
        thread::Builder::new()
            .name("tracer-resolve".to_owned())
            .spawn(move || {
                let mut schedule = Schedule::new(hosts, policy, Instant::now());
                loop {
                    for index in schedule.due(Instant::now()) {
                        let answer = resolve(&schedule.hosts[index].name);
                        let now = Instant::now();
                        schedule.record(index, answer, now);
                        // Publish after each host: the first names are useful before the round ends.
                        let fresh = schedule.table(now);
                        *published.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                    }
                    let wait = schedule.next_due().map_or(policy.max_refresh, |due| {
                        due.saturating_duration_since(Instant::now())
                    });
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(AddressBook { table, _stop: stop })
    }

    /// The hostname `ip` was resolved from; the alphabetically first if several were.
    pub fn lookup(&self, ip: IpAddr) -> Option<String> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table
            .get(&canonical(ip))
            .and_then(|hosts| hosts.first().cloned())
    }

    /// Every hostname `ip` was resolved from, sorted (the tests look at the whole book; the
    /// model takes one name per address, `lookup`).
    #[cfg(test)]
    pub fn hosts_of(&self, ip: IpAddr) -> Vec<String> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.get(&canonical(ip)).cloned().unwrap_or_default()
    }
}

/// getaddrinfo through std; the port is required by the API and unused.
fn system_resolve(host: &str) -> io::Result<Resolution> {
    let addresses = (host, 443)
        .to_socket_addrs()?
        .map(|addr| addr.ip())
        .collect();
    Ok(Resolution {
        addresses,
        ttl: None,
    })
}

/// A socket connected to an IPv4 address through an IPv6 socket shows ::ffff:a.b.c.d.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The resolution schedule and what it learnt, without threads or clocks (times come in), so
/// that tests drive it.
#[derive(Debug)]
struct Schedule {
    policy: RefreshPolicy,
    hosts: Vec<HostRecord>,
}

#[derive(Debug)]
struct HostRecord {
    name: String,
    next_due: Instant,
    /// Resolutions failed in a row.
    failures: u32,
    /// Address -> when an answer last had it.
    addresses: HashMap<IpAddr, Instant>,
}

impl Schedule {
    fn new(hosts: Vec<String>, policy: RefreshPolicy, now: Instant) -> Self {
        let names: BTreeSet<String> = hosts.into_iter().collect();
        let hosts = names
            .into_iter()
            .map(|name| HostRecord {
                name,
                next_due: now,
                failures: 0,
                addresses: HashMap::new(),
            })
            .collect();
        Schedule { policy, hosts }
    }

    /// Indexes of the hosts to resolve now.
    fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| self.hosts[i].next_due <= now)
            .collect()
    }

    fn next_due(&self) -> Option<Instant> {
        self.hosts.iter().map(|host| host.next_due).min()
    }

    /// Takes in an answer: remembers its addresses and schedules the next resolution. A failure
    /// keeps what was known.
    fn record(&mut self, index: usize, answer: io::Result<Resolution>, now: Instant) {
        let policy = self.policy;
        let Some(host) = self.hosts.get_mut(index) else {
            return;
        };
        let wait = match answer {
            Ok(resolution) => {
                host.failures = 0;
                for ip in resolution.addresses {
                    host.addresses.insert(canonical(ip), now);
                }
                forget_oldest(&mut host.addresses, MAX_ADDRESSES_PER_HOST);
                match resolution.ttl {
                    Some(ttl) => ttl.clamp(policy.min_refresh, policy.max_refresh),
                    None => policy.default_refresh,
                }
            }
            Err(error) => {
                log::debug!("resolving {} failed: {error}", host.name);
                let doublings = host.failures.min(16);
                host.failures = host.failures.saturating_add(1);
                policy
                    .retry_after_failure
                    .saturating_mul(1 << doublings)
                    .min(policy.max_retry_after_failure)
            }
        };
        host.next_due = now + wait;
    }

    /// Address -> hostnames (sorted), leaving out addresses not seen for `keep_addresses_for`.
    fn table(&self, now: Instant) -> AddressTable {
        let mut table = AddressTable::new();
        // `hosts` is sorted by name, so each list comes out sorted.
        for host in &self.hosts {
            for (&ip, &seen) in &host.addresses {
                if now.saturating_duration_since(seen) <= self.policy.keep_addresses_for {
                    table.entry(ip).or_default().push(host.name.clone());
                }
            }
        }
        table
    }
}

/// Drops the least recently seen addresses beyond `limit`.
fn forget_oldest(addresses: &mut HashMap<IpAddr, Instant>, limit: usize) {
    if addresses.len() <= limit {
        return;
    }
    let mut by_age: Vec<(Instant, IpAddr)> =
        addresses.iter().map(|(&ip, &seen)| (seen, ip)).collect();
    by_age.sort();
    for (_, ip) in by_age.iter().take(addresses.len() - limit) {
        addresses.remove(ip);
    }
}

#[cfg(test)]
mod tests;
