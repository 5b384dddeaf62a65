//! `echo`: every byte back, as it arrives, until EOF (seed 001, C and Rust).

use super::{Now, Protocol, Replies};

pub struct Echo;

impl Protocol for Echo {
    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        out.send(msg);
    }
}

#[cfg(test)]
mod tests {
    use crate::service::framing::Framing;
    use crate::service::tests::Harness;
    use crate::service::{ServiceConfig, ServiceKind};

    #[test]
    fn echoes_until_eof() {
        let mut h = Harness::of(ServiceKind::Echo);
        assert_eq!(h.send(b"hello world"), "hello world");
        assert_eq!(h.send(b"\xff\x00junk"), "\u{fffd}\u{0}junk");
        h.session.handle_eof(h.now);
        assert!(h.session.is_finished());
    }

    #[test]
    fn line_framing_echoes_lines() {
        let mut config = ServiceConfig::new(ServiceKind::Echo);
        config.framing = Framing::Line;
        let mut h = Harness::new(config);
        assert_eq!(h.send(b"a\r\nb"), "a\n");
        assert_eq!(h.send(b"\n"), "b\n");
    }
}
