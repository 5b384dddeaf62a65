//! `socklab merge`: several `bench --json` runs (several hosts driving one
//! server) as one run, exactly.
//!
//! Counts are summed, the latency histograms are added count by count and
//! every percentile is read from the sum: never an average of percentiles
//! (which can put p99 above max), never a rounded latency. The result is
//! printed as bench prints a run (human, `--json`, `--csv`), and is itself
//! a run that can be merged again.
//!
//! A merge never drops a run quietly: an input that is not a bench report,
//! whose histogram does not decode or does not hold its replies, is an
//! error naming the file; so are runs against different targets or with
//! the same client ids (the same run twice, or drivers without
//! `--driver K/N`), unless the user says they mean it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Deserialize;

use super::bench::{self, BenchReport, ClientIds, ClientReport, Engine, ErrorKind, RunInfo};
use super::hdr;

#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub files: Vec<PathBuf>,
    pub json: bool,
    /// Append the merged summary to this CSV file, as `bench --csv` does.
    pub csv: Option<PathBuf>,
    /// Merge runs that drove different targets (`--allow-mixed`).
    pub allow_mixed: bool,
    /// Merge runs whose client ids overlap (`--allow-overlap`).
    pub allow_overlap: bool,
}

/// The keys of a `bench --json` document that a merge reads; a document
/// without them is not a bench run.
#[derive(Debug, Deserialize)]
struct Run {
    requests: u64,
    replies: u64,
    errors: u64,
    clients: usize,
    errors_by_kind: BTreeMap<String, u64>,
    engine: String,
    #[serde(default)]
    per_client: Vec<ClientReport>,
    target: String,
    started_at: String,
    ended_at: String,
    rate_rps: Option<f64>,
    driver: Option<String>,
    client_ids: ClientIds,
    #[serde(default)]
    runs: Vec<RunInfo>,
    histogram: String,
    #[serde(default)]
    load_busy: Option<f64>,
    /// Open loop: the send lags (absent from a closed loop, and from runs
    /// of a bench that did not measure them).
    #[serde(default)]
    send_lag_histogram: Option<String>,
    #[serde(default)]
    sends_queued: Option<u64>,
}

/// One input, read and checked.
struct Input {
    file: String,
    run: Run,
    started: SystemTime,
    ended: SystemTime,
    histogram: Histogram<u64>,
    send_lag: Option<Histogram<u64>>,
}

/// `socklab merge`: read, check, merge, print.
pub fn run(options: MergeOptions) -> anyhow::Result<()> {
    let report = merge_files(&options)?;
    bench::print(&report, options.json, false, options.csv.as_deref())
}

/// Reads every file and merges them into one report.
pub fn merge_files(options: &MergeOptions) -> anyhow::Result<BenchReport> {
    if options.files.is_empty() {
        bail!("nothing to merge: name the bench --json files");
    }
    let inputs = options
        .files
        .iter()
        .map(|path| read(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    check_targets(&inputs, options.allow_mixed)?;
    check_client_ids(&inputs, options.allow_overlap)?;
    merge(inputs)
}

fn read(path: &Path) -> anyhow::Result<Input> {
    let file = path.display().to_string();
    let text = std::fs::read(path).with_context(|| format!("cannot read {file}"))?;
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{file} is not JSON: {e}"))?;
    let run: Run = serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("{file} is not a socklab bench --json report: {e}"))?;
    let bad = |why: String| anyhow::anyhow!("{file}: {why}");
    let histogram =
        hdr::decode(&run.histogram).map_err(|e| bad(format!("the latency histogram cannot be read: {e}")))?;
    if histogram.len() != run.replies {
        return Err(bad(format!(
            "the histogram holds {} latencies but the report counts {} replies (edited or cut short?)",
            histogram.len(),
            run.replies
        )));
    }
    let send_lag = match &run.send_lag_histogram {
        Some(text) => {
            let h =
                hdr::decode(text).map_err(|e| bad(format!("the send lag histogram cannot be read: {e}")))?;
            // One lag per request sent; requests never sent have none.
            if h.len() > run.requests {
                return Err(bad(format!(
                    "the send lag histogram holds {} sends but the report counts {} requests",
                    h.len(),
                    run.requests
                )));
            }
            Some(h)
        }
        None => None,
    };
    if run.requests != run.replies + run.errors {
        return Err(bad(format!(
            "{} requests is not {} replies + {} errors",
            run.requests, run.replies, run.errors
        )));
    }
    for kind in run.errors_by_kind.keys() {
        if !ErrorKind::ALL.iter().any(|k| k.name() == kind) {
            return Err(bad(format!("unknown error kind '{kind}'")));
        }
    }
    if run.errors_by_kind.values().sum::<u64>() != run.errors {
        return Err(bad(format!("the errors by kind do not add up to {}", run.errors)));
    }
    if run.client_ids.first > run.client_ids.last {
        return Err(bad("client_ids: first is after last".to_string()));
    }
    engine(&run.engine).map_err(bad)?;
    let started = instant(&run.started_at).map_err(|e| bad(format!("started_at: {e}")))?;
    let ended = instant(&run.ended_at).map_err(|e| bad(format!("ended_at: {e}")))?;
    if ended < started {
        return Err(bad("it ended before it started".to_string()));
    }
    Ok(Input {
        file,
        run,
        started,
        ended,
        histogram,
        send_lag,
    })
}

fn instant(text: &str) -> Result<SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(SystemTime::from)
        .map_err(|e| format!("'{text}' is not an RFC 3339 time: {e}"))
}

