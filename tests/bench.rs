//! `socklab bench` as a user relies on it: exact counts, detected
//! corruption, honest open-loop latency, no hang against a dead server.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{bench, bench_json, fails_with, socklab, stdout, tcp_listener, without_io_uring, Server};

/// Both engines that drive streams, in a closed loop and an open one.
const ENGINES: [&str; 2] = ["tokio", "uring"];

/// `ARGS --engine ENGINE`, ARGS written as on a command line.
fn with_engine<'a>(args: &'a str, engine: &'a str) -> Vec<&'a str> {
    let mut all: Vec<&str> = args.split_whitespace().collect();
    all.extend(["--engine", engine]);
    all
}

/// A report's (replies, errors).
fn replies_and_errors(r: &serde_json::Value) -> (Option<u64>, Option<u64>) {
    (r["replies"].as_u64(), r["errors"].as_u64())
}

#[test]
fn counts_are_exact_and_the_json_has_its_keys() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    for engine in ENGINES {
        let r = bench_json(
            &server.addr,
            &with_engine("--clients 7 --requests 13 --size 100 --expect echo", engine),
        );
        assert_eq!(r["engine"], engine);
        assert_eq!(r["requests"], 91, "{engine}");
        assert_eq!(r["replies"], 91, "{engine}");
        assert_eq!(r["errors"], 0, "{engine}");
        for kind in ["connect", "timeout", "reset", "closed", "mismatch", "other"] {
            assert_eq!(r["errors_by_kind"][kind], 0, "{engine} {kind}");
        }
        let table = r["percentiles_us"].as_array().unwrap();
        assert!(table.iter().any(|p| p["percentile"] == 99.0));
        assert!(r["latency_us"]["p50"].as_u64().unwrap() <= r["latency_us"]["max"].as_u64().unwrap());
        // The load generator's own CPU over what its thread could use: it
        // did work, and no more than its one thread can (with a margin for
        // the process' start-up threads).
        let busy = r["load_busy"]
            .as_f64()
            .unwrap_or_else(|| panic!("{engine}: no load_busy in {r}"));
        assert!(busy > 0.0 && busy < 1.5, "{engine}: load_busy {busy}");
    }
}

#[test]
fn auto_picks_io_uring_for_a_stream_and_tokio_otherwise() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    assert_eq!(bench_json(&server.addr, &["--requests", "3"])["engine"], "uring");
    let r = bench_json(&server.addr, &["--rate", "100", "--duration", "100ms"]);
    assert_eq!(
        (r["engine"].as_str(), r["errors"].as_u64()),
        (Some("uring"), Some(0)),
        "{r}"
    );
    let udp = Server::udp(&["--service", "echo", "--model", "epoll"]);
    assert_eq!(bench_json(&udp.addr, &["--requests", "3"])["engine"], "tokio");
    let err = fails_with(1, socklab(&["bench", &udp.addr, "--engine", "uring"]));
    assert!(
        err.contains("error: the uring engine drives TCP and Unix sockets"),
        "{err}"
    );
    // Where io_uring is refused, auto falls back, and asking for it is a
    // clear error rather than a crash.
    let out = without_io_uring(&["bench", &server.addr, "--requests", "5", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["engine"].as_str(), r["replies"].as_u64()),
        (Some("tokio"), Some(5)),
        "{r}"
    );
    let err = fails_with(1, without_io_uring(&["bench", &server.addr, "--engine", "uring"]));
    assert!(err.contains("error: io_uring is not available here"), "{err}");
}

#[test]
fn a_megabyte_echo_arrives_whole_in_pieces() {
    // Far more than a socket buffer: partial sends and many receives.
    let server = Server::tcp(&["--model", "epoll", "--service", "echo", "--framing", "chunk"]);
    for engine in ENGINES {
        let r = bench_json(
            &server.addr,
            &with_engine("--clients 2 --requests 3 --size 1048576 --expect echo", engine),
        );
        assert_eq!(replies_and_errors(&r), (Some(6), Some(0)), "{engine}: {r}");
    }
}

