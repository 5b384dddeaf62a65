//! `socklab lab` end to end, with small knobs: the experiment reproduces its
//! theory, and the exports agree with each other.

mod common;

use common::{fails_with, socklab, stderr, stdout, without_io_uring};
use socklab::lab::export::json;
use socklab::lab::scenario::{DelayFigures, IdleFigures, UnpFigures};

/// `socklab lab ARGS --json FILE --html none`, which must succeed: its
/// output and the report it wrote.
fn lab_report(args: &[&str]) -> (std::process::Output, socklab::lab::Report) {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("lab.json");
    let mut all = vec!["lab"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", j.to_str().unwrap(), "--html", "none"]);
    let out = socklab(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json::parse(&std::fs::read_to_string(&j).unwrap()).unwrap();
    (out, report)
}

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
    let report = json::parse(&std::fs::read_to_string(&j).unwrap()).unwrap();
    let rows = report.rows;
    assert_eq!(rows.len(), 3);
    let markdown = std::fs::read_to_string(&md).unwrap();
    for row in &rows {
        assert_eq!(row.scenario, "delay");
        assert_eq!(row.error, None, "{row:?}");
        let (made, theory) = (
            row.figures::<DelayFigures>().makespan_s.unwrap(),
            row.figures::<DelayFigures>().theory_s.unwrap(),
        );
        // Lower bound exact; the upper one wide, for a loaded machine.
        assert!(
            made >= theory * 0.99 && made < theory * 2.0 + 0.5,
            "{}: {made} vs {theory}",
            row.model
        );
        // The Markdown shows the same numbers as the JSON.
        let line = format!("| {} | {:.2} s | {:.2} s | 5 of 5 |", row.model, made, theory);
        assert!(markdown.contains(&line), "{line} not in\n{markdown}");
        // Every client's lane, from connect to reply.
        let lanes = row.figures::<DelayFigures>().lanes.expect("lanes");
        assert_eq!(lanes.len(), 5);
        assert!(lanes
            .iter()
            .all(|l| l.connected_s <= l.last_byte_s && l.last_byte_s.is_some()));
    }
    let theory: Vec<f64> = rows
        .iter()
        .map(|r| r.figures::<DelayFigures>().theory_s.unwrap())
        .collect();
    assert_eq!(
        theory,
        [1.0, 0.2, 0.4],
        "iterative 5 rounds, thread 1, pool of 3: 2"
    );
    assert!(stdout(&out).contains("## delay"), "the table is printed too");
    // The meta block: where the figures came from.
    let meta = &report.meta;
    assert!(meta.date.starts_with("20"), "{meta:?}");
    assert!(
        !meta.kernel.is_empty() && meta.cores >= 1 && !meta.cpu.is_empty(),
        "{meta:?}"
    );
    assert!(!meta.commit.is_empty() && !meta.socklab_version.is_empty());
    assert!(!meta.syscalls.is_empty() && !meta.pinning.is_empty());
    assert!(meta.engine == "uring" || meta.engine == "tokio", "{meta:?}");
    assert_eq!(meta.parameters["delay"]["delay_ms"], 200);
    assert_eq!(meta.parameters["delay"]["clients"], 5);
    assert!(markdown.contains("- kernel: "), "{markdown}");

    // The page reads alone: axes, legends, meta, nothing fetched.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg"));
    assert!(
        page.contains("class=\"axis\"") && page.contains("class=\"tick\""),
        "axes with ticks"
    );
    assert!(page.contains(">theory</text>"), "a legend");
    assert!(
        page.contains("id=\"meta\"") && page.contains(&meta.kernel),
        "the meta block"
    );
    assert!(
        page.contains(&format!(
            "href=\"file://{}/src/model/pool.rs\"",
            env!("CARGO_MANIFEST_DIR")
        )),
        "each model links its source, absolutely"
    );
    for link in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "<script",
        "@import",
        "url(http",
    ] {
        assert!(!page.contains(link), "the page fetches something: {link}");
    }
    // The report's absolute path, at the end.
    let html_path = std::path::absolute(&html).unwrap();
    assert!(
        stdout(&out).contains(&format!("report: {}", html_path.display())),
        "{}",
        stdout(&out)
    );
}

