//! Peers: what the hostile suite throws at socklab's own models, thrown
//! at any server (DESIGN section 9: nothing a peer sends can crash the
//! server, grow it without bound, or stop it serving others). After each
//! attack a well-behaved client must be served; a server that serves one
//! client at a time cannot serve it while the attacker holds it, which is
//! a note, not a defect.

use std::time::{Duration, Instant};

use super::wire::{show, Junk, Peer};
use super::{ms, needs_stream, size, Case, Ctx, Finding};

pub const CASES: &[Case] = &[
    Case {
        id: "peers.half-close",
        run: half_close,
    },
    Case {
        id: "peers.silent-leaves",
        run: silent_leaves,
    },
    Case {
        id: "peers.reset-mid-request",
        run: reset_mid_request,
    },
    Case {
        id: "peers.never-reader",
        run: never_reader,
    },
    Case {
        id: "peers.reset-flood",
        run: reset_flood,
    },
    Case {
        id: "peers.junk",
        run: junk,
    },
    Case {
        id: "peers.many",
        run: many,
    },
];

/// `pass` with `what` and the client served after it, or `fail`.
fn and_then_served(ctx: &Ctx, what: String) -> Finding {
    match ctx.then_served() {
        Ok(after) => Finding::pass(format!("{what}; {after}")),
        Err(after) => Finding::fail(format!("{what}; {after}")),
    }
}

