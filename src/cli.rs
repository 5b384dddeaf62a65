//! The command line of DESIGN section 1, as clap definitions, turned into
//! validated options before anything runs.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::addr::{Addr, SocatAddr};
use crate::client::bench::{BenchOptions, Load, Payload};
use crate::client::send::SendOptions;
use crate::client::talk::TalkOptions;
use crate::lab::{scenario, Knobs, LabOptions, Outside, Scenario};
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
    Connect(ConnectArgs),
    /// Accept one peer, then talk as connect does
    Listen(ListenArgs),
    /// Drive a server with concurrent clients and measure it
    Bench(BenchArgs),
    /// Shell completions (bash, zsh, fish, elvish, powershell) or the man page (man)
    Completions {
        /// bash, zsh, fish, elvish, powershell, or man for a man page (roff)
        shell: CompletionTarget,
    },
    /// Run every model side by side and write a report
    Lab(LabArgs),
    /// Copy between two addresses both ways, like socat
    Relay(RelayArgs),
    /// List the concurrency models, one line each
    Models,
    /// Several bench --json runs (several hosts) as one run, exactly
    Merge(MergeArgs),
    /// Is any server correct and robust? Its wire behaviour and hostile peers, case by case
    Check(CheckArgs),
}

// Bounds on what the command line accepts, checked while parsing, so that a
// value past them is a usage error (exit 2) before anything runs, never a
// panic or an 8 GB allocation later. Each is far beyond any experiment.

/// The longest duration any flag takes (`--delay`, `--idle-timeout`,
/// `--grace`, `--timeout`, `--duration`, `--write-timeout`): a day. Every
/// duration flag parses with [`parse_duration`], which enforces it.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// `serve --workers`, `bench --threads`: processes or threads to start.
pub const MAX_WORKERS: usize = 1024;
/// `serve --max-conns`.
pub const MAX_CONNS: usize = 10_000_000;
/// `bench --clients`, and the lab's client and connection counts.
pub const MAX_CLIENTS: usize = 100_000;
/// `bench --requests` (per client).
pub const MAX_REQUESTS: usize = 1_000_000_000;
/// `bench --size`, `serve --max-line`: bytes of one request or line.
pub const MAX_SIZE: usize = 64 << 20;
/// `bench --rate`: requests per second in total, from one every 1000 s
/// (the slowest schedule that fits in [`MAX_DURATION`] with room to spare)
/// to ten million, more than one machine's loopback carries.
pub const MIN_RATE: f64 = 0.001;
pub const MAX_RATE: f64 = 10_000_000.0;
/// `send --retries`.
pub const MAX_RETRIES: u32 = 1000;

/// A duration as `250ms`, `5s` or `1m`, at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 250ms, 5s or 1m: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "'{s}' is longer than the longest duration accepted, {}h",
            MAX_DURATION.as_secs() / 3600
        ));
    }
    Ok(d)
}

/// A duration above zero (a timeout of nothing would fail everything at once).
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err(format!("'{s}' is not a duration above 0")),
        d => Ok(d),
    }
}

/// A whole number from 1 to `max`.
fn parse_count(s: &str, max: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(0) => Err(format!("'{s}' is not a whole number above 0")),
        Ok(_) => Err(format!("'{s}' is more than the most accepted, {max}")),
        Err(_) => Err(format!("'{s}' is not a whole number above 0")),
    }
}

/// `lab --runs`: repetitions of each scenario (at most 100).
fn parse_runs(s: &str) -> Result<usize, String> {
    parse_count(s, 100)
}

/// `lab --c10k-levels`: idle connections at one step, 0 to MAX_CLIENTS.
fn parse_idle_level(s: &str) -> Result<usize, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_count(s, MAX_CLIENTS)
}

fn parse_workers(s: &str) -> Result<usize, String> {
    parse_count(s, MAX_WORKERS)
}

fn parse_clients(s: &str) -> Result<usize, String> {
    parse_count(s, MAX_CLIENTS)
}

fn parse_size(s: &str) -> Result<usize, String> {
    parse_count(s, MAX_SIZE)
}

/// Requests per second: a finite number from [`MIN_RATE`] to [`MAX_RATE`].
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (MIN_RATE..=MAX_RATE).contains(&r) => Ok(r),
        Ok(_) => Err(format!(
            "'{s}' is not a rate from {MIN_RATE} to {MAX_RATE} requests per second"
        )),
        Err(_) => Err(format!("'{s}' is not a number of requests per second")),
    }
}

