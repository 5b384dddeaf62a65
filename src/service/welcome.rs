//! `welcome`: sends `Welcome!` on connect; each message gets
//! `Received <message>;`; `exit` or EOF closes (seed 003's threaded server).

use super::{Now, Protocol, Replies};

pub struct Welcome;

impl Protocol for Welcome {
    fn open(&mut self, _now: Now, out: &mut Replies) {
        // The seed greets before it ever sleeps.
        out.without_delay();
        out.send(b"Welcome!");
    }

    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        // The seed compares the whole read to `exit`; typed at a terminal
        // (nc) it arrives with a newline, which we forgive.
        if msg.trim_ascii_end() == b"exit" {
            out.close();
        } else {
            out.send_fmt(format_args!("Received {};", String::from_utf8_lossy(msg)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::service::tests::Harness;
    use crate::service::{ServiceConfig, ServiceKind};

    #[test]
    fn welcome_received_exit() {
        let mut h = Harness::of(ServiceKind::Welcome);
        assert_eq!(h.take(), "Welcome!");
        assert_eq!(h.send(b"Michael"), "Received Michael;");
        assert!(!h.session.is_finished());
        assert_eq!(h.send(b"exit\n"), "");
        assert!(h.session.is_finished());
    }

    #[test]
    fn greeting_is_not_delayed_but_replies_are() {
        let mut config = ServiceConfig::new(ServiceKind::Welcome);
        config.delay = Duration::from_secs(1);
        let mut h = Harness::new(config);
        assert_eq!(h.take(), "Welcome!");
        assert_eq!(h.send(b"a"), "");
        assert_eq!(h.advance(Duration::from_secs(1)), "Received a;");
    }
}
