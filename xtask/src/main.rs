//! Developer tasks for tracer: `cargo xtask <command>`.
//!
//! The eBPF crate itself is built by tracer/build.rs (aya-build); xtask only prepares the host,
//! runs builds and tests, and drives the demo.

mod build;
mod demo;
mod setup;
mod test;
mod util;

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
    /// Run setup, the unit and snapshot tests, the build, then the end-to-end tests (root).
    Test {
        /// Run the end-to-end tests this many times and report the pass rate.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: u32,
    },
    /// Run the tracer on the bundled Go fixture (a relay leaking connections to fake providers).
    /// Needs root.
    Demo {
        /// How long to trace, like 30s, 2m or 1m30s. Without it the demo runs until Ctrl-C in a
        /// terminal, and for 30s when stdout is not a terminal.
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
        Command::Test { repeat } => test::run(repeat),
        Command::Demo { duration } => demo::run(duration),
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