/// File permissions in octal, as chmod takes them: `600`, `0660`.
fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "'{s}' is not a file mode in octal from 0 to 777, like 600 or 660"
        )),
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
    /// Address to listen on (repeatable): tcp:HOST:PORT, HOST:PORT, :PORT, unix:PATH,
    /// udp:HOST:PORT (a datagram a request, a datagram back)
    #[arg(long, value_name = "ADDR", default_value = "tcp:127.0.0.1:50000")]
    pub listen: Vec<Addr>,
    /// Threads or processes for pool and prefork (default 3), loops for epoll
    /// and uring (default 1), threads for async, reactors, half-async and
    /// leader (default: the cores) (at most 1024)
    #[arg(long, value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Hold every reply this long (for hello: counted from accept; at most 1 day)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub delay: Duration,
    /// How requests are cut out of the stream [default: the service's own]
    #[arg(long)]
    pub framing: Option<Framing>,
    /// CPU spent on every request before it is answered: a busy computation,
    /// not a sleep, whatever the model (at most 1 day)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub work: Duration,
    /// Stop accepting at this many open connections until one closes
    #[arg(long, value_parser = |s: &str| parse_count(s, MAX_CONNS))]
    pub max_conns: Option<usize>,
    /// Close a connection that completes no request (and to which no reply
    /// makes progress) for this long; a trickle of bytes that never makes a
    /// request does not keep it open (at most 1 day)
    #[arg(long, value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,
    /// Drop a connection whose owed replies make no progress for this long
    /// (a peer that does not read), counted over the whole reply, not per
    /// write (at most 1 day)
    #[arg(long, value_parser = parse_positive_duration, default_value = "30s")]
    pub write_timeout: Duration,
    /// UDP: most bytes of replies remembered for retried `#ID` requests
    /// (each forgotten after 60 s; at most 64 MiB)
    #[arg(long, value_name = "BYTES", default_value_t = crate::model::datagram::DEFAULT_REPLY_CACHE, value_parser = parse_size)]
    pub reply_cache: usize,
    /// Longest line accepted under line framing (at most 64 MiB)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE, value_parser = parse_size)]
    pub max_line: usize,
    /// Where `contacts` keeps its book (SQLite)
    #[arg(long, value_name = "PATH", default_value = crate::service::DEFAULT_DB)]
    pub db: std::path::PathBuf,
    /// After SIGINT/SIGTERM, how long in-flight requests may take (at most 1 day)
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// Permissions of Unix socket files, in octal [default: 600, owner-only]
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,
    /// uring: the io_uring techniques to use, comma-separated: none,
    /// default, recv-multishot, bundle, fixed-files, sqpoll, send-zc,
    /// batch=N (see `socklab models`) [default: recv-multishot,bundle,fixed-files]
    #[arg(long, value_name = "FEATURE[,FEATURE]")]
    pub uring: Option<crate::model::uring_features::UringFeatures>,
    /// A listener on an IPv6 address ([::]) takes IPv6 peers only; by
    /// default it takes IPv4 peers too, as nc and socat do
    #[arg(long)]
    pub ipv6_only: bool,
}

impl ServeArgs {
    /// A switch the chosen model has no use for is a usage error, not
    /// ignored: `--model select --workers 4` would run one loop and be
    /// measured as if it ran four.
    pub fn check(&self) -> Result<(), String> {
        let model = self.model;
        // Over UDP only, the datagram loops decide; with a stream listener
        // too, the stream model does.
        let only_udp = self.listen.iter().all(|a| matches!(a, Addr::Udp(_)));
        let takes = |m: ModelKind| {
            if only_udp {
                m.takes_workers_over_udp()
            } else {
                m.takes_workers()
            }
        };
        let over = if only_udp { " over UDP" } else { "" };
        if let Some(n) = self.workers.filter(|&n| n > 1 && !takes(model)) {
            return Err(format!(
                "--workers {n}: the {model} model runs no workers{over}; these do: {}",
                ModelKind::names_where(takes)
            ));
        }
        if self.uring.is_some() && model != ModelKind::Uring {
            return Err(format!("--uring is for --model uring, not {model}"));
        }
        Ok(())
    }

