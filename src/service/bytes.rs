//! `bytes`: Stevens' `web_child` protocol (UNP vol. 1, chapter 30), the
//! load of his server-design table. The client sends a line holding N, the
//! server writes exactly N bytes back; repeat until EOF.
//!
//! N is at most [`MAX_BYTES`]; a negative, non-numeric or larger N gets one
//! `ERR ...` line and the connection goes on. A reply of 16 MiB is never
//! held whole: the first [`PIECE`] goes out with the answer, the rest is
//! made a piece at a time as the output drains ([`Protocol::more`]), so it
//! stays within the connection's budget like any other reply. Requests that
//! arrive while a reply is still being made wait their turn, in order.

use std::collections::VecDeque;

use super::{Now, Protocol, Replies};

/// The largest N a client may ask for: 16 MiB.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How much of a reply is made at a time.
pub const PIECE: usize = 64 * 1024;

/// What a reply's bytes are: printable, so a terminal shows them.
const FILL: u8 = b'x';

/// Requests waiting behind a reply in progress, at most. A driver stops
/// reading while a reply is owed, so only one read's lines can pile up;
/// this bounds even a driver that reads a lot at once.
const MAX_WAITING: usize = 4096;

/// One parsed request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Bytes(u64),
    Negative,
    NotANumber,
    TooMany,
    Empty,
    /// More requests pipelined than [`MAX_WAITING`]: answered with an error
    /// and the connection closed, in its turn.
    Flood,
}

impl Request {
    fn parse(line: &[u8]) -> Request {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return Request::Empty;
        }
        if let Some(digits) = text.strip_prefix('-') {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return Request::Negative;
            }
            return Request::NotANumber;
        }
        let digits = text.strip_prefix('+').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Request::NotANumber;
        }
        match digits.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => Request::Bytes(n),
            _ => Request::TooMany, // Past the bound, or past u64 altogether.
        }
    }
}

#[derive(Default)]
pub struct Bytes {
    /// Bytes of the reply in progress not made yet.
    owed: u64,
    /// Requests that came while a reply was owed.
    waiting: VecDeque<Request>,
    /// A flood was answered: nothing more is taken.
    flooded: bool,
}

impl Bytes {
    /// Starts answering `request`: an error line, or the first piece of
    /// its bytes (at most `room` of them).
    fn start(&mut self, request: Request, room: usize, out: &mut Replies) {
        match request {
            Request::Bytes(n) => {
                self.owed = n;
                self.write(room, out);
            }
            Request::Negative => out.error("byte count must not be negative"),
            Request::NotANumber => out.error("expected a byte count, e.g. 4000"),
            Request::Empty => out.error("expected a byte count, e.g. 4000"),
            Request::TooMany => out.error(format_args!("at most {MAX_BYTES} bytes")),
            Request::Flood => {
                out.error(format_args!("more than {MAX_WAITING} requests waiting"));
                out.close();
            }
        }
    }

    /// Up to `room` more bytes of the reply in progress.
    fn write(&mut self, room: usize, out: &mut Replies) -> usize {
        let n = self.owed.min(room as u64) as usize;
        out.raw_fill(FILL, n);
        self.owed -= n as u64;
        n
    }
}

