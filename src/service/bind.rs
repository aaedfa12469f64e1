//! Opening the listening sockets.
//!
//! Binds every configured address before anything is served, with the socket options a
//! server needs (address reuse after a restart; IPv6 sockets that take IPv6 only, so `:25`
//! and `:::25` can both be bound). What goes wrong is told in words a person can act on.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenerSpec;

/// Connections the kernel may queue before they are accepted.
const BACKLOG: i32 = 1024;

/// Why a listener could not be opened, and the exit code that says so.
#[derive(Debug)]
pub struct BindError {
    pub message: String,
    pub exit_code: i32,
}

/// Binds `spec`'s address, non-blocking, ready for the poll loop. `shared`: the address is
/// bound by every worker process (SO_REUSEPORT), and the kernel spreads connections over them.
pub fn bind(spec: &ListenerSpec, shared: bool) -> Result<mio::net::TcpListener, BindError> {
    open(spec.addr, shared).map_err(|error| explain(spec, &error))
}

fn open(addr: SocketAddr, shared: bool) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

fn explain(spec: &ListenerSpec, error: &io::Error) -> BindError {
    let option = if spec.tls { "tls_listen" } else { "listen" };
    let (exit_code, fix) = match error.kind() {
        io::ErrorKind::AddrInUse => (
            77,
            "another program is listening there: stop it or choose another port",
        ),
        io::ErrorKind::PermissionDenied => (
            77,
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a port above 1023 or grant the capability",
        ),
        io::ErrorKind::AddrNotAvailable => (
            64,
            "no interface of this host has that address: use one it has, or :PORT for all",
        ),
        _ => (64, "check the address"),
    };
    BindError {
        message: format!(
            "cannot listen on {} (option `{option}` entry \"{}\"): {error}; {fix}",
            spec.addr, spec.text
        ),
        exit_code,
    }
}
