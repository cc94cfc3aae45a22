//! `cargo xtask bench --ab A,B[,...] --scenarios S`: tracer builds against each other under
//! one scenario's load, alternating run by run (the order rotated each run), so that every
//! build meets the same minutes of a shared machine. A full bench compares configurations of
//! one build; on this kind of VM a program's ns per run moves ±20% between its runs, which
//! hides a change of a few percent. Here each build's figures are medians over the runs, and
//! the difference from the first build is the median of the per-run differences (paired).
//! Writes target/bench/AB.md.

use std::{collections::BTreeSet, os::unix::fs::PermissionsExt as _};

use super::*;

/// The Go layer's mode for every build (`--ab-go-probes`), as the tracer's arguments.
pub(super) fn go_probes_args(mode: Option<&str>) -> Result<&'static [&'static str]> {
    Ok(match mode {
        None => &[],
        Some("off") => &["--go-probes", "off"],
        Some("auto") => &["--go-probes", "auto"],
        Some("sites") => &["--go-probes", "sites"],
        Some(other) => bail!("--ab-go-probes {other}: use off, auto or sites"),
    })
}

/// Checks the builds before anything starts: each an executable file.
pub(super) fn check_builds(builds: &[PathBuf]) -> Result<()> {
    if builds.len() < 2 {
        bail!("--ab needs two tracer binaries or more, comma-separated (copy each build of target/release/tracer aside first)");
    }
    for b in builds {
        let meta = fs::metadata(b)
            .with_context(|| format!("--ab: no tracer binary at {}", b.display()))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            bail!("--ab: {} is not an executable file", b.display());
        }
    }
    Ok(())
}

/// A build's label in the report: its file name, or its path when two share a name.
fn labels(builds: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = builds
        .iter()
        .map(|b| {
            b.file_name().map_or_else(
                || b.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    names
        .iter()
        .zip(builds)
        .map(|(n, b)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                b.display().to_string()
            } else {
                n.clone()
            }
        })
        .collect()
}

/// Runs the A/B of `builds` on `mode` and writes its section into `report`.
#[allow(clippy::too_many_arguments)]
pub(super) fn measure(
    opts: &Options,
    mode: &Scenario,
    builds: &[PathBuf],
    args: &'static [&'static str],
    bins: &Binaries,
    fixture_upstream: u32,
    scratch: &Path,
    report: &mut String,
) -> Result<()> {
    let loaded = Loaded::start(opts, mode, bins, fixture_upstream, scratch)?;
    let labels = labels(builds);
    let config = Config {
        label: "A/B",
        attach: Attach::Relay(args),
    };
    let samples = loaded.alternate(opts, mode, bins, scratch, builds.len(), |i| {
        (labels[i].as_str(), &config, builds[i].as_path())
    })?;
    drop(loaded);
    write_section(report, mode, &labels, &samples)
}

/// Accounted CPU per request of a run: the programs' run time and the tracer process's CPU.
fn accounted_us(s: &Sample) -> f64 {
    s.program_us + s.tracer_us
}