impl Protocol for Bytes {
    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        // Chunk framing hands over whole reads: take each line in them.
        let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
        for line in msg.split(|&b| b == b'\n') {
            if self.flooded {
                return;
            }
            let request = Request::parse(line);
            if self.owed > 0 || !self.waiting.is_empty() || out.len() >= PIECE {
                if self.waiting.len() >= MAX_WAITING {
                    self.flooded = true;
                    self.waiting.push_back(Request::Flood);
                    return;
                }
                self.waiting.push_back(request);
            } else {
                self.start(request, PIECE - out.len(), out);
            }
        }
    }

    fn more(&mut self, room: usize, out: &mut Replies) {
        let mut room = room.min(PIECE);
        while room > 0 {
            if self.owed > 0 {
                room -= self.write(room, out);
            } else if let Some(next) = self.waiting.pop_front() {
                let before = out.len();
                self.start(next, room, out);
                room = room.saturating_sub(out.len() - before);
            } else {
                break;
            }
        }
    }

    fn has_more(&self) -> bool {
        self.owed > 0 || !self.waiting.is_empty()
    }

    fn accepts_input(&self) -> bool {
        !self.has_more()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::Harness;
    use crate::service::{Framing, ServiceConfig, ServiceKind, CONNECTION_BUDGET};

    #[test]
    fn exactly_n_bytes_for_each_line() {
        let mut h = Harness::of(ServiceKind::Bytes);
        assert_eq!(h.send(b"0\n"), "");
        assert_eq!(h.send(b"1\n"), "x");
        assert_eq!(h.send(b"4000\n").len(), 4000);
        let got = h.send(b"1048576\n");
        assert_eq!(got.len(), 1 << 20);
        assert!(got.bytes().all(|b| b == FILL));
        assert!(!h.session.is_finished());
        h.session.handle_eof(h.now);
        assert!(h.session.is_finished());
    }

    #[test]
    fn bad_counts_get_err_and_the_connection_goes_on() {
        let mut h = Harness::of(ServiceKind::Bytes);
        assert_eq!(h.send(b"-5\n"), "ERR byte count must not be negative\n");
        assert_eq!(h.send(b"lots\n"), "ERR expected a byte count, e.g. 4000\n");
        assert_eq!(h.send(b"16777217\n"), "ERR at most 16777216 bytes\n");
        assert_eq!(
            h.send(b"99999999999999999999999\n"),
            "ERR at most 16777216 bytes\n"
        );
        assert_eq!(h.send(b"3\r\n"), "xxx");
        assert!(!h.session.is_finished());
    }

    #[test]
    fn sixteen_mebibytes_never_hold_more_than_the_budget() {
        let mut h = Harness::of(ServiceKind::Bytes);
        h.session.handle_read(b"16777216\n2\n", h.now);
        let mut total = 0;
        while !h.session.pending_output().is_empty() {
            let pending = h.session.pending_output().len();
            assert!(h.session.cost() <= CONNECTION_BUDGET, "{pending} bytes held");
            if total + 2 * PIECE < 16 * 1024 * 1024 {
                assert!(!h.session.wants_read(), "no reading while a reply is owed");
            }
            // A peer that reads a little at a time.
            let n = pending.min(1000);
            total += n;
            h.session.consume_output(n, h.now.instant);
        }
        assert_eq!(total, 16 * 1024 * 1024 + 2, "both replies, in order");
        assert!(h.session.wants_read());
    }

    #[test]
    fn a_pipelined_mix_is_answered_in_order() {
        let mut h = Harness::of(ServiceKind::Bytes);
        let got = h.send(b"70000\nno\n2\n");
        assert_eq!(
            got.len(),
            70000 + "ERR expected a byte count, e.g. 4000\n".len() + 2
        );
        assert!(got[..70000].bytes().all(|b| b == FILL));
        assert!(got[70000..].starts_with("ERR expected"));
        assert!(got.ends_with("\nxx"));
    }

    #[test]
    fn eof_mid_reply_finishes_the_reply_then_closes() {
        let mut h = Harness::of(ServiceKind::Bytes);
        h.session.handle_read(b"200000\n", h.now);
        h.session.handle_eof(h.now);
        assert!(!h.session.is_finished());
        assert_eq!(h.take().len(), 200000);
        assert!(h.session.is_finished());
        // A last line without its newline is a request too, as with nc -N.
        let mut h = Harness::of(ServiceKind::Bytes);
        h.session.handle_read(b"5", h.now);
        h.session.handle_eof(h.now);
        assert_eq!(h.take(), "xxxxx");
        assert!(h.session.is_finished());
    }

    #[test]
    fn shutdown_mid_reply_lets_the_reply_finish() {
        let mut h = Harness::of(ServiceKind::Bytes);
        h.session.handle_read(b"300000\n", h.now);
        h.session.handle_shutdown();
        assert_eq!(h.take().len(), 300000);
        assert!(h.session.is_finished());
    }

    #[test]
    fn delay_holds_the_reply_then_it_streams() {
        let mut config = ServiceConfig::new(ServiceKind::Bytes);
        config.delay = std::time::Duration::from_secs(1);
        let mut h = Harness::new(config);
        assert_eq!(h.send(b"100000\n"), "");
        assert_eq!(h.advance(std::time::Duration::from_secs(1)).len(), 100000);
    }

    #[test]
    fn chunk_framing_takes_every_line_of_a_read() {
        let mut config = ServiceConfig::new(ServiceKind::Bytes);
        config.framing = Framing::Chunk;
        let mut h = Harness::new(config);
        assert_eq!(h.send(b"2\n3\n"), "xxxxx");
        assert_eq!(h.send(b"-1"), "ERR byte count must not be negative");
    }

    #[test]
    fn a_datagram_reply_must_fit_in_a_datagram() {
        let service = crate::service::Service::new(ServiceConfig::new(ServiceKind::Bytes));
        let now = Now::system();
        assert_eq!(service.datagram(b"3", now), Some(b"xxx".to_vec()));
        assert_eq!(service.datagram(b"0", now), None);
        let too_big = service.datagram(b"100000", now).unwrap_or_default();
        assert_eq!(too_big, b"ERR reply too large for a datagram");
        assert_eq!(service.datagram(b"65507", now).map(|r| r.len()), Some(65507));
    }
}
