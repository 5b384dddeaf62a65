//! The blocking models (iterative, thread, pool): the seeds' delay
//! experiment, and bad peers that must not stop the next client.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{bench_json, Conn, Server};

/// The seeds' experiment: 5 clients at once against `hello` with a delay;
/// returns the time until the last reply, in seconds.
fn makespan(server: &Server) -> f64 {
    let report = bench_json(&server.addr, &["--clients", "5"]);
    assert_eq!(report["replies"], 5, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    report["elapsed_s"].as_f64().expect("elapsed_s")
}

const DELAY: f64 = 0.4;

fn hello(model: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--model", model, "--service", "hello", "--delay", "400ms"];
    args.extend_from_slice(extra);
    args.into_iter().map(String::from).collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn iterative_serves_one_at_a_time() {
    let a = hello("iterative", &[]);
    for server in [Server::tcp(&args(&a)), Server::unix(&args(&a))] {
        let t = makespan(&server);
        assert!(t >= 5.0 * DELAY, "iterative took {t} s, less than 5 delays");
    }
}

#[test]
fn thread_serves_all_at_once() {
    let a = hello("thread", &[]);
    for server in [Server::tcp(&args(&a)), Server::unix(&args(&a))] {
        let t = makespan(&server);
        assert!(t >= DELAY, "{t}");
        // Serial would be 5 delays; concurrent is one. Wide margin for a loaded machine.
        assert!(t < 3.5 * DELAY, "thread took {t} s: not concurrent");
    }
}

#[test]
fn pool_of_three_serves_in_two_rounds() {
    let a = hello("pool", &["--workers", "3"]);
    for server in [Server::tcp(&args(&a)), Server::unix(&args(&a))] {
        let t = makespan(&server);
        assert!(t >= 2.0 * DELAY, "pool of 3 took {t} s, less than 2 rounds");
        assert!(t < 4.5 * DELAY, "pool of 3 took {t} s: workers not concurrent");
    }
}

#[test]
fn max_conns_holds_back_the_next_connection() {
    // With one slot, the thread model queues like the iterative one.
    let a = hello("thread", &["--max-conns", "1"]);
    let server = Server::tcp(&args(&a));
    let t = makespan(&server);
    assert!(t >= 5.0 * DELAY, "--max-conns 1 took {t} s");
}

/// Connects and resets at once (SO_LINGER 0), mid-request.
fn reset(addr: &str) {
    let stream = std::net::TcpStream::connect(addr.trim_start_matches("tcp:")).unwrap();
    let socket = socket2::Socket::from(stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    let _ = socket.send(b"half a req");
}

fn assert_serves(server: &Server) {
    let mut conn = server.connect();
    conn.send(b"still there?");
    assert_eq!(conn.recv_some(), "still there?");
}

#[test]
fn bad_peers_never_stop_the_next_client() {
    for model in ["iterative", "thread", "pool"] {
        let server = Server::tcp(&["--model", model, "--service", "echo"]);
        // Closes early, without a word.
        drop(server.connect());
        // Resets mid-request.
        reset(&server.addr);
        // 10 MiB of junk, read back, then gone.
        let junk: Vec<u8> = (0..10 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let conn = server.connect();
        let (mut r, mut w) = match conn {
            Conn::Tcp(s) => (s.try_clone().unwrap(), s),
            Conn::Unix(_) => unreachable!(),
        };
        let writer = std::thread::spawn(move || {
            w.write_all(&junk).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back.len(), 10 << 20, "{model}");
        assert_serves(&server);
    }
}

#[test]
fn a_silent_peer_does_not_block_a_concurrent_model() {
    for model in ["thread", "pool"] {
        let server = Server::tcp(&["--model", model, "--service", "echo"]);
        let _silent = server.connect();
        assert_serves(&server);
    }
}

#[test]
fn a_peer_that_never_reads_does_not_block_a_concurrent_model() {
    let server = Server::tcp(&["--model", "thread", "--service", "echo"]);
    let mut flood = server.connect();
    // Fill both socket buffers: the server's echo blocks on us.
    let chunk = vec![b'j'; 1 << 16];
    if let Conn::Tcp(s) = &flood {
        s.set_nonblocking(true).unwrap();
    }
    let mut sent = 0;
    while sent < 64 << 20 {
        match flood.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_serves(&server);
}

#[test]
fn sigterm_lets_delayed_replies_finish_and_exits_zero() {
    for model in ["iterative", "thread", "pool"] {
        let server = Server::tcp(&["--model", model, "--service", "welcome", "--delay", "500ms"]);
        let mut conn = server.connect();
        // `Welcome!` is sent on accept, undelayed: the connection is in.
        assert_eq!(conn.recv_some(), "Welcome!");
        conn.send(b"x");
        let status = server.terminate();
        assert!(status.success(), "{model}: {status}");
        // The reply owed at the signal still comes, then the close.
        assert_eq!(conn.recv_to_end(), "Received x;", "{model}");
    }
}
