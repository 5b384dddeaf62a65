//! `socklab send ADDR [MESSAGE...]`: one request, the reply on stdout.
//!
//! The request is the MESSAGE words joined by spaces or, with no MESSAGE,
//! standard input to its end (as `printf 'x' | nc` sends), up to
//! `--max-line` bytes.
//!
//! Over a stream it sends the request, then half-closes (as `nc -N` does)
//! so that services which answer until EOF (echo, greet, welcome) finish,
//! and prints every byte the server sends until it closes.
//!
//! Over UDP it sends one plain datagram, as `nc -u` does, and prints the
//! first datagram the server sends back: any UDP server answers that way
//! (seed 001's time server, seed 003's greet server). Nothing guarantees
//! delivery (seed 003), so `--id` adds a request ID (`#ID message`): if no
//! reply with that ID comes within `--timeout`, the same request, same ID,
//! goes again, up to `--retries` tries, and socklab's server answers a
//! repeated ID from its cache, so a retry never applies a change twice.
//!
//! A name that resolves to several addresses (`localhost`: `::1`, then
//! `127.0.0.1`) is tried address by address, in the resolver's order.

use std::io::{IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::addr::{Addr, HostPort};
use crate::net::{self, Stream};

/// The largest payload of one UDP datagram over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

#[derive(Debug, Clone)]
pub struct SendOptions {
    pub addr: Addr,
    /// The request; `None`: standard input, read by [`run`].
    pub message: Option<Vec<u8>>,
    /// The longest request read from stdin.
    pub max_request: usize,
    /// Give up when the server has been silent this long (for UDP: per try).
    pub timeout: Duration,
    /// UDP with `id`: how many times the request is sent before giving up.
    pub tries: u32,
    /// UDP: prefix `#ID ` and retry on silence.
    pub id: bool,
}

/// Sends the request and returns the whole reply.
pub fn request(options: &SendOptions) -> anyhow::Result<Vec<u8>> {
    if let Addr::Udp(hp) = &options.addr {
        return datagram(hp, options);
    }
    let message = options.message.as_deref().unwrap_or_default();
    let mut stream = Stream::connect(&options.addr, Some(options.timeout))?;
    stream.set_read_timeout(Some(options.timeout))?;
    if !message.is_empty() {
        stream
            .write_all(message)
            .with_context(|| format!("cannot send to {}", options.addr))?;
    }
    // The peer may already have closed (a service that needs no request);
    // then there is nothing to half-close and that is fine.
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e) if net::timed_out(&e) => {
            if reply.is_empty() {
                bail!("no reply from {} within {:?}", options.addr, options.timeout);
            }
        }
        Err(e) if !reply.is_empty() => tracing::debug!("after the reply: {e}"),
        Err(e) => return Err(e).with_context(|| format!("no reply from {}", options.addr)),
    }
    if reply.is_empty() {
        bail!(
            "no reply from {}: it closed the connection without a word",
            options.addr
        );
    }
    Ok(reply)
}

/// One request over UDP: to each address the name has, in turn, until one
/// answers; with `--id`, retried on silence.
fn datagram(hp: &HostPort, options: &SendOptions) -> anyhow::Result<Vec<u8>> {
    let message = options.message.as_deref().unwrap_or_default();
    if message.len() > MAX_DATAGRAM {
        bail!(
            "the request is {} bytes; one UDP datagram holds at most {MAX_DATAGRAM}",
            message.len()
        );
    }
    let prefix = if options.id {
        format!("#{} ", request_id()).into_bytes()
    } else {
        Vec::new()
    };
    let request = [&prefix[..], message].concat();
    let tries = if options.id { options.tries.max(1) } else { 1 };
    let mut refused = false;
    for server in hp.resolve().with_context(|| format!("cannot resolve {hp}"))? {
        match ask(server, &request, &prefix, tries, options.timeout)? {
            Answer::Reply(reply) => return Ok(reply),
            Answer::Refused => refused = true,
            Answer::Silence => {}
        }
    }
    if refused {
        bail!(
            "no reply from {}: connection refused (nothing listens there)",
            options.addr
        );
    }
    if options.id {
        bail!("no reply from {} after {tries} tries", options.addr);
    }
    bail!(
        "no reply from {} within {:?} (UDP does not retry without --id)",
        options.addr,
        options.timeout
    )
}

enum Answer {
    Reply(Vec<u8>),
    /// ICMP port unreachable: nothing listens at this address.
    Refused,
    Silence,
}

/// `tries` sends of `request` to `server`, each waiting `timeout` for a
/// datagram that starts with `prefix` (the ID; empty: any datagram).
fn ask(
    server: SocketAddr,
    request: &[u8],
    prefix: &[u8],
    tries: u32,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let socket = net::udp_socket_for(server)?;
    // Connected: the kernel passes on only the server's datagrams, and an
    // ICMP port unreachable comes back as ECONNREFUSED.
    socket.connect(server)?;
    let mut buf = vec![0u8; 65_536];
    for _ in 0..tries {
        match socket.send(request) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(Answer::Refused),
            Err(e) => return Err(e).with_context(|| format!("cannot send to udp:{server}")),
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv(&mut buf) {
                // Only the answer to this request counts (a late answer to
                // another ID is not ours).
                Ok(n) if buf[..n].starts_with(prefix) => {
                    return Ok(Answer::Reply(buf[prefix.len()..n].to_vec()))
                }
                Ok(_) => tracing::debug!("ignoring a datagram that is not our reply"),
                Err(e) if net::timed_out(&e) => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(Answer::Refused),
                Err(e) if net::interrupted(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("cannot receive from udp:{server}")),
            }
        }
    }
    Ok(Answer::Silence)
}

/// An ID unlikely to repeat between runs: the pid and the clock.
fn request_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// The request from standard input, read to its end: at most `max` bytes,
/// and, when stdin is not a terminal, with no pause longer than `timeout`
/// (a pipe that neither sends nor closes would otherwise hold us forever).
pub fn read_stdin(max: usize, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        eprintln!("(reading the request from stdin: end it with Ctrl-D, or give it as arguments)");
    }
    let (tx, rx) = mpsc::channel();
    // A thread, so that a silent pipe can be given up on; it is not joined.
    std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let chunk = match stdin.read(&mut buf) {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(buf[..n].to_vec())),
                Err(e) if net::interrupted(&e) => continue,
                Err(e) => Err(e),
            };
            let end = !matches!(chunk, Ok(Some(_)));
            if tx.send(chunk).is_err() || end {
                return;
            }
        }
    })?;
    let mut request = Vec::new();
    loop {
        let chunk = if terminal {
            rx.recv().map_err(|_| anyhow::anyhow!("stdin closed"))?
        } else {
            match rx.recv_timeout(timeout) {
                Ok(chunk) => chunk,
                Err(_) => bail!(
                    "stdin sent nothing for {timeout:?} and did not end; close it, or give the request as arguments"
                ),
            }
        };
        match chunk.context("cannot read stdin")? {
            None => return Ok(request),
            Some(bytes) => {
                request.extend_from_slice(&bytes);
                if request.len() > max {
                    bail!("stdin is longer than --max-line ({max} bytes); send a longer request with --max-line BYTES");
                }
            }
        }
    }
}

/// `socklab send`: prints the reply, ending the line if the reply did not.
pub fn run(mut options: SendOptions) -> anyhow::Result<()> {
    if options.message.is_none() {
        options.message = Some(read_stdin(options.max_request, options.timeout)?);
    }
    let reply = request(&options)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&reply)?;
    if !reply.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}
