//! `cargo xtask build`: the release tracer (tracer/build.rs builds its eBPF programs through
//! aya-build) and the Go fixture.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::util::{self, Progress};

/// The Go fixture's main package, relative to the workspace root.
const FIXTURE_DIR: &str = "tests/fixture";

/// What `build` produces, for demo and the end-to-end tests.
pub struct Artifacts {
    pub tracer: PathBuf,
    pub fixture: PathBuf,
}

impl Artifacts {
    pub fn print(&self) {
        println!("build: tracer  {}", self.tracer.display());
        println!("build: fixture {}", self.fixture.display());
    }
}

pub fn build() -> Result<Artifacts> {
    let root = util::workspace_root();
    let target_dir = target_dir(&root)?;

    let progress = Progress::start(
        "build: cargo build --release -p tracer",
        "about 80s cold with the eBPF part, a few seconds when cached",
    );
    let mut cargo = util::cargo();
    cargo
        .current_dir(&root)
        .args(["build", "--release", "-p", "tracer"]);
    // rustc finds bpf-linker on PATH; `cargo install` puts it in $CARGO_HOME/bin, which a
    // root shell or CI may not have on PATH.
    if let Some(cargo_bin) = util::cargo_bin_dir() {
        cargo.env("PATH", util::path_with(&[cargo_bin])?);
    }
    util::run(&mut cargo).context("build: the tracer does not build")?;
    progress.done();
    let tracer = target_dir.join("release/tracer");
    if !util::is_executable(&tracer) {
        bail!(
            "build: cargo succeeded but {} is missing; the tracer crate must build a binary named `tracer`",
            tracer.display()
        );
    }

    let fixture = build_fixture(&root, &target_dir)?;
    Ok(Artifacts { tracer, fixture })
}

fn build_fixture(root: &Path, target_dir: &Path) -> Result<PathBuf> {
    let source = root.join(FIXTURE_DIR);
    if !source.join("go.mod").is_file() {
        bail!(
            "build: the Go fixture is missing: expected a Go main package with go.mod in {}",
            source.display()
        );
    }
    let out_dir = target_dir.join("fixture");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("build: cannot create {}", out_dir.display()))?;
    let fixture = out_dir.join("fixture");

    let progress = Progress::start(
        format!("build: go build {FIXTURE_DIR}"),
        "a few seconds, standard library only",
    );
    let mut go = Command::new("go");
    go.current_dir(&source)
        .arg("build")
        .arg("-o")
        .arg(&fixture)
        .arg(".");
    util::run(&mut go)
        .with_context(|| format!("build: the Go fixture in {FIXTURE_DIR} does not build (Go comes from: cargo xtask setup)"))?;
    progress.done();
    Ok(fixture)
}

/// The target directory as cargo resolves it (CARGO_TARGET_DIR, config, or <root>/target).
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    let mut metadata = util::cargo();
    metadata
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"]);
    let text = util::stdout_of(&mut metadata)
        .context("build: cannot ask cargo for the target directory")?;
    target_dir_from_metadata(&text)
}

fn target_dir_from_metadata(text: &str) -> Result<PathBuf> {
    let json: serde_json::Value = serde_json::from_str(text)
        .context("`cargo metadata` printed something that is not JSON")?;
    json.get("target_directory")
        .and_then(serde_json::Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("`cargo metadata` output has no target_directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_target_directory() {
        let text = r#"{"packages":[],"target_directory":"/work/main/target","workspace_root":"/work/main"}"#;
        assert_eq!(
            target_dir_from_metadata(text).ok(),
            Some(PathBuf::from("/work/main/target"))
        );
        assert!(target_dir_from_metadata("{}").is_err());
        assert!(target_dir_from_metadata("warning: x").is_err());
    }
}
