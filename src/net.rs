//! Sockets for every address family, behind two small enums.
//!
//! [`Listener`] and [`Stream`] hide whether a connection is TCP or a Unix
//! domain socket, so a model is written once for both. Each exposes its file
//! descriptor, because the readiness and completion models hand it to the
//! kernel themselves.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, Socket, Type};

use crate::addr::{Addr, HostPort};

/// How many connections may wait in the kernel's accept queue. The seeds use
/// 5; a load test of thousands of clients needs the kernel's maximum.
const BACKLOG: i32 = 4096;

/// A bound socket, as `serve --listen` opens it.
#[derive(Debug)]
pub enum Bound {
    Stream(Listener),
    Datagram(UdpSocket),
}

/// A listening stream socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, UnlinkOnDrop),
}

/// A connected stream socket.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Options for binding.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// `SO_REUSEPORT` lets several loops (epoll, uring workers) each own a
    /// listener on the same port.
    pub reuse_port: bool,
    /// A Unix socket file's permissions (`serve --mode`); `None` is
    /// [`UNIX_SOCKET_MODE`], owner-only.
    pub unix_mode: Option<u32>,
    /// A listener on an IPv6 address takes IPv6 peers only. Off by default:
    /// `[::]` then accepts IPv4 too (as `::ffff:127.0.0.1`), as nc, ncat
    /// and socat listeners do, whatever the system's `bindv6only` says.
    pub ipv6_only: bool,
}

/// A Unix socket file is the server's door: only its owner may connect,
/// unless `--mode` opens it wider.
pub const UNIX_SOCKET_MODE: u32 = 0o600;

/// Binds `addr` (`tcp:`, `unix:` or `udp:`) and starts listening.
pub fn bind(addr: &Addr, options: BindOptions) -> anyhow::Result<Bound> {
    match addr {
        Addr::Tcp(hp) => Ok(Bound::Stream(Listener::Tcp(bind_tcp(hp, options)?))),
        Addr::Unix(path) => Ok(Bound::Stream(bind_unix(
            path,
            options.unix_mode.unwrap_or(UNIX_SOCKET_MODE),
        )?)),
        Addr::Udp(hp) => Ok(Bound::Datagram(bind_udp(hp, options)?)),
    }
}

fn bind_tcp(hp: &HostPort, options: BindOptions) -> anyhow::Result<TcpListener> {
    let sa = first_addr(hp)?;
    let socket = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted server must not wait out its old connections' TIME_WAIT.
    socket.set_reuse_address(true)?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if sa.is_ipv6() {
        socket.set_only_v6(options.ipv6_only)?;
    }
    socket
        .bind(&sa.into())
        .with_context(|| format!("cannot listen on tcp:{hp}"))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn bind_udp(hp: &HostPort, options: BindOptions) -> anyhow::Result<UdpSocket> {
    let sa = first_addr(hp)?;
    let socket = Socket::new(Domain::for_address(sa), Type::DGRAM, Some(Protocol::UDP))?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if sa.is_ipv6() {
        socket.set_only_v6(options.ipv6_only)?;
    }
    socket
        .bind(&sa.into())
        .with_context(|| format!("cannot listen on udp:{hp}"))?;
    Ok(socket.into())
}

/// A TCP socket for a load generator's client, not yet connected: no Nagle
/// delay, and `SO_REUSEADDR`. The kernel picks its port from the ephemeral
/// range (32768-60999), which holds socklab's default port 50000; a client
/// that closes first leaves that port in TIME_WAIT for a minute, and a
/// server that binds it meanwhile is refused unless *both* sockets asked for
/// address reuse. So after a 10,000-client bench, `serve` on :50000 works.
pub fn client_socket(target: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    Ok(socket)
}

/// A UDP socket on an ephemeral port of `target`'s family, to talk to it from.
pub fn udp_socket_for(target: SocketAddr) -> io::Result<UdpSocket> {
    let local = if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    UdpSocket::bind(local)
}

/// Binds a Unix socket whose file has exactly `mode`. The file is made
/// owner-only (the umask is narrowed for the bind) and only then opened up to
/// `mode`, so that it is never, even for a moment, wider than asked.
fn bind_unix(path: &Path, mode: u32) -> anyhow::Result<Listener> {
    use nix::sys::stat::{umask, Mode};
    use std::os::unix::fs::PermissionsExt;
    remove_stale_socket(path)?;
    // The umask is process-wide: a file another thread made meanwhile would
    // only come out narrower. Servers bind before starting any thread.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound.with_context(|| format!("cannot listen on unix:{}", path.display()))?;
    let unlink = UnlinkOnDrop::new(path);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(Listener::Unix(listener, unlink))
}

/// A socket file left by a server that died is removed; one that a live
/// server still answers on is an error, as a TCP port in use is.
fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!(
            "cannot listen on unix:{}: the path exists and is not a socket",
            path.display()
        );
    }
    if UnixStream::connect(path).is_ok() {
        bail!("cannot listen on unix:{}: address in use", path.display());
    }
    std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))
}

