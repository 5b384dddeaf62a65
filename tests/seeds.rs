//! The seeds' own clients, run unchanged (but for the port they hardcode)
//! against socklab: what a student of the tutorials would try first.

mod common;

use common::{digit_shape, python, Server};

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
