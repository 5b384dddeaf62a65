//! Seed 002's race: two threads add +1 and -1 a million times each to a
//! shared counter. Without synchronisation updates are lost and the result
//! is some arbitrary number; behind a mutex it is always 0.
//!
//! Safe Rust will not compile a data race, so the unsynchronised version is
//! written as what the Python `x += value` really is: a separate load and
//! store (here on an atomic, so the loss is well-defined behaviour rather
//! than undefined). Another thread's update that lands between the two is
//! overwritten: a lost update.
//!
//! ```text
//! $ cargo run --release --example race
//! Shared value without a lock : 518327
//! Shared value with a lock    : 0
//! ```

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::thread;

const AMOUNT: i64 = 1_000_000;

/// `x += value`, the racy way: read, then write back, as two steps.
fn unsynchronised() -> i64 {
    let x = AtomicI64::new(0);
    thread::scope(|s| {
        for value in [1, -1] {
            let x = &x;
            s.spawn(move || {
                for _ in 0..AMOUNT {
                    let read = x.load(Ordering::Relaxed);
                    // Give the other thread a chance to run between the two halves.
                    std::hint::spin_loop();
                    x.store(read + value, Ordering::Relaxed);
                }
            });
        }
    });
    x.into_inner()
}

/// The fix from the seed: take the lock around the whole loop.
fn with_mutex() -> i64 {
    let x = Mutex::new(0i64);
    thread::scope(|s| {
        for value in [1, -1] {
            let x = &x;
            s.spawn(move || {
                let mut guard = x.lock().unwrap_or_else(|e| e.into_inner());
                for _ in 0..AMOUNT {
                    *guard += value;
                }
            });
        }
    });
    x.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn main() {
    println!("Shared value without a lock : {}", unsynchronised());
    println!("Shared value with a lock    : {}", with_mutex());
}
