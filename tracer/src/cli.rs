//! Command line: clap derive; doc comments are the help text.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::Graces;

/// Finds leaked upstream HTTP connections inside a running Go relay, live, with eBPF.
///
/// tracer follows every TCP connection the target process opens and judges each open one:
/// closed by the upstream but never closed here (close_wait), response bytes left unread
/// (unread), or reading abandoned mid-response (abandoned). Needs root (except replay).
///
/// `tracer --pid PID` (no command) opens the terminal UI when stdout is a terminal, and
/// prints the table of `tracer run` otherwise.
#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    propagate_version = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Targets when no command is given (as for `watch`).
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub go: GoArgs,
    #[command(flatten)]
    pub graces: GraceArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub sites: SiteArgs,
}

/// How a leak's call site is chosen.
#[derive(Debug, Args, Clone, Default)]
pub struct SiteArgs {
    /// A wrapper to look through when naming the relay's line that obtained a response
    /// (repeatable): frames whose function name matches REGEX (e.g. `adaptor\.DoRequest$`)
    /// are skipped, so the call site is their caller.
    #[arg(long = "site-skip", value_name = "REGEX", value_parser = parse_site_skip)]
    pub site_skip: Vec<String>,
}

impl SiteArgs {
    pub fn rules(&self) -> crate::model::site::SiteRules {
        // Each pattern compiled when the flag was parsed.
        crate::model::site::SiteRules::new(&self.site_skip).unwrap_or_default()
    }
}

fn parse_site_skip(s: &str) -> Result<String, String> {
    crate::model::site::SiteRules::new(&[s.to_owned()])
        .map(|_| s.to_owned())
        .map_err(|e| {
            e.trim_start_matches(&format!("--site-skip {s:?} "))
                .to_owned()
        })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace the targets and print per-host leak counts (a table, or JSON lines with --json).
    Run(RunArgs),
    /// Trace the targets in a terminal UI: hosts, their connections, why each one is leaked,
    /// and the trend over time (? shows the keys).
    Watch(WatchArgs),
    /// Trace the targets and write what the tracer sees to a file, for `tracer replay`
    /// (socket addresses, states, counters and times; never payload bytes).
    Record(RecordArgs),
    /// Play a recording back in the terminal UI (or as JSON lines with --json). No root needed.
    Replay(ReplayArgs),
    /// Trace the targets for a while (--for), print one snapshot (JSON, CSV or Prometheus
    /// text) and exit: for cron jobs and scripts.
    Snapshot(SnapshotArgs),
    /// Check that this host can run the tracer: kernel, BTF, tracefs, each hook, privileges,
    /// memory accounting. One line each, with the fix for each problem; exit 1 if tracing
    /// cannot work. With --pid, also what the Go-aware layer makes of each process's binary.
    Check(CheckArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct CheckArgs {
    /// A relay to check the Go-aware layer against (repeatable): its Go version, and whether
    /// the functions the uprobes need are found with the expected prologues, else why the Go
    /// layer stays off for it (tracing then goes on with kernel signals).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
}

/// Whether the Go-aware layer probes the targets' binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum GoProbes {
    /// Nothing attached to the relay's binary: kernel signals only (no HTTP/2 stream leaks).
    Off,
    /// HTTP/2 streams, on every target whose binary the Go layer knows (Go 1.21 and newer,
    /// stripped or not): one probe per connection, nothing per request. The others get kernel
    /// signals only, with the reason in one line.
    #[default]
    Auto,
    /// `auto` and the call site of every leak: one probe hit per request as well, on an
    /// instruction the kernel emulates (about 2 µs of CPU per request in all).
    Sites,
}

/// The Go-aware layer.
#[derive(Debug, Args, Clone, Default)]
pub struct GoArgs {
    /// The Go-aware layer on relays built by Go 1.21+. `auto`: one uprobe per HTTP/2
    /// connection on the relay's binary, whose open streams are then read from its memory at
    /// each sample (leaked HTTP/2 streams). `sites`: also one per request where the relay hands
    /// the request to Go's transport, to name the source line behind every leak (about 2 us
    /// of CPU per request). `off`: kernel signals only.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = GoProbes::Auto)]
    pub go_probes: GoProbes,
}

/// How connections are named by provider.
#[derive(Debug, Args, Clone, Default)]
pub struct NamingArgs {
    /// A TOML file of providers that adds to or replaces entries of the built-in catalogue
    /// ([[provider]] name = "..." hosts = ["api.example.com", "*.example.net"]).
    #[arg(long, value_name = "FILE")]
    pub providers: Option<PathBuf>,
}

/// The Prometheus endpoint.
#[derive(Debug, Args, Clone)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics; a port alone ("9464") binds 127.0.0.1.
    #[arg(long, value_name = "ADDR", value_parser = crate::export::metrics_server::parse_metrics_addr)]
    pub metrics_addr: Option<SocketAddr>,
    /// Hosts that get their own metric series (most leaked first); the others add up under
    /// host="other" per provider, so label cardinality stays bounded.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub metrics_top_hosts: u32,
}

