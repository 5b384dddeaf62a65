//! `connect` and `listen`: seed 002's two-way conversation, both ends socklab.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Child;
use std::time::Duration;

use common::{spawn, spawn_listening, Server};

/// A socklab that is killed when the test ends, whatever happens.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn stdout(&mut self) -> BufReader<std::process::ChildStdout> {
        BufReader::new(self.0.stdout.take().expect("stdout"))
    }
}

fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    line
}

fn tcp(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr.trim_start_matches("tcp:")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

#[test]
fn connect_talks_to_a_server_until_it_closes() {
    let server = Server::tcp(&["--service", "welcome"]);
    let mut child = spawn(&["connect", &server.addr]);
    let mut stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut greeting = [0u8; 8];
    stdout.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"Welcome!");
    stdin.write_all(b"exit").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    assert!(child.wait().unwrap().success());
}

#[test]
fn listen_and_connect_talk_both_ways() {
    let (mut listener, addr, _stderr) = spawn_listening(&["listen", "tcp:127.0.0.1:0"]);
    let mut client = spawn(&["connect", &addr]);
    let mut client_in = client.stdin.take().unwrap();
    let mut client_out = BufReader::new(client.stdout.take().unwrap());
    let mut listener_in = listener.stdin.take().unwrap();
    let mut listener_out = BufReader::new(listener.stdout.take().unwrap());

    client_in.write_all(b"Hello World!!!\n").unwrap();
    let mut got = String::new();
    listener_out.read_line(&mut got).unwrap();
    assert_eq!(got, "Hello World!!!\n");

    listener_in.write_all(b"Oh I'm Server HoHo\n").unwrap();
    got.clear();
    client_out.read_line(&mut got).unwrap();
    assert_eq!(got, "Oh I'm Server HoHo\n");

    // The client's end of input half-closes; the listener's ends the talk.
    drop(client_in);
    got.clear();
    assert_eq!(listener_out.read_line(&mut got).unwrap(), 0);
    drop(listener_in);
    assert!(listener.wait().unwrap().success());
    assert!(client.wait().unwrap().success());
}

#[test]
fn listen_label_prints_the_seed_form_and_says_who_connected() {
    let (child, addr, mut stderr) = spawn_listening(&["listen", "tcp:127.0.0.1:0", "--label"]);
    let mut listener = Running(child);
    let mut stdout = listener.stdout();
    let mut peer = tcp(&addr);
    let me = peer.local_addr().unwrap();
    assert_eq!(line(&mut stderr), format!("connection from {me}\n"));
    peer.write_all(b"Hello World!!!\nI'm client, ").unwrap();
    assert_eq!(line(&mut stdout), format!("From {me}, Hello World!!!\n"));
    // An unfinished line is printed whole, and at the close at the latest.
    peer.write_all(b"HaHa").unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(line(&mut stdout), format!("From {me}, I'm client, HaHa\n"));
    assert!(listener.0.wait().unwrap().success());
}

#[test]
fn listen_keep_serves_one_peer_after_another() {
    let (child, addr, mut stderr) = spawn_listening(&["listen", "tcp:127.0.0.1:0", "--keep"]);
    let mut listener = Running(child);
    let mut stdout = listener.stdout();
    let mut stdin = listener.0.stdin.take().unwrap();
    for n in 1..=2 {
        let mut peer = tcp(&addr);
        let me = peer.local_addr().unwrap();
        assert_eq!(line(&mut stderr), format!("connection from {me}\n"));
        peer.write_all(format!("peer {n}\n").as_bytes()).unwrap();
        assert_eq!(line(&mut stdout), format!("peer {n}\n"));
        // stdin goes to whoever is connected.
        stdin.write_all(format!("to {n}\n").as_bytes()).unwrap();
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, format!("to {n}\n").as_bytes());
    }
    // Still listening after both.
    assert!(listener.0.try_wait().unwrap().is_none());
}

#[test]
fn listen_and_connect_over_udp() {
    let (child, addr, mut stderr) = spawn_listening(&["listen", "udp:127.0.0.1:0", "--label"]);
    assert!(addr.starts_with("udp:127.0.0.1:"), "{addr}");
    let mut listener = Running(child);
    let mut stdout = listener.stdout();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = peer.local_addr().unwrap();
    peer.send_to(b"Hello World!!!", addr.trim_start_matches("udp:"))
        .unwrap();
    assert_eq!(line(&mut stderr), format!("connection from {me}\n"));
    assert_eq!(line(&mut stdout), format!("From {me}, Hello World!!!\n"));
    // A line of stdin is one datagram to that peer, without its newline.
    let mut stdin = listener.0.stdin.take().unwrap();
    stdin.write_all(b"Oh I'm Server HoHo\n").unwrap();
    let mut buf = [0u8; 64];
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"Oh I'm Server HoHo");

    // And socklab's own connect talks to it: a datagram per line, each
    // reply on a line; it ends once stdin has ended and the peer is quiet.
    let (child, addr, _stderr) = spawn_listening(&["listen", "udp:127.0.0.1:0"]);
    let mut other = Running(child);
    let mut other_out = other.stdout();
    let mut other_in = other.0.stdin.take().unwrap();
    let mut client = Running(spawn(&["connect", &addr, "--timeout", "300ms"]));
    let mut client_out = client.stdout();
    let mut client_in = client.0.stdin.take().unwrap();
    client_in.write_all(b"ping\n").unwrap();
    assert_eq!(line(&mut other_out), "ping\n");
    other_in.write_all(b"pong\n").unwrap();
    assert_eq!(line(&mut client_out), "pong\n");
    drop(client_in);
    assert!(client.0.wait().unwrap().success());
}

#[test]
fn a_listener_on_any_ipv6_address_takes_ipv4_peers_unless_ipv6_only() {
    let (child, addr, mut stderr) = spawn_listening(&["listen", "tcp:[::]:0"]);
    let _listener = Running(child);
    let port = addr.rsplit(':').next().unwrap();
    let peer = tcp(&format!("127.0.0.1:{port}"));
    assert_eq!(
        line(&mut stderr),
        format!("connection from {}\n", peer.local_addr().unwrap())
    );

    let (child, addr, _stderr) = spawn_listening(&["listen", "tcp:[::]:0", "--ipv6-only"]);
    let _listener = Running(child);
    let port = addr.rsplit(':').next().unwrap();
    assert!(TcpStream::connect(format!("127.0.0.1:{port}")).is_err());
}
