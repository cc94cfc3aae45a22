use which::which;

/// Rebuild the eBPF object when bpf-linker changes (for example after an LLVM upgrade), since
/// cargo cannot see that dependency on its own.
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
