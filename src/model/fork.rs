//! `fork`: the parent accepts; every connection gets a child process, and
//! the parent closes its copy of the connection at once (seed 004's
//! multi-process calc server). Children share nothing with each other: a
//! crash costs one connection, and a chat room could not exist here.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::blocking::{serve_connection, Acceptor, Slots};
use super::process::Children;
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
    let children = Children::new(shutdown)?;
    let acceptor = Acceptor::new(listener, shutdown.clone(), Slots::new(None))?;
    let listening_fd = acceptor.listener().as_raw_fd();
    while children.wait_below(config.max_conns.unwrap_or(usize::MAX), shutdown) {
        let Some((stream, _slot)) = acceptor.accept() else {
            break;
        };
        let service = &service;
        // The closure owns the connection: in the child it serves it; in
        // the parent it is dropped by `spawn`, which closes the parent's copy.
        let forked = children.spawn(move || {
            // The listener is the parent's business.
            let _ = nix::unistd::close(listening_fd);
            serve_connection(stream, service, shutdown);
        });
        if let Err(e) = forked {
            tracing::warn!("fork failed, refusing a connection: {e}");
        }
    }
    children.wind_down(config.grace);
    Ok(())
}
