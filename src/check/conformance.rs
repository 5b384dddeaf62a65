//! Conformance: each service's wire behaviour as DESIGN section 3 gives
//! it, with the seeds' exact strings (`Welcome!`, `Received %s;`,
//! `Hello, %s!`, the time `2023-12-30 21:45:06.088524`) and the `ERR ...`
//! replies of calc and contacts. A student's server that passes these
//! talks to the seeds' clients as the seeds' servers do.

use std::time::Duration;

use super::dialect::{is_time, Expect};
use super::wire::{show, End};
use super::{is_reply, needs_stream, Case, Ctx, Finding};
use crate::service::ServiceKind;

pub const CASES: &[Case] = &[
    Case {
        id: "conformance.greeting",
        run: greeting,
    },
    Case {
        id: "conformance.reply",
        run: reply,
    },
    Case {
        id: "conformance.session",
        run: session,
    },
    Case {
        id: "conformance.errors",
        run: errors,
    },
    Case {
        id: "conformance.close",
        run: close,
    },
];

/// What the server says on connect, before any request.
fn greeting(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let Some(expect) = &ctx.dialect.greeting else {
        return Finding::skip(format!("{} sends nothing before a request", ctx.dialect.service));
    };
    let mut peer = match ctx.connect() {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    let got = ctx.read(&mut peer, expect, ctx.reply_wait());
    let ok = is_reply(&got, expect) && hello_shape(ctx, &got.bytes);
    Finding::pass_if(
        ok,
        format!("connect -> {} (expected {})", got.show(), expect.describe()),
    )
}

/// `hello! this is the <model> ... server!!`: the seed 000 greeting.
fn hello_shape(ctx: &Ctx, got: &[u8]) -> bool {
    ctx.dialect.service != ServiceKind::Hello || got.trim_ascii_end().ends_with(b"server!!")
}

/// The probe request and its reply.
fn reply(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    if ctx.dialect.probe.is_none() {
        return Finding::skip(format!("{} needs no request", ctx.dialect.service));
    }
    let mut peer = match ctx.connect() {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    match ctx.converse(&mut peer, ctx.reply_wait()) {
        Ok(()) => {
            let probe = ctx
                .dialect
                .probe
                .as_ref()
                .map(|p| (show(&p.request), p.reply.describe()));
            let (sent, want) = probe.unwrap_or_default();
            Finding::pass(format!("{sent} -> {want}"))
        }
        Err(e) => Finding::fail(e),
    }
}

/// One step of a session: send this, expect that.
struct Step {
    send: Vec<u8>,
    expect: Expect,
}

fn step(send: impl AsRef<[u8]>, expect: Expect) -> Step {
    Step {
        send: send.as_ref().to_vec(),
        expect,
    }
}

fn bytes(b: &[u8]) -> Expect {
    Expect::Bytes(b.to_vec())
}

fn line(s: &str) -> Expect {
    Expect::Line(s.into())
}

/// Runs `steps` on one connection (after the greeting); the first wrong
/// reply fails, else `pass` with the whole exchange.
fn converse_steps(ctx: &Ctx, steps: &[Step], pause: Duration) -> Finding {
    let mut peer = match ctx.connect() {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    if let Some(greeting) = &ctx.dialect.greeting {
        let got = ctx.read(&mut peer, greeting, ctx.reply_wait());
        if !greeting.matches(&got.bytes) {
            return Finding::fail(format!(
                "connect -> {} (expected {})",
                got.show(),
                greeting.describe()
            ));
        }
    }
    let mut seen = Vec::new();
    for s in steps {
        // Chunk services take a read as the message: a pause keeps two
        // requests from arriving in one read.
        std::thread::sleep(pause);
        if let Err(e) = peer.send(&s.send) {
            return Finding::fail(format!("sent {}: {e}", show(&s.send)));
        }
        let got = ctx.read(&mut peer, &s.expect, ctx.reply_wait());
        if !is_reply(&got, &s.expect) {
            return Finding::fail(format!(
                "sent {}, got {} (expected {})",
                show(&s.send),
                got.show(),
                s.expect.describe()
            ));
        }
        seen.push(format!("{} -> {}", show(&s.send), show(&got.bytes)));
    }
    Finding::pass(seen.join(", "))
}

/// The seed's own session, as its client would have it.
fn session(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let pause = Duration::from_millis(20);
    // Every byte value, as binary-safe echo must return them.
    let all_bytes: Vec<u8> = (0..=255).collect();
    match ctx.dialect.service {
        ServiceKind::Echo => converse_steps(
            ctx,
            &[
                step(b"hello world", bytes(b"hello world")),
                step(&all_bytes, bytes(&all_bytes)),
            ],
            pause,
        ),
        ServiceKind::Welcome => converse_steps(
            ctx,
            &[
                step(b"Michael", bytes(b"Received Michael;")),
                step("수정".as_bytes(), bytes("Received 수정;".as_bytes())),
            ],
            pause,
        ),
        ServiceKind::Greet => converse_steps(
            ctx,
            &[
                step(b"message1", bytes(b"Hello, message1!")),
                step(b"message2", bytes(b"Hello, message2!")),
            ],
            pause,
        ),
        ServiceKind::Calc => converse_steps(
            ctx,
            &[
                step(b"7 / 2\n", line("3.5")),
                step(b"8 / 2\n", line("4")),
                step(b"(1 + 2) * -3\n", line("-9")),
                step(b"2 ^ 100\n", line("1267650600228229401496703205376")),
                step(b"-7 % 3\n", line("2")),
            ],
            Duration::ZERO,
        ),
        ServiceKind::Contacts => {
            // A name of this run's own, so that a book in use is not disturbed.
            let name = format!("check{}", std::process::id());
            let find = format!("FIND {name}\n");
            converse_steps(
                ctx,
                &[
                    step(format!("ADD {name} 0101\n"), line("OK")),
                    step(&find, line(&format!("OK {name} 0101"))),
                    step(format!("REMOVE {name}\n"), line("OK")),
                    step(&find, line(&format!("ERR not found: {name}"))),
                ],
                Duration::ZERO,
            )
        }
        ServiceKind::Bytes => converse_steps(
            ctx,
            &[step(b"4000\n", bytes(&[b'x'; 4000])), step(b"1\n", bytes(b"x"))],
            Duration::ZERO,
        ),
        ServiceKind::Time => one_shot(
            ctx,
            b"hello world",
            is_time,
            "the time, 2023-12-30 21:45:06.088524",
        ),
        ServiceKind::Reverse => {
            let want = "!界世 ,녕안".as_bytes();
            one_shot(
                ctx,
                "안녕, 世界!".as_bytes(),
                |got| got == want,
                "\"!界世 ,녕안\" (characters, not bytes)",
            )
        }
        ServiceKind::Hello => Finding::skip("the greeting is the whole session (conformance.greeting)"),
        ServiceKind::Chat => chat_session(ctx),
    }
}

/// One request, then the whole reply up to the close.
fn one_shot(ctx: &Ctx, request: &[u8], ok: impl Fn(&[u8]) -> bool, want: &str) -> Finding {
    let mut peer = match ctx.connect() {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    if let Err(e) = peer.send(request) {
        return Finding::fail(format!("sent {}: {e}", show(request)));
    }
    let got = peer.read_to_close(ctx.reply_wait());
    Finding::pass_if(
        ok(&got.bytes) && got.end == End::Eof,
        format!(
            "sent {}, got {} (expected {want} then close)",
            show(request),
            got.show()
        ),
    )
}

/// Two members: what one says reaches the other as `<nick> text`.
fn chat_session(ctx: &Ctx) -> Finding {
    let wait = ctx.reply_wait();
    let (mut a, mut b) = match (ctx.connect(), ctx.connect()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Finding::fail(e),
    };
    let _ = a.read_line(wait);
    let _ = b.read_line(wait);
    // a learns that b is in the room before speaking (a join notice may
    // come first).
    let said = b"hello from check\n";
    if let Err(e) = a.send(b"/nick checka\n").and_then(|()| a.send(said)) {
        return Finding::fail(format!("sent: {e}"));
    }
    for _ in 0..4 {
        let got = b.read_line(wait);
        if got.bytes.ends_with(b"<checka> hello from check\n") {
            return Finding::pass(format!("a said {}, b got {}", show(said), show(&got.bytes)));
        }
        if got.end != End::Complete {
            return Finding::fail(format!(
                "a said {}, b got {} (expected \"<checka> hello from check\")",
                show(said),
                got.show()
            ));
        }
    }
    Finding::fail("b never got a's line \"<checka> hello from check\"")
}

/// The `ERR ...` replies: an error is one line and the connection stays
/// usable.
fn errors(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let err = |s: &str| Expect::Line(format!("ERR {s}"));
    let starts = |s: &str| Expect::LineStarting(format!("ERR {s}"));
    match ctx.dialect.service {
        ServiceKind::Calc => converse_steps(
            ctx,
            &[
                step(b"1 / 0\n", err("division by zero")),
                step(b"2 +\n", starts("")),
                step(b"hello\n", starts("")),
                step(b"1 + 1\n", line("2")),
            ],
            Duration::ZERO,
        ),
        ServiceKind::Contacts => converse_steps(
            ctx,
            &[
                step(b"FOO\n", err("unknown command: FOO")),
                step(b"ADD x\n", err("usage: ADD name phone")),
                step(b"FIND\n", err("usage: FIND name")),
                step(
                    b"FIND socklab-check-nobody\n",
                    err("not found: socklab-check-nobody"),
                ),
            ],
            Duration::ZERO,
        ),
        ServiceKind::Bytes => converse_steps(
            ctx,
            &[
                step(b"-1\n", starts("")),
                step(b"many\n", starts("")),
                step(b"2\n", bytes(b"xx")),
            ],
            Duration::ZERO,
        ),
        ServiceKind::Reverse => {
            // The seed decodes, and its thread dies on bytes that are not
            // UTF-8: the client is left with a close and no word.
            let mut peer = match ctx.connect() {
                Ok(p) => p,
                Err(e) => return Finding::fail(e),
            };
            let junk = b"\xff\xfe\xfd";
            if let Err(e) = peer.send(junk) {
                return Finding::fail(format!("sent {}: {e}", show(junk)));
            }
            let got = peer.read_to_close(ctx.reply_wait());
            Finding::pass_if(
                got.bytes.starts_with(b"ERR "),
                format!(
                    "sent {}, got {} (expected \"ERR invalid UTF-8\")",
                    show(junk),
                    got.show()
                ),
            )
        }
        s => Finding::skip(format!("{s} has no error replies")),
    }
}

/// When the server closes: after its one reply (time, reverse, hello), at
/// `exit` (welcome), at `/quit` (chat), at the peer's EOF (the others).
fn close(ctx: &Ctx) -> Finding {
    if let Some(skip) = needs_stream(ctx) {
        return skip;
    }
    let mut peer = match ctx.connect() {
        Ok(p) => p,
        Err(e) => return Finding::fail(e),
    };
    let wait = ctx.reply_wait();
    let (did, result) = match ctx.dialect.service {
        ServiceKind::Welcome => {
            let _ = peer.read_exact(8, wait);
            ("sent \"exit\"", peer.send(b"exit"))
        }
        ServiceKind::Chat => {
            let _ = peer.read_line(wait);
            ("sent \"/quit\\n\"", peer.send(b"/quit\n"))
        }
        _ if ctx.dialect.closes_after_reply => ("sent a request", peer.send(ctx.dialect.request())),
        _ => {
            if let Err(e) = ctx.converse(&mut peer, wait) {
                return Finding::fail(e);
            }
            ("after a reply, closed our side", peer.half_close())
        }
    };
    if let Err(e) = result {
        return Finding::fail(format!("{did}: {e}"));
    }
    let got = peer.read_to_close(wait);
    Finding::pass_if(
        matches!(got.end, End::Eof),
        format!("{did}, then the server: {} (expected it to close)", got.show()),
    )
}
