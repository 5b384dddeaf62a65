//! Seed 002's daemon thread: a background thread dies with the process.
//!
//! The "daemon" thread would count to 5 and the "non-daemon" one to 2; the
//! program waits (joins) only for the non-daemon one, so when it returns
//! from `main` the daemon is cut off after about two lines. In Rust every
//! spawned thread is a daemon in Python's sense: `main` returning ends the
//! process; a thread you want to finish is one you `join`.
//!
//! ```text
//! $ cargo run --example daemon_thread
//! Daemon : in ThreadId(2)
//! Non-Daemon : in ThreadId(3)
//! Daemon : in ThreadId(2)
//! Non-Daemon : in ThreadId(3)
//! Daemon : in ThreadId(2)
//! ```

use std::thread;
use std::time::Duration;

fn count(label: &'static str, times: u32) {
    for _ in 0..times {
        println!("{label} : in {:?}", thread::current().id());
        thread::sleep(Duration::from_secs(1));
    }
}

fn main() {
    let _daemon = thread::spawn(|| count("Daemon", 5));
    let non_daemon = thread::spawn(|| count("Non-Daemon", 2));
    non_daemon.join().expect("the non-daemon thread panicked");
    // Returning now ends the daemon mid-count, as Python does at exit.
}
