//! `chat`: a room over real sockets; every line goes to everyone else.

mod common;

use std::io::{BufRead, BufReader};

use common::{fails_with, socklab, Conn, Server};

/// A member that reads whole lines.
struct Member {
    lines: BufReader<Conn>,
    conn: Conn,
}

impl Member {
    fn join(server: &Server) -> Member {
        let conn = server.connect();
        let mut member = Member {
            lines: BufReader::new(conn.try_clone()),
            conn,
        };
        assert!(member.line().starts_with("* welcome, guest"));
        member
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        line
    }

    fn say(&mut self, text: &str) {
        self.conn.send(format!("{text}\n").as_bytes());
    }
}

#[test]
fn lines_reach_everyone_else_under_threads_and_event_loops() {
    for (model, server) in [
        ("thread", Server::tcp(&["--service", "chat", "--model", "thread"])),
        (
            "pool",
            Server::unix(&["--service", "chat", "--model", "pool", "--workers", "3"]),
        ),
        (
            "pool-queue",
            Server::tcp(&["--service", "chat", "--model", "pool-queue", "--workers", "3"]),
        ),
        (
            "reactors",
            Server::tcp(&["--service", "chat", "--model", "reactors", "--workers", "2"]),
        ),
        (
            "half-async",
            Server::unix(&["--service", "chat", "--model", "half-async", "--workers", "2"]),
        ),
        (
            "leader",
            Server::tcp(&["--service", "chat", "--model", "leader", "--workers", "3"]),
        ),
    ] {
        let mut alice = Member::join(&server);
        let mut bob = Member::join(&server);
        assert!(alice.line().ends_with(" joined\n"), "{model}");
        alice.say("/nick alice");
        assert_eq!(alice.line(), "* you are alice\n");
        assert!(bob.line().ends_with(" is now alice\n"));
        bob.say("/nick bob");
        assert_eq!(bob.line(), "* you are bob\n");
        assert_eq!(alice.line(), format!("* {} is now bob\n", "guest2"));
        alice.say("hello bob");
        assert_eq!(bob.line(), "<alice> hello bob\n", "{model}");
        bob.say("hi alice");
        assert_eq!(alice.line(), "<bob> hi alice\n", "{model}");
        drop(bob);
        assert_eq!(alice.line(), "* bob left\n", "{model}");
    }
}

#[test]
fn models_that_cannot_host_a_room_refuse_at_start() {
    let err = fails_with(
        1,
        socklab(&[
            "serve",
            "--service",
            "chat",
            "--model",
            "iterative",
            "--listen",
            "tcp:127.0.0.1:0",
        ]),
    );
    assert!(
        err.starts_with("error: the chat service needs a model that serves many connections"),
        "{err}"
    );
    assert!(
        err.contains("use thread, pool, busy, select, poll, epoll, async, uring"),
        "{err}"
    );
}

#[test]
fn a_member_cannot_reach_the_others_terminals_or_pass_for_another() {
    for model in ["epoll", "async", "reactors", "half-async", "leader"] {
        let server = Server::tcp(&["--service", "chat", "--model", model]);
        let mut alice = Member::join(&server);
        let mut mallory = Member::join(&server);
        assert!(alice.line().ends_with(" joined\n"));
        mallory.say("\x1b[2J\x07\0x\r<alice> hi");
        assert_eq!(
            alice.line(),
            "<guest2> \\033[2J\\007\\000x\\015<alice> hi\n",
            "{model}"
        );
        mallory.say("/nick \x1b[31mred");
        assert!(
            mallory.line().starts_with("ERR a nickname is printable"),
            "{model}"
        );
        mallory.say("/nick");
        assert_eq!(mallory.line(), "ERR usage: /nick NAME\n");
        mallory.say("/quit");
        assert_eq!(mallory.line(), "* bye\n");
        assert_eq!(
            alice.line(),
            "* guest2 left\n",
            "{model}: no command is broadcast"
        );
    }
}
