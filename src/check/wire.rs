//! The checker's side of a conversation: a client socket whose every wait
//! has a deadline and whose every buffer has a bound, because the server
//! under check is as hostile as any peer (it may answer forever, never
//! close, or send half a reply).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::addr::Addr;
use crate::net::Stream;

/// The most a case keeps of one reply; beyond it the reply is "too long",
/// which is a verdict, not a reason to hold more.
pub const MAX_REPLY: usize = 2 << 20;

/// How a read of a reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The reply was whole, as the caller judged it.
    Complete,
    /// The server closed its side.
    Eof,
    /// The deadline passed first.
    Timeout,
    /// More than the bound arrived.
    Full,
    /// The connection failed (reset, ...).
    Error(String),
}

/// What came back, and how the read ended.
#[derive(Debug, Clone)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub end: End,
}

impl Reply {
    /// `"text"`, then how it ended when that is worth saying: the phrase a
    /// case line shows for what it saw.
    pub fn show(&self) -> String {
        let end = match &self.end {
            End::Complete => String::new(),
            End::Eof => " then close".into(),
            End::Timeout => " then silence".into(),
            End::Full => format!(" (more than {} bytes)", MAX_REPLY),
            End::Error(e) => format!(" then {e}"),
        };
        if self.bytes.is_empty() {
            return match &self.end {
                End::Eof => "close, no reply".into(),
                End::Timeout => "nothing".into(),
                End::Error(e) => e.clone(),
                _ => "nothing".into(),
            };
        }
        format!("{}{end}", show(&self.bytes))
    }
}

/// Bytes as a case line shows them: quoted, escaped, cut at about 48
/// characters of escaped text, with the length when cut.
pub fn show(bytes: &[u8]) -> String {
    const MOST: usize = 48;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MOST * 4)]);
    let mut out = String::new();
    let mut cut = false;
    for c in text.chars() {
        if out.len() >= MOST {
            cut = true;
            break;
        }
        out.extend(c.escape_debug());
    }
    if cut || bytes.len() > MOST * 4 {
        return format!("\"{out}...\" ({} bytes)", bytes.len());
    }
    format!("\"{out}\"")
}

/// One connection to the server under check.
pub struct Peer {
    stream: Stream,
    /// Bytes read past the end of the last reply (a line service that
    /// answered two requests in one segment).
    pending: Vec<u8>,
}

impl Peer {
    /// Connects within `timeout`.
    pub fn connect(addr: &Addr, timeout: Duration) -> Result<Peer, String> {
        let stream = Stream::connect(addr, Some(timeout)).map_err(|e| format!("{e:#}"))?;
        // No write may block a case for ever: a server that never reads
        // fills the socket buffers, and the case must see that, not hang.
        let _ = stream.set_write_timeout(Some(timeout.max(Duration::from_secs(2))));
        Ok(Peer {
            stream,
            pending: Vec::new(),
        })
    }

