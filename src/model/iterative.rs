//! `iterative`: the main thread accepts a connection and serves it to the end
//! before it accepts the next (seed 000's single-threaded server, seed 001's
//! first server). Five clients of a 1 s `hello` wait 1, 2, 3, 4 and 5 s.

use std::sync::Arc;

use super::blocking::{serve_connection, Acceptor, Slots};
use super::ServerConfig;
use crate::net::Listener;
use crate::service::Service;
use crate::shutdown::Shutdown;

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let acceptor = Acceptor::new(listener, shutdown.clone(), Slots::new(config.max_conns))?;
    while let Some((stream, _slot)) = acceptor.accept() {
        serve_connection(stream, &service, shutdown);
    }
    Ok(())
}
