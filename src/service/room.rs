//! The chat room: the one state that connections share and push to each
//! other.
//!
//! Still sans-IO: what one member says waits in every other member's
//! [`Inbox`], and each member's driver is told, through the [`Wake`] it
//! registered, to come back and take it ([`Session::handle_wake`]). How a
//! driver wakes (an eventfd, a tokio `Notify`, a ring message) is its own
//! business; the room only calls the function.
//!
//! A member that does not read its messages is not allowed to make the
//! server buffer without bound: past [`INBOX_LIMIT`] it is disconnected.
//!
//! [`Session::handle_wake`]: super::Session::handle_wake

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// How a driver is asked to come back to a session. Called from other
/// connections' threads; must be cheap and must not block.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Most bytes waiting for one member before it is cut off as too slow.
pub const INBOX_LIMIT: usize = 256 * 1024;

/// Longest nickname.
const MAX_NICK: usize = 32;

#[derive(Default)]
pub struct Room {
    members: Mutex<BTreeMap<u64, Member>>,
    next_id: AtomicU64,
}

struct Member {
    nick: String,
    inbox: Arc<Inbox>,
}

/// Messages waiting for one member, and how to tell its driver.
#[derive(Default)]
pub struct Inbox {
    pending: Mutex<Pending>,
    wake: OnceLock<Wake>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The member fell [`INBOX_LIMIT`] behind and is to be disconnected.
    overflowed: bool,
}

/// What a member finds in its inbox.
pub struct Delivery {
    pub bytes: Vec<u8>,
    pub overflowed: bool,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("members", &self.nicks()).finish()
    }
}

impl Inbox {
    /// Registers the driver's wake-up; only the first call counts.
    pub fn set_wake(&self, wake: Wake) {
        let _ = self.wake.set(wake);
    }

    /// Everything waiting, emptied.
    pub fn take(&self) -> Delivery {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        Delivery {
            bytes: std::mem::take(&mut pending.bytes),
            overflowed: pending.overflowed,
        }
    }

    fn push(&self, line: &[u8]) {
        let wake = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.overflowed {
                return;
            }
            if pending.bytes.len() + line.len() > INBOX_LIMIT {
                pending.overflowed = true;
                pending.bytes = Vec::new();
            } else {
                let was_empty = pending.bytes.is_empty();
                pending.bytes.extend_from_slice(line);
                if !was_empty {
                    return; // Already woken and not yet served: no need to again.
                }
            }
            self.wake.get().cloned()
        };
        if let Some(wake) = wake {
            wake();
        }
    }
}

impl Room {
    /// A new member, `guest<N>` until it picks a nickname; the others are told.
    pub fn join(&self) -> (u64, Arc<Inbox>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let inbox = Arc::new(Inbox::default());
        let nick = format!("guest{id}");
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(member) = members.remove(&id) {
            broadcast(&members, id, format!("* {} left\n", member.nick).as_bytes());
        }
    }

    /// Changes a member's nickname; returns the new one.
    pub fn rename(&self, id: u64, nick: &str) -> Result<String, String> {
        let nick = nick.trim();
        if nick.is_empty() || nick.chars().count() > MAX_NICK || nick.contains(char::is_whitespace) {
            return Err(format!("a nickname is one word of at most {MAX_NICK} characters"));
        }
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
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

    /// `<nick> text` to everyone but the speaker.
    pub fn say(&self, id: u64, text: &str) {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(speaker) = members.get(&id) {
            broadcast(&members, id, format!("<{}> {text}\n", speaker.nick).as_bytes());
        }
    }

    /// The members' nicknames, in order of arrival.
    pub fn nicks(&self) -> Vec<String> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.values().map(|m| m.nick.clone()).collect()
    }
}

fn broadcast(members: &BTreeMap<u64, Member>, from: u64, line: &[u8]) {
    for (_, member) in members.iter().filter(|(id, _)| **id != from) {
        member.inbox.push(line);
    }
}
