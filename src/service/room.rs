//! The chat room: the one state that connections share and push to each
//! other.
//!
//! Still sans-IO: what one member says waits in every other member's
//! [`Inbox`], and each member's driver is told, through the [`Wake`] it
//! registered, to come back and take it ([`Session::handle_wake`]). How a
//! driver wakes (an eventfd, a tokio `Notify`, a ring message) is its own
//! business; the room only calls the function.
//!
//! Nobody can make the room buffer without bound, and a fast talker cannot
//! push a slow reader out:
//! - a member's session takes from its inbox only what fits in its memory
//!   budget; the rest waits in the inbox;
//! - an inbox holding [`INBOX_LIMIT`] bytes makes the room *behind*: whoever
//!   speaks then is held back (its driver stops reading it) until every
//!   inbox has drained to half the limit, and is woken then;
//! - a member whose inbox stays full for [`ROOM_STALL`] is the reader that
//!   does not read: its session drops it, and the room goes on.
//!
//! [`Session::handle_wake`]: super::Session::handle_wake

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How a driver is asked to come back to a session. Called from other
/// connections' threads; must be cheap and must not block.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Bytes waiting for one member at which the room is behind and speakers
/// are held back.
pub const INBOX_LIMIT: usize = 256 * 1024;

/// How long one member's full inbox may hold the room back before that
/// member is disconnected as not reading.
pub const ROOM_STALL: Duration = Duration::from_secs(5);

/// Longest nickname.
const MAX_NICK: usize = 32;

#[derive(Default)]
pub struct Room {
    members: Mutex<BTreeMap<u64, Member>>,
    next_id: AtomicU64,
    congestion: Arc<Mutex<Congestion>>,
}

struct Member {
    nick: String,
    inbox: Arc<Inbox>,
}

/// Which inboxes are full, and who is waiting for them to drain. One lock
/// for both, so a speaker cannot be held back just after the last full
/// inbox drained (and so never be woken).
#[derive(Default)]
struct Congestion {
    full: usize,
    held_back: Vec<Arc<Inbox>>,
}

/// Messages waiting for one member, and how to tell its driver.
pub struct Inbox {
    pending: Mutex<Pending>,
    wake: OnceLock<Wake>,
    /// This member spoke while the room was behind: read nothing more from
    /// it until the room has caught up.
    held_back: AtomicBool,
    congestion: Arc<Mutex<Congestion>>,
}

#[derive(Default)]
struct Pending {
    bytes: VecDeque<u8>,
    /// At [`INBOX_LIMIT`] and not yet back under half of it.
    full: bool,
    /// The member left: its inbox counts for nothing any more.
    retired: bool,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("members", &self.nicks()).finish()
    }
}

impl Inbox {
    fn new(congestion: Arc<Mutex<Congestion>>) -> Self {
        Inbox {
            pending: Mutex::default(),
            wake: OnceLock::new(),
            held_back: AtomicBool::new(false),
            congestion,
        }
    }

    /// Registers the driver's wake-up; only the first call counts.
    pub fn set_wake(&self, wake: Wake) {
        let _ = self.wake.set(wake);
    }

    /// Moves at most `max` waiting bytes to the end of `out`; returns
    /// whether the inbox is still full (holding the room back).
    pub fn take_into(&self, out: &mut Vec<u8>, max: usize) -> bool {
        let mut pending = lock(&self.pending);
        let n = max.min(pending.bytes.len());
        let (a, b) = pending.bytes.as_slices();
        let from_a = n.min(a.len());
        out.extend_from_slice(&a[..from_a]);
        out.extend_from_slice(&b[..n - from_a]);
        pending.bytes.drain(..n);
        if pending.full && pending.bytes.len() <= INBOX_LIMIT / 2 {
            pending.full = false;
            drop(pending);
            self.caught_up();
            return false;
        }
        pending.full
    }

    /// Whether this inbox is holding the room back.
    pub fn is_full(&self) -> bool {
        lock(&self.pending).full
    }

    /// Whether this member is not to be read from until the room catches up.
    pub fn is_held_back(&self) -> bool {
        self.held_back.load(Ordering::Acquire)
    }