/// The first of `hp`'s addresses that accepts a TCP connection, in
/// resolver order (the probe is closed at once). A name with one address
/// gets it untried, and so does a name none of whose addresses answer:
/// the caller's own connect then reports the failure.
pub fn first_accepting(hp: &HostPort, timeout: Duration) -> anyhow::Result<SocketAddr> {
    let addrs = hp.resolve().with_context(|| format!("cannot resolve {hp}"))?;
    if addrs.len() > 1 {
        if let Some(sa) = addrs
            .iter()
            .find(|sa| TcpStream::connect_timeout(sa, timeout).is_ok())
        {
            return Ok(*sa);
        }
    }
    Ok(addrs[0])
}

fn first_addr(hp: &HostPort) -> anyhow::Result<SocketAddr> {
    let addrs = hp.resolve().with_context(|| format!("cannot resolve {hp}"))?;
    Ok(addrs[0])
}

/// Removes a Unix socket's file when the listener that made it goes away, but
/// only in the process that made it: a forked child must not unlink it. A
/// sudden exit runs no destructor, so the path is also on the list that
/// [`crate::shutdown::exit_now`] cleans up.
#[derive(Debug)]
pub struct UnlinkOnDrop {
    path: PathBuf,
    owner: u32,
}

impl UnlinkOnDrop {
    fn new(path: &Path) -> Self {
        crate::shutdown::track_socket_file(path);
        UnlinkOnDrop {
            path: path.to_path_buf(),
            owner: std::process::id(),
        }
    }
}

impl Drop for UnlinkOnDrop {
    fn drop(&mut self) {
        if std::process::id() == self.owner {
            let _ = std::fs::remove_file(&self.path);
            crate::shutdown::untrack_socket_file(&self.path);
        }
    }
}

