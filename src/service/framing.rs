//! Framing: how a byte stream becomes messages, and messages become bytes.
//!
//! Pure code over buffers; no sockets. `chunk` is how the seeds talk: a
//! message is whatever one read returned (at most [`CHUNK_SIZE`] bytes, the
//! seeds' BUFSIZE) and replies go out as they are. `line` splits on `\n`
//! (a `\r` before it is dropped) and ends every reply with `\n`.

use std::fmt;
use std::str::FromStr;

/// The seeds' BUFSIZE: the most one `chunk` message holds.
pub const CHUNK_SIZE: usize = 4096;

/// The default `--max-line`: long enough for any sane request, short enough
/// that a peer cannot make the server hold much for it.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Line,
    Chunk,
}

impl FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "line" => Ok(Framing::Line),
            "chunk" => Ok(Framing::Chunk),
            _ => Err(format!("unknown framing '{s}' (expected line or chunk)")),
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Framing::Line => "line",
            Framing::Chunk => "chunk",
        })
    }
}

/// What the decoder found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One whole message.
    Message(&'a [u8]),
    /// A line grew past the limit; the stream cannot be resynchronised.
    TooLong,
}

/// Turns incoming bytes into messages. For `line` it keeps the unfinished
/// tail of the last read; for `chunk` it keeps nothing.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    max_line: usize,
    /// Bytes of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
    /// How far `partial` has been searched for `\n` (avoids quadratic rescans
    /// when a long line arrives one byte at a time).
    scanned: usize,
    /// Start of the next unread message in `partial`.
    consumed: usize,
}

impl Decoder {
    pub fn new(framing: Framing, max_line: usize) -> Self {
        Decoder {
            framing,
            max_line: max_line.max(1),
            partial: Vec::new(),
            scanned: 0,
            consumed: 0,
        }
    }

    /// Feeds `data` and calls `on_frame` for every complete frame in order.
    /// After `Frame::TooLong` nothing more is decoded.
    pub fn decode(&mut self, data: &[u8], mut on_frame: impl FnMut(Frame<'_>) -> bool) {
        match self.framing {
            Framing::Chunk => {
                for chunk in data.chunks(CHUNK_SIZE) {
                    if !on_frame(Frame::Message(chunk)) {
                        return;
                    }
                }
            }
            Framing::Line => self.decode_lines(data, on_frame),
        }
    }

    fn decode_lines(&mut self, data: &[u8], mut on_frame: impl FnMut(Frame<'_>) -> bool) {
        // Fast path: nothing buffered, so complete lines can be handed out
        // straight from `data` without copying.
        let mut data = data;
        if self.partial.is_empty() {
            while let Some(nl) = memchr(b'\n', data) {
                if nl > self.max_line {
                    on_frame(Frame::TooLong);
                    return;
                }
                if !on_frame(Frame::Message(strip_cr(&data[..nl]))) {
                    return;
                }
                data = &data[nl + 1..];
            }
            if data.len() > self.max_line {
                on_frame(Frame::TooLong);
                return;
            }
            self.partial.extend_from_slice(data);
            return;
        }
        self.partial.extend_from_slice(data);
        while let Some(nl) = memchr(b'\n', &self.partial[self.scanned..]).map(|i| i + self.scanned) {
            let line_len = nl - self.consumed;
            if line_len > self.max_line {
                on_frame(Frame::TooLong);
                self.partial.clear();
                return;
            }
            let line = strip_cr(&self.partial[self.consumed..nl]);
            let keep_going = on_frame(Frame::Message(line));
            self.consumed = nl + 1;
            self.scanned = self.consumed;
            if !keep_going {
                break;
            }
        }
        self.partial.drain(..self.consumed);
        self.consumed = 0;
        self.scanned = self.partial.len();
        if self.partial.len() > self.max_line {
            on_frame(Frame::TooLong);
            self.partial = Vec::new();
            self.scanned = 0;
        } else if self.partial.is_empty() && self.partial.capacity() > 4 * CHUNK_SIZE {
            // Give back the memory a long line needed once.
            self.partial = Vec::new();
        }
    }

    /// At EOF: the last line, if the peer ended it without a newline (as
    /// `printf '1+1' | nc -N` does). Counts as a message like any other.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.partial);
        self.scanned = 0;
        self.consumed = 0;
        let rest = strip_cr(&rest).to_vec();
        (!rest.is_empty()).then_some(rest)
    }

    /// Bytes held for an unfinished line.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }
}

/// Appends one reply message to `out`, framed.
pub fn encode(framing: Framing, reply: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(reply);
    if framing == Framing::Line {
        out.push(b'\n');
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(d: &mut Decoder, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        d.decode(data, |f| {
            out.push(match f {
                Frame::Message(m) => String::from_utf8_lossy(m).into_owned(),
                Frame::TooLong => "<too long>".into(),
            });
            true
        });
        out
    }

    #[test]
    fn chunk_is_one_message_per_read_capped_at_bufsize() {
        let mut d = Decoder::new(Framing::Chunk, 10);
        assert_eq!(frames(&mut d, b"hello\nworld"), ["hello\nworld"]);
        let big = vec![b'x'; CHUNK_SIZE * 2 + 1];
        assert_eq!(frames(&mut d, &big).len(), 3);
    }

    #[test]
    fn lines_split_across_reads_and_crlf() {
        let mut d = Decoder::new(Framing::Line, 100);
        assert_eq!(frames(&mut d, b"ab"), Vec::<String>::new());
        assert_eq!(frames(&mut d, b"c\r\nde"), ["abc"]);
        assert_eq!(frames(&mut d, b"f\ng\n\n"), ["def", "g", ""]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn overlong_line_is_refused_whole_or_in_pieces() {
        let mut d = Decoder::new(Framing::Line, 4);
        assert_eq!(frames(&mut d, b"12345\n"), ["<too long>"]);
        let mut d = Decoder::new(Framing::Line, 4);
        assert_eq!(frames(&mut d, b"123"), Vec::<String>::new());
        assert_eq!(frames(&mut d, b"45"), ["<too long>"]);
        let mut d = Decoder::new(Framing::Line, 4);
        assert_eq!(frames(&mut d, b"1234\n"), ["1234"]);
    }

    #[test]
    fn an_unterminated_last_line_counts_at_eof() {
        let mut d = Decoder::new(Framing::Line, 100);
        assert_eq!(frames(&mut d, b"one\ntw"), ["one"]);
        assert_eq!(d.finish(), Some(b"tw".to_vec()));
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn byte_at_a_time() {
        let mut d = Decoder::new(Framing::Line, 100);
        let mut all = Vec::new();
        for b in b"one\ntwo\n" {
            all.extend(frames(&mut d, &[*b]));
        }
        assert_eq!(all, ["one", "two"]);
    }

    #[test]
    fn encode_adds_newline_only_for_lines() {
        let mut out = Vec::new();
        encode(Framing::Line, b"x", &mut out);
        encode(Framing::Chunk, b"y", &mut out);
        assert_eq!(out, b"x\ny");
    }
}
