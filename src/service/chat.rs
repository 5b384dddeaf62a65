//! `chat`: a room where every line goes to everyone else as `<nick> text`
//! (the seeds' two-way talk, seed 002's assignment 6, grown to many people).
//!
//! ```text
//! /nick NAME   -> * you are NAME            (others see `* guest1 is now NAME`)
//! /who         -> * in the room: alice bob
//! anything     -> nothing to you; `<alice> anything` to every other member
//! ```
//!
//! Joins and leaves are announced as `* NAME joined` and `* NAME left`.

use std::sync::Arc;

use super::room::{Inbox, Room};
use super::{Now, Protocol, Replies};

pub struct Chat {
    room: Arc<Room>,
    id: u64,
    inbox: Arc<Inbox>,
}

impl Chat {
    pub fn join(room: Arc<Room>) -> Self {
        let (id, inbox) = room.join();
        Chat { room, id, inbox }
    }
}

impl Protocol for Chat {
    fn open(&mut self, _now: Now, out: &mut Replies) {
        out.without_delay();
        out.send_fmt(format_args!(
            "* welcome, guest{}: /nick NAME to rename, /who to see who is here",
            self.id
        ));
    }

    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        let text = String::from_utf8_lossy(msg);
        if let Some(nick) = text.strip_prefix("/nick ") {
            match self.room.rename(self.id, nick) {
                Ok(nick) => out.send_fmt(format_args!("* you are {nick}")),
                Err(e) => out.error(e),
            }
        } else if text.trim_end() == "/who" {
            out.send_fmt(format_args!("* in the room: {}", self.room.nicks().join(" ")));
        } else if !text.is_empty() {
            self.room.say(self.id, &text);
        }
    }

    fn inbox(&self) -> Option<&Arc<Inbox>> {
        Some(&self.inbox)
    }
}

impl Drop for Chat {
    /// However the connection ends (EOF, reset, shutdown), it leaves the room.
    fn drop(&mut self) {
        self.room.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::service::room::INBOX_LIMIT;
    use crate::service::tests::Harness;
    use crate::service::{Now, Service, ServiceConfig, ServiceKind};

    fn member(service: &Service) -> Harness {
        Harness::with_session(service.session(Now::system()))
    }

    #[test]
    fn lines_go_to_everyone_else() {
        let service = Service::new(ServiceConfig::new(ServiceKind::Chat));
        let mut alice = member(&service);
        let mut bob = member(&service);
        assert!(alice.take().starts_with("* welcome, guest1"));
        assert!(bob.take().starts_with("* welcome, guest2"));
        assert_eq!(alice.wake(), "* guest2 joined\n");
        assert_eq!(alice.send(b"/nick alice\n"), "* you are alice\n");
        assert_eq!(bob.wake(), "* guest1 is now alice\n");
        assert_eq!(alice.send(b"hi bob\n"), "");
        assert_eq!(bob.wake(), "<alice> hi bob\n");
        assert_eq!(alice.wake(), "", "no echo to the speaker");
        assert_eq!(bob.send(b"/nick alice\n"), "ERR alice is taken\n");
        assert_eq!(bob.send(b"/who\n"), "* in the room: alice guest2\n");
        drop(bob);
        assert_eq!(alice.wake(), "* guest2 left\n");
    }

    #[test]
    fn the_driver_is_woken_once_per_batch() {
        let service = Service::new(ServiceConfig::new(ServiceKind::Chat));
        let mut listener = member(&service);
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = wakes.clone();
        listener.session.set_wake(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let mut speaker = member(&service);
        speaker.send(b"one\n");
        speaker.send(b"two\n");
        // The join, then two lines: one wake while nothing was taken.
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert!(listener.wake().ends_with("<guest2> one\n<guest2> two\n"));
        speaker.send(b"three\n");
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_member_that_never_reads_is_cut_off() {
        let service = Service::new(ServiceConfig::new(ServiceKind::Chat));
        let mut deaf = member(&service);
        let mut speaker = member(&service);
        let line = vec![b'x'; 1000];
        for _ in 0..(INBOX_LIMIT / 1000 + 2) {
            speaker.session.handle_read(&line, speaker.now);
            speaker.session.handle_read(b"\n", speaker.now);
        }
        deaf.wake();
        assert!(
            deaf.session.is_finished(),
            "a member {INBOX_LIMIT} bytes behind is disconnected"
        );
    }
}
