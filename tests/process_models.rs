//! The process models, fork and prefork: the delay experiment, no zombies,
//! no leaked descriptors, graceful shutdown, and a pool that heals.

mod common;

use std::time::{Duration, Instant};

use common::{fails_with, makespan, socklab, stdout, Conn, Server};

/// The pids of `parent`'s children, with their state letter (`Z` = zombie).
fn children(parent: i32) -> Vec<(i32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            found.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    found
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
    let prefork = [
        "--model",
        "prefork",
        "--workers",
        "3",
        "--service",
        "hello",
        "--delay",
        "400ms",
    ];
    for server in [Server::tcp(&prefork), Server::unix(&prefork)] {
        let t = makespan(&server, 5);
        assert!((2.0 * DELAY..4.5 * DELAY).contains(&t), "prefork of 3 took {t} s");
    }
}

#[test]
fn every_service_works_in_a_child_process() {
    for model in ["fork", "prefork"] {
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
    let server = Server::tcp(&["--model", "fork", "--service", "echo"]);
    let pid = server.pid();
    assert_eq!(server.ask(b"1"), "1");
    settle(pid, 0);
    let after_first = fds(pid);
    for i in 0..200 {
        assert_eq!(server.ask(i.to_string().as_bytes()), i.to_string());
    }
    settle(pid, 0);
    assert_eq!(
        fds(pid),
        after_first,
        "the parent's descriptors grew with the connections served"
    );
}

#[test]
fn sigterm_mid_delay_every_client_gets_its_reply_and_nothing_is_left() {
    for model in ["fork", "prefork"] {
        let server = Server::tcp(&[
            "--model",
            model,
            "--workers",
            "5",
            "--service",
            "welcome",
            "--delay",
            "500ms",
        ]);
        let pid = server.pid();
        let mut conns: Vec<Conn> = (0..5).map(|_| server.connect()).collect();
        for c in &mut conns {
            // Welcome! is sent on accept: each connection is in a child.
            assert_eq!(c.recv_some(), "Welcome!");
            c.send(b"x");
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
    let server = Server::tcp(&["--model", "prefork", "--workers", "2", "--service", "greet"]);
    let pid = server.pid();
    let before = settle(pid, 2);
    let victim = before[0].0;
    std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    let after = settle(pid, 2);
    assert!(after.iter().all(|(p, _)| *p != victim), "{after:?}");
    for i in 0..4 {
        assert_eq!(server.ask(format!("{i}").as_bytes()), format!("Hello, {i}!"));
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
    for model in ["fork", "prefork"] {
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
