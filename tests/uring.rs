//! The uring model under every `--uring` switch: each technique on its own
//! and all of them together pass the shared model tests (services, 1 MiB
//! echoed on 16 connections at once, 1,000 connections, a peer that never reads, SIGTERM mid-delay); a
//! set the kernel or the grammar refuses says so.

mod common;

use std::process::Output;
use std::time::Duration;

use common::Server;

/// Each technique alone, then all of them.
const SETS: [&str; 8] = [
    "none",
    "recv-multishot",
    "recv-multishot,bundle",
    "fixed-files",
    "sqpoll",
    "send-zc",
    "batch=16",
    "recv-multishot,bundle,fixed-files,sqpoll,send-zc,batch=16",
];

fn args<'a>(set: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--model", "uring", "--uring", set];
    v.extend_from_slice(rest);
    v
}

/// `socklab serve` of the uring model with `set`, on a port of its choosing.
fn serve(set: &str) -> Vec<&str> {
    [&["serve"][..], &args(set, &["--listen", "tcp:127.0.0.1:0"])].concat()
}

#[test]
fn services_over_tcp_and_unix() {
    for set in SETS {
        let a = args(set, &["--service", "welcome"]);
        for server in [Server::tcp(&a), Server::unix(&a)] {
            let mut conn = server.connect();
            assert_eq!(conn.recv_some(), "Welcome!", "{set}");
            conn.send(b"x");
            assert_eq!(conn.recv_some(), "Received x;", "{set}");
            conn.send(b"exit");
            assert_eq!(conn.recv_to_end(), "", "{set}");
        }
        let server = Server::tcp(&args(set, &["--service", "calc"]));
        let mut conn = server.connect();
        conn.send(b"2 ^ 10\n1 / 0\n");
        assert_eq!(conn.recv_exact(26), b"1024\nERR division by zero\n", "{set}");
    }
}

/// Each set, over TCP and a Unix socket, 16 connections at once: with
/// recv-multishot each connection's receive is cancelled and armed again
/// mid-stream, and on a Unix socket a multishot receive so re-armed could
/// miss the peer's close (a connection in seven, under this load).
#[test]
fn a_mebibyte_on_each_of_sixteen_connections_echoes_intact() {
    for set in SETS {
        for server in [
            Server::unix(&args(set, &["--service", "echo"])),
            Server::tcp(&args(set, &["--service", "echo"])),
        ] {
            common::echo_a_mebibyte_on_each(&server, 16, &format!("{set} on {}", server.addr));
        }
    }
}

#[test]
fn a_thousand_concurrent_connections() {
    for set in SETS {
        let server = Server::tcp(&args(set, &["--service", "echo"]));
        common::hold_and_echo(&server.addr, 1000);
    }
}

/// The server's CPU time so far, in seconds, from /proc.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat(5), 11 and 12 after comm.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn an_exhausted_buffer_ring_makes_connections_wait_not_the_server_spin() {
    for set in ["recv-multishot", "recv-multishot,bundle"] {
        let server = Server::tcp(&args(set, &["--service", "echo"]));
        // Three times the ring's 1024 buffers, all sending at once.
        common::hold_and_echo(&server.addr, 3000);
        // Idle now: a loop retrying ENOBUFS would burn a core here. A
        // bound no waiting server comes near, whatever the machine's load.
        let before = cpu_seconds(server.pid());
        std::thread::sleep(Duration::from_secs(1));
        let spent = cpu_seconds(server.pid()) - before;
        assert!(spent < 0.3, "{set}: {spent} s of CPU in 1 s of idling");
        assert_eq!(server.ask(b"still"), "still", "{set}");
    }
}

#[test]
fn a_peer_that_never_reads_is_not_read_from_and_slows_nobody() {
    for set in SETS {
        let server = Server::tcp(&args(set, &["--service", "echo"]));
        let mut flood = server.connect();
        let sent = flood
            .flood(&[b'f'; 1 << 16], 256 << 20)
            .unwrap_or_else(|e| panic!("{set}: {e}"));
        assert!(
            sent < 64 << 20,
            "{set}: the server kept reading {sent} bytes it could not answer"
        );
        assert_eq!(server.ask(b"hello"), "hello", "{set}");
    }
}

#[test]
fn sigterm_lets_delayed_replies_finish() {
    for set in SETS {
        let server = Server::tcp(&args(set, &["--service", "welcome", "--delay", "300ms"]));
        let mut conn = server.connect();
        assert_eq!(conn.recv_some(), "Welcome!", "{set}");
        conn.deliver(b"x");
        let status = server.terminate();
        assert!(status.success(), "{set}: {status}");
        assert_eq!(conn.recv_to_end(), "Received x;", "{set}");
    }
}