    /// Writes all of `bytes`, or says why it could not.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| describe(&e))
    }

    /// Writes `bytes` in pieces of `size`, waiting `pause` between them, so
    /// that each is its own segment and, most likely, its own read.
    pub fn send_in_pieces(&mut self, bytes: &[u8], size: usize, pause: Duration) -> Result<(), String> {
        for (i, piece) in bytes.chunks(size.max(1)).enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            self.send(piece)?;
        }
        Ok(())
    }

    /// Reads until `complete` says the reply is whole, the server closes,
    /// `wait` passes, or more than `limit` bytes came.
    pub fn read_until(&mut self, wait: Duration, limit: usize, complete: impl Fn(&[u8]) -> bool) -> Reply {
        let deadline = Instant::now() + wait;
        let mut bytes = std::mem::take(&mut self.pending);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if complete(&bytes) {
                return Reply {
                    bytes,
                    end: End::Complete,
                };
            }
            if bytes.len() > limit {
                return Reply {
                    bytes,
                    end: End::Full,
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Reply {
                    bytes,
                    end: End::Timeout,
                };
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.stream.read(&mut buf) {
                Ok(0) => return Reply { bytes, end: End::Eof },
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if crate::net::would_block(&e) || crate::net::timed_out(&e) => {}
                Err(e) if crate::net::interrupted(&e) => {}
                Err(e) => {
                    return Reply {
                        bytes,
                        end: End::Error(describe(&e)),
                    }
                }
            }
        }
    }

    /// Reads exactly `n` bytes (or what came before the end); whatever
    /// follows is kept for the next read.
    pub fn read_exact(&mut self, n: usize, wait: Duration) -> Reply {
        let mut reply = self.read_until(wait, n.max(MAX_REPLY), |b| b.len() >= n);
        if reply.bytes.len() > n {
            self.pending = reply.bytes.split_off(n);
        }
        reply
    }

    /// Reads one line (through `\n`); what follows is kept for the next.
    pub fn read_line(&mut self, wait: Duration) -> Reply {
        let mut reply = self.read_until(wait, MAX_REPLY, |b| b.contains(&b'\n'));
        if let Some(nl) = reply.bytes.iter().position(|&b| b == b'\n') {
            self.pending = reply.bytes.split_off(nl + 1);
        }
        reply
    }

    /// Reads until the server closes (or the bounds).
    pub fn read_to_close(&mut self, wait: Duration) -> Reply {
        self.read_until(wait, MAX_REPLY, |_| false)
    }

    /// Whether the server has closed (or reset) the connection, waiting at
    /// most `wait`; bytes it sends meanwhile are read and dropped.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let reply = self.read_until(wait, MAX_REPLY, |_| false);
        matches!(reply.end, End::Eof | End::Error(_))
    }

    /// Sends FIN: the peer will say nothing more, but still listens.
    pub fn half_close(&self) -> Result<(), String> {
        self.stream.shutdown(Shutdown::Write).map_err(|e| describe(&e))
    }

    /// Vanishes with a reset (SO_LINGER 0, then close), as a crashed
    /// client's kernel or a firewall would.
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt reads `linger`, which lives across the call,
        // on a descriptor this peer owns until the drop below.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }

    /// A second handle on the socket, for a writer thread.
    pub fn try_clone(&self) -> Result<Peer, String> {
        Ok(Peer {
            stream: self.stream.try_clone().map_err(|e| describe(&e))?,
            pending: Vec::new(),
        })
    }

    /// Writes `chunk` again and again, never reading, until `total` bytes
    /// went, no write progressed for `stall`, or `within` passed: the
    /// bytes written, and whether the server stopped taking them.
    pub fn push(&mut self, chunk: &[u8], total: usize, stall: Duration, within: Duration) -> (usize, bool) {
        let _ = self.stream.set_write_timeout(Some(stall));
        let until = Instant::now() + within;
        let mut sent = 0;
        while sent < total && Instant::now() < until {
            match self.stream.write(chunk) {
                Ok(0) => return (sent, true),
                Ok(n) => sent += n,
                Err(e) if crate::net::interrupted(&e) => {}
                // Blocked for `stall`, or refused (the server went away):
                // either way it stopped taking bytes.
                Err(_) => return (sent, true),
            }
        }
        (sent, false)
    }
}

/// An I/O error as a case line says it.
pub fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset => "reset by the server".into(),
        std::io::ErrorKind::BrokenPipe => "the server had closed".into(),
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// A small deterministic generator for "random" bytes: the same junk on
/// every run, so that a failure can be replayed.
pub struct Junk(u64);

impl Junk {
    pub fn new(seed: u64) -> Junk {
        Junk(seed | 1)
    }

    /// `n` bytes of xorshift64* output.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_bytes_short_and_escaped() {
        assert_eq!(show(b"Welcome!"), "\"Welcome!\"");
        assert_eq!(show(b"a\nb"), "\"a\\nb\"");
        let long = show(&[b'x'; 1000]);
        assert!(long.ends_with("...\" (1000 bytes)"), "{long}");
    }

    #[test]
    fn junk_is_the_same_every_time() {
        assert_eq!(Junk::new(7).bytes(16), Junk::new(7).bytes(16));
        assert_ne!(Junk::new(7).bytes(16), Junk::new(8).bytes(16));
    }
}
