//! UDP: one datagram in, one datagram back to its sender; the seeds' UDP
//! clients; a `send` that copes with loss.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{digit_shape, fails_with, python, socklab, stdout, Server};

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `datagram` from `s` to `server` and returns the datagram that comes back.
fn exchange(s: &UdpSocket, server: &Server, datagram: &[u8]) -> Vec<u8> {
    s.send_to(datagram, server.addr.trim_start_matches("udp:"))
        .unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = s.recv(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// `exchange` from a fresh client.
fn ask(server: &Server, datagram: &[u8]) -> Vec<u8> {
    exchange(&client(), server, datagram)
}

/// Seed 003's UDP client, verbatim but for the port.
const SEED_003_UDP_CLIENT: &str = r#"import socket

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for data in [b'message1', b'message2', b'message3', b'message4', b'message5']:
    # 发送数据:
    s.sendto(data, ('127.0.0.1', 9999))
    # 接收数据:
    print(s.recv(1024).decode('utf-8'))
s.close()
"#;

/// Seed 001's Python UDP client, verbatim but for the port.
const SEED_001_UDP_CLIENT: &str = r#"import socket

HOST = "localhost"
PORT = 50000
BUFSIZE = 4096

# create a socket
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

# send a message to a server
msg = "hello world"
client.sendto(msg.encode("utf-8"), (HOST, PORT))

# receive a message from the server
data = client.recv(BUFSIZE)
print(data.decode("utf-8"))

# close the socket
client.close()
"#;

#[test]
fn seed_003_udp_client_is_greeted_five_times() {
    let server = Server::udp(&["--model", "iterative", "--service", "greet"]);
    let script = SEED_003_UDP_CLIENT.replace("9999", &server.port().to_string());
    let expected: String = (1..=5).map(|i| format!("Hello, message{i}!\n")).collect();
    assert_eq!(python(&script, &[], ""), expected);
}

#[test]
fn seed_001_udp_client_gets_a_timestamp() {
    for model in ["iterative", "pool", "epoll", "async"] {
        let server = Server::udp(&["--model", model, "--service", "time"]);
        let script = SEED_001_UDP_CLIENT.replace("PORT = 50000", &format!("PORT = {}", server.port()));
        let out = python(&script, &[], "");
        assert_eq!(
            digit_shape(out.trim_end()),
            "dddd-dd-dd dd:dd:dd.dddddd",
            "{model}: {out}"
        );
    }
}

#[test]
fn send_retries_then_gives_up_with_a_clear_error() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // Receives, never answers.
    let addr = format!("udp:{}", silent.local_addr().unwrap());
    let start = Instant::now();
    let err = fails_with(
        1,
        socklab(&[
            "send",
            &addr,
            "anyone?",
            "--id",
            "--timeout",
            "200ms",
            "--retries",
            "3",
        ]),
    );
    assert_eq!(err, format!("error: no reply from {addr} after 3 tries\n"));
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "three tries of 200 ms each"
    );
    // All three tries carried the same request ID.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 100];
    let ids: Vec<Vec<u8>> = (0..3)
        .map(|_| {
            let n = silent.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect();
    assert!(ids[0].starts_with(b"#") && ids[0].ends_with(b" anyone?"));
    assert!(ids.iter().all(|d| d == &ids[0]), "{ids:?}");
}

#[test]
fn send_is_a_plain_datagram_as_nc_u_sends_and_prints_any_reply() {
    let server = client();
    let addr = format!("udp:{}", server.local_addr().unwrap());
    let answer = std::thread::spawn(move || {
        let mut buf = [0u8; 100];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(b"pong", from).unwrap();
        buf[..n].to_vec()
    });
    let out = socklab(&["send", &addr, "ping", "--timeout", "5s"]);
    assert_eq!(stdout(&out), "pong\n");
    assert_eq!(answer.join().unwrap(), b"ping");
}

#[test]
fn send_without_id_sends_once() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = format!("udp:{}", silent.local_addr().unwrap());
    let err = fails_with(1, socklab(&["send", &addr, "anyone?", "--timeout", "200ms"]));
    assert!(err.contains("does not retry without --id"), "{err}");
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(silent.recv(&mut buf).unwrap(), 7);
    assert!(silent.recv(&mut buf).is_err(), "one datagram only");
}

#[test]
fn send_to_a_closed_udp_port_says_refused() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = fails_with(1, socklab(&["send", &format!("udp:127.0.0.1:{port}"), "x"]));
    assert!(err.contains("connection refused"), "{err}");
}

#[test]
fn send_with_id_gets_the_reply_without_its_id() {
    let server = Server::udp(&["--model", "async", "--service", "greet"]);
    let out = socklab(&["send", &server.addr, "--id", "you"]);
    assert_eq!(stdout(&out), "Hello, you!\n");
}

