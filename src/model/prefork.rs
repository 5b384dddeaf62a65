//! `prefork`: the parent binds, then forks N workers (`--workers`, default
//! 3) that each block in accept on the shared listener and serve what they
//! get, as Apache's pre-fork MPM does (seed 002). The parent only keeps the
//! pool full: a worker that dies is replaced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::blocking::{serve_connection, Acceptor, Slots};
use super::process::Children;
use super::spread::AcceptSpread;
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
    let acceptor = Acceptor::new(listener, shutdown.clone(), Slots::new(config.max_conns))?;
    let spread = AcceptSpread::new(config.workers)?;
    let (acceptor, service, spread) = (&acceptor, &service, &spread);
    let worker = |i: usize| {
        move || {
            while let Some((stream, _slot)) = acceptor.accept() {
                spread.record(i);
                serve_connection(stream, service, shutdown);
            }
        }
    };
    // Which worker each child is, so a replacement counts where it left off.
    let mut workers = HashMap::new();
    for i in 0..config.workers.max(1) {
        workers.insert(children.spawn(worker(i))?, i);
    }
    while !shutdown.is_triggered() {
        // Woken by a worker's exit; the timeout only re-checks shutdown.
        let Some(pid) = children.next_exit(Duration::from_millis(100)) else {
            continue;
        };
        if shutdown.is_triggered() {
            break;
        }
        tracing::warn!(%pid, "a worker died; starting another");
        let i = workers.remove(&pid).unwrap_or_default();
        match children.spawn(worker(i)) {
            Ok(pid) => {
                workers.insert(pid, i);
            }
            Err(e) => tracing::error!("cannot replace the worker: {e}"),
        }
    }
    children.wind_down(config.grace);
    spread.log();
    Ok(())
}
