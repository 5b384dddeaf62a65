//! `contacts`: the contact book of seed 003's homework, one command a line.
//!
//! ```text
//! ADD name phone   -> OK
//! FIND name        -> OK name phone          | ERR not found: name
//! REMOVE name      -> OK                     | ERR not found: name
//! LIST             -> OK <n>, then n lines `name phone`
//! ```
//!
//! Commands are case-insensitive; a name and a phone are one word each.
//! Changes are durable before `OK` goes out (see [`crate::store`]). The
//! store call blocks the caller for a disk sync: on the blocking models that
//! is the serving thread, as in the seed; on an event loop it stalls the
//! loop for that long, which is the honest cost of durability there.

use std::sync::Arc;

use super::{escape_controls, Now, Protocol, Replies};
use crate::store::Store;

/// Longest name and phone number accepted.
const MAX_NAME: usize = 64;
const MAX_PHONE: usize = 32;

pub struct Contacts {
    pub store: Arc<Store>,
}

impl Protocol for Contacts {
    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        let Ok(text) = std::str::from_utf8(msg) else {
            return out.error("invalid UTF-8");
        };
        let mut words = text.split_whitespace();
        let Some(command) = words.next() else {
            return out.error("empty command; try ADD, FIND, REMOVE or LIST");
        };
        let args: Vec<&str> = words.collect();
        let result = match (command.to_ascii_uppercase().as_str(), args.as_slice()) {
            ("ADD", [name, phone]) => self.add(name, phone, out),
            ("FIND", [name]) => self.find(name, out),
            ("REMOVE", [name]) => self.remove(name, out),
            ("LIST", []) => self.list(out),
            ("ADD", _) => Err("usage: ADD name phone".into()),
            ("FIND", _) => Err("usage: FIND name".into()),
            ("REMOVE", _) => Err("usage: REMOVE name".into()),
            ("LIST", _) => Err("usage: LIST".into()),
            (_, _) => Err(format!("unknown command: {command}")),
        };
        if let Err(reason) = result {
            out.error(reason);
        }
    }
}

impl Contacts {
    fn add(&self, name: &str, phone: &str, out: &mut Replies) -> Result<(), String> {
        valid(name, MAX_NAME, "name")?;
        valid(phone, MAX_PHONE, "phone")?;
        storage(self.store.add(name, phone))?;
        out.send(b"OK");
        Ok(())
    }

    fn find(&self, name: &str, out: &mut Replies) -> Result<(), String> {
        let phone = storage(self.store.find(name))?.ok_or_else(|| format!("not found: {name}"))?;
        out.send_fmt(format_args!(
            "OK {} {}",
            escape_controls(name),
            escape_controls(&phone)
        ));
        Ok(())
    }

    fn remove(&self, name: &str, out: &mut Replies) -> Result<(), String> {
        if !storage(self.store.remove(name))? {
            return Err(format!("not found: {name}"));
        }
        out.send(b"OK");
        Ok(())
    }

    fn list(&self, out: &mut Replies) -> Result<(), String> {
        let all = storage(self.store.list())?;
        out.send_fmt(format_args!("OK {}", all.len()));
        for (name, phone) in all {
            // Refused at ADD; escaped here for a book written before that.
            out.send_fmt(format_args!(
                "{} {}",
                escape_controls(&name),
                escape_controls(&phone)
            ));
        }
        Ok(())
    }
}

fn valid(word: &str, max: usize, what: &str) -> Result<(), String> {
    if word.chars().count() > max {
        return Err(format!("{what} longer than {max} characters"));
    }
    if word.chars().any(char::is_control) {
        return Err(format!("a {what} is printable text, without control characters"));
    }
    Ok(())
}

fn storage<T>(result: anyhow::Result<T>) -> Result<T, String> {
    result.map_err(|e| {
        tracing::error!("storage: {e:#}");
        format!("storage failed: {e}")
    })
}

#[cfg(test)]
mod tests {
    use crate::service::tests::Harness;
    use crate::service::{ServiceConfig, ServiceKind};

    #[test]
    fn the_contact_book() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServiceConfig::new(ServiceKind::Contacts);
        config.db = dir.path().join("c.db");
        let mut h = Harness::new(config);
        assert_eq!(h.send(b"ADD alice 123\n"), "OK\n");
        assert_eq!(h.send(b"add bob 456\r\n"), "OK\n");
        assert_eq!(h.send(b"FIND alice\n"), "OK alice 123\n");
        assert_eq!(h.send(b"LIST\n"), "OK 2\nalice 123\nbob 456\n");
        assert_eq!(h.send(b"REMOVE bob\n"), "OK\n");
        assert_eq!(h.send(b"REMOVE bob\n"), "ERR not found: bob\n");
        assert_eq!(h.send(b"FIND bob\n"), "ERR not found: bob\n");
        assert_eq!(h.send(b"FOO\n"), "ERR unknown command: FOO\n");
        assert_eq!(h.send(b"ADD x\n"), "ERR usage: ADD name phone\n");
        assert_eq!(
            h.send(b"\n"),
            "ERR empty command; try ADD, FIND, REMOVE or LIST\n"
        );
        assert_eq!(h.send(b"FIND \xff\n"), "ERR invalid UTF-8\n");
        let long = format!("ADD {} 1\n", "n".repeat(65));
        assert_eq!(h.send(long.as_bytes()), "ERR name longer than 64 characters\n");
        assert_eq!(
            h.send(b"ADD \x1b[2Jeve 1\n"),
            "ERR a name is printable text, without control characters\n"
        );
        assert!(!h.session.is_finished());
    }
}