    pub fn into_options(self) -> ServeOptions {
        let mut service = ServiceConfig::new(self.service);
        service.framing = self.framing.unwrap_or(self.service.default_framing());
        service.delay = self.delay;
        service.work = self.work;
        service.idle_timeout = self.idle_timeout;
        service.write_timeout = self.write_timeout;
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
                reply_cache: self.reply_cache,
                uring: self.uring.unwrap_or_default(),
            },
            unix_mode: self.mode,
            ipv6_only: self.ipv6_only,
        }
    }
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Where to connect: tcp:HOST:PORT, HOST:PORT, :PORT, unix:PATH, udp:HOST:PORT
    /// (a datagram per line of stdin, each reply printed on a line)
    pub addr: Addr,
    /// Print what the peer sends as `From ADDR, line`, as seed 002 does
    #[arg(long)]
    pub label: bool,
    /// UDP: after stdin ends, wait this long for a silent peer before exiting
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub timeout: Duration,
}

impl ConnectArgs {
    pub fn into_options(self) -> TalkOptions {
        TalkOptions {
            addr: self.addr,
            keep: false,
            label: self.label,
            ipv6_only: false,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where to listen: tcp:HOST:PORT, :PORT (port 0 picks one), unix:PATH, udp:HOST:PORT
    pub addr: Addr,
    /// After a peer leaves, wait for the next one (nc -k)
    #[arg(long, short)]
    pub keep: bool,
    /// Print what the peer sends as `From ADDR, line`, as seed 002 does
    #[arg(long)]
    pub label: bool,
    /// A listener on an IPv6 address ([::]) takes IPv6 peers only
    #[arg(long)]
    pub ipv6_only: bool,
    /// UDP: after stdin ends, wait this long for a silent peer before exiting
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub timeout: Duration,
}

impl ListenArgs {
    pub fn into_options(self) -> TalkOptions {
        TalkOptions {
            addr: self.addr,
            keep: self.keep,
            label: self.label,
            ipv6_only: self.ipv6_only,
            timeout: self.timeout,
        }
    }
}

/// What `socklab completions` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionTarget {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
    /// The man page, in roff (`socklab completions man | man -l -`)
    Man,
}

#[derive(Debug, Args)]
#[command(after_help = "A message that begins with '-' goes after '--': socklab send :7007 -- '-2 ^ 2'")]
pub struct SendArgs {
    /// Where to send: tcp:HOST:PORT, HOST:PORT, :PORT, unix:PATH, udp:HOST:PORT
    pub addr: Addr,
    /// The request; several words are joined by spaces (none: stdin, to its end)
    pub message: Vec<String>,
    /// Give up when no reply has come for this long (and on stdin that sends
    /// nothing for this long without ending) [default: 5s; over UDP 1s a try]
    #[arg(long, value_parser = parse_positive_duration)]
    pub timeout: Option<Duration>,
    /// UDP: prefix the request with `#ID ` and send it again on silence; a
    /// socklab server answers a repeated ID from its cache, never applying
    /// the request twice (plain datagrams, as nc -u sends, are never retried)
    #[arg(long)]
    pub id: bool,
    /// UDP with --id: how many times to send the request before giving up (at most 1000)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=MAX_RETRIES as i64))]
    pub retries: u32,
    /// The longest request read from stdin
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE, value_parser = parse_size)]
    pub max_line: usize,
}