#[test]
fn send_prints_the_reply_without_its_id() {
    let server = Server::udp(&["--model", "async", "--service", "reverse"]);
    let out = socklab(&["send", &server.addr, "stressed"]);
    assert_eq!(stdout(&out), "desserts\n");
}

/// Five clients at once, each one datagram, against `greet` with a 300 ms
/// delay under `model_args`; the time until the last reply.
fn five_at_once(model_args: &[&str]) -> f64 {
    let mut args = vec!["--service", "greet", "--delay", "300ms"];
    args.extend_from_slice(model_args);
    let server = Server::udp(&args);
    let target = server.addr.trim_start_matches("udp:").to_string();
    let start = Instant::now();
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let target = target.clone();
            std::thread::spawn(move || {
                let s = client();
                s.send_to(format!("c{i}").as_bytes(), &target).unwrap();
                let mut buf = [0u8; 64];
                let n = s.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], format!("Hello, c{i}!").as_bytes());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    start.elapsed().as_secs_f64()
}

#[test]
fn delay_over_udp_iterative_queues_the_others_do_not() {
    const D: f64 = 0.3;
    let t = five_at_once(&["--model", "iterative"]);
    assert!(t >= 5.0 * D, "iterative took {t} s");
    for model in ["async", "epoll"] {
        let t = five_at_once(&["--model", model]);
        assert!((D..3.5 * D).contains(&t), "{model} took {t} s");
    }
    let t = five_at_once(&["--model", "pool", "--workers", "3"]);
    assert!((2.0 * D..4.5 * D).contains(&t), "pool of 3 took {t} s");
}

#[test]
fn tcp_and_udp_at_once() {
    let server = Server::start(
        &["--model", "async", "--service", "greet"],
        &["tcp:127.0.0.1:0", "udp:127.0.0.1:0"],
        None,
    );
    assert!(server.addrs[0].starts_with("tcp:") && server.addrs[1].starts_with("udp:"));
    for addr in &server.addrs {
        assert_eq!(stdout(&socklab(&["send", addr, "both"])), "Hello, both!\n");
    }
}

#[test]
fn bad_datagrams_get_err_or_their_echo_and_only_the_sender_hears() {
    for model in ["iterative", "pool", "epoll", "async"] {
        let server = Server::udp(&["--model", model, "--service", "reverse"]);
        assert_eq!(ask(&server, b""), b"ERR empty datagram", "{model}");
        assert_eq!(ask(&server, b"\xff\xfe"), b"ERR invalid UTF-8", "{model}");
        let echo = Server::udp(&["--model", model, "--service", "echo"]);
        let big = vec![b'u'; 65_507];
        assert_eq!(ask(&echo, &big).len(), 65_507, "{model}");
        let greet = Server::udp(&["--model", model, "--service", "greet"]);
        assert_eq!(
            ask(&greet, &big),
            b"ERR reply too large for a datagram",
            "{model}"
        );
        // A bystander hears nothing; the server is still there.
        let bystander = client();
        bystander
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let _ = ask(&greet, b"x");
        assert!(bystander.recv(&mut [0u8; 16]).is_err());
        assert_eq!(ask(&greet, b"still"), b"Hello, still!");
    }
}

#[test]
fn a_retried_id_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let server = Server::udp(&[
        "--model",
        "pool",
        "--service",
        "contacts",
        "--db",
        db.to_str().unwrap(),
    ]);
    // One client: the reply cache is per peer.
    let s = client();
    for _ in 0..2 {
        assert_eq!(exchange(&s, &server, b"#42 ADD ann 555"), b"#42 OK");
    }
    assert_eq!(exchange(&s, &server, b"#43 REMOVE ann"), b"#43 OK");
    // The retry of 42 is answered from the cache, not applied again.
    assert_eq!(exchange(&s, &server, b"#42 ADD ann 555"), b"#42 OK");
    assert_eq!(exchange(&s, &server, b"LIST"), b"OK 0");
}

#[test]
fn models_and_services_that_cannot_do_udp_say_so() {
    let err = fails_with(
        1,
        socklab(&["serve", "--model", "thread", "--listen", "udp:127.0.0.1:0"]),
    );
    assert!(err.contains("thread does not serve UDP"), "{err}");
    assert!(err.contains("use iterative, pool, epoll, async"), "{err}");
    let err = fails_with(
        1,
        socklab(&[
            "serve",
            "--model",
            "async",
            "--service",
            "welcome",
            "--listen",
            "udp:127.0.0.1:0",
        ]),
    );
    assert!(err.contains("needs a connection"), "{err}");
}
