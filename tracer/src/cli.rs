//! Command line: clap derive; doc comments are the help text.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::model::Graces;

/// Finds leaked upstream HTTP connections inside a running Go relay, live, with eBPF.
///
/// tracer follows every TCP connection the target process opens and judges each open one:
/// closed by the upstream but never closed here (close_wait), response bytes left unread
/// (unread), or reading abandoned mid-response (abandoned). Needs root.
#[derive(Debug, Parser)]
#[command(name = "tracer", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace the targets and print per-host leak counts (a table, or JSON lines with --json).
    Run(RunArgs),
}

/// Which processes to trace: at least one --pid or --comm.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = true)]
pub struct TargetArgs {
    /// Process id of the relay to trace (repeatable).
    #[arg(long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,
    /// Process name of the relay (as `ps -o comm` shows it, at most 15 characters; repeatable).
    /// Processes with this name that start later are traced too.
    #[arg(long = "comm", value_name = "NAME", value_parser = parse_comm)]
    pub comms: Vec<String>,
}

/// How long a condition must last before a connection is called leaked.
#[derive(Debug, Args, Clone)]
pub struct GraceArgs {
    /// The upstream closed the connection and the process has not closed it for this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub close_wait_grace: Duration,
    /// Response bytes sit unread and nothing has read the socket for this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub unread_grace: Duration,
    /// The last read returned data and no read followed for this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub abandon_grace: Duration,
}

impl GraceArgs {
    pub fn graces(&self) -> Graces {
        Graces {
            close_wait: self.close_wait_grace,
            unread: self.unread_grace,
            abandon: self.abandon_grace,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub graces: GraceArgs,
    /// Print one JSON snapshot per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How often to print a snapshot.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this long, printing a final snapshot (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (use a duration such as 500ms, 5s, 2m or 1h)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err("must be between 100ms and 1h".into());
    }
    Ok(d)
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > crate::collect::MAX_COMM {
        let kept = s.get(..crate::collect::MAX_COMM).unwrap_or(s);
        return Err(format!(
            "the kernel keeps only the first {} bytes of a process name; use --comm {kept}",
            crate::collect::MAX_COMM
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_needs_a_target_and_parses_durations() {
        assert!(Cli::try_parse_from(["tracer", "run"]).is_err());
        let cli = Cli::try_parse_from(["tracer", "run", "--pid", "12", "--pid", "13", "--abandon-grace", "3s"])
            .expect("parses");
        let Command::Run(run) = cli.command;
        assert_eq!(run.targets.pids, vec![12, 13]);
        assert_eq!(run.graces.abandon_grace, Duration::from_secs(3));
        assert_eq!(run.graces.close_wait_grace, Duration::from_secs(5));
        assert_eq!(run.interval, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["tracer", "run", "--pid", "0"][..],
            &["tracer", "run", "--pid", "x"],
            &["tracer", "run", "--pid", "1", "--interval", "10ms"],
            &["tracer", "run", "--pid", "1", "--unread-grace", "soon"],
            &["tracer", "run", "--pid", "1", "--duration", "0s"],
            &["tracer", "run", "--comm", "a-very-long-process-name"],
        ] {
            let err = Cli::try_parse_from(args).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