impl SendArgs {
    pub fn into_options(self) -> SendOptions {
        let udp = matches!(self.addr, Addr::Udp(_));
        let default = Duration::from_secs(if udp { 1 } else { 5 });
        SendOptions {
            addr: self.addr,
            message: (!self.message.is_empty()).then(|| self.message.join(" ").into_bytes()),
            max_request: self.max_line,
            timeout: self.timeout.unwrap_or(default),
            tries: self.retries,
            id: self.id,
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to drive: tcp:HOST:PORT, HOST:PORT, :PORT, unix:PATH
    pub addr: Addr,
    /// Concurrent clients (at most 100000)
    #[arg(long, default_value_t = 1, value_parser = parse_clients)]
    pub clients: usize,
    /// Requests per client (at most 1000000000)
    #[arg(long, value_parser = |s: &str| parse_count(s, MAX_REQUESTS), conflicts_with = "duration")]
    pub requests: Option<usize>,
    /// Run for this long instead of a number of requests (at most 1 day)
    #[arg(long, value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,
    /// The request's text
    #[arg(long, conflicts_with = "size")]
    pub message: Option<String>,
    /// A request of this many bytes (at most 64 MiB)
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<usize>,
    /// Connect anew for every request, as the seeds' clients do
    #[arg(long)]
    pub new_connection: bool,
    /// Give up on a reply after this long (counted as an error; at most 1 day)
    #[arg(long, value_parser = parse_positive_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Print the summary as one JSON document
    #[arg(long)]
    pub json: bool,
    /// A line per client, in the seeds' style
    #[arg(long, short)]
    pub verbose: bool,
    /// Event-loop threads driving the clients (at most 1024)
    #[arg(long, default_value_t = 1, value_parser = parse_workers)]
    pub threads: usize,
    /// Open loop: this many requests per second in total (0.001 to
    /// 10000000), latency measured from each request's intended start
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// When a reply is whole: auto, echo (and check the bytes), line, close, bytes:N
    #[arg(long, value_name = "RULE", default_value = "auto")]
    pub expect: crate::client::bench::Expect,
    /// What drives the clients: auto (io_uring over TCP or Unix sockets when
    /// the kernel allows, else tokio), tokio, uring
    #[arg(long, default_value = "auto")]
    pub engine: crate::client::bench::Engine,
    /// No progress output
    #[arg(long, short)]
    pub quiet: bool,
    /// Drive the server this long first; nothing of it counts in the figures
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Also append the summary to this CSV file, one row per run (a header
    /// first when the file is new)
    #[arg(long, value_name = "FILE")]
    pub csv: Option<std::path::PathBuf>,
    /// Start at this wall-clock time, RFC 3339 (2025-01-31T12:00:00Z) or
    /// unix seconds (1738324800.5), so that drivers on several hosts start
    /// together; a time in the past is an error
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,
    /// This is driver K of N (from 1): it sends 1/N of --rate (warm-up
    /// included), interleaved with the others, and numbers its clients after
    /// theirs, so that `socklab merge` can add the runs up
    #[arg(long, value_name = "K/N")]
    pub driver: Option<crate::client::bench::Driver>,
    /// Write an HdrHistogram interval log (format 1.3, one histogram per
    /// second, in microseconds) to this file
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<std::path::PathBuf>,
}

/// `--start-at`: RFC 3339, or seconds since the epoch.
fn parse_start_at(s: &str) -> Result<std::time::SystemTime, String> {
    let unix = s
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
        .and_then(|d| std::time::UNIX_EPOCH.checked_add(d));
    if let Some(t) = unix {
        return Ok(t);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(std::time::SystemTime::from)
        .map_err(|_| {
            format!("'{s}' is not a time: give RFC 3339 (2025-01-31T12:00:00Z) or unix seconds (1738324800)")
        })
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// `socklab bench --json` outputs, one per driver
    #[arg(value_name = "RUN.json", required = true)]
    pub files: Vec<std::path::PathBuf>,
    /// Print the merged run as one JSON document (it can be merged again)
    #[arg(long)]
    pub json: bool,
    /// Also append the merged summary to this CSV file, as bench --csv does
    #[arg(long, value_name = "FILE")]
    pub csv: Option<std::path::PathBuf>,
    /// Merge runs that drove different targets (e.g. one server by two names)
    #[arg(long)]
    pub allow_mixed: bool,
    /// Merge runs whose client ids overlap (drivers started without --driver)
    #[arg(long)]
    pub allow_overlap: bool,
}

impl MergeArgs {
    pub fn into_options(self) -> crate::client::merge::MergeOptions {
        crate::client::merge::MergeOptions {
            files: self.files,
            json: self.json,
            csv: self.csv,
            allow_mixed: self.allow_mixed,
            allow_overlap: self.allow_overlap,
        }
    }
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
            rate: self.rate,
            expect: self.expect,
            engine: self.engine,
            warmup: self.warmup,
            csv: self.csv,
            start_at: self.start_at,
            driver: self.driver,
            hdr_log: self.hdr_log,
        }
    }
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// First address, opened first: tcp:, udp:, unix:, tcp-listen:[HOST:]PORT, udp-listen:,
    /// unix-listen:PATH, stdio or -; socat's options after a comma where they
    /// mean something here (`tcp-listen:7030,fork,reuseaddr`)
    pub a: SocatAddr,
    /// Second address, opened once the first is
    pub b: SocatAddr,
    /// Keep listening on the first address and relay every peer concurrently
    #[arg(long)]
    pub fork: bool,
    /// Copy from the first address to the second only
    #[arg(long, short = 'u')]
    pub unidirectional: bool,
    /// After one direction ends, how long the other may go on (socat's -t):
    /// a reply slower than this is cut, which --verbose reports (at most 1 day)
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub timeout: Duration,
    /// Close a pair silent this long (at most 1 day)
    #[arg(long, value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,
    /// With --fork: pairs relayed at once; further peers wait in the backlog
    #[arg(long, value_name = "N", default_value_t = crate::relay::DEFAULT_MAX_CHILDREN, value_parser = |s: &str| parse_count(s, MAX_CONNS))]
    pub max_children: usize,
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
            // socat's `fork` option is relay's --fork (it only parses on a
            // listening address; relay checks that it is the first).
            fork: self.fork || self.a.options.fork || self.b.options.fork,
            a: self.a.endpoint,
            b: self.b.endpoint,
            unidirectional: self.unidirectional,
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
            max_children: self.max_children,
            verbose: self.verbose,
            hexdump: self.hexdump,
        }
    }
}

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Models to compare, comma-separated [default: all; none with --server]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub models: Vec<ModelKind>,
    /// An outside server beside the models: NAME=CMD or NAME:SERVICE=CMD,
    /// `{port}` in CMD for the port it must listen on (127.0.0.1); it runs
    /// in every scenario whose service it speaks. Repeatable
    #[arg(long = "server", value_name = "NAME[:SERVICE]=CMD", value_parser = parse_outside)]
    pub servers: Vec<OutsideArg>,
    /// The service of every --server that names none
    #[arg(long, value_enum, default_value_t = ServiceKind::Echo, value_name = "SERVICE")]
    pub server_service: ServiceKind,
    /// Scenarios to run, comma-separated (the help lists them all)
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = scenario::parse,
          help = scenario::help())]
    pub scenarios: Vec<&'static dyn Scenario>,
    /// Write the rows as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// Write the tables as Markdown
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<std::path::PathBuf>,
    /// Write the report as one self-contained HTML page (`none`: no page)
    #[arg(long, value_name = "FILE", default_value = "socklab-report.html")]
    pub html: std::path::PathBuf,
    /// Measure nothing: draw the report (tables, --markdown, --html, --json)
    /// again from the rows of an earlier run's --json
    #[arg(long, value_name = "RUN.json")]
    pub from: Option<std::path::PathBuf>,
    /// Run each scenario N times and report the median, min and max
    /// [default: 3 for scenarios that compare servers, 1 for the others]
    #[arg(long, value_name = "N", value_parser = parse_runs)]
    pub runs: Option<usize>,
    /// c10k: the idle connections held at each step, comma-separated
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "0,1000,5000,10000",
        value_parser = parse_idle_level
    )]
    pub c10k_levels: Vec<usize>,
    /// delay: clients at once (at most 100000)
    #[arg(long, default_value_t = 5, value_parser = parse_clients)]
    pub delay_clients: usize,
    /// delay: how long the server holds each reply (at most 1 day)
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub delay: Duration,
    /// throughput: concurrent connections (at most 100000)
    #[arg(long, default_value_t = 50, value_parser = parse_clients)]
    pub clients: usize,
    /// throughput: how long to drive each model (at most 1 day)
    #[arg(long, value_parser = parse_positive_duration, default_value = "3s")]
    pub duration: Duration,
    /// throughput: message size (at most 64 MiB)
    #[arg(long, value_name = "BYTES", default_value_t = 512, value_parser = parse_size)]
    pub size: usize,
    /// idle: connections held open (at most 100000)
    #[arg(long, default_value_t = 1000, value_parser = parse_clients)]
    pub idle_connections: usize,
    /// unp: Stevens' clients at once (at most 100000)
    #[arg(long, default_value_t = 5, value_parser = parse_clients)]
    pub unp_clients: usize,
    /// unp: rounds (connect, ask for 4000 bytes, read them, close) per client
    #[arg(long, default_value_t = 500, value_parser = |s: &str| parse_count(s, MAX_REQUESTS))]
    pub unp_rounds: usize,
    /// cost: the offered rates, requests per second in total, comma-separated
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "10000,30000,60000,100000",
        value_parser = |s: &str| parse_count(s, MAX_RATE as usize).map(|n| n as u32)
    )]
    pub cost_rates: Vec<u32>,
    /// cost: how long each rate is offered (at most 1 day)
    #[arg(long, value_parser = parse_positive_duration, default_value = "1s")]
    pub cost_duration: Duration,
}

