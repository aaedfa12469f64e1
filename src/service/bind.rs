//! Opening the listening sockets.
//!
//! Binds every configured address before anything is served, with the socket options a
//! server needs (address reuse after a restart; IPv6 sockets that take IPv6 only, so `:25`
//! and `:::25` can both be bound). What goes wrong is told in words a person can act on.
//! A worker's listener also carries the program that sends each client address to one
//! worker (`steer_by_client`).

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

/// Binds `spec`'s address, non-blocking, ready for the poll loop. `workers`: `Some(n)` when
/// each of `n` worker processes binds the address (SO_REUSEPORT), and every connection of one
/// client address is to reach the same one of them.
pub fn bind(spec: &ListenerSpec, workers: Option<u32>) -> Result<mio::net::TcpListener, BindError> {
    open(spec.addr, workers).map_err(|error| explain(spec, &error))
}

fn open(addr: SocketAddr, workers: Option<u32>) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if workers.is_some() {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    // After listen: a TCP socket joins its port's reuseport group when it starts listening,
    // and a program attached before that would stay with a group of its own.
    if let Some(workers) = workers.filter(|&n| n > 1)
        && let Err(e) = steer_by_client(&socket, addr.is_ipv6(), workers)
    {
        warn!(
            "{addr}: cannot send each client to one worker ({e}): the kernel spreads \
             connections by its own hash, so one client's connections may reach several workers"
        );
    }
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Attaches `steering_program` to the reuseport group `socket` listens in, so that the
/// greylist and the per-client rates, which live in each worker's memory, see all of a
/// client's connections. Every worker attaches the same program; the last one stays.
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
/// group in the order they joined; an index past the last socket (while a worker is being
/// started again) falls back to the kernel's hash.
///
/// A worker that dies leaves the group, and the kernel moves the group's last socket into
/// its slot; the worker started in its place joins at the end. So a restart moves the
/// clients of two workers: the dead one's go to the worker that was last, and the last
/// one's to the new worker (one worker only, when the dead one was last). Per-client
/// state the moved clients had built is not where their next connections arrive.
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

/// A worker's turn to bind its listeners. Each worker's sockets join one SO_REUSEPORT group
/// per listener, and the steering program picks a socket by its place in the group: for one
/// client to reach the same worker on every listener, every group must list the workers in
/// one order. So a worker binds all of its listeners while it holds an exclusive lock on its
/// own program file (the same file for every worker; nothing to create or clean up), and no
/// other worker's binds come between them.
pub struct BindTurn(#[allow(dead_code)] Option<nix::fcntl::Flock<std::fs::File>>);

impl BindTurn {
    /// Waits for the turn; if the program file cannot be locked (logged), binds at once.
    pub fn take() -> BindTurn {
        let locked = std::fs::File::open("/proc/self/exe")
            .map_err(|e| e.to_string())
            .and_then(|file| {
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                    .map_err(|(_, e)| e.to_string())
            });
        match locked {
            Ok(lock) => BindTurn(Some(lock)),
            Err(e) => {
                log::warn!(
                    "cannot lock this program's file to bind in turn ({e}): a client may \
                     reach different workers on different listeners"
                );
                BindTurn(None)
            }
        }
    }

    /// No turn to wait for: a single process.
    pub fn none() -> BindTurn {
        BindTurn(None)
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