#[test]
fn a_server_that_closes_mid_reply_is_counted() {
    // Reads a request, sends half of it back, and closes.
    let (listener, addr) = tcp_listener();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 64];
            if let Ok(n) = conn.read(&mut buf) {
                let _ = conn.write_all(&buf[..n / 2]);
            }
        }
    });
    for engine in ENGINES {
        let (code, r, err) = bench(
            &addr,
            &with_engine(
                "--clients 2 --requests 3 --message abcdefgh --expect echo",
                engine,
            ),
        );
        assert_eq!(code, Some(1), "{engine}: nothing succeeded");
        assert_eq!(
            (r["requests"].as_u64(), r["errors_by_kind"]["closed"].as_u64()),
            (Some(6), Some(6)),
            "{engine}: {r}"
        );
        assert!(err.contains("the server closed mid-reply after 4 bytes"), "{err}");
    }
}

#[test]
fn unix_sockets_udp_and_new_connections() {
    let reverse = Server::unix(&["--service", "reverse"]);
    let calc = Server::unix(&["--service", "calc"]);
    for engine in ENGINES {
        let r = bench_json(
            &reverse.addr,
            &with_engine("--clients 3 --requests 5 --expect close", engine),
        );
        // reverse closes after each reply: every request reconnects by itself.
        assert_eq!(replies_and_errors(&r), (Some(15), Some(0)), "{engine}: {r}");
        let r = bench_json(
            &calc.addr,
            &[
                "--clients",
                "3",
                "--requests",
                "5",
                "--new-connection",
                "--message",
                "1+1\n",
                "--engine",
                engine,
            ],
        );
        assert_eq!(replies_and_errors(&r), (Some(15), Some(0)), "{engine}: {r}");
    }
    let udp = Server::udp(&["--service", "echo", "--model", "epoll"]);
    let r = bench_json(
        &udp.addr,
        &[
            "--clients",
            "4",
            "--requests",
            "25",
            "--size",
            "64",
            "--expect",
            "echo",
        ],
    );
    assert_eq!(replies_and_errors(&r), (Some(100), Some(0)), "{r}");
}

#[test]
fn a_corrupted_echo_is_an_error() {
    // A server that echoes, but flips one byte.
    let (listener, addr) = tcp_listener();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    buf[n / 2] ^= 0x20;
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    for engine in ENGINES {
        let (code, r, err) = bench(
            &addr,
            &with_engine("--requests 4 --message abcdef --expect echo", engine),
        );
        assert_eq!(code, Some(1), "{engine}: nothing succeeded");
        assert_eq!(r["errors_by_kind"]["mismatch"], 4, "{engine}: {r}");
        assert!(
            err.contains("the echo differs from the request at byte 3"),
            "{err}"
        );
    }
}

#[test]
fn a_dead_server_gives_errors_and_exit_1_not_a_hang() {
    // Accepts, never answers.
    let (mute, addr) = tcp_listener();
    for engine in ENGINES {
        let start = Instant::now();
        let (code, r, _) = bench(
            &addr,
            &with_engine("--clients 3 --duration 300ms --timeout 300ms", engine),
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{engine}: bench hung");
        assert_eq!(code, Some(1));
        assert_eq!(r["replies"], 0);
        assert_eq!(r["errors_by_kind"]["timeout"], 3, "{engine}: {r}");
        assert_eq!(r["requests"], r["errors"]);
    }
    drop(mute);
    // And a closed port: refused connections, counted, exit 1.
    for engine in ENGINES {
        let (code, r, _) = bench(&addr, &with_engine("--requests 2", engine));
        assert_eq!(code, Some(1));
        assert_eq!(r["errors_by_kind"]["connect"], 2, "{engine}: {r}");
    }
}

#[test]
fn the_open_loop_counts_latency_from_the_intended_start() {
    // 20 requests/s for 1 s against a server that answers 10/s: the queue
    // grows, and so must the latency, request after request; what could
    // not even be sent by the end counts as timed out, not as nothing.
    let server = Server::tcp(&["--model", "iterative", "--service", "greet", "--delay", "100ms"]);
    for engine in ENGINES {
        let r = bench_json(
            &server.addr,
            &with_engine("--clients 1 --rate 20 --duration 1s --timeout 5s", engine),
        );
        assert_eq!(
            r["requests"], 20,
            "{engine}: every scheduled request is counted: {r}"
        );
        assert_eq!(r["errors"], r["errors_by_kind"]["timeout"], "{engine}: {r}");
        let replies = r["replies"].as_u64().unwrap();
        assert!((5..=11).contains(&replies), "{engine}: {r}");
        // The n-th reply was due at n/20 s and came at n/10 s: late by n/20 s.
        let max = r["latency_us"]["max"].as_u64().unwrap();
        assert!(
            max >= 50_000 * (replies - 1),
            "{engine}: max latency {max} µs does not show the queue: {r}"
        );
        // That wait was the server's: the sends waited for their
        // connection, and it is not counted as bench's own lag.
        assert!(r["sends_queued"].as_u64() >= Some(replies - 1), "{engine}: {r}");
    }
}

#[test]
fn many_connections_on_one_thread() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    for engine in ENGINES {
        let r = bench_json(
            &server.addr,
            &with_engine("--clients 2000 --requests 2 --size 32 --threads 1", engine),
        );
        assert_eq!(replies_and_errors(&r), (Some(4000), Some(0)), "{engine}: {r}");
    }
}

