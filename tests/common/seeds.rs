//! The seeds' own servers, verbatim (`../shared/seeds`), for the tests
//! that run them: `seeds.rs` talks to them with socklab's clients, and
//! `check.rs` checks them. Each is changed only where it listens (the port
//! it is given, on 127.0.0.1), by [`SeedServer::command`], which says so.

#![allow(dead_code)] // Each test file uses its own subset.

use std::path::Path;
use std::process::Command;

/// Seed 001's Python UDP time server, verbatim but for the port: it binds
/// loopback port 0 and prints the port it got before it serves.
pub const SEED_001_UDP_SERVER: &str = r#"import socket
import datetime

PORT = 50000
BUFSIZE = 4096

# create a socket
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

# bind the socket to an socket address
server.bind(("", PORT))

while True:
	# wait for receiving a message from a client
	data, client = server.recvfrom(BUFSIZE)

	msg = str(datetime.datetime.now())
	print(msg)
	print("Got a message:", client)
	print(data)

	# send a message back to the client
	server.sendto(msg.encode("utf-8"), client)
"#;

/// Seed 003's Python UDP greet server (`serverudp.py`), verbatim but for
/// the port: one second's sleep, then `Hello, <data>!`.
pub const SEED_003_UDP_SERVER: &str = r#"import socket
import time

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# 绑定端口:
s.bind(('127.0.0.1', 9999))
print('Bind UDP on 9999')
while True:
    # 接收数据:
    data, addr = s.recvfrom(1024)
    time.sleep(1)
    print('Received from %s:%s.' % addr)
    s.sendto(b'Hello, %s!' % data, addr)
"#;

/// Seed 001's Python TCP time server (`server.py`): one connection at a time,
/// one `recv`, the time back, close.
pub const SEED_001_TCP_SERVER: &str = r##"import socket
import datetime

PORT = 50000
BUFSIZE = 4096

# create a socket
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

# bind a socket to an address
server.bind(("", PORT))

# listen connection requests on the socket
server.listen()

while True:
	# wait for a connection request
	client, addr = server.accept()

	msg = str(datetime.datetime.now())
	print(msg)
	print("Got a connection request:", addr)

	# receive data from the client
	data = client.recv(BUFSIZE)
	print(data.decode("utf-8"))

	# send a message back to the client
	client.sendall(msg.encode("utf-8"))

	# close the connection
	client.close()
"##;

/// Seed 001's Python `select()` event loop (`server.py` of "Event Loop"):
/// one `recv`, the bytes back, close.
pub const SEED_001_SELECT_SERVER: &str = r##"import datetime
import socket
import select

SERVER_PORT = 50000
BUFSIZE = 4096

# dictionary storing sockets waiting until ready to read
read_waiters = {}

# dictionary storing sockets waiting until ready to write
write_waiters = {}

# dictionary storing clients' info
connections = {}


def accept_handler(server):
    """Handler invoked when the server socket is ready to read"""

    # accept a connection request
    client, addr = server.accept()

    # set the client socket non-blocking mode
    client.setblocking(False)

    print(str(datetime.datetime.now()))
    print("Got a connection request:", addr)

    # add the connection to the connection dict
    connections[client.fileno()] = (client, addr)

    # add the client to the read-wait list
    read_waiters[client.fileno()] = (recv_handler, (client.fileno(), ))

    # add the server to the read-wait list to get a new connection
    read_waiters[server.fileno()] = (accept_handler, (server, ))


def recv_handler(fileno):
    """Handler invoked when the client socket is ready to read"""

    # retrieve the client
    client, addr = connections[fileno]

    # receive a message from the client
    data = client.recv(BUFSIZE)

    print(f"Recv from {addr}: {data}")

    # add the client to the write-wait list
    write_waiters[fileno] = (send_handler, (fileno, data))


def send_handler(fileno, data):
    """Handler invoked when the client socket is ready to write"""

    # retrieve the client
    client, addr = connections[fileno]

    # send the message back to the client
    client.sendall(data)

    # close the connection
    client.close()
    connections.pop(fileno)


# create a socket
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)

# bind the socket to an address
server.bind(("", SERVER_PORT))

# listen on the socket
server.listen()

# add the accept handler to the read-wait list
read_waiters[server.fileno()] = (accept_handler, (server, ))

while True:
    # wait for one or more of waiters getting ready
    rlist, wlist, _ = select.select(read_waiters.keys(), write_waiters.keys(), [], 10)

    # handle ready-to-reads
    for fileno in rlist:
        handler, args = read_waiters.pop(fileno)
        handler(*args)

    # handle ready-to-writes
    for fileno in wlist:
        handler, args = write_waiters.pop(fileno)
        handler(*args)
"##;

/// Seed 001's C TCP echo server (`server.c`).
pub const SEED_001_C_SERVER: &str = r##"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#define SERVER_PORT 50000
#define MAX_PENDING_CONN 5
#define BUFFER_SIZE 4096

