//! Services: the protocols socklab serves, without any I/O.
//!
//! Two layers, in the spirit of `quinn-proto` and `rustls`:
//!
//! - A [`Protocol`] is one service's logic: it is told that a connection
//!   opened, that a message arrived, that the peer finished, and answers
//!   through [`Replies`]. One file per service.
//! - A [`Session`] wraps a protocol with everything every connection needs:
//!   framing, `--delay` (replies held until their due instant), the idle
//!   and write timeouts, the output buffer, the connection's memory budget,
//!   and the closing handshake. Drivers (the models) feed it bytes and
//!   instants and ask it what to write, when to wake it, and whether it is
//!   finished.
//!
//! Nothing here reads a clock or touches a socket: time comes in as [`Now`],
//! so tests drive sessions in memory with a hand-advanced clock.

pub mod framing;
pub mod room;

mod bytes;
mod calc;
mod chat;
mod contacts;
mod echo;
mod greet;
mod hello;
mod reverse;
mod time;
mod welcome;
pub mod work;

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
///
/// A driver's `Now` reads only the monotonic clock; the wall clock, which
/// one service needs, is read for the calls of a protocol that says it
/// reads it ([`Protocol::reads_wall_clock`]), once per call, before the
/// call: a wake-up costs one clock read, not two, and a service never reads
/// a clock itself. Tests fix both ([`Now::at`]).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    /// `None`: not read (nobody it is handed to reads the wall clock).
    wall: Option<SystemTime>,
}

impl Now {
    /// Reads the monotonic clock. Only drivers call this; services are
    /// handed a `Now`.
    pub fn system() -> Self {
        Now {
            instant: Instant::now(),
            wall: None,
        }
    }

    /// Both clocks given (for tests).
    pub fn at(instant: Instant, wall: SystemTime) -> Self {
        Now {
            instant,
            wall: Some(wall),
        }
    }

    /// This `Now` with its wall clock read, when `needed` and not yet done:
    /// what the session hands a protocol that reads the wall clock.
    pub fn with_wall_if(self, needed: bool) -> Self {
        match (needed, self.wall) {
            (true, None) => Now {
                wall: Some(SystemTime::now()),
                ..self
            },
            _ => self,
        }
    }

    /// The wall clock at this instant. A protocol that reads it says so
    /// ([`Protocol::reads_wall_clock`]) and its calls get it read; one that
    /// did not say so is a bug the debug build stops at, and the release
    /// build covers by reading the clock here.
    pub fn wall(&self) -> SystemTime {
        debug_assert!(
            self.wall.is_some(),
            "a protocol read the wall clock without saying so (Protocol::reads_wall_clock)"
        );
        self.wall.unwrap_or_else(SystemTime::now)
    }

    /// The same instant, `d` later (for tests).
    pub fn advanced(&self, d: Duration) -> Self {
        Now {
            instant: self.instant + d,
            wall: self.wall.map(|wall| wall + d),
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
    /// Stevens' web_child (UNP ch. 30): a line holding N (at most 16 MiB) gets exactly N bytes back
    Bytes,
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
            ServiceKind::Bytes => "bytes",
        }
    }

