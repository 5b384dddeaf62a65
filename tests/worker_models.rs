//! The designs real servers use, built on the shared event loop: master/worker
//! reactors (`reactors`), a reactor with a worker pool (`half-async`) and
//! leader/followers (`leader`); and `--work`, the per-request CPU cost that
//! is the case they exist for. (The shared walks in event_driven_models.rs,
//! hostile.rs and chat.rs cover them too.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{digit_shape, Server};

const MODELS: [&str; 3] = ["reactors", "half-async", "leader"];

#[test]
fn every_service_on_every_new_model_over_tcp_and_unix() {
    for model in MODELS {
        for start in [Server::tcp, Server::unix] {
            let on = |service: &str| start(&["--model", model, "--service", service]);
            assert_eq!(on("echo").ask(b"ping"), "ping", "{model}");
            let time = on("time");
            let mut conn = time.connect();
            conn.send(b"now?");
            assert_eq!(digit_shape(&conn.recv_to_end()), "dddd-dd-dd dd:dd:dd.dddddd");
            let reverse = on("reverse");
            let mut conn = reverse.connect();
            conn.send(b"abc");
            assert_eq!(conn.recv_to_end(), "cba", "{model}");
            assert_eq!(
                on("hello").connect().recv_to_end(),
                format!("hello! this is the {model} socklab server!!")
            );
            assert_eq!(on("greet").ask(b"you"), "Hello, you!", "{model}");
            let calc = on("calc");
            let mut conn = calc.connect();
            conn.send(b"1 + 2 * 3\n");
            assert_eq!(conn.recv_exact(2), b"7\n", "{model}");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("book.db");
        let db = db.to_str().expect("utf-8 path");
        let server = Server::tcp(&["--model", model, "--service", "contacts", "--db", db]);
        let mut conn = server.connect();
        conn.send(b"ADD ann 555\nFIND ann\n");
        assert_eq!(conn.recv_exact(14), b"OK\nOK ann 555\n", "{model}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    // Under half-async and leader each request may be run on another
    // thread; one connection's replies must still come back in order.
    for model in MODELS {
        let server = Server::tcp(&["--model", model, "--service", "calc", "--workers", "4"]);
        let mut conn = server.connect();
        let requests: String = (0..500).map(|i| format!("{i} + 0\n")).collect();
        let expected: String = (0..500).map(|i| format!("{i}\n")).collect();
        conn.send(requests.as_bytes());
        let got = conn.recv_exact(expected.len());
        assert!(got == expected.as_bytes(), "{model}: replies out of order");
    }
}

/// CPU time (user + system, every thread) the process `pid` has used.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses: utime is
    // the 14th field of the line, stime the 15th.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("a number"))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks)
}

#[test]
fn work_spends_cpu_on_every_request_whatever_the_model() {
    const REQUESTS: u32 = 10;
    let work = Duration::from_millis(30);
    for model in [
        "iterative",
        "pool",
        "epoll",
        "async",
        "uring",
        "reactors",
        "half-async",
        "leader",
    ] {
        let server = Server::tcp(&["--model", model, "--service", "greet", "--work", "30ms"]);
        let before = cpu_time(server.pid());
        for i in 0..REQUESTS {
            assert_eq!(
                server.ask(format!("{i}").as_bytes()),
                format!("Hello, {i}!"),
                "{model}"
            );
        }
        // A busy computation, not a sleep: the time is CPU time.
        let spent = cpu_time(server.pid()) - before;
        assert!(
            spent >= work * REQUESTS * 8 / 10,
            "{model}: {REQUESTS} requests of --work 30ms cost {spent:?} of CPU"
        );
    }
}

/// Starts `model` with stderr captured, opens `connections`, stops it, and
/// returns the `accepts per worker:` counts it logged.
fn spread(model: &str, workers: &str, connections: usize) -> Vec<u64> {
    let mut server = Server::start_with(
        &["--model", model, "--workers", workers, "--service", "echo"],
        &["tcp:127.0.0.1:0"],
        None,
        |cmd| {
            cmd.stderr(Stdio::piped());
        },
    );
    for i in 0..connections {
        assert_eq!(server.ask(format!("{i}").as_bytes()), format!("{i}"));
    }
    let stderr = server.child.stderr.take().expect("stderr");
    assert!(server.terminate().success());
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("accepts per worker:"))
        .unwrap_or_else(|| panic!("{model} logged no spread"));
    let counts = line.split("accepts per worker:").nth(1).unwrap_or_default();
    counts
        .split_whitespace()
        .map(|c| c.parse().expect("a count"))
        .collect()
}

#[test]
fn reactors_deal_connections_round_robin_and_epoll_counts_its_spread() {
    assert_eq!(spread("reactors", "3", 9), vec![3, 3, 3]);
    let by_kernel = spread("epoll", "2", 10);
    assert_eq!(by_kernel.len(), 2);
    assert_eq!(by_kernel.iter().sum::<u64>(), 10, "{by_kernel:?}");
}
