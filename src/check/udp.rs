//! UDP: each datagram is one request and gets one reply, to its sender
//! (DESIGN section 3). And the datagrams a stream server never sees: an
//! empty one, one of 60 KB (larger than the seeds' 4096-byte `recvfrom`),
//! junk, and a burst faster than the server answers.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::dialect::Expect;
use super::wire::{show, Junk};
use super::{ms, Case, Ctx, Finding};
use crate::addr::Addr;

pub const CASES: &[Case] = &[
    Case {
        id: "udp.reply",
        run: reply,
    },
    Case {
        id: "udp.empty",
        run: empty,
    },
    Case {
        id: "udp.large",
        run: large,
    },
    Case {
        id: "udp.junk",
        run: junk,
    },
    Case {
        id: "udp.burst",
        run: burst,
    },
];

/// The largest datagram read back: more than any UDP payload.
const MAX_DATAGRAM: usize = 65536;

/// The server's address and the request a datagram carries (the probe's,
/// without a line's newline: the datagram ends the line), or why the case
/// does not apply.
fn target(ctx: &Ctx) -> Result<(SocketAddr, Vec<u8>, Expect), Finding> {
    let Addr::Udp(hp) = &ctx.addr else {
        return Err(Finding::skip("a stream server: these are for udp: targets"));
    };
    if !ctx.dialect.service.over_datagrams() {
        return Err(Finding::skip(format!(
            "{} needs a connection",
            ctx.dialect.service
        )));
    }
    let Some(probe) = &ctx.dialect.probe else {
        return Err(Finding::skip(format!("{} has no request", ctx.dialect.service)));
    };
    let server = hp
        .resolve()
        .map_err(|e| Finding::fail(format!("resolve {hp}: {e}")))?[0];
    let request = probe
        .request
        .strip_suffix(b"\n")
        .unwrap_or(&probe.request)
        .to_vec();
    Ok((server, request, probe.reply.clone()))
}

/// The target, its request and what answers it, and a socket to send from.
fn prepare(ctx: &Ctx) -> Result<(SocketAddr, Vec<u8>, Expect, UdpSocket), Finding> {
    let (server, request, expect) = target(ctx)?;
    Ok((server, request, expect, socket(server)?))
}

/// A case's verdict from what it saw and whether a request after it was
/// served (`then_served`).
fn served_after(seen: &str, after: Result<String, String>) -> Finding {
    match after {
        Ok(after) => Finding::pass(format!("{seen}; {after}")),
        Err(after) => Finding::fail(format!("{seen}; {after}")),
    }
}

fn socket(server: SocketAddr) -> Result<UdpSocket, Finding> {
    crate::net::udp_socket_for(server).map_err(|e| Finding::fail(format!("UDP socket: {e}")))
}

