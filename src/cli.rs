//! The command line of DESIGN section 1, as clap definitions, turned into
//! validated options before anything runs.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::addr::{Addr, Endpoint};
use crate::client::bench::{BenchOptions, Load, Payload};
use crate::client::send::SendOptions;
use crate::lab::{Knobs, LabOptions, Scenario};
use crate::model::{ModelKind, ServerConfig};
use crate::relay::RelayOptions;
use crate::server::ServeOptions;
use crate::service::{Framing, ServiceConfig, ServiceKind, DEFAULT_MAX_LINE};

#[derive(Debug, Parser)]
#[command(
    name = "socklab",
    version,
    about = "A socket laboratory: the classic server concurrency models, side by side, measured"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a protocol under a concurrency model
    Serve(ServeArgs),
    /// Send one request and print the reply
    Send(SendArgs),
    /// Interactive: stdin to the peer, the peer to stdout
    Connect {
        /// Where to connect: tcp:HOST:PORT, HOST:PORT, :PORT, unix:PATH
        addr: Addr,
    },
    /// Accept one peer, then talk as connect does
    Listen {
        /// Where to listen: tcp:HOST:PORT, :PORT (port 0 picks one), unix:PATH
        addr: Addr,
    },
    /// Drive a server with concurrent clients and measure it
    Bench(BenchArgs),
    /// Run every model side by side and write a report
    Lab(LabArgs),
    /// Copy between two addresses both ways, like socat
    Relay(RelayArgs),
    /// List the concurrency models, one line each
    Models,
}

/// A duration as `250ms`, `5s` or `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration like 250ms, 5s or 1m: {e}"))
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number above 0")),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Concurrency model (see `socklab models`)
    #[arg(long, value_enum, default_value_t = ModelKind::Async)]
    pub model: ModelKind,
    /// Protocol to serve
    #[arg(long, value_enum, default_value_t = ServiceKind::Echo)]
    pub service: ServiceKind,
    /// Address to listen on (repeatable): tcp:HOST:PORT, HOST:PORT, :PORT, unix:PATH
    #[arg(long, value_name = "ADDR", default_value = "tcp:127.0.0.1:50000")]
    pub listen: Vec<Addr>,
    /// Threads or processes for pool and prefork (default 3), loops for epoll
    #[arg(long, value_parser = parse_positive)]
    pub workers: Option<usize>,
    /// Hold every reply this long (for hello: counted from accept)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub delay: Duration,
    /// How requests are cut out of the stream [default: the service's own]
    #[arg(long)]
    pub framing: Option<Framing>,
    /// Stop accepting at this many open connections until one closes
    #[arg(long, value_parser = parse_positive)]
    pub max_conns: Option<usize>,
    /// Close a connection that has been silent this long
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Longest line accepted under line framing
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE, value_parser = parse_positive)]
    pub max_line: usize,
    /// Where `contacts` keeps its book (SQLite)
    #[arg(long, value_name = "PATH", default_value = crate::service::DEFAULT_DB)]
    pub db: std::path::PathBuf,
    /// After SIGINT/SIGTERM, how long in-flight requests may take
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
}

