//! `connect` and `listen`: seed 002's two-way conversation, both ends socklab.

mod common;

use std::io::{BufRead, BufReader, Read, Write};

use common::{spawn, spawn_listening, Server};

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
