//! `socklab bench`: the seeds' concurrent client grown into a load generator.
//!
//! Closed loop: each of `--clients` clients sends a request, waits for the
//! whole reply, records the latency, and goes again. Each client is a thread
//! with a blocking socket, as in the seeds' clients; latencies go into one
//! HDR histogram per client, merged at the end.
//!
//! A whole reply (DESIGN section 6): when the server closes, what came
//! before the close; when the request ends in `\n` (a line protocol), one
//! line; otherwise as many bytes as were sent (echo). A reply that ends
//! early, a reset, a refused connection or a timeout is an error.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::addr::Addr;
use crate::net::Stream;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub addr: Addr,
    pub clients: usize,
    pub load: Load,
    pub payload: Payload,
    pub new_connection: bool,
    /// How long a reply may take before it counts as an error.
    pub timeout: Duration,
    pub json: bool,
    pub verbose: bool,
    pub quiet: bool,
}

/// How much work each client does.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// This many requests per client.
    Requests(usize),
    /// As many as fit in this long.
    Duration(Duration),
}

/// What each request carries.
#[derive(Debug, Clone)]
pub enum Payload {
    Text(Vec<u8>),
    /// `--size N`: N bytes of printable filler, ending in `\n`.
    Size(usize),
}

impl Payload {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Text(text) => text.clone(),
            Payload::Size(n) => {
                let mut bytes: Vec<u8> = (0..*n).map(|i| b'a' + (i % 26) as u8).collect();
                if let Some(last) = bytes.last_mut() {
                    *last = b'\n';
                }
                bytes
            }
        }
    }
}

/// The result, with the JSON keys of DESIGN section 6.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Requests attempted: `replies + errors`.
    pub requests: u64,
    /// Requests answered with a whole reply.
    pub replies: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    /// Replies per second over the whole run.
    pub throughput_rps: f64,
    pub latency_us: Latency,
    pub clients: usize,
    #[serde(skip)]
    pub per_client: Vec<ClientReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// One client's share, for `--verbose`.
#[derive(Debug, Clone)]
pub struct ClientReport {
    pub replies: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub last_reply: Vec<u8>,
    pub last_error: Option<String>,
}

/// Runs the benchmark and returns the merged report.
pub fn measure(options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let request = options.payload.bytes();
    let start = Instant::now();
    let results: Vec<(ClientReport, Histogram<u64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.clients)
            .map(|_| scope.spawn(|| run_client(options, &request, start)))
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Result<_, _>>()
    })
    .map_err(|_| anyhow::anyhow!("a bench client panicked"))?;
    let elapsed = start.elapsed();

    let mut merged = new_histogram();
    let mut per_client = Vec::new();
    for (report, histogram) in results {
        merged.add(&histogram)?;
        per_client.push(report);
    }
    let replies: u64 = per_client.iter().map(|c| c.replies).sum();
    let errors: u64 = per_client.iter().map(|c| c.errors).sum();
    Ok(BenchReport {
        requests: replies + errors,
        replies,
        errors,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_rps: replies as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        latency_us: latency(&merged),
        clients: options.clients,
        per_client,
    })
}

/// `socklab bench`: measure, print, and fail when nothing succeeded.
pub fn run(options: BenchOptions) -> anyhow::Result<()> {
    let report = measure(&options)?;
    let mut out = io::stdout().lock();
    if options.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        if options.verbose {
            for (i, client) in report.per_client.iter().enumerate() {
                writeln!(out, "{}", client_line(i + 1, client))?;
            }
        }
        write!(out, "{}", summary(&options.addr, &report))?;
    }
    out.flush()?;
    if report.replies == 0 && report.errors > 0 {
        let why = report
            .per_client
            .iter()
            .find_map(|c| c.last_error.clone())
            .unwrap_or_default();
        bail!("no request succeeded ({} errors): {why}", report.errors);
    }
    Ok(())
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 hour at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
    }
}

