//! Services: the protocols socklab serves, without any I/O.
//!
//! Two layers, in the spirit of `quinn-proto` and `rustls`:
//!
//! - A [`Protocol`] is one service's logic: it is told that a connection
//!   opened, that a message arrived, that the peer finished, and answers
//!   through [`Replies`]. One file per service.
//! - A [`Session`] wraps a protocol with everything every connection needs:
//!   framing, `--delay` (replies held until their due instant), the idle
//!   timeout, the output buffer and its high-water mark, and the closing
//!   handshake. Drivers (the models) feed it bytes and instants and ask it
//!   what to write, when to wake it, and whether it is finished.
//!
//! Nothing here reads a clock or touches a socket: time comes in as [`Now`],
//! so tests drive sessions in memory with a hand-advanced clock.

pub mod framing;
pub mod room;

mod calc;
mod chat;
mod contacts;
mod echo;
mod greet;
mod hello;
mod reverse;
mod time;
mod welcome;

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::store::Store;
use framing::{Decoder, Frame};
pub use framing::{Framing, CHUNK_SIZE, DEFAULT_MAX_LINE};
use room::{Inbox, Room, Wake};

/// The instant a session is told about: monotonic time for deadlines, wall
/// time for services that report it (`time`). Drivers make one per wake-up.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// Reads both clocks. Only drivers call this; services are handed a `Now`.
    pub fn system() -> Self {
        Now {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The same wall clock, `d` later (for tests and timers).
    pub fn advanced(&self, d: Duration) -> Self {
        Now {
            instant: self.instant + d,
            wall: self.wall + d,
        }
    }
}

/// The services of DESIGN section 3 that exist so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceKind {
    /// every byte back, as it arrives, until EOF
    Echo,
    /// the local time `2023-12-30 21:45:06.088524`, then close
    Time,
    /// the message's characters reversed, then close
    Reverse,
    /// after --delay, `hello! this is the <model> socklab server!!`, then close
    Hello,
    /// `Welcome!`, then `Received <message>;` until `exit`
    Welcome,
    /// `Hello, <message>!` for every message
    Greet,
    /// evaluates arithmetic, one expression per line: `+ - * / % ^`, parentheses
    Calc,
    /// a durable contact book: `ADD name phone`, `FIND name`, `REMOVE name`, `LIST`
    Contacts,
    /// a room: every line goes to everyone else as `<nick> text`
    Chat,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Echo => "echo",
            ServiceKind::Time => "time",
            ServiceKind::Reverse => "reverse",
            ServiceKind::Hello => "hello",
            ServiceKind::Welcome => "welcome",
            ServiceKind::Greet => "greet",
            ServiceKind::Calc => "calc",
            ServiceKind::Contacts => "contacts",
            ServiceKind::Chat => "chat",
        }
    }

    /// The framing a service speaks unless `--framing` says otherwise.
    pub fn default_framing(self) -> Framing {
        match self {
            ServiceKind::Calc | ServiceKind::Contacts | ServiceKind::Chat => Framing::Line,
            _ => Framing::Chunk,
        }
    }

    /// Whether the service keeps state shared by every connection (a chat
    /// room): such a service cannot be split across forked processes.
    pub fn shares_state_across_connections(self) -> bool {
        self == ServiceKind::Chat
    }

    /// Whether the service makes sense one datagram at a time; the others
    /// need a connection (a greeting, a conversation, a room).
    pub fn over_datagrams(self) -> bool {
        !matches!(
            self,
            ServiceKind::Hello | ServiceKind::Welcome | ServiceKind::Chat
        )
    }

    /// Whether a session can be given work by another connection (a chat
    /// line), so that its driver must be able to be woken for it
    /// ([`Session::set_wake`]).
    pub fn needs_wake(self) -> bool {
        self == ServiceKind::Chat
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where `contacts` keeps its book unless `--db` says otherwise.
pub const DEFAULT_DB: &str = "socklab-contacts.db";

/// Everything a session needs to know about the server it runs in.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub kind: ServiceKind,
    pub framing: Framing,
    /// `--delay`: every reply is held this long (for `hello`, from accept).
    pub delay: Duration,
    /// `--idle-timeout`: a connection silent this long is closed.
    pub idle_timeout: Option<Duration>,
    /// `--max-line`: the longest line `line` framing accepts.
    pub max_line: usize,
    /// The model's name, which `hello` puts in its greeting.
    pub model_name: String,
    /// `--db`: where `contacts` keeps its book.
    pub db: PathBuf,
}

