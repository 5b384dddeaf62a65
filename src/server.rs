//! `socklab serve`: bind every `--listen` address, announce it, and run the
//! chosen model on each until SIGINT or SIGTERM.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::addr::Addr;
use crate::model::{ModelKind, ServerConfig};
use crate::net::{self, BindOptions, Bound};
use crate::service::{Service, ServiceConfig};
use crate::shutdown::Shutdown;

/// Everything `serve` was asked for, validated.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model: ModelKind,
    pub service: ServiceConfig,
    pub listen: Vec<Addr>,
    pub server: ServerConfig,
}

pub fn run(options: ServeOptions) -> anyhow::Result<()> {
    let ServeOptions {
        model,
        mut service,
        listen,
        server,
    } = options;
    if service.kind.shares_state_across_connections() && model.runs_in_processes() {
        bail!(
            "the {} service keeps one state for every connection, which {} cannot share between its processes; use a threaded or event-driven model",
            service.kind,
            model
        );
    }
    if service.kind.needs_wake() && !model.wakes_sessions() {
        let able: Vec<&str> = ModelKind::ALL
            .iter()
            .filter(|m| m.wakes_sessions())
            .map(|m| m.name())
            .collect();
        bail!(
            "the {} service needs a model that serves many connections at once in one process and wakes one when another speaks; {} does not: use {}",
            service.kind,
            model,
            able.join(", ")
        );
    }
    model.check_available()?;
    service.model_name = model.name().to_string();
    let service = Arc::new(Service::new(service));
    service.check()?;

    let mut listeners = Vec::new();
    for addr in &listen {
        let options = BindOptions {
            reuse_port: model.uses_reuse_port(server.workers),
        };
        match net::bind(addr, options)? {
            Bound::Stream(listener) => listeners.push(listener),
            Bound::Datagram(_) => bail!("{addr}: UDP is not served yet; use tcp: or unix:"),
        }
    }
    let shutdown = Shutdown::new()?;
    shutdown.on_signals(server.grace)?;

    let mut stdout = std::io::stdout().lock();
    for listener in &listeners {
        writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    }
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%model, service = %service.config().kind, "serving");

    // One instance of the model per listener; the last runs on this thread.
    let mut listeners = listeners.into_iter();
    let last = listeners.next_back().context("nothing to listen on")?;
    std::thread::scope(|scope| {
        let others: Vec<_> = listeners
            .map(|l| {
                let (service, server, shutdown) = (service.clone(), &server, &shutdown);
                scope.spawn(move || model.serve(l, service, server, shutdown))
            })
            .collect();
        let mut result = model.serve(last, service.clone(), &server, &shutdown);
        if result.is_err() {
            shutdown.trigger();
        }
        for other in others {
            let r = other
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a model thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}