/// The next datagram within `wait`, from whom; `None` on silence.
fn receive(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let _ = socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// Whether a reply datagram is the expected reply (a line's newline is
/// optional: the datagram ends it).
fn matches(expect: &Expect, reply: &[u8]) -> bool {
    match expect {
        Expect::Line(_) | Expect::LineStarting(_) if !reply.ends_with(b"\n") => {
            expect.matches(&[reply, b"\n"].concat())
        }
        _ => expect.matches(reply),
    }
}

/// A fresh socket's request is answered: the phrase cases end with. It
/// may wait behind `queued` datagrams sent just before, each taking the
/// server its round trip.
fn then_served(
    ctx: &Ctx,
    server: SocketAddr,
    request: &[u8],
    expect: &Expect,
    queued: u32,
) -> Result<String, String> {
    let socket = UdpSocket::bind(if server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
        .map_err(|e| format!("UDP socket: {e}"))?;
    let start = Instant::now();
    socket
        .send_to(request, server)
        .map_err(|e| format!("send: {e}"))?;
    match receive(&socket, ctx.reply_wait() + ctx.latency() * queued) {
        Some((reply, _)) if matches(expect, &reply) => {
            Ok(format!("then a request was answered in {}", ms(start.elapsed())))
        }
        Some((reply, _)) => Err(format!(
            "then a request got {} (expected {})",
            show(&reply),
            expect.describe()
        )),
        None => Err("then a request got no reply".into()),
    }
}

/// One request's round trip, alone (`None`: no reply, or not UDP).
pub fn round_trip(ctx: &Ctx) -> Option<Duration> {
    let (server, request, expect) = target(ctx).ok()?;
    let s = socket(server).ok()?;
    let start = Instant::now();
    s.send_to(&request, server).ok()?;
    let (reply, _) = receive(&s, ctx.reply_wait())?;
    matches(&expect, &reply).then(|| start.elapsed())
}

/// Two senders, one request each: each gets one reply, its own.
fn reply(ctx: &Ctx) -> Finding {
    let (server, request, expect) = match target(ctx) {
        Ok(t) => t,
        Err(f) => return f,
    };
    let (a, b) = match (socket(server), socket(server)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(f), _) | (_, Err(f)) => return f,
    };
    for s in [&a, &b] {
        if let Err(e) = s.send_to(&request, server) {
            return Finding::fail(format!("send {}: {e}", show(&request)));
        }
    }
    let wait = ctx.reply_wait();
    for (name, s) in [("a", &a), ("b", &b)] {
        match receive(s, wait) {
            Some((got, from)) if from == server && matches(&expect, &got) => {}
            Some((got, from)) => {
                return Finding::fail(format!(
                    "sender {name} sent {}, got {} from {from} (expected {} from {server})",
                    show(&request),
                    show(&got),
                    expect.describe()
                ))
            }
            None => {
                return Finding::fail(format!(
                    "sender {name} sent {}, got no reply within {} (expected {})",
                    show(&request),
                    ms(wait),
                    expect.describe()
                ))
            }
        }
    }
    // One reply each, not more: a second within a moment is a defect.
    let extra = [&a, &b]
        .iter()
        .any(|s| receive(s, Duration::from_millis(100)).is_some());
    Finding::pass_if(
        !extra,
        format!(
            "two senders sent {}, each got {}{}",
            show(&request),
            expect.describe(),
            if extra {
                ", then another datagram (expected one reply)"
            } else {
                ", once"
            }
        ),
    )
}

/// An empty datagram: any answer, or none, but the server goes on.
fn empty(ctx: &Ctx) -> Finding {
    probe_after(ctx, "an empty datagram", &[], None)
}

/// 60,000 bytes in one datagram: an echo returns them all (the seeds'
/// 4096-byte recvfrom cuts it); any server goes on.
fn large(ctx: &Ctx) -> Finding {
    let data: Vec<u8> = (0..60_000).map(|i| b'a' + (i % 26) as u8).collect();
    let want = (ctx.dialect.service == crate::service::ServiceKind::Echo).then(|| data.clone());
    probe_after(ctx, "a 60,000-byte datagram", &data, want)
}

/// Sends `datagram`, reads what comes back (and judges it against `want`
/// when given), then checks that a request is still answered.
fn probe_after(ctx: &Ctx, what: &str, datagram: &[u8], want: Option<Vec<u8>>) -> Finding {
    let (server, request, expect, s) = match prepare(ctx) {
        Ok(t) => t,
        Err(f) => return f,
    };
    if let Err(e) = s.send_to(datagram, server) {
        return Finding::fail(format!("send {what}: {e}"));
    }
    let wait = if want.is_some() {
        ctx.reply_wait()
    } else {
        ctx.stall_wait()
    };
    let got = receive(&s, wait);
    let seen = match &got {
        Some((reply, _)) => format!("{what} -> {}", show(reply)),
        None => format!("{what} -> no reply"),
    };
    if let Some(want) = want {
        let back = got.map(|(r, _)| r).unwrap_or_default();
        if back != want {
            return Finding::fail(format!(
                "{what} -> {} bytes back (expected all {})",
                back.len(),
                want.len()
            ));
        }
    }
    served_after(&seen, then_served(ctx, server, &request, &expect, 1))
}

/// Datagrams of random bytes and sizes, then a request.
fn junk(ctx: &Ctx) -> Finding {
    let (server, request, expect, s) = match prepare(ctx) {
        Ok(t) => t,
        Err(f) => return f,
    };
    let mut junk = Junk::new(3);
    let mut sent = 0;
    for i in 0..5 {
        let datagram = junk.bytes(1 + (i * 397) % 1400);
        if s.send_to(&datagram, server).is_ok() {
            sent += 1;
        }
    }
    served_after(
        &format!("{sent} datagrams of random bytes"),
        then_served(ctx, server, &request, &expect, sent),
    )
}

/// Many requests back to back from one socket: how many are answered.
/// UDP may drop what the server's receive buffer cannot hold, so fewer
/// is a note; none at all fails.
fn burst(ctx: &Ctx) -> Finding {
    let (server, request, expect, s) = match prepare(ctx) {
        Ok(t) => t,
        Err(f) => return f,
    };
    let n = if ctx.quick { 50 } else { 200 };
    let start = Instant::now();
    for _ in 0..n {
        if let Err(e) = s.send_to(&request, server) {
            return Finding::fail(format!("send: {e}"));
        }
    }
    let until = start + ctx.reply_wait();
    let (mut answered, mut wrong) = (0, None);
    while answered < n {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match receive(&s, left) {
            Some((reply, _)) if matches(&expect, &reply) => answered += 1,
            Some((reply, _)) => {
                wrong.get_or_insert(reply);
                answered += 1;
            }
            None => break,
        }
    }
    let line = format!(
        "{n} requests back to back, {answered} answered in {}",
        ms(start.elapsed())
    );
    if let Some(reply) = wrong {
        return Finding::fail(format!(
            "{line}; one got {} (expected {})",
            show(&reply),
            expect.describe()
        ));
    }
    match answered {
        a if a == n => Finding::pass(line),
        0 => Finding::fail(line),
        _ => Finding::note(format!("{line}: the rest dropped or too slow")),
    }
}
