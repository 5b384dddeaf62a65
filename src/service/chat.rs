//! `chat`: a room where every line goes to everyone else as `<nick> text`
//! (the seeds' two-way talk, seed 002's assignment 6, grown to many people).
//!
//! ```text
//! /nick NAME   -> * you are NAME            (others see `* guest1 is now NAME`)
//! /who         -> * in the room: alice bob
//! /quit        -> * bye, and the connection closes
//! anything     -> nothing to you; `<alice> anything` to every other member
//! ```
//!
//! Joins and leaves are announced as `* NAME joined` and `* NAME left`.
//! Control characters in what members say are escaped (`\033`), so no
//! member can clear the others' screens or forge a line; nicknames are
//! printable; commands, known or not, are answered and never broadcast.

use std::sync::Arc;

use super::room::{Inbox, Room};
use super::{escape_controls, Now, Protocol, Replies};

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
        let Some(command) = text.strip_prefix('/') else {
            if !text.is_empty() {
                // Whatever a member types reaches the others' terminals as text.
                self.room.say(self.id, &escape_controls(&text));
            }
            return;
        };
        // A command is answered to its sender and never broadcast.
        let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
        match (name.trim_end(), arg.trim()) {
            ("nick", "") => out.error("usage: /nick NAME"),
            ("nick", nick) => match self.room.rename(self.id, nick) {
                Ok(nick) => out.send_fmt(format_args!("* you are {nick}")),
                Err(e) => out.error(e),
            },
            ("who", _) => out.send_fmt(format_args!("* in the room: {}", self.room.nicks().join(" "))),
            ("quit", _) => {
                out.send(b"* bye");
                out.close();
            }
            (other, _) => out.error(format_args!(
                "unknown command: /{}; try /nick NAME, /who, /quit",
                escape_controls(other)
            )),
        }
    }

    fn inbox(&self) -> Option<&Arc<Inbox>> {
        Some(&self.inbox)
    }

    fn accepts_input(&self) -> bool {
        !self.inbox.is_held_back()
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

    use crate::service::room::{INBOX_LIMIT, ROOM_STALL};
    use crate::service::tests::Harness;
    use crate::service::{Now, Service, ServiceConfig, ServiceKind, CONNECTION_BUDGET};

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
    fn control_characters_are_escaped_and_commands_never_broadcast() {
        let service = Service::new(ServiceConfig::new(ServiceKind::Chat));
        let mut alice = member(&service);
        let mut mallory = member(&service);
        alice.take();
        alice.wake();
        mallory.take();
        assert_eq!(mallory.send(b"\x1b[2J\x07\x00x\r<alice> hi\n"), "");
        assert_eq!(alice.wake(), "<guest2> \\033[2J\\007\\000x\\015<alice> hi\n");
        assert!(mallory
            .send(b"/nick \x1b[31mred\n")
            .starts_with("ERR a nickname is printable"));
        assert!(mallory.send(b"/nick <alice>\n").starts_with("ERR"));
        assert_eq!(mallory.send(b"/nick\n"), "ERR usage: /nick NAME\n");
        assert!(mallory
            .send(b"/foo\x1b\n")
            .starts_with("ERR unknown command: /foo\\033;"));
        assert_eq!(mallory.send(b"/quit\n"), "* bye\n");
        assert!(mallory.session.is_finished());
        assert_eq!(alice.wake(), "", "no command was broadcast");
        drop(mallory);
        assert_eq!(alice.wake(), "* guest2 left\n");
    }

    /// A speaker's lines until the room holds it back.
    fn talk_until_held_back(speaker: &mut Harness) -> usize {
        let line = [vec![b'x'; 1000], b"\n".to_vec()].concat();
        let mut said = 0;
        while speaker.session.wants_read() {
            speaker.session.handle_read(&line, speaker.now);
            said += 1;
            assert!(said < 10_000, "the speaker is never held back");
        }
        said
    }

    #[test]
    fn a_fast_talker_is_held_back_until_the_room_catches_up() {
        let service = Service::new(ServiceConfig::new(ServiceKind::Chat));
        let mut reader = member(&service);
        let mut speaker = member(&service);
        reader.take();
        speaker.take();
        let said = talk_until_held_back(&mut speaker);
        let line = "<guest2> ".len() + 1000 + 1;
        assert!(said * line >= INBOX_LIMIT, "held back at {said} lines");
        // The reader takes lines as its output drains, never past its budget.
        reader.session.handle_wake(reader.now);
        assert!(reader.session.cost() <= CONNECTION_BUDGET);
        let got = reader.take();
        assert!(
            speaker.session.wants_read(),
            "the room caught up: the speaker goes on"
        );
        assert_eq!(got.matches("<guest2> ").count(), said, "every line arrives");
        assert!(!reader.session.is_finished());
    }

    #[test]
    fn a_member_that_never_reads_is_dropped_after_the_stall() {
        let service = Service::new(ServiceConfig::new(ServiceKind::Chat));
        let mut deaf = member(&service);
        let mut speaker = member(&service);
        // The deaf member's driver is woken, takes what fits in its budget
        // (which lets the speaker go on) and writes nothing; the second time
        // its inbox fills, nothing fits.
        for _ in 0..2 {
            talk_until_held_back(&mut speaker);
            deaf.session.handle_wake(deaf.now);
        }
        assert!(deaf.session.cost() <= CONNECTION_BUDGET);
        assert!(!speaker.session.wants_read());
        assert!(!deaf.session.is_finished());
        deaf.now = deaf.now.advanced(ROOM_STALL);
        deaf.session.handle_timeout(deaf.now);
        assert!(deaf.session.is_finished(), "dropped after {ROOM_STALL:?}");
        assert!(deaf.session.pending_output().is_empty(), "nothing more is owed");
        drop(deaf);
        assert!(speaker.session.wants_read(), "the room goes on without it");
    }
}
