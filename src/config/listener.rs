//! The listener entry syntax, `"[ADDRESS]:PORT [mode=MODE] [delay=N|MIN-MAX]"`: addresses in
//! their IPv4, IPv6 and wildcard forms, ports and the per-listener flags, read into a
//! [`ListenerSpec`]. Messages are plain strings; the option reader adds the option's name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::values::parse_delay;
use super::{DelayRange, Mode};
use crate::smtp::decimal;

/// One `listen` or `tls_listen` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    /// Implicit TLS from the first byte (a `tls_listen` entry).
    pub tls: bool,
    /// `mode=` flag: fixes the mode for this listener's connections.
    pub mode: Option<Mode>,
    /// `delay=` flag: fixes the delay for this listener's connections.
    pub delay: Option<DelayRange>,
    /// `lmtp` flag: the listener speaks LMTP (RFC 2033).
    pub lmtp: bool,
    /// `proxy` flag: each connection opens with a PROXY protocol header.
    pub proxy: bool,
    /// The entry as written, for messages.
    pub text: String,
}

impl ListenerSpec {
    /// A listener with `mode=` or `delay=` ignores dynamic switch headers.
    pub fn has_flags(&self) -> bool {
        self.mode.is_some() || self.delay.is_some()
    }
}

/// Parses one listener entry: `"[ADDRESS]:PORT [mode=MODE] [delay=N|MIN-MAX]"`.
///
/// `:25` is every IPv4 address, `:::25` every IPv6 address; IPv6 addresses
/// may be bracketed (`[::1]:25`) or not (`::1:25`, split at the last
/// colon). Port 0 asks for any free port. Flags come in any order, each at
/// most once.
pub fn parse_listener(entry: &str, tls: bool) -> Result<ListenerSpec, String> {
    let text = entry.trim();
    let mut words = text.split_whitespace();
    let Some(address) = words.next() else {
        return Err(
            "empty entry: write \"[ADDRESS]:PORT [mode=MODE] [delay=N|MIN-MAX]\", e.g. \":25\""
                .to_owned(),
        );
    };
    let addr = parse_socket_addr(address)?;
    let mut mode = None;
    let mut delay = None;
    let mut lmtp = false;
    let mut proxy = false;
    for word in words {
        if word.eq_ignore_ascii_case("lmtp") {
            if lmtp {
                return Err("lmtp is given twice: give it once".to_owned());
            }
            lmtp = true;
            continue;
        }
        if word.eq_ignore_ascii_case("proxy") {
            if proxy {
                return Err("proxy is given twice: give it once".to_owned());
            }
            proxy = true;
            continue;
        }
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "`{word}` is not a flag: the flags are mode=MODE, delay=N or delay=MIN-MAX, \
                 lmtp and proxy"
            ));
        };
        if name.eq_ignore_ascii_case("mode") {
            if mode.is_some() {
                return Err("mode= is given twice: give it once".to_owned());
            }
            mode = Some(value.parse::<Mode>()?);
        } else if name.eq_ignore_ascii_case("delay") {
            if delay.is_some() {
                return Err("delay= is given twice: give it once".to_owned());
            }
            delay = Some(parse_delay(value)?);
        } else {
            return Err(format!(
                "unknown flag `{name}`: the flags are mode=MODE, delay=N or delay=MIN-MAX, \
                 lmtp and proxy"
            ));
        }
    }
    Ok(ListenerSpec {
        addr,
        tls,
        mode,
        delay,
        lmtp,
        proxy,
        text: text.to_owned(),
    })
}

/// `[ADDRESS]:PORT`, as a listener entry starts.
pub(super) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, port)) = rest.split_once("]:") else {
            return Err(format!(
                "`{s}` is not an address: write [IPV6]:PORT, e.g. [::1]:25"
            ));
        };
        let ip = host.parse::<Ipv6Addr>().map_err(|_| {
            format!("`{host}` is not an IPv6 address (brackets are only for IPv6 addresses)")
        })?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), parse_port(port)?));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "`{s}` has no port: write [ADDRESS]:PORT, e.g. :25, :::25 or 127.0.0.1:25"
        ));
    };
    let port = parse_port(port)?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>().map_err(|_| {
            if host.contains(':') {
                format!(
                    "`{s}` is not an IPv6 address and port: write [ADDRESS]:PORT, \
                     e.g. [::1]:25 or :::25"
                )
            } else {
                format!(
                    "`{host}` is not an IP address: give an IPv4 or IPv6 address, or nothing \
                     before the port for every IPv4 address (:25)"
                )
            }
        })?
    };
    Ok(SocketAddr::new(ip, port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    let parsed = decimal::saturating(port.as_bytes()).and_then(|n| u16::try_from(n).ok());
    parsed.ok_or_else(|| {
        format!("`{port}` is not a port: use a number from 0 to 65535 (0 picks a free port)")
    })
}
