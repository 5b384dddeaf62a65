//! A row of the lab: one server under one scenario. What every scenario
//! measures of a server (who was served, latency, CPU, memory, kernel
//! cost, peaks) is a field here; what only one scenario measures (delay's
//! makespan, unp's CPU per connection, ...) is that scenario's own
//! `Figures` struct, kept in [`Row::figures`] and flattened into the same
//! JSON object, so the exports read as one flat row per measurement and a
//! new scenario adds its figures in its own file.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One measurement: a server under a scenario. Fields that do not apply to
/// the scenario are absent from the exports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub model: String,
    pub scenario: String,
    /// An outside server (`lab --server NAME=CMD`) rather than a model.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub outside: bool,
    /// The bench engine that drove the clients.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub engine: Option<String>,
    /// How many times the scenario ran: figures are the median of the runs,
    /// `range` holds each figure's min and max.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub runs: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub range: BTreeMap<String, Spread>,
    /// Clients that got at least one reply, out of how many: a model that
    /// served 1 of 50 is not fast, whatever its requests/s.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub served: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub clients: Option<u64>,
    /// Jain's fairness index over the clients' reply counts: 1 when all got
    /// the same, 1/n when one got everything.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fairness: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub throughput_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p99_us: Option<u64>,
    /// Requests answered and failed (timeouts of starved clients included).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replies: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errors: Option<u64>,
    /// Server CPU (user + system, children included) during the scenario.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_s: Option<f64>,
    /// Server CPU per reply, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_per_request_us: Option<f64>,
    /// How busy the load generator was, 0 to 1 (bench's `load_busy`): near
    /// 1, requests/s may be its limit rather than the model's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub load_busy: Option<f64>,
    /// Peak resident memory of the server and its children.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_rss_kb: Option<u64>,
    /// Proportional memory (PSS) of the server's processes under the load:
    /// shared pages divided among their sharers, so a fork server's
    /// children are not counted as copies.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pss_kb: Option<u64>,
    /// Idle connections held open while the server was measured, and of
    /// them, those it accepted and those still in the kernel's backlog.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idle_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub accepted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backlog: Option<u64>,
    /// Kernel cost per reply, measured from outside: context switches of
    /// the server's threads, and system calls (method in `meta`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub context_switches_per_request: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub syscalls_per_request: Option<f64>,
    /// Most threads and child processes seen.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_threads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_children: Option<u64>,
    /// How the server's workers shared the connections: each worker's
    /// accepts, from the `accepts per worker:` line it logs at shutdown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub accepts_per_worker: Option<Vec<u64>>,
    /// The threads or loops the server ran (`--workers`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workers: Option<u64>,
    /// The message size of the load.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_bytes: Option<u64>,
    /// Why the row has no numbers (the server would not start, hung, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// What the lab found odd about the row's figures, after a rerun.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub anomaly: Option<String>,
    /// The scenario's own figures, by name (see [`Row::figures`]).
    #[serde(flatten)]
    pub figures: serde_json::Map<String, serde_json::Value>,
}

impl Row {
    /// A row of `model` under `scenario`, nothing measured yet.
    pub fn new(model: &str, scenario: &str) -> Row {
        Row {
            model: model.into(),
            scenario: scenario.into(),
            ..Row::default()
        }
    }

    /// The scenario's own figures, as the scenario's type (`delay::Figures`).
    pub fn figures<T: DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(serde_json::Value::Object(self.figures.clone())).unwrap_or_default()
    }

    /// Stores the scenario's own figures (their `None`s are left out).
    pub fn set_figures<T: Serialize>(&mut self, figures: &T) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(figures) {
            self.figures.extend(map);
        }
    }

    /// How far the runs spread in `key`, max minus min (0 for one run).
    pub fn spread(&self, key: &str) -> f64 {
        self.range.get(key).map_or(0.0, |s| s.max - s.min)
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// A figure's lowest and highest value over the runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
}

/// The runs of one scenario as one set of rows: every numeric figure the
/// median of the runs that succeeded, with its min and max in `range`;
/// the rest (lanes, engine) from the first of them.
pub fn aggregate(runs: Vec<Vec<Row>>) -> Vec<Row> {
    let n = runs.len();
    let mut runs = runs.into_iter();
    let Some(first) = runs.next() else {
        return Vec::new();
    };
    if n == 1 {
        return first;
    }
    let rest: Vec<Vec<Row>> = runs.collect();
    first
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let all: Vec<&Row> = std::iter::once(&row)
                .chain(rest.iter().filter_map(|r| r.get(i)))
                .collect();
            let ok: Vec<&Row> = all.iter().copied().filter(|r| r.error.is_none()).collect();
            let Some(base) = ok.first() else {
                return row.clone();
            };
            let values: Vec<serde_json::Value> =
                ok.iter().filter_map(|r| serde_json::to_value(r).ok()).collect();
            let Ok(serde_json::Value::Object(mut merged)) = serde_json::to_value(base) else {
                return row.clone();
            };
            let mut range = BTreeMap::new();
            for (key, value) in merged.iter_mut() {
                if !value.is_number() {
                    continue;
                }
                let mut xs: Vec<f64> = values.iter().filter_map(|v| v.get(key)?.as_f64()).collect();
                if xs.len() != values.len() {
                    continue;
                }
                xs.sort_by(f64::total_cmp);
                let median = if !xs.len().is_multiple_of(2) {
                    xs[xs.len() / 2]
                } else {
                    (xs[xs.len() / 2 - 1] + xs[xs.len() / 2]) / 2.0
                };
                *value = if value.is_u64() {
                    serde_json::Value::from(median.round() as u64)
                } else {
                    serde_json::Value::from(median)
                };
                range.insert(
                    key.clone(),
                    Spread {
                        min: xs[0],
                        max: xs[xs.len() - 1],
                    },
                );
            }
            let mut out: Row =
                serde_json::from_value(serde_json::Value::Object(merged)).unwrap_or_else(|_| (*base).clone());
            out.range = range;
            out.runs = Some(ok.len() as u64);
            if let Some(e) = all.iter().find_map(|r| r.error.as_deref()) {
                tracing::warn!(
                    "{} {}: {} of {n} runs failed: {e}",
                    out.model,
                    out.scenario,
                    all.len() - ok.len()
                );
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Mine {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        makespan_s: Option<f64>,
    }

    #[test]
    fn a_scenarios_figures_are_flat_in_the_json_and_come_back_typed() {
        let mut row = Row::new("thread", "delay");
        row.set_figures(&Mine {
            makespan_s: Some(1.5),
        });
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["makespan_s"], 1.5);
        let back: Row = serde_json::from_value(json).unwrap();
        assert_eq!(
            back.figures::<Mine>(),
            Mine {
                makespan_s: Some(1.5)
            }
        );
    }

    #[test]
    fn runs_give_medians_and_ranges_of_every_figure_theirs_included() {
        let run = |cpu: f64, makespan: f64| {
            let mut r = Row::new("thread", "delay");
            r.cpu_s = Some(cpu);
            r.set_figures(&Mine {
                makespan_s: Some(makespan),
            });
            vec![r]
        };
        let rows = aggregate(vec![run(1.0, 3.0), run(3.0, 1.0), run(2.0, 2.0)]);
        assert_eq!(rows[0].cpu_s, Some(2.0));
        assert_eq!(rows[0].figures::<Mine>().makespan_s, Some(2.0));
        assert_eq!(rows[0].range["makespan_s"], Spread { min: 1.0, max: 3.0 });
        assert_eq!(rows[0].runs, Some(3));
    }
}
