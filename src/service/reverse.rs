//! `reverse`: replies the message's characters reversed, then closes (seed
//! 002's thread-per-connection server, `data.decode()[::-1]`).
//!
//! The message is what the first read brings, as in the seed, with two
//! refinements so that a long message is reversed whole: a full
//! [`CHUNK_SIZE`] read means more is on its way, and a read that ends
//! inside a UTF-8 character waits for the character's other bytes. The
//! message ends at a shorter read that ends on a character boundary, or at
//! the peer's EOF; it is held up to [`MAX_MESSAGE`] bytes.

use super::{Now, Protocol, Replies, CHUNK_SIZE, DEFAULT_MAX_LINE};

/// The longest message held for reversing.
pub const MAX_MESSAGE: usize = DEFAULT_MAX_LINE;

#[derive(Default)]
pub struct Reverse {
    /// The message so far, when one read did not bring all of it.
    held: Vec<u8>,
}

impl Reverse {
    fn reply(&mut self, out: &mut Replies) {
        match std::str::from_utf8(&self.held) {
            Ok(text) => out.send(text.chars().rev().collect::<String>().as_bytes()),
            Err(_) => out.error("invalid UTF-8"),
        }
        self.held = Vec::new();
        out.close();
    }
}

impl Protocol for Reverse {
    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        self.held.extend_from_slice(msg);
        if self.held.len() > MAX_MESSAGE {
            self.held = Vec::new();
            out.error(format_args!("message too long (at most {MAX_MESSAGE} bytes)"));
            return out.close();
        }
        if msg.len() == CHUNK_SIZE {
            return; // A full read: the rest of the message follows.
        }
        match std::str::from_utf8(&self.held) {
            // `error_len() == None`: the bytes end mid-character; wait.
            Err(e) if e.error_len().is_none() => {}
            _ => self.reply(out),
        }
    }

    fn finish(&mut self, _now: Now, out: &mut Replies) {
        if self.held.is_empty() {
            return out.close();
        }
        self.reply(out);
    }
}

#[cfg(test)]
mod tests {
    use crate::service::tests::Harness;
    use crate::service::{ServiceKind, CHUNK_SIZE};

    #[test]
    fn reverses_characters_not_bytes() {
        let mut h = Harness::of(ServiceKind::Reverse);
        assert_eq!(h.send("안녕, 世界!".as_bytes()), "!界世 ,녕안");
        assert!(h.session.is_finished());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut h = Harness::of(ServiceKind::Reverse);
        assert_eq!(h.send(b"\xff\xfe"), "ERR invalid UTF-8");
        assert!(h.session.is_finished());
    }

    #[test]
    fn a_character_split_across_reads_is_joined() {
        let text = "안녕하세요".repeat(400); // 6000 bytes
        let bytes = text.as_bytes();
        let reversed: String = text.chars().rev().collect();
        // One read of 6000 bytes is two chunks, the first ending mid-character.
        let mut h = Harness::of(ServiceKind::Reverse);
        assert_eq!(h.send(bytes), reversed);
        assert!(h.session.is_finished());
        // Reads cut anywhere else: the message ends with the first short
        // read that ends on a character boundary.
        let mut h = Harness::of(ServiceKind::Reverse);
        assert_eq!(h.send(&bytes[..1000]), ""); // 333 characters and a byte
        let first: String = text[..1002].chars().rev().collect();
        assert_eq!(h.send(&bytes[1000..1002]), first);
        // A message of exactly one full read waits for the peer's EOF.
        let mut h = Harness::of(ServiceKind::Reverse);
        assert_eq!(h.send(&[b'a'; CHUNK_SIZE]), "");
        h.session.handle_eof(h.now);
        assert_eq!(h.take(), "a".repeat(CHUNK_SIZE));
        assert!(h.session.is_finished());
    }
}