/// `lab --server NAME[:SERVICE]=CMD`, as given.
#[derive(Debug, Clone)]
pub struct OutsideArg {
    pub name: String,
    pub service: Option<ServiceKind>,
    pub command: String,
}

fn parse_outside(s: &str) -> Result<OutsideArg, String> {
    let (left, command) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected NAME=CMD or NAME:SERVICE=CMD"))?;
    let (name, service) = match left.split_once(':') {
        Some((name, service)) => (
            name,
            Some(
                <ServiceKind as clap::ValueEnum>::from_str(service, true).map_err(|_| {
                    let names: Vec<String> = <ServiceKind as clap::ValueEnum>::value_variants()
                        .iter()
                        .filter_map(|v| Some(clap::ValueEnum::to_possible_value(v)?.get_name().to_string()))
                        .collect();
                    format!(
                        "'{service}' is not a service (expected one of {})",
                        names.join(", ")
                    )
                })?,
            ),
        ),
        None => (left, None),
    };
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(format!("'{s}': the server needs a name before '='"));
    }
    if <ModelKind as clap::ValueEnum>::from_str(name, true).is_ok() {
        return Err(format!(
            "'{name}' is a model's name: call the outside server something else"
        ));
    }
    if command.trim().is_empty() {
        return Err(format!("'{s}': no command after '='"));
    }
    if !crate::check::server::has_placeholder(command) {
        return Err(format!(
            "'{command}' has no {{port}} or {{addr}}: put one where the port goes, so the lab can start it on a free one"
        ));
    }
    Ok(OutsideArg {
        name: name.to_string(),
        service,
        command: command.to_string(),
    })
}

