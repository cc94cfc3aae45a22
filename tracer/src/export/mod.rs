//! Machine-readable outputs of snapshots. Only aggregates and socket metadata are written:
//! never payload bytes.

pub mod csv;
pub mod json;
pub mod metrics_server;
pub mod prometheus;
pub mod rotate;
#[cfg(test)]
mod testdata;

use anyhow::{Context as _, Result};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::model::snapshot::HostSummary;

/// The `provider` of a host the catalogue does not name.
pub const UNKNOWN_PROVIDER: &str = "unknown";

/// The provider a host belongs to, as every tabular output (CSV, Prometheus) labels it.
pub fn provider_of(host: &HostSummary) -> &str {
    host.provider.as_deref().unwrap_or(UNKNOWN_PROVIDER)
}

/// The wall-clock time a snapshot is written at, as RFC 3339 in UTC.
pub fn now_rfc3339() -> Result<String> {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .context("formatting the current time")
}
