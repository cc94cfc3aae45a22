//! Builds the eBPF object (tracer-ebpf) for the BPF target with aya-build and the pinned
//! nightly, so `cargo build -p tracer` is the only build command.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    // One place names the eBPF toolchain: xtask setup installs the same one.
    let nightly = include_str!("../tracer-ebpf/NIGHTLY").trim();
    println!("cargo:rerun-if-changed=../tracer-ebpf/NIGHTLY");
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?;
    let root_dir = std::path::Path::new(&manifest_dir).join("../tracer-ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("the tracer-ebpf path is not UTF-8: {}", root_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(nightly),
    )
    .with_context(|| {
        format!(
            "building the eBPF programs with {nightly} failed; run `cargo xtask setup` to install \
             the toolchain, rust-src and bpf-linker"
        )
    })
}
