//! Framing: TCP is a byte stream, not a message service. A request may
//! arrive a byte at a time, two may arrive in one segment, one may be
//! split anywhere (inside a UTF-8 character too), and a reply of a
//! megabyte takes many reads and writes. The classic student bugs live
//! here: one `recv` taken for one request, `send` assumed to send all.

use std::time::Duration;

use super::dialect::{Exchange, Expect};
use super::wire::{show, End, Peer};
use super::{is_reply, ms, needs_stream, size, Case, Ctx, Finding};
use crate::service::ServiceKind;

pub const CASES: &[Case] = &[
    Case {
        id: "framing.byte-at-a-time",
        run: byte_at_a_time,
    },
    Case {
        id: "framing.coalesced",
        run: coalesced,
    },
    Case {
        id: "framing.split-line",
        run: split_line,
    },
    Case {
        id: "framing.large",
        run: large,
    },
    Case {
        id: "framing.split-utf8",
        run: split_utf8,
    },
    Case {
        id: "framing.overlong",
        run: overlong,
    },
];

/// Pause between pieces, so that each is its own segment and, on
/// loopback, its own read at the server.
const PIECE_PAUSE: Duration = Duration::from_millis(5);

/// The size of `framing.large`.
const LARGE: usize = 1 << 20;

/// Why a case does not apply to a chunk service whose message is a read.
fn chunk_skip(ctx: &Ctx) -> Finding {
    Finding::skip(format!(
        "{}: a message is what one read returns (chunk framing, as in the seeds)",
        ctx.dialect.service
    ))
}

/// For the line-framing cases: the service's probe and a greeted peer,
/// or why the case does not apply.
fn line_probe(ctx: &Ctx) -> Result<(&Exchange, Peer), Finding> {
    if let Some(skip) = needs_stream(ctx) {
        return Err(skip);
    }
    let Some(probe) = ctx.dialect.probe.as_ref().filter(|_| ctx.dialect.line) else {
        return Err(chunk_skip(ctx));
    };
    Ok((probe, greeted(ctx)?))
}

/// A connection past its greeting.
fn greeted(ctx: &Ctx) -> Result<Peer, Finding> {
    let mut peer = ctx.connect().map_err(Finding::fail)?;
    if let Some(greeting) = &ctx.dialect.greeting {
        let got = ctx.read(&mut peer, greeting, ctx.reply_wait());
        if !greeting.matches(&got.bytes) {
            return Err(Finding::fail(format!(
                "connect -> {} (expected {})",
                got.show(),
                greeting.describe()
            )));
        }
    }
    Ok(peer)
}

/// A request sent one byte per segment gets its one reply (line
/// services), or every byte back (echo).
fn byte_at_a_time(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let (request, expect) = match (&ctx.dialect.probe, ctx.dialect.service) {
        (_, ServiceKind::Echo) => {
            let text = b"one byte at a time".to_vec();
            (text.clone(), Expect::Bytes(text))
        }
        (Some(probe), _) if ctx.dialect.line => (probe.request.clone(), probe.reply.clone()),
        _ => return chunk_skip(ctx),
    };
    let mut peer = match greeted(ctx) {
        Ok(p) => p,
        Err(f) => return f,
    };
    if let Err(e) = peer.send_in_pieces(&request, 1, PIECE_PAUSE) {
        return Finding::fail(format!("sending {} a byte at a time: {e}", show(&request)));
    }
    let got = ctx.read(&mut peer, &expect, ctx.reply_wait());
    Finding::pass_if(
        is_reply(&got, &expect),
        format!(
            "sent {} in {} one-byte segments, got {} (expected {})",
            show(&request),
            request.len(),
            got.show(),
            expect.describe()
        ),
    )
}

/// Two line requests in one segment get two replies.
fn coalesced(ctx: &Ctx) -> Finding {
    let (probe, mut peer) = match line_probe(ctx) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let twice = [probe.request.as_slice(), probe.request.as_slice()].concat();
    if let Err(e) = peer.send(&twice) {
        return Finding::fail(format!("sent {}: {e}", show(&twice)));
    }
    let first = ctx.read(&mut peer, &probe.reply, ctx.reply_wait());
    let second = ctx.read(&mut peer, &probe.reply, ctx.reply_wait());
    Finding::pass_if(
        is_reply(&first, &probe.reply) && is_reply(&second, &probe.reply),
        format!(
            "sent {} in one segment, got {} and {} (expected {} twice)",
            show(&twice),
            first.show(),
            second.show(),
            probe.reply.describe()
        ),
    )
}

/// One line split across two segments gets one reply, to the whole line:
/// a server that frames by read answers the first half.
fn split_line(ctx: &Ctx) -> Finding {
    let (probe, mut peer) = match line_probe(ctx) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let half = probe.request.len() / 2;
    let (a, b) = probe.request.split_at(half);
    // Long enough apart that the server reads the halves separately.
    let pause = Duration::from_millis(if ctx.quick { 50 } else { 100 });
    if let Err(e) = peer.send(a).and_then(|()| {
        std::thread::sleep(pause);
        peer.send(b)
    }) {
        return Finding::fail(format!("sent {} then {}: {e}", show(a), show(b)));
    }
    let got = ctx.read(&mut peer, &probe.reply, ctx.reply_wait());
    Finding::pass_if(
        is_reply(&got, &probe.reply),
        format!(
            "sent {}, {} later {}, got {} (expected {})",
            show(a),
            ms(pause),
            show(b),
            got.show(),
            probe.reply.describe()
        ),
    )
}

