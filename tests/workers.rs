//! `workers = N` steers by client address: every connection from one client address reaches
//! the same worker, whatever its source port, and different addresses reach different workers.
//! Which worker holds which connection is read from /proc.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::procfs::{alive, connections, listens};
use common::supervisor::Supervisor;
use common::{Client, GREETING, MAILNAME, config_toml, greeted_from, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the workers may take to start and to accept.
const SETTLE: Duration = Duration::from_secs(10);
const WORKERS: usize = 4;
/// Connections per client address: enough that the kernel's own hash of the source port
/// would have put them on more than one worker.
const CONNECTIONS_EACH: usize = 20;

/// The supervisor's `WORKERS` workers, once each listens on `port`.
fn wait_workers(supervisor: &Supervisor, port: u16) -> Vec<u32> {
    let mut workers = Vec::new();
    let started = wait_for(SETTLE, || {
        workers = supervisor.workers();
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
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, common::free_port()));
    let supervisor = Supervisor::spawn(
        &[],
        &config_toml(&server.to_string(), &format!("workers = {WORKERS}")),
    );
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

/// A supervisor of `WORKERS` workers with two listeners, once every worker listens on both.
fn start_with_two_listeners() -> (Supervisor, [SocketAddr; 2], Vec<u32>) {
    let ports = [common::free_port(), common::free_port()];
    let servers = ports.map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let supervisor = Supervisor::spawn(
        &[],
        &format!(
            "mailname = \"{MAILNAME}\"\nlisten = [\"{}\", \"{}\"]\nworkers = {WORKERS}\n",
            servers[0], servers[1]
        ),
    );
    let workers = wait_workers(&supervisor, ports[0]);
    assert!(
        wait_for(SETTLE, || workers.iter().all(|&pid| listens(pid, ports[1]))),
        "every worker listens on both ports"
    );
    (supervisor, servers, workers)
}

/// Twelve client addresses, 127.0.0.2 to .13: three for each place in a group of four.
fn twelve_clients() -> Vec<Ipv4Addr> {
    (2..14).map(|last| Ipv4Addr::new(127, 0, 0, last)).collect()
}

/// Connects every client to both `servers`, and returns the worker each client reached,
/// asserting it is one worker, the same on both listeners.
fn worker_of_each_client(
    supervisor: &Supervisor,
    workers: &[u32],
    servers: [SocketAddr; 2],
    clients: &[Ipv4Addr],
) -> HashMap<Ipv4Addr, u32> {
    let _open: Vec<TcpStream> = clients
        .iter()
        .flat_map(|&client| servers.map(|server| greeted_from(client, server).into_stream()))
        .collect();
    let mut by_port = Vec::new();
    for server in servers {
        let mut held = HashMap::new();
        let seen = wait_for(SETTLE, || {
            held = workers_by_client(workers, server.port());
            clients.iter().all(|c| held.contains_key(c))
        });
        assert!(seen, "connections to {server}: {held:?}");
        by_port.push(held);
    }
    let mut reached = HashMap::new();
    for client in clients {
        let (holders, _) = &by_port[0][client];
        assert_eq!(
            holders,
            &by_port[1][client].0,
            "{client} reaches different workers on {servers:?}; stderr:\n{}",
            supervisor.log()
        );
        assert_eq!(holders.len(), 1, "{client} reaches workers {holders:?}");
        reached.extend(holders.iter().map(|&pid| (*client, pid)));
    }
    reached
}

/// Waits until none of `workers` holds a connection to `servers`, those of an earlier round
/// closed.
fn wait_connections_closed(workers: &[u32], servers: [SocketAddr; 2]) {
    let closed = wait_for(SETTLE, || {
        workers.iter().all(|&pid| {
            connections(pid)
                .iter()
                .all(|socket| servers.iter().all(|s| s.port() != socket.local_port))
        })
    });
    assert!(closed, "the workers still hold connections to {servers:?}");
}

/// SIGKILL to each of `victims`, one right after the other.
fn kill_at_once(victims: &[u32]) {
    for &pid in victims {
        let pid = Pid::from_raw(i32::try_from(pid).expect("a pid"));
        kill(pid, Signal::SIGKILL).expect("SIGKILL a worker");
    }
}

#[test]
fn a_client_reaches_the_same_worker_on_every_listener() {
    let (supervisor, servers, workers) = start_with_two_listeners();
    let reached = worker_of_each_client(&supervisor, &workers, servers, &twelve_clients());
    let used: HashSet<&u32> = reached.values().collect();
    assert!(
        used.len() > 1,
        "every client reached one worker: {reached:?}"
    );
}

#[test]
fn two_workers_killed_at_once_move_no_client() {
    let (supervisor, servers, workers) = start_with_two_listeners();
    let clients = twelve_clients();
    let before = worker_of_each_client(&supervisor, &workers, servers, &clients);
    // The workers of 127.0.0.4 and .5: the first two places in every group (address modulo
    // four), those whose loss would move the others' clients if a group closed its ranks.
    let victims = [
        before[&Ipv4Addr::new(127, 0, 0, 4)],
        before[&Ipv4Addr::new(127, 0, 0, 5)],
    ];
    assert_ne!(
        victims[0], victims[1],
        "two addresses, one worker: {before:?}"
    );
    wait_connections_closed(&workers, servers);
    kill_at_once(&victims);

    let mut now = Vec::new();
    let replaced = wait_for(SETTLE, || {
        now = supervisor.workers();
        now.len() == WORKERS
            && !now.iter().any(|pid| victims.contains(pid))
            && now
                .iter()
                .all(|&pid| servers.iter().all(|s| listens(pid, s.port())))
    });
    assert!(
        replaced,
        "workers {victims:?} killed, not both replaced within {SETTLE:?} (now {now:?}); \
         stderr:\n{}",
        supervisor.log()
    );
    let after = worker_of_each_client(&supervisor, &now, servers, &clients);
    for client in &clients {
        let (was, is) = (before[client], after[client]);
        if victims.contains(&was) {
            assert!(
                !workers.contains(&is),
                "{client} reached killed worker {was}, now worker {is}, which was running \
                 already: {before:?} then {after:?}"
            );
        } else {
            assert_eq!(
                was, is,
                "{client} moved from worker {was}, which lives on: {before:?} then {after:?}"
            );
        }
        for other in &clients {
            assert_eq!(
                before[client] == before[other],
                after[client] == after[other],
                "{client} and {other}: {before:?} then {after:?}"
            );
        }
    }
}

#[test]
fn a_connection_made_while_its_worker_is_dead_is_greeted_by_its_replacement() {
    let (supervisor, servers, workers) = start_with_two_listeners();
    let client = Ipv4Addr::new(127, 0, 0, 6);
    let victim = worker_of_each_client(&supervisor, &workers, servers, &[client])[&client];
    wait_connections_closed(&workers, servers);
    kill_at_once(&[victim]);
    // Dead and its descriptors closed (a zombie at most); the supervisor waits 100 ms before
    // starting it again.
    assert!(
        wait_for(SETTLE, || !alive(victim)),
        "worker {victim} survived SIGKILL"
    );
    let mut waiting = Client::connect_from(client, servers[1]);
    let greeting = waiting.reply_within(SETTLE);
    assert!(
        greeting.as_deref().is_ok_and(|g| g == GREETING),
        "a connection made while worker {victim} was dead: {greeting:?}; stderr:\n{}",
        supervisor.log()
    );
    let now = supervisor.workers();
    let held = workers_by_client(&now, servers[1].port());
    let holders = held.get(&client).map(|(holders, _)| holders);
    assert!(
        holders.is_some_and(|h| h.len() == 1 && h.iter().all(|pid| !workers.contains(pid))),
        "the connection from {client} is held by {holders:?}, not by the replacement of worker \
         {victim} (workers then {workers:?}, now {now:?})"
    );
}
