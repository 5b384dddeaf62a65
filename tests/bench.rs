//! `socklab bench` as a user relies on it: exact counts, detected
//! corruption, honest open-loop latency, no hang against a dead server.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{bench_json, socklab, stderr, stdout, Server};

#[test]
fn counts_are_exact_and_the_json_has_its_keys() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let r = bench_json(
        &server.addr,
        &[
            "--clients",
            "7",
            "--requests",
            "13",
            "--size",
            "100",
            "--expect",
            "echo",
        ],
    );
    assert_eq!(r["requests"], 91);
    assert_eq!(r["replies"], 91);
    assert_eq!(r["errors"], 0);
    for kind in ["connect", "timeout", "reset", "closed", "mismatch", "other"] {
        assert_eq!(r["errors_by_kind"][kind], 0, "{kind}");
    }
    let table = r["percentiles_us"].as_array().unwrap();
    assert!(table.iter().any(|p| p["percentile"] == 99.0));
    assert!(r["latency_us"]["p50"].as_u64().unwrap() <= r["latency_us"]["max"].as_u64().unwrap());
}

#[test]
fn unix_sockets_udp_and_new_connections() {
    let server = Server::unix(&["--service", "reverse"]);
    let r = bench_json(
        &server.addr,
        &["--clients", "3", "--requests", "5", "--expect", "close"],
    );
    // reverse closes after each reply: every request reconnects by itself.
    assert_eq!(
        (r["replies"].as_u64(), r["errors"].as_u64()),
        (Some(15), Some(0)),
        "{r}"
    );
    let server = Server::unix(&["--service", "calc"]);
    let r = bench_json(
        &server.addr,
        &[
            "--clients",
            "3",
            "--requests",
            "5",
            "--new-connection",
            "--message",
            "1+1\n",
        ],
    );
    assert_eq!(
        (r["replies"].as_u64(), r["errors"].as_u64()),
        (Some(15), Some(0)),
        "{r}"
    );
    let udp = Server::start(
        &["--service", "echo", "--model", "epoll"],
        &["udp:127.0.0.1:0"],
        None,
    );
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
    assert_eq!(
        (r["replies"].as_u64(), r["errors"].as_u64()),
        (Some(100), Some(0)),
        "{r}"
    );
}

#[test]
fn a_corrupted_echo_is_an_error() {
    // A server that echoes, but flips one byte.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp:{}", listener.local_addr().unwrap());
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
    let out = socklab(&[
        "bench",
        &addr,
        "--requests",
        "4",
        "--message",
        "abcdef",
        "--expect",
        "echo",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "nothing succeeded");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["errors_by_kind"]["mismatch"], 4, "{r}");
    assert!(
        stderr(&out).contains("the echo differs from the request at byte 3"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_dead_server_gives_errors_and_exit_1_not_a_hang() {
    // Accepts, never answers.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp:{}", mute.local_addr().unwrap());
    let start = Instant::now();
    let out = socklab(&[
        "bench",
        &addr,
        "--clients",
        "3",
        "--duration",
        "300ms",
        "--timeout",
        "300ms",
        "--json",
    ]);
    assert!(start.elapsed() < Duration::from_secs(5), "bench hung");
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["replies"], 0);
    assert_eq!(r["errors_by_kind"]["timeout"], 3);
    assert_eq!(r["requests"], r["errors"]);
    drop(mute);
    // And a closed port: refused connections, counted, exit 1.
    let out = socklab(&["bench", &addr, "--requests", "2", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["errors_by_kind"]["connect"], 2, "{r}");
}

#[test]
fn the_open_loop_counts_latency_from_the_intended_start() {
    // 20 requests/s for 1 s against a server that answers 10/s: the queue
    // grows, and so must the latency, request after request; what could
    // not even be sent by the end counts as timed out, not as nothing.
    let server = Server::tcp(&["--model", "iterative", "--service", "greet", "--delay", "100ms"]);
    let r = bench_json(
        &server.addr,
        &[
            "--clients",
            "1",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--timeout",
            "5s",
        ],
    );
    assert_eq!(r["requests"], 20, "every scheduled request is counted: {r}");
    assert_eq!(r["errors"], r["errors_by_kind"]["timeout"], "{r}");
    let replies = r["replies"].as_u64().unwrap();
    assert!((5..=11).contains(&replies), "{r}");
    // The n-th reply was due at n/20 s and came at n/10 s: late by n/20 s.
    let max = r["latency_us"]["max"].as_u64().unwrap();
    assert!(
        max >= 50_000 * (replies - 1),
        "max latency {max} µs does not show the queue: {r}"
    );
}

#[test]
fn many_connections_on_one_thread() {
    let server = Server::tcp(&["--model", "epoll", "--service", "echo"]);
    let r = bench_json(
        &server.addr,
        &[
            "--clients",
            "2000",
            "--requests",
            "2",
            "--size",
            "32",
            "--threads",
            "1",
        ],
    );
    assert_eq!(
        (r["replies"].as_u64(), r["errors"].as_u64()),
        (Some(4000), Some(0)),
        "{r}"
    );
}

#[test]
fn verbose_keeps_the_seeds_lines() {
    let server = Server::tcp(&["--model", "thread", "--service", "hello"]);
    let out = socklab(&["bench", &server.addr, "--clients", "2", "--verbose"]);
    assert!(stdout(&out).contains("client 1: received 'hello! this is the thread socklab server!!' in "));
}
