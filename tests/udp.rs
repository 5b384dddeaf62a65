//! UDP: one datagram in, one datagram back to its sender; the seeds' UDP
//! clients; a `send` that copes with loss.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{socklab, stderr, stdout, Server};

fn udp(args: &[&str]) -> Server {
    Server::start(args, &["udp:127.0.0.1:0"], None)
}

fn port(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().to_string()
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn ask(server: &Server, datagram: &[u8]) -> Vec<u8> {
    let s = client();
    s.send_to(datagram, server.addr.trim_start_matches("udp:"))
        .unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = s.recv(&mut buf).unwrap();
    buf.truncate(n);
    buf
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

fn python(script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.py");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("python3").arg(&path).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn seed_003_udp_client_is_greeted_five_times() {
    let server = udp(&["--model", "iterative", "--service", "greet"]);
    let script = SEED_003_UDP_CLIENT.replace("9999", &port(&server.addr));
    let expected: String = (1..=5).map(|i| format!("Hello, message{i}!\n")).collect();
    assert_eq!(python(&script), expected);
}

#[test]
fn seed_001_udp_client_gets_a_timestamp() {
    for model in ["iterative", "pool", "epoll", "async"] {
        let server = udp(&["--model", model, "--service", "time"]);
        let script = SEED_001_UDP_CLIENT.replace("PORT = 50000", &format!("PORT = {}", port(&server.addr)));
        let out = python(&script);
        let shape: String = out
            .trim_end()
            .chars()
            .map(|c| if c.is_ascii_digit() { 'd' } else { c })
            .collect();
        assert_eq!(shape, "dddd-dd-dd dd:dd:dd.dddddd", "{model}: {out}");
    }
}

#[test]
fn send_retries_then_gives_up_with_a_clear_error() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // Receives, never answers.
    let addr = format!("udp:{}", silent.local_addr().unwrap());
    let start = Instant::now();
    let out = socklab(&["send", &addr, "anyone?", "--timeout", "200ms", "--retries", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("error: no reply from {addr} after 3 tries\n")
    );
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
fn send_prints_the_reply_without_its_id() {
    let server = udp(&["--model", "async", "--service", "reverse"]);
    let out = socklab(&["send", &server.addr, "stressed"]);
    assert_eq!(stdout(&out), "desserts\n");
}

/// Five clients at once, each one datagram; the time until the last reply.
fn five_at_once(server: &Server) -> f64 {
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
    let t = five_at_once(&udp(&[
        "--model",
        "iterative",
        "--service",
        "greet",
        "--delay",
        "300ms",
    ]));
    assert!(t >= 5.0 * D, "iterative took {t} s");
    for model in ["async", "epoll"] {
        let t = five_at_once(&udp(&[
            "--model",
            model,
            "--service",
            "greet",
            "--delay",
            "300ms",
        ]));
        assert!((D..3.5 * D).contains(&t), "{model} took {t} s");
    }
    let t = five_at_once(&udp(&[
        "--model",
        "pool",
        "--workers",
        "3",
        "--service",
        "greet",
        "--delay",
        "300ms",
    ]));
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
        let server = udp(&["--model", model, "--service", "reverse"]);
        assert_eq!(ask(&server, b""), b"ERR empty datagram", "{model}");
        assert_eq!(ask(&server, b"\xff\xfe"), b"ERR invalid UTF-8", "{model}");
        let echo = udp(&["--model", model, "--service", "echo"]);
        let big = vec![b'u'; 65_507];
        assert_eq!(ask(&echo, &big).len(), 65_507, "{model}");
        let greet = udp(&["--model", model, "--service", "greet"]);
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
    let server = udp(&[
        "--model",
        "pool",
        "--service",
        "contacts",
        "--db",
        db.to_str().unwrap(),
    ]);
    let s = client();
    let target = server.addr.trim_start_matches("udp:");
    let mut buf = [0u8; 256];
    for _ in 0..2 {
        s.send_to(b"#42 ADD ann 555", target).unwrap();
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"#42 OK");
    }
    s.send_to(b"#43 REMOVE ann", target).unwrap();
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"#43 OK");
    // The retry of 42 is answered from the cache, not applied again.
    s.send_to(b"#42 ADD ann 555", target).unwrap();
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"#42 OK");
    s.send_to(b"LIST", target).unwrap();
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"OK 0");
}

#[test]
fn models_and_services_that_cannot_do_udp_say_so() {
    let out = socklab(&["serve", "--model", "thread", "--listen", "udp:127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("thread does not serve UDP"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("use iterative, pool, epoll, async"),
        "{}",
        stderr(&out)
    );
    let out = socklab(&[
        "serve",
        "--model",
        "async",
        "--service",
        "welcome",
        "--listen",
        "udp:127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("needs a connection"), "{}", stderr(&out));
}
