use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{AddressBook, RefreshPolicy, Resolution, Schedule};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

fn answer(addresses: &[&str], ttl: Option<u64>) -> io::Result<Resolution> {
    Ok(Resolution {
        addresses: addresses.iter().map(|a| ip(a)).collect(),
        ttl: ttl.map(Duration::from_secs),
    })
}

fn names(schedule: &Schedule, now: Instant, address: &str) -> Vec<String> {
    schedule
        .table(now)
        .get(&ip(address))
        .cloned()
        .unwrap_or_default()
}

fn index_of(schedule: &Schedule, name: &str) -> usize {
    schedule
        .hosts
        .iter()
        .position(|h| h.name == name)
        .expect("a scheduled host")
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn every_host_is_due_at_once_then_follows_its_ttl() {
    let policy = RefreshPolicy::default();
    let t0 = Instant::now();
    let mut schedule = Schedule::new(
        vec!["b.example".into(), "a.example".into(), "a.example".into()],
        policy,
        t0,
    );
    assert_eq!(schedule.hosts.len(), 2, "duplicates resolved once");
    assert_eq!(schedule.due(t0).len(), 2);

    let a = index_of(&schedule, "a.example");
    let b = index_of(&schedule, "b.example");
    schedule.record(a, answer(&["192.0.2.1"], Some(120)), t0);
    schedule.record(b, answer(&["192.0.2.2"], None), t0);
    assert!(schedule.due(t0).is_empty());
    // a follows its TTL (120 s); b has none: the default refresh (5 min).
    assert!(schedule.due(t0 + 119 * SECOND).is_empty());
    assert_eq!(schedule.due(t0 + 120 * SECOND), vec![a]);
    assert_eq!(schedule.due(t0 + 299 * SECOND), vec![a]);
    assert_eq!(schedule.due(t0 + 300 * SECOND), vec![a, b]);
    assert_eq!(schedule.next_due(), Some(t0 + 120 * SECOND));
}

#[test]
fn ttls_are_clamped_and_failures_retried() {
    let policy = RefreshPolicy::default();
    let t0 = Instant::now();
    let mut schedule = Schedule::new(vec!["a.example".into()], policy, t0);
    schedule.record(0, answer(&["192.0.2.1"], Some(0)), t0);
    assert_eq!(
        schedule.next_due(),
        Some(t0 + policy.min_refresh),
        "TTL 0 is raised"
    );
    schedule.record(0, answer(&["192.0.2.1"], Some(7 * 24 * 3600)), t0);
    assert_eq!(
        schedule.next_due(),
        Some(t0 + policy.max_refresh),
        "a week is lowered"
    );

    let later = t0 + 10 * SECOND;
    schedule.record(0, Err(io::Error::other("SERVFAIL")), later);
    assert_eq!(
        schedule.next_due(),
        Some(later + policy.retry_after_failure)
    );
    assert_eq!(
        names(&schedule, later, "192.0.2.1"),
        ["a.example"],
        "a failure forgets nothing"
    );

    // Failures in a row wait twice as long each time, up to the bound; an answer resets it.
    let waits: Vec<u64> = (0..6)
        .map(|_| {
            schedule.record(0, Err(io::Error::other("SERVFAIL")), later);
            schedule
                .next_due()
                .map(|due| (due - later).as_secs())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(waits, [120, 240, 480, 600, 600, 600]);
    schedule.record(0, answer(&["192.0.2.1"], Some(60)), later);
    schedule.record(0, Err(io::Error::other("SERVFAIL")), later);
    assert_eq!(
        schedule.next_due(),
        Some(later + policy.retry_after_failure),
        "an answer starts the doubling again"
    );
}

#[test]
fn addresses_outlive_the_answers_that_had_them_for_a_while() {
    let policy = RefreshPolicy::default();
    let t0 = Instant::now();
    let mut schedule = Schedule::new(vec!["api.example".into()], policy, t0);
    schedule.record(0, answer(&["192.0.2.1"], Some(60)), t0);
    let t1 = t0 + 60 * SECOND;
    schedule.record(0, answer(&["192.0.2.2"], Some(60)), t1);
    // The rotated-out address still names the host: a connection opened to it is still open.
    assert_eq!(names(&schedule, t1, "192.0.2.1"), ["api.example"]);
    assert_eq!(names(&schedule, t1, "192.0.2.2"), ["api.example"]);
    // Until keep_addresses_for has passed since an answer last had it.
    let expiry = t0 + policy.keep_addresses_for;
    assert_eq!(names(&schedule, expiry, "192.0.2.1"), ["api.example"]);
    assert!(names(&schedule, expiry + SECOND, "192.0.2.1").is_empty());
    assert_eq!(
        names(&schedule, expiry + SECOND, "192.0.2.2"),
        ["api.example"]
    );
}

#[test]
fn a_host_remembers_a_bounded_number_of_addresses() {
    let t0 = Instant::now();
    let mut schedule = Schedule::new(vec!["cdn.example".into()], RefreshPolicy::default(), t0);
    for i in 0..300u32 {
        let address = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i));
        let at = t0 + Duration::from_secs(u64::from(i));
        schedule.record(
            0,
            Ok(Resolution {
                addresses: vec![address],
                ttl: None,
            }),
            at,
        );
    }
    let table = schedule.table(t0 + 300 * SECOND);
    assert_eq!(table.len(), super::MAX_ADDRESSES_PER_HOST);
    assert!(
        !table.contains_key(&ip("192.0.2.0")),
        "the oldest went first"
    );
    assert!(table.contains_key(&IpAddr::V4(Ipv4Addr::from(0xc000_0200 + 299))));
}

#[test]
fn a_shared_address_lists_every_host_alphabetically() {
    let t0 = Instant::now();
    let hosts = vec![
        "api.openai.com".into(),
        "api.anthropic.com".into(),
        "api.x.ai".into(),
    ];
    let mut schedule = Schedule::new(hosts, RefreshPolicy::default(), t0);
    for name in ["api.x.ai", "api.openai.com", "api.anthropic.com"] {
        let index = index_of(&schedule, name);
        let own = if name == "api.x.ai" {
            "198.51.100.9"
        } else {
            "198.51.100.7"
        };
        schedule.record(index, answer(&["203.0.113.1", own], None), t0);
    }
    assert_eq!(
        names(&schedule, t0, "203.0.113.1"),
        ["api.anthropic.com", "api.openai.com", "api.x.ai"]
    );
    assert_eq!(
        names(&schedule, t0, "198.51.100.7"),
        ["api.anthropic.com", "api.openai.com"]
    );
    assert_eq!(names(&schedule, t0, "198.51.100.9"), ["api.x.ai"]);
}

/// Polls `condition` for up to 10 s.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_book_resolves_in_the_background_and_answers_lookups() {
    let answers: HashMap<&str, Vec<&str>> = HashMap::from([
        ("api.openai.com", vec!["203.0.113.1", "2001:db8::1"]),
        ("api.anthropic.com", vec!["203.0.113.1", "203.0.113.2"]),
    ]);
    let book = AddressBook::spawn_with_resolver(
        vec![
            "api.openai.com".into(),
            "api.anthropic.com".into(),
            "gone.example".into(),
        ],
        RefreshPolicy::default(),
        move |host: &str| match answers.get(host) {
            Some(addresses) => answer(addresses, Some(300)),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "NXDOMAIN")),
        },
    )
    .expect("the resolver thread starts");

    eventually("both hosts", || book.lookup(ip("203.0.113.2")).is_some());
    eventually("both hosts", || book.lookup(ip("2001:db8::1")).is_some());
    assert_eq!(
        book.lookup(ip("203.0.113.2")).as_deref(),
        Some("api.anthropic.com")
    );
    assert_eq!(
        book.lookup(ip("2001:db8::1")).as_deref(),
        Some("api.openai.com")
    );
    // Shared by two hosts: the alphabetically first, every time; hosts_of lists both.
    assert_eq!(
        book.lookup(ip("203.0.113.1")).as_deref(),
        Some("api.anthropic.com")
    );
    assert_eq!(
        book.hosts_of(ip("203.0.113.1")),
        ["api.anthropic.com", "api.openai.com"]
    );
    // An IPv4 address seen through an IPv6 socket.
    let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 2).to_ipv6_mapped());
    assert_eq!(book.lookup(mapped).as_deref(), Some("api.anthropic.com"));
    // Unknown addresses.
    assert_eq!(book.lookup(ip("192.0.2.99")), None);
    assert_eq!(book.lookup(IpAddr::V6(Ipv6Addr::LOCALHOST)), None);
    assert!(book.hosts_of(ip("192.0.2.99")).is_empty());
}

