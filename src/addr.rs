//! The address grammar of DESIGN section 2, as pure parsing.
//!
//! `tcp:HOST:PORT`, `HOST:PORT`, `:PORT`, `udp:HOST:PORT`, `unix:PATH`, and
//! the relay-only forms (`tcp-listen:`, `udp-listen:`, `unix-listen:`,
//! `tcp-connect:`, `unix-connect:`, `stdio`, `-`). Keywords are
//! case-insensitive and socat's spellings (`TCP4`, `TCP6`, `UNIX-CONNECT`,
//! `STDIN`, ...) are accepted. Host names are kept as written and resolved
//! only when a socket is opened, so parsing never touches the network.
//!
//! socat's address options follow a comma (`TCP-LISTEN:7030,fork,reuseaddr`):
//! those that mean something socklab does are accepted ([`AddrOptions`]),
//! the rest are refused by name, with the flag to use instead when there
//! is one. socat's other address types (`OPEN:`, `EXEC:`, ...) are refused
//! as such, not misread as a host and a port.
//!
//! ```
//! use socklab::addr::{Addr, Endpoint};
//!
//! let addr: Addr = ":50000".parse().unwrap();
//! assert_eq!(addr.to_string(), "tcp:127.0.0.1:50000");
//! assert!(matches!("tcp-listen:7000".parse::<Endpoint>(), Ok(Endpoint::Listen(_))));
//! assert!("tcp:localhost:99999".parse::<Addr>().is_err());
//! ```

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// A host and a port, as the user wrote them (`localhost:80`, `[::1]:80`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Resolves to every socket address the name has, in resolver order.
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} resolves to no address", self.host),
            ));
        }
        Ok(addrs)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where a server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(HostPort),
    Udp(HostPort),
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(hp) => write!(f, "tcp:{hp}"),
            Addr::Udp(hp) => write!(f, "udp:{hp}"),
            Addr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(sa: SocketAddr) -> Self {
        HostPort {
            host: sa.ip().to_string(),
            port: sa.port(),
        }
    }
}

/// One side of a relay: everything [`Addr`] is, plus who takes the initiative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Connect to this address (`tcp:`, `udp:`, `unix:`, `tcp-connect:`, ...).
    Connect(Addr),
    /// Listen on this address and take a peer from it (`tcp-listen:`, ...).
    Listen(Addr),
    /// Standard input and output (`stdio`, `-`).
    Stdio,
}

/// socat's address options that socklab understands. `reuseaddr` and
/// `nodelay` are what socklab always does, and a `backlog=N` is met by its
/// own (the kernel's maximum): they are accepted and change nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrOptions {
    /// `fork`: keep listening and serve each peer (relay's `--fork`).
    pub fork: bool,
}

/// An address as socat writes it: the address, then its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocatAddr {
    pub endpoint: Endpoint,
    pub options: AddrOptions,
}

impl FromStr for SocatAddr {
    type Err = AddrError;

    fn from_str(input: &str) -> Result<Self, AddrError> {
        let (address, options) = split_options(input)?;
        let endpoint = parse_endpoint(input, address)?;
        if options.fork && !matches!(endpoint, Endpoint::Listen(_)) {
            return Err(error(
                input,
                "socat option 'fork' needs a listening address, such as tcp-listen:PORT,fork",
            ));
        }
        Ok(SocatAddr { endpoint, options })
    }
}

/// Splits `ADDRESS,opt,opt=value` and reads the options.
fn split_options(input: &str) -> Result<(&str, AddrOptions), AddrError> {
    let mut parts = input.trim().split(',');
    let address = parts.next().unwrap_or_default();
    let mut options = AddrOptions::default();
    for option in parts {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (option.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("fork", None) => options.fork = true,
            ("reuseaddr" | "so-reuseaddr" | "nodelay" | "tcp-nodelay", None | Some("1")) => {}
            ("backlog", Some(n)) if n.parse::<u32>().is_ok() => {}
            ("", None) => return Err(error(input, "an empty option after ','")),
            (lower, _) => {
                let hint = match lower {
                    "ipv6only" | "ipv6-v6only" | "ipv6-only" => {
                        "; a listener on [::] takes IPv4 too; use serve --ipv6-only or listen --ipv6-only"
                    }
                    "bind" => "; the kernel picks the local address of a connection",
                    "max-children" => "; use --fork, which serves every peer",
                    "crnl" | "crlf" => "; bytes are relayed as they are",
                    "pf" => "; write the address itself, [::1] or 127.0.0.1",
                    _ => "",
                };
                return Err(error(
                    input,
                    format!("socat option '{name}' is not supported here{hint}"),
                ));
            }
        }
    }
    Ok((address, options))
}

