//! The event-driven models: readiness (busy, select, poll, epoll, on one
//! shared event loop, and the designs built on it: reactors, half-async,
//! leader) and completion (async on tokio, uring on io_uring):
//! concurrency without a thread per connection, timers instead of sleeps,
//! and bad peers that cost nobody else anything.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{connect_and_reset, makespan, sigterm_mid_delay, Server};

const MODELS: [&str; 9] = [
    "busy",
    "select",
    "poll",
    "epoll",
    "async",
    "uring",
    "reactors",
    "half-async",
    "leader",
];
const DELAY: f64 = 0.4;

#[test]
fn delay_experiment_one_round_for_every_model() {
    for model in MODELS {
        let args = ["--model", model, "--service", "hello", "--delay", "400ms"];
        for server in [Server::tcp(&args), Server::unix(&args)] {
            let t = makespan(&server, 5);
            assert!(
                (DELAY..3.5 * DELAY).contains(&t),
                "{model} took {t} s for one round"
            );
        }
    }
}

#[test]
fn services_over_tcp_and_unix() {
    for model in MODELS {
        for server in [
            Server::tcp(&["--model", model, "--service", "welcome"]),
            Server::unix(&["--model", model, "--service", "welcome"]),
        ] {
            let mut conn = server.connect();
            assert_eq!(conn.recv_some(), "Welcome!");
            conn.send(b"x");
            assert_eq!(conn.recv_some(), "Received x;", "{model}");
            conn.send(b"exit");
            assert_eq!(conn.recv_to_end(), "");
        }
        let server = Server::tcp(&["--model", model, "--service", "calc"]);
        let mut conn = server.connect();
        conn.send(b"2 ^ 10\n1 / 0\n");
        assert_eq!(conn.recv_exact(26), b"1024\nERR division by zero\n", "{model}");
    }
}

#[test]
fn a_mebibyte_on_each_of_sixteen_connections_echoes_intact_through_partial_writes() {
    for model in MODELS {
        let server = Server::unix(&["--model", model, "--service", "echo"]);
        common::echo_a_mebibyte_on_each(&server, 16, model);
    }
}

#[test]
fn a_thousand_concurrent_connections_on_each() {
    for model in MODELS {
        let server = Server::tcp(&["--model", model, "--service", "echo"]);
        common::hold_and_echo(&server.addr, 1000);
    }
}

#[test]
fn ten_thousand_concurrent_connections_on_epoll_async_and_uring() {
    for model in ["epoll", "async", "uring"] {
        let server = Server::tcp(&["--model", model, "--service", "echo"]);
        common::hold_and_echo(&server.addr, 10_000);
    }
}

#[test]
fn max_conns_holds_back_the_next_connection_on_async_and_uring() {
    for model in ["async", "uring", "reactors", "half-async", "leader"] {
        let args = [
            "--model",
            model,
            "--service",
            "hello",
            "--delay",
            "400ms",
            "--max-conns",
            "1",
        ];
        let t = makespan(&Server::tcp(&args), 3);
        // One slot: three delays one after the other, not one round.
        assert!(t >= 3.0 * DELAY, "{model} with --max-conns 1 took {t} s");
    }
}

#[test]
fn sigterm_lets_delayed_replies_finish() {
    for model in MODELS {
        sigterm_mid_delay(model, "300ms");
    }
}

#[test]
fn select_past_fd_setsize_stops_accepting_instead_of_corrupting_memory() {
    let server = Server::tcp(&["--model", "select", "--service", "echo"]);
    let hp = server.addr.trim_start_matches("tcp:").to_string();
    // More connections than an fd_set can name; those the server had to
    // drop are closed by it, the others are served.
    let mut conns: Vec<TcpStream> = (0..1100).map(|_| TcpStream::connect(&hp).unwrap()).collect();
    let mut served = 0;
    for c in conns.iter_mut().take(900) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        if c.read_exact(&mut back).is_ok() && &back == b"ping" {
            served += 1;
        }
    }
    assert!(served >= 900, "only {served} of the first 900 were served");
    drop(conns);
    // Still alive, and accepting again once connections closed.
    assert_eq!(server.ask(b"after"), "after");
}