impl ServiceConfig {
    pub fn new(kind: ServiceKind) -> Self {
        ServiceConfig {
            kind,
            framing: kind.default_framing(),
            delay: Duration::ZERO,
            idle_timeout: None,
            max_line: DEFAULT_MAX_LINE,
            model_name: "socklab".into(),
            db: PathBuf::from(DEFAULT_DB),
        }
    }
}

/// A service ready to serve: its configuration, plus the state its
/// connections share (the contact book). Shared between threads behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Service {
    config: ServiceConfig,
    /// `contacts`' storage, opened on first use in each process.
    store: Option<Arc<Store>>,
    /// `chat`'s room, shared by every connection.
    room: Arc<Room>,
}

impl Service {
    pub fn new(config: ServiceConfig) -> Self {
        let store = (config.kind == ServiceKind::Contacts).then(|| Arc::new(Store::new(&config.db)));
        Service {
            config,
            store,
            room: Arc::default(),
        }
    }

    /// Opens what the service needs (its database) so that a problem is an
    /// error at start rather than at the first request.
    pub fn check(&self) -> anyhow::Result<()> {
        match &self.store {
            Some(store) => store.check(),
            None => Ok(()),
        }
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// A session for a connection accepted at `now`.
    pub fn session(&self, now: Now) -> Session {
        Session::new(&self.config, self.protocol(), now)
    }

    /// The reply to one datagram, for UDP drivers: a fresh protocol, one
    /// message, everything it answers concatenated. `None` when it answers
    /// nothing.
    pub fn datagram(&self, msg: &[u8], now: Now) -> Option<Vec<u8>> {
        let mut protocol = self.protocol();
        let mut replies = Replies::new(self.config.framing);
        protocol.message(msg, now, &mut replies);
        let mut reply = replies.out;
        if self.config.framing == Framing::Line && reply.ends_with(b"\n") {
            reply.pop(); // The datagram ends the last line.
        }
        (!reply.is_empty()).then_some(reply)
    }

    fn protocol(&self) -> Box<dyn Protocol> {
        match self.config.kind {
            ServiceKind::Echo => Box::new(echo::Echo),
            ServiceKind::Time => Box::new(time::Time),
            ServiceKind::Reverse => Box::new(reverse::Reverse::default()),
            ServiceKind::Hello => Box::new(hello::Hello::new(&self.config.model_name)),
            ServiceKind::Welcome => Box::new(welcome::Welcome),
            ServiceKind::Greet => Box::new(greet::Greet),
            ServiceKind::Calc => Box::new(calc::Calc),
            ServiceKind::Chat => Box::new(chat::Chat::join(self.room.clone())),
            ServiceKind::Contacts => Box::new(contacts::Contacts {
                store: self
                    .store
                    .clone()
                    .unwrap_or_else(|| Arc::new(Store::new(&self.config.db))),
            }),
        }
    }
}

/// One service's logic. Each method answers through `out`; a protocol never
/// sees framing, delays or sockets.
pub trait Protocol: Send {
    /// The connection has just been accepted.
    fn open(&mut self, _now: Now, _out: &mut Replies) {}

    /// One message arrived (one read for `chunk`, one line for `line`).
    fn message(&mut self, msg: &[u8], now: Now, out: &mut Replies);

    /// The peer will send nothing more. By default the session closes once
    /// every reply has gone out.
    fn finish(&mut self, _now: Now, out: &mut Replies) {
        out.close();
    }

    /// Where other connections leave messages for this one (chat only).
    fn inbox(&self) -> Option<&Arc<Inbox>> {
        None
    }
}

/// Where a protocol puts its answers: reply messages (framed on the way in)
/// and, at most once, the wish to close after them.
#[derive(Debug)]
pub struct Replies {
    framing: Framing,
    /// The replies, after `base` bytes of earlier output that are not ours
    /// (a session lends its output buffer, so that replies going out at
    /// once are written where they will be sent from: no copy, no
    /// allocation per message).
    out: Vec<u8>,
    base: usize,
    close: bool,
    /// These replies go out at once even under `--delay` (a greeting that
    /// the seeds send before they ever sleep).
    undelayed: bool,
}

impl Replies {
    fn new(framing: Framing) -> Self {
        Self::after(framing, Vec::new())
    }