fn engine(name: &str) -> Result<Engine, String> {
    match name {
        "tokio" => Ok(Engine::Tokio),
        "uring" => Ok(Engine::Uring),
        "mixed" => Ok(Engine::Mixed),
        other => Err(format!("unknown engine '{other}'")),
    }
}

/// Runs against different servers are not one run (unless the user says
/// the names differ but the server is the same).
fn check_targets(inputs: &[Input], allow_mixed: bool) -> anyhow::Result<()> {
    let first = &inputs[0];
    if let Some(other) = inputs.iter().find(|i| i.run.target != first.run.target) {
        if !allow_mixed {
            bail!(
                "the runs drove different targets: {} drove {}, {} drove {} (--allow-mixed merges them anyway)",
                first.file,
                first.run.target,
                other.file,
                other.run.target
            );
        }
    }
    Ok(())
}

/// Two runs with the same client ids are the same run twice, or drivers
/// started without `--driver K/N`: summing them would count clients twice.
fn check_client_ids(inputs: &[Input], allow_overlap: bool) -> anyhow::Result<()> {
    if allow_overlap {
        return Ok(());
    }
    let mut by_first: Vec<&Input> = inputs.iter().collect();
    by_first.sort_by_key(|i| i.run.client_ids.first);
    for pair in by_first.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.run.client_ids.first <= a.run.client_ids.last {
            bail!(
                "{} (clients {}-{}) and {} (clients {}-{}) share client ids: the same run twice, or drivers started without --driver K/N (--allow-overlap merges them anyway)",
                a.file,
                a.run.client_ids.first,
                a.run.client_ids.last,
                b.file,
                b.run.client_ids.first,
                b.run.client_ids.last
            );
        }
    }
    Ok(())
}

