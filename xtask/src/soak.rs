//! `cargo xtask soak`: the full scale run — 100k held connections (a known share leaking) and
//! 5k new connections a second for 10 minutes, traced live — through the e2e harness
//! (tests/src/soak.rs, test `full_soak`), whose short version runs in CI. Writes bench/SOAK.md.

use std::{fs, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{bench, build, setup, util};

pub struct Options {
    pub hold: u32,
    pub rate: u32,
    pub duration: Duration,
}

pub fn run(opts: Options) -> Result<()> {
    if !util::is_root() {
        bail!("the soak loads eBPF programs and needs root: run sudo -E env \"PATH=$PATH\" cargo xtask soak");
    }
    if opts.hold < 100 {
        bail!(
            "--hold must be at least 100 connections (1% of them leak unread, 0.5% in CLOSE_WAIT)"
        );
    }
    setup::ensure().context("soak: setup failed")?;
    let artifacts = build::build().context("soak: build failed")?;
    let root = util::workspace_root();
    let report = root.join("bench").join("SOAK.md");
    let body = std::env::temp_dir().join(format!("tracer-soak-{}.md", std::process::id()));
    let minutes = opts.duration.as_secs_f64() / 60.0;
    let progress = util::Progress::start(
        format!(
            "soak: {} held connections, {} new connections/s for {}",
            opts.hold,
            opts.rate,
            util::format_duration(opts.duration)
        ),
        &format!(
            "about {:.0} minutes; the test prints one line per snapshot with --nocapture",
            minutes + 2.0 + f64::from(opts.hold) / 60_000.0
        ),
    );
    let mut cargo = util::cargo();
    cargo
        .current_dir(&root)
        .args(["test", "-p", "tracer-e2e", "--test", "scale", "full_soak"])
        .args(["--", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TRACER_BIN", &artifacts.tracer)
        .env("FIXTURE_BIN", &artifacts.fixture)
        .env("SOAK_HOLD", opts.hold.to_string())
        .env("SOAK_UNREAD", (opts.hold / 50).to_string())
        .env("SOAK_CLOSE_WAIT", (opts.hold / 100).to_string())
        .env("SOAK_RATE", opts.rate.to_string())
        .env("SOAK_SECONDS", opts.duration.as_secs().to_string())
        .env("SOAK_REPORT", &body);
    let outcome = util::run(&mut cargo);
    progress.done();
    // The report is written before the checks, so a failed soak still leaves its figures.
    let figures = fs::read_to_string(&body).unwrap_or_default();
    let _ = fs::remove_file(&body);
    if !figures.is_empty() {
        let text = format!(
            "# tracer scale soak\n\nMachine: {}. Command: `cargo xtask soak --hold {} --rate {} --duration {}`. Result: {}.\n\n\
             The soak relays (Go fixture, `fixture soak`, at most 15k connections each: this sandbox cannot raise RLIMIT_NOFILE past 20000) \
             hold the connections, 2% of them leaking unread and 1% in CLOSE_WAIT, then open, read and close new ones at the given rate; \
             the tracer follows every relay with `tracer run --json`. Verdicts are checked against the relays' own counts at every snapshot.\n\n{figures}",
            bench::machine(),
            opts.hold,
            opts.rate,
            util::format_duration(opts.duration),
            if outcome.is_ok() { "passed" } else { "FAILED (see the table)" }
        );
        fs::write(&report, text).with_context(|| format!("writing {}", report.display()))?;
        println!("soak: report in {}", report.display());
    }
    outcome.context("the soak failed (its report says where)")
}
