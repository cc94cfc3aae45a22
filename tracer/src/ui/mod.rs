//! Human-facing renderings of snapshots. Rendering reads the snapshot; it never changes the model.

pub mod plain;