#[test]
fn spawning_and_lookups_do_not_wait_for_a_slow_resolver() {
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let started = Instant::now();
    let book = AddressBook::spawn_with_resolver(
        vec!["slow.example".into()],
        RefreshPolicy::default(),
        move |_: &str| {
            // Blocks like a getaddrinfo waiting on a dead DNS server, until the test releases it.
            let _ = released.lock().expect("one resolver thread").recv();
            answer(&["192.0.2.7"], None)
        },
    )
    .expect("the resolver thread starts");
    assert_eq!(book.lookup(ip("192.0.2.7")), None);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "spawn and lookup did not block"
    );
    release.send(()).expect("the resolver waits");
    eventually("the slow answer", || book.lookup(ip("192.0.2.7")).is_some());
}

#[test]
fn the_book_resolves_again_after_the_ttl() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let policy = RefreshPolicy {
        min_refresh: Duration::from_millis(20),
        ..RefreshPolicy::default()
    };
    // Each answer moves the host to a new address, with a TTL of 0 (raised to 20 ms).
    let book = AddressBook::spawn_with_resolver(
        vec!["rotating.example".into()],
        policy,
        move |_: &str| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let octet = u8::try_from(n % 250).expect("small");
            Ok(Resolution {
                addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, octet))],
                ttl: Some(Duration::ZERO),
            })
        },
    )
    .expect("the resolver thread starts");
    eventually("three resolutions", || calls.load(Ordering::SeqCst) >= 3);
    // Earlier answers are remembered too.
    eventually("the third address", || {
        book.lookup(ip("192.0.2.2")).is_some()
    });
    assert_eq!(
        book.lookup(ip("192.0.2.0")).as_deref(),
        Some("rotating.example")
    );

    // Dropping the book stops the worker.
    drop(book);
    std::thread::sleep(Duration::from_millis(50));
    let after_drop = calls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        calls.load(Ordering::SeqCst) <= after_drop + 1,
        "the worker stopped"
    );
}

#[test]
fn without_a_ttl_the_fixed_refresh_applies() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let policy = RefreshPolicy {
        default_refresh: Duration::from_secs(3600),
        ..RefreshPolicy::default()
    };
    let book =
        AddressBook::spawn_with_resolver(vec!["fixed.example".into()], policy, move |_: &str| {
            counted.fetch_add(1, Ordering::SeqCst);
            answer(&["192.0.2.5"], None)
        })
        .expect("the resolver thread starts");
    eventually("the first answer", || {
        book.lookup(ip("192.0.2.5")).is_some()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not again before the hour");
}

#[test]
fn the_system_resolver_answers_from_the_hosts_file() {
    // "localhost" resolves through /etc/hosts (or the resolver's built-in answer): no network.
    let book = AddressBook::spawn(vec!["localhost".into()], RefreshPolicy::default())
        .expect("the resolver thread starts");
    eventually("localhost", || {
        book.lookup(ip("127.0.0.1")).is_some() || book.lookup(ip("::1")).is_some()
    });
    let named = [ip("127.0.0.1"), ip("::1")]
        .into_iter()
        .filter_map(|a| book.lookup(a));
    assert!(named.into_iter().all(|host| host == "localhost"));
}
