//! The hostile suite: what an attacker throws at a server, against every
//! model, over TCP and a Unix socket. After each attack a well-behaved
//! client is served, and at the end the server's descriptors, threads and
//! memory are back near where they started (DESIGN section 9: nothing a
//! peer sends can grow the server without bound or stop it serving others).
//!
//! The cases are small enough for CI; `scripts/hostile.sh` runs the big
//! versions and prints the figures.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{connect_and_reset, Conn, Server};

/// The server every case meets: line-framed echo, so that a request is a
/// line and a trickle that never ends one is not a request; short timeouts
/// so that the models that serve one connection at a time come back soon.
const ARGS: &[&str] = &[
    "--service",
    "echo",
    "--framing",
    "line",
    "--idle-timeout",
    "1s",
    "--write-timeout",
    "2s",
];

/// The same, holding every reply, for the pipelining flood.
const DELAYED: &[&str] = &["--delay", "1s"];

/// What a peer may cost the server, at most, after the attacks.
const RSS_GROWTH_KB: u64 = 48 * 1024;

/// The server's process and its children (fork, the preforks).
fn tree(pid: i32) -> Vec<i32> {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", pids[i]));
        for task in tasks.into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
        i += 1;
    }
    pids
}

fn status_field(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of the server and its children, in KiB.
fn rss_kb(pid: i32) -> u64 {
    tree(pid).into_iter().map(|p| status_field(p, "VmRSS:")).sum()
}

fn threads(pid: i32) -> u64 {
    status_field(pid, "Threads:")
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A well-behaved client: one line, its echo.
fn served(server: &Server, case: &str) {
    let mut conn = server.connect();
    conn.send(b"still there?\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        "still there?\n",
        "after {case}, a well-behaved client is served"
    );
}

fn silent_connections(server: &Server) {
    let silent: Vec<Conn> = (0..500).map(|_| server.connect()).collect();
    drop(silent);
}

fn resets(server: &Server) {
    for i in 0..5000 {
        if server.addr.starts_with("unix:") {
            let mut conn = server.connect();
            let _ = conn.write(b"half a requ");
        } else {
            connect_and_reset(&server.addr, &[b'x'; 100][..(i % 100)]);
        }
    }
}

/// 10 MiB of pseudo-random bytes (xorshift: no crate for noise), read back
/// as they come, until the server has had enough.
fn junk(server: &Server) {
    let conn = server.connect();
    let mut writer = conn.try_clone();
    let sender = std::thread::spawn(move || {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut chunk = vec![0u8; 64 * 1024];
        for _ in 0..160 {
            for b in chunk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if writer.write_all(&chunk).is_err() {
                return; // The server closed: fine.
            }
        }
        let _ = match &writer {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    });
    let mut conn = conn;
    let mut sink = vec![0u8; 64 * 1024];
    while let Ok(n) = conn.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    drop(conn);
    sender.join().expect("junk sender");
}

fn half_close_mid_request(server: &Server) {
    let mut conn = server.connect();
    conn.send(b"unfinished");
    conn.shutdown_write();
    assert_eq!(
        conn.recv_to_end(),
        "unfinished\n",
        "the last line is answered at EOF"
    );
}

/// Floods requests without reading a byte for `wait`, and returns the
/// server's memory growth meanwhile (KiB).
fn never_reads(server: &Server, wait: Duration) -> u64 {
    let before = rss_kb(server.pid());
    let mut conn = server.connect();
    let line = [b'y'; 1023];
    let mut request = line.to_vec();
    request.push(b'\n');
    let until = Instant::now() + wait;
    let mut peak = before;
    while Instant::now() < until {
        let _ = conn.flood(&request, 1 << 20);
        peak = peak.max(rss_kb(server.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(conn);
    peak.saturating_sub(before)
}

/// One byte every 200 ms, never a whole line: dropped after the idle
/// timeout (1 s), long before the trickle would end (6 s).
fn trickle(server: &Server) {
    let mut conn = server.connect();
    let mut reader = conn.try_clone();
    let closed = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        // EOF or reset: either way, the server let go.
        !matches!(reader.read(&mut buf), Ok(n) if n > 0)
    });
    let mut sent = 0;
    while sent < 30 && !closed.is_finished() {
        if conn.write(b"1").is_err() {
            break; // The server closed; the reader is about to see it.
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed.join().expect("reader"),
        "the server closed without sending anything"
    );
    assert!(
        sent < 30,
        "a trickle that never completes a request is dropped by --idle-timeout"
    );
}

/// Requests pipelined as fast as the server takes them, every reply held
/// by `--delay`, none read: held replies count against the budget.
fn delay_flood(model: &str, server: Server) {
    let growth = never_reads(&server, Duration::from_millis(1500));
    assert!(
        growth < RSS_GROWTH_KB,
        "{model}: a pipelining peer under --delay grew the server by {growth} KiB"
    );
    served(&server, "a --delay pipeline flood");
}

fn attack_every_way(model: &str, server: Server) {
    let pid = server.pid();
    served(&server, "start");
    let (fds_at_start, threads_at_start, rss_at_start) = (fds(pid), threads(pid), rss_kb(pid));

    let timed = |case: &str, attack: &dyn Fn(&Server)| {
        let start = Instant::now();
        attack(&server);
        served(&server, case);
        eprintln!("{model}: {case}: {:?}", start.elapsed());
    };
    timed("500 silent connections", &silent_connections);
    timed("5,000 connect-then-reset", &resets);
    timed("10 MiB of random bytes", &junk);
    timed("a half-close mid-request", &half_close_mid_request);
    timed("a one-byte trickle", &trickle);
    let growth = never_reads(&server, Duration::from_millis(1500));
    assert!(
        growth < RSS_GROWTH_KB,
        "{model}: a peer that never reads grew the server by {growth} KiB"
    );
    served(&server, "a peer that never reads");

    common::eventually(
        Duration::from_secs(20),
        &format!("{model}: descriptors back"),
        || fds(pid) <= fds_at_start + 2,
    );
    common::eventually(Duration::from_secs(20), &format!("{model}: threads back"), || {
        threads(pid) <= threads_at_start + 2
    });
    let rss = rss_kb(pid);
    assert!(
        rss < rss_at_start + RSS_GROWTH_KB,
        "{model}: {rss} KiB after the attacks, {rss_at_start} KiB at start"
    );
    served(&server, "everything");
}

/// A chat room with a member that never reads and one that talks as fast
/// as it can: the server stays small, the deaf member is dropped, and a
/// member that reads gets every line.
fn chat_with_a_deaf_member(model: &str, server: Server) {
    let pid = server.pid();
    let before = rss_kb(pid);
    let mut reader = server.connect();
    let deaf = deaf_member(&server);
    let mut talker = server.connect();
    for conn in [&mut reader, &mut talker] {
        conn.recv_some(); // The welcome.
    }
    // More than the kernel buffers between the server and the deaf member
    // hold (its send buffer grows to tcp_wmem's 4 MiB on loopback).
    let lines = 8000;
    let sender = std::thread::spawn(move || {
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        for _ in 0..lines {
            talker.send(&line);
        }
        talker
    });
    let mut got = 0;
    let mut peak = before;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    while got < lines {
        let n = reader.read(&mut buf).expect("the reader is never dropped");
        assert!(
            n > 0,
            "{model}: the reading member was disconnected after {got} lines"
        );
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            if pending.starts_with(b"<guest") && pending[..end].ends_with(&[b'x'; 16]) {
                got += 1;
            }
            pending.drain(..=end);
        }
        peak = peak.max(rss_kb(pid));
    }
    let _talker = sender.join().expect("talker");
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 32 * 1024,
        "{model}: a deaf chat member grew the server by {growth} KiB"
    );
    // The deaf member was dropped (else the talker would still be held back).
    assert!(
        closed_by_server(deaf),
        "{model}: the member that never reads is dropped"
    );
    served_chat(&server);
}

/// Reads what the server had sent until it closes; `false` if it goes
/// quiet without closing (the read timeout of `Conn`).
fn closed_by_server(mut conn: Conn) -> bool {
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// A member with a small receive window, that never reads.
fn deaf_member(server: &Server) -> Conn {
    let addr: std::net::SocketAddr = server
        .addr
        .trim_start_matches("tcp:")
        .parse()
        .expect("tcp address");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    Conn::Tcp(stream)
}

fn served_chat(server: &Server) {
    let mut conn = server.connect();
    assert!(
        conn.recv_some().starts_with("* welcome"),
        "a new member is welcomed"
    );
}

/// Every attack, then the `--delay` flood, on `model` over `start`'s transport.
fn attack_model(model: &str, start: fn(&[&str]) -> Server) {
    attack_every_way(model, start(&[&["--model", model], ARGS].concat()));
    delay_flood(model, start(&[&["--model", model], ARGS, DELAYED].concat()));
}

/// A model's name from its test's: `r#async` is `async`, `pool_queue` is `pool-queue`.
fn model_name(test: &str) -> String {
    test.trim_start_matches("r#").replace('_', "-")
}

/// One test per model and transport: `tcp::epoll`, `unix::epoll`, ...
macro_rules! every_model {
    ($transport:ident: $($model:ident),*) => {
        mod $transport {
            use super::*;
            $(#[test]
            fn $model() {
                attack_model(&model_name(stringify!($model)), Server::$transport);
            })*
        }
    };
}

every_model!(tcp: iterative, thread, pool, fork, prefork, busy, select, poll, epoll, r#async, uring,
    prefork_flock, prefork_mutex, prefork_pass, pool_queue, reactors, half_async, leader);
every_model!(unix: iterative, thread, pool, fork, prefork, busy, select, poll, epoll, r#async, uring,
    prefork_flock, prefork_mutex, prefork_pass, pool_queue, reactors, half_async, leader);

macro_rules! every_chat_model {
    ($($model:ident),*) => {
        mod chat {
            use super::*;
            $(#[test]
            fn $model() {
                let model = model_name(stringify!($model));
                let server = Server::tcp(&["--model", &model, "--service", "chat"]);
                chat_with_a_deaf_member(&model, server);
            })*
        }
    };
}

every_chat_model!(
    thread, pool, busy, select, poll, epoll, r#async, uring, pool_queue, reactors, half_async, leader
);