    /// The framing a service speaks unless `--framing` says otherwise.
    pub fn default_framing(self) -> Framing {
        match self {
            ServiceKind::Calc | ServiceKind::Contacts | ServiceKind::Chat | ServiceKind::Bytes => {
                Framing::Line
            }
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

/// Text a peer gave, made safe to show another peer's terminal: every
/// control character but tab (escape sequences, BEL, NUL, a bare CR that
/// would let a line overwrite its own prefix) is written as `\NNN` in
/// octal, as ncat's `--chat` does.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            let code = c as u32;
            if code < 0o400 {
                out.push_str(&format!("\\{code:03o}"));
            } else {
                out.push_str(&format!("\\u{{{code:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `--write-timeout` unless the user says otherwise.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `contacts` keeps its book unless `--db` says otherwise.
pub const DEFAULT_DB: &str = "socklab-contacts.db";

/// Everything a session needs to know about the server it runs in.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub kind: ServiceKind,
    pub framing: Framing,
    /// `--delay`: every reply is held this long (for `hello`, from accept).
    pub delay: Duration,
    /// `--idle-timeout`: a connection that completes no request (and to
    /// which no reply makes progress) for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// `--write-timeout`: a connection whose owed output makes no progress
    /// for this long (in total, not per write) is dropped.
    pub write_timeout: Duration,
    /// `--max-line`: the longest line `line` framing accepts.
    pub max_line: usize,
    /// The model's name, which `hello` puts in its greeting.
    pub model_name: String,
    /// `--db`: where `contacts` keeps its book.
    pub db: PathBuf,
    /// `--work`: CPU spent on every request before it is answered (a busy
    /// computation, see [`work::spend`]), whatever the model.
    pub work: Duration,
}

impl ServiceConfig {
    pub fn new(kind: ServiceKind) -> Self {
        ServiceConfig {
            kind,
            framing: kind.default_framing(),
            delay: Duration::ZERO,
            idle_timeout: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_line: DEFAULT_MAX_LINE,
            model_name: "socklab".into(),
            db: PathBuf::from(DEFAULT_DB),
            work: Duration::ZERO,
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
        work::spend(self.config.work);
        let now = now.with_wall_if(protocol.reads_wall_clock());
        protocol.message(msg, now, &mut replies);
        if protocol.has_more() {
            // A reply made in pieces (bytes) is larger than any datagram.
            return Some(b"ERR reply too large for a datagram".to_vec());
        }
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
            ServiceKind::Bytes => Box::new(bytes::Bytes::default()),
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

    /// Whether the protocol can take more input now. A chat member that
    /// spoke while the room is behind is held back until it catches up; its
    /// wake says when.
    fn accepts_input(&self) -> bool {
        true
    }

    /// More of a reply too large to make at once (bytes' 16 MiB): called
    /// whenever the connection's output has drained while
    /// [`has_more`](Protocol::has_more), with how many bytes it may add.
    /// Its output goes out at once, behind what went before (a `--delay`
    /// held the reply's first part).
    fn more(&mut self, _room: usize, _out: &mut Replies) {}

    /// Whether the protocol still owes output it will make in
    /// [`more`](Protocol::more). A close asked meanwhile (EOF, shutdown)
    /// waits for it.
    fn has_more(&self) -> bool {
        false
    }

    /// Whether the protocol reads the wall clock (`time`): its calls then
    /// get a [`Now`] whose wall clock was read for them. Asked once per
    /// connection, so the other protocols' requests cost no clock read.
    fn reads_wall_clock(&self) -> bool {
        false
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

    /// Bytes as they are, not framed: `n` copies of `byte` (part of a
    /// reply made in pieces).
    pub fn raw_fill(&mut self, byte: u8, n: usize) {
        self.out.resize(self.out.len() + n, byte);
    }

    /// How many bytes of replies this call has made so far.
    pub fn len(&self) -> usize {
        self.out.len() - self.base
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// The memory budget of one connection: everything the server holds for it
/// (output not yet written, replies held for `--delay`, chat lines taken
/// from its inbox). At the budget the session stops asking for input, so a
/// peer that does not read, or pipelines requests under a delay, cannot make
/// the server buffer without bound.
pub const CONNECTION_BUDGET: usize = 256 * 1024;

/// A batch of replies waiting for its `--delay` to pass.
#[derive(Debug)]
struct Held {
    due: Instant,
    bytes: Vec<u8>,
    close: bool,
}

impl Held {
    /// What the batch costs the budget: its bytes and its bookkeeping, so
    /// that a flood of empty-reply requests is bounded too.
    fn cost(&self) -> usize {
        self.bytes.capacity() + std::mem::size_of::<Held>() + 16
    }
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
    /// Whether the protocol has an inbox (chat), asked once: every
    /// request's path checks it, and a virtual call each time is a cost
    /// the other services would pay for nothing.
    has_inbox: bool,
    /// Whether the protocol reads the wall clock, asked once likewise.
    wall_clock: bool,
    decoder: Decoder,
    framing: Framing,
    delay: Duration,
    /// `--work`: CPU spent on each request.
    work: Duration,
    idle_timeout: Option<Duration>,
    write_timeout: Duration,
    /// Bytes ready to be written now; `out_pos` of them already were.
    out: Vec<u8>,
    out_pos: usize,
    /// Replies held by `--delay`, in due order (every batch waits the same),
    /// and what they cost the budget.
    held: VecDeque<Held>,
    held_cost: usize,
    /// Set once the protocol asked to close and every reply before it is out.
    closing: bool,
    /// A close was asked while the protocol still had more to make
    /// ([`Protocol::more`]): it comes once that is made.
    close_after_more: bool,
    /// The peer sent EOF; nothing more will be read.
    peer_finished: bool,
    /// When the connection is closed for want of a complete request.
    idle_deadline: Option<Instant>,
    /// Since when owed output has made no progress: given up on
    /// `write_timeout` later. The start, not the deadline, is kept, so a
    /// reply written at once costs no clock arithmetic.
    write_since: Option<Instant>,
    /// When a chat member whose full inbox holds the room back is dropped.
    stall_deadline: Option<Instant>,
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
        let wall_clock = protocol.reads_wall_clock();
        let mut greeting = Replies::new(config.framing);
        protocol.open(now.with_wall_if(wall_clock), &mut greeting);
        let has_inbox = protocol.inbox().is_some();
        let mut session = Session {
            protocol,
            has_inbox,
            wall_clock,
            decoder: Decoder::new(config.framing, config.max_line),
            framing: config.framing,
            delay: config.delay,
            work: config.work,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            out: Vec::new(),
            out_pos: 0,
            held: VecDeque::new(),
            held_cost: 0,
            closing: false,
            close_after_more: false,
            peer_finished: false,
            idle_deadline: None,
            write_since: None,
            stall_deadline: None,
        };
        session.active(now.instant);
        session.take(greeting, now);
        session
    }

    /// Bytes read from the peer.
    pub fn handle_read(&mut self, data: &[u8], now: Now) {
        if self.closing || self.peer_finished {
            return; // Late input after we decided to close is discarded.
        }
        let now = now.with_wall_if(self.wall_clock);
        let mut replies = self.replies();
        let protocol = &mut self.protocol;
        let mut too_long = false;
        let mut complete = false;
        let work = self.work;
        self.decoder.decode(data, |frame| match frame {
            Frame::Message(msg) => {
                complete = true;
                work::spend(work);
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
        if complete {
            // Only a whole request counts: a trickle of bytes that never
            // makes one does not keep the connection.
            self.active(now.instant);
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
        let now = now.with_wall_if(self.wall_clock);
        let mut replies = self.replies();
        if let Some(last_line) = self.decoder.finish() {
            if !self.closing {
                work::spend(self.work);
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
                self.held_cost -= held.cost();
                self.release(held.bytes, held.close, now.instant);
            }
        }
        let due = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now.instant);
        if due(self.write_deadline()) {
            tracing::info!(
                timeout = ?self.write_timeout,
                unsent = self.pending_output().len(),
                "dropping a connection whose peer does not read"
            );
            self.drop_everything();
        } else if due(self.stall_deadline) {
            if self.protocol.inbox().is_some_and(|inbox| inbox.is_full()) {
                tracing::info!(
                    stall = ?room::ROOM_STALL,
                    "dropping a chat member that kept the room waiting"
                );
                self.drop_everything();
            } else {
                self.stall_deadline = None;
            }
        } else if due(self.idle_deadline) && !self.closing && self.held.is_empty() {
            // (A reply held for --delay is the server's wait, not the peer's.)
            if self.pending_output().is_empty() {
                tracing::debug!("closing an idle connection");
                self.idle_deadline = None;
                self.held.clear();
                self.held_cost = 0;
                self.closing = true;
            } else {
                // Idle with output owed: no write progress for as long, so
                // waiting on for the write timeout would hold a peer that
                // does not read past what --idle-timeout promises.
                tracing::info!("dropping an idle connection whose peer does not read");
                self.drop_everything();
            }
        }
    }

    /// Gives up on the connection: nothing owed will be sent.
    fn drop_everything(&mut self) {
        self.held.clear();
        self.held_cost = 0;
        self.out = Vec::new();
        self.out_pos = 0;
        self.write_since = None;
        self.stall_deadline = None;
        self.idle_deadline = None;
        self.closing = true;
    }

    /// A request completed, or a reply made progress: the idle clock
    /// starts again.
    fn active(&mut self, now: Instant) {
        if !self.peer_finished {
            self.idle_deadline = self.idle_timeout.map(|t| now + t);
        }
    }

    /// The server is shutting down: take no more requests, but let the
    /// replies already owed (even delayed ones) go out first.
    pub fn handle_shutdown(&mut self) {
        self.peer_finished = true;
        self.idle_deadline = None;
        if let Some(inbox) = self.protocol.inbox() {
            inbox.take_into(&mut Vec::new(), usize::MAX); // Room news is not owed.
        }
        match self.held.back_mut() {
            Some(last) => last.close = true,
            None => self.set_closing(),
        }
    }

    /// Close once everything owed is out, including what the protocol has
    /// still to make ([`Protocol::more`]).
    fn set_closing(&mut self) {
        if self.protocol.has_more() {
            self.close_after_more = true;
        } else {
            self.closing = true;
        }
    }

    /// The output has drained and the protocol has more of a reply to
    /// make: its next piece, within the budget. Every driver gets it the
    /// same way, from [`consume_output`](Session::consume_output).
    #[inline]
    fn fill(&mut self, now: Instant) {
        // Output still owed is the usual case: nothing to make yet.
        if self.out_pos < self.out.len() || self.closing || !self.held.is_empty() {
            return;
        }
        self.fill_more(now);
    }

    fn fill_more(&mut self, now: Instant) {
        if !self.protocol.has_more() {
            return;
        }
        let room = CONNECTION_BUDGET.saturating_sub(self.cost());
        let mut replies = self.replies();
        self.protocol.more(room, &mut replies);
        let close = replies.close;
        self.out = replies.out;
        self.output_added(true, now);
        if close || self.close_after_more {
            self.set_closing();
        }
    }

    /// Whether other connections may give this session work, so that its
    /// driver must register a [`Wake`] with [`set_wake`](Session::set_wake).
    pub fn uses_wake(&self) -> bool {
        self.has_inbox
    }

    /// How the driver wants to be called back when another connection has
    /// left something for this one; it then calls
    /// [`handle_wake`](Session::handle_wake). Called from other threads.
    pub fn set_wake(&mut self, wake: Wake) {
        if let Some(inbox) = self.protocol.inbox() {
            inbox.set_wake(wake);
        }
    }

    /// Takes what other connections left (chat lines) into the output, as
    /// much as the budget allows; the rest waits in the inbox and is taken
    /// as the output drains. Also called when a held-back speaker may go on.
    pub fn handle_wake(&mut self, now: Now) {
        self.take_inbox(now.instant);
    }

    #[inline]
    fn take_inbox(&mut self, now: Instant) {
        if self.has_inbox {
            self.take_inbox_now(now);
        }
    }

    fn take_inbox_now(&mut self, now: Instant) {
        let Some(inbox) = self.protocol.inbox() else {
            return;
        };
        if self.closing || self.peer_finished {
            return;
        }
        let was_empty = self.out_pos == self.out.len();
        let room = CONNECTION_BUDGET.saturating_sub(self.cost());
        if inbox.take_into(&mut self.out, room) {
            // This member's reading holds the room back: the clock runs.
            self.stall_deadline.get_or_insert(now + room::ROOM_STALL);
        } else {
            self.stall_deadline = None;
        }
        self.output_added(was_empty, now);
    }

    fn write_deadline(&self) -> Option<Instant> {
        self.write_since.map(|since| since + self.write_timeout)
    }

    /// The next instant at which [`handle_timeout`](Session::handle_timeout)
    /// has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Asked after every request: four comparisons, not an iterator.
        fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        let due = earlier(self.held.front().map(|h| h.due), self.idle_deadline);
        earlier(earlier(due, self.write_deadline()), self.stall_deadline)
    }

    /// What the server holds for this connection now, against
    /// [`CONNECTION_BUDGET`]: output not yet written and replies held for
    /// `--delay` (chat lines count once taken from the inbox, which is
    /// bounded by the room).
    pub fn cost(&self) -> usize {
        (self.out.len() - self.out_pos) + self.held_cost
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

    /// `n` bytes of [`pending_output`](Session::pending_output) were
    /// written at `now`: progress, which restarts the write and idle clocks.
    pub fn consume_output(&mut self, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > 4 * CHUNK_SIZE {
                // Give back what a burst needed; an idle connection holds nothing.
                self.out = Vec::new();
            }
            self.write_since = None;
        } else {
            self.write_since = Some(now);
        }
        self.active(now);
        self.fill(now);
        self.take_inbox(now);
    }

    /// Whether the session holds as much for its peer as its budget allows:
    /// a driver that already has more of the peer's input (a multishot
    /// receive's read-ahead) keeps it until this turns false.
    pub fn over_budget(&self) -> bool {
        self.cost() >= CONNECTION_BUDGET
    }

    /// Whether the driver should read: the peer may still send, we have not
    /// decided to close, what we hold for the peer is within its budget, and
    /// the protocol takes input (a held-back chat speaker does not).
    pub fn wants_read(&self) -> bool {
        !self.peer_finished && !self.closing && !self.over_budget() && self.protocol.accepts_input()
    }

    /// Whether something other than the peer can still give this session
    /// work (another connection, through its wake): a driver must not
    /// conclude that a session that wants nothing now is over.
    pub fn may_be_woken(&self) -> bool {
        !self.closing && self.uses_wake()
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
            let was_empty = self.out_pos == base;
            self.out = out;
            if close {
                self.set_closing();
            }
            self.output_added(was_empty, now.instant);
            self.fill(now.instant);
            return;
        }
        let new = out.split_off(base);
        self.out = out;
        if immediate || (new.is_empty() && !close) {
            return; // After our close nothing more goes out.
        }
        if new.is_empty() && self.held.is_empty() {
            // A close with nothing owed before it: no reply to delay.
            self.set_closing();
            self.fill(now.instant);
            return;
        }
        let held = Held {
            due: now.instant + self.delay,
            bytes: new,
            close,
        };
        self.held_cost += held.cost();
        self.held.push_back(held);
    }

    fn release(&mut self, bytes: Vec<u8>, close: bool, now: Instant) {
        if self.closing {
            return;
        }
        let was_empty = self.out_pos == self.out.len();
        if self.out.is_empty() {
            self.out = bytes;
        } else {
            self.out.extend_from_slice(&bytes);
        }
        if close {
            self.set_closing();
        }
        self.output_added(was_empty, now);
        self.active(now); // The clock starts when the reply can go out.
        self.fill(now);
    }

    /// Output was appended: if there was none before, the write clock starts.
    fn output_added(&mut self, was_empty: bool, now: Instant) {
        if was_empty && self.out_pos < self.out.len() {
            self.write_since = Some(now);
        }
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

        /// Writes everything owed, as a peer that reads everything would
        /// let a driver do (the output may refill from a chat inbox).
        pub fn drain(&mut self) {
            while !self.session.pending_output().is_empty() {
                let n = self.session.pending_output().len();
                self.written.extend_from_slice(self.session.pending_output());
                self.session.consume_output(n, self.now.instant);
            }
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
    fn the_wall_clock_is_read_for_the_protocols_that_say_they_read_it() {
        let now = Now::system();
        assert!(now.with_wall_if(false).wall.is_none(), "no clock read for echo");
        let read = now.with_wall_if(true);
        assert!(read.wall.is_some());
        assert_eq!(read.with_wall_if(true).wall, read.wall, "read once per call");
        assert!(time::Time.reads_wall_clock());
        assert!(!echo::Echo.reads_wall_clock());
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
    fn a_trickle_that_never_completes_a_request_does_not_reset_the_idle_clock() {
        let mut config = ServiceConfig::new(ServiceKind::Calc);
        config.idle_timeout = Some(Duration::from_secs(2));
        let mut h = Harness::new(config);
        for byte in b"1 + 1" {
            h.advance(Duration::from_millis(500));
            assert_eq!(h.send(&[*byte]), "");
        }
        assert!(h.session.is_finished(), "2 s without a whole request");
    }

    #[test]
    fn output_that_makes_no_progress_is_given_up_after_the_write_timeout() {
        let mut config = ServiceConfig::new(ServiceKind::Echo);
        config.write_timeout = Duration::from_secs(30);
        let mut h = Harness::new(config);
        let now = h.now;
        h.session.handle_read(&[b'x'; 1000], now);
        // A peer that takes a little, then nothing.
        h.session
            .consume_output(100, now.instant + Duration::from_secs(10));
        assert_eq!(
            h.session.poll_timeout(),
            Some(now.instant + Duration::from_secs(40)),
            "progress restarts the clock; the whole reply is not given a new one per write"
        );
        h.now = now.advanced(Duration::from_secs(40));
        h.session.handle_timeout(h.now);
        assert!(h.session.is_finished());
        assert!(h.session.pending_output().is_empty());
    }

    #[test]
    fn replies_held_for_delay_count_against_the_budget() {
        let mut config = ServiceConfig::new(ServiceKind::Echo);
        config.delay = Duration::from_secs(5);
        let mut h = Harness::new(config);
        let mut requests = 0;
        while h.session.wants_read() {
            h.session.handle_read(b"x", h.now);
            requests += 1;
        }
        assert!(h.session.cost() >= CONNECTION_BUDGET);
        assert!(
            requests < CONNECTION_BUDGET / 64,
            "{requests} one-byte requests held"
        );
        h.advance(Duration::from_secs(5));
        assert!(h.session.wants_read(), "the replies went out: reading again");
    }

    #[test]
    fn a_reply_held_for_delay_is_not_idleness() {
        let mut config = ServiceConfig::new(ServiceKind::Greet);
        config.delay = Duration::from_secs(1);
        config.idle_timeout = Some(Duration::from_secs(1));
        let mut h = Harness::new(config);
        h.send(b"x");
        assert_eq!(h.advance(Duration::from_secs(1)), "Hello, x!");
        assert!(!h.session.is_finished());
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
        assert!(h.session.pending_output().len() >= CONNECTION_BUDGET);
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
