//! The lab's scenarios (DESIGN section 7), one file each. A scenario owns
//! what it measures (against a fresh server, so that CPU and memory are its
//! own), the figures of its rows, and its section of the report: lesson,
//! charts, the why, table, findings and anomalies. Adding a scenario is a
//! file here and a line in [`ALL`].

mod c10k;
mod compare;
mod cost;
mod delay;
mod idle;
mod measured;
mod throughput;
mod unp;
mod uring_ladder;
mod work;

use std::fmt;
use std::time::Duration;

use super::export::section::Section;
use super::probe::SyscallMethod;
use super::Row;
use crate::model::ModelKind;
use crate::service::ServiceKind;

/// What a scenario measures: one of socklab's models, or an outside server.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Model(ModelKind),
    Outside(&'a Outside),
}

/// An outside server: `lab --server NAME[:SERVICE]=CMD`, its command with
/// `{port}` (or `{addr}`) for the lab to fill in.
#[derive(Debug, Clone, PartialEq)]
pub struct Outside {
    pub name: String,
    pub service: ServiceKind,
    pub command: String,
}

impl Subject<'_> {
    pub fn name(&self) -> &str {
        match self {
            Subject::Model(m) => m.name(),
            Subject::Outside(o) => &o.name,
        }
    }

    pub fn model(&self) -> Option<ModelKind> {
        match self {
            Subject::Model(m) => Some(*m),
            Subject::Outside(_) => None,
        }
    }

    /// A row of this server under `scenario`, nothing measured yet.
    pub fn row(&self, scenario: &str) -> Row {
        Row {
            outside: matches!(self, Subject::Outside(_)),
            ..Row::new(self.name(), scenario)
        }
    }
}

pub use cost::Figures as CostFigures;
pub use delay::Figures as DelayFigures;
pub use idle::Figures as IdleFigures;
pub use unp::Figures as UnpFigures;
pub use uring_ladder::Figures as LadderFigures;
pub use work::Figures as WorkFigures;

/// Every scenario, in the report's order.
pub static ALL: &[&dyn Scenario] = &[
    &cost::Cost,
    &delay::Delay,
    &throughput::Throughput,
    &idle::Idle,
    &c10k::C10k,
    &unp::Unp,
    &work::Work,
    &uring_ladder::UringLadder,
];

/// A scenario of the lab.
pub trait Scenario: Sync {
    /// Its name on the command line, in the exports and in the report.
    fn name(&self) -> &'static str;

    /// Whether a bare `socklab lab` runs it.
    fn by_default(&self) -> bool {
        true
    }

    /// Whether `model` has rows here.
    fn applies_to(&self, _model: ModelKind) -> bool {
        true
    }

    /// The service its load speaks: an outside server (`lab --server`)
    /// has rows here when it speaks it too.
    fn service(&self) -> ServiceKind;

    /// Whether outside servers run here at all (not where the scenario
    /// needs socklab's own switches).
    fn takes_outside(&self) -> bool {
        true
    }

    /// Runs when `--runs` is not given: at least three for a scenario
    /// whose section compares servers, so that every comparison has a
    /// spread to be judged against.
    fn default_runs(&self) -> usize {
        3
    }

    /// Its parameters, for the report's `meta`.
    fn parameters(&self, knobs: &Knobs) -> serde_json::Value;

    /// One run on `server`: its rows. With `kernel_cost`, also counts
    /// context switches and system calls per request where the scenario
    /// shows them.
    fn measure(
        &self,
        server: Subject,
        knobs: &Knobs,
        kernel_cost: Option<SyscallMethod>,
    ) -> anyhow::Result<Vec<Row>>;

    /// Figures relative to other rows, once they are all in (unp's CPU
    /// over the iterative server's).
    fn relate(&self, _rows: &mut [Row]) {}

    /// The row's headline, for the progress log.
    fn headline(&self, row: &Row) -> String;

    /// Its section of the report.
    fn section(&self, rows: &[&Row]) -> Section;

