//! End-to-end: the terminal UI in a real terminal (tmux send-keys and capture-pane) against
//! the fixture relay, and `tracer record` / `tracer replay` against a live run of the same
//! session. Real eBPF, root; one test at a time (`--test-threads=1`), and the tests of this
//! file also take a lock, since they share the fixture's port.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use tracer_e2e::*;

/// The fixture upstreams of this file (verdicts.rs uses 18201-18203).
const PORT: u16 = 18211;
const ROUNDS: u64 = 3;
static FIXTURE_PORT: Mutex<()> = Mutex::new(());

const GRACES: [&str; 6] = [
    "--close-wait-grace",
    "2s",
    "--unread-grace",
    "3s",
    "--abandon-grace",
    "4s",
];
/// After the last round: the upstream's idle timeout (1s), the longest grace (4s), margin.
const SETTLE: Duration = Duration::from_secs(7);

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tracer-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

const SESSION: &str = "tui";
const PROMPT: &str = "tui-test$";

impl Tmux {
    /// A detached session of `width`x`height` running a plain bash in `dir`.
    fn start(width: u16, height: u16, dir: &Path) -> Tmux {
        let tmux = Tmux {
            socket: format!("tracer-e2e-{}", std::process::id()),
        };
        let status = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                SESSION,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg("-c")
            .arg(dir)
            .arg(format!("env PS1='{PROMPT} ' bash --norc --noprofile"))
            .status()
            .unwrap_or_else(|e| panic!("running tmux (cargo xtask setup installs it): {e}"));
        assert!(status.success(), "tmux new-session failed");
        tmux.wait_for("the shell prompt", Duration::from_secs(10), |screen| {
            screen.contains(PROMPT)
        });
        tmux
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]);
        cmd
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", SESSION, "-l", text])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Presses keys by tmux name (Enter, Escape, Tab, Down, q, ...).
    fn press(&self, key: &str) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", SESSION, key])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", SESSION])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn display(&self, format: &str) -> String {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", SESSION, format])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits until `ok` holds for the screen; returns that screen.
    fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("waited {timeout:?} for {what}; the screen:\n{screen}");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// The screen's text without box borders, as one line: wrapped sentences read whole.
fn flat(screen: &str) -> String {
    screen
        .lines()
        .map(|l| l.trim_matches(|c: char| c == '│' || c.is_whitespace()))
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The numbers after `host` in its row of the hosts page: OPEN, LEAKED, CLOSE_WAIT, ...
fn host_row(screen: &str, host: &str) -> Option<Vec<u64>> {
    let row = |l: &str| {
        l.trim_start_matches(|c: char| c == '│' || c == '▸' || c.is_whitespace())
            .to_owned()
    };
    let line = screen
        .lines()
        .map(row)
        .find(|l| l.split_whitespace().next() == Some(host))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .map_while(|t| t.parse().ok())
            .collect(),
    )
}

#[test]
fn the_tui_shows_the_leaking_host_and_explains_a_leaked_connection() {
    if !prerequisites_met() {
        return;
    }
    let _port = FIXTURE_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir("tui");
    let _upstreams = start_upstreams(PORT);
    let mut relay = Proc::spawn(
        "relay",
        relay_command(PORT, ROUNDS as u32, &["-start-on-stdin"]),
    );
    relay.expect_line("WAITING", Duration::from_secs(10));
    let pid = relay.pid();

    let tmux = Tmux::start(120, 40, &dir);
    let command = format!(
        "{} watch --pid {pid} {}",
        tracer_bin().display(),
        GRACES.join(" ")
    );
    tmux.type_text(&command);
    tmux.press("Enter");
    // The header names the target once the collector is attached and reporting.
    tmux.wait_for("the UI with its target", Duration::from_secs(30), |s| {
        s.contains("LIVE") && s.contains(&format!("(pid {pid})")) && s.contains("Upstream hosts")
    });
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "the UI uses the alternate screen"
    );

    relay.send_line("go");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(SETTLE);
    // Hosts page, 120 columns: HOST OPEN LEAKED CLOSE_WAIT UNREAD ABANDONED CLOSED_UNREAD ...
    let screen = tmux.wait_for(
        "127.0.0.12 with 3 close_wait leaks",
        Duration::from_secs(20),
        |s| {
            host_row(s, "127.0.0.12")
                .is_some_and(|n| n.len() >= 3 && n[1] == ROUNDS && n[2] == ROUNDS)
        },
    );
    assert!(
        screen.contains("CLOSE_WAIT") && screen.contains("LEAKED"),
        "{screen}"
    );
    let unread =
        host_row(&screen, "127.0.0.13").unwrap_or_else(|| panic!("no 127.0.0.13 row:\n{screen}"));
    assert_eq!(
        (unread[1], unread[3]),
        (ROUNDS, ROUNDS),
        "127.0.0.13 leaks unread:\n{screen}"
    );
    let healthy =
        host_row(&screen, "127.0.0.11").unwrap_or_else(|| panic!("no 127.0.0.11 row:\n{screen}"));
    assert_eq!(healthy[1], 0, "127.0.0.11 is healthy:\n{screen}");

    // Filter down to the host, open it, open its first (leaked) connection.
    tmux.press("/");
    tmux.type_text("127.0.0.12");
    tmux.press("Enter");
    tmux.wait_for("the filtered list", Duration::from_secs(5), |s| {
        s.contains("filter: 127.0.0.12") && host_row(s, "127.0.0.13").is_none()
    });
    tmux.press("Enter");
    let screen = tmux.wait_for(
        "the connections of 127.0.0.12",
        Duration::from_secs(5),
        |s| s.contains("Connections to 127.0.0.12"),
    );
    let leaked_rows = screen
        .lines()
        .filter(|l| l.contains("close_wait") && l.contains("CLOSE_WAIT"))
        .count();
    assert_eq!(
        leaked_rows as u64, ROUNDS,
        "one row per leaked connection:\n{screen}"
    );
    tmux.press("Enter");
    let screen = tmux.wait_for(
        "the detail of a leaked connection",
        Duration::from_secs(5),
        |s| s.contains("LEAKED (close_wait)"),
    );
    let text = flat(&screen);
    for want in [
        "upstream closed its side (FIN received)",
        "this process never closed its side",
        "early return on a non-200 status",
        "defer resp.Body.Close()",
    ] {
        assert!(text.contains(want), "{want:?} not on screen:\n{screen}");
    }

    // The other keys: help, trend, pause, export.
    tmux.press("?");
    tmux.wait_for("the help", Duration::from_secs(5), |s| {
        s.contains("any key closes this help")
    });
    // Wait for each key's effect: an Escape and the next key sent together read as Alt+key.
    tmux.press("Escape");
    tmux.wait_for("the help to close", Duration::from_secs(5), |s| {
        !s.contains("any key closes this help")
    });
    tmux.press("Tab");
    tmux.wait_for("the trend", Duration::from_secs(5), |s| {
        s.contains("Leaked connections over time")
    });
    // Then the call sites: this fixture is built by the system's Go, which the Go layer
    // reads from 1.21 on; before that the page says why it is empty.
    tmux.press("Tab");
    let screen = tmux.wait_for("the call sites", Duration::from_secs(5), |s| {
        s.contains("Call sites (")
    });
    let text = flat(&screen);
    assert!(
        text.contains("No call site: they come from the Go-aware probes")
            || (text.contains("LEAK%") && text.contains("relay.go:")),
        "the sites, or why there are none:\n{screen}"
    );
    tmux.press("p");
    tmux.wait_for("paused", Duration::from_secs(5), |s| s.contains("PAUSED"));
    tmux.press("e");
    let screen = tmux.wait_for("the export message", Duration::from_secs(5), |s| {
        s.contains("exported the shown snapshot to")
    });
    let exported: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".json"))
        .collect();
    assert_eq!(
        exported.len(),
        1,
        "one export in {}:\n{screen}",
        dir.display()
    );
    let json: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&exported[0]).unwrap().trim()).unwrap();
    assert_eq!(
        count(&json, "127.0.0.12", &["by_reason", "close_wait"]),
        ROUNDS,
        "{json}"
    );

    // q: the UI ends, exit status 0, and the terminal is as it was.
    tmux.press("q");
    tmux.wait_for(
        "the shell prompt after quitting",
        Duration::from_secs(15),
        |s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim() == PROMPT)
        },
    );
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "0",
        "the alternate screen was left"
    );
    assert_eq!(
        tmux.display("#{cursor_flag}"),
        "1",
        "the cursor is visible again"
    );
    // The shell's view: the tracer's exit status, and the terminal's modes now.
    tmux.type_text("echo $? > exit.txt; stty -a > stty.txt; echo done");
    tmux.press("Enter");
    tmux.wait_for("the shell's answer", Duration::from_secs(5), |s| {
        s.lines().any(|l| l.trim() == "done")
    });
    let exit = std::fs::read_to_string(dir.join("exit.txt")).unwrap();
    assert_eq!(exit.trim(), "0", "tracer watch exit status");
    let stty = std::fs::read_to_string(dir.join("stty.txt")).unwrap();
    let modes: Vec<&str> = stty
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|t| ["isig", "icanon", "echo", "-isig", "-icanon", "-echo"].contains(t))
        .collect();
    assert_eq!(
        modes,
        vec!["isig", "icanon", "echo"],
        "cooked mode again:\n{stty}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Per host: open, leaked, close_wait, unread, abandoned, closed_unread_total, connections_total.
fn per_host(snapshot: &serde_json::Value) -> BTreeMap<String, [u64; 7]> {
    snapshot["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let n = |v: &serde_json::Value| v.as_u64().unwrap();
            let r = &h["by_reason"];
            (
                h["host"].as_str().unwrap().to_owned(),
                [
                    n(&h["open"]),
                    n(&h["leaked"]),
                    n(&r["close_wait"]),
                    n(&r["unread"]),
                    n(&r["abandoned"]),
                    n(&h["closed_unread_total"]),
                    n(&h["connections_total"]),
                ],
            )
        })
        .collect()
}

