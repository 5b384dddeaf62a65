//! The seeds' own clients, run unchanged (but for the port they hardcode)
//! against socklab: what a student of the tutorials would try first.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Server;

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

fn port_of(server: &Server) -> String {
    server.addr.rsplit(':').next().unwrap().to_string()
}

fn python(script: &str, port: &str, args: &[&str], stdin: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.py");
    std::fs::write(&path, script.replace("PORT = 50000", &format!("PORT = {port}"))).unwrap();
    // The seeds' AF_INET socket resolves "localhost" to 127.0.0.1, where socklab listens.
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the seed interop tests");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn seed_001_tcp_client_gets_a_timestamp() {
    let server = Server::tcp(&["--service", "time"]);
    let out = python(SEED_001_TCP_CLIENT, &port_of(&server), &[], "hello world\n");
    let line = out.trim_end();
    let stamp = line
        .strip_prefix("Input a message: Got a message: ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let shape: String = stamp
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(shape, "dddd-dd-dd dd:dd:dd.dddddd");
}

#[test]
fn seed_001_numbered_clients_get_their_echo() {
    let server = Server::tcp(&["--service", "echo", "--model", "pool"]);
    let port = port_of(&server);
    let handles: Vec<_> = (1..=5)
        .map(|i| {
            let port = port.clone();
            std::thread::spawn(move || python(SEED_001_NUMBERED_CLIENT, &port, &[&i.to_string()], ""))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.join().unwrap(),
            format!("Got a message: Hello from client {}\n", i + 1)
        );
    }
}
