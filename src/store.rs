//! Durable storage for `contacts`: one SQLite table.
//!
//! `OK` goes out only after the change is durable: the database runs in WAL
//! mode with `synchronous=FULL`, so a committed transaction has reached the
//! disk before `add` or `remove` return, and a server killed with SIGKILL
//! loses no acknowledged change.
//!
//! One connection per process, opened on first use: a forked child must not
//! use (or close) the connection it inherited from its parent, so it opens
//! its own. Within a process the connection is shared behind a mutex.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    /// This process's connection, tagged with the pid that opened it.
    conn: Mutex<Option<(u32, Connection)>>,
}

impl Store {
    /// A store at `path`; nothing is opened until first use (or [`check`](Store::check)).
    pub fn new(path: &Path) -> Self {
        Store {
            path: path.to_path_buf(),
            conn: Mutex::new(None),
        }
    }

    /// Opens the database now, so that a bad path fails at start, not at the
    /// first request.
    pub fn check(&self) -> anyhow::Result<()> {
        self.with(|_| Ok(()))
    }

    /// Adds a contact, or changes its phone number.
    pub fn add(&self, name: &str, phone: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO contacts (name, phone) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET phone = excluded.phone",
                params![name, phone],
            )?;
            Ok(())
        })
    }

    pub fn find(&self, name: &str) -> anyhow::Result<Option<String>> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT phone FROM contacts WHERE name = ?1", params![name], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }

    /// Removes a contact; `false` when there was none.
    pub fn remove(&self, name: &str) -> anyhow::Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM contacts WHERE name = ?1", params![name])? > 0))
    }

    /// Every contact, by name.
    pub fn list(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT name, phone FROM contacts ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        if guard.as_ref().is_some_and(|(owner, _)| *owner != pid) {
            // Inherited across fork: closing it here could checkpoint or
            // unlink the parent's WAL; leak it instead (the process is short-lived).
            if let Some((_, inherited)) = guard.take() {
                std::mem::forget(inherited);
            }
        }
        if guard.is_none() {
            *guard = Some((pid, open(&self.path)?));
        }
        match guard.as_ref() {
            Some((_, conn)) => f(conn),
            None => unreachable!("opened just above"),
        }
    }
}

/// The book is private: a new database file is made owner-only (0600), and
/// SQLite gives its `-wal` and `-shm` files the database file's mode. An
/// existing file keeps the mode its owner gave it.
const DB_MODE: u32 = 0o600;

fn open(path: &Path) -> anyhow::Result<Connection> {
    use std::os::unix::fs::OpenOptionsExt;
    // `create_new` fails if the file exists, which is fine: it is used as is.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DB_MODE)
        .open(path);
    let conn =
        Connection::open(path).with_context(|| format!("cannot open the database {}", path.display()))?;
    // Several processes (fork, prefork) may write at once: wait for the lock.
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS contacts (name TEXT PRIMARY KEY, phone TEXT NOT NULL)")
        .with_context(|| format!("cannot use the database {}", path.display()))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_find_remove_list_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let store = Store::new(&path);
        store.add("alice", "123").unwrap();
        store.add("bob", "456").unwrap();
        store.add("alice", "789").unwrap();
        assert_eq!(store.find("alice").unwrap().as_deref(), Some("789"));
        assert!(store.remove("bob").unwrap());
        assert!(!store.remove("bob").unwrap());
        drop(store);
        let again = Store::new(&path);
        assert_eq!(again.list().unwrap(), [("alice".to_string(), "789".to_string())]);
    }

    #[test]
    fn a_new_database_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let store = Store::new(&path);
        store.add("alice", "1").unwrap();
        // Checked while open: the -wal and -shm files go with the last close.
        for file in ["c.db", "c.db-wal", "c.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
        }
    }

    #[test]
    fn a_bad_path_fails_the_check() {
        let store = Store::new(Path::new("/nonexistent/dir/c.db"));
        assert!(store
            .check()
            .unwrap_err()
            .to_string()
            .contains("cannot open the database"));
    }
}