#[test]
fn a_recording_replays_to_the_verdicts_of_the_live_run() {
    if !prerequisites_met() {
        return;
    }
    let _port = FIXTURE_PORT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir("record");
    // Readable by the unprivileged user that replays it.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let file = dir.join("relay.rec");
    let _upstreams = start_upstreams(PORT);
    let mut relay = Proc::spawn(
        "relay",
        relay_command(PORT, ROUNDS as u32, &["-start-on-stdin"]),
    );
    relay.expect_line("WAITING", Duration::from_secs(10));
    let pid = relay.pid().to_string();

    let mut live_args: Vec<String> = GRACES.iter().map(|s| s.to_string()).collect();
    live_args.extend([
        "--interval".into(),
        "1s".into(),
        "--pid".into(),
        pid.clone(),
    ]);
    let live = start_tracer(&live_args);
    let mut record = Command::new(tracer_bin());
    record
        .arg("record")
        .arg("--out")
        .arg(&file)
        .args(["--pid", &pid])
        .args(GRACES);
    let mut recorder = Proc::spawn("tracer record", record);
    recorder.expect_stderr("tracer: attached; recording pid", Duration::from_secs(30));

    relay.send_line("go");
    relay.expect_line("ROUNDS DONE", Duration::from_secs(60));
    thread::sleep(SETTLE);
    recorder.signal(libc::SIGINT);
    let (code, _, err) = recorder.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "tracer record; stderr:\n{err}");
    assert!(err.contains("tracer: recorded"), "{err}");
    let live_final = stop_tracer(live);

    // No root needed: replay as nobody. No grace flags: the recorded ones apply.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(tracer_bin())
        .arg("replay")
        .arg(&file)
        .args(["--json", "--fast"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "tracer replay as nobody; stderr:\n{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect();
    // The recording spans the rounds and SETTLE (8-10 s): a snapshot at 2, 4 and 6 s of
    // recorded time (8 s too when it is longer), then the last one at its end.
    assert!(
        lines.len() >= 4,
        "a snapshot every 2s of a ~9s recording, got {}; the recorder said:\n{err}",
        lines.len()
    );
    assert!(lines
        .iter()
        .all(|l| l["type"] == "snapshot" && l["targets"] == serde_json::json!([relay.pid()])));
    let times: Vec<&str> = lines.iter().map(|l| l["time"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "recorded times, in order: {times:?}"
    );
    let replayed = lines.last().unwrap();

    let ctx = format!(
        "live:\n{}replayed:\n{}",
        summary(&live_final),
        summary(replayed)
    );
    assert_eq!(
        count(replayed, "127.0.0.12", &["by_reason", "close_wait"]),
        ROUNDS,
        "{ctx}"
    );
    assert_eq!(
        count(replayed, "127.0.0.13", &["by_reason", "unread"]),
        ROUNDS,
        "{ctx}"
    );
    assert_eq!(
        count(replayed, "127.0.0.16", &["by_reason", "abandoned"]),
        ROUNDS,
        "{ctx}"
    );
    assert_eq!(per_host(replayed), per_host(&live_final), "{ctx}");
    assert_eq!(
        replayed["leaked_total"], live_final["leaked_total"],
        "{ctx}"
    );

    // Bad files: one line each, exit 1; a missing one: exit 2 with its path.
    let replay = |path: &Path, extra: &[&str]| {
        let out = Command::new(tracer_bin())
            .arg("replay")
            .arg(path)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    };
    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.join("truncated.rec");
    std::fs::write(&truncated, &bytes[..bytes.len() - 5]).unwrap();
    let (code, err) = replay(&truncated, &["--json", "--fast"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("truncated.rec is truncated at byte"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let not_a_recording = dir.join("snapshot.json");
    std::fs::write(&not_a_recording, "{\"type\":\"snapshot\"}\n").unwrap();
    let (code, err) = replay(&not_a_recording, &["--json"]);
    assert_eq!((code, err.lines().count()), (Some(1), 1), "{err}");
    assert!(err.contains("is not a tracer recording"), "{err}");
    let missing = dir.join("missing.rec");
    let (code, err) = replay(&missing, &["--json"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    // The UI needs a terminal; here stdout is a pipe.
    let (code, err) = replay(&file, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
