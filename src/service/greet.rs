//! `greet`: each message gets `Hello, <message>!` (seed 003's UDP server).

use super::{Now, Protocol, Replies};

pub struct Greet;

impl Protocol for Greet {
    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        out.send_fmt(format_args!("Hello, {}!", String::from_utf8_lossy(msg)));
    }
}

#[cfg(test)]
mod tests {
    use crate::service::tests::Harness;
    use crate::service::ServiceKind;

    #[test]
    fn greets_every_message() {
        let mut h = Harness::of(ServiceKind::Greet);
        assert_eq!(h.send(b"message1"), "Hello, message1!");
        assert_eq!(h.send(b"message2"), "Hello, message2!");
        assert!(!h.session.is_finished());
    }
}