#[test]
fn verbose_keeps_the_seeds_lines() {
    let server = Server::tcp(&["--model", "thread", "--service", "hello"]);
    let out = socklab(&["bench", &server.addr, "--clients", "2", "--verbose"]);
    assert!(stdout(&out).contains("client 1: received 'hello! this is the thread socklab server!!' in "));
}

#[test]
fn the_percentile_table_and_the_latency_keys_agree() {
    let server = Server::tcp(&["--service", "echo"]);
    let r = bench_json(&server.addr, &["--clients", "4", "--requests", "250"]);
    let table = r["percentiles_us"].as_array().unwrap();
    let at = |p: f64| {
        table
            .iter()
            .find(|row| row["percentile"] == p)
            .map(|row| row["latency_us"].clone())
            .unwrap_or_else(|| panic!("no {p} in {r}"))
    };
    assert_eq!(r["latency_us"]["p50"], at(50.0));
    assert_eq!(r["latency_us"]["p90"], at(90.0));
    assert_eq!(r["latency_us"]["p99"], at(99.0));
    assert_eq!(r["latency_us"]["p999"], at(99.9));
}

#[test]
fn the_summary_names_the_engine_and_shows_no_figure_it_does_not_have() {
    let server = Server::tcp(&["--service", "echo"]);
    let text = stdout(&socklab(&[
        "bench",
        &server.addr,
        "--requests",
        "3",
        "--engine",
        "tokio",
    ]));
    assert!(text.contains(": 1 client, engine tokio\n"), "{text}");
    let (_, addr) = tcp_listener(); // Accepts nothing: every request times out.
    let out = socklab(&["bench", &addr, "--timeout", "200ms", "--engine", "tokio"]);
    let text = stdout(&out);
    assert!(
        text.contains("latency    p50 -  p90 -  p99 -  p99.9 -  max -  mean -"),
        "{text}"
    );
    assert!(text.contains("throughput -"), "{text}");
}

#[test]
fn warmup_is_left_out_and_csv_gets_a_row_per_run() {
    let server = Server::tcp(&["--service", "echo"]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("runs.csv");
    let csv = csv.to_str().unwrap();
    let r = bench_json(
        &server.addr,
        &[
            "--warmup",
            "200ms",
            "--clients",
            "2",
            "--requests",
            "5",
            "--csv",
            csv,
        ],
    );
    // The warm-up's requests are not counted.
    assert_eq!(
        (r["requests"].as_u64(), r["replies"].as_u64()),
        (Some(10), Some(10)),
        "{r}"
    );
    let out = socklab(&["bench", &server.addr, "--quiet", "--requests", "3", "--csv", csv]);
    assert!(out.status.success());
    let table = std::fs::read_to_string(csv).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("addr,engine,clients,requests,replies,errors,elapsed_s,throughput_rps,p50_us")
    );
    assert!(lines[1].starts_with(&format!("{},", server.addr)), "{table}");
    assert_eq!(lines[2].split(',').nth(4), Some("3"), "{table}");
}