    /// Sentences for the report's opening: each with its figures, and only
    /// where a difference is larger than its spread.
    fn findings(&self, _rows: &[&Row]) -> Vec<String> {
        Vec::new()
    }

    /// What `rows` (one server's) showed here, as a clause of its paragraph.
    fn story(&self, _rows: &[&Row]) -> Option<String> {
        None
    }

    /// Why `row`'s figures are far outside its peers' (the scenario's other
    /// rows), if they are: the lab reruns such a row once, and keeps the
    /// warning if the rerun is odd too.
    fn anomaly(&self, _row: &Row, _peers: &[&Row]) -> Option<String> {
        None
    }
}

impl fmt::Debug for dyn Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for dyn Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The servers in `rows`, in order of first appearance.
pub fn servers_of(rows: &[&Row]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        if !names.contains(&r.model) {
            names.push(r.model.clone());
        }
    }
    names
}

/// The scenarios a bare `socklab lab` runs.
pub fn default_set() -> Vec<&'static dyn Scenario> {
    ALL.iter().copied().filter(|s| s.by_default()).collect()
}

/// Every scenario's name: `delay, throughput, ... or uring-ladder`.
pub fn names() -> String {
    let names: Vec<&str> = ALL.iter().map(|s| s.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// `--scenarios`' help: every scenario, and which a bare `lab` runs.
pub fn help() -> String {
    let off: Vec<&str> = ALL.iter().filter(|s| !s.by_default()).map(|s| s.name()).collect();
    let all: Vec<&str> = ALL.iter().map(|s| s.name()).collect();
    format!(
        "Scenarios to run, comma-separated: {} [default: all{}]",
        all.join(", "),
        if off.is_empty() {
            String::new()
        } else {
            format!(" but {}", off.join(", "))
        }
    )
}

/// `--scenarios`' parser: a scenario by its name.
pub fn parse(s: &str) -> Result<&'static dyn Scenario, String> {
    ALL.iter()
        .copied()
        .find(|sc| sc.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown scenario '{s}' (expected {})", names()))
}

/// The scenario named `name`.
pub fn by_name(name: &str) -> Option<&'static dyn Scenario> {
    parse(name).ok()
}

/// The scenarios' settings (`socklab lab --help` lists the flags).
#[derive(Debug, Clone)]
pub struct Knobs {
    pub delay_clients: usize,
    pub delay: Duration,
    pub clients: usize,
    pub duration: Duration,
    pub size: usize,
    pub idle_connections: usize,
    /// c10k: the idle connections held at each step.
    pub c10k_levels: Vec<usize>,
    /// `--runs N` for every scenario; `None`: each scenario's default.
    pub runs: Option<usize>,
    /// unp: clients at once, and rounds (connections) each.
    pub unp_clients: usize,
    pub unp_rounds: usize,
    /// cost: the offered rates (requests/s in total), and how long each.
    pub cost_rates: Vec<u32>,
    pub cost_duration: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            delay_clients: 5,
            delay: Duration::from_secs(1),
            clients: 50,
            duration: Duration::from_secs(3),
            size: 512,
            idle_connections: 1000,
            c10k_levels: vec![0, 1000, 5000, 10_000],
            runs: None,
            unp_clients: 5,
            unp_rounds: 500,
            cost_rates: vec![10_000, 30_000, 60_000, 100_000],
            cost_duration: Duration::from_secs(1),
        }
    }
}

impl Knobs {
    /// How many times a scenario is run: its figures are the median.
    pub fn runs_for(&self, scenario: &dyn Scenario) -> usize {
        self.runs.unwrap_or_else(|| scenario.default_runs()).max(1)
    }

    /// Every parameter, for the report's `meta`.
    pub fn describe(&self, scenarios: &[&dyn Scenario]) -> serde_json::Value {
        let mut all = serde_json::Map::new();
        for s in scenarios {
            let mut p = s.parameters(self);
            p["service"] = s.service().name().into();
            p["runs"] = self.runs_for(*s).into();
            all.insert(s.name().to_string(), p);
        }
        serde_json::Value::Object(all)
    }
}
