//! `socklab connect ADDR` and `socklab listen ADDR`: an interactive
//! conversation, both ways at once (seed 002's assignment 6, where server and
//! client each print what the other sends and send what their user types).
//!
//! Over a stream, two directions, two threads: one copies stdin to the peer
//! and half-closes at end of input; the calling thread copies the peer to
//! stdout until the peer closes, which ends the conversation (as `nc`
//! does). `listen --keep` (nc's `-k`) then takes the next peer; stdin goes
//! to whichever peer is connected.
//!
//! Over UDP each line of stdin is one datagram (without its newline, as the
//! seeds' clients send) and each datagram that comes back is printed on a
//! line of its own. UDP has no end, so after stdin ends the conversation
//! ends once the peer has been silent for `--timeout`. `listen udp:` talks
//! to the first sender (with `--keep`: to whoever sent last).
//!
//! `--label` prints what the peer sends as seed 002 does,
//! `From 127.0.0.1:36588, Hello World!!!`, one line at a time.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::addr::{Addr, HostPort};
use crate::net::{self, BindOptions, Bound, Stream};

#[derive(Debug, Clone)]
pub struct TalkOptions {
    pub addr: Addr,
    /// listen: after a peer leaves, take the next one (nc -k).
    pub keep: bool,
    /// Print what the peer sends as `From ADDR, line`.
    pub label: bool,
    /// listen: a listener on `[::]` takes IPv6 peers only.
    pub ipv6_only: bool,
    /// UDP: after stdin ends, how long a silent peer is waited for.
    pub timeout: Duration,
}

/// The longest unfinished line `--label` holds before printing it anyway.
const MAX_LABELLED_LINE: usize = 64 * 1024;

/// UDP `connect`: how many unanswered lines are kept for the next address.
const MAX_UNANSWERED: usize = 64;

/// `socklab connect`: talk to a server.
pub fn connect(options: &TalkOptions) -> anyhow::Result<()> {
    if let Addr::Udp(hp) = &options.addr {
        let candidates = hp.resolve().with_context(|| format!("cannot resolve {hp}"))?;
        let talk = UdpTalk::connect(candidates)?;
        return talk.run(options);
    }
    let stream = Stream::connect(&options.addr, None)?;
    let outgoing = Outgoing::start()?;
    outgoing.attach(&stream)?;
    receive(&stream, options.label.then(|| peer_name(&stream)))
}

/// `socklab listen`: wait for a peer, announce where on stderr (stdout is
/// the conversation), then talk; with `--keep`, one peer after another.
pub fn listen(options: &TalkOptions) -> anyhow::Result<()> {
    let bind = BindOptions {
        ipv6_only: options.ipv6_only,
        ..BindOptions::default()
    };
    let listener = match net::bind(&options.addr, bind)? {
        Bound::Stream(listener) => listener,
        Bound::Datagram(socket) => {
            eprintln!("listening on udp:{}", HostPort::from(socket.local_addr()?));
            return UdpTalk::listen(socket).run(options);
        }
    };
    eprintln!("listening on {}", listener.local_addr()?);
    let outgoing = Outgoing::start()?;
    loop {
        let peer = listener.accept().context("accept failed")?;
        let name = peer_name(&peer);
        eprintln!("connection from {name}");
        outgoing.attach(&peer)?;
        let result = receive(&peer, options.label.then_some(name));
        outgoing.detach();
        if !options.keep {
            return result;
        }
        if let Err(e) = result {
            eprintln!("{e:#}");
        }
    }
}

