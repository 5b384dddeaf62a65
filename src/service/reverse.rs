//! `reverse`: replies the message's characters reversed, then closes (seed
//! 002's thread-per-connection server, `data.decode()[::-1]`).

use super::{Now, Protocol, Replies};

pub struct Reverse;

impl Protocol for Reverse {
    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        match std::str::from_utf8(msg) {
            Ok(text) => out.send(text.chars().rev().collect::<String>().as_bytes()),
            Err(_) => out.error("invalid UTF-8"),
        }
        out.close();
    }
}

#[cfg(test)]
mod tests {
    use crate::service::tests::Harness;
    use crate::service::ServiceKind;

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
}