fn write_section(
    report: &mut String,
    mode: &Scenario,
    labels: &[String],
    samples: &[Vec<Sample>],
) -> Result<()> {
    let runs = samples.first().map_or(0, Vec::len);
    writeln!(report, "## {} ({runs} runs per build)\n", mode.name)?;
    writeln!(report, "| build | median req/s | programs µs/request | tracer process µs/request | accounted µs/request (min–max) | vs {}: paired median difference, runs lower |", labels[0])?;
    writeln!(report, "| --- | --- | --- | --- | --- | --- |")?;
    let first = &samples[0];
    for (i, (label, runs)) in labels.iter().zip(samples).enumerate() {
        let accounted: Vec<f64> = runs.iter().map(accounted_us).collect();
        let (lo, hi) = spread(&accounted);
        let versus = if i == 0 {
            "–".to_owned()
        } else {
            let lower = runs
                .iter()
                .zip(first)
                .filter(|(b, a)| accounted_us(b) < accounted_us(a))
                .count();
            let diff = med_pair(runs, first, |b, a| accounted_us(b) - accounted_us(a));
            let base = med(first, accounted_us);
            format!(
                "{diff:+.2} µs ({:+.1}%), {lower} of {runs}",
                diff / base * 100.0,
                runs = runs.len()
            )
        };
        writeln!(
            report,
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2} ({lo:.2}–{hi:.2}) | {versus} |",
            med(runs, |s| s.rps),
            med(runs, |s| s.program_us),
            med(runs, |s| s.tracer_us),
            med(runs, accounted_us),
        )?;
    }
    let names: BTreeSet<&str> = samples
        .iter()
        .flatten()
        .flat_map(|s| s.programs.keys().map(String::as_str))
        .collect();
    writeln!(
        report,
        "\nPer program, median ns per run (runs per request):\n"
    )?;
    writeln!(report, "| program | {} |", labels.join(" | "))?;
    writeln!(report, "| --- |{}", " --- |".repeat(labels.len()))?;
    for name in names {
        let cells: Vec<String> = samples
            .iter()
            .map(|runs| {
                let of = |s: &Sample| s.programs.get(name).copied().unwrap_or_default();
                let ran: Vec<&Sample> = runs.iter().filter(|s| of(s).run_cnt > 0).collect();
                if ran.is_empty() {
                    return "–".to_owned();
                }
                let ns = median(
                    &mut ran
                        .iter()
                        .map(|s| of(s).run_time_ns as f64 / of(s).run_cnt as f64)
                        .collect::<Vec<_>>(),
                );
                let per_req = median(
                    &mut ran
                        .iter()
                        .map(|s| of(s).run_cnt as f64 / s.requests)
                        .collect::<Vec<_>>(),
                );
                format!("{ns:.0} ({per_req:.2})")
            })
            .collect();
        if cells.iter().all(|c| c == "–") {
            continue;
        }
        writeln!(report, "| {name} | {} |", cells.join(" | "))?;
    }
    writeln!(report)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(program_us: f64, tracer_us: f64, state_ns: u64) -> Sample {
        let mut programs = BTreeMap::new();
        programs.insert(
            "sock_set_state_raw".to_owned(),
            ProgStat {
                uprobe: false,
                run_time_ns: state_ns * 10_000,
                run_cnt: 10_000,
            },
        );
        Sample {
            rps: 8000.0,
            requests: 1000.0,
            program_us,
            tracer_us,
            programs,
            ..Sample::default()
        }
    }

    #[test]
    fn builds_are_compared_by_paired_differences_and_programs_by_medians() {
        // B is 1 µs cheaper in two runs and 0.5 µs dearer in one; the runs drift together.
        let a = vec![run(7.0, 1.0, 450), run(9.0, 1.0, 500), run(6.0, 1.0, 400)];
        let b = vec![run(6.0, 1.0, 380), run(8.0, 1.0, 420), run(6.5, 1.0, 410)];
        let mode = SCENARIOS.iter().find(|s| s.key == "churn").unwrap();
        let mut report = String::new();
        let labels = ["old".to_owned(), "new".to_owned()];
        write_section(&mut report, mode, &labels, &[a, b]).unwrap();
        let new = report.lines().find(|l| l.starts_with("| new |")).unwrap();
        // Accounted medians 8.00 against 7.50; paired: -1, -1, +0.5, median -1 of A's 8: -12.5%.
        assert!(new.contains("| 7.50 (7.00–9.00) |"), "{new}");
        assert!(new.contains("-1.00 µs (-12.5%), 2 of 3"), "{new}");
        let state = report
            .lines()
            .find(|l| l.starts_with("| sock_set_state_raw |"))
            .unwrap();
        assert_eq!(state, "| sock_set_state_raw | 450 (10.00) | 410 (10.00) |");
    }

    #[test]
    fn a_single_build_or_a_missing_one_is_refused() {
        let one = [PathBuf::from("/bin/true")];
        assert!(check_builds(&one).is_err());
        let missing = [PathBuf::from("/bin/true"), PathBuf::from("/no/such/tracer")];
        let e = check_builds(&missing).unwrap_err().to_string();
        assert!(e.contains("/no/such/tracer"), "{e}");
        assert!(go_probes_args(Some("streams")).is_err());
        assert_eq!(go_probes_args(Some("off")).unwrap(), ["--go-probes", "off"]);
    }
}