impl ServeArgs {
    pub fn into_options(self) -> ServeOptions {
        let mut service = ServiceConfig::new(self.service);
        service.framing = self.framing.unwrap_or(self.service.default_framing());
        service.delay = self.delay;
        service.idle_timeout = self.idle_timeout;
        service.max_line = self.max_line;
        service.db = self.db;
        ServeOptions {
            model: self.model,
            service,
            listen: self.listen,
            server: ServerConfig {
                workers: self.workers.unwrap_or(self.model.default_workers()),
                max_conns: self.max_conns,
                grace: self.grace,
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to send: tcp:HOST:PORT, HOST:PORT, :PORT, unix:PATH
    pub addr: Addr,
    /// The request; several words are joined by spaces (none: send nothing)
    pub message: Vec<String>,
    /// Give up when no reply has come for this long [default: 5s; over UDP 1s a try]
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// UDP: how many times to send the request before giving up
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub retries: u32,
}

impl SendArgs {
    pub fn into_options(self) -> SendOptions {
        let udp = matches!(self.addr, Addr::Udp(_));
        let default = Duration::from_secs(if udp { 1 } else { 5 });
        SendOptions {
            addr: self.addr,
            message: self.message.join(" ").into_bytes(),
            timeout: self.timeout.unwrap_or(default),
            tries: self.retries,
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to drive: tcp:HOST:PORT, HOST:PORT, :PORT, unix:PATH
    pub addr: Addr,
    /// Concurrent clients
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub clients: usize,
    /// Requests per client
    #[arg(long, value_parser = parse_positive, conflicts_with = "duration")]
    pub requests: Option<usize>,
    /// Run for this long instead of a number of requests
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The request's text
    #[arg(long, conflicts_with = "size")]
    pub message: Option<String>,
    /// A request of this many bytes
    #[arg(long, value_name = "BYTES", value_parser = parse_positive)]
    pub size: Option<usize>,
    /// Connect anew for every request, as the seeds' clients do
    #[arg(long)]
    pub new_connection: bool,
    /// Give up on a reply after this long (counted as an error)
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Print the summary as one JSON document
    #[arg(long)]
    pub json: bool,
    /// A line per client, in the seeds' style
    #[arg(long, short)]
    pub verbose: bool,
    /// Event-loop threads driving the clients
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub threads: usize,
    /// Open loop: this many requests per second in total, latency measured
    /// from each request's intended start
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// When a reply is whole: auto, echo (and check the bytes), line, close, bytes:N
    #[arg(long, value_name = "RULE", default_value = "auto")]
    pub expect: crate::client::bench::Expect,
    /// What drives the clients: auto (io_uring for a closed loop over TCP or
    /// Unix sockets when the kernel allows, else tokio), tokio, uring
    #[arg(long, default_value = "auto")]
    pub engine: crate::client::bench::Engine,
    /// No progress output
    #[arg(long, short)]
    pub quiet: bool,
}

impl BenchArgs {
    pub fn into_options(self) -> BenchOptions {
        let payload = match (self.message, self.size) {
            (Some(text), _) => Payload::Text(text.into_bytes()),
            (None, Some(size)) => Payload::Size(size),
            (None, None) => Payload::Text(b"hello".to_vec()),
        };
        let load = match (self.duration, self.requests) {
            (Some(d), _) => Load::Duration(d),
            (None, n) => Load::Requests(n.unwrap_or(1)),
        };
        BenchOptions {
            addr: self.addr,
            clients: self.clients,
            load,
            payload,
            new_connection: self.new_connection,
            timeout: self.timeout,
            json: self.json,
            verbose: self.verbose,
            quiet: self.quiet,
            threads: self.threads,
            rate: self.rate.filter(|r| *r > 0.0),
            expect: self.expect,
            engine: self.engine,
        }
    }
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// First address, opened first: tcp:, udp:, unix:, tcp-listen:[HOST:]PORT, udp-listen:,
    /// unix-listen:PATH, stdio or -
    pub a: Endpoint,
    /// Second address, opened once the first is
    pub b: Endpoint,
    /// Keep listening on the first address and relay every peer concurrently
    #[arg(long)]
    pub fork: bool,
    /// Copy from the first address to the second only
    #[arg(long, short = 'u')]
    pub unidirectional: bool,
    /// After one direction ends, how long the other may go on
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub timeout: Duration,
    /// Close a pair silent this long
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Log every transfer on stderr
    #[arg(long, short)]
    pub verbose: bool,
    /// Show the bytes of every transfer on stderr, as hexdump -C does
    #[arg(long, short = 'x')]
    pub hexdump: bool,
}

impl RelayArgs {
    pub fn into_options(self) -> RelayOptions {
        RelayOptions {
            a: self.a,
            b: self.b,
            fork: self.fork,
            unidirectional: self.unidirectional,
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
            verbose: self.verbose,
            hexdump: self.hexdump,
        }
    }
}

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Models to compare, comma-separated [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub models: Vec<ModelKind>,
    /// Scenarios to run, comma-separated: delay, throughput, idle, c10k [default: all]
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub scenarios: Vec<Scenario>,
    /// Write the rows as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// Write the tables as Markdown
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<std::path::PathBuf>,
    /// Write the report as one self-contained HTML page (`none`: no page)
    #[arg(long, value_name = "FILE", default_value = "socklab-report.html")]
    pub html: std::path::PathBuf,
    /// Run each scenario N times and report the median, min and max
    /// [default: 3 for throughput, 1 for the others]
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub runs: Option<usize>,
    /// c10k: the idle connections held at each step, comma-separated
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "0,1000,5000,10000"
    )]
    pub c10k_levels: Vec<usize>,
    /// delay: clients at once
    #[arg(long, default_value_t = 5, value_parser = parse_positive)]
    pub delay_clients: usize,
    /// delay: how long the server holds each reply
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub delay: Duration,
    /// throughput: concurrent connections
    #[arg(long, default_value_t = 50, value_parser = parse_positive)]
    pub clients: usize,
    /// throughput: how long to drive each model
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub duration: Duration,
    /// throughput: message size
    #[arg(long, value_name = "BYTES", default_value_t = 512, value_parser = parse_positive)]
    pub size: usize,
    /// idle: connections held open
    #[arg(long, default_value_t = 1000, value_parser = parse_positive)]
    pub idle_connections: usize,
}

impl LabArgs {
    pub fn into_options(self) -> LabOptions {
        LabOptions {
            models: if self.models.is_empty() {
                ModelKind::all().to_vec()
            } else {
                self.models
            },
            scenarios: if self.scenarios.is_empty() {
                Scenario::ALL.to_vec()
            } else {
                self.scenarios
            },
            knobs: Knobs {
                delay_clients: self.delay_clients,
                delay: self.delay,
                clients: self.clients,
                duration: self.duration,
                size: self.size,
                idle_connections: self.idle_connections,
                c10k_levels: self.c10k_levels,
                runs: self.runs,
            },
            json: self.json,
            markdown: self.markdown,
            html: (self.html.as_os_str() != "none").then_some(self.html),
        }
    }
}