/// The request, then FIN: the reply must still come (a server that takes
/// EOF for the end of everything loses it).
fn half_close(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let mut peer = match ctx.connect() {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    let request = ctx.dialect.request().to_vec();
    let sent = if request.is_empty() {
        "FIN at once".to_string()
    } else {
        format!("sent {} then FIN", show(&request))
    };
    if let Err(e) = peer.send(&request).and_then(|()| peer.half_close()) {
        return Finding::fail(format!("{sent}: {e}"));
    }
    let mut seen = Vec::new();
    let wait = ctx.reply_wait();
    for expect in [
        &ctx.dialect.greeting,
        &ctx.dialect.probe.as_ref().map(|p| p.reply.clone()),
    ]
    .into_iter()
    .flatten()
    {
        let got = ctx.read(&mut peer, expect, wait);
        seen.push(got.show());
        if !expect.matches(&got.bytes) {
            return Finding::fail(format!(
                "{sent}, got {} (expected {})",
                seen.join(" then "),
                expect.describe()
            ));
        }
    }
    Finding::pass(format!("{sent}, got {}", seen.join(" then ")))
}

/// A peer that connects and leaves without a word.
fn silent_leaves(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    match ctx.connect() {
        Ok(peer) => drop(peer),
        Err(e) => return Finding::fail(e),
    }
    and_then_served(ctx, "a peer connected and closed without a word".into())
}

/// Half a request, then a reset: the server must drop it and go on.
fn reset_mid_request(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let request = ctx.dialect.request();
    let half = &request[..request.len().div_ceil(2)];
    match ctx.connect() {
        Ok(mut peer) => {
            let _ = peer.send(half);
            peer.reset();
        }
        Err(e) => return Finding::fail(e),
    }
    and_then_served(ctx, format!("a peer sent {} then reset", show(half)))
}

/// A peer that sends requests and never reads the replies: others must
/// still be served (or it is one at a time), and what the server holds
/// for it is reported.
fn never_reader(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    if !ctx.dialect.answers_repeatedly() {
        return Finding::skip(format!(
            "{} answers once and closes: no replies to pile up",
            ctx.dialect.service
        ));
    }
    let within = if ctx.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    let pushed = match push_never_reading(ctx, within) {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    let what = pushed.describe();
    // While it holds its replies unread, another client: as patient as
    // for any reply (a loop that works through the flood first serves it
    // late, not never), unless the server is known to serve one at a time.
    let wait = match ctx.capacity() {
        Some(c) if c.one_at_a_time() => ctx.stall_wait(),
        _ => ctx.reply_wait(),
    };
    let result = ctx.served(wait);
    drop(pushed.peer);
    let after = match ctx.recovered() {
        Some(t) if t > Duration::from_millis(100) => {
            format!("; once it left, the server served again after {}", ms(t))
        }
        Some(_) => String::new(),
        None => "; once it left, the server did not serve again".into(),
    };
    match result {
        Ok(t) => Finding::pass(format!(
            "{what}; meanwhile a client was served in {}{after}",
            ms(t)
        )),
        Err(e) => match ctx.capacity() {
            Some(c) if c.one_at_a_time() => Finding::note(format!(
                "{what}; meanwhile a client was not served (one at a time): {e}{after}"
            )),
            _ => Finding::fail(format!("{what}; meanwhile a client was not served: {e}{after}")),
        },
    }
}

/// A connection that has pushed requests without reading, still open.
pub struct Pushed {
    pub peer: Peer,
    pub sent: usize,
    /// The server stopped taking them (its backpressure).
    pub stalled: bool,
    /// The server's PSS growth while it was pushed, when it is known.
    pub growth_kb: Option<i64>,
}

impl Pushed {
    pub fn describe(&self) -> String {
        let how = if self.stalled {
            format!("the server stopped reading after {}", size(self.sent as u64))
        } else {
            format!("the server kept reading ({} taken)", size(self.sent as u64))
        };
        let growth = match self.growth_kb {
            Some(kb) => format!(", its memory grew {}", size((kb.max(0) as u64) << 10)),
            None => String::new(),
        };
        format!("a peer sent requests and never read: {how}{growth}")
    }
}

/// Pushes requests without reading: up to 64 MiB (32 quick, more than
/// the socket buffers hold between us), until the server stops taking
/// them for [`Ctx::stall_wait`], or `within` passes. The growth is the
/// server's largest footprint just after, against the lower of the
/// footprint before and the run's baseline: an allocator that keeps freed
/// memory must not hide a second flood behind the first.
pub fn push_never_reading(ctx: &Ctx, within: Duration) -> Result<Pushed, String> {
    let mut peer = ctx.connect()?;
    let before = match (ctx.footprint(), ctx.baseline()) {
        (Some(now), Some(base)) => Some(now.pss_kb.min(base.pss_kb)),
        (now, _) => now.map(|f| f.pss_kb),
    };
    let request = ctx.dialect.request();
    let chunk: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * (65536 / request.len().max(1)))
        .collect();
    let total = if ctx.quick { 32 << 20 } else { 64 << 20 };
    let (sent, stalled) = peer.push(&chunk, total, ctx.stall_wait(), within);
    // What was still in the socket buffers when the pushing stopped
    // reaches a server that keeps reading a moment later.
    let mut peak = ctx.footprint().map(|f| f.pss_kb);
    std::thread::sleep(Duration::from_millis(200));
    peak = peak.max(ctx.footprint().map(|f| f.pss_kb));
    let growth_kb = before.zip(peak).map(|(b, a)| a as i64 - b as i64);
    Ok(Pushed {
        peer,
        sent,
        stalled,
        growth_kb,
    })
}

/// Many connections that open and reset at once, before a word: as many
/// as fit in 200 (50 quick) or 3 s (1 s quick), a server with a small
/// accept queue taking them slower than that.
fn reset_flood(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let n = if ctx.quick { 50 } else { 200 };
    let budget = Duration::from_secs(if ctx.quick { 1 } else { 3 });
    let start = Instant::now();
    let mut opened = 0;
    while opened < n && start.elapsed() < budget {
        match Peer::connect(&ctx.addr, budget) {
            Ok(peer) => {
                peer.reset();
                opened += 1;
            }
            // A full accept queue: the rest waits, as slow as the server.
            Err(e) if e.contains("timed out") => break,
            Err(e) => {
                return Finding::fail(format!(
                    "after {opened} connect-then-reset, a connect failed: {e}"
                ))
            }
        }
    }
    let slow = if opened < n {
        format!(
            " (of {n}: the rest did not fit in {}, connects waiting on a full accept queue)",
            ms(budget)
        )
    } else {
        String::new()
    };
    and_then_served(
        ctx,
        format!(
            "{opened} connections opened and reset in {}{slow}",
            ms(start.elapsed())
        ),
    )
}

/// Random bytes (NULs, invalid UTF-8, stray newlines), then a close.
fn junk(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let bytes = Junk::new(24).bytes(64 * 1024);
    match ctx.connect() {
        Ok(mut peer) => {
            // The server may close on it midway: that is its right.
            let _ = peer.send(&bytes);
            let _ = peer.closed_within(Duration::from_millis(100));
        }
        Err(e) => return Finding::fail(e),
    }
    and_then_served(
        ctx,
        format!("a peer sent {} of random bytes", size(bytes.len() as u64)),
    )
}

/// `--connections` clients connect together, all send, then each is
/// answered: the seeds' concurrent client at scale.
fn many(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let n = ctx.connections;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(if ctx.quick { 2 } else { 10 });
    let mut peers = Vec::with_capacity(n);
    let mut refused = None;
    let mut slowest = Duration::ZERO;
    while peers.len() < n && Instant::now() < deadline {
        let attempt = Instant::now();
        // Long enough for the kernel's first SYN retransmission (1 s): a
        // full accept queue drops a SYN, and a server that accepts a
        // moment later still gets the connection, as any client would.
        match Peer::connect(&ctx.addr, Duration::from_millis(2500)) {
            Ok(p) => {
                slowest = slowest.max(attempt.elapsed());
                peers.push(p);
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let opened = peers.len();
    let request = ctx.dialect.request();
    if !request.is_empty() {
        for p in &mut peers {
            let _ = p.send(request);
        }
    }
    // In order of connection: a server that takes them one at a time
    // takes them in that order, and each is closed once answered so that
    // it can move on. Patience: a reply's, plus a round trip for each.
    let answer_by =
        Instant::now() + (ctx.reply_wait() + ctx.latency() * opened as u32).min(Duration::from_secs(30));
    let mut served = 0;
    let mut first_error = None;
    for mut p in peers {
        let left = answer_by.saturating_duration_since(Instant::now());
        match reply_after_sending(ctx, &mut p, left) {
            Ok(()) => served += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed();
    let mut line = format!(
        "{opened} of {n} connections open at once, {served} answered in {}",
        ms(elapsed)
    );
    if let Some(e) = &refused {
        line.push_str(&format!("; connect {} failed: {e}", opened + 1));
    }
    if slowest > Duration::from_millis(900) {
        line.push_str(&format!(
            "; a connect took {}: the accept queue overflowed and the SYN was sent again (a small listen backlog?)",
            ms(slowest)
        ));
    }
    if let Some(e) = &first_error {
        line.push_str(&format!("; first unanswered: {e}"));
    }
    if served == n {
        Finding::pass(line)
    } else if ctx.capacity().is_some_and(|c| c.bounded().is_some()) && served > 0 {
        // Connections beyond the backlog of a server that serves K at a
        // time wait for a slot, longer than this case waits.
        Finding::note(line)
    } else {
        Finding::fail(line)
    }
}

/// The greeting and the probe's reply on a peer whose request went already.
fn reply_after_sending(ctx: &Ctx, peer: &mut Peer, wait: Duration) -> Result<(), String> {
    let expected = [
        &ctx.dialect.greeting,
        &ctx.dialect.probe.as_ref().map(|p| p.reply.clone()),
    ];
    for expect in expected.into_iter().flatten() {
        let got = ctx.read(peer, expect, wait);
        if !expect.matches(&got.bytes) {
            return Err(format!("got {} (expected {})", got.show(), expect.describe()));
        }
    }
    Ok(())
}