    fn push(&self, line: &[u8]) {
        let wake = {
            let mut pending = lock(&self.pending);
            if pending.retired {
                return;
            }
            let was_empty = pending.bytes.is_empty();
            pending.bytes.extend(line);
            let now_full = !pending.full && pending.bytes.len() >= INBOX_LIMIT;
            if now_full {
                pending.full = true;
                lock(&self.congestion).full += 1;
            }
            // Woken when there is news, and when the inbox fills, so the
            // member's session starts the clock on it (ROOM_STALL). Between
            // the two, the session takes more as its output drains.
            if !(was_empty || now_full) {
                return;
            }
            self.wake.get().cloned()
        };
        if let Some(wake) = wake {
            wake();
        }
    }

    /// This inbox is no longer full: if it was the last, the held-back
    /// speakers may go on.
    fn caught_up(&self) {
        let released = {
            let mut congestion = lock(&self.congestion);
            congestion.full -= 1;
            if congestion.full > 0 {
                return;
            }
            std::mem::take(&mut congestion.held_back)
        };
        for speaker in released {
            speaker.held_back.store(false, Ordering::Release);
            if let Some(wake) = speaker.wake.get() {
                wake();
            }
        }
    }

    /// The member left.
    fn retire(&self) {
        let mut pending = lock(&self.pending);
        pending.retired = true;
        pending.bytes = VecDeque::new();
        if std::mem::take(&mut pending.full) {
            drop(pending);
            self.caught_up();
        }
    }
}

impl Room {
    /// A new member, `guest<N>` until it picks a nickname; the others are told.
    pub fn join(&self) -> (u64, Arc<Inbox>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let inbox = Arc::new(Inbox::new(self.congestion.clone()));
        let nick = format!("guest{id}");
        let mut members = lock(&self.members);
        broadcast(&members, id, format!("* {nick} joined\n").as_bytes());
        members.insert(
            id,
            Member {
                nick,
                inbox: inbox.clone(),
            },
        );
        (id, inbox)
    }

    pub fn leave(&self, id: u64) {
        let mut members = lock(&self.members);
        if let Some(member) = members.remove(&id) {
            member.inbox.retire();
            broadcast(&members, id, format!("* {} left\n", member.nick).as_bytes());
        }
    }

    /// Changes a member's nickname; returns the new one.
    pub fn rename(&self, id: u64, nick: &str) -> Result<String, String> {
        let nick = nick.trim();
        if nick.is_empty() || nick.chars().count() > MAX_NICK || nick.contains(char::is_whitespace) {
            return Err(format!("a nickname is one word of at most {MAX_NICK} characters"));
        }
        if nick.contains(|c: char| c.is_control() || c == '<' || c == '>') {
            // Escape sequences would reach every terminal in the room, and
            // angle brackets would let one member pass for another.
            return Err("a nickname is printable, without control characters or < >".into());
        }
        let mut members = lock(&self.members);
        if members.iter().any(|(other, m)| *other != id && m.nick == nick) {
            return Err(format!("{nick} is taken"));
        }
        let old = match members.get_mut(&id) {
            Some(member) => std::mem::replace(&mut member.nick, nick.to_string()),
            None => return Err("not in the room".into()),
        };
        broadcast(&members, id, format!("* {old} is now {nick}\n").as_bytes());
        Ok(nick.to_string())
    }

    /// `<nick> text` to everyone but the speaker. While the room is behind
    /// (an inbox is full), the line is still delivered, but the speaker is
    /// held back until the room catches up.
    pub fn say(&self, id: u64, text: &str) {
        let members = lock(&self.members);
        let Some(speaker) = members.get(&id) else {
            return;
        };
        broadcast(&members, id, format!("<{}> {text}\n", speaker.nick).as_bytes());
        let mut congestion = lock(&self.congestion);
        if congestion.full > 0 && !speaker.inbox.held_back.swap(true, Ordering::AcqRel) {
            congestion.held_back.push(speaker.inbox.clone());
        }
    }

    /// The members' nicknames, in order of arrival.
    pub fn nicks(&self) -> Vec<String> {
        lock(&self.members).values().map(|m| m.nick.clone()).collect()
    }
}

fn broadcast(members: &BTreeMap<u64, Member>, from: u64, line: &[u8]) {
    for (_, member) in members.iter().filter(|(id, _)| **id != from) {
        member.inbox.push(line);
    }
}

/// A poisoned lock only means another connection's thread panicked; the
/// room's data is still whole, so go on with it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
