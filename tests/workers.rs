//! `workers = N` steers by client address: every connection from one client address reaches
//! the same worker, whatever its source port, and different addresses reach different workers.
//! Which worker holds which connection is read from /proc.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use common::procfs::{children, cmdline, connections, kill_every_process_naming, listens};
use common::{GREETING, REPLY_TIMEOUT, TempDir, spawn_blackhole, wait_for};
use socket2::{Domain, Socket, Type};

/// How long the workers may take to start and to accept.
const SETTLE: Duration = Duration::from_secs(10);
const WORKERS: usize = 4;
/// Connections per client address: enough that the kernel's own hash of the source port
/// would have put them on more than one worker.
const CONNECTIONS_EACH: usize = 20;

/// A supervisor started with a config of its own; on drop it is killed, and so is every
/// process still naming that config (its workers).
struct Supervisor {
    child: Child,
    config: PathBuf,
    dir: TempDir,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_every_process_naming(&self.config.display().to_string());
    }
}

impl Supervisor {
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// The supervisor's `WORKERS` workers, once each listens on `port`.
fn wait_workers(supervisor: &Supervisor, port: u16) -> Vec<u32> {
    let mut workers = Vec::new();
    let started = wait_for(SETTLE, || {
        workers = children(supervisor.child.id())
            .into_iter()
            .filter(|&pid| cmdline(pid).contains("--worker"))
            .collect();
        workers.len() == WORKERS && workers.iter().all(|&pid| listens(pid, port))
    });
    assert!(
        started,
        "not {WORKERS} listening workers within {SETTLE:?} (found {workers:?}); stderr:\n{}",
        supervisor.log()
    );
    workers
}

/// A connection to `server` from `client` (any port), once it has been greeted: some worker
/// has accepted it.
fn greeted_from(client: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    socket
        .bind(&SocketAddr::from((client, 0)).into())
        .unwrap_or_else(|e| panic!("bind {client}: {e}"));
    socket
        .connect_timeout(&server.into(), REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect from {client} to {server}: {e}"));
    let mut stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("set_read_timeout");
    let mut greeting = Vec::new();
    let mut byte = [0; 1];
    while !greeting.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => greeting.push(byte[0]),
            other => panic!("no greeting for {client}: {other:?} after {greeting:?}"),
        }
    }
    let greeting = String::from_utf8_lossy(&greeting);
    assert!(greeting.starts_with(GREETING), "greeting {greeting:?}");
    stream
}

/// The remote address of every IPv4 TCP socket, by inode (/proc/net/tcp: `sl local rem st
/// tx:rx tr:when retrnsmt uid timeout inode`, the address as the hex of its bytes in memory).
fn remote_addresses() -> HashMap<u64, Ipv4Addr> {
    let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, _port) = fields.get(2)?.split_once(':')?;
            let address = u32::from_str_radix(address, 16).ok()?;
            let inode = fields.get(9)?.parse().ok()?;
            Some((inode, Ipv4Addr::from(address.to_ne_bytes())))
        })
        .collect()
}

/// For each client address, the workers holding its connections to `port`, and how many
/// connections they hold between them.
fn workers_by_client(workers: &[u32], port: u16) -> HashMap<Ipv4Addr, (BTreeSet<u32>, usize)> {
    let remote = remote_addresses();
    let mut found: HashMap<Ipv4Addr, (BTreeSet<u32>, usize)> = HashMap::new();
    for &pid in workers {
        for socket in connections(pid) {
            if socket.local_port != port {
                continue;
            }
            if let Some(&client) = remote.get(&socket.inode) {
                let entry = found.entry(client).or_default();
                entry.0.insert(pid);
                entry.1 += 1;
            }
        }
    }
    found
}

#[test]
fn every_connection_of_one_client_address_reaches_the_same_worker() {
    let dir = TempDir::new();
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, common::free_port()));
    let (child, config) = spawn_blackhole(
        &dir,
        &[],
        &server.to_string(),
        &format!("workers = {WORKERS}"),
    );
    let supervisor = Supervisor { child, config, dir };
    let workers = wait_workers(&supervisor, server.port());

    // The whole of 127/8 is loopback on Linux: eight client addresses, 127.0.0.2 to .9.
    let clients: Vec<Ipv4Addr> = (2..10).map(|last| Ipv4Addr::new(127, 0, 0, last)).collect();
    let _open: Vec<TcpStream> = clients
        .iter()
        .flat_map(|&client| (0..CONNECTIONS_EACH).map(move |_| greeted_from(client, server)))
        .collect();

    let mut held = HashMap::new();
    let all_seen = wait_for(SETTLE, || {
        held = workers_by_client(&workers, server.port());
        clients.iter().all(|client| {
            held.get(client)
                .is_some_and(|(_, n)| *n == CONNECTIONS_EACH)
        })
    });
    assert!(
        all_seen,
        "the workers do not hold {CONNECTIONS_EACH} connections of each of {clients:?}: \
         {held:?}"
    );
    for client in &clients {
        let (holders, _) = &held[client];
        assert_eq!(
            holders.len(),
            1,
            "the connections from {client} are spread over workers {holders:?}; stderr:\n{}",
            supervisor.log()
        );
    }
    let used: HashSet<&u32> = held.values().flat_map(|(holders, _)| holders).collect();
    assert!(
        used.len() > 1,
        "every client address went to one worker, {used:?}: {held:?}"
    );
}
