//! `socklab relay`: socat's life cycle between real sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command};
use std::time::Duration;

use common::{spawn, spawn_listening, tcp_listener, Conn, Server};

/// Starts `socklab relay ARGS` and returns it with the address it announced
/// on stderr (its first address listens).
fn relay(args: &[&str]) -> (Child, String) {
    let mut all = vec!["relay"];
    all.extend_from_slice(args);
    let (child, addr, mut stderr) = spawn_listening(&all);
    // Keep reading stderr so the relay never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, addr)
}

/// Waits for the relay to exit by itself; a hang fails the test.
fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait().unwrap()));
    rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        panic!("relay did not exit within 10 s")
    })
}

#[test]
fn tcp_listen_to_an_echo_server_and_back() {
    let echo = Server::tcp(&["--service", "echo"]);
    let (child, addr) = relay(&["tcp-listen:0", &echo.addr]);
    let mut conn = Conn::to(&addr);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    conn.send(&data);
    assert_eq!(conn.recv_exact(data.len()), data);
    conn.shutdown_write();
    assert_eq!(conn.recv_to_end(), "", "the echo server's close comes through");
    assert!(wait_exit(child).success());
}

#[test]
fn unix_listen_to_tcp_with_hexdump() {
    let greet = Server::tcp(&["--service", "greet"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sock");
    let listen = format!("unix-listen:{}", path.display());
    let (child, _, mut stderr) = spawn_listening(&["relay", &listen, &greet.addr, "--hexdump"]);
    let mut conn = Conn::to(&format!("unix:{}", path.display()));
    conn.send(b"relay");
    assert_eq!(conn.recv_some(), "Hello, relay!");
    conn.shutdown_write();
    conn.recv_to_end();
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    assert!(wait_exit(child).success());
    assert!(log.contains("> 5 bytes"), "{log}");
    assert!(log.contains("72 65 6c 61 79"), "{log}");
    assert!(log.contains("|Hello, relay!|"), "{log}");
}

#[test]
fn stdio_to_a_server() {
    let server = Server::tcp(&["--service", "reverse"]);
    let mut child = spawn(&["relay", "-", &server.addr]);
    child.stdin.take().unwrap().write_all(b"stressed").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"desserts");
}

#[test]
fn fork_relays_peers_concurrently_and_keeps_listening() {
    let echo = Server::tcp(&["--service", "echo"]);
    let (mut child, addr) = relay(&["tcp-listen:0", &echo.addr, "--fork"]);
    let mut first = Conn::to(&addr);
    let mut second = Conn::to(&addr);
    second.send(b"two");
    first.send(b"one");
    assert_eq!(first.recv_some(), "one");
    assert_eq!(second.recv_some(), "two");
    drop(first);
    drop(second);
    let mut third = Conn::to(&addr);
    third.send(b"three");
    assert_eq!(third.recv_some(), "three");
    assert_eq!(child.try_wait().unwrap(), None, "--fork keeps listening");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn after_one_side_ends_the_other_gets_the_timeout_then_the_relay_closes() {
    // B never closes and never sends: only --timeout ends the relay.
    let (silent, b) = tcp_listener();
    let (child, addr) = relay(&["tcp-listen:0", &b, "--timeout", "200ms"]);
    let conn = Conn::to(&addr);
    let (_held, _) = silent.accept().unwrap();
    conn.shutdown_write();
    assert!(wait_exit(child).success());
}

#[test]
fn verbose_says_when_the_timeout_cuts_a_direction_still_open() {
    let (silent, b) = tcp_listener();
    let (child, addr, stderr) =
        spawn_listening(&["relay", "tcp-listen:0", &b, "--timeout", "200ms", "--verbose"]);
    let conn = Conn::to(&addr);
    let (_held, _) = silent.accept().unwrap();
    conn.shutdown_write();
    assert!(wait_exit(child).success());
    let said: String = stderr
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        said.contains("--timeout 200ms ended the other direction"),
        "{said}"
    );
}

#[test]
fn unidirectional_copies_one_way_only() {
    let (target, target_addr) = tcp_listener();
    let (child, addr) = relay(&["tcp-listen:0", &target_addr, "-u"]);
    let mut conn = Conn::to(&addr);
    let (mut peer, _) = target.accept().unwrap();
    conn.send(b"one way");
    let mut got = [0u8; 7];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"one way");
    peer.write_all(b"ignored").unwrap();
    conn.shutdown_write();
    assert_eq!(conn.recv_to_end(), "", "nothing comes back under -u");
    assert!(wait_exit(child).success());
}

#[test]
fn stdio_to_a_udp_server_and_back() {
    let server = Server::udp(&["--service", "greet"]);
    let mut child = spawn(&["relay", "-", &server.addr, "--timeout", "300ms"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"datagram").unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut reply = [0u8; 16];
    stdout.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"Hello, datagram!");
    drop(stdin);
    assert!(wait_exit(child).success());
}

