//! Opening the listening sockets.
//!
//! Binds every configured address before anything is served, with the socket options a
//! server needs (address reuse after a restart; IPv6 sockets that take IPv6 only, so `:25`
//! and `:::25` can both be bound). What goes wrong is told in words a person can act on.
//! With workers, each listener is a group of SO_REUSEPORT sockets, one per worker, with the
//! program that sends each client address to one worker (`steer_by_client`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use log::warn;
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

/// Binds `spec`'s address for one process alone, non-blocking, ready for the poll loop.
pub fn bind(spec: &ListenerSpec) -> Result<mio::net::TcpListener, BindError> {
    open(spec.addr, false)
        .inspect(|socket| defer_accept(spec, socket))
        .map(|socket| mio::net::TcpListener::from_std(socket.into()))
        .map_err(|error| explain(spec, &error))
}

/// On a `proxy` listener, a connection is handed over once its first bytes (the header)
/// have come, or a second on without them: the header is then read at once, instead of
/// after a read that finds nothing and a turn of the loop. An optimisation only: without
/// it (a reload that set the flag), the header is read when it comes.
fn defer_accept(spec: &ListenerSpec, socket: &Socket) {
    if !spec.proxy {
        return;
    }
    let seconds: libc::c_int = 1;
    // SAFETY: setsockopt reads an int of the size given, from a live local.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done != 0 {
        warn!(
            "{}: cannot defer accepting until the PROXY header comes ({})",
            spec.addr,
            io::Error::last_os_error()
        );
    }
}

/// Binds `metrics_listen`: one socket, which every worker (or the one process) serves
/// scrapes from. Its errors name the option, with the exit codes of the SMTP listeners'.
pub fn bind_metrics(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    open(addr, false)
        .map(Into::into)
        .map_err(|error| explain_option("metrics_listen", addr, &addr.to_string(), &error))
}

/// For `workers` worker processes: per listener, one SO_REUSEPORT group of `workers` sockets,
/// bound in worker order so that socket `i` of every group is worker `i`'s, with the program
/// that sends each client address to one of them. The result is indexed by worker, then by
/// listener. Whoever holds these for the server's lifetime keeps every group whole and in
/// order, whichever worker dies and starts again.
pub fn bind_groups(
    listeners: &[ListenerSpec],
    workers: u32,
) -> Result<Vec<Vec<std::net::TcpListener>>, BindError> {
    let mut by_worker: Vec<Vec<std::net::TcpListener>> = (0..workers)
        .map(|_| Vec::with_capacity(listeners.len()))
        .collect();
    for spec in listeners {
        let group = bind_group(spec, workers).map_err(|error| explain(spec, &error))?;
        for (sockets, socket) in by_worker.iter_mut().zip(group) {
            sockets.push(socket.into());
        }
    }
    Ok(by_worker)
}

fn bind_group(spec: &ListenerSpec, workers: u32) -> io::Result<Vec<Socket>> {
    // First a socket of its own (no SO_REUSEPORT): a port another server's group holds is
    // "in use", not quietly shared with it, since a group takes in any socket of the same
    // user that asks. It also picks the one port every socket takes when the port is 0.
    let addr = open(spec.addr, false)?
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an internet address"))?;
    let group = (0..workers)
        .map(|_| open(addr, true).inspect(|socket| defer_accept(spec, socket)))
        .collect::<io::Result<Vec<Socket>>>()?;
    if let Some(first) = group.first()
        && let Err(e) = steer_by_client(first, addr.is_ipv6(), workers)
    {
        warn!(
            "{addr}: cannot send each client to one worker ({e}): the kernel spreads \
             connections by its own hash, so one client's connections may reach several workers"
        );
    }
    Ok(group)
}

