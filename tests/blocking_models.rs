//! The blocking models (iterative, thread, pool, pool-queue): the seeds'
//! delay experiment, and bad peers that must not stop the next client.

mod common;

use std::io::Read;

use common::{connect_and_reset, makespan, sigterm_mid_delay, Conn, Server};

const DELAY: f64 = 0.4;

fn hello<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--model", model, "--service", "hello", "--delay", "400ms"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn iterative_serves_one_at_a_time() {
    let a = hello("iterative", &[]);
    for server in [Server::tcp(&a), Server::unix(&a)] {
        let t = makespan(&server, 5);
        assert!(t >= 5.0 * DELAY, "iterative took {t} s, less than 5 delays");
    }
}

#[test]
fn thread_serves_all_at_once() {
    let a = hello("thread", &[]);
    for server in [Server::tcp(&a), Server::unix(&a)] {
        let t = makespan(&server, 5);
        assert!(t >= DELAY, "{t}");
        // Serial would be 5 delays; concurrent is one. Wide margin for a loaded machine.
        assert!(t < 3.5 * DELAY, "thread took {t} s: not concurrent");
    }
}

#[test]
fn pool_of_three_serves_in_two_rounds() {
    // Workers that accept (UNP row 7), or a main thread that accepts and
    // queues to them (row 8): the same two rounds.
    for model in ["pool", "pool-queue"] {
        let a = hello(model, &["--workers", "3"]);
        for server in [Server::tcp(&a), Server::unix(&a)] {
            let t = makespan(&server, 5);
            assert!(t >= 2.0 * DELAY, "{model} of 3 took {t} s, less than 2 rounds");
            assert!(t < 4.5 * DELAY, "{model} of 3 took {t} s: workers not concurrent");
        }
    }
}

#[test]
fn max_conns_holds_back_the_next_connection() {
    // With one slot, the thread model queues like the iterative one; so
    // does pool-queue, whose queued connections hold a slot too.
    for model in ["thread", "pool-queue"] {
        let a = hello(model, &["--max-conns", "1"]);
        let server = Server::tcp(&a);
        let t = makespan(&server, 5);
        assert!(t >= 5.0 * DELAY, "{model}: --max-conns 1 took {t} s");
    }
}

fn assert_serves(server: &Server) {
    assert_eq!(server.ask(b"still there?"), "still there?");
}

#[test]
fn bad_peers_never_stop_the_next_client() {
    for model in ["iterative", "thread", "pool", "pool-queue"] {
        let server = Server::tcp(&["--model", model, "--service", "echo"]);
        // Closes early, without a word.
        drop(server.connect());
        // Resets mid-request.
        connect_and_reset(&server.addr, b"half a req");
        // 10 MiB of junk, read back, then gone.
        let junk: Vec<u8> = (0..10 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let back = server.connect().round_trip(junk);
        assert_eq!(back.len(), 10 << 20, "{model}");
        assert_serves(&server);
    }
}

#[test]
fn a_silent_peer_does_not_block_a_concurrent_model() {
    for model in ["thread", "pool", "pool-queue"] {
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
    flood.flood(&[b'j'; 1 << 16], 64 << 20).unwrap();
    assert_serves(&server);
}

#[test]
fn sigterm_lets_delayed_replies_finish_and_exits_zero() {
    for model in ["iterative", "thread", "pool", "pool-queue"] {
        sigterm_mid_delay(model, "500ms");
    }
}

#[test]
fn pool_queue_at_sigterm_closes_the_queued_unserved_and_logs_its_spread() {
    // One worker, busy with a delayed reply; one connection queued behind
    // it (accepted, never served), the rest in the backlog.
    let args = [
        "--model",
        "pool-queue",
        "--workers",
        "1",
        "--service",
        "welcome",
        "--delay",
        "300ms",
    ];
    let configure = |c: &mut std::process::Command| {
        c.stderr(std::process::Stdio::piped());
    };
    let mut server = Server::start_with(&args, &["tcp:127.0.0.1:0"], None, configure);
    let log = server.child.stderr.take().unwrap();
    let mut held = server.connect();
    assert_eq!(held.recv_some(), "Welcome!");
    let queued: Vec<Conn> = (0..3).map(|_| server.connect()).collect();
    // The worker, waiting for the held one's request, takes no other; the
    // request starts its 300 ms, and the signal comes within them.
    held.deliver(b"x");
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(held.recv_to_end(), "Received x;", "the one held finishes");
    for mut c in queued {
        let mut got = Vec::new();
        // A reset or an empty close: either way, never served.
        let _ = c.read_to_end(&mut got);
        assert_eq!(String::from_utf8_lossy(&got), "", "a queued client was served");
    }
    let log = std::io::read_to_string(log).unwrap();
    let spread = log.lines().find_map(socklab::model::spread::parse_line);
    assert_eq!(spread, Some(vec![1]), "{log}");
}

#[test]
fn every_service_works_on_pool_queue() {
    let hello = Server::unix(&["--model", "pool-queue", "--service", "hello"]);
    assert_eq!(
        hello.connect().recv_to_end(),
        "hello! this is the pool-queue socklab server!!"
    );
    let reverse = Server::unix(&["--model", "pool-queue", "--service", "reverse"]);
    assert_eq!(reverse.ask(b"queue"), "eueuq");
    let welcome = Server::tcp(&["--model", "pool-queue", "--service", "welcome"]);
    let mut conn = welcome.connect();
    assert_eq!(conn.recv_some(), "Welcome!");
    conn.send(b"x");
    assert_eq!(conn.recv_some(), "Received x;");
    let calc = Server::tcp(&["--model", "pool-queue", "--service", "calc"]);
    assert_eq!(calc.ask(b"(1+2)*3\n"), "9\n");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let db = db.to_str().unwrap();
    let contacts = Server::tcp(&["--model", "pool-queue", "--service", "contacts", "--db", db]);
    let mut a = contacts.connect();
    a.send(b"ADD ann 1\n");
    assert_eq!(a.recv_exact(3), b"OK\n");
    let mut b = contacts.connect();
    b.send(b"FIND ann\n");
    assert_eq!(b.recv_exact(9), b"OK ann 1\n", "another worker sees the change");
}

/// What the SIGTERM tests wait on before signalling (`Conn::deliver`): a
/// request the server's process has not read is seen as unread, over TCP
/// and Unix sockets, and no longer once it has been read.
#[test]
fn a_request_is_seen_unread_until_the_server_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (tcp, addr) = common::tcp_listener();
    let mut pairs: Vec<(Conn, Box<dyn Read>)> = vec![
        (Conn::to(&addr), Box::new(tcp.accept().unwrap().0)),
        (
            Conn::to(&format!("unix:{}", path.display())),
            Box::new(unix.accept().unwrap().0),
        ),
    ];
    for (client, server) in &mut pairs {
        assert!(!client.unread_by_server(), "nothing sent yet");
        client.send(b"hello");
        // In the server's queue once the loopback's softirq has run.
        let limit = std::time::Duration::from_secs(10);
        common::eventually(limit, "sent, never seen unread", || client.unread_by_server());
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        assert!(!client.unread_by_server(), "read");
    }
}
