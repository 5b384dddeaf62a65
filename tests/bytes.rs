//! The `bytes` service (Stevens' web_child) on every model, over TCP and
//! Unix sockets, and over UDP where a model serves datagrams: exactly N
//! bytes for each line holding N, `ERR` for what is not a count, and the
//! connection goes on.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{bench_json, socklab, stdout, Conn, Server};
use socklab::model::ModelKind;

const MIB: usize = 1 << 20;

/// The walk every model gets: N = 0, 1, 4000 and 1 MiB on one connection,
/// errors in between, and a last line without its newline at EOF.
fn walk(model: &str, conn: &mut Conn) {
    for n in [0, 1, 4000, MIB] {
        conn.send(format!("{n}\n").as_bytes());
        if n > 0 {
            let got = conn.recv_exact(n);
            assert!(got.iter().all(|&b| b == b'x'), "{model}: {n} bytes of filler");
        }
    }
    for (bad, reply) in [
        ("16777217", "ERR at most 16777216 bytes\n"),
        ("-1", "ERR byte count must not be negative\n"),
        ("four", "ERR expected a byte count, e.g. 4000\n"),
    ] {
        conn.send(format!("{bad}\n").as_bytes());
        assert_eq!(conn.recv_exact(reply.len()), reply.as_bytes(), "{model}: {bad}");
    }
    // Still usable, and pipelined requests come back in order.
    conn.send(b"3\n-2\n2");
    conn.shutdown_write();
    let rest = conn.recv_to_end();
    assert_eq!(rest, "xxxERR byte count must not be negative\nxx", "{model}");
}

#[test]
fn exactly_n_bytes_on_every_model_over_tcp_and_unix() {
    for model in ModelKind::all() {
        let args = ["--model", model.name(), "--service", "bytes"];
        for server in [Server::tcp(&args), Server::unix(&args)] {
            walk(model.name(), &mut server.connect());
        }
    }
}

#[test]
fn sixteen_mebibytes_to_a_slow_reader_in_full() {
    // The largest reply, read in small bites: the server makes it in
    // pieces as the socket drains, never the whole of it at once.
    for model in ["thread", "epoll", "uring"] {
        let server = Server::tcp(&["--model", model, "--service", "bytes"]);
        let mut conn = server.connect();
        conn.send(b"16777216\n");
        let mut total = 0;
        let mut buf = [0u8; 1000];
        while total < 16 * MIB {
            let n = std::io::Read::read(&mut conn, &mut buf).expect("read");
            assert!(n > 0, "{model}: closed after {total} bytes");
            total += n;
        }
        assert_eq!(total, 16 * MIB, "{model}");
        conn.send(b"1\n");
        assert_eq!(conn.recv_exact(1), b"x", "{model}: nothing more than asked");
    }
}

#[test]
fn over_udp_a_reply_larger_than_a_datagram_is_an_error() {
    for model in ModelKind::all().iter().filter(|m| m.serves_datagrams()) {
        let server = Server::udp(&["--model", model.name(), "--service", "bytes"]);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let target = server.addr.trim_start_matches("udp:").to_string();
        let mut buf = vec![0u8; 70_000];
        for (request, want) in [
            ("4000", Ok(4000)),
            ("65507", Ok(65507)),
            ("65508", Err("ERR reply too large for a datagram")),
            ("1048576", Err("ERR reply too large for a datagram")),
            ("nope", Err("ERR expected a byte count, e.g. 4000")),
        ] {
            socket.send_to(request.as_bytes(), &target).unwrap();
            let n = socket.recv(&mut buf).expect("a reply");
            match want {
                Ok(len) => assert_eq!(n, len, "{model}: {request}"),
                Err(text) => assert_eq!(&buf[..n], text.as_bytes(), "{model}: {request}"),
            }
        }
    }
}

#[test]
fn send_and_bench_drive_it() {
    let server = Server::tcp(&["--model", "prefork", "--service", "bytes"]);
    let out = socklab(&["send", &server.addr, "12"]);
    assert_eq!(stdout(&out).trim_end(), "x".repeat(12));
    // Stevens' client: connect, ask for 4000 bytes, read them, close.
    let report = bench_json(
        &server.addr,
        &[
            "--clients",
            "3",
            "--requests",
            "20",
            "--new-connection",
            "--message",
            "4000\n",
            "--expect",
            "bytes:4000",
        ],
    );
    assert_eq!(report["requests"], 60, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
}
