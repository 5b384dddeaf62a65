//! Process: what a server check started does to its own machine, from
//! /proc. After the peers are gone its descriptors, threads and children
//! are back where they were; a peer that never reads does not grow it
//! without bound; and SIGTERM stops it, within 5 s, taking its children
//! along and freeing its port.

use std::time::{Duration, Instant};

use super::peers::push_never_reading;
use super::server::Footprint;
use super::{Case, Ctx, Finding};
use crate::addr::Addr;

/// The stop, which ends the server (the runner knows it by this id).
pub const STOP: &str = "process.stop";

pub const CASES: &[Case] = &[
    Case {
        id: "process.baseline",
        run: baseline,
    },
    Case {
        id: "process.memory",
        run: memory,
    },
    Case { id: STOP, run: stop },
];

fn needs_server(ctx: &Ctx) -> Option<Finding> {
    ctx.pid()
        .is_none()
        .then(|| Finding::skip("needs --server: check watches only a server it started"))
}

/// `12 descriptors, 3 threads, 0 children`.
fn show(f: &Footprint) -> String {
    format!(
        "{} descriptors, {} threads, {} children",
        f.descriptors, f.threads, f.children
    )
}

/// Descriptors, threads and children back to (at most) the baseline once
/// every peer has gone: a server that forgets to close leaks descriptors.
fn baseline(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_server(ctx) {
        return skip;
    }
    let Some(base) = ctx.baseline() else {
        return Finding::skip("no baseline: the server's /proc could not be read");
    };
    let settle = Duration::from_secs(if ctx.quick { 2 } else { 5 });
    let start = Instant::now();
    let mut now = ctx.footprint();
    loop {
        match now {
            None => return Finding::fail("the server is gone"),
            Some(f)
                if f.descriptors <= base.descriptors
                    && f.threads <= base.threads
                    && f.children <= base.children =>
            {
                return Finding::pass(format!(
                    "{} after every peer left (at start: {})",
                    show(&f),
                    show(&base)
                ));
            }
            Some(f) if start.elapsed() >= settle => {
                return Finding::fail(format!(
                    "{} {} s after every peer left (at start: {})",
                    show(&f),
                    settle.as_secs(),
                    show(&base)
                ));
            }
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(50));
        now = ctx.footprint();
    }
}

/// Growth no server is blamed for: the buffers a correct server holds for
/// one connection, io_uring's buffer rings, an allocator's arenas.
const GROWTH_FLOOR_KB: i64 = 4 * 1024;

/// Memory bounded while a never-reader pushes requests: a server that
/// stops reading (backpressure) is bounded by construction, whatever it
/// holds; one that keeps reading must not keep what it cannot send. Its
/// growth above half of what it took, and above [`GROWTH_FLOOR_KB`], is
/// buffering without bound.
fn memory(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_server(ctx) {
        return skip;
    }
    if !ctx.is_stream() || !ctx.dialect.answers_repeatedly() {
        return Finding::skip(format!(
            "{} over {}: no replies to pile up",
            ctx.dialect.service,
            if ctx.is_stream() { "a stream" } else { "UDP" }
        ));
    }
    // Longer than the neighbour case pushes: a server that reads ahead
    // into buffers of its own (io_uring's buffer rings) stops late.
    let within = Duration::from_secs(if ctx.quick { 2 } else { 10 });
    let pushed = match push_never_reading(ctx, within) {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    let line = pushed.describe();
    let growth = pushed.growth_kb.unwrap_or(0);
    let took_kb = pushed.sent as i64 >> 10;
    let stalled = pushed.stalled;
    drop(pushed.peer);
    // The stop that follows meets an idle server.
    let _ = ctx.recovered();
    if !stalled && growth > GROWTH_FLOOR_KB && growth > took_kb / 2 {
        Finding::fail(format!(
            "{line}: it keeps what it cannot send, without bound (expected it to stop reading)"
        ))
    } else {
        Finding::pass(line)
    }
}

/// SIGTERM: it exits within [`STOP_GRACE`], no process of its group is
/// left, and its address can be bound again.
fn stop(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_server(ctx) {
        return skip;
    }
    let Some(stopped) = ctx.with_server(|s| s.stop()) else {
        return Finding::skip("no server");
    };
    let freed = free_again(&ctx.addr);
    let mut line = stopped.describe();
    match &freed {
        Ok(()) => line.push_str(&format!(", {} free again", ctx.addr)),
        Err(e) => line.push_str(&format!(", but {e}")),
    }
    let ok =
        stopped.status.is_some() && stopped.left_behind.is_empty() && freed.is_ok() && !stopped.already_gone;
    Finding::pass_if(ok, line)
}

/// Whether the server's address is free: bindable (TCP, UDP) or no
/// longer answered (Unix).
fn free_again(addr: &Addr) -> Result<(), String> {
    let busy = |e: std::io::Error| {
        let why = if e.kind() == std::io::ErrorKind::AddrInUse {
            ": its connections linger (TIME_WAIT) on a socket without SO_REUSEADDR, so it cannot restart at once"
        } else {
            ""
        };
        format!("{addr} cannot be bound again ({e}){why}")
    };
    match addr {
        Addr::Tcp(hp) => std::net::TcpListener::bind((hp.host.as_str(), hp.port))
            .map(drop)
            .map_err(busy),
        Addr::Udp(hp) => std::net::UdpSocket::bind((hp.host.as_str(), hp.port))
            .map(drop)
            .map_err(busy),
        Addr::Unix(path) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(format!("{addr} still answers")),
            Err(_) => Ok(()),
        },
    }
}
