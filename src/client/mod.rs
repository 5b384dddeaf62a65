//! The client side: `send` (one request), `bench` (the load generator).

pub mod bench;
pub mod send;