/// Formats of `tracer snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotFormat {
    Json,
    Csv,
    Prometheus,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub go: GoArgs,
    #[command(flatten)]
    pub graces: GraceArgs,
    #[command(flatten)]
    pub sites: SiteArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// How long to observe before printing (leaks younger than their grace are not counted:
    /// connections open before tracing start count from the start).
    #[arg(long = "for", value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub observe_for: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: SnapshotFormat,
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
    /// The upstream closed the connection, and the process has neither closed nor read it for
    /// this long (since the later of the upstream's FIN and the last read).
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
    pub go: GoArgs,
    #[command(flatten)]
    pub graces: GraceArgs,
    #[command(flatten)]
    pub sites: SiteArgs,
    /// Print one JSON snapshot per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How often to print a snapshot.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this long, printing a final snapshot (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// With --json: write the lines to FILE instead of stdout, rotating it by size (for log
    /// shippers).
    #[arg(long, value_name = "FILE", requires = "json")]
    pub output: Option<PathBuf>,
    /// With --output: rotate when the file would grow past this size (e.g. 512K, 100M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "100M", value_parser = crate::export::rotate::parse_size, requires = "output")]
    pub output_max_size: u64,
    /// With --output: rotated files to keep (FILE.1 ... FILE.N); 0 truncates FILE in place.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=1000), requires = "output")]
    pub output_keep: u16,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub go: GoArgs,
    #[command(flatten)]
    pub graces: GraceArgs,
    #[command(flatten)]
    pub sites: SiteArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// File to write the recording to (replaced if it exists).
    #[arg(long, short, value_name = "FILE")]
    pub out: std::path::PathBuf,
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub go: GoArgs,
    /// Graces stored in the recording: replay judges with them unless told otherwise.
    #[command(flatten)]
    pub graces: GraceArgs,
    /// Stop after this long (default: record until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub naming: NamingArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A recording made by `tracer record --out FILE`.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Print one JSON snapshot per --interval of recorded time, as `tracer run --json` does,
    /// instead of opening the UI.
    #[arg(long)]
    pub json: bool,
    /// Recorded seconds per second: 1 plays at the recorded pace, 10 ten times faster.
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_speed, conflicts_with = "fast")]
    pub speed: f64,
    /// Play as fast as possible.
    #[arg(long)]
    pub fast: bool,
    /// With --json: recorded time between two snapshots.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    #[command(flatten)]
    pub graces: GraceOverrides,
    #[command(flatten)]
    pub sites: SiteArgs,
}

/// Graces for a replay; each defaults to the one the recording was made with.
#[derive(Debug, Args, Clone, Default)]
pub struct GraceOverrides {
    /// How long CLOSE_WAIT may last before it is a leak [default: as recorded].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub close_wait_grace: Option<Duration>,
    /// How long response bytes may sit unread with no read [default: as recorded].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub unread_grace: Option<Duration>,
    /// How long after a read that returned data with no read since [default: as recorded].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub abandon_grace: Option<Duration>,
}