int main(int argc, char *argv[])
{
	int server_sock, client_sock, ret;
	struct sockaddr_in server_addr, client_addr;
	unsigned int client_addr_len;
	char buffer[BUFFER_SIZE];
	int msg_len;

	// create a socket
	server_sock = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	if (server_sock < 0) {
		perror("socket() failed");
		exit(1);
	}

	// construct a local socket address
	memset(&server_addr, 0, sizeof(server_addr));
	server_addr.sin_family = AF_INET;
	server_addr.sin_addr.s_addr = htonl(INADDR_ANY);
	server_addr.sin_port = SERVER_PORT;

	// bind the socket to the server address
	ret = bind(server_sock, (struct sockaddr *)&server_addr,
		   sizeof(server_addr));
	if (ret < 0) {
		perror("bind() failed");
		exit(1);
	}

	// listen on the socket
	ret = listen(server_sock, MAX_PENDING_CONN);
	if (ret < 0) {
		perror("listen() failed");
		exit(1);
	}

	for (;;) {
		// wait for a connection request from a client
		client_sock = accept(server_sock,
				     (struct sockaddr *)&client_addr,
				     &client_addr_len);
		if (client_sock < 0) {
			perror("accept() failed");
			exit(1);
		}

		// print the client information
		printf("Got a request from %s:%d\n",
		       inet_ntoa(client_addr.sin_addr), client_addr.sin_port);

		do {
			// receive a message from the client
			msg_len = recv(client_sock, buffer, BUFFER_SIZE - 1, 0);
			if (msg_len < 0) {
				perror("recv() failed");
				exit(1);
			}
			buffer[msg_len] = '\0';
			printf(buffer);

			// send the same message back to the client
			ret = send(client_sock, buffer, msg_len, 0);
			if (ret != msg_len) {
				perror("send() failed");
				exit(1);
			}
		} while (msg_len > 0);
		printf("\n");

		// close the client socket
		close(client_sock);
	}

	return 0;
}
"##;

/// Seed 001's Rust TCP echo server.
pub const SEED_001_RUST_SERVER: &str = r##"use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

fn handle_client(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = [0; 4096];

    // receive data from the client.
    stream.read(&mut buf)?;
    println!("{}", std::str::from_utf8(&buf).unwrap());

    // send the same data back to the client.
    stream.write(&buf)?;

    Ok(())
}

fn main() -> std::io::Result<()> {
    // create a socket, bind it to an address and listen on it.
    let listener = TcpListener::bind("127.0.0.1:50000")?;

    // accept connections and process them serially.
    for stream in listener.incoming() {
        handle_client(stream?)?;
    }

    Ok(())
}
"##;

/// Seed 002's thread-per-connection server that reverses strings, as its
/// two slides show it (`socket_handler`, then the main block); the slides
/// leave out the imports.
pub const SEED_002_REVERSE_SERVER: &str = r##"def socket_handler(conn):
    data = conn.recv(1024)
    data = data.decode()[::-1]
    conn.sendall(data.encode())
    conn.close()

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description="Thread server -p port")
    parser.add_argument('-p', help="port_number", required=True)

    args = parser.parse_args()

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(('', int(args.p)))
    server.listen(5)

    while True:
        conn, addr = server.accept()
        print('Connected to:', addr[0], ':', addr[1])

        t = threading.Thread(target=socket_handler, args=(conn,)) # 메인 스레드에서 accept까지 처리 후 새로운 스레드 생성
        t.start()

    server.close()
"##;

/// Seed 003's threaded TCP server (`serverthread.py`): `Welcome!`, then
/// `Received %s;` a second after each message, until `exit`.
pub const SEED_003_TCP_SERVER: &str = r##"#!/usr/bin/env python3
# -*- coding: utf-8 -*-

# multi-thread Server example
# CodeFuture@CA

# 导入socket库:
import socket
import threading
import time

def worker(sock, addr):
    print('Accept new connection from %s:%s...' % addr)
    sock.send(b'Welcome!')
    while True:
        data = sock.recv(1024)
        time.sleep(1)
        if not data or data.decode('utf-8') == 'exit':
            break
        sock.send(('Received %s;' % data.decode('utf-8')).encode('utf-8'))
    sock.close()
    print('Connection from %s:%s closed.' % addr)
    
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

# 监听端口:
s.bind(('127.0.0.1', 9999))
s.listen(5)
print('Waiting for connection...')
while True:
    # 接受一个新连接:
    sock, addr = s.accept()
    # 创建新线程来处理TCP连接:
    t = threading.Thread(target=worker, args=(sock, addr))
    t.start()

"##;

/// One of the seeds' servers, ready to be started by `check --server`.
pub struct SeedServer {
    /// A short name for tables: `001-tcp-time`.
    pub name: &'static str,
    /// The service it speaks, as `check --service` takes it.
    pub service: &'static str,
    /// `tcp` or `udp`.
    pub transport: &'static str,
    source: &'static str,
    language: Language,
    /// What is changed, and into what: only where it listens.
    patches: &'static [(&'static str, &'static str)],
}

#[derive(Clone, Copy)]
enum Language {
    Python,
    C,
    Rust,
}