/// Who is at the other end, as a user reads it: an IPv4 peer of a `[::]`
/// listener as `127.0.0.1:PORT`, not `[::ffff:127.0.0.1]:PORT`.
fn peer_name(stream: &Stream) -> String {
    match stream {
        Stream::Tcp(s) => s
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| canonical(a).to_string()),
        Stream::Unix(s) => match s
            .peer_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        {
            Some(path) => format!("unix:{path}"),
            None => "a unix socket peer".into(),
        },
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// stdin, copied to whichever peer is connected. One thread for the whole
/// run, so that `--keep` hands the same stdin from peer to peer.
struct Outgoing {
    peer: Mutex<Option<Stream>>,
    /// Signalled when a peer is attached: input read before there is one
    /// (typed early, or sent while the connection was still being set up)
    /// waits for it instead of being lost.
    attached: Condvar,
    /// stdin has ended: a peer that arrives now is half-closed at once.
    ended: AtomicBool,
}

impl Outgoing {
    fn start() -> anyhow::Result<Arc<Outgoing>> {
        let outgoing = Arc::new(Outgoing {
            peer: Mutex::new(None),
            attached: Condvar::new(),
            ended: AtomicBool::new(false),
        });
        let shared = outgoing.clone();
        // Not joined: at the peer's close we exit, even with the user mid-line.
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || shared.copy_stdin())?;
        Ok(outgoing)
    }

    fn copy_stdin(&self) {
        let mut stdin = io::stdin().lock();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if net::interrupted(&e) => continue,
                Err(e) => {
                    tracing::debug!("reading stdin: {e}");
                    break;
                }
            };
            let mut peer = self.peer.lock().unwrap_or_else(PoisonError::into_inner);
            while peer.is_none() {
                peer = self.attached.wait(peer).unwrap_or_else(PoisonError::into_inner);
            }
            if let Some(mut peer) = peer.as_ref() {
                if let Err(e) = peer.write_all(&buf[..n]) {
                    tracing::debug!("sending stdin: {e}");
                }
            }
        }
        self.ended.store(true, Ordering::SeqCst);
        if let Some(peer) = self.peer.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            let _ = peer.shutdown(Shutdown::Write);
        }
    }

    fn attach(&self, stream: &Stream) -> io::Result<()> {
        let mut peer = self.peer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.ended.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Write);
        }
        *peer = Some(stream.try_clone()?);
        self.attached.notify_all();
        Ok(())
    }

    fn detach(&self) {
        *self.peer.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Copies the peer to stdout until it closes.
fn receive(stream: &Stream, label: Option<String>) -> anyhow::Result<()> {
    let mut reader = stream;
    let mut printer = Printer::new(label);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if net::interrupted(&e) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("receiving from the peer"),
        };
        printer.bytes(&buf[..n])?;
    }
    printer.finish()
}

/// Writes what the peer sends to stdout: as it comes, or labelled line by
/// line (`From ADDR, ...`).
struct Printer {
    label: Option<String>,
    /// With a label: the unfinished last line.
    pending: Vec<u8>,
}

impl Printer {
    fn new(label: Option<String>) -> Self {
        Printer {
            label,
            pending: Vec::new(),
        }
    }

    fn bytes(&mut self, data: &[u8]) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        let Some(label) = &self.label else {
            stdout.write_all(data)?;
            return stdout.flush();
        };
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            labelled(&mut stdout, label, &self.pending[start..start + nl])?;
            start += nl + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_LABELLED_LINE {
            labelled(&mut stdout, label, &std::mem::take(&mut self.pending))?;
        }
        stdout.flush()
    }

    /// The peer is done: an unfinished last line is printed as a line.
    fn finish(&mut self) -> anyhow::Result<()> {
        if let (Some(label), false) = (&self.label, self.pending.is_empty()) {
            let mut stdout = io::stdout().lock();
            labelled(&mut stdout, label, &std::mem::take(&mut self.pending))?;
            stdout.flush()?;
        }
        Ok(())
    }
}

fn labelled(out: &mut impl Write, label: &str, line: &[u8]) -> io::Result<()> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    write!(out, "From {label}, ")?;
    out.write_all(line)?;
    out.write_all(b"\n")
}

/// A conversation over UDP.
struct UdpTalk {
    /// The socket; `connect` swaps in another when an address refuses.
    socket: Mutex<Arc<UdpSocket>>,
    /// `connect`: the addresses not tried yet, in resolver order.
    candidates: Mutex<Vec<SocketAddr>>,
    /// `listen`: the peer replies go to (`None` until the first datagram).
    peer: Mutex<Option<SocketAddr>>,
    listening: bool,
    /// `connect`: lines sent to the current address with no reply yet,
    /// sent again to the next address if this one refuses.
    unanswered: Mutex<Vec<Vec<u8>>>,
    /// When a datagram last went either way.
    last_activity: Mutex<Instant>,
    ended: AtomicBool,
}

impl UdpTalk {
    fn connect(mut candidates: Vec<SocketAddr>) -> anyhow::Result<Arc<UdpTalk>> {
        candidates.reverse(); // Popped from the end: resolver order.
        let first = candidates.pop().context("the name resolves to no address")?;
        let talk = Self::new(connected_udp(first)?, candidates, false);
        Ok(talk)
    }

