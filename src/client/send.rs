//! `socklab send ADDR [MESSAGE...]`: one request, the reply on stdout.
//!
//! Over a stream it sends the message, then half-closes (as `nc -N` does) so
//! that services which answer until EOF (echo, greet, welcome) finish, and
//! prints every byte the server sends until it closes.
//!
//! Over UDP nothing guarantees delivery (seed 003): the request goes out with
//! a request ID (`#ID message`), and if no reply with that ID comes from the
//! server within `--timeout`, the same request, same ID, goes again, up to
//! `--retries` tries. The server answers a repeated ID from its cache, so a
//! retry never applies a change twice.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::addr::{Addr, HostPort};
use crate::net::{self, Stream};

#[derive(Debug, Clone)]
pub struct SendOptions {
    pub addr: Addr,
    pub message: Vec<u8>,
    /// Give up when the server has been silent this long (for UDP: per try).
    pub timeout: Duration,
    /// UDP: how many times the request is sent before giving up.
    pub tries: u32,
}

/// Sends the request and returns the whole reply.
pub fn request(options: &SendOptions) -> anyhow::Result<Vec<u8>> {
    if let Addr::Udp(hp) = &options.addr {
        return datagram(hp, options);
    }
    let mut stream = Stream::connect(&options.addr, Some(options.timeout))?;
    stream.set_read_timeout(Some(options.timeout))?;
    if !options.message.is_empty() {
        stream
            .write_all(&options.message)
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

/// One request over UDP, with an ID, retried on silence.
fn datagram(hp: &HostPort, options: &SendOptions) -> anyhow::Result<Vec<u8>> {
    let server = hp.resolve().with_context(|| format!("cannot resolve {hp}"))?[0];
    let socket = net::udp_socket_for(server)?;
    let prefix = format!("#{} ", request_id()).into_bytes();
    let request = [&prefix[..], &options.message].concat();
    let mut buf = vec![0u8; 65_536];
    for _ in 0..options.tries.max(1) {
        socket
            .send_to(&request, server)
            .with_context(|| format!("cannot send to {}", options.addr))?;
        let deadline = Instant::now() + options.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv_from(&mut buf) {
                // Only the server's answer to this request counts.
                Ok((n, from)) if from == server && buf[..n].starts_with(&prefix) => {
                    return Ok(buf[prefix.len()..n].to_vec());
                }
                Ok((_, from)) => tracing::debug!(%from, "ignoring a datagram that is not our reply"),
                Err(e) if net::timed_out(&e) => break,
                // ICMP port unreachable comes back as ECONNREFUSED: just another silence.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).with_context(|| format!("cannot receive from {}", options.addr)),
            }
        }
    }
    bail!(
        "no reply from {} after {} tries",
        options.addr,
        options.tries.max(1)
    )
}

/// An ID unlikely to repeat between runs: the pid and the clock.
fn request_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// `socklab send`: prints the reply, ending the line if the reply did not.
pub fn run(options: SendOptions) -> anyhow::Result<()> {
    let reply = request(&options)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&reply)?;
    if !reply.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}