fn merge(inputs: Vec<Input>) -> anyhow::Result<BenchReport> {
    let mut histogram = bench::new_histogram();
    for input in &inputs {
        histogram
            .add(&input.histogram)
            .with_context(|| format!("{}: its histogram does not fit socklab's range", input.file))?;
    }
    let send_lag = merge_send_lag(&inputs)?;
    let sends_queued = match send_lag {
        Some(_) => inputs.iter().map(|i| i.run.sends_queued).sum::<Option<u64>>(),
        None => None,
    };
    let started = inputs.iter().map(|i| i.started).min();
    let ended = inputs.iter().map(|i| i.ended).max();
    let (Some(started), Some(ended)) = (started, ended) else {
        bail!("nothing to merge");
    };
    let elapsed = ended.duration_since(started).unwrap_or_default().as_secs_f64();

    let mut by_kind: BTreeMap<&'static str, u64> = ErrorKind::ALL.iter().map(|k| (k.name(), 0)).collect();
    let mut engines = Vec::new();
    let mut runs = Vec::new();
    let mut per_client = Vec::new();
    let (mut requests, mut replies, mut errors, mut clients) = (0, 0, 0, 0);
    let mut rate = Some(0.0);
    let mut load_busy: Option<f64> = None;
    let mut ids: Option<ClientIds> = None;
    let targets: Vec<&str> = inputs.iter().map(|i| i.run.target.as_str()).collect();
    let mut target_list: Vec<&str> = Vec::new();
    for t in targets {
        if !target_list.contains(&t) {
            target_list.push(t);
        }
    }
    let target = target_list.join(" + ");
    for input in inputs {
        let run = input.run;
        requests += run.requests;
        replies += run.replies;
        errors += run.errors;
        clients += run.clients;
        for (kind, n) in by_kind.iter_mut() {
            *n += run.errors_by_kind.get(*kind).copied().unwrap_or(0);
        }
        if let Ok(e) = engine(&run.engine) {
            if !engines.contains(&e) {
                engines.push(e);
            }
        }
        rate = rate.zip(run.rate_rps).map(|(a, b)| a + b);
        load_busy = [load_busy, run.load_busy].into_iter().flatten().reduce(f64::max);
        ids = Some(match ids {
            None => run.client_ids,
            Some(i) => ClientIds {
                first: i.first.min(run.client_ids.first),
                last: i.last.max(run.client_ids.last),
            },
        });
        per_client.extend(run.per_client);
        if run.runs.is_empty() {
            runs.push(RunInfo {
                file: input.file,
                started_at: run.started_at,
                ended_at: run.ended_at,
                requests: run.requests,
                replies: run.replies,
                driver: run.driver,
                client_ids: run.client_ids,
            });
        } else {
            // A merge of merges lists the runs it was made of.
            runs.extend(run.runs);
        }
    }
    per_client.sort_by_key(|c| c.id);
    note_missing_drivers(&runs);
    let starts: Vec<SystemTime> = runs.iter().filter_map(|r| instant(&r.started_at).ok()).collect();
    let spread = match (starts.iter().min(), starts.iter().max()) {
        (Some(a), Some(b)) => b.duration_since(*a).unwrap_or_default().as_secs_f64() * 1e3,
        _ => 0.0,
    };
    Ok(BenchReport {
        requests,
        replies,
        errors,
        elapsed_s: elapsed,
        throughput_rps: replies as f64 / elapsed.max(f64::EPSILON),
        latency_us: bench::latency(&histogram),
        clients,
        errors_by_kind: by_kind,
        percentiles_us: bench::percentiles(&histogram),
        engine: match engines.as_slice() {
            [one] => *one,
            _ => Engine::Mixed,
        },
        per_client,
        target,
        started_at: bench::wall_clock(started),
        ended_at: bench::wall_clock(ended),
        rate_rps: rate,
        driver: None,
        client_ids: ids.unwrap_or(ClientIds { first: 0, last: 0 }),
        runs,
        start_spread_ms: Some(spread),
        histogram: hdr::encode(&histogram)?,
        load_busy,
        send_lag_us: send_lag.as_ref().map(bench::latency),
        send_lag_histogram: send_lag.as_ref().map(hdr::encode).transpose()?,
        sends_queued,
    })
}

/// The runs' send lags added up, count by count as the latencies are, when
/// every run has one; none when no run has (closed loops). When only some
/// have, a lag of part of the sends would pass for all of them: none, and
/// a note on stderr.
fn merge_send_lag(inputs: &[Input]) -> anyhow::Result<Option<Histogram<u64>>> {
    let with: Vec<&Input> = inputs.iter().filter(|i| i.send_lag.is_some()).collect();
    if with.is_empty() {
        return Ok(None);
    }
    if with.len() < inputs.len() {
        let without: Vec<&str> = inputs
            .iter()
            .filter(|i| i.send_lag.is_none())
            .map(|i| i.file.as_str())
            .collect();
        eprintln!(
            "note: no send lag for the merge: {} did not measure one (a closed loop, or an older bench)",
            without.join(", ")
        );
        return Ok(None);
    }
    let mut sum = bench::new_histogram();
    for input in with {
        if let Some(h) = &input.send_lag {
            sum.add(h).with_context(|| {
                format!(
                    "{}: its send lag histogram does not fit socklab's range",
                    input.file
                )
            })?;
        }
    }
    Ok(Some(sum))
}

/// Drivers `K/N` that all say N but not every K is there: the merge is of
/// part of a run. Said on stderr; the figures are still those of the runs.
fn note_missing_drivers(runs: &[RunInfo]) {
    let drivers: Vec<bench::Driver> = runs
        .iter()
        .filter_map(|r| r.driver.as_deref()?.parse().ok())
        .collect();
    let Some(n) = drivers.first().map(|d| d.n) else {
        return;
    };
    if drivers.iter().any(|d| d.n != n) {
        eprintln!("note: the runs were started as drivers of different totals (K/N with several N)");
        return;
    }
    let missing: Vec<String> = (1..=n)
        .filter(|k| !drivers.iter().any(|d| d.k == *k))
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "note: {} of {n} drivers merged; missing {}",
            n - missing.len(),
            missing.join(", ")
        );
    }
}
