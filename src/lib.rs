//! socklab: a socket laboratory.
//!
//! One binary that serves the same small protocols under every classic
//! server concurrency model, drives them with its own load generator, and
//! puts the models side by side. The layout follows DESIGN section 5:
//!
//! - [`addr`]: the address grammar (`tcp:HOST:PORT`, `unix:PATH`, ...).
//! - [`net`]: listeners and streams over TCP and Unix sockets.
//! - [`service`]: the protocols, as sans-IO state machines, and framing.
//! - [`model`]: the concurrency models, one file each, one signature.
//! - [`server`]: `socklab serve`: bind, announce, run a model.
//! - [`client`]: `send`, `connect`/`listen`, and `bench`.
//! - [`relay`]: the socat-like relay.
//! - [`figures`]: numbers as people read them (`70,586`), for bench and lab.
//! - [`ring`]: io_uring plumbing shared by the `uring` model and `bench`.
//! - [`lab`]: every model side by side, measured, and the report.
//! - [`check`]: any server's wire behaviour and robustness, case by case.
//! - [`store`]: durable storage for `contacts` (SQLite).
//! - [`shutdown`]: the stop signal every model watches.
//! - [`cli`]: the command line, turned into validated options.

pub mod addr;
pub mod check;
pub mod cli;
pub mod client;
pub mod figures;
pub mod lab;
pub mod model;
pub mod net;
pub mod relay;
pub mod ring;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