#[test]
fn a_peer_that_never_reads_is_not_read_from_and_slows_nobody() {
    for model in MODELS {
        let server = Server::tcp(&["--model", model, "--service", "echo"]);
        // Until both buffers and the session's high-water mark are full.
        let mut flood = server.connect();
        let sent = flood
            .flood(&[b'f'; 1 << 16], 256 << 20)
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        assert!(
            sent < 64 << 20,
            "{model}: the server kept reading {sent} bytes it could not answer"
        );
        assert_eq!(server.ask(b"hello"), "hello", "{model}");
    }
}

#[test]
fn input_and_a_close_left_waiting_in_the_socket_are_all_answered() {
    // A peer sends until the server stops reading (its replies pile up
    // unread), closes its side, and only then reads: the rest of its input
    // and its close wait in the server's socket, and nothing new will
    // happen on it. Every byte must come back, then the server's close: an
    // edge-triggered loop that forgot what it had not read would hang here.
    for model in MODELS {
        let server = Server::tcp(&["--model", model, "--service", "echo"]);
        let mut conn = server.connect();
        // 1000-byte writes: the last read of the rest is a short one.
        let sent = conn
            .flood(&[b'e'; 1000], 64 << 20)
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        conn.shutdown_write();
        conn.set_blocking();
        let back = conn.recv_to_end();
        assert_eq!(back.len(), sent, "{model}: bytes back against bytes sent");
        assert!(back.bytes().all(|b| b == b'e'), "{model}: the echo differs");
    }
}

#[test]
fn an_endless_line_gets_err_and_close() {
    for model in MODELS {
        let server = Server::tcp(&["--model", model, "--service", "calc", "--max-line", "1024"]);
        let mut conn = server.connect();
        let mut writer = conn.try_clone();
        let t = std::thread::spawn(move || {
            let junk = vec![b'7'; 1 << 16];
            // Up to 100 MB without a newline; the server cuts us off long before.
            for _ in 0..1600 {
                if writer.write_all(&junk).is_err() {
                    return;
                }
            }
        });
        assert_eq!(conn.recv_exact(18), b"ERR line too long\n", "{model}");
        t.join().unwrap();
        assert_eq!(server.ask(b"1+1\n"), "2\n", "{model}");
    }
}

#[test]
fn resets_and_junk_never_stop_the_loop() {
    for model in MODELS {
        let server = Server::tcp(&["--model", model, "--service", "reverse"]);
        for _ in 0..20 {
            connect_and_reset(&server.addr, b"\xff\xfe\x00junk");
        }
        let mut conn = server.connect();
        conn.send(b"abc");
        assert_eq!(conn.recv_to_end(), "cba", "{model}");
    }
}

#[test]
fn epoll_and_uring_workers_share_the_port() {
    for model in ["epoll", "uring"] {
        let server = Server::tcp(&["--model", model, "--workers", "3", "--service", "greet"]);
        for i in 0..30 {
            assert_eq!(
                server.ask(format!("{i}").as_bytes()),
                format!("Hello, {i}!"),
                "{model}"
            );
        }
    }
}

#[test]
fn without_io_uring_the_uring_model_says_so() {
    let out = common::without_io_uring(&["serve", "--model", "uring", "--listen", "tcp:127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(err.starts_with("error: io_uring is not available: "), "{err}");
    // The other models do not need it.
    let out = common::without_io_uring(&["send", "tcp:127.0.0.1:1", "x"]);
    assert!(
        common::stderr(&out).contains("refused"),
        "{}",
        common::stderr(&out)
    );
}

/// What `ps -L` shows: a model that runs one loop is a process of one
/// thread (signals are handled without a thread of their own), as its C
/// counterpart is; `--workers 2` is a thread per loop.
#[test]
fn a_single_loop_model_is_a_process_of_one_thread() {
    let threads = |pid: i32| std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    for (model, workers, expected) in [
        ("busy", "1", 1),
        ("select", "1", 1),
        ("poll", "1", 1),
        ("epoll", "1", 1),
        ("async", "1", 1),
        ("uring", "1", 1),
        ("epoll", "2", 2),
        ("leader", "2", 2),
        ("async", "2", 3), // The accept loop, and the runtime's two workers.
    ] {
        let server = Server::tcp(&["--model", model, "--workers", workers]);
        // Serving already: a reply has come back.
        assert_eq!(server.ask(b"ping\n"), "ping\n", "{model}");
        assert_eq!(threads(server.pid()), expected, "{model} --workers {workers}");
        assert!(server.terminate().success(), "{model}");
    }
}