    fn listen(socket: UdpSocket) -> Arc<UdpTalk> {
        Self::new(socket, Vec::new(), true)
    }

    fn new(socket: UdpSocket, candidates: Vec<SocketAddr>, listening: bool) -> Arc<UdpTalk> {
        Arc::new(UdpTalk {
            socket: Mutex::new(Arc::new(socket)),
            candidates: Mutex::new(candidates),
            peer: Mutex::new(None),
            listening,
            unanswered: Mutex::new(Vec::new()),
            last_activity: Mutex::new(Instant::now()),
            ended: AtomicBool::new(false),
        })
    }

    fn socket(&self) -> Arc<UdpSocket> {
        self.socket.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Sends one datagram: on the connected socket, or to the listener's peer.
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let socket = self.socket();
        if self.listening {
            match *self.peer.lock().unwrap_or_else(PoisonError::into_inner) {
                Some(peer) => socket.send_to(datagram, peer)?,
                None => {
                    eprintln!("(no peer yet: nothing has come in to answer)");
                    return Ok(());
                }
            };
        } else {
            socket.send(datagram)?;
        }
        self.touch();
        Ok(())
    }

    fn copy_stdin(&self) {
        let mut stdin = io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if net::interrupted(&e) => continue,
                Err(e) => {
                    tracing::debug!("reading stdin: {e}");
                    break;
                }
            }
            let datagram = line.strip_suffix(b"\n").unwrap_or(&line);
            let datagram = datagram.strip_suffix(b"\r").unwrap_or(datagram);
            if !self.listening {
                let mut unanswered = self.unanswered.lock().unwrap_or_else(PoisonError::into_inner);
                if unanswered.len() < MAX_UNANSWERED {
                    unanswered.push(datagram.to_vec());
                }
            }
            if let Err(e) = self.send(datagram) {
                tracing::debug!("sending a datagram: {e}");
            }
        }
        self.touch();
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Prints datagrams until stdin has ended and the peer has been silent
    /// for `options.timeout`.
    fn run(self: Arc<Self>, options: &TalkOptions) -> anyhow::Result<()> {
        let shared = self.clone();
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || shared.copy_stdin())?;
        let mut buf = vec![0u8; 65_536];
        loop {
            let socket = self.socket();
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let from = canonical(from);
                    if self.listening && !self.accept_from(from, options.keep) {
                        continue;
                    }
                    self.touch();
                    self.unanswered
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clear();
                    let mut stdout = io::stdout().lock();
                    let datagram = &buf[..n];
                    if options.label {
                        labelled(
                            &mut stdout,
                            &from.to_string(),
                            datagram.strip_suffix(b"\n").unwrap_or(datagram),
                        )?;
                    } else {
                        stdout.write_all(datagram)?;
                        if !datagram.ends_with(b"\n") {
                            stdout.write_all(b"\n")?;
                        }
                    }
                    stdout.flush()?;
                }
                Err(e) if net::timed_out(&e) || net::interrupted(&e) => {
                    let idle = self
                        .last_activity
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .elapsed();
                    if self.ended.load(Ordering::SeqCst) && idle >= options.timeout {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.next_address(&options.addr)?,
                Err(e) => return Err(e).context("receiving from the peer"),
            }
        }
    }

    /// `listen`: whether a datagram from `from` is part of the conversation.
    fn accept_from(&self, from: SocketAddr, keep: bool) -> bool {
        let mut peer = self.peer.lock().unwrap_or_else(PoisonError::into_inner);
        match *peer {
            Some(p) if p == from => true,
            Some(_) if !keep => false,
            _ => {
                eprintln!("connection from {from}");
                *peer = Some(from);
                true
            }
        }
    }

    /// `connect`: the address refused (ICMP port unreachable); the next one
    /// the name has gets the unanswered lines again.
    fn next_address(&self, addr: &Addr) -> anyhow::Result<()> {
        let next = self
            .candidates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let Some(next) = next else {
            bail!("{addr}: connection refused (nothing listens there)");
        };
        *self.socket.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(connected_udp(next)?);
        let unanswered = self
            .unanswered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for line in unanswered {
            self.send(&line)?;
        }
        Ok(())
    }
}

fn connected_udp(target: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = net::udp_socket_for(target)?;
    socket
        .connect(target)
        .with_context(|| format!("cannot connect to udp:{}", HostPort::from(target)))?;
    Ok(socket)
}