    /// Replies written after the output already in `out`.
    fn after(framing: Framing, out: Vec<u8>) -> Self {
        Replies {
            framing,
            base: out.len(),
            out,
            close: false,
            undelayed: false,
        }
    }

    /// Send these replies at once, not after `--delay`.
    pub fn without_delay(&mut self) {
        self.undelayed = true;
    }

    /// One reply message.
    pub fn send(&mut self, reply: &[u8]) {
        framing::encode(self.framing, reply, &mut self.out);
    }

    /// One reply message, formatted in place (no intermediate `String`).
    pub fn send_fmt(&mut self, args: fmt::Arguments<'_>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = self.out.write_fmt(args);
        if self.framing == Framing::Line {
            self.out.push(b'\n');
        }
    }

    /// A protocol error: one `ERR <reason>` reply; the connection stays open.
    pub fn error(&mut self, reason: impl fmt::Display) {
        self.send_fmt(format_args!("ERR {reason}"));
    }

    /// Close the connection once the replies sent so far have gone out.
    pub fn close(&mut self) {
        self.close = true;
    }
}

/// Above this many unsent bytes a session stops asking for input, so a peer
/// that does not read cannot make the server buffer without bound.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// A batch of replies waiting for its `--delay` to pass.
#[derive(Debug)]
struct Held {
    due: Instant,
    bytes: Vec<u8>,
    close: bool,
}

/// A connection's protocol state, framing and output, driven by a model.
///
/// The driver's loop, whatever the model:
/// 1. write [`pending_output`](Session::pending_output), then
///    [`consume_output`](Session::consume_output) what was written;
/// 2. stop when [`is_finished`](Session::is_finished);
/// 3. read when [`wants_read`](Session::wants_read), passing the bytes to
///    [`handle_read`](Session::handle_read) (or EOF to
///    [`handle_eof`](Session::handle_eof));
/// 4. wake at [`poll_timeout`](Session::poll_timeout) and call
///    [`handle_timeout`](Session::handle_timeout).
pub struct Session {
    protocol: Box<dyn Protocol>,
    decoder: Decoder,
    framing: Framing,
    delay: Duration,
    idle_timeout: Option<Duration>,
    /// Bytes ready to be written now; `out_pos` of them already were.
    out: Vec<u8>,
    out_pos: usize,
    /// Replies held by `--delay`, in due order (every batch waits the same).
    held: VecDeque<Held>,
    /// Set once the protocol asked to close and every reply before it is out.
    closing: bool,
    /// The peer sent EOF; nothing more will be read.
    peer_finished: bool,
    /// When the connection is closed for silence.
    idle_deadline: Option<Instant>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("pending", &(self.out.len() - self.out_pos))
            .field("held", &self.held.len())
            .field("closing", &self.closing)
            .field("peer_finished", &self.peer_finished)
            .finish()
    }
}

impl Session {
    pub fn new(config: &ServiceConfig, mut protocol: Box<dyn Protocol>, now: Now) -> Self {
        let mut greeting = Replies::new(config.framing);
        protocol.open(now, &mut greeting);
        let mut session = Session {
            protocol,
            decoder: Decoder::new(config.framing, config.max_line),
            framing: config.framing,
            delay: config.delay,
            idle_timeout: config.idle_timeout,
            out: Vec::new(),
            out_pos: 0,
            held: VecDeque::new(),
            closing: false,
            peer_finished: false,
            idle_deadline: config.idle_timeout.map(|t| now.instant + t),
        };
        session.take(greeting, now);
        session
    }

    /// Bytes read from the peer.
    pub fn handle_read(&mut self, data: &[u8], now: Now) {
        if self.closing || self.peer_finished {
            return; // Late input after we decided to close is discarded.
        }
        if let Some(t) = self.idle_timeout {
            self.idle_deadline = Some(now.instant + t);
        }
        let mut replies = self.replies();
        let protocol = &mut self.protocol;
        let mut too_long = false;
        self.decoder.decode(data, |frame| match frame {
            Frame::Message(msg) => {
                protocol.message(msg, now, &mut replies);
                !replies.close
            }
            Frame::TooLong => {
                too_long = true;
                false
            }
        });
        if too_long {
            replies.error("line too long");
            replies.close();
        }
        self.take(replies, now);
    }

