//! The client side: `send` (one request), `connect`/`listen` (a
//! conversation), `bench` (the load generator), `merge` (several bench
//! runs as one); `hdr` writes and reads their HdrHistograms.

pub mod bench;
pub mod hdr;
pub mod merge;
pub mod send;
pub mod talk;
