//! What a check found, as data first (serde), then as a table on the
//! terminal, one JSON document, and JUnit XML for CI and autograders. The
//! renderers know verdicts and ids, never a case by name.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::{Outcome, Verdict};
use crate::service::ServiceKind;

/// A whole check: the target, the counts, every case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The address checked.
    pub target: String,
    /// The command check started, placeholders filled.
    pub command: Option<String>,
    pub service: String,
    pub quick: bool,
    pub seconds: f64,
    pub passed: usize,
    pub failed: usize,
    pub notes: usize,
    pub skipped: usize,
    pub cases: Vec<Outcome>,
}

impl Report {
    pub fn new(
        target: String,
        command: Option<String>,
        service: ServiceKind,
        quick: bool,
        elapsed: Duration,
        cases: Vec<Outcome>,
    ) -> Report {
        let count = |v: Verdict| cases.iter().filter(|c| c.verdict == v).count();
        Report {
            target,
            command,
            service: service.to_string(),
            quick,
            seconds: elapsed.as_secs_f64(),
            passed: count(Verdict::Pass),
            failed: count(Verdict::Fail),
            notes: count(Verdict::Note),
            skipped: count(Verdict::Skip),
            cases,
        }
    }

    /// `21 passed, 1 failed, 3 notes, 4 skipped in 4.2 s`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} notes, {} skipped in {:.1} s",
            self.passed, self.failed, self.notes, self.skipped, self.seconds
        )
    }
}

/// The table: a heading, a row per case, the counts.
pub fn table(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let what = match &report.command {
        Some(command) => format!("`{command}` on {}", report.target),
        None => report.target.clone(),
    };
    let quick = if report.quick { ", quick" } else { "" };
    writeln!(out, "check {what} as {}{quick}", report.service)?;
    let width = report.cases.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for case in &report.cases {
        writeln!(
            out,
            "  {}  {:<width$}  {}",
            case.verdict.name(),
            case.id,
            case.line
        )?;
    }
    writeln!(out, "{}", report.summary())
}

pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// JUnit XML: a suite per group, a test case per case. A note passes
/// (with its line as output), a skip is skipped with its reason.
pub fn junit(report: &Report) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
    let mut junit = quick_junit::Report::new(format!("socklab check {}", report.service));
    junit.set_time(Duration::from_secs_f64(report.seconds));
    let mut groups: Vec<&str> = Vec::new();
    for case in &report.cases {
        if !groups.contains(&case.group.as_str()) {
            groups.push(&case.group);
        }
    }
    for group in groups {
        let mut suite = TestSuite::new(group);
        for case in report.cases.iter().filter(|c| c.group == group) {
            let status = match case.verdict {
                Verdict::Pass | Verdict::Note => TestCaseStatus::success(),
                Verdict::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(case.line.as_str());
                    s
                }
                Verdict::Skip => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(case.line.as_str());
                    s
                }
            };
            let mut test = TestCase::new(case.id.as_str(), status);
            test.set_classname(format!("{}.{}", report.service, group));
            test.set_time(Duration::from_secs_f64(case.seconds));
            if case.verdict != Verdict::Fail {
                test.set_system_out(format!("{}: {}", case.verdict.name(), case.line));
            }
            suite.add_test_case(test);
        }
        junit.add_test_suite(suite);
    }
    Ok(junit.to_string()?)
}

pub fn write_junit(report: &Report, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, junit(report)?).with_context(|| format!("cannot write {}", path.display()))
}

/// A bar on stderr while the cases run, when stderr is a terminal; quiet
/// in a pipe.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress { bar }
    }

    pub fn start(&self, id: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(id.to_string());
        }
    }

    pub fn finish_one(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, verdict: Verdict) -> Outcome {
        Outcome {
            id: id.into(),
            group: id.split('.').next().unwrap_or(id).into(),
            verdict,
            line: "sent \"a\", got \"b\" <&>".into(),
            seconds: 0.01,
        }
    }

    #[test]
    fn junit_counts_failures_and_skips_and_escapes() {
        let report = Report::new(
            "tcp:127.0.0.1:1".into(),
            None,
            ServiceKind::Echo,
            true,
            Duration::from_secs(1),
            vec![
                outcome("framing.a", Verdict::Pass),
                outcome("framing.b", Verdict::Fail),
                outcome("peers.c", Verdict::Skip),
                outcome("peers.d", Verdict::Note),
            ],
        );
        let xml = junit(&report).unwrap();
        assert!(xml.contains(r#"tests="4" skipped="1" failures="1""#), "{xml}");
        assert!(xml.contains("&lt;&amp;&gt;"), "{xml}");
        assert_eq!(
            report.summary(),
            "1 passed, 1 failed, 1 notes, 1 skipped in 1.0 s"
        );
    }
}