#[test]
fn per_client_counts_and_instants_are_in_the_json() {
    // hello with a delay on a pool of one worker: the second client is
    // served after the first, and the JSON shows who got what, and when.
    let server = Server::tcp(&[
        "--model",
        "pool",
        "--workers",
        "1",
        "--service",
        "hello",
        "--delay",
        "100ms",
    ]);
    for engine in ENGINES {
        let r = bench_json(&server.addr, &with_engine("--clients 2 --requests 1", engine));
        let clients = r["per_client"].as_array().expect("per_client is a list");
        assert_eq!(clients.len(), 2, "{r}");
        let mut ends = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            assert_eq!(c["id"], i, "{engine}: {c}");
            assert_eq!(c["replies"], 1, "{engine}: {c}");
            assert_eq!(c["errors"], 0, "{engine}: {c}");
            let connected = c["connected_s"].as_f64().expect("connected_s");
            let first = c["first_byte_s"].as_f64().expect("first_byte_s");
            let last = c["last_byte_s"].as_f64().expect("last_byte_s");
            assert!(connected <= first && first <= last, "{engine}: {c}");
            ends.push(last);
        }
        ends.sort_by(f64::total_cmp);
        // One worker: the later reply comes after two delays (a lower
        // bound the server enforces, whatever the machine's load).
        assert!(ends[1] >= 0.19, "{engine}: {ends:?}");
    }
}

#[test]
fn driver_and_start_at_are_checked() {
    for bad in ["3/2", "0/2", "1/0", "two", "1/2/3"] {
        let err = fails_with(2, socklab(&["bench", ":1", "--driver", bad]));
        assert!(err.starts_with("error: invalid value"), "{bad}: {err}");
    }
    let err = fails_with(2, socklab(&["bench", ":1", "--driver", "3/2"]));
    assert!(err.contains("K counts from 1 to N"), "{err}");
    let err = fails_with(2, socklab(&["bench", ":1", "--start-at", "soon"]));
    assert!(err.contains("give RFC 3339"), "{err}");
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    for past in ["1000000000", "2001-09-09T01:46:40Z"] {
        let err = fails_with(1, socklab(&["bench", &server.addr, "--start-at", past]));
        assert!(err.starts_with("error: --start-at 2001-09-09T01:46:40"), "{err}");
        assert!(err.contains("s in the past"), "{err}");
    }
}

#[test]
fn start_at_waits_for_the_wall_clock_and_the_json_says_when() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let at = now.as_secs_f64() + 1.0;
    let r = bench_json(
        &server.addr,
        &["--requests", "3", "--start-at", &format!("{at:.3}")],
    );
    let started = chrono::DateTime::parse_from_rfc3339(r["started_at"].as_str().unwrap()).unwrap();
    let ended = chrono::DateTime::parse_from_rfc3339(r["ended_at"].as_str().unwrap()).unwrap();
    let started_s = started.timestamp_micros() as f64 / 1e6;
    assert!(started_s >= at - 0.001, "began at {started_s}, asked {at}");
    assert!(ended >= started);
    assert_eq!(r["target"], server.addr.as_str());
    assert_eq!(r["client_ids"], serde_json::json!({"first": 0, "last": 0}));
    assert_eq!(r["driver"], serde_json::Value::Null);
    assert!(r["histogram"].as_str().unwrap().starts_with("HISTF"), "{r}");
}

#[test]
fn hdr_log_holds_a_histogram_a_second_and_every_latency() {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.hlog");
    let r = bench_json(
        &server.addr,
        &[
            "--rate",
            "100",
            "--duration",
            "1500ms",
            "--hdr-log",
            log.to_str().unwrap(),
        ],
    );
    let text = std::fs::read(&log).unwrap();
    let lines = String::from_utf8_lossy(&text).into_owned();
    assert!(lines.contains("#[Histogram log format version 1.3]\n"), "{lines}");
    assert!(lines.contains(
        "\n\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
    ));
    // Read back with the hdrhistogram crate's own log parser.
    let mut starts = Vec::new();
    let mut count = 0;
    for entry in IntervalLogIterator::new(&text) {
        if let LogEntry::Interval(h) = entry.unwrap() {
            starts.push(h.start_timestamp().as_secs_f64());
            count += socklab::client::hdr::decode(h.encoded_histogram()).unwrap().len();
        }
    }
    assert_eq!(starts, [0.0, 1.0]);
    assert_eq!(Some(count), r["replies"].as_u64());
    assert_eq!(r["requests"], 150);
}