/// A listening socket on `addr`, non-blocking and closed on exec. `reuse_port`: one of a
/// group; a socket joins its port's group, at the end, when it starts listening.
fn open(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Attaches `steering_program` to the reuseport group `socket` listens in, so that the
/// greylist and the per-client rates, which live in each worker's memory, see all of a
/// client's connections. Attached once the socket listens: one attached before would stay
/// with a group of its own.
fn steer_by_client(socket: &Socket, ipv6: bool, workers: u32) -> io::Result<()> {
    let mut program = steering_program(ipv6, workers);
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: the descriptor is open (`socket` is borrowed for the call); the kernel reads
    // `size_of::<sock_fprog>()` bytes at `&fprog` and `fprog.len` instructions at
    // `fprog.filter`, both of which live on this stack frame until the call returns, and
    // copies them: nothing is kept that points into this memory.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Where a program's loads reach the IP header: the kernel hands a reuseport program the
/// packet from past the TCP header, and offsets from `SKF_NET_OFF` count from the IP header.
const NET: u32 = libc::SKF_NET_OFF as u32;
/// The IPv4 source address, in the IP header.
const IPV4_SOURCE: u32 = 12;
/// The IPv6 source address (four words), in the IP header.
const IPV6_SOURCE: u32 = 8;

/// A classic BPF program that returns, for a connection's first packet, the index of the
/// socket in the reuseport group that takes it: the client's address modulo `workers`
/// (an IPv6 address folded to one word by xor first). The kernel numbers the sockets of a
/// group in the order they joined, and when one closes it moves the last into its place: so
/// the sockets are bound in worker order, by one process that keeps them all open
/// (`bind_groups`), and no group ever loses one or changes its order.
fn steering_program(ipv6: bool, workers: u32) -> Vec<libc::sock_filter> {
    let load_word = |offset: u32| op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, NET + offset);
    let mut program = Vec::new();
    if ipv6 {
        program.push(load_word(IPV6_SOURCE));
        for word in 1..4 {
            program.push(op(libc::BPF_MISC | libc::BPF_TAX, 0));
            program.push(load_word(IPV6_SOURCE + 4 * word));
            program.push(op(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0));
        }
    } else {
        program.push(load_word(IPV4_SOURCE));
    }
    program.push(op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, workers));
    program.push(op(libc::BPF_RET | libc::BPF_A, 0));
    program
}

fn op(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn explain(spec: &ListenerSpec, error: &io::Error) -> BindError {
    let option = if spec.tls { "tls_listen" } else { "listen" };
    explain_option(option, spec.addr, &spec.text, error)
}

/// Why `option`'s entry `text` (for `addr`) could not be bound, and what to do.
fn explain_option(option: &str, addr: SocketAddr, text: &str, error: &io::Error) -> BindError {
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
        _ if error.raw_os_error() == Some(libc::EMFILE) => (
            64,
            "each worker takes a socket per listener: use fewer workers or raise the limit on \
             open files (ulimit -n, LimitNOFILE=)",
        ),
        _ => (64, "check the address"),
    };
    BindError {
        message: format!(
            "cannot listen on {addr} (option `{option}` entry \"{text}\"): {error}; {fix}"
        ),
        exit_code,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// Runs `program` on a packet whose IP header is `ip`, as the kernel would, for the
    /// instructions `steering_program` uses. A load outside the IP header panics: the program
    /// must look at nothing else.
    fn run(program: &[libc::sock_filter], ip: &[u8]) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        for step in program {
            let code = u32::from(step.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                let at = (step.k - NET) as usize;
                a = u32::from_be_bytes(ip[at..at + 4].try_into().unwrap());
            } else if code == libc::BPF_MISC | libc::BPF_TAX {
                x = a;
            } else if code == libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X {
                a ^= x;
            } else if code == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K {
                a %= step.k;
            } else if code == libc::BPF_RET | libc::BPF_A {
                return a;
            } else {
                panic!("instruction {code:#x} not understood here");
            }
        }
        panic!("the program ends without returning");
    }

    #[test]
    fn an_ipv4_client_goes_to_its_address_modulo_the_workers() {
        for workers in [2, 3, 4, 7] {
            let program = steering_program(false, workers);
            for last in 1..=40 {
                let client = Ipv4Addr::new(192, 0, 2, last);
                let mut header = [0xA5; 20];
                header[12..16].copy_from_slice(&client.octets());
                assert_eq!(
                    run(&program, &header),
                    u32::from(client) % workers,
                    "{client}, {workers} workers"
                );
            }
        }
    }

    #[test]
    fn an_ipv6_client_goes_to_its_folded_address_modulo_the_workers() {
        let program = steering_program(true, 4);
        let mut taken = HashSet::new();
        for last in 1..=16 {
            let client = Ipv6Addr::new(0x2001, 0xdb8, 7, 9, 0, 0, 0xbeef, last);
            let mut header = [0x5A; 40];
            header[8..24].copy_from_slice(&client.octets());
            let folded = client
                .octets()
                .chunks(4)
                .map(|word| u32::from_be_bytes(word.try_into().unwrap()))
                .fold(0, |a, word| a ^ word);
            let index = run(&program, &header);
            assert_eq!(index, folded % 4, "{client}");
            taken.insert(index);
        }
        assert_eq!(taken.len(), 4, "the hosts of one /64 share the workers");
    }

    #[test]
    fn the_kernel_takes_both_programs() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            socket.set_reuse_port(true).unwrap();
            socket.bind(&addr.into()).unwrap();
            socket.listen(1).unwrap();
            let attached = steer_by_client(&socket, addr.is_ipv6(), 4);
            assert!(attached.is_ok(), "{addr}: {attached:?}");
        }
    }
}
