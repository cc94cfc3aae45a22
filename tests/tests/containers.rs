//! End-to-end: relays in containers. Each relay runs in a network namespace of its own (as
//! under Docker) and a pid namespace of its own (`unshare --pid --fork --mount-proc`), leaks
//! first, and only then is the tracer started, on the host, following them by name: the
//! connections it finds were all opened before it started, in namespaces it is not in.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use tracer_e2e::*;

const ROUNDS: u64 = 2;

/// A network namespace with its loopback up, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(name: String) -> NetNs {
        // A namespace left over by a killed run of the same name would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs(name);
        run(ns.exec("ip").args(["link", "set", "lo", "up"]));
        ns
    }

    /// `program` run inside the namespace.
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fake providers, and a relay of the given `name` that ran its rounds, in `ns`; the
/// relay in a pid namespace of its own too (it is pid 1 there).
fn leaky_container(ns: &NetNs, port: u16, relay_bin: &Path) -> (Proc, Proc) {
    let mut cmd = ns.exec(fixture_bin());
    cmd.args([
        "upstream",
        "-port",
        &port.to_string(),
        "-idle-timeout",
        "1s",
    ]);
    let mut upstreams = Proc::spawn("fixture upstream in a netns", cmd);
    upstreams.expect_line("READY", Duration::from_secs(10));
    let mut cmd = ns.exec("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(relay_bin)
        .args(relay_command(port, ROUNDS as u32, &[]).get_args());
    let mut relay = Proc::spawn("relay in a container", cmd);
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    (upstreams, relay)
}

/// The pids, as the host sees them, of the processes named `comm`.
fn pids_named(comm: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn leaks_of_relays_in_their_own_network_and_pid_namespaces_are_found_after_the_fact() {
    if !prerequisites_met() {
        return;
    }
    // A copy with a name of its own, so --comm matches the two relays and nothing else.
    let dir = std::env::temp_dir().join(format!("tracer-e2e-ns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let relay_bin: PathBuf = dir.join("nsrelay");
    std::fs::copy(fixture_bin(), &relay_bin).unwrap();
    let a = NetNs::new(format!("tracer-e2e-a-{}", std::process::id()));
    let b = NetNs::new(format!("tracer-e2e-b-{}", std::process::id()));
    // The same port and addresses in both: only the namespaces tell the sockets apart.
    let port = 18301;
    let _container_a = leaky_container(&a, port, &relay_bin);
    let _container_b = leaky_container(&b, port, &relay_bin);
    // Let the upstreams' idle timeout put the status leaks into CLOSE_WAIT first.
    thread::sleep(Duration::from_secs(2));
    let relays = pids_named("nsrelay");
    assert_eq!(relays.len(), 2, "two relays named nsrelay: {relays:?}");

    let mut args = grace_args();
    args.extend(["--comm".to_owned(), "nsrelay".to_owned()]);
    let tracer = start_tracer(&args);
    thread::sleep(Duration::from_secs(6));
    let s = stop_tracer(tracer);
    let _ = std::fs::remove_dir_all(&dir);
    let ctx = summary(&s);

    let mut targets: Vec<u64> = s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        relays.iter().map(|&p| u64::from(p)).collect::<Vec<_>>(),
        "both relays, by their host pids\n{ctx}"
    );
    let field = |ip: &str, path: &[&str]| -> u64 {
        let mut v = host(&s, ip).unwrap_or_else(|| panic!("{ip} missing from the snapshot\n{ctx}"));
        for key in path {
            v = &v[*key];
        }
        v.as_u64().unwrap()
    };
    // Each relay leaked ROUNDS of each kind; both show, under the addresses they see.
    for ip in ["127.0.0.12", "::1"] {
        assert_eq!(
            field(ip, &["by_reason", "close_wait"]),
            2 * ROUNDS,
            "{ip}\n{ctx}"
        );
        assert_eq!(field(ip, &["leaked"]), 2 * ROUNDS, "{ip}\n{ctx}");
    }
    assert_eq!(
        field("127.0.0.13", &["by_reason", "unread"]),
        2 * ROUNDS,
        "{ctx}"
    );
    assert_eq!(field("127.0.0.13", &["leaked"]), 2 * ROUNDS, "{ctx}");
    // Connections opened before tracing have no read history: never `abandoned`.
    assert_eq!(field("127.0.0.16", &["leaked"]), 0, "{ctx}");
    // The long SSE stream of each relay is open and read: not leaked.
    assert_eq!(field("127.0.0.17", &["open"]), 2, "{ctx}");
    assert_eq!(field("127.0.0.17", &["leaked"]), 0, "{ctx}");
    let leaks = s["leaks"].as_array().unwrap();
    // Plus each relay's two TLS leaks (a status leak, a large body).
    assert_eq!(leaks.len() as u64, 2 * 5 * ROUNDS, "{ctx}");
    for leak in leaks {
        assert_eq!(leak["origin"], "pre_existing", "{leak}");
        // The addresses the relay itself sees: loopback inside its namespace.
        let local = leak["local"].as_str().unwrap();
        assert!(
            local.starts_with("127.0.0.") || local.starts_with("[::1]"),
            "{leak}"
        );
        assert!(
            relays.contains(&(leak["pid"].as_u64().unwrap() as u32)),
            "{leak}"
        );
    }
}