#[test]
fn served_counts_fairness_kernel_cost_and_runs() {
    let (out, report) = lab_report(&[
        "--models",
        "iterative,epoll",
        "--scenarios",
        "throughput",
        "--clients",
        "4",
        "--duration",
        "2500ms",
        "--runs",
        "2",
    ]);
    assert!(!stdout(&out).contains("report:"), "--html none writes no page");
    let row = |m: &str| report.rows.iter().find(|r| r.model == m).unwrap();
    // Iterative serves its first client until the others time out (2 s).
    let (iterative, epoll) = (row("iterative"), row("epoll"));
    assert_eq!(
        (iterative.served, iterative.clients),
        (Some(1), Some(4)),
        "{iterative:?}"
    );
    assert_eq!((epoll.served, epoll.clients), (Some(4), Some(4)), "{epoll:?}");
    assert!(iterative.fairness.unwrap() < 0.3, "{iterative:?}");
    assert!(epoll.fairness.unwrap() > 0.9, "{epoll:?}");
    for r in [iterative, epoll] {
        assert_eq!(r.runs, Some(2));
        let spread = r.range["throughput_rps"];
        let median = r.throughput_rps.unwrap();
        assert!(spread.min <= median && median <= spread.max, "{r:?}");
        // System calls where perf can count them (and said so in meta).
        let counted = report.meta.syscalls.starts_with("perf");
        assert_eq!(r.syscalls_per_request.is_some_and(|n| n > 0.0), counted, "{r:?}");
        assert!(r.context_switches_per_request.is_some(), "{r:?}");
        assert!(r.pss_kb.unwrap() > 0);
    }
    assert_eq!(report.meta.parameters["throughput"]["runs"], 2);
}

