//! The process models, fork and the preforks (UNP rows 1 to 5): the delay
//! experiment, no zombies, no leaked descriptors, graceful shutdown, a pool
//! that heals, and an accept lock that a dead worker cannot keep.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use common::{fails_with, makespan, socklab, stdout, Conn, Server};

/// The preforks: N worker processes, differing in who accepts and under
/// which lock (UNP rows 2 to 5).
const PREFORKS: [&str; 4] = ["prefork", "prefork-flock", "prefork-mutex", "prefork-pass"];

/// Every model that serves connections in child processes.
const PROCESS_MODELS: [&str; 5] = [
    "fork",
    "prefork",
    "prefork-flock",
    "prefork-mutex",
    "prefork-pass",
];

/// The pids of `parent`'s children, with their state letter (`Z` = zombie).
fn children(parent: i32) -> Vec<(i32, char)> {
    common::children_of(parent)
}

/// Waits (bounded) until `parent` has exactly `n` children, none a zombie.
/// The reaper runs asynchronously, so a just-closed connection's child may
/// take a moment to go; a zombie that stays is what fails this.
fn settle(parent: i32, n: usize) -> Vec<(i32, char)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = children(parent);
        if now.len() == n && now.iter().all(|(_, s)| *s != 'Z') {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "children did not settle at {n}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

const DELAY: f64 = 0.4;

#[test]
fn delay_experiment_fork_is_one_round_prefork_of_three_is_two() {
    let fork = ["--model", "fork", "--service", "hello", "--delay", "400ms"];
    for server in [Server::tcp(&fork), Server::unix(&fork)] {
        let t = makespan(&server, 5);
        assert!((DELAY..3.5 * DELAY).contains(&t), "fork took {t} s");
    }
    for model in PREFORKS {
        let prefork = [
            "--model",
            model,
            "--workers",
            "3",
            "--service",
            "hello",
            "--delay",
            "400ms",
        ];
        for server in [Server::tcp(&prefork), Server::unix(&prefork)] {
            let t = makespan(&server, 5);
            assert!((2.0 * DELAY..4.5 * DELAY).contains(&t), "{model} of 3 took {t} s");
        }
    }
}

#[test]
fn every_service_works_in_a_child_process() {
    for model in PROCESS_MODELS {
        let server = Server::unix(&["--model", model, "--service", "reverse"]);
        assert_eq!(stdout(&socklab(&["send", &server.addr, "fork"])), "krof\n");
        let server = Server::tcp(&["--model", model, "--service", "welcome"]);
        let mut conn = server.connect();
        assert_eq!(conn.recv_some(), "Welcome!");
        conn.send(b"x");
        assert_eq!(conn.recv_some(), "Received x;");
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let server = Server::tcp(&[
            "--model",
            model,
            "--service",
            "contacts",
            "--db",
            db.to_str().unwrap(),
        ]);
        let mut a = server.connect();
        a.send(b"ADD ann 1\n");
        assert_eq!(a.recv_exact(3), b"OK\n");
        let mut b = server.connect();
        b.send(b"FIND ann\n");
        assert_eq!(
            b.recv_exact(9),
            b"OK ann 1\n",
            "{model}: another process sees the change"
        );
    }
}

#[test]
fn fork_leaves_no_zombies_and_no_descriptors_behind() {
    // fork's parent accepts and forks; prefork-pass's accepts and passes:
    // either way its copy of each connection must close.
    for (model, kids) in [("fork", 0), ("prefork-pass", 3)] {
        let server = Server::tcp(&["--model", model, "--service", "echo"]);
        let pid = server.pid();
        assert_eq!(server.ask(b"1"), "1");
        settle(pid, kids);
        let after_first = fds(pid);
        for i in 0..200 {
            assert_eq!(server.ask(i.to_string().as_bytes()), i.to_string());
        }
        settle(pid, kids);
        assert_eq!(
            fds(pid),
            after_first,
            "{model}: the parent's descriptors grew with the connections served"
        );
    }
}

#[test]
fn sigterm_mid_delay_every_client_gets_its_reply_and_nothing_is_left() {
    for model in PROCESS_MODELS {
        let mut args = common::model_with_workers(model, "5");
        args.extend(["--service", "welcome", "--delay", "500ms"]);
        let server = Server::tcp(&args);
        let pid = server.pid();
        let mut conns: Vec<Conn> = (0..5).map(|_| server.connect()).collect();
        for c in &mut conns {
            // Welcome! is sent on accept: each connection is in a child.
            assert_eq!(c.recv_some(), "Welcome!");
            c.deliver(b"x");
        }
        let status = server.terminate();
        assert!(status.success(), "{model}: {status}");
        for mut c in conns {
            assert_eq!(c.recv_to_end(), "Received x;", "{model}");
        }
        assert_eq!(children(pid), [], "{model}: a child outlived its parent");
    }
}

#[test]
fn a_killed_prefork_worker_is_replaced() {
    for model in PREFORKS {
        let server = Server::tcp(&["--model", model, "--workers", "2", "--service", "greet"]);
        let pid = server.pid();
        let before = settle(pid, 2);
        let victim = before[0].0;
        signal(victim, "KILL");
        // Until it has exited, the victim still counts as one of the two.
        assert!(
            common::wait_gone(victim, Duration::from_secs(10)),
            "{model}: {victim} survived SIGKILL"
        );
        let after = settle(pid, 2);
        assert!(after.iter().all(|(p, _)| *p != victim), "{model}: {after:?}");
        for i in 0..4 {
            assert_eq!(
                server.ask(format!("{i}").as_bytes()),
                format!("Hello, {i}!"),
                "{model}"
            );
        }
    }
}

/// The system call `pid` is blocked in (`/proc/PID/syscall`'s first field),
/// if it is blocked in one.
fn blocked_in(pid: i32) -> Option<i64> {
    let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    call.split_whitespace().next()?.parse().ok()
}

/// Of `parent`'s `n` workers, the one holding the accept lock: the others
/// are blocked in `waiting` (the lock's system call), the holder in poll
/// on the listener. Waits (bounded) for the workers to get there.
fn lock_holder(parent: i32, n: usize, waiting: i64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = settle(parent, n);
        let calls: Vec<(i32, Option<i64>)> = kids.iter().map(|(p, _)| (*p, blocked_in(*p))).collect();
        let holders: Vec<i32> = calls
            .iter()
            .filter(|(_, c)| c.is_some_and(|c| c != waiting))
            .map(|(p, _)| *p)
            .collect();
        let waiters = calls.iter().filter(|(_, c)| *c == Some(waiting)).count();
        if holders.len() == 1 && waiters == n - 1 {
            return holders[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single lock holder among {calls:?} (waiting in {waiting})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_killed_holding_the_accept_lock_wedges_nobody() {
    for (model, waiting) in [
        ("prefork-flock", libc::SYS_fcntl),
        ("prefork-mutex", libc::SYS_futex),
    ] {
        let args = ["--model", model, "--workers", "3", "--service", "welcome"];
        let (mut server, log) = logged_with(&args, "tcp");
        let pid = server.pid();
        let holder = lock_holder(pid, 3, waiting);
        if model == "prefork-flock" {
            // The kernel's own list agrees: the holder's lock is granted,
            // the others' requests wait behind it (`->`).
            let locks = std::fs::read_to_string("/proc/locks").unwrap();
            let granted = format!("WRITE {holder} ");
            assert!(
                locks.lines().any(|l| l.contains(&granted) && !l.contains("->")),
                "{model}: {holder} holds no lock in\n{locks}"
            );
        }
        // Killed while it waits in accept, the lock in hand.
        signal(holder, "KILL");
        assert!(common::wait_gone(holder, Duration::from_secs(10)));
        // Three at once: every worker, the two that were waiting for the
        // lock and the one started in the holder's place, takes one.
        let conns: Vec<Conn> = (0..3)
            .map(|i| {
                let mut c = server.connect();
                assert_eq!(c.recv_some(), "Welcome!", "{model}: client {i} was not taken");
                c
            })
            .collect();
        let served = settle(pid, 3);
        assert!(served.iter().all(|(p, _)| *p != holder), "{model}");
        drop(conns);
        signal(pid, "TERM");
        assert!(server.child.wait().unwrap().success(), "{model}");
        let log = std::io::read_to_string(log).unwrap();
        if model == "prefork-mutex" {
            assert!(log.contains("EOWNERDEAD"), "{model}: no EOWNERDEAD in\n{log}");
        }
        let spread = log.lines().find_map(socklab::model::spread::parse_line);
        assert_eq!(spread.map(|s| s.len()), Some(3), "{model}: {log}");
    }
}

#[test]
fn each_prefork_logs_how_its_workers_shared_the_connections() {
    for model in PREFORKS {
        let args = ["--model", model, "--workers", "3", "--service", "greet"];
        let (mut server, log) = logged_with(&args, "unix");
        for i in 0..10 {
            assert_eq!(server.ask(format!("{i}").as_bytes()), format!("Hello, {i}!"));
        }
        signal(server.pid(), "TERM");
        assert!(server.child.wait().unwrap().success(), "{model}");
        let log = std::io::read_to_string(log).unwrap();
        let spread = log
            .lines()
            .find_map(socklab::model::spread::parse_line)
            .unwrap_or_else(|| panic!("{model}: no spread in\n{log}"));
        assert_eq!(spread.len(), 3, "{model}: {spread:?}");
        assert_eq!(spread.iter().sum::<u64>(), 10, "{model}: {spread:?}");
    }
}

#[test]
fn a_silent_client_costs_one_child_and_blocks_nobody() {
    let server = Server::tcp(&["--model", "fork", "--service", "echo"]);
    let _silent = server.connect();
    assert_eq!(server.ask(b"hi"), "hi");
}

#[test]
fn a_room_cannot_be_shared_between_processes() {
    for model in PROCESS_MODELS {
        let err = fails_with(
            1,
            socklab(&[
                "serve",
                "--model",
                model,
                "--service",
                "chat",
                "--listen",
                "tcp:127.0.0.1:0",
            ]),
        );
        assert!(err.contains("cannot share between its processes"), "{err}");
    }
}

/// Whether a fresh listener can take `port` (std sets SO_REUSEADDR, as a
/// restarted server does).
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Starts `model` serving echo with three connections open, each held by a
/// child process; returns the server and the connections.
fn serving_three(model: &str, listen: &str) -> (Server, Vec<Conn>) {
    let mut args = common::model_with_workers(model, "3");
    args.extend(["--service", "echo"]);
    let server = if listen == "unix" {
        Server::unix(&args)
    } else {
        Server::tcp(&args)
    };
    let conns: Vec<Conn> = (0..3)
        .map(|i| {
            let mut c = server.connect();
            c.send(format!("{i}").as_bytes());
            assert_eq!(c.recv_some(), format!("{i}"), "{model}");
            c
        })
        .collect();
    (server, conns)
}

/// Waits for each of `pids` to exit; fails naming the first that does not.
fn all_gone(pids: &[(i32, char)], what: &str) {
    for (pid, _) in pids {
        assert!(
            common::wait_gone(*pid, Duration::from_secs(10)),
            "{what}: child {pid} outlived its parent"
        );
    }
}

#[test]
fn kill_9_takes_every_child_down_and_frees_the_port() {
    for model in PROCESS_MODELS {
        let (mut server, conns) = serving_three(model, "tcp");
        let pid = server.pid();
        let port = server.port();
        let kids = settle(pid, 3);
        // The server alone, not its group: the children must follow by themselves.
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        all_gone(&kids, model);
        assert!(port_is_free(port), "{model}: port {port} still taken");
        drop(conns);
    }
}

/// `socklab serve` whose stderr the test reads, to know when the first
/// signal has been taken.
fn logged(model: &str, listen: &str) -> (Server, BufReader<std::process::ChildStderr>) {
    // Replies held long past the signals: the first signal must wait for them.
    let mut args = common::model_with_workers(model, "3");
    args.extend(["--service", "welcome", "--delay", "60s", "--grace", "60s"]);
    logged_with(&args, listen)
}

/// `socklab serve ARGS` on `listen` (`tcp` or `unix`), its stderr piped.
fn logged_with(args: &[&str], listen: &str) -> (Server, BufReader<std::process::ChildStderr>) {
    let configure = |c: &mut std::process::Command| {
        c.stderr(std::process::Stdio::piped());
    };
    let mut server = if listen == "unix" {
        let dir = tempfile::tempdir().unwrap();
        let path = format!("unix:{}", dir.path().join("s.sock").display());
        Server::start_with(args, &[&path], Some(dir), configure)
    } else {
        Server::start_with(args, &["tcp:127.0.0.1:0"], None, configure)
    };
    let log = BufReader::new(server.child.stderr.take().unwrap());
    (server, log)
}

fn signal(pid: i32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_second_signal_exits_at_once_and_leaves_nothing_behind() {
    for (model, sig, listen) in [
        ("fork", "TERM", "tcp"),
        ("prefork", "TERM", "unix"),
        ("fork", "INT", "unix"),
        ("prefork", "INT", "tcp"),
        ("prefork-flock", "TERM", "tcp"),
        ("prefork-mutex", "INT", "unix"),
        ("prefork-pass", "TERM", "unix"),
        ("prefork-pass", "INT", "tcp"),
        // The same handler in a process without children: one thread
        // (select), several loops (epoll), a ring (uring).
        ("select", "INT", "unix"),
        ("epoll", "TERM", "unix"),
        ("uring", "TERM", "tcp"),
    ] {
        let what = format!("{model}, SIG{sig} twice, {listen}");
        let (mut server, mut log) = logged(model, listen);
        let pid = server.pid();
        // Each connection is owed a reply: the first signal waits for them.
        let conns: Vec<Conn> = (0..3)
            .map(|_| {
                let mut c = server.connect();
                assert_eq!(c.recv_some(), "Welcome!", "{what}");
                c.deliver(b"x");
                c
            })
            .collect();
        let in_processes = model.starts_with("fork") || model.starts_with("prefork");
        let kids = settle(pid, if in_processes { 3 } else { 0 });
        signal(pid, sig);
        let mut line = String::new();
        while !line.contains("shutting down") {
            line.clear();
            assert!(
                log.read_line(&mut line).unwrap() > 0,
                "{what}: no shutdown logged"
            );
        }
        signal(pid, sig);
        let status = server.child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{what}");
        all_gone(&kids, &what);
        match server.addr.strip_prefix("unix:") {
            Some(path) => assert!(!std::path::Path::new(path).exists(), "{what}: {path} left behind"),
            // After `_exit`, a ring's requests (uring's armed accept among
            // them) are torn down by a kernel worker, which then lets the
            // listener go: a fraction of a millisecond later, and nothing to
            // wait on but the port itself.
            None => common::eventually(
                Duration::from_secs(1),
                &format!("{what}: port still taken"),
                || port_is_free(server.port()),
            ),
        }
        drop(conns);
    }
}

#[test]
fn after_sigterm_no_queued_client_is_taken() {
    // fork at --max-conns 1 and the preforks of one worker: one client is
    // served, the others wait in the backlog when SIGTERM comes.
    for args in [
        ["--model", "fork", "--max-conns", "1"],
        ["--model", "prefork", "--workers", "1"],
        ["--model", "prefork-flock", "--workers", "1"],
        ["--model", "prefork-mutex", "--workers", "1"],
        ["--model", "prefork-pass", "--workers", "1"],
        ["--model", "prefork-pass", "--max-conns", "1"],
    ] {
        let mut all = vec!["--service", "welcome", "--delay", "300ms"];
        all.extend_from_slice(&args);
        let server = Server::tcp(&all);
        let mut held = server.connect();
        assert_eq!(held.recv_some(), "Welcome!");
        let queued: Vec<Conn> = (0..3).map(|_| server.connect()).collect();
        // The worker, waiting for the held one's request, takes no other;
        // the request starts its 300 ms, and the signal comes within them.
        held.deliver(b"x");
        let status = server.terminate();
        assert!(status.success(), "{args:?}: {status}");
        assert_eq!(
            held.recv_to_end(),
            "Received x;",
            "{args:?}: the one held finishes"
        );
        for mut c in queued {
            let mut got = Vec::new();
            // A reset or an empty close: either way, never served.
            let _ = c.read_to_end(&mut got);
            assert_eq!(
                String::from_utf8_lossy(&got),
                "",
                "{args:?}: a queued client was served"
            );
        }
    }
}
