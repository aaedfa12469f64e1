//! `workers = N` steers by client address: every connection from one client address reaches
//! the same worker, whatever its source port, and different addresses reach different workers.
//! Which worker holds which connection is read from /proc.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use common::procfs::{children, cmdline, connections, kill_every_process_naming, listens};
use common::{MAILNAME, TempDir, greeted_from, spawn_blackhole, spawn_with_config, wait_for};

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

/// For each client address, the workers holding its connections to `port`, and how many
/// connections they hold between them.
fn workers_by_client(workers: &[u32], port: u16) -> HashMap<Ipv4Addr, (BTreeSet<u32>, usize)> {
    let mut found: HashMap<Ipv4Addr, (BTreeSet<u32>, usize)> = HashMap::new();
    for &pid in workers {
        for socket in connections(pid) {
            if socket.local_port != port {
                continue;
            }
            if let Some(client) = socket.remote_v4 {
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
        .flat_map(|&client| {
            (0..CONNECTIONS_EACH).map(move |_| greeted_from(client, server).into_stream())
        })
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

#[test]
fn a_client_reaches_the_same_worker_on_every_listener() {
    let dir = TempDir::new();
    let ports = [common::free_port(), common::free_port()];
    let servers = ports.map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let (child, config) = spawn_with_config(
        &dir,
        &[],
        &format!(
            "mailname = \"{MAILNAME}\"\nlisten = [\"{}\", \"{}\"]\nworkers = {WORKERS}\n",
            servers[0], servers[1]
        ),
    );
    let supervisor = Supervisor { child, config, dir };
    let workers = wait_workers(&supervisor, ports[0]);
    assert!(
        wait_for(SETTLE, || workers.iter().all(|&pid| listens(pid, ports[1]))),
        "every worker listens on both ports"
    );
    let clients: Vec<Ipv4Addr> = (2..14).map(|last| Ipv4Addr::new(127, 0, 0, last)).collect();
    let _open: Vec<TcpStream> = clients
        .iter()
        .flat_map(|&client| servers.map(|server| greeted_from(client, server).into_stream()))
        .collect();
    let mut by_port = Vec::new();
    for port in ports {
        let mut held = HashMap::new();
        let seen = wait_for(SETTLE, || {
            held = workers_by_client(&workers, port);
            clients.iter().all(|c| held.contains_key(c))
        });
        assert!(seen, "connections to {port}: {held:?}");
        by_port.push(held);
    }
    for client in &clients {
        assert_eq!(
            by_port[0][client].0,
            by_port[1][client].0,
            "{client} reaches different workers on ports {ports:?}; stderr:\n{}",
            supervisor.log()
        );
    }
}
