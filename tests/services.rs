//! Every service of DESIGN section 3 on a real socket, as a client sees it,
//! over TCP and Unix sockets, under the blocking models.

mod common;

use common::{digit_shape, Server};

/// Runs `check` against a server of `service` over TCP and over a Unix socket.
fn both(args: &[&str], check: impl Fn(&Server)) {
    check(&Server::tcp(args));
    check(&Server::unix(args));
}

#[test]
fn echo_returns_a_mebibyte_intact() {
    both(&["--service", "echo"], |server| {
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        // Written from another thread: the echo comes back while we still send.
        let got = server.connect().round_trip(data.clone());
        assert_eq!(got.len(), data.len());
        assert!(got == data, "echoed bytes differ");
    });
}

#[test]
fn time_replies_a_python_style_timestamp_then_closes() {
    both(&["--service", "time"], |server| {
        let mut conn = server.connect();
        conn.send(b"hello world");
        let reply = conn.recv_to_end();
        assert_eq!(digit_shape(&reply), "dddd-dd-dd dd:dd:dd.dddddd", "{reply:?}");
    });
}

#[test]
fn reverse_reverses_characters_then_closes() {
    both(&["--service", "reverse"], |server| {
        let mut conn = server.connect();
        conn.send("こんにちは, 세계".as_bytes());
        assert_eq!(conn.recv_to_end(), "계세 ,はちにんこ");
    });
}

#[test]
fn hello_greets_without_a_request_naming_the_model() {
    both(&["--service", "hello", "--model", "pool"], |server| {
        let mut conn = server.connect();
        assert_eq!(conn.recv_to_end(), "hello! this is the pool socklab server!!");
    });
}

#[test]
fn welcome_received_and_exit() {
    both(&["--service", "welcome"], |server| {
        let mut conn = server.connect();
        assert_eq!(conn.recv_some(), "Welcome!");
        conn.send(b"Michael");
        assert_eq!(conn.recv_some(), "Received Michael;");
        conn.send(b"Tracy");
        assert_eq!(conn.recv_some(), "Received Tracy;");
        conn.send(b"exit");
        assert_eq!(conn.recv_to_end(), "");
    });
}

#[test]
fn greet_says_hello_to_every_message() {
    both(&["--service", "greet", "--model", "iterative"], |server| {
        let mut conn = server.connect();
        for m in ["message1", "message2"] {
            conn.send(m.as_bytes());
            assert_eq!(conn.recv_some(), format!("Hello, {m}!"));
        }
    });
}

#[test]
fn line_framing_answers_per_line_and_refuses_overlong_lines() {
    let server = Server::tcp(&["--service", "greet", "--framing", "line", "--max-line", "16"]);
    let mut conn = server.connect();
    conn.send(b"a\r\nb\n");
    assert_eq!(conn.recv_exact(20), b"Hello, a!\nHello, b!\n");
    conn.send(&[b'x'; 100]);
    assert_eq!(conn.recv_to_end(), "ERR line too long\n");
}

#[test]
fn delay_holds_the_welcome_replies_but_not_the_greeting() {
    let server = Server::tcp(&["--service", "welcome", "--delay", "200ms"]);
    let mut conn = server.connect();
    let start = std::time::Instant::now();
    assert_eq!(conn.recv_some(), "Welcome!");
    conn.send(b"x");
    assert_eq!(conn.recv_some(), "Received x;");
    assert!(start.elapsed() >= std::time::Duration::from_millis(200));
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    let server = Server::tcp(&["--service", "echo", "--idle-timeout", "200ms"]);
    let mut conn = server.connect();
    let start = std::time::Instant::now();
    assert_eq!(conn.recv_to_end(), "");
    assert!(start.elapsed() >= std::time::Duration::from_millis(200));
}

#[test]
fn calc_answers_each_line_and_survives_errors() {
    both(&["--service", "calc"], |server| {
        let mut conn = server.connect();
        conn.send(b"1 + 2 * 3\n7 / 2\n");
        assert_eq!(conn.recv_exact(6), b"7\n3.5\n");
        conn.send(b"1 / 0\r\n(2 + 3) ^ 2\n");
        assert_eq!(conn.recv_exact(24), b"ERR division by zero\n25\n");
    });
}

/// `socklab send ADDR ARGS` with `input` on stdin: its stdout, once it succeeded.
fn send_with_stdin(addr: &str, args: &[&str], input: &[u8]) -> String {
    common::socklab_with_stdin(&[&["send", addr], args].concat(), input)
}

#[test]
fn send_reads_the_request_from_stdin() {
    let server = Server::tcp(&["--service", "reverse"]);
    assert_eq!(send_with_stdin(&server.addr, &[], b"hello"), "olleh\n");
}

#[test]
fn reverse_joins_a_character_split_across_reads() {
    // 6000 bytes of Korean: the 4096-byte read ends inside a character.
    let text = "안녕하세요".repeat(400);
    let reversed: String = text.chars().rev().collect();
    both(&["--service", "reverse"], |server| {
        assert_eq!(
            send_with_stdin(&server.addr, &[], text.as_bytes()),
            format!("{reversed}\n")
        );
    });
}

#[test]
fn calc_is_exact_at_any_size() {
    let server = Server::tcp(&["--service", "calc"]);
    let send = |args: &[&str]| {
        let mut all = vec!["send", server.addr.as_str()];
        all.extend_from_slice(args);
        common::stdout(&common::socklab(&all))
    };
    assert_eq!(send(&["2 ^ 100"]), "1267650600228229401496703205376\n");
    assert_eq!(send(&["2.0 ^ 70"]), "1.1805916207174113e+21\n");
    // A message that begins with '-' goes after '--'.
    assert_eq!(send(&["--", "-2 ^ 2"]), "-4\n");
    assert_eq!(
        send(&["9 ^ 9 ^ 9"]),
        "ERR integer too large (at most 4300 digits)\n"
    );
}