/// A relayed round trip: `text` out through the relay to echo, and back.
fn echoes(conn: &mut Conn, text: &str) {
    conn.send(text.as_bytes());
    assert_eq!(conn.recv_some(), text);
}

/// Whether nothing arrives on `conn` within `wait` (the connection stays
/// usable). Only ever true by waiting; it cannot fail spuriously when the
/// machine is slow, only miss a bug then.
fn silent_for(conn: &Conn, wait: Duration) -> bool {
    let Conn::Tcp(s) = conn else {
        panic!("a TCP connection")
    };
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16];
    let silent = matches!((&*s).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    silent
}

#[test]
fn fork_relays_at_most_max_children_pairs_at_once() {
    let echo = Server::tcp(&["--service", "echo"]);
    let (mut child, addr) = relay(&["tcp-listen:0", &echo.addr, "--fork", "--max-children", "2"]);
    let mut first = Conn::to(&addr);
    let mut second = Conn::to(&addr);
    echoes(&mut first, "one");
    echoes(&mut second, "two");
    // The third waits in the backlog while two pairs are relayed...
    let mut third = Conn::to(&addr);
    third.send(b"three");
    assert!(
        silent_for(&third, Duration::from_millis(300)),
        "a third pair was relayed"
    );
    // ...and is relayed once one of them closes.
    drop(first);
    assert_eq!(third.recv_some(), "three");
    echoes(&mut second, "still two");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The lowest descriptor number `pid` does not use: with its limit lowered
/// to it, the process can open nothing more.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

fn set_fd_limit(pid: u32, soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads and writes the one rlimit passed, for our own child.
    unsafe {
        assert_eq!(
            libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit),
            0
        );
        limit.rlim_cur = soft;
        assert_eq!(
            libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()),
            0
        );
    }
}

#[test]
fn fork_out_of_descriptors_pauses_accepting_and_keeps_every_pair() {
    let echo = Server::tcp(&["--service", "echo"]);
    let (mut child, addr, mut stderr) = spawn_listening(&["relay", "tcp-listen:0", &echo.addr, "--fork"]);
    let mut first = Conn::to(&addr);
    let mut second = Conn::to(&addr);
    echoes(&mut first, "one");
    echoes(&mut second, "two");
    // Not one descriptor more: the next accept fails with EMFILE.
    set_fd_limit(child.id(), lowest_free_fd(child.id()));
    let mut third = Conn::to(&addr);
    third.send(b"three");
    assert!(
        silent_for(&third, Duration::from_millis(300)),
        "accepted past the limit?"
    );
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "the relay exited out of descriptors"
    );
    echoes(&mut first, "one still");
    // Closing pairs frees descriptors: the waiting peer is relayed.
    drop(first);
    drop(second);
    assert_eq!(third.recv_some(), "three");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    let paused = log.matches("not accepting until a pair closes").count();
    assert_eq!(paused, 1, "one line for the episode, however many tries:\n{log}");
}

fn sigterm(child: &Child) {
    // SAFETY: a plain system call on integers; the pid is our child's, not
    // yet waited for, so not reused.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

#[test]
fn fork_stops_on_sigterm_as_serve_does_and_exits_0() {
    // At --max-children, so the signal finds the accept loop waiting for a
    // pair to close, not in poll(2): it must wake there too.
    let echo = Server::tcp(&["--service", "echo"]);
    let (child, addr) = relay(&["tcp-listen:0", &echo.addr, "--fork", "--max-children", "1"]);
    let mut pair = Conn::to(&addr);
    echoes(&mut pair, "before");
    sigterm(&child);
    // No new peers: the listener is closed...
    let hp = addr.strip_prefix("tcp:").unwrap().to_string();
    common::eventually(Duration::from_secs(5), "the relay still accepts", || {
        std::net::TcpStream::connect(&hp).is_err()
    });
    // ...while the pair it relays goes on within the grace period...
    echoes(&mut pair, "after the signal");
    // ...and once it closes, the relay exits 0, as serve does.
    drop(pair);
    assert_eq!(wait_exit(child).code(), Some(0));
}

#[test]
fn fork_on_a_unix_socket_removes_it_on_sigterm() {
    let echo = Server::tcp(&["--service", "echo"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sock");
    let listen = format!("unix-listen:{}", path.display());
    let (child, _) = relay(&[&listen, &echo.addr, "--fork"]);
    assert!(path.exists());
    sigterm(&child);
    assert_eq!(wait_exit(child).code(), Some(0), "exit 0, not 143");
    assert!(!path.exists(), "the socket file is left behind");
}
