//! `cargo xtask dist`: a static (musl) release binary that runs on a host with no Rust
//! toolchain and any glibc, at target/dist/tracer-VERSION-x86_64-linux-musl.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{build, setup, util};

const TARGET: &str = "x86_64-unknown-linux-musl";

/// The static binary cargo built, and what its `--version` said.
pub struct StaticBinary {
    pub path: PathBuf,
    pub version: String,
}

pub fn run() -> Result<()> {
    let StaticBinary {
        path: built,
        version,
    } = build_static()?;
    let root = util::workspace_root();
    let target_dir = build::target_dir(&root)?;
    let version = version
        .split_whitespace()
        .last()
        .unwrap_or("unknown")
        .to_owned();
    let dist = target_dir.join("dist");
    fs::create_dir_all(&dist)?;
    let out = dist.join(format!("tracer-{version}-x86_64-linux-musl"));
    fs::copy(&built, &out).with_context(|| format!("dist: copying to {}", out.display()))?;
    // Proof that it needs nothing from the host: run it in a directory holding only itself.
    if util::is_root() {
        let jail = dist.join("chroot-check");
        let _ = fs::remove_dir_all(&jail);
        fs::create_dir_all(&jail)?;
        fs::copy(&built, jail.join("tracer"))?;
        let alone = util::stdout_of(
            Command::new("chroot")
                .arg(&jail)
                .args(["/tracer", "--version"]),
        );
        let _ = fs::remove_dir_all(&jail);
        let alone = alone.context(
            "dist: the binary does not run in an empty root (it needs files from the host)",
        )?;
        println!("dist: runs alone in an empty root: {}", alone.trim());
    }
    let size = fs::metadata(&out)?.len();
    println!(
        "dist: {} ({:.1} MiB, statically linked; copy it to the host and run it as root)",
        out.display(),
        size as f64 / 1_048_576.0
    );
    Ok(())
}

/// Builds the static (musl) release binary, adding the rustup target when missing, and checks
/// that it is static and runs. The kernel matrix runs this binary in its guests, which have
/// no Rust toolchain.
pub fn build_static() -> Result<StaticBinary> {
    setup::ensure().context("dist")?;
    let installed = util::stdout_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("dist: asking rustup for the installed targets")?;
    if !installed.lines().any(|l| l.trim() == TARGET) {
        let progress =
            util::Progress::start(format!("dist: rustup target add {TARGET}"), "a few seconds");
        util::run(Command::new("rustup").args(["target", "add", TARGET])).with_context(|| {
            format!("dist: cannot add the {TARGET} target; run: rustup target add {TARGET}")
        })?;
        progress.done();
    }
    let root = util::workspace_root();
    let progress = util::Progress::start(
        format!("dist: cargo build --release --target {TARGET} -p tracer"),
        "about 90s the first time",
    );
    let mut cargo = util::cargo();
    cargo
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "-p", "tracer"]);
    if let Some(cargo_bin) = util::cargo_bin_dir() {
        cargo.env("PATH", util::path_with(&[cargo_bin])?);
    }
    util::run(&mut cargo).context("dist: the static build failed")?;
    progress.done();

    let target_dir = build::target_dir(&root)?;
    let built = target_dir.join(TARGET).join("release/tracer");
    // ldd says so for a static executable (and fails with "not a dynamic executable" on some
    // versions): either way, no shared library is needed.
    let ldd = util::capture(Command::new("ldd").arg(&built)).context("dist: running ldd")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    if !(said.contains("statically linked") || said.contains("not a dynamic executable")) {
        bail!("dist: {} is not static; ldd says:\n{said}", built.display());
    }
    let version = util::stdout_of(Command::new(&built).arg("--version"))
        .context("dist: the binary does not run")?;
    Ok(StaticBinary {
        path: built,
        version,
    })
}