#[test]
fn an_invalid_set_is_a_usage_error_naming_it() {
    for (set, says) in [
        ("bundle", "bundle needs recv-multishot"),
        ("turbo", "unknown io_uring feature 'turbo'"),
        ("batch=0", "batch takes 1 to"),
    ] {
        let out = common::socklab(&serve(set));
        let err = common::fails_with(2, out);
        assert!(err.contains(says), "{set}: {err}");
    }
}

#[test]
fn models_and_help_name_the_switches() {
    let models = common::stdout(&common::socklab(&["models"]));
    let help = common::stdout(&common::socklab(&["serve", "--help"]));
    for name in [
        "recv-multishot",
        "bundle",
        "fixed-files",
        "sqpoll",
        "send-zc",
        "batch=",
    ] {
        assert!(models.contains(name), "socklab models lacks {name}:\n{models}");
        assert!(help.contains(name), "serve --help lacks {name}:\n{help}");
    }
}

/// Runs `socklab ARGS` with `io_uring_register` refused (EINVAL), as on
/// a kernel that knows none of the registrations asked for.
fn without_io_uring_register(args: &[&str]) -> Output {
    // io_uring_register is 427 on every architecture with the generic
    // table (x86_64, aarch64, riscv64).
    common::without_syscall(args, 427, libc::EINVAL)
}

#[test]
fn a_kernel_that_refuses_a_technique_gets_an_error_naming_it() {
    for (set, names) in [
        ("recv-multishot", "IORING_REGISTER_PBUF_RING"),
        ("fixed-files", "IORING_REGISTER_FILES2"),
        ("send-zc", "send-zc"),
    ] {
        let out = without_io_uring_register(&serve(set));
        assert_eq!(out.status.code(), Some(1), "{set}");
        let err = common::stderr(&out);
        assert!(
            err.starts_with(&format!("error: io_uring feature {}", set)) && err.contains(names),
            "{set}: {err}"
        );
        assert!(
            common::stdout(&out).is_empty(),
            "{set}: announced before refusing"
        );
    }
}

#[test]
fn the_ladder_climbs_every_step_at_every_size_next_to_epoll() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (j, md, html) = (path("lab.json"), path("lab.md"), path("lab.html"));
    let out = common::socklab(&[
        "lab",
        "--models",
        "uring",
        "--scenarios",
        "uring-ladder",
        "--duration",
        "200ms",
        "--clients",
        "4",
        "--json",
        &j,
        "--markdown",
        &md,
        "--html",
        &html,
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    use socklab::lab::scenario::LadderFigures;
    let report = socklab::lab::export::json::parse(&std::fs::read_to_string(&j).unwrap()).unwrap();
    let rows: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "uring-ladder")
        .collect();
    // 3 sizes x (epoll + 7 uring steps).
    assert_eq!(rows.len(), 24);
    for size in [64, 512, 16384] {
        let at: Vec<_> = rows.iter().filter(|r| r.message_bytes == Some(size)).collect();
        assert_eq!(at[0].model, "epoll");
        let steps: Vec<String> = at[1..]
            .iter()
            .filter_map(|r| r.figures::<LadderFigures>().step)
            .collect();
        assert_eq!(
            steps,
            [
                "none",
                "+recv-multishot",
                "+bundle",
                "+fixed-files",
                "+batch=16",
                "+send-zc",
                "+sqpoll"
            ]
        );
        for r in at {
            assert!(
                r.error.is_some() || r.throughput_rps.is_some_and(|t| t > 0.0),
                "{} {:?} at {size}: no figure and no reason",
                r.model,
                r.figures::<LadderFigures>().step
            );
        }
    }
    let markdown = std::fs::read_to_string(&md).unwrap();
    assert!(markdown.contains("## uring-ladder"), "{markdown}");
    assert!(markdown.contains("- +recv-multishot: 64 B "), "{markdown}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("The io_uring ladder") && page.contains("<svg"),
        "the chart"
    );
}

/// Stopped by SIGTERM, a uring server leaves its port free the moment it
/// exits, under every switch: the armed accept is cancelled and reaped
/// first, not left for the kernel to clean up after the exit (a server
/// restarted at once on the port then failed with EADDRINUSE).
#[test]
fn the_port_is_free_the_moment_the_server_exits() {
    for set in SETS {
        let server = Server::tcp(&args(set, &["--service", "echo"]));
        assert_eq!(server.ask(b"ping\n"), "ping\n", "{set}");
        let port = server.port();
        assert!(server.terminate().success(), "{set}");
        let again = std::net::TcpListener::bind(("127.0.0.1", port));
        assert!(again.is_ok(), "{set}: port {port} still taken: {again:?}");
    }
}