#[test]
fn idle_memory_only_for_accepted_connections() {
    let (out, report) = lab_report(&[
        "--models",
        "pool,epoll",
        "--scenarios",
        "idle",
        "--idle-connections",
        "50",
    ]);
    let row = |m: &str| report.rows.iter().find(|r| r.model == m).unwrap();
    let (pool, epoll) = (row("pool"), row("epoll"));
    // A pool of 3 holds 3 connections; the other 47 wait in the backlog.
    assert_eq!((pool.accepted, pool.backlog), (Some(3), Some(47)), "{pool:?}");
    assert_eq!(pool.figures::<IdleFigures>().pss_per_conn_bytes, None);
    assert_eq!((epoll.accepted, epoll.backlog), (Some(50), Some(0)), "{epoll:?}");
    assert!(
        epoll.figures::<IdleFigures>().pss_per_conn_bytes.is_some(),
        "{epoll:?}"
    );
    assert!(
        stdout(&out).contains("not accepted: 47 waiting in the backlog"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn c10k_steps_and_select_past_fd_setsize() {
    let (_, report) = lab_report(&[
        "--models",
        "thread,select,epoll",
        "--scenarios",
        "c10k",
        "--c10k-levels",
        "0,100,1100",
    ]);
    assert!(
        report.rows.iter().all(|r| r.model != "thread"),
        "c10k is for the event-driven models"
    );
    let at = |m: &str, n: u64| {
        report
            .rows
            .iter()
            .find(|r| r.model == m && r.idle_connections == Some(n))
            .unwrap()
    };
    for n in [0, 100, 1100] {
        let epoll = at("epoll", n);
        assert!(epoll.p50_us.is_some() && epoll.error.is_none(), "{epoll:?}");
        assert_eq!(epoll.accepted, Some(n));
    }
    assert!(at("select", 100).p50_us.is_some());
    let why = at("select", 1100).error.clone().unwrap_or_default();
    assert!(why.contains("FD_SETSIZE"), "{why}");
}

#[test]
fn unp_cpu_per_connection_over_iterative_and_the_accept_spread() {
    let (out, report) = lab_report(&[
        "--models",
        "iterative,prefork,pool,epoll",
        "--scenarios",
        "unp",
        "--unp-clients",
        "3",
        "--unp-rounds",
        "40",
    ]);
    assert!(
        report.rows.iter().all(|r| r.model != "epoll"),
        "unp is for the designs of the book's table"
    );
    let row = |m: &str| report.rows.iter().find(|r| r.model == m).unwrap();
    for (model, unp_row) in [("iterative", 0), ("prefork", 2), ("pool", 7)] {
        let r = row(model);
        assert_eq!(r.error, None, "{r:?}");
        assert_eq!(r.figures::<UnpFigures>().unp_row, Some(unp_row));
        assert_eq!(
            (r.figures::<UnpFigures>().connections, r.errors),
            (Some(120), Some(0)),
            "{r:?}"
        );
        assert!(
            r.figures::<UnpFigures>().cpu_per_conn_us.is_some_and(|c| c > 0.0),
            "{r:?}"
        );
        assert!(
            r.figures::<UnpFigures>().cpu_per_conn_over_iterative_us.is_some(),
            "{r:?}"
        );
        assert!(
            r.figures::<UnpFigures>()
                .connections_per_s
                .is_some_and(|c| c > 0.0),
            "{r:?}"
        );
    }
    assert_eq!(
        row("iterative")
            .figures::<UnpFigures>()
            .cpu_per_conn_over_iterative_us,
        Some(0.0)
    );
    // Each worker's accepts, from the line the server logs at shutdown:
    // three workers, every connection counted once.
    for model in ["prefork", "pool"] {
        let spread = row(model).accepts_per_worker.clone().expect("accepts per worker");
        assert_eq!(spread.len(), 3, "{model}: {spread:?}");
        assert_eq!(spread.iter().sum::<u64>(), 120, "{model}: {spread:?}");
    }
    assert_eq!(row("iterative").accepts_per_worker, None);
    assert_eq!(report.meta.parameters["unp"]["rounds_per_client"], 40);
    let table = stdout(&out);
    assert!(
        table.contains("| 0 | iterative server (the baseline) | iterative | 120 |"),
        "{table}"
    );
    assert!(table.contains("Accepts per worker: prefork "), "{table}");
}

#[test]
fn every_model_names_a_source_file_that_exists() {
    let out = socklab(&["models"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for line in text.lines() {
        let file = line
            .rsplit_once('(')
            .and_then(|(_, f)| f.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no source file in {line:?}"));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        assert!(path.is_file(), "{line}: {} does not exist", path.display());
    }
}

#[test]
fn an_unwritable_report_is_an_error_before_any_model_runs() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("no/such/dir/report.html");
    let err = fails_with(
        1,
        socklab(&["lab", "--scenarios", "delay", "--html", html.to_str().unwrap()]),
    );
    assert!(err.starts_with("error: cannot write the report to"), "{err}");
    // Before any model ran: no measurement was logged.
    assert!(!err.contains("last reply after"), "{err}");
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
    let rows = json::parse(&std::fs::read_to_string(&j).unwrap()).unwrap().rows;
    let uring = rows.iter().find(|r| r.model == "uring").unwrap();
    let why = uring.error.as_deref().unwrap_or_default();
    assert!(why.contains("io_uring is not available"), "{why}");
    let thread = rows.iter().find(|r| r.model == "thread").unwrap();
    assert_eq!(thread.error, None);
    assert!(thread.figures::<DelayFigures>().makespan_s.is_some());

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

#[test]
fn cost_reports_cpu_per_request_at_each_rate_and_ranks_only_who_kept_up() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("cost.md");
    let md_arg = md.to_str().unwrap();
    let (_, report) = lab_report(&[
        "--models",
        "iterative,epoll",
        "--scenarios",
        "cost",
        "--runs",
        "1",
        "--cost-rates",
        "3000,6000",
        "--cost-duration",
        "300ms",
        "--markdown",
        md_arg,
    ]);
    let json = serde_json::to_value(&report).unwrap();
    let rows = json["rows"].as_array().unwrap();
    let epoll: Vec<_> = rows.iter().filter(|r| r["model"] == "epoll").collect();
    assert!(!epoll.is_empty());
    for r in &epoll {
        for key in [
            "offered_rps",
            "kept_up",
            "cpu_source",
            "server_busy",
            "cpu_per_request_us",
            "p99_us",
        ] {
            assert!(!r[key].is_null(), "{key} missing from {r}");
        }
    }
    // One client at a time cannot keep 50 clients served at any rate: it is
    // marked so at the first rate, not measured at the next, and not ranked.
    let iterative: Vec<_> = rows.iter().filter(|r| r["model"] == "iterative").collect();
    assert_eq!(iterative.len(), 1, "{iterative:?}");
    assert_eq!(iterative[0]["kept_up"], false);
    assert!(
        iterative[0]["missed"].as_str().unwrap().starts_with("served "),
        "{}",
        iterative[0]
    );
    let markdown = std::fs::read_to_string(&md).unwrap();
    assert!(
        markdown.contains("iterative kept up with none of the offered rates, so it is not ranked"),
        "{markdown}"
    );
    assert!(!markdown.contains("cheapest first: iterative"), "{markdown}");
}

/// A thread-per-connection echo server in Python, as a student writes one.
const PYTHON_ECHO: &str = "import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.listen(128)
def serve(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
";

#[test]
fn an_outside_server_is_a_row_beside_the_models_marked_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("echo.py");
    std::fs::write(&script, PYTHON_ECHO).unwrap();
    let html = dir.path().join("r.html");
    let server = format!("<py>:echo=python3 {} {{port}}", script.display());
    let broken = "gone=sh -c 'exit 3' {port}";
    let (out, report) = lab_report(&[
        "--models",
        "epoll",
        "--server",
        &server,
        "--server",
        broken,
        "--scenarios",
        "throughput,work",
        "--runs",
        "1",
        "--duration",
        "300ms",
    ]);
    let py = report
        .rows
        .iter()
        .find(|r| r.model == "<py>")
        .expect("a row for the outside server");
    assert!(py.outside && py.error.is_none(), "{py:?}");
    assert_eq!((py.served, py.clients), (Some(50), Some(50)), "{py:?}");
    assert!(py.cpu_per_request_us.is_some_and(|c| c > 0.0), "{py:?}");
    // work needs socklab's own --work: an outside server has no row there.
    assert!(!report
        .rows
        .iter()
        .any(|r| r.model == "<py>" && r.scenario == "work"));
    // A command that exits at once is a failed row saying so; the lab goes on.
    let gone = report
        .rows
        .iter()
        .find(|r| r.model == "gone")
        .expect("a row for the broken server");
    assert!(
        gone.error.as_deref().is_some_and(|e| e.contains("exit")),
        "{gone:?}"
    );
    assert!(stdout(&out).contains("| <py> (outside) |"), "{}", stdout(&out));
    assert_eq!(report.meta.outside.len(), 2, "{:?}", report.meta);
    // The page escapes the name it was given and marks the row.
    let page_args = [
        "lab",
        "--models",
        "epoll",
        "--server",
        &server,
        "--scenarios",
        "throughput",
        "--runs",
        "1",
        "--duration",
        "300ms",
        "--html",
        html.to_str().unwrap(),
    ];
    let out = socklab(&page_args);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("&lt;py&gt; (outside)") && !page.contains("<py>"),
        "names are escaped"
    );
}

#[test]
fn bad_outside_servers_are_usage_errors() {
    for (server, why) in [
        ("epoll=python3 x.py {port}", "is a model's name"),
        ("mine=python3 x.py 8000", "has no {port}"),
        ("mine:nonsense=python3 x.py {port}", "is not a service"),
        ("=python3 x.py {port}", "needs a name"),
    ] {
        let out = socklab(&["lab", "--server", server, "--html", "none"]);
        assert_eq!(out.status.code(), Some(2), "{server}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{server}: {}", stderr(&out));
    }
    let out = socklab(&[
        "lab",
        "--server",
        "a=x {port}",
        "--server",
        "a=y {port}",
        "--html",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("two --server are called 'a'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_run_is_drawn_again_from_its_json_and_a_file_that_is_not_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (json, first, again) = (path("run.json"), path("first.md"), path("again.md"));
    let out = socklab(&[
        "lab",
        "--models",
        "iterative,thread",
        "--scenarios",
        "delay",
        "--delay",
        "100ms",
        "--json",
        &json,
        "--markdown",
        &first,
        "--html",
        "none",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = socklab(&["lab", "--from", &json, "--markdown", &again, "--html", "none"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("## delay"), "{}", stdout(&out));
    let (first, again) = (
        std::fs::read_to_string(&first).unwrap(),
        std::fs::read_to_string(&again).unwrap(),
    );
    assert_eq!(first, again, "the same rows make the same report");
    std::fs::write(path("junk.json"), "not json").unwrap();
    let err = fails_with(
        1,
        socklab(&["lab", "--from", &path("junk.json"), "--html", "none"]),
    );
    assert!(err.contains("is not the JSON of a socklab lab run"), "{err}");
}
