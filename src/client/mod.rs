//! The client side: `send` (one request), `connect`/`listen` (a
//! conversation), `bench` (the load generator).

pub mod bench;
pub mod send;
pub mod talk;
