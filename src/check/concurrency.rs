//! Concurrency: the seeds' experiment made a verdict. Several clients at
//! once, and whether the server answers them one at a time, in rounds of
//! K, or all at once; and whether one silent connection stops a second
//! client being served.
//!
//! One at a time is what an iterative server is, and K at a time what a
//! pool of K is: design properties, reported as notes. A server that serves
//! many held connections at once but stalls behind one silent peer has a
//! defect (it reads before it hands the connection over), and fails.

use std::time::{Duration, Instant};

use super::wire::Peer;
use super::{ms, needs_stream, Capacity, Case, Ctx, Finding};

pub const CASES: &[Case] = &[
    Case {
        id: "concurrency.together",
        run: together,
    },
    Case {
        id: "concurrency.held",
        run: held,
    },
    Case {
        id: "concurrency.silent-first",
        run: silent_first,
    },
];

/// Clients of `concurrency.together`: the seeds' five.
const TOGETHER: usize = 5;

/// A request's round trip above this shows a server with a delay, whose
/// makespan says how many it serves at once.
const SLOW: Duration = Duration::from_millis(100);

/// Five clients at once, each one request: all served, and the makespan.
fn together(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    // One alone first: the pace against which the five are judged.
    let alone = match ctx.served(ctx.reply_wait()) {
        Ok(t) => t,
        Err(e) => return Finding::fail(format!("one client alone: {e}")),
    };
    ctx.set_latency(alone);
    let wait = ctx.reply_wait() + alone * TOGETHER as u32;
    let start = Instant::now();
    let results: Vec<Result<Duration, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..TOGETHER).map(|_| s.spawn(|| ctx.served(wait))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    let makespan = start.elapsed();
    let served = results.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Finding::fail(format!(
            "{TOGETHER} clients at once: {served} served in {}; one: {e}",
            ms(makespan)
        ));
    }
    let seen = format!(
        "{TOGETHER} clients at once, all served, makespan {} (one alone: {})",
        ms(makespan),
        ms(alone)
    );
    if alone < SLOW {
        // Too fast to tell rounds apart; concurrency.held says how many at once.
        return Finding::pass(seen);
    }
    let rounds = (makespan.as_secs_f64() / alone.as_secs_f64()).round().max(1.0) as usize;
    match rounds {
        1 => Finding::pass(format!("{seen}: all at once")),
        r if r >= TOGETHER => Finding::note(format!("{seen}: one at a time")),
        r => Finding::note(format!("{seen}: {r} rounds of about {}", TOGETHER.div_ceil(r))),
    }
}

/// How many connections, each served and then held open, the server
/// serves at once: it is asked again with one more held each time, until
/// a new client waits or `limit` are held. Services that close after one
/// reply cannot be held served: their held connections are silent ones,
/// as are those of a server that closed after answering.
fn held(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    if let Some(skip) = unheld(ctx) {
        return skip;
    }
    let limit = if ctx.quick { 6 } else { 12 };
    let wait = ctx.stall_wait();
    let mut holders: Vec<Peer> = Vec::new();
    let capacity = loop {
        if holders.len() == limit {
            break Capacity::AtLeast(limit);
        }
        let mut peer = match ctx.connect() {
            Ok(p) => p,
            Err(e) => return Finding::fail(format!("with {} connections held: {e}", holders.len())),
        };
        if let Err(e) = ctx.converse(&mut peer, wait) {
            if holders.is_empty() {
                return Finding::fail(format!("a first client, alone: {e}"));
            }
            break Capacity::Exactly(holders.len());
        }
        // A connection the server closed after its reply (by design, or
        // an echo that answers once) holds nothing: a silent one stands
        // in for it. The close follows the reply at once, if it comes.
        if ctx.dialect.closes_after_reply || peer.closed_within(Duration::from_millis(20)) {
            match ctx.connect() {
                Ok(silent) => holders.push(silent),
                Err(e) => return Finding::fail(format!("holding {}: {e}", holders.len() + 1)),
            }
        } else {
            holders.push(peer);
        }
    };
    // A held connection of a one-shot service is a silent one: the first
    // to stall shows that one silent connection holds a server.
    let kind = if ctx.dialect.closes_after_reply {
        "silent"
    } else {
        "served"
    };
    ctx.set_capacity(capacity);
    drop(holders);
    match capacity {
        Capacity::AtLeast(n) => Finding::pass(format!(
            "{n} {kind} connections held open, and each new client still served: all at once"
        )),
        Capacity::Exactly(1) => Finding::note(format!(
            "while 1 {kind} connection was held open, a second client waited {}: serves one client at a time",
            ms(wait)
        )),
        Capacity::Exactly(n) => Finding::note(format!(
            "while {n} {kind} connections were held open, the next client waited {}: serves {n} clients at a time",
            ms(wait)
        )),
    }
}

/// A service that answers without a request (hello) has no silent or
/// held connection: every connection is one being served, and
/// concurrency.together counts how many at once.
fn unheld(ctx: &Ctx) -> Option<Finding> {
    ctx.dialect.probe.is_none().then(|| {
        Finding::skip(format!(
            "{} answers without a request: no connection waits silent (see concurrency.together)",
            ctx.dialect.service
        ))
    })
}

/// One connection that says nothing: is a second client served meanwhile?
fn silent_first(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    if let Some(skip) = unheld(ctx) {
        return skip;
    }
    let silent = match ctx.connect() {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    let wait = ctx.stall_wait();
    let result = ctx.served(wait);
    drop(silent);
    match result {
        Ok(t) => Finding::pass(format!(
            "one connection silent, a second client served in {}",
            ms(t)
        )),
        Err(e) => match ctx.capacity() {
            Some(c) if c.one_at_a_time() => Finding::note(format!(
                "one connection silent, a second client not served within {}: one at a time ({e})",
                ms(wait)
            )),
            Some(c) => Finding::fail(format!(
                "one connection silent, a second client not served within {} ({e}), though {} served connections are served at once: a silent peer stalls the server",
                ms(wait),
                match c {
                    Capacity::AtLeast(n) => format!("{n}+"),
                    Capacity::Exactly(n) => n.to_string(),
                }
            )),
            None => Finding::fail(format!(
                "one connection silent, a second client not served within {} ({e})",
                ms(wait)
            )),
        },
    }
}