    /// The peer shut down its side (read returned 0).
    pub fn handle_eof(&mut self, now: Now) {
        if self.peer_finished {
            return;
        }
        self.peer_finished = true;
        self.idle_deadline = None;
        let mut replies = self.replies();
        if let Some(last_line) = self.decoder.finish() {
            if !self.closing {
                self.protocol.message(&last_line, now, &mut replies);
            }
        }
        if !replies.close {
            self.protocol.finish(now, &mut replies);
        }
        self.take(replies, now);
    }

    /// Time has reached (or passed) [`poll_timeout`](Session::poll_timeout).
    pub fn handle_timeout(&mut self, now: Now) {
        while self.held.front().is_some_and(|h| h.due <= now.instant) {
            if let Some(held) = self.held.pop_front() {
                self.release(held.bytes, held.close);
            }
        }
        if self.idle_deadline.is_some_and(|d| d <= now.instant) && !self.closing {
            tracing::debug!("closing an idle connection");
            self.idle_deadline = None;
            self.held.clear();
            self.closing = true;
        }
    }

    /// The server is shutting down: take no more requests, but let the
    /// replies already owed (even delayed ones) go out first.
    pub fn handle_shutdown(&mut self) {
        self.peer_finished = true;
        self.idle_deadline = None;
        match self.held.back_mut() {
            Some(last) => last.close = true,
            None => self.closing = true,
        }
    }

    /// Whether other connections may give this session work, so that its
    /// driver must register a [`Wake`] with [`set_wake`](Session::set_wake).
    pub fn uses_wake(&self) -> bool {
        self.protocol.inbox().is_some()
    }

    /// How the driver wants to be called back when another connection has
    /// left something for this one; it then calls
    /// [`handle_wake`](Session::handle_wake). Called from other threads.
    pub fn set_wake(&mut self, wake: Wake) {
        if let Some(inbox) = self.protocol.inbox() {
            inbox.set_wake(wake);
        }
    }

    /// Takes what other connections left (chat lines) into the output. A
    /// member too far behind is disconnected.
    pub fn handle_wake(&mut self, _now: Now) {
        let Some(inbox) = self.protocol.inbox() else {
            return;
        };
        let delivery = inbox.take();
        if delivery.overflowed {
            tracing::info!("disconnecting a member too slow to read the room");
            self.held.clear();
            self.out.clear();
            self.out_pos = 0;
            self.closing = true;
        } else if !self.closing {
            self.out.extend_from_slice(&delivery.bytes);
        }
    }