/// Every seed server that runs on its own, fast enough to check.
pub fn servers() -> Vec<SeedServer> {
    vec![
        SeedServer {
            name: "001-tcp-time",
            service: "time",
            transport: "tcp",
            source: SEED_001_TCP_SERVER,
            language: Language::Python,
            patches: &[
                ("PORT = 50000", "import sys\nPORT = int(sys.argv[1])"),
                ("server.bind((\"\", PORT))", "server.bind((\"127.0.0.1\", PORT))"),
            ],
        },
        SeedServer {
            name: "001-udp-time",
            service: "time",
            transport: "udp",
            source: SEED_001_UDP_SERVER,
            language: Language::Python,
            patches: &[
                ("PORT = 50000", "import sys\nPORT = int(sys.argv[1])"),
                ("server.bind((\"\", PORT))", "server.bind((\"127.0.0.1\", PORT))"),
            ],
        },
        SeedServer {
            name: "001-select-echo",
            service: "echo",
            transport: "tcp",
            source: SEED_001_SELECT_SERVER,
            language: Language::Python,
            patches: &[
                (
                    "SERVER_PORT = 50000",
                    "import sys\nSERVER_PORT = int(sys.argv[1])",
                ),
                (
                    "server.bind((\"\", SERVER_PORT))",
                    "server.bind((\"127.0.0.1\", SERVER_PORT))",
                ),
            ],
        },
        SeedServer {
            name: "001-c-echo",
            service: "echo",
            transport: "tcp",
            source: SEED_001_C_SERVER,
            language: Language::C,
            // The seed forgets htons: given here, so that it listens where told.
            patches: &[
                (
                    "#define SERVER_PORT 50000",
                    "#define SERVER_PORT htons(atoi(argv[1]))",
                ),
                ("htonl(INADDR_ANY)", "htonl(INADDR_LOOPBACK)"),
            ],
        },
        SeedServer {
            name: "001-rust-echo",
            service: "echo",
            transport: "tcp",
            source: SEED_001_RUST_SERVER,
            language: Language::Rust,
            patches: &[(
                "TcpListener::bind(\"127.0.0.1:50000\")",
                "TcpListener::bind(format!(\"127.0.0.1:{}\", std::env::args().nth(1).unwrap_or_default()))",
            )],
        },
        SeedServer {
            name: "002-reverse",
            service: "reverse",
            transport: "tcp",
            source: SEED_002_REVERSE_SERVER,
            language: Language::Python,
            patches: &[
                (
                    "def socket_handler(conn):",
                    "import argparse\nimport socket\nimport threading\n\ndef socket_handler(conn):",
                ),
                (
                    "server.bind(('', int(args.p)))",
                    "server.bind(('127.0.0.1', int(args.p)))",
                ),
            ],
        },
        SeedServer {
            name: "003-tcp-welcome",
            service: "welcome",
            transport: "tcp",
            source: SEED_003_TCP_SERVER,
            language: Language::Python,
            patches: &[(
                "s.bind(('127.0.0.1', 9999))",
                "import sys\ns.bind(('127.0.0.1', int(sys.argv[1])))",
            )],
        },
        SeedServer {
            name: "003-udp-greet",
            service: "greet",
            transport: "udp",
            source: SEED_003_UDP_SERVER,
            language: Language::Python,
            patches: &[(
                "s.bind(('127.0.0.1', 9999))",
                "import sys\ns.bind(('127.0.0.1', int(sys.argv[1])))",
            )],
        },
    ]
}

impl SeedServer {
    /// Writes the server (patched where it listens) into `dir`, compiles
    /// it if it is C or Rust, and returns the command for `check --server`,
    /// with `{port}` where the port goes.
    pub fn command(&self, dir: &Path) -> String {
        let mut source = self.source.to_string();
        for (from, to) in self.patches {
            assert!(
                source.contains(from),
                "{}: the seed's line moved: {from}",
                self.name
            );
            source = source.replacen(from, to, 1);
        }
        let base = dir.join(self.name);
        match self.language {
            Language::Python => {
                let path = base.with_extension("py");
                std::fs::write(&path, source).expect("write the seed");
                let flag = if self.name == "002-reverse" { "-p " } else { "" };
                format!("python3 {} {flag}{{port}}", path.display())
            }
            Language::C => {
                let path = base.with_extension("c");
                std::fs::write(&path, source).expect("write the seed");
                compile(Command::new("cc").arg("-w").arg("-o").arg(&base).arg(&path));
                format!("{} {{port}}", base.display())
            }
            Language::Rust => {
                let path = base.with_extension("rs");
                std::fs::write(&path, source).expect("write the seed");
                compile(
                    Command::new("rustc")
                        .arg("--edition=2021")
                        .arg("-A")
                        .arg("warnings")
                        .arg("-o")
                        .arg(&base)
                        .arg(&path),
                );
                format!("{} {{port}}", base.display())
            }
        }
    }
}

fn compile(command: &mut Command) {
    let out = command.output().expect("a compiler (cc, rustc) for the seeds");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
