//! The eBPF programs live in `main.rs` (the `tracer` binary target, built for the BPF target by
//! `tracer/build.rs`). This empty library only lets `tracer` name this crate as a build
//! dependency, so cargo rebuilds the object when these sources change.
#![no_std]