impl Listener {
    /// Accepts one connection. TCP connections get `TCP_NODELAY`: every
    /// service here is request and reply, where Nagle only adds latency.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Listener::Unix(l, _) => Ok(Stream::Unix(l.accept()?.0)),
        }
    }

    /// The address actually bound, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l) => Ok(Addr::Tcp(l.local_addr()?.into())),
            Listener::Unix(_, unlink) => Ok(Addr::Unix(unlink.path.clone())),
        }
    }

    /// Another listening socket on this one's address, for a second accept
    /// loop: with `SO_REUSEPORT` (this one must have been bound with it too)
    /// the kernel spreads new connections across them. A Unix socket has no
    /// such thing; its sibling is a second handle on the same socket.
    pub fn reuse_port_sibling(&self) -> anyhow::Result<Listener> {
        match self {
            Listener::Tcp(l) => {
                let local = l.local_addr()?;
                let options = BindOptions {
                    reuse_port: true,
                    ipv6_only: local.is_ipv6() && socket2::SockRef::from(l).only_v6()?,
                    ..BindOptions::default()
                };
                Ok(Listener::Tcp(bind_tcp(&HostPort::from(local), options)?))
            }
            Listener::Unix(..) => Ok(self.try_clone()?),
        }
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(nonblocking),
            Listener::Unix(l, _) => l.set_nonblocking(nonblocking),
        }
    }

    /// Another handle on the same listening socket (for worker threads).
    pub fn try_clone(&self) -> io::Result<Listener> {
        match self {
            Listener::Tcp(l) => Ok(Listener::Tcp(l.try_clone()?)),
            Listener::Unix(l, unlink) => Ok(Listener::Unix(
                l.try_clone()?,
                // The clone must not unlink the path: only the original does.
                UnlinkOnDrop {
                    path: unlink.path.clone(),
                    owner: 0,
                },
            )),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Evaluates `$body` with `$s` bound to whichever socket the [`Stream`]
/// holds: the two kinds share these methods but no trait.
macro_rules! on_socket {
    ($stream:expr, $s:ident => $body:expr) => {
        match $stream {
            Stream::Tcp($s) => $body,
            Stream::Unix($s) => $body,
        }
    };
}

impl Stream {
    /// Connects to a `tcp:` or `unix:` address, trying each resolved address
    /// in turn, as a user of nc expects of `localhost`.
    pub fn connect(addr: &Addr, timeout: Option<Duration>) -> anyhow::Result<Stream> {
        match addr {
            Addr::Tcp(hp) => {
                let mut last = None;
                for sa in hp.resolve().with_context(|| format!("cannot resolve {hp}"))? {
                    let attempt = match timeout {
                        Some(t) => TcpStream::connect_timeout(&sa, t),
                        None => TcpStream::connect(sa),
                    };
                    match attempt {
                        Ok(stream) => {
                            stream.set_nodelay(true)?;
                            return Ok(Stream::Tcp(stream));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let err = last.unwrap_or_else(|| io::Error::other("no address"));
                Err(anyhow::Error::new(err).context(format!("cannot connect to {addr}")))
            }
            Addr::Unix(path) => UnixStream::connect(path)
                .map(Stream::Unix)
                .with_context(|| format!("cannot connect to {addr}")),
            Addr::Udp(_) => {
                bail!("{addr} is a datagram address; this needs a stream (tcp: or unix:)")
            }
        }
    }

    pub fn shutdown(&self, how: Direction) -> io::Result<()> {
        on_socket!(self, s => s.shutdown(how))
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        on_socket!(self, s => s.set_nonblocking(nonblocking))
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        on_socket!(self, s => s.set_read_timeout(t))
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        on_socket!(self, s => s.set_write_timeout(t))
    }

    /// Writes what the socket takes now, without blocking even on a
    /// blocking socket (`MSG_DONTWAIT`): the blocking models wait for
    /// writability themselves, so that a deadline can interrupt the wait.
    pub fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{send, MsgFlags};
        send(
            self.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        )
        .map_err(io::Error::from)
    }

    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
        }
    }

    /// Closes politely: send FIN, then discard what the peer already sent,
    /// so that the close does not turn into a reset that could destroy the
    /// reply still in flight (unread input at close makes the kernel send RST).
    pub fn close_gracefully(self) {
        let _ = self.shutdown(Direction::Write);
        if self.set_nonblocking(true).is_ok() {
            let mut sink = [0u8; 4096];
            let mut reader = &self;
            for _ in 0..16 {
                match reader.read(&mut sink) {
                    Ok(n) if n > 0 => continue,
                    _ => break,
                }
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        on_socket!(self, s => (&*s).read(buf))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        on_socket!(self, s => (&*s).write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        on_socket!(self, s => s.as_fd())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// `WouldBlock`: a non-blocking call found nothing to do.
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// A read timeout ran out: std reports it as `WouldBlock` or `TimedOut`,
/// depending on the platform.
pub fn timed_out(err: &io::Error) -> bool {
    would_block(err) || err.kind() == io::ErrorKind::TimedOut
}

/// `Interrupted`: a signal arrived mid-call; try again.
pub fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

/// `EMFILE`/`ENFILE`: out of file descriptors, for this process or the
/// whole system; accepting again only helps once a connection closes.
pub fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Accepts failing for want of descriptors, logged once per episode (a
/// loop that retries would otherwise log every retry) and summed up when
/// accepting works again. While a backlog drains at the limit, every close
/// lets one accept through before the next fails: an episode ends only
/// after a second without a failure.
#[derive(Debug, Default)]
pub struct DescriptorShortage {
    /// Failures in this episode, and when the last one was.
    episode: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

impl DescriptorShortage {
    const QUIET: Duration = Duration::from_secs(1);

    /// An accept failed with `err` (EMFILE or ENFILE).
    pub fn hit(&self, err: &io::Error) {
        let mut episode = self.episode.lock().unwrap_or_else(|e| e.into_inner());
        if episode.0 == 0 {
            tracing::warn!("accept: {err}; not accepting until a connection closes");
        }
        episode.0 += 1;
        episode.1 = Some(std::time::Instant::now());
    }

    /// An accept succeeded: if an episode was on and has been quiet, it is over.
    pub fn over(&self) {
        let mut episode = self.episode.lock().unwrap_or_else(|e| e.into_inner());
        if episode.1.is_some_and(|last| last.elapsed() >= Self::QUIET) {
            tracing::info!(failures = episode.0, "descriptors free again: accepting");
            *episode = (0, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_port_siblings_share_a_port() {
        let bind_loopback = |reuse_port| {
            let options = BindOptions {
                reuse_port,
                ..BindOptions::default()
            };
            match bind(&"tcp:127.0.0.1:0".parse().unwrap(), options) {
                Ok(Bound::Stream(l)) => l,
                other => panic!("{other:?}"),
            }
        };
        let first = bind_loopback(true);
        let second = first.reuse_port_sibling().unwrap();
        assert_eq!(first.local_addr().unwrap(), second.local_addr().unwrap());
        // Without SO_REUSEPORT on the first, its port is simply in use.
        assert!(bind_loopback(false).reuse_port_sibling().is_err());
    }
}