/// Why an address did not parse; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address '{input}': {reason}")]
pub struct AddrError {
    input: String,
    reason: String,
}

fn error(input: &str, reason: impl Into<String>) -> AddrError {
    AddrError {
        input: input.to_string(),
        reason: reason.into(),
    }
}

impl FromStr for Endpoint {
    type Err = AddrError;

    /// An address with its socat options checked: those that change
    /// nothing are accepted; `fork` is relay's, through [`SocatAddr`].
    fn from_str(input: &str) -> Result<Self, AddrError> {
        let SocatAddr { endpoint, options } = input.parse()?;
        if options.fork {
            return Err(error(
                input,
                "socat option 'fork' is not supported here; use relay --fork",
            ));
        }
        Ok(endpoint)
    }
}

/// socat's address types that socklab does not open, so that `OPEN:/tmp/x`
/// is called what it is rather than a host `OPEN` with a bad port.
const SOCAT_ONLY_TYPES: &[&str] = &[
    "abstract",
    "abstract-connect",
    "abstract-listen",
    "create",
    "exec",
    "fd",
    "file",
    "gopen",
    "interface",
    "ip",
    "ip4",
    "ip6",
    "ip-datagram",
    "ip-recv",
    "ip-recvfrom",
    "ip-sendto",
    "open",
    "openssl",
    "openssl-connect",
    "openssl-listen",
    "pipe",
    "proxy",
    "proxy-connect",
    "pty",
    "readline",
    "sctp",
    "sctp-connect",
    "sctp-listen",
    "socket-connect",
    "socket-datagram",
    "socket-listen",
    "socks4",
    "socks4a",
    "socks5",
    "stderr",
    "system",
    "tun",
    "udp-datagram",
    "udp-recv",
    "udp-recvfrom",
    "udp-sendto",
    "unix-recv",
    "unix-recvfrom",
    "unix-sendto",
    "vsock-connect",
    "vsock-listen",
];

fn parse_endpoint(input: &str, s: &str) -> Result<Endpoint, AddrError> {
    if s == "-"
        || ["stdio", "stdin", "stdout", "stdin-stdout"]
            .iter()
            .any(|k| s.eq_ignore_ascii_case(k))
    {
        return Ok(Endpoint::Stdio);
    }
    let Some((form, rest)) = split_keyword(s) else {
        let head = s.split(':').next().unwrap_or_default();
        if SOCAT_ONLY_TYPES.iter().any(|t| head.eq_ignore_ascii_case(t)) {
            return Err(error(
                input,
                format!(
                    "unknown address type {}: socklab opens tcp:, udp:, unix:, their -listen forms, and stdio",
                    head.to_ascii_uppercase()
                ),
            ));
        }
        // No keyword: `HOST:PORT` or `:PORT` is TCP.
        return parse_host_port(input, s).map(|hp| Endpoint::Connect(Addr::Tcp(hp)));
    };
    let endpoint = match form {
        Form::Tcp => Endpoint::Connect(Addr::Tcp(parse_host_port(input, rest)?)),
        Form::Udp => Endpoint::Connect(Addr::Udp(parse_host_port(input, rest)?)),
        Form::Unix => Endpoint::Connect(Addr::Unix(parse_path(input, rest)?)),
        Form::TcpListen => Endpoint::Listen(Addr::Tcp(parse_listen_port(input, rest)?)),
        Form::UdpListen => Endpoint::Listen(Addr::Udp(parse_listen_port(input, rest)?)),
        Form::UnixListen => Endpoint::Listen(Addr::Unix(parse_path(input, rest)?)),
    };
    Ok(endpoint)
}

impl FromStr for Addr {
    type Err = AddrError;

