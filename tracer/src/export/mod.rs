//! Machine-readable outputs of snapshots. Only aggregates and socket metadata are written:
//! never payload bytes.

pub mod json;
