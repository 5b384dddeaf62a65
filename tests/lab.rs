//! `socklab lab` end to end, with small knobs: the experiment reproduces its
//! theory, and the exports agree with each other.

mod common;

use common::{fails_with, socklab, stderr, stdout, without_io_uring};
use socklab::lab::export::json;

#[test]
fn delay_lab_matches_theory_and_exports_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (j, md, html) = (path("lab.json"), path("lab.md"), path("lab.html"));
    let out = socklab(&[
        "lab",
        "--models",
        "iterative,thread,pool",
        "--scenarios",
        "delay",
        "--delay",
        "200ms",
        "--json",
        &j,
        "--markdown",
        &md,
        "--html",
        &html,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json::parse(&std::fs::read_to_string(&j).unwrap()).unwrap();
    assert_eq!(rows.len(), 3);
    let markdown = std::fs::read_to_string(&md).unwrap();
    for row in &rows {
        assert_eq!(row.scenario, "delay");
        assert_eq!(row.error, None, "{row:?}");
        let (made, theory) = (row.makespan_s.unwrap(), row.theory_s.unwrap());
        // Lower bound exact; the upper one wide, for a loaded machine.
        assert!(
            made >= theory * 0.99 && made < theory * 2.0 + 0.5,
            "{}: {made} vs {theory}",
            row.model
        );
        // The Markdown shows the same numbers as the JSON.
        let line = format!("| {} | {:.2} s | {:.2} s |", row.model, made, theory);
        assert!(markdown.contains(&line), "{line} not in\n{markdown}");
    }
    let theory: Vec<f64> = rows.iter().map(|r| r.theory_s.unwrap()).collect();
    assert_eq!(
        theory,
        [1.0, 0.2, 0.4],
        "iterative 5 rounds, thread 1, pool of 3: 2"
    );
    assert!(stdout(&out).contains("## delay"), "the table is printed too");

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg"));
    for link in ["src=\"http", "href=\"http", "<script", "@import", "url("] {
        assert!(!page.contains(link), "the page fetches something: {link}");
    }
}

#[test]
fn unknown_models_and_scenarios_are_usage_errors() {
    let err = fails_with(2, socklab(&["lab", "--models", "thread,nonesuch"]));
    assert!(err.contains("nonesuch"), "{err}");
    let err = fails_with(2, socklab(&["lab", "--scenarios", "fast"]));
    assert!(err.contains("unknown scenario 'fast'"), "{err}");
}

#[test]
fn a_model_that_cannot_start_is_reported_and_the_lab_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("rows.json");
    let html = dir.path().join("report.html");
    let out = without_io_uring(&[
        "lab",
        "--models",
        "uring,thread",
        "--scenarios",
        "delay",
        "--delay",
        "100ms",
        "--json",
        j.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "one model ran, so the lab succeeds: {}",
        stderr(&out)
    );
    let rows = json::parse(&std::fs::read_to_string(&j).unwrap()).unwrap();
    let uring = rows.iter().find(|r| r.model == "uring").unwrap();
    let why = uring.error.as_deref().unwrap_or_default();
    assert!(why.contains("io_uring is not available"), "{why}");
    let thread = rows.iter().find(|r| r.model == "thread").unwrap();
    assert_eq!(thread.error, None);
    assert!(thread.makespan_s.is_some());

    // And when nothing can run, the lab fails.
    let err = fails_with(
        1,
        without_io_uring(&[
            "lab",
            "--models",
            "uring",
            "--scenarios",
            "delay",
            "--html",
            html.to_str().unwrap(),
        ]),
    );
    assert!(err.contains("error: no model ran"), "{err}");
}
