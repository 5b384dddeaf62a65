//! The command line as a user meets it: output, errors and exit codes.

mod common;

use common::{fails_with, socklab, stderr, stdout, tcp_listener, Server};

/// A port on 127.0.0.1 that (almost certainly) refuses: bound, then closed.
fn closed_port() -> u16 {
    let (listener, _) = tcp_listener();
    listener.local_addr().unwrap().port()
}

#[test]
fn serve_announces_the_real_port() {
    let server = Server::tcp(&[]);
    assert!(server.addr.starts_with("tcp:127.0.0.1:"), "{}", server.addr);
    assert_ne!(server.port(), 0);
}

#[test]
fn serve_announces_every_listener() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("a.sock").display());
    let server = Server::start(&["--service", "greet"], &["tcp:127.0.0.1:0", &unix], None);
    assert_eq!(server.addrs.len(), 2);
    assert_eq!(server.addrs[1], unix);
    for addr in &server.addrs {
        let out = socklab(&["send", addr, "both"]);
        assert_eq!(stdout(&out), "Hello, both!\n");
    }
}

#[test]
fn send_prints_the_reply() {
    let server = Server::tcp(&["--service", "reverse"]);
    let out = socklab(&["send", &server.addr, "hello", "world"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "dlrow olleh\n");
}

#[test]
fn send_to_a_refused_port_is_an_error() {
    let err = fails_with(1, socklab(&["send", &format!(":{}", closed_port()), "x"]));
    assert!(
        err.starts_with("error: cannot connect to tcp:127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn address_in_use_is_an_error() {
    let (_taken, addr) = tcp_listener();
    let err = fails_with(1, socklab(&["serve", "--listen", &addr]));
    assert!(
        err.starts_with(&format!("error: cannot listen on {addr}")),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn a_live_unix_socket_is_in_use_and_a_stale_one_is_replaced() {
    let server = Server::unix(&[]);
    let err = fails_with(1, socklab(&["serve", "--listen", &server.addr]));
    assert!(err.contains("address in use"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let addr = format!("unix:{}", path.display());
    let server = Server::start(&["--service", "greet"], &[&addr], None);
    assert_eq!(stdout(&socklab(&["send", &server.addr, "x"])), "Hello, x!\n");
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    for (args, needle) in [
        (vec!["serve", "--model", "nonesuch"], "invalid value 'nonesuch'"),
        (
            vec!["serve", "--listen", "tcp:localhost:99999"],
            "not a port number",
        ),
        (vec!["serve", "--delay", "soon"], "is not a duration"),
        (vec!["serve", "--workers", "0"], "above 0"),
        (vec!["send", "bogus"], "expected HOST:PORT"),
        (vec!["bench", "tcp:[::1:80"], "']'"),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ] {
        let out = socklab(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn bench_json_has_the_documented_keys() {
    let server = Server::tcp(&["--service", "echo"]);
    let report = common::bench_json(
        &server.addr,
        &["--clients", "3", "--requests", "20", "--size", "64"],
    );
    for key in ["requests", "errors", "elapsed_s", "throughput_rps", "clients"] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(
            report["latency_us"].get(key).is_some(),
            "missing latency_us.{key}"
        );
    }
    assert_eq!(report["requests"], 60);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["clients"], 3);
}

#[test]
fn bench_verbose_prints_the_seeds_lines() {
    let server = Server::tcp(&["--service", "hello", "--model", "thread"]);
    let out = socklab(&["bench", &server.addr, "--clients", "2", "--verbose"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for n in 1..=2 {
        assert!(
            text.contains(&format!(
                "client {n}: received 'hello! this is the thread socklab server!!' in "
            )),
            "{text}"
        );
    }
}

#[test]
fn bench_against_nothing_fails_without_hanging() {
    let addr = format!(":{}", closed_port());
    let err = fails_with(1, socklab(&["bench", &addr, "--clients", "2", "--requests", "3"]));
    assert!(err.starts_with("error: no request succeeded (6 errors)"), "{err}");
}

#[test]
fn models_lists_one_line_each() {
    let out = socklab(&["models"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for model in ["iterative", "thread", "pool"] {
        assert!(text.lines().any(|l| l.starts_with(model)), "{text}");
    }
    // The designs UNP chapter 30 adds, each with its row in the book.
    for (model, row) in [
        ("prefork-flock", 3),
        ("prefork-mutex", 4),
        ("prefork-pass", 5),
        ("pool-queue", 8),
    ] {
        let line = text.lines().find(|l| l.starts_with(&format!("{model} ")));
        let line = line.unwrap_or_else(|| panic!("no {model} in {text}"));
        assert!(line.contains(&format!("(UNP row {row})")), "{line}");
        assert!(
            line.ends_with(&format!("(src/model/{}.rs)", model.replace('-', "_"))),
            "{line}"
        );
    }
}

/// Runs `socklab ARGS` to completion, killing it if it has not ended within
/// `limit`: a hang fails the test instead of stalling it.
fn bounded(args: &[&str], limit: std::time::Duration) -> std::process::Output {
    let child = std::process::Command::new(common::BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run socklab");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for socklab"),
        Err(_) => {
            // SAFETY: a plain system call on integers; the child is not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("socklab {args:?} still running after {limit:?}");
        }
    }
}

#[test]
fn no_argument_crashes_or_hangs() {
    let refused = format!(":{}", closed_port());
    let bench = |extra: &[&'static str]| {
        let mut args = vec!["bench".to_string(), refused.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let table: Vec<Vec<String>> = vec![
        // Durations past the bound (a day), and zeros where zero means nothing.
        owned(&["serve", "--model", "epoll", "--delay", "300000000000years"]),
        owned(&["serve", "--delay", "25h"]),
        owned(&["serve", "--idle-timeout", "2days"]),
        owned(&["serve", "--idle-timeout", "0s"]),
        owned(&["serve", "--grace", "1000000h"]),
        owned(&["send", ":1", "x", "--timeout", "100years"]),
        owned(&["send", ":1", "x", "--timeout", "0s"]),
        owned(&["relay", "tcp-listen:0", ":1", "--timeout", "10years"]),
        owned(&["relay", "tcp-listen:0", ":1", "--idle-timeout", "0s"]),
        bench(&["--duration", "1000days"]),
        bench(&["--duration", "0s"]),
        bench(&["--timeout", "0s"]),
        owned(&["lab", "--delay", "2days"]),
        owned(&["lab", "--duration", "0s"]),
        // Huge counts and sizes.
        owned(&["serve", "--workers", "1000000"]),
        owned(&["serve", "--max-conns", "18446744073709551615"]),
        owned(&["serve", "--max-line", "100000000000"]),
        owned(&["send", ":1", "x", "--retries", "4000000000"]),
        owned(&["relay", "tcp-listen:0", ":1", "--fork", "--max-children", "0"]),
        bench(&["--clients", "1000000000"]),
        bench(&["--clients", "0"]),
        bench(&["--size", "100000000000"]),
        bench(&["--requests", "100000000000"]),
        bench(&["--threads", "100000"]),
        bench(&["--clients", "100000", "--size", "60000000"]),
        owned(&["lab", "--clients", "1000000"]),
        owned(&["lab", "--size", "1000000000000"]),
        owned(&["lab", "--idle-connections", "10000000"]),
        // Rates that are not a rate.
        bench(&["--rate", "inf"]),
        bench(&["--rate", "NaN"]),
        bench(&["--rate", "0"]),
        bench(&["--rate", "-5"]),
        bench(&["--rate", "1e300"]),
        // Modes that are not a mode.
        owned(&["serve", "--mode", "999"]),
        owned(&["serve", "--mode", "rwx"]),
    ];
    for args in &table {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bounded(&args, std::time::Duration::from_secs(10));
        let err = stderr(&out);
        match out.status.code() {
            Some(2) => {}
            Some(1) => assert!(err.starts_with("error: "), "{args:?}: {err}"),
            other => panic!("{args:?}: exit {other:?} (a signal means a crash): {err}"),
        }
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn the_bounds_themselves_are_accepted() {
    // A day exactly and the fastest rate: parsed, then refused only for the
    // closed port (exit 1), not as a usage error.
    let refused = format!(":{}", closed_port());
    let out = socklab(&["bench", &refused, "--timeout", "24h", "--rate", "10000000"]);
    let err = fails_with(1, out);
    assert!(err.starts_with("error: no request succeeded"), "{err}");
}

#[test]
fn unix_socket_files_are_owner_only_unless_mode_says_otherwise() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // umask 000 in the server: whatever it creates shows its own choice.
    let no_umask = |c: &mut std::process::Command| {
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
    };
    for (mode_args, expected) in [(vec![], 0o600), (vec!["--mode", "660"], 0o660)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let addr = format!("unix:{}", path.display());
        let server = Server::start_with(&mode_args, &[&addr], None, no_umask);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, expected, "{mode_args:?}: {mode:o}");
        assert_eq!(stdout(&socklab(&["send", &server.addr, "x"])), "x\n");
    }
}

#[test]
fn the_contacts_database_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("book.db");
    let no_umask = |c: &mut std::process::Command| {
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
    };
    let server = Server::start_with(
        &["--service", "contacts", "--db", db.to_str().unwrap()],
        &["tcp:127.0.0.1:0"],
        None,
        no_umask,
    );
    assert_eq!(stdout(&socklab(&["send", &server.addr, "ADD ann 1\n"])), "OK\n");
    for file in ["book.db", "book.db-wal", "book.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}: {mode:o}");
    }
}

/// A socklab that is killed when the test ends, whatever happens.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    reply
}

#[test]
fn relay_takes_socats_fork_option_as_fork() {
    let server = Server::tcp(&["--service", "echo"]);
    let target = format!("TCP:127.0.0.1:{}", server.port());
    let (child, addr, _stderr) = common::spawn_listening(&["relay", "TCP-LISTEN:0,fork,reuseaddr", &target]);
    let _relay = Running(child);
    let addr = addr.trim_start_matches("tcp:").to_string();
    // Several peers, one after another and at once: it keeps listening.
    assert_eq!(exchange(&addr, b"first"), b"first");
    let peers: Vec<_> = (0..3)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || exchange(&addr, format!("peer {i}").as_bytes()))
        })
        .collect();
    for (i, p) in peers.into_iter().enumerate() {
        assert_eq!(p.join().unwrap(), format!("peer {i}").as_bytes());
    }
}

#[test]
fn dual_stack_listeners_serve_ipv4_clients() {
    let server = Server::start(&["--service", "echo"], &["tcp:[::]:0"], None);
    assert!(server.addr.starts_with("tcp:[::]:"), "{}", server.addr);
    let v4 = format!("127.0.0.1:{}", server.port());
    assert_eq!(exchange(&v4, b"over IPv4"), b"over IPv4");
    let v6 = format!("[::1]:{}", server.port());
    assert_eq!(exchange(&v6, b"over IPv6"), b"over IPv6");

    // relay's listening side is bound by the same code.
    let target = format!("tcp:127.0.0.1:{}", server.port());
    let (child, addr, _stderr) = common::spawn_listening(&["relay", "tcp-listen:[::]:0", &target]);
    let _relay = Running(child);
    let port = addr.rsplit(':').next().unwrap();
    assert_eq!(exchange(&format!("127.0.0.1:{port}"), b"relayed"), b"relayed");

    // --ipv6-only refuses IPv4.
    let v6_only = Server::start(&["--service", "echo", "--ipv6-only"], &["tcp:[::]:0"], None);
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{}", v6_only.port())).is_err());
}

#[test]
fn socat_spellings_that_do_not_apply_say_so() {
    let cases = [
        (
            vec!["relay", "TCP-LISTEN:0,crnl", "-"],
            "socat option 'crnl' is not supported here",
        ),
        (
            vec!["relay", "TCP-LISTEN:0,ipv6only=1", "-"],
            "use serve --ipv6-only or listen --ipv6-only",
        ),
        (vec!["relay", "OPEN:/tmp/x", "-"], "unknown address type OPEN"),
        (
            vec!["relay", "-", "tcp:127.0.0.1:1,fork"],
            "needs a listening address",
        ),
        (vec!["send", "tcp-listen:1,fork", "x"], "use relay --fork"),
    ];
    for (args, want) in cases {
        let err = fails_with(2, socklab(&args));
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A switch the model would ignore is refused before anything is bound:
/// `select --workers 4` would run one loop and be measured as four.
#[test]
fn a_switch_the_model_has_no_use_for_is_a_usage_error() {
    for model in ["iterative", "thread", "fork", "busy", "select", "poll"] {
        let err = fails_with(2, socklab(&["serve", "--model", model, "--workers", "4"]));
        assert!(
            err.contains(&format!("the {model} model runs no workers")),
            "{err}"
        );
        assert!(err.contains("Usage: socklab serve"), "{err}");
    }
    let udp = [
        "serve",
        "--model",
        "epoll",
        "--workers",
        "2",
        "--listen",
        "udp:127.0.0.1:0",
    ];
    let err = fails_with(2, socklab(&udp));
    assert!(
        err.contains("the epoll model runs no workers over UDP; these do: pool, async"),
        "{err}"
    );
    let err = fails_with(2, socklab(&["serve", "--model", "epoll", "--uring", "sqpoll"]));
    assert!(err.contains("--uring is for --model uring, not epoll"), "{err}");
    // One worker is what these models run: saying so is not an error.
    let server = Server::tcp(&["--model", "select", "--workers", "1"]);
    assert_eq!(server.ask(b"one\n"), "one\n");
}

#[test]
fn a_message_beginning_with_a_dash_needs_double_dash() {
    let err = fails_with(2, socklab(&["send", ":7", "-2 ^ 2"]));
    assert!(err.contains("use '-- -2"), "{err}");
}

#[test]
fn send_refuses_stdin_past_max_line() {
    use std::io::Write;
    let server = Server::tcp(&["--service", "echo"]);
    let mut child = std::process::Command::new(common::BIN)
        .args(["send", &server.addr, "--max-line", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello world").unwrap();
    let err = fails_with(1, child.wait_with_output().unwrap());
    assert_eq!(
        err,
        "error: stdin is longer than --max-line (4 bytes); send a longer request with --max-line BYTES\n"
    );
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    let bash = stdout(&socklab(&["completions", "bash"]));
    assert!(
        bash.contains("_socklab()") && bash.contains("--new-connection"),
        "{bash}"
    );
    let man = stdout(&socklab(&["completions", "man"]));
    assert!(man.contains(".TH socklab 1"), "{man}");
    fails_with(2, socklab(&["completions", "tcsh"]));
}