/// A megabyte each way: the reply takes many reads and many writes (short
/// reads, short writes), and must come back whole and in order.
fn large(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let (request, want): (Vec<u8>, Vec<u8>) = match ctx.dialect.service {
        ServiceKind::Echo => {
            let data: Vec<u8> = (0..LARGE).map(|i| b'a' + (i % 26) as u8).collect();
            (data.clone(), data)
        }
        ServiceKind::Bytes => (format!("{LARGE}\n").into_bytes(), vec![b'x'; LARGE]),
        s => return Finding::skip(format!("{s} has no request or reply of a megabyte")),
    };
    let mut peer = match greeted(ctx) {
        Ok(p) => p,
        Err(f) => return f,
    };
    // The sender writes while this thread reads: an echo of a megabyte
    // does not fit in the socket buffers, so reading only after sending
    // would deadlock with any correct server.
    let mut writer = match peer.try_clone() {
        Ok(w) => w,
        Err(e) => return Finding::fail(e),
    };
    let sent = std::thread::spawn(move || writer.send(&request));
    let wait = ctx.reply_wait() + Duration::from_secs(if ctx.quick { 3 } else { 10 });
    let got = peer.read_until(wait, LARGE + 64 * 1024, |b| b.len() >= LARGE);
    let sent = sent.join().unwrap_or_else(|_| Err("the sender panicked".into()));
    let first_wrong = got.bytes.iter().zip(&want).position(|(g, w)| g != w);
    let line = match (sent, first_wrong) {
        (Err(e), _) if got.bytes.len() < LARGE => format!(
            "sending {}: {e}; got {} back",
            size(LARGE as u64),
            size(got.bytes.len() as u64)
        ),
        (_, Some(at)) => format!(
            "sent {}, got {} back, wrong from byte {at}",
            size(LARGE as u64),
            size(got.bytes.len() as u64)
        ),
        (_, None) => format!(
            "sent {}, got {} back{}",
            size(LARGE as u64),
            size(got.bytes.len() as u64),
            match got.end {
                End::Complete => ", byte for byte".to_string(),
                _ => format!(" ({})", got.show().rsplit(" then ").next().unwrap_or("ended")),
            }
        ),
    };
    Finding::pass_if(got.bytes.len() == LARGE && first_wrong.is_none(), line)
}

/// A multi-byte character split across two segments is reversed whole:
/// a server that decodes each read alone breaks it (or dies of it).
fn split_utf8(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    if ctx.dialect.service != ServiceKind::Reverse {
        return Finding::skip(format!("{} does not reverse characters", ctx.dialect.service));
    }
    let text = "héllo, 안녕";
    let bytes = text.as_bytes();
    // Inside 안 (three bytes): the first segment ends mid-character.
    let cut = text.find('안').map_or(bytes.len() / 2, |i| i + 1);
    let want: String = text.chars().rev().collect();
    let mut peer = match ctx.connect() {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    let pause = Duration::from_millis(if ctx.quick { 50 } else { 100 });
    if let Err(e) = peer.send(&bytes[..cut]).and_then(|()| {
        std::thread::sleep(pause);
        peer.send(&bytes[cut..])
    }) {
        return Finding::fail(format!("sent {}: {e}", show(bytes)));
    }
    let got = peer.read_to_close(ctx.reply_wait());
    Finding::pass_if(
        got.bytes == want.as_bytes(),
        format!(
            "sent {} cut after byte {cut} (inside '안'), got {} (expected {})",
            show(bytes),
            got.show(),
            show(want.as_bytes())
        ),
    )
}

/// A line longer than any limit: the server must say `ERR line too long`
/// and close (or at least close), not hold it all.
fn overlong(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    if !ctx.dialect.line {
        return Finding::skip(format!(
            "{}: chunk framing has no line to overrun",
            ctx.dialect.service
        ));
    }
    let mut peer = match greeted(ctx) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let total = if ctx.quick { 1 << 20 } else { 4 << 20 };
    let mut writer = match peer.try_clone() {
        Ok(w) => w,
        Err(e) => return Finding::fail(e),
    };
    let stall = ctx.stall_wait();
    let pushing =
        std::thread::spawn(move || writer.push(&[b'7'; 64 * 1024], total, stall, Duration::from_secs(10)));
    let got = peer.read_to_close(ctx.reply_wait() + Duration::from_secs(2));
    let (sent, stalled) = pushing.join().unwrap_or((0, true));
    let said_err = got.bytes.starts_with(b"ERR");
    let closed = matches!(got.end, End::Eof | End::Error(_));
    let line = format!(
        "sent {} of digits without a newline{}, got {} (expected \"ERR line too long\" and a close)",
        size(sent as u64),
        if stalled {
            " until the server stopped reading"
        } else {
            ""
        },
        got.show()
    );
    if said_err && closed {
        Finding::pass(line)
    } else if closed {
        Finding::note(line.replace("(expected", "(closed without a word; expected"))
    } else {
        Finding::fail(line)
    }
}