    /// The forms `serve`, `send`, `connect` and `bench` take: no listen, no stdio.
    fn from_str(input: &str) -> Result<Self, AddrError> {
        match input.parse::<Endpoint>()? {
            Endpoint::Connect(addr) => Ok(addr),
            Endpoint::Listen(_) => Err(error(
                input,
                "listening forms are for relay only; write tcp:HOST:PORT",
            )),
            Endpoint::Stdio => Err(error(input, "stdio is for relay only")),
        }
    }
}

/// Splits `tcp:...` into (its form, `...`); `None` when the text before the
/// first colon is not a keyword (a host name, an IPv6 bracket, or nothing).
fn split_keyword(s: &str) -> Option<(Form, &str)> {
    let (head, rest) = s.split_once(':')?;
    let (_, form) = KEYWORDS.iter().find(|(k, _)| head.eq_ignore_ascii_case(k))?;
    Some((*form, rest))
}

/// What a keyword opens: which address follows it, and who takes the initiative.
#[derive(Debug, Clone, Copy)]
enum Form {
    Tcp,
    Udp,
    Unix,
    TcpListen,
    UdpListen,
    UnixListen,
}

const KEYWORDS: &[(&str, Form)] = &[
    ("tcp", Form::Tcp),
    ("tcp4", Form::Tcp),
    ("tcp6", Form::Tcp),
    ("tcp-connect", Form::Tcp),
    ("tcp4-connect", Form::Tcp),
    ("tcp6-connect", Form::Tcp),
    ("udp", Form::Udp),
    ("udp4", Form::Udp),
    ("udp6", Form::Udp),
    ("udp-connect", Form::Udp),
    ("udp4-connect", Form::Udp),
    ("udp6-connect", Form::Udp),
    ("unix", Form::Unix),
    ("unix-connect", Form::Unix),
    ("unix-client", Form::Unix),
    ("local", Form::Unix),
    ("tcp-listen", Form::TcpListen),
    ("tcp4-listen", Form::TcpListen),
    ("tcp6-listen", Form::TcpListen),
    ("tcp-l", Form::TcpListen),
    ("udp-listen", Form::UdpListen),
    ("udp4-listen", Form::UdpListen),
    ("udp6-listen", Form::UdpListen),
    ("udp-l", Form::UdpListen),
    ("unix-listen", Form::UnixListen),
    ("unix-l", Form::UnixListen),
];

/// `HOST:PORT`, `[V6]:PORT`, or `:PORT` (loopback).
fn parse_host_port(input: &str, s: &str) -> Result<HostPort, AddrError> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| error(input, "missing ']' after IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| error(input, "expected ':PORT' after ']'"))?;
        (host, port)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| error(input, "expected HOST:PORT"))?
    };
    if !s.starts_with('[') && host.contains(':') {
        return Err(error(input, "write IPv6 addresses in brackets: [::1]:PORT"));
    }
    let port = parse_port(input, port)?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// socat's `tcp-listen:PORT` or our `tcp-listen:HOST:PORT`; loopback by default.
fn parse_listen_port(input: &str, s: &str) -> Result<HostPort, AddrError> {
    if s.contains(':') {
        parse_host_port(input, s)
    } else {
        Ok(HostPort {
            host: "127.0.0.1".to_string(),
            port: parse_port(input, s)?,
        })
    }
}

fn parse_port(input: &str, s: &str) -> Result<u16, AddrError> {
    s.parse::<u16>()
        .map_err(|_| error(input, format!("'{s}' is not a port number (0-65535)")))
}

