//! tracer: finds leaked upstream HTTP connections inside a running Go relay, live, with eBPF.
//!
//! Data flows one way: collect (kernel, sock_diag, /proc) or record (a recording being
//! replayed) -> model (table, verdicts, aggregates) -> export (JSON) | ui (table, terminal UI)
//! | record (writing a recording). See docs/ARCHITECTURE.md.

mod app;
mod cli;
mod collect;
mod export;
mod goprobe;
mod model;
mod naming;
mod pipeline;
mod record;
mod ui;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Diagnostics go to stderr (held back while the terminal UI is on screen); RUST_LOG=debug
    // shows the collector's work.
    ui::log::init();
    // The collector runs on the one worker thread (and scans sockets on a blocking thread),
    // the model and outputs on this one: rendering a large table never delays draining the
    // kernel's event ring.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        // One socket-scan thread for the whole run (scans are paced seconds apart; by default
        // tokio would end the idle thread after 10 s and start another for the next scan).
        .max_blocking_threads(1)
        .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tracer: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(app::main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.is::<app::UsageError>() { 2 } else { 1 };
            eprintln!("tracer: {e:#}");
            ExitCode::from(code)
        }
    }
}
