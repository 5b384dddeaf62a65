//! `socklab send ADDR [MESSAGE...]`: one request, the reply on stdout.
//!
//! Sends the message, then half-closes (as `nc -N` does) so that services
//! which answer until EOF (echo, greet, welcome) finish, and prints every
//! byte the server sends until it closes.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::addr::Addr;
use crate::net::{would_block, Stream};

#[derive(Debug, Clone)]
pub struct SendOptions {
    pub addr: Addr,
    pub message: Vec<u8>,
    /// Give up when the server has been silent this long.
    pub timeout: Duration,
}

/// Sends the request and returns the whole reply.
pub fn request(options: &SendOptions) -> anyhow::Result<Vec<u8>> {
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
        Err(e) if would_block(&e) || e.kind() == std::io::ErrorKind::TimedOut => {
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