fn run_client(options: &BenchOptions, request: &[u8], start: Instant) -> (ClientReport, Histogram<u64>) {
    let mut histogram = new_histogram();
    let mut report = ClientReport {
        replies: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        last_reply: Vec::new(),
        last_error: None,
    };
    let deadline = match options.load {
        Load::Duration(d) => Some(start + d),
        Load::Requests(_) => None,
    };
    let mut connection: Option<Stream> = None;
    let mut sent = 0usize;
    loop {
        match options.load {
            Load::Requests(n) if sent >= n => break,
            Load::Duration(_) if deadline.is_some_and(|d| Instant::now() >= d) => break,
            _ => {}
        }
        sent += 1;
        let began = Instant::now();
        let outcome = one_request(options, &mut connection, request);
        match outcome {
            Ok(reply) => {
                let micros = began.elapsed().as_micros().max(1) as u64;
                let _ = histogram.record(micros.min(histogram.high()));
                report.replies += 1;
                report.last_reply = reply;
            }
            Err(e) => {
                connection = None;
                report.errors += 1;
                report.last_error = Some(e.to_string());
                if e.kind() == io::ErrorKind::ConnectionRefused && deadline.is_some() {
                    // A refused connection comes back at once: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        if options.new_connection {
            connection = None;
        }
    }
    report.elapsed = start.elapsed();
    (report, histogram)
}

/// Sends one request and reads one whole reply; drops the connection when
/// the server closed it.
fn one_request(
    options: &BenchOptions,
    connection: &mut Option<Stream>,
    request: &[u8],
) -> io::Result<Vec<u8>> {
    let mut stream = match connection.take() {
        Some(stream) => stream,
        None => {
            let stream = Stream::connect(&options.addr, Some(options.timeout)).map_err(|e| {
                let kind = e
                    .downcast_ref::<io::Error>()
                    .map_or(io::ErrorKind::Other, io::Error::kind);
                io::Error::new(kind, format!("{e:#}"))
            })?;
            stream.set_read_timeout(Some(options.timeout))?;
            stream.set_write_timeout(Some(options.timeout))?;
            stream
        }
    };
    stream.write_all(request)?;
    let line_reply = request.ends_with(b"\n");
    let mut reply = Vec::with_capacity(request.len());
    let mut buf = [0u8; 4096];
    let closed = loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for a reply",
                ))
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            break true;
        }
        reply.extend_from_slice(&buf[..n]);
        let complete = if line_reply {
            reply.contains(&b'\n')
        } else {
            reply.len() >= request.len()
        };
        if complete {
            break false;
        }
    };
    if reply.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed without replying",
        ));
    }
    if !closed {
        *connection = Some(stream);
    }
    Ok(reply)
}

/// The human summary.
pub fn summary(addr: &Addr, r: &BenchReport) -> String {
    let l = &r.latency_us;
    format!(
        "{addr}: {} clients\n  requests   {} ({} replies, {} errors) in {:.3} s\n  throughput {:.1} requests/s\n  latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}\n",
        r.clients,
        r.requests,
        r.replies,
        r.errors,
        r.elapsed_s,
        r.throughput_rps,
        micros(l.p50),
        micros(l.p90),
        micros(l.p99),
        micros(l.p999),
        micros(l.max),
        micros(l.mean.round() as u64),
    )
}

/// The seeds' per-thread line: `client 3: received 'hello! ...' in 5.006 s`.
fn client_line(n: usize, c: &ClientReport) -> String {
    let text = String::from_utf8_lossy(&c.last_reply);
    let text = text.trim_end();
    let shown: String = text.chars().take(72).collect();
    let ellipsis = if shown.len() < text.len() { "..." } else { "" };
    let mut line = format!(
        "client {n}: received '{shown}{ellipsis}' in {:.3} s",
        c.elapsed.as_secs_f64()
    );
    if c.replies != 1 || c.errors > 0 {
        line += &format!(" ({} replies, {} errors)", c.replies, c.errors);
    }
    if let Some(e) = &c.last_error {
        line += &format!("; last error: {e}");
    }
    line
}

/// A latency in the unit that reads best.
pub fn micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.3} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_payload_is_a_line_of_that_length() {
        let p = Payload::Size(512).bytes();
        assert_eq!(p.len(), 512);
        assert!(p.ends_with(b"\n"));
        assert_eq!(p.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn units() {
        assert_eq!(micros(12), "12 µs");
        assert_eq!(micros(1500), "1.50 ms");
        assert_eq!(micros(5_006_000), "5.006 s");
    }
}