fn parse_path(input: &str, s: &str) -> Result<PathBuf, AddrError> {
    if s.is_empty() {
        return Err(error(input, "missing socket path"));
    }
    Ok(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Addr {
        Addr::Tcp(HostPort {
            host: host.into(),
            port,
        })
    }

    #[test]
    fn tcp_forms() {
        assert_eq!("tcp:127.0.0.1:80".parse::<Addr>(), Ok(tcp("127.0.0.1", 80)));
        assert_eq!("TCP:localhost:80".parse::<Addr>(), Ok(tcp("localhost", 80)));
        assert_eq!("example.org:8080".parse::<Addr>(), Ok(tcp("example.org", 8080)));
        assert_eq!(":50000".parse::<Addr>(), Ok(tcp("127.0.0.1", 50000)));
        assert_eq!("tcp:[::1]:9".parse::<Addr>(), Ok(tcp("::1", 9)));
        assert_eq!("[::1]:9".parse::<Addr>(), Ok(tcp("::1", 9)));
        assert_eq!("tcp-connect:localhost:1".parse::<Addr>(), Ok(tcp("localhost", 1)));
    }

    #[test]
    fn other_forms() {
        assert_eq!(
            "udp:127.0.0.1:0".parse::<Addr>(),
            Ok(Addr::Udp(HostPort {
                host: "127.0.0.1".into(),
                port: 0
            }))
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Addr>(),
            Ok(Addr::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(
            "UNIX-CONNECT:/tmp/x".parse::<Addr>(),
            Ok(Addr::Unix("/tmp/x".into()))
        );
        assert_eq!("-".parse::<Endpoint>(), Ok(Endpoint::Stdio));
        assert_eq!("STDIO".parse::<Endpoint>(), Ok(Endpoint::Stdio));
        assert_eq!(
            "tcp-listen:7000".parse::<Endpoint>(),
            Ok(Endpoint::Listen(tcp("127.0.0.1", 7000)))
        );
        assert_eq!(
            "tcp-listen:0.0.0.0:7000".parse::<Endpoint>(),
            Ok(Endpoint::Listen(tcp("0.0.0.0", 7000)))
        );
        assert_eq!(
            "unix-listen:/tmp/s".parse::<Endpoint>(),
            Ok(Endpoint::Listen(Addr::Unix("/tmp/s".into())))
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "tcp:127.0.0.1:80",
            "tcp:[::1]:80",
            "udp:localhost:9",
            "unix:/tmp/a b",
        ] {
            assert_eq!(s.parse::<Addr>().map(|a| a.to_string()), Ok(s.to_string()));
        }
    }

    #[test]
    fn socat_options() {
        let socat = |s: &str| s.parse::<SocatAddr>();
        let listen = socat("TCP-LISTEN:7030,fork,reuseaddr").unwrap();
        assert_eq!(listen.endpoint, Endpoint::Listen(tcp("127.0.0.1", 7030)));
        assert!(listen.options.fork);
        let plain = socat("tcp:localhost:80,nodelay,backlog=5").unwrap();
        assert_eq!(plain.endpoint, Endpoint::Connect(tcp("localhost", 80)));
        assert!(!plain.options.fork);
        let bad = |s: &str| socat(s).map_err(|e| e.to_string()).unwrap_err();
        assert!(bad("tcp:localhost:80,fork").contains("needs a listening address"));
        assert!(bad("tcp-listen:80,crnl").contains("socat option 'crnl' is not supported here"));
        assert!(bad("tcp-listen:80,ipv6only=1").contains("--ipv6-only"));
        assert!(bad("tcp:h:80,bind=127.0.0.2").contains("socat option 'bind'"));
        assert!(bad("tcp-listen:80,backlog=many").contains("socat option 'backlog'"));
        assert!(bad("OPEN:/tmp/x").contains("unknown address type OPEN"));
        assert!(bad("exec:ls").contains("unknown address type EXEC"));
        // Outside relay, `fork` says where it belongs.
        let addr = |s: &str| s.parse::<Addr>().map_err(|e| e.to_string());
        assert!(addr("tcp-listen:80,fork")
            .unwrap_err()
            .contains("use relay --fork"));
        assert_eq!(addr(":80,reuseaddr"), Ok(tcp("127.0.0.1", 80)));
    }

    #[test]
    fn errors_say_why() {
        let bad = |s: &str| s.parse::<Addr>().map_err(|e| e.to_string()).unwrap_err();
        assert!(bad("tcp:localhost:99999").contains("not a port number"));
        assert!(bad("tcp:localhost").contains("expected HOST:PORT"));
        assert!(bad("tcp:localhost:http").contains("not a port number"));
        assert!(bad("nonsense").contains("expected HOST:PORT"));
        assert!(bad("unix:").contains("missing socket path"));
        assert!(bad("tcp-listen:80").contains("relay only"));
        assert!(bad("::1:80").contains("brackets"));
        assert!(bad("tcp:[::1:80").contains("']'"));
    }
}
