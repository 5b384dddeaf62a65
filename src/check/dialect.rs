//! What each service says on the wire, as DESIGN section 3 gives it, in the
//! form the cases need: what a server sends on connect, one request whose
//! reply is unmistakable, when that reply is whole, and whether the
//! connection stays open after it. The cases ask; they never name a service
//! for these facts.

use crate::service::ServiceKind;

/// The shape of an expected reply.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Exactly these bytes.
    Bytes(Vec<u8>),
    /// One line (through `\n`) that is exactly this text.
    Line(String),
    /// One line that begins with this text.
    LineStarting(String),
    /// The seeds' timestamp, `2023-12-30 21:45:06.088524` (Python's
    /// `str(datetime.now())`): 26 bytes, digits in place.
    Time,
    /// Text that begins with this and ends at the server's close.
    StartsThenClose(String),
}

impl Expect {
    /// Whether `got` holds a whole reply of this shape (right or wrong).
    pub fn complete(&self, got: &[u8]) -> bool {
        match self {
            // Whole once long enough, or once it went wrong: waiting for
            // the rest of a reply that already differs tells nothing more.
            Expect::Bytes(want) => got.len() >= want.len() || !want.starts_with(got),
            Expect::Line(_) | Expect::LineStarting(_) => got.contains(&b'\n'),
            Expect::Time => got.len() >= 26,
            Expect::StartsThenClose(_) => false,
        }
    }

    /// Whether `got` (a whole reply) is right.
    pub fn matches(&self, got: &[u8]) -> bool {
        match self {
            Expect::Bytes(want) => got == want.as_slice(),
            Expect::Line(want) => first_line(got) == Some(want.as_str()),
            Expect::LineStarting(want) => first_line(got).is_some_and(|l| l.starts_with(want.as_str())),
            Expect::Time => is_time(got),
            Expect::StartsThenClose(want) => got.starts_with(want.as_bytes()),
        }
    }

    /// As a case line says what was expected.
    pub fn describe(&self) -> String {
        match self {
            Expect::Bytes(want) => super::wire::show(want),
            Expect::Line(want) => super::wire::show(format!("{want}\n").as_bytes()),
            Expect::LineStarting(want) => format!("a line starting {}", super::wire::show(want.as_bytes())),
            Expect::Time => "a time like \"2023-12-30 21:45:06.088524\"".into(),
            Expect::StartsThenClose(want) => format!("{}... then close", super::wire::show(want.as_bytes())),
        }
    }
}

/// The first line of `got`, without its `\n` (and a `\r` before it).
fn first_line(got: &[u8]) -> Option<&str> {
    let nl = got.iter().position(|&b| b == b'\n')?;
    let line = &got[..nl];
    std::str::from_utf8(line.strip_suffix(b"\r").unwrap_or(line)).ok()
}

/// `dddd-dd-dd dd:dd:dd.dddddd`, exactly.
pub fn is_time(got: &[u8]) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-dd dd:dd:dd.dddddd";
    got.len() == SHAPE.len()
        && got
            .iter()
            .zip(SHAPE)
            .all(|(&g, &s)| if s == b'd' { g.is_ascii_digit() } else { g == s })
}

/// One request and its reply.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: Vec<u8>,
    pub reply: Expect,
}

/// A service's manners, as the cases need them.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub service: ServiceKind,
    /// What the server sends on connect, before any request.
    pub greeting: Option<Expect>,
    /// A request whose reply shows the server served this connection
    /// (`None`: the greeting is the whole reply).
    pub probe: Option<Exchange>,
    /// The server closes after its reply (time, reverse, hello).
    pub closes_after_reply: bool,
    /// A request is a line (calc, contacts, chat, bytes), else one read.
    pub line: bool,
}

impl Dialect {
    pub fn of(service: ServiceKind) -> Dialect {
        let line = service.default_framing() == crate::service::Framing::Line;
        let exchange = |request: &[u8], reply: Expect| {
            Some(Exchange {
                request: request.to_vec(),
                reply,
            })
        };
        let (greeting, probe, closes) = match service {
            ServiceKind::Echo => (None, exchange(b"ping", Expect::Bytes(b"ping".to_vec())), false),
            ServiceKind::Time => (None, exchange(b"hello world", Expect::Time), true),
            ServiceKind::Reverse => (None, exchange(b"hello", Expect::Bytes(b"olleh".to_vec())), true),
            ServiceKind::Hello => (Some(Expect::StartsThenClose("hello! ".into())), None, true),
            ServiceKind::Welcome => (
                Some(Expect::Bytes(b"Welcome!".to_vec())),
                exchange(b"ping", Expect::Bytes(b"Received ping;".to_vec())),
                false,
            ),
            ServiceKind::Greet => (
                None,
                exchange(b"ping", Expect::Bytes(b"Hello, ping!".to_vec())),
                false,
            ),
            ServiceKind::Calc => (None, exchange(b"1 + 2 * 3\n", Expect::Line("7".into())), false),
            ServiceKind::Contacts => (
                None,
                exchange(
                    b"FIND socklab-check-nobody\n",
                    Expect::Line("ERR not found: socklab-check-nobody".into()),
                ),
                false,
            ),
            ServiceKind::Chat => (
                Some(Expect::LineStarting("* ".into())),
                exchange(b"/who\n", Expect::LineStarting("* in the room: ".into())),
                false,
            ),
            ServiceKind::Bytes => (None, exchange(b"5\n", Expect::Bytes(b"xxxxx".to_vec())), false),
        };
        Dialect {
            service,
            greeting,
            probe,
            closes_after_reply: closes,
            line,
        }
    }

    /// A request several of these make (a probe's request).
    pub fn request(&self) -> &[u8] {
        self.probe.as_ref().map_or(b"", |p| p.request.as_slice())
    }

    /// Whether the service answers requests again and again on one
    /// connection, so that a peer can pile replies up by never reading.
    pub fn answers_repeatedly(&self) -> bool {
        !self.closes_after_reply && self.probe.is_some() && self.service != ServiceKind::Chat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_time_format() {
        assert!(is_time(b"2023-12-30 21:45:06.088524"));
        assert!(!is_time(b"2023-12-30 21:45:06"));
        assert!(!is_time(b"2023-12-30T21:45:06.088524"));
    }

    #[test]
    fn lines_are_whole_at_their_newline() {
        let e = Expect::Line("7".into());
        assert!(!e.complete(b"7"));
        assert!(e.complete(b"7\n") && e.matches(b"7\r\n"));
        assert!(!e.matches(b"7.0\n"));
    }
}
