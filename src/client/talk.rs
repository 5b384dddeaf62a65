//! `socklab connect ADDR` and `socklab listen ADDR`: an interactive
//! conversation, both ways at once (seed 002's assignment 6, where server and
//! client each print what the other sends and send what their user types).
//!
//! Two directions, two threads: one copies stdin to the peer and half-closes
//! at end of input; the calling thread copies the peer to stdout until the
//! peer closes, which ends the conversation (as `nc` does).

use std::io::{self, Read, Write};
use std::net::Shutdown;

use anyhow::{bail, Context};

use crate::addr::Addr;
use crate::net::{self, BindOptions, Bound, Stream};

/// `socklab connect`: talk to a server.
pub fn connect(addr: &Addr) -> anyhow::Result<()> {
    let stream = Stream::connect(addr, None)?;
    talk(stream)
}

/// `socklab listen`: wait for one peer, announce where on stderr (stdout is
/// the conversation), then talk.
pub fn listen(addr: &Addr) -> anyhow::Result<()> {
    let listener = match net::bind(addr, BindOptions::default())? {
        Bound::Stream(listener) => listener,
        Bound::Datagram(_) => bail!("{addr}: listen takes a stream address (tcp: or unix:)"),
    };
    eprintln!("listening on {}", listener.local_addr()?);
    let peer = listener.accept().context("accept failed")?;
    drop(listener); // One peer only: stop listening (and remove a unix path).
    talk(peer)
}

fn talk(stream: Stream) -> anyhow::Result<()> {
    let to_peer = stream.try_clone()?;
    // Not joined: at the peer's close we exit, even with the user mid-line.
    std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut writer = &to_peer;
        if let Err(e) = io::copy(&mut io::stdin().lock(), &mut writer) {
            tracing::debug!("sending stdin: {e}");
        }
        let _ = to_peer.shutdown(Shutdown::Write);
    })?;
    let mut reader = &stream;
    let mut stdout = io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if net::interrupted(&e) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e).context("receiving from the peer"),
        };
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
}
