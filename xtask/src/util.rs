//! Running commands with errors that name the command, plus small host helpers.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The command as a person would type it (program and arguments, quoted where needed).
pub fn command_line(cmd: &Command) -> String {
    // util::cargo() runs the toolchain's cargo by its full path; people type `cargo`.
    let program = cmd.get_program();
    let program = match Path::new(program).file_name() {
        Some(name) if name == "cargo" => name,
        _ => program,
    };
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(|part| shell_quote(&part.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+^@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// "exit status 101" or "killed by signal 2 (SIGINT)".
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
        (None, None) => status.to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => " (SIGINT)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        _ => "",
    }
}

fn spawn_error(cmd: &Command, err: io::Error) -> anyhow::Error {
    let program = cmd.get_program().to_string_lossy().into_owned();
    if err.kind() == io::ErrorKind::NotFound {
        anyhow!("could not start `{program}`: not found on PATH")
    } else {
        anyhow!("could not start `{}`: {err}", command_line(cmd))
    }
}

/// Runs with inherited stdio (output streams to the terminal); fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!(
            "`{}` failed ({})",
            command_line(cmd),
            describe_status(status)
        );
    }
    Ok(())
}

/// Runs with inherited stdio and returns how it exited; fails only when it cannot start.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status().map_err(|err| spawn_error(cmd, err))
}

/// Runs with captured output, whatever the exit status; fails only when it cannot start.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.output().map_err(|err| spawn_error(cmd, err))
}

/// Runs with captured output and returns stdout; fails (quoting stderr's first line) unless 0.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let output = capture(cmd)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first_line = stderr
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .unwrap_or("no message");
        bail!(
            "`{}` failed ({}): {first_line}",
            command_line(cmd),
            describe_status(output.status)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// `true` when a CI system runs us: `CI` set to anything but empty, `false` or `0` (CI systems
/// say `true`, `1` or their own name). Tests then never skip. tests/src/lib.rs has the same rule.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| ci_value_means_ci(&value))
}

fn ci_value_means_ci(value: &str) -> bool {
    let value = value.trim();
    !(value.is_empty() || value == "0" || value.eq_ignore_ascii_case("false"))
}

#[cfg(test)]
mod ci_tests {
    use super::ci_value_means_ci;

    #[test]
    fn any_ci_value_but_empty_false_or_0_means_ci() {
        for v in ["true", "1", "yes", "TRUE", "github-actions"] {
            assert!(ci_value_means_ci(v), "{v}");
        }
        for v in ["", " ", "0", "false", "FALSE"] {
            assert!(!ci_value_means_ci(v), "{v:?}");
        }
    }
}

/// The first executable `name` in PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Where `cargo install` puts binaries: $CARGO_HOME/bin, by default ~/.cargo/bin.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    Some(home.join("bin"))
}

/// PATH with `dirs` in front (each only when not already in PATH).
pub fn path_with(dirs: &[PathBuf]) -> Result<OsString> {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let existing: Vec<PathBuf> = std::env::split_paths(&current).collect();
    let front: Vec<PathBuf> = dirs
        .iter()
        .filter(|dir| !existing.contains(dir))
        .cloned()
        .collect();
    std::env::join_paths(front.into_iter().chain(existing))
        .context("a directory in PATH contains ':'")
}

/// The cargo that runs xtask (cargo sets CARGO for `cargo run`), so nested builds use the
/// same toolchain.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The workspace root: xtask lives in <root>/xtask.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Announces a long step with a rough time estimate and reports how long it really took.
pub struct Progress {
    label: String,
    started: Instant,
}

impl Progress {
    /// Prints "<label> (<estimate>)..." and starts the clock.
    pub fn start(label: impl Into<String>, estimate: &str) -> Self {
        let label = label.into();
        println!("{label} ({estimate})...");
        Progress {
            label,
            started: Instant::now(),
        }
    }

    pub fn done(self) {
        println!(
            "{}: done in {}",
            self.label,
            format_elapsed(self.started.elapsed())
        );
    }
}

pub fn format_elapsed(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", elapsed.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", elapsed.as_secs() / 60, elapsed.as_secs() % 60)
    }
}

/// Parses durations like `30s`, `1500ms`, `2m`, `1m30s`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("`{text}` is not a duration; write it like 30s, 2m, 1m30s or 500ms");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(err()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("`{text}` is zero; give a duration longer than 0s"));
    }
    Ok(total)
}

/// Formats a duration so humantime (the tracer's parser) reads it back: `90s`, `1500ms`.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "30", "s", "3 0s", "30x", "-1s", "0s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_durations_for_the_tracer() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn quotes_command_lines() {
        let mut cmd = Command::new("cargo");
        cmd.args(["install", "--version", "^0.13", "two words", "it's"]);
        assert_eq!(
            command_line(&cmd),
            r"cargo install --version ^0.13 'two words' 'it'\''s'"
        );
    }

    #[test]
    fn describes_exit_statuses() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(101 << 8)),
            "exit status 101"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(libc::SIGINT)),
            "killed by signal 2 (SIGINT)"
        );
    }
}
