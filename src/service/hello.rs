//! `hello`: after `--delay`, counted from accept, sends
//! `hello! this is the <model> socklab server!!`, then closes; it needs no
//! request (seed 000's sleeping server, which the concurrent client times).

use super::{Now, Protocol, Replies};

pub struct Hello {
    greeting: String,
}

impl Hello {
    pub fn new(model: &str) -> Self {
        Hello {
            greeting: format!("hello! this is the {model} socklab server!!"),
        }
    }
}

impl Protocol for Hello {
    fn open(&mut self, _now: Now, out: &mut Replies) {
        out.send(self.greeting.as_bytes());
        out.close();
    }

    fn message(&mut self, _msg: &[u8], _now: Now, _out: &mut Replies) {
        // Whatever the client says is ignored; the greeting is the reply.
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::service::tests::Harness;
    use crate::service::{ServiceConfig, ServiceKind};

    #[test]
    fn greets_after_the_delay_counted_from_accept() {
        let mut config = ServiceConfig::new(ServiceKind::Hello);
        config.delay = Duration::from_secs(1);
        config.model_name = "thread".into();
        let mut h = Harness::new(config);
        assert_eq!(h.take(), "");
        assert_eq!(h.send(b"anything"), "");
        assert_eq!(
            h.advance(Duration::from_secs(1)),
            "hello! this is the thread socklab server!!"
        );
        assert!(h.session.is_finished());
    }
}
