//! Seed 000's first program: start a thread that says hello, wait for it.
//!
//! ```text
//! $ cargo run --example hello_thread
//! Starting
//! Hello World!
//! Finished
//! ```

use std::thread;

fn main() {
    println!("Starting");
    let worker = thread::spawn(|| println!("Hello World!"));
    // `join` is what makes "Finished" come last: without it the main thread
    // could print first, or end the process before the worker ran.
    worker.join().expect("the worker thread panicked");
    println!("Finished");
}