    /// The next instant at which [`handle_timeout`](Session::handle_timeout)
    /// has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = self.held.front().map(|h| h.due);
        match (held, self.idle_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a reply is waiting for its `--delay` (blocking models sleep
    /// through it, as the seeds' servers do).
    pub fn has_held_replies(&self) -> bool {
        !self.held.is_empty()
    }

    /// Bytes to write now.
    pub fn pending_output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// `n` bytes of [`pending_output`](Session::pending_output) were written.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > 4 * CHUNK_SIZE {
                // Give back what a burst needed; an idle connection holds nothing.
                self.out = Vec::new();
            }
        }
    }

    /// Whether the driver should read: the peer may still send, we have not
    /// decided to close, and the peer is keeping up with our output.
    pub fn wants_read(&self) -> bool {
        !self.peer_finished && !self.closing && self.out.len() - self.out_pos < OUTPUT_HIGH_WATER
    }

    /// Everything owed has been written and the connection should close.
    pub fn is_finished(&self) -> bool {
        self.closing && self.out_pos == self.out.len()
    }

    /// Lends the output buffer to a protocol call.
    fn replies(&mut self) -> Replies {
        Replies::after(self.framing, std::mem::take(&mut self.out))
    }

    /// A protocol call's replies: out now, or held for `--delay`.
    fn take(&mut self, replies: Replies, now: Now) {
        let Replies {
            mut out,
            base,
            close,
            undelayed,
            ..
        } = replies;
        let immediate = (self.delay.is_zero() || undelayed) && self.held.is_empty();
        if immediate && !self.closing {
            // Already in place behind the earlier output.
            self.out = out;
            self.closing = close;
            return;
        }
        let new = out.split_off(base);
        self.out = out;
        if immediate || (new.is_empty() && !close) {
            return; // After our close nothing more goes out.
        }
        self.held.push_back(Held {
            due: now.instant + self.delay,
            bytes: new,
            close,
        });
    }

    fn release(&mut self, bytes: Vec<u8>, close: bool) {
        if self.closing {
            return;
        }
        if self.out.is_empty() {
            self.out = bytes;
        } else {
            self.out.extend_from_slice(&bytes);
        }
        self.closing = close;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs a session in memory: what it writes, and whether it closed.
    pub(crate) struct Harness {
        pub session: Session,
        pub now: Now,
        pub written: Vec<u8>,
    }

    impl Harness {
        pub fn new(config: ServiceConfig) -> Self {
            let now = Now::system();
            let session = Service::new(config).session(now);
            let mut h = Harness {
                session,
                now,
                written: Vec::new(),
            };
            h.drain();
            h
        }

        pub fn with_session(session: Session) -> Self {
            let mut h = Harness {
                session,
                now: Now::system(),
                written: Vec::new(),
            };
            h.drain();
            h
        }

        /// What other connections left for this one.
        pub fn wake(&mut self) -> String {
            self.session.handle_wake(self.now);
            self.take()
        }

        pub fn of(kind: ServiceKind) -> Self {
            Self::new(ServiceConfig::new(kind))
        }

        pub fn drain(&mut self) {
            let n = self.session.pending_output().len();
            self.written.extend_from_slice(self.session.pending_output());
            self.session.consume_output(n);
        }

        pub fn send(&mut self, data: &[u8]) -> String {
            self.session.handle_read(data, self.now);
            self.take()
        }

        pub fn advance(&mut self, d: Duration) -> String {
            self.now = self.now.advanced(d);
            self.session.handle_timeout(self.now);
            self.take()
        }

        pub fn take(&mut self) -> String {
            self.drain();
            String::from_utf8_lossy(&std::mem::take(&mut self.written)).into_owned()
        }
    }

    #[test]
    fn delay_holds_replies_and_the_close_behind_them() {
        let mut config = ServiceConfig::new(ServiceKind::Reverse);
        config.delay = Duration::from_secs(1);
        let mut h = Harness::new(config);
        assert_eq!(h.send(b"abc"), "");
        assert!(!h.session.is_finished());
        assert_eq!(
            h.session.poll_timeout(),
            Some(h.now.instant + Duration::from_secs(1))
        );
        assert_eq!(h.advance(Duration::from_millis(999)), "");
        assert_eq!(h.advance(Duration::from_millis(1)), "cba");
        assert!(h.session.is_finished());
    }

    #[test]
    fn idle_timeout_closes_a_silent_connection_and_input_resets_it() {
        let mut config = ServiceConfig::new(ServiceKind::Echo);
        config.idle_timeout = Some(Duration::from_secs(5));
        let mut h = Harness::new(config);
        h.advance(Duration::from_secs(4));
        assert_eq!(h.send(b"x"), "x");
        h.advance(Duration::from_secs(4));
        assert!(!h.session.is_finished());
        h.advance(Duration::from_secs(1));
        assert!(h.session.is_finished());
    }

    #[test]
    fn overlong_line_gets_err_and_close() {
        let mut config = ServiceConfig::new(ServiceKind::Echo);
        config.framing = Framing::Line;
        config.max_line = 8;
        let mut h = Harness::new(config);
        assert_eq!(h.send(b"short\n"), "short\n");
        assert_eq!(h.send(&[b'x'; 100]), "ERR line too long\n");
        assert!(h.session.is_finished());
        assert_eq!(h.send(b"more\n"), "", "nothing is read after the close");
    }

    #[test]
    fn unread_output_stops_reading() {
        let mut h = Harness::of(ServiceKind::Echo);
        let chunk = vec![b'a'; CHUNK_SIZE];
        while h.session.wants_read() {
            h.session.handle_read(&chunk, h.now);
        }
        assert!(h.session.pending_output().len() >= OUTPUT_HIGH_WATER);
        h.drain();
        assert!(h.session.wants_read());
    }

    #[test]
    fn shutdown_lets_a_delayed_reply_out_then_closes() {
        let mut config = ServiceConfig::new(ServiceKind::Greet);
        config.delay = Duration::from_secs(1);
        let mut h = Harness::new(config);
        h.send(b"x");
        h.session.handle_shutdown();
        assert!(!h.session.wants_read());
        assert!(!h.session.is_finished());
        assert_eq!(h.advance(Duration::from_secs(1)), "Hello, x!");
        assert!(h.session.is_finished());
    }

    #[test]
    fn datagram_is_one_reply() {
        let service = Service::new(ServiceConfig::new(ServiceKind::Greet));
        assert_eq!(
            service.datagram(b"m1", Now::system()),
            Some(b"Hello, m1!".to_vec())
        );
    }
}