impl GraceOverrides {
    pub fn over(&self, recorded: Graces) -> Graces {
        Graces {
            close_wait: self.close_wait_grace.unwrap_or(recorded.close_wait),
            unread: self.unread_grace.unwrap_or(recorded.unread),
            abandon: self.abandon_grace.unwrap_or(recorded.abandon),
        }
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    let speed: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number (use e.g. 1, 2.5 or 10)"))?;
    if !(0.01..=10_000.0).contains(&speed) {
        return Err("must be between 0.01 and 10000 (use --fast for as fast as possible)".into());
    }
    Ok(speed)
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
        let cli = Cli::try_parse_from([
            "tracer",
            "run",
            "--pid",
            "12",
            "--pid",
            "13",
            "--abandon-grace",
            "3s",
        ])
        .expect("parses");
        let Some(Command::Run(run)) = cli.command else {
            panic!("not run: {cli:?}")
        };
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
            &["tracer", "watch"],
            &["tracer", "watch", "--pid", "1", "--json"],
            &["tracer", "record", "--pid", "1"],
            &["tracer", "record", "--out", "x.rec"],
            &["tracer", "replay"],
            &["tracer", "replay", "x.rec", "--speed", "0"],
            &["tracer", "replay", "x.rec", "--speed", "fast"],
            &["tracer", "replay", "x.rec", "--speed", "2", "--fast"],
            &["tracer", "--close-wait-grace", "1s"],
            &["tracer", "--pid", "1", "run", "--pid", "2"],
            &["tracer", "run", "--pid", "1", "--go-probes", "on"],
        ] {
            let err = Cli::try_parse_from(args).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn go_probes_default_to_auto_on_every_live_command() {
        let run = |args: &[&str]| match Cli::try_parse_from(args).expect("parses").command {
            Some(Command::Run(r)) => r.go.go_probes,
            Some(Command::Snapshot(s)) => s.go.go_probes,
            Some(Command::Watch(w)) => w.go.go_probes,
            other => panic!("{other:?}"),
        };
        assert_eq!(run(&["tracer", "run", "--pid", "1"]), GoProbes::Auto);
        assert_eq!(
            run(&["tracer", "snapshot", "--pid", "1", "--go-probes", "sites"]),
            GoProbes::Sites
        );
        assert_eq!(
            run(&["tracer", "watch", "--pid", "1", "--go-probes", "off"]),
            GoProbes::Off
        );
        let top =
            Cli::try_parse_from(["tracer", "--pid", "1", "--go-probes", "off"]).expect("parses");
        assert_eq!(top.go.go_probes, GoProbes::Off);
    }

    #[test]
    fn watch_record_and_replay_take_the_flags_of_run() {
        let cli =
            Cli::try_parse_from(["tracer", "watch", "--comm", "relay", "--unread-grace", "3s"])
                .expect("parses");
        let Some(Command::Watch(w)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            (w.targets.comms, w.graces.unread_grace),
            (vec!["relay".to_owned()], Duration::from_secs(3))
        );

        let cli = Cli::try_parse_from([
            "tracer",
            "record",
            "--out",
            "a.rec",
            "--pid",
            "9",
            "--duration",
            "1m",
        ])
        .expect("parses");
        let Some(Command::Record(r)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            (r.out.to_str(), r.targets.pids, r.duration),
            (Some("a.rec"), vec![9], Some(Duration::from_secs(60)))
        );

        let cli = Cli::try_parse_from([
            "tracer",
            "replay",
            "a.rec",
            "--json",
            "--fast",
            "--abandon-grace",
            "7s",
        ])
        .expect("parses");
        let Some(Command::Replay(p)) = cli.command else {
            panic!("{cli:?}")
        };
        assert!(p.json && p.fast);
        let recorded = Graces {
            close_wait: Duration::from_secs(2),
            ..Graces::default()
        };
        assert_eq!(
            p.graces.over(recorded),
            Graces {
                close_wait: Duration::from_secs(2),
                unread: Duration::from_secs(10),
                abandon: Duration::from_secs(7)
            }
        );
        let cli =
            Cli::try_parse_from(["tracer", "replay", "a.rec", "--speed", "2.5"]).expect("parses");
        let Some(Command::Replay(p)) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!((p.speed, p.fast, p.json), (2.5, false, false));
    }

    #[test]
    fn targets_without_a_command_are_the_default_session() {
        let cli = Cli::try_parse_from(["tracer", "--pid", "42", "--close-wait-grace", "1s"])
            .expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(
            (cli.targets.pids, cli.graces.close_wait_grace),
            (vec![42], Duration::from_secs(1))
        );
        // Nothing at all: the help, as a usage error.
        let err = Cli::try_parse_from(["tracer"]).expect_err("help");
        assert_eq!(err.exit_code(), 2);
    }
}