impl LabArgs {
    /// What clap cannot see in one argument: two servers of one name.
    pub fn check(&self) -> Result<(), String> {
        for (i, a) in self.servers.iter().enumerate() {
            if self.servers[..i].iter().any(|b| b.name == a.name) {
                return Err(format!("two --server are called '{}'", a.name));
            }
        }
        Ok(())
    }

    pub fn into_options(self) -> LabOptions {
        let outside: Vec<Outside> = self
            .servers
            .into_iter()
            .map(|a| Outside {
                name: a.name,
                service: a.service.unwrap_or(self.server_service),
                command: a.command,
            })
            .collect();
        LabOptions {
            // With outside servers and no --models, the outside servers alone.
            models: match (self.models.is_empty(), outside.is_empty()) {
                (true, true) => ModelKind::all().to_vec(),
                _ => self.models,
            },
            outside,
            scenarios: if self.scenarios.is_empty() {
                scenario::default_set()
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
                unp_clients: self.unp_clients,
                unp_rounds: self.unp_rounds,
                cost_rates: self.cost_rates,
                cost_duration: self.cost_duration,
            },
            json: self.json,
            markdown: self.markdown,
            html: (self.html.as_os_str() != "none").then_some(self.html),
            from: self.from,
        }
    }
}

/// `check --transport`: the socket a `--server` command serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportArg {
    Tcp,
    Udp,
    Unix,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  socklab check :7000 --service echo
  socklab check --server 'python3 server.py {port}' --service time --junit check.xml
  socklab check --server './srv {path}' --service welcome --quick

