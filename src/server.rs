//! `socklab serve`: bind every `--listen` address, announce it, and run the
//! chosen model on each until SIGINT or SIGTERM.

use std::io::Write;
use std::sync::Arc;

use anyhow::bail;

use crate::addr::Addr;
use crate::model::{datagram, ModelKind, ServerConfig};
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
    /// `--mode`: the permissions of Unix socket files (default owner-only).
    pub unix_mode: Option<u32>,
    /// `--ipv6-only`: a listener on `[::]` refuses IPv4 peers.
    pub ipv6_only: bool,
}

pub fn run(options: ServeOptions) -> anyhow::Result<()> {
    let ServeOptions {
        model,
        mut service,
        listen,
        server,
        unix_mode,
        ipv6_only,
    } = options;
    if service.kind.shares_state_across_connections() && model.runs_in_processes() {
        bail!(
            "the {} service keeps one state for every connection, which {} cannot share between its processes; use a threaded or event-driven model",
            service.kind,
            model
        );
    }
    if service.kind.needs_wake() && !model.wakes_sessions() {
        bail!(
            "the {} service needs a model that serves many connections at once in one process and wakes one when another speaks; {} does not: use {}",
            service.kind,
            model,
            ModelKind::names_where(ModelKind::wakes_sessions)
        );
    }
    model.check_available(&server)?;
    service.model_name = model.name().to_string();
    let service = Arc::new(Service::new(service));
    service.check()?;

    // Bind everything first, so that a bad address fails before anything
    // is announced; then announce in the order asked.
    let mut sockets = Vec::new();
    let mut announced = Vec::new();
    for addr in &listen {
        let options = BindOptions {
            reuse_port: model.uses_reuse_port(server.workers),
            unix_mode,
            ipv6_only,
        };
        let bound = net::bind(addr, options)?;
        match &bound {
            Bound::Stream(listener) => announced.push(listener.local_addr()?),
            Bound::Datagram(socket) => {
                if !model.serves_datagrams() {
                    bail!(
                        "{model} does not serve UDP ({addr}); use {}",
                        ModelKind::names_where(ModelKind::serves_datagrams)
                    );
                }
                if !service.config().kind.over_datagrams() {
                    bail!(
                        "the {} service needs a connection; it cannot be served over UDP ({addr})",
                        service.config().kind
                    );
                }
                announced.push(Addr::Udp(socket.local_addr()?.into()));
            }
        }
        sockets.push(bound);
    }
    let shutdown = Shutdown::new()?;
    shutdown.on_signals(server.grace)?;

    let mut stdout = std::io::stdout().lock();
    for addr in &announced {
        writeln!(stdout, "listening on {addr}")?;
    }
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%model, service = %service.config().kind, "serving");

    // One instance of the model per socket, each on its own thread (on this
    // one when there is only one socket).
    shutdown.run_together(
        sockets,
        "a model",
        |i| format!("serve-{i}"),
        |_, socket| match socket {
            Bound::Stream(listener) => model.serve(listener, service.clone(), &server, &shutdown),
            Bound::Datagram(socket) => datagram::serve(model, socket, service.clone(), &server, &shutdown),
        },
    )
}