/// The send lag's summary line, and whether the JSON has its keys and
/// they hold together: p50 <= p99 <= max, one lag per request sent at
/// most. (No figure is asserted: a loaded machine makes any.)
fn assert_send_lag(r: &serde_json::Value, what: &str) -> u64 {
    let lag = &r["send_lag_us"];
    let (p50, p99, max) = (lag["p50"].as_u64(), lag["p99"].as_u64(), lag["max"].as_u64());
    let (Some(p50), Some(p99), Some(max)) = (p50, p99, max) else {
        panic!("{what}: no send_lag_us p50/p99/max in {r}");
    };
    assert!(p50 <= p99 && p99 <= max, "{what}: {lag}");
    let h = socklab::client::hdr::decode(r["send_lag_histogram"].as_str().expect("a send lag histogram"))
        .expect("it decodes");
    let requests = r["requests"].as_u64().unwrap();
    assert!(
        !h.is_empty() && h.len() <= requests,
        "{what}: {} lags, {requests} requests",
        h.len()
    );
    assert_eq!(h.max(), max, "{what}");
    assert!(r["sends_queued"].as_u64().is_some(), "{what}: {r}");
    h.len()
}

#[test]
fn the_open_loop_reports_its_send_lag_and_the_closed_loop_none() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    for engine in ENGINES {
        // A count, not a duration: a sender held up past the end of a
        // --duration run on a loaded machine would count a timeout.
        let open = with_engine("--clients 2 --rate 200 --requests 50 --size 64", engine);
        let r = bench_json(&server.addr, &open);
        assert_eq!(r["engine"], engine);
        assert_eq!(replies_and_errors(&r), (Some(100), Some(0)), "{engine}: {r}");
        assert_eq!(assert_send_lag(&r, engine), 100);
        let text = stdout(&socklab(&[&["bench", &server.addr][..], &open].concat()));
        assert!(text.contains("\n  send lag   p50 "), "{engine}: {text}");
        assert!(
            text.contains(" (how late bench's own sends left)\n"),
            "{engine}: {text}"
        );

        let r = bench_json(&server.addr, &with_engine("--clients 2 --requests 10", engine));
        for key in ["send_lag_us", "send_lag_histogram", "sends_queued"] {
            assert_eq!(
                r[key],
                serde_json::Value::Null,
                "{engine}: {key} in a closed loop: {r}"
            );
        }
        let text = stdout(&socklab(&[
            "bench",
            &server.addr,
            "--requests",
            "3",
            "--engine",
            engine,
        ]));
        assert!(!text.contains("send lag"), "{engine}: {text}");
    }
}

#[test]
fn drivers_send_lags_merge_exactly() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, args: &[&str]| {
        let mut all = vec!["bench", &server.addr, "--json", "--quiet"];
        all.extend_from_slice(args);
        let out = socklab(&all);
        assert!(out.status.success(), "{args:?}: {}", common::stderr(&out));
        let path = dir.path().join(name);
        std::fs::write(&path, &out.stdout).unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (path, report)
    };
    let open = ["--clients", "2", "--rate", "400", "--duration", "500ms"];
    let (a, ra) = run("a.json", &[&open[..], &["--driver", "1/2"]].concat());
    let (b, rb) = run(
        "b.json",
        &[&open[..], &["--driver", "2/2", "--engine", "tokio"]].concat(),
    );
    let sent = assert_send_lag(&ra, "driver 1") + assert_send_lag(&rb, "driver 2");
    let out = socklab(&["merge", "--json", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Summed count by count: every send of both, the max the larger max.
    assert_eq!(assert_send_lag(&m, "merge"), sent);
    let max = ra["send_lag_us"]["max"]
        .as_u64()
        .max(rb["send_lag_us"]["max"].as_u64());
    assert_eq!(m["send_lag_us"]["max"].as_u64(), max, "{m}");
    assert_eq!(
        m["sends_queued"].as_u64(),
        Some(ra["sends_queued"].as_u64().unwrap() + rb["sends_queued"].as_u64().unwrap())
    );
    let text = stdout(&socklab(&["merge", a.to_str().unwrap(), b.to_str().unwrap()]));
    assert!(text.contains("\n  send lag   p50 "), "{text}");

    // With a closed-loop run, part of the sends have no lag: none, and a note.
    let (closed, _) = run("closed.json", &["--requests", "5", "--driver", "3/3"]);
    let out = socklab(&["merge", "--json", a.to_str().unwrap(), closed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["send_lag_us"], serde_json::Value::Null, "{m}");
    assert!(
        common::stderr(&out).contains("note: no send lag for the merge"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn the_summary_writes_counts_as_the_lab_does() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let text = stdout(&socklab(&[
        "bench",
        &server.addr,
        "--clients",
        "4",
        "--requests",
        "300",
    ]));
    assert!(
        text.contains("  requests   1,200 (1,200 replies, 0 errors) in "),
        "{text}"
    );
}
