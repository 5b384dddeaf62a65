//! `contacts`: a durable contact book; an `OK` survives SIGKILL.

mod common;

use common::{fails_with, socklab, Server};

#[test]
fn acknowledged_changes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("book.db");
    let db = db.to_str().unwrap();
    let mut server = Server::tcp(&["--service", "contacts", "--db", db]);
    let mut conn = server.connect();
    conn.send(b"ADD alice 555-0100\nADD bob 555-0199\nREMOVE bob\n");
    assert_eq!(conn.recv_exact(9), b"OK\nOK\nOK\n");
    server.child.kill().unwrap(); // SIGKILL: no chance to flush anything.
    server.child.wait().unwrap();

    let server = Server::unix(&["--service", "contacts", "--db", db, "--model", "pool"]);
    let mut conn = server.connect();
    conn.send(b"LIST\n");
    assert_eq!(conn.recv_exact(20), b"OK 1\nalice 555-0100\n");
}

#[test]
fn a_database_that_cannot_open_is_an_error_at_start() {
    let err = fails_with(
        1,
        socklab(&[
            "serve",
            "--service",
            "contacts",
            "--db",
            "/nonexistent/dir/book.db",
        ]),
    );
    assert!(
        err.starts_with("error: cannot open the database /nonexistent/dir/book.db"),
        "{err}"
    );
}
