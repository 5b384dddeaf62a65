//! `socklab merge` as a user of several load hosts relies on it: runs add
//! up exactly (counts summed, percentiles of the summed histogram, max the
//! max), and nothing that is not a whole bench run slips in unnoticed.

mod common;

use std::path::{Path, PathBuf};

use common::{fails_with, socklab, stderr, stdout, Server};
use hdrhistogram::Histogram;
use socklab::client::hdr;

/// Runs `socklab bench ADDR --json --quiet ARGS` and saves its report as `name`.
fn bench_to(dir: &Path, name: &str, addr: &str, args: &[&str]) -> PathBuf {
    let mut all = vec!["bench", addr, "--json", "--quiet"];
    all.extend_from_slice(args);
    let out = socklab(&all);
    assert!(out.status.success(), "bench {args:?}: {}", stderr(&out));
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn merge(args: &[&str]) -> std::process::Output {
    let mut all = vec!["merge"];
    all.extend_from_slice(args);
    socklab(&all)
}

fn merge_json(files: &[&Path]) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    let out = merge(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn histogram(report: &serde_json::Value) -> Histogram<u64> {
    hdr::decode(report["histogram"].as_str().expect("a histogram")).expect("it decodes")
}

/// Two drivers, as two processes at once against one server.
fn two_drivers(dir: &Path, addr: &str, args: &str) -> (PathBuf, PathBuf) {
    std::thread::scope(|s| {
        let runs: Vec<_> = ["1/2", "2/2"]
            .into_iter()
            .map(|driver| {
                s.spawn(move || {
                    let mut all: Vec<&str> = args.split_whitespace().collect();
                    all.extend(["--driver", driver]);
                    let name = format!("driver{}.json", &driver[..1]);
                    bench_to(dir, &name, addr, &all)
                })
            })
            .collect();
        let mut paths = runs.into_iter().map(|r| r.join().unwrap());
        (paths.next().unwrap(), paths.next().unwrap())
    })
}

#[test]
fn two_benches_against_one_server_merge_exactly() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_drivers(
        dir.path(),
        &server.addr,
        "--clients 3 --requests 300 --size 64 --expect echo",
    );
    let (ra, rb) = (json(&a), json(&b));
    let m = merge_json(&[&a, &b]);

    for key in ["requests", "replies", "errors", "clients"] {
        assert_eq!(
            m[key].as_u64(),
            Some(ra[key].as_u64().unwrap() + rb[key].as_u64().unwrap()),
            "{key}"
        );
    }
    assert_eq!(m["replies"], 1800);
    let max = ra["latency_us"]["max"]
        .as_u64()
        .max(rb["latency_us"]["max"].as_u64());
    assert_eq!(m["latency_us"]["max"].as_u64(), max);
    // Load-bound if either driver was: the busier one's figure.
    let busiest = ra["load_busy"]
        .as_f64()
        .unwrap()
        .max(rb["load_busy"].as_f64().unwrap());
    assert_eq!(m["load_busy"].as_f64(), Some(busiest));

    // One histogram fed both runs' samples: the merged percentiles are its.
    let (ha, hb) = (histogram(&ra), histogram(&rb));
    assert_eq!((ha.len(), hb.len()), (900, 900));
    let mut both = ha.clone();
    both.add(&hb).unwrap();
    for (key, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
        assert_eq!(
            m["latency_us"][key].as_u64(),
            Some(hdr::value_at_percentile(&both, p)),
            "{key}"
        );
    }
    for row in m["percentiles_us"].as_array().unwrap() {
        let p = row["percentile"].as_f64().unwrap();
        assert_eq!(
            row["latency_us"].as_u64(),
            Some(hdr::value_at_percentile(&both, p)),
            "p{p}"
        );
    }
    assert_eq!(histogram(&m), both, "the merged run carries the sum, exactly");

    // Each driver numbered its clients after the other's; the merge says
    // which runs it was made of.
    assert_eq!(ra["client_ids"], serde_json::json!({"first": 0, "last": 2}));
    assert_eq!(rb["client_ids"], serde_json::json!({"first": 3, "last": 5}));
    assert_eq!(m["runs"].as_array().unwrap().len(), 2);
    assert_eq!(m["target"], server.addr.as_str());
    let ids: Vec<u64> = m["per_client"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);

    // The human summary and the CSV row are bench's, of the merged run.
    let csv = dir.path().join("runs.csv");
    let out = merge(&[
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("requests   1,800 (1,800 replies, 0 errors)"),
        "{text}"
    );
    assert!(text.contains("merged     2 runs, started within"), "{text}");
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert!(rows.starts_with("addr,engine,clients,requests,"), "{rows}");
    assert!(rows.lines().nth(1).unwrap().contains(",6,1800,1800,0,"), "{rows}");

    // A merged run merges again, with the runs it was made of.
    let merged = dir.path().join("merged.json");
    std::fs::write(&merged, serde_json::to_vec(&m).unwrap()).unwrap();
    let again = merge_json(&[&merged]);
    assert_eq!(again["replies"], 1800);
    assert_eq!(histogram(&again), both);
}

#[test]
fn the_open_loop_rate_is_shared_between_drivers() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let dir = tempfile::tempdir().unwrap();
    // 200/s for 1 s: 100 scheduled requests for each driver, interleaved.
    let (a, b) = two_drivers(dir.path(), &server.addr, "--rate 200 --duration 1s");
    for r in [json(&a), json(&b)] {
        assert_eq!(r["requests"], 100, "{r}");
        assert_eq!(r["rate_rps"], 100.0);
    }
    assert_eq!(json(&a)["driver"], "1/2");
    let m = merge_json(&[&a, &b]);
    assert_eq!(
        (m["requests"].as_u64(), m["rate_rps"].as_f64()),
        (Some(200), Some(200.0))
    );
}

/// A saved report with `edit` applied.
fn edited(dir: &Path, from: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut r = json(from);
    edit(&mut r);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
    path
}

#[test]
fn what_is_not_a_whole_run_is_refused_by_name() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = two_drivers(d, &server.addr, "--clients 2 --requests 20");
    let text = |r: &serde_json::Value| r["histogram"].as_str().unwrap().to_string();

    let cut = edited(d, &a, "cut.json", |r| {
        let h = text(r);
        r["histogram"] = h[..h.len() / 8 * 4].into();
    });
    let odd = edited(d, &a, "odd.json", |r| {
        let h = text(r);
        r["histogram"] = h[..h.len() - 3].into();
    });
    let junk = edited(d, &a, "junk.json", |r| {
        let h = text(r);
        r["histogram"] = format!("{}!{}", &h[..20], &h[21..]).into();
    });
    let other = edited(d, &a, "other.json", |r| {
        // A whole histogram, of another run: it does not hold these replies.
        let mut h = hdr::run_histogram();
        h.record(5).unwrap();
        r["histogram"] = hdr::encode(&h).unwrap().into();
    });
    let lab = d.join("lab.json");
    std::fs::write(&lab, r#"{"meta": {"version": "0.1.0"}, "rows": []}"#).unwrap();
    let prose = d.join("notes.txt");
    std::fs::write(&prose, "p99 was fine\n").unwrap();
    let elsewhere = edited(d, &b, "elsewhere.json", |r| {
        r["target"] = "tcp:192.0.2.1:7000".into();
    });

    let cases: [(&Path, &str); 7] = [
        (
            &cut,
            "cut.json: the latency histogram cannot be read: it is truncated or corrupt",
        ),
        (
            &odd,
            "odd.json: the latency histogram cannot be read: it is truncated (its base64 length",
        ),
        (
            &junk,
            "junk.json: the latency histogram cannot be read: it is not base64 (character 20 is '!')",
        ),
        (
            &other,
            "other.json: the histogram holds 1 latencies but the report counts 40 replies",
        ),
        (
            &lab,
            "lab.json is not a socklab bench --json report: missing field",
        ),
        (&prose, "notes.txt is not JSON"),
        (&elsewhere, "the runs drove different targets"),
    ];
    for (bad, why) in cases {
        // Whichever place the bad run takes, the merge fails and prints nothing.
        for files in [[a.as_path(), bad], [bad, a.as_path()]] {
            let out = merge(&[files[0].to_str().unwrap(), files[1].to_str().unwrap()]);
            assert!(out.stdout.is_empty(), "{}", stdout(&out));
            let err = fails_with(1, out);
            assert!(err.starts_with("error: "), "{err}");
            assert!(err.contains(why), "{why}: {err}");
        }
    }
    let err = fails_with(1, merge(&[a.to_str().unwrap(), "/nonexistent/run.json"]));
    assert!(err.contains("error: cannot read /nonexistent/run.json"), "{err}");

    // The same run twice, or two drivers without --driver: the same client
    // ids. Refused unless the user says so; then counted as asked.
    let err = fails_with(1, merge(&[a.to_str().unwrap(), a.to_str().unwrap()]));
    assert!(err.contains("share client ids"), "{err}");
    let out = merge(&[
        "--json",
        "--allow-overlap",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
    ]);
    let doubled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doubled["replies"], 80);
    let out = merge(&[
        "--json",
        "--allow-mixed",
        a.to_str().unwrap(),
        elsewhere.to_str().unwrap(),
    ]);
    let mixed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(mixed["target"], format!("{} + tcp:192.0.2.1:7000", server.addr));
    assert_eq!(mixed["replies"], 80);
}
