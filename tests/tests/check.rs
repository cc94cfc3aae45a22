//! End-to-end: `tracer check` on this host, as root and without privileges.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use tracer_e2e::*;

#[test]
fn check_passes_as_root_and_names_every_hook() {
    if !prerequisites_met() {
        return;
    }
    let out = Command::new(tracer_bin()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains('✗'), "{text}");
    for role in ["connect", "state", "read", "close", "first_write"] {
        assert!(
            text.contains(&format!("✓ {role} hook: ")),
            "{role} missing:\n{text}"
        );
    }
    assert!(text.contains("✓ BTF at /sys/kernel/btf/vmlinux"), "{text}");
    assert!(text.contains("tracer can trace on this host"), "{text}");
}

#[test]
fn check_without_privileges_fails_with_the_fix() {
    if !prerequisites_met() {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(tracer_bin())
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(text.contains("✗ privileges"), "{text}");
    assert!(text.contains("fix: run tracer as root"), "{text}");
    assert_eq!(err.trim().lines().count(), 1, "one closing line: {err}");
}
