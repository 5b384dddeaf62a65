//! The seeds' own clients, run unchanged (but for the port they hardcode)
//! against socklab: what a student of the tutorials would try first.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::seeds::{SEED_001_UDP_SERVER, SEED_003_UDP_SERVER};
use common::{digit_shape, python, socklab, stdout, Server};

/// Seed 001's Python TCP client, verbatim but for the port.
const SEED_001_TCP_CLIENT: &str = r#"import socket

HOST = "localhost"
PORT = 50000
BUFSIZE = 4096

# create a socket
client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

# connect to a server
client.connect((HOST, PORT))

# send a message to the server
msg = input("Input a message: ")
client.sendall(msg.encode("utf-8"))

# receive a message from the server
data = client.recv(BUFSIZE)
print("Got a message:", data.decode("utf-8"))

# close the connection
client.close()
"#;

/// Seed 001's multi-client variant: `python3 client.py N`.
const SEED_001_NUMBERED_CLIENT: &str = r#"import sys
import socket

HOST = "localhost"
PORT = 50000
BUFSIZE = 4096

# create a socket
client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

# connect to a server
client.connect((HOST, PORT))

# send a message to the server
msg = f"Hello from client {sys.argv[1]}"
client.sendall(msg.encode("utf-8"))

# receive a message from the server
data = client.recv(BUFSIZE)
print("Got a message:", data.decode("utf-8"))

# close the connection
client.close()
"#;

/// A seed client aimed at `server`: its hardcoded port made the server's.
/// The seeds' AF_INET socket resolves "localhost" to 127.0.0.1, where socklab listens.
fn aimed_at(script: &str, server: &Server) -> String {
    script.replace("PORT = 50000", &format!("PORT = {}", server.port()))
}

#[test]
fn seed_001_tcp_client_gets_a_timestamp() {
    let server = Server::tcp(&["--service", "time"]);
    let out = python(&aimed_at(SEED_001_TCP_CLIENT, &server), &[], "hello world\n");
    let line = out.trim_end();
    let stamp = line
        .strip_prefix("Input a message: Got a message: ")
        .unwrap_or_else(|| panic!("{line:?}"));
    assert_eq!(digit_shape(stamp), "dddd-dd-dd dd:dd:dd.dddddd");
}

#[test]
fn seed_001_numbered_clients_get_their_echo() {
    let server = Server::tcp(&["--service", "echo", "--model", "pool"]);
    let script = aimed_at(SEED_001_NUMBERED_CLIENT, &server);
    let handles: Vec<_> = (1..=5)
        .map(|i| {
            let script = script.clone();
            std::thread::spawn(move || python(&script, &[&i.to_string()], ""))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.join().unwrap(),
            format!("Got a message: Hello from client {}\n", i + 1)
        );
    }
}

/// A seed's Python server, killed when dropped; `port` is where it listens.
struct PythonServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PythonServer {
    /// Runs `script` with its bind made loopback port 0 (`bind` replaced by
    /// `bound`) and a first line that prints the port.
    fn start(script: &str, bind: &str, bound: &str) -> PythonServer {
        assert!(script.contains(bind), "the seed's bind line moved");
        let script = script.replace(bind, bound);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("server.py");
        std::fs::write(&path, script).expect("write the script");
        let child = Command::new("python3")
            .arg("-u")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the seed interop tests");
        let mut server = PythonServer {
            port: 0,
            child,
            _dir: dir,
        };
        let stdout = server.child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the port");
        // The seed prints every request: keep reading, or it dies of EPIPE.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        server.port = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        server
    }

    fn seed_001() -> PythonServer {
        Self::start(
            SEED_001_UDP_SERVER,
            "server.bind((\"\", PORT))\n",
            "server.bind((\"127.0.0.1\", 0))\nprint(\"port\", server.getsockname()[1])\n",
        )
    }

    fn seed_003() -> PythonServer {
        Self::start(
            SEED_003_UDP_SERVER,
            "s.bind(('127.0.0.1', 9999))\nprint('Bind UDP on 9999')",
            "s.bind(('127.0.0.1', 0))\nprint('Bind UDP on %d' % s.getsockname()[1])",
        )
    }

    fn addr(&self) -> String {
        format!("udp:127.0.0.1:{}", self.port)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `socklab connect ADDR ARGS` with `input` on stdin (then closed): its stdout.
fn connect_with(addr: &str, args: &[&str], input: &str) -> String {
    common::socklab_with_stdin(&[&["connect", addr], args].concat(), input.as_bytes())
}

#[test]
fn seed_001_udp_time_server_answers_send_and_connect() {
    let server = PythonServer::seed_001();
    let out = socklab(&["send", &server.addr(), "hello world"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(digit_shape(&stdout(&out)), "dddd-dd-dd dd:dd:dd.dddddd\n");

    let out = connect_with(&server.addr(), &["--timeout", "500ms"], "hello\nworld\n");
    let shapes: Vec<String> = out.lines().map(digit_shape).collect();
    assert_eq!(shapes, ["dddd-dd-dd dd:dd:dd.dddddd"; 2], "{out}");
}

#[test]
fn seed_003_udp_greet_server_answers_send_and_connect() {
    let server = PythonServer::seed_003();
    // The seed sleeps a second before each reply.
    let out = socklab(&["send", &server.addr(), "world", "--timeout", "5s"]);
    assert_eq!(stdout(&out), "Hello, world!\n", "{}", common::stderr(&out));

    let out = connect_with(
        &server.addr(),
        &["--timeout", "2s", "--label"],
        "message1\nmessage2\n",
    );
    let from = format!("From 127.0.0.1:{}, ", server.port);
    assert_eq!(out, format!("{from}Hello, message1!\n{from}Hello, message2!\n"));
}