Exit status: 0 when no case failed, 1 when one did, 2 on a usage error.")]
#[command(group(clap::ArgGroup::new("target").required(true).args(["addr", "server"])))]
pub struct CheckArgs {
    /// The server to check, if it is already running: tcp:HOST:PORT,
    /// HOST:PORT, :PORT, unix:PATH, udp:HOST:PORT
    #[arg(
        value_name = "ADDR",
        required_unless_present = "server",
        conflicts_with = "server"
    )]
    pub addr: Option<Addr>,
    /// A command that starts the server: `{port}` becomes a free port,
    /// `{addr}` HOST:PORT (or the socket path), `{path}` a Unix socket path;
    /// check starts it under sh, watches it from /proc and stops it
    #[arg(long, value_name = "'CMD {port}'")]
    pub server: Option<String>,
    /// What the server speaks (see DESIGN section 3)
    #[arg(long, value_enum)]
    pub service: ServiceKind,
    /// With --server: the socket it serves [default: unix when the command
    /// has {path}, else tcp]
    #[arg(long, value_enum, requires = "server")]
    pub transport: Option<TransportArg>,
    /// With --server: where it listens, for a command without a placeholder
    #[arg(long = "addr", value_name = "ADDR", requires = "server")]
    pub listen: Option<Addr>,
    /// Write the results as one JSON document
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// Write the results as JUnit XML (for CI and autograders)
    #[arg(long, value_name = "FILE")]
    pub junit: Option<std::path::PathBuf>,
    /// Fewer connections, smaller floods, less patience: under 10 s
    #[arg(long)]
    pub quick: bool,
    /// Run only these cases or groups, comma-separated (framing, peers.junk, ...)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub only: Vec<String>,
    /// Do not run these cases or groups, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub skip: Vec<String>,
    /// peers.many: connections open at once [default: 1000; 100 with --quick]
    #[arg(long, value_name = "N", value_parser = parse_clients)]
    pub connections: Option<usize>,
}

impl CheckArgs {
    /// What clap cannot say: a command must tell where it listens, and
    /// `--only`/`--skip` name cases or groups that exist.
    pub fn check(&self) -> Result<(), String> {
        if let Some(server) = &self.server {
            let placeholder = crate::check::server::has_placeholder(server);
            if !placeholder && self.listen.is_none() {
                return Err(format!(
                    "--server '{server}' has no {{port}}, {{addr}} or {{path}}: put one where the port goes, or say where it listens with --addr"
                ));
            }
            if placeholder && self.listen.is_some() {
                return Err("--addr is for a --server command without {port}, {addr} or {path}".into());
            }
        }
        for name in self.only.iter().chain(&self.skip) {
            if !crate::check::is_case_or_group(name) {
                return Err(format!(
                    "'{name}' is neither a case nor a group; the groups: {}",
                    crate::check::GROUPS.join(", ")
                ));
            }
        }
        Ok(())
    }

    pub fn into_options(self) -> crate::check::CheckOptions {
        use crate::check::server::Transport;
        let target = match (self.server, self.addr) {
            (Some(template), _) => {
                let transport = match self.transport {
                    Some(TransportArg::Tcp) => Transport::Tcp,
                    Some(TransportArg::Udp) => Transport::Udp,
                    Some(TransportArg::Unix) => Transport::Unix,
                    None => Transport::guess(&template),
                };
                crate::check::Target::Command {
                    template,
                    transport,
                    listen: self.listen,
                }
            }
            // clap requires one of the two.
            (None, addr) => crate::check::Target::Addr(addr.unwrap_or_else(|| {
                Addr::Tcp(crate::addr::HostPort {
                    host: "127.0.0.1".into(),
                    port: 50000,
                })
            })),
        };
        crate::check::CheckOptions {
            target,
            service: self.service,
            json: self.json,
            junit: self.junit,
            quick: self.quick,
            only: self.only,
            skip: self.skip,
            connections: self.connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded_by_a_day() {
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert!(parse_duration("24h 1s")
            .unwrap_err()
            .contains("longest duration accepted, 24h"));
        assert!(parse_duration("300000000000years").is_err());
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn lab_help_names_every_scenario_as_the_parser_does() {
        let help = scenario::help();
        let err = scenario::parse("nope").unwrap_err();
        for s in scenario::ALL {
            assert!(help.contains(s.name()), "{help} lacks {}", s.name());
            assert!(err.contains(s.name()), "{err} lacks {}", s.name());
            assert_eq!(scenario::parse(s.name()).map(|p| p.name()), Ok(s.name()));
        }
        assert!(help.contains("[default: all but uring-ladder]"), "{help}");
    }

    #[test]
    fn counts_rates_and_modes() {
        assert_eq!(parse_count("3", 3), Ok(3));
        assert!(parse_count("4", 3).unwrap_err().contains("most accepted, 3"));
        assert!(parse_count("0", 3).is_err());
        assert!(parse_count("-1", 3).is_err());
        for bad in ["inf", "NaN", "0", "-1", "1e300", "0.0001"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o660"), Ok(0o660));
        assert_eq!(parse_mode("0777"), Ok(0o777));
        assert!(parse_mode("1000").is_err());
        assert!(parse_mode("8").is_err());
    }
}
