//! Connection limits: `max_connections`, and running out of file descriptors. The server must
//! go on serving the connections it holds, never spin on `accept`, and take new clients again
//! once room frees up.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::{Client, GREETING, Server, procfs, wait_for};

/// Splits `clients` into those the server has accepted (it holds a socket whose peer is theirs)
/// and those still waiting in the listen backlog.
fn accepted_and_waiting(server: &Server, clients: Vec<Client>) -> (Vec<Client>, Vec<Client>) {
    let peers: HashSet<u16> = procfs::connections(server.pid())
        .iter()
        .map(|socket| socket.remote_port)
        .collect();
    clients.into_iter().partition(|client| {
        let port = client.stream().local_addr().expect("local_addr").port();
        peers.contains(&port)
    })
}

/// The CPU time (user plus system, in 1/100 s ticks) the process uses over the next `span`:
/// CPU time, not wall time, so that a busy machine does not count against the server. The
/// wait is the measurement itself.
fn cpu_ticks_during(pid: u32, span: Duration) -> u64 {
    let cpu_ticks = || procfs::stat(pid).expect("the server's stat").cpu_ticks;
    let before = cpu_ticks();
    thread::sleep(span);
    cpu_ticks() - before
}

#[test]
fn out_of_descriptors_the_server_serves_what_it_holds_and_recovers() {
    const FDS: u32 = 256;
    // max_connections above what 256 descriptors allow, so accept() itself runs out.
    let server = Server::start_with_fd_limit(FDS, "max_connections = 5000\ntimeout = 120");
    let clients: Vec<Client> = (0..1000).map(|_| server.connect()).collect();
    let pid = server.pid();
    assert!(
        wait_for(Duration::from_secs(10), || procfs::open_fds(pid)
            == FDS as usize),
        "the server holds {} descriptors of {FDS} with 1000 clients knocking",
        procfs::open_fds(pid)
    );
    let (mut held, mut waiting) = accepted_and_waiting(&server, clients);
    assert!(
        (150..256).contains(&held.len()),
        "{} connections accepted with 256 descriptors",
        held.len()
    );
    for client in &mut held {
        assert_eq!(client.reply(), GREETING);
        assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
    }
    // Descriptors exhausted, clients waiting: the accept back-off keeps the CPU idle.
    let spent = cpu_ticks_during(pid, Duration::from_secs(3));
    assert!(
        spent <= 30,
        "{spent} ticks of CPU in 3 s while out of descriptors"
    );

    // Room frees up: the first clients of the backlog are taken in and greeted, in turn.
    held.truncate(held.len() - 100);
    for client in waiting.iter_mut().take(50) {
        let greeting = client.reply_within(Duration::from_secs(10));
        assert_eq!(
            greeting.expect("a greeting once descriptors are free"),
            GREETING
        );
    }
    for client in &mut held {
        assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
    }
}

#[test]
fn past_max_connections_clients_are_told_and_closed() {
    let server = Server::start("max_connections = 5");
    // The probe that saw the server listening may still count for a moment: retry on 421.
    let mut held: Vec<Client> = (0..5).map(|_| admitted(server.addr())).collect();
    let mut refused = server.connect();
    assert_eq!(refused.reply(), "421 4.3.2 Too many connections");
    refused.expect_closed();
    for client in &mut held {
        assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
    }
    drop(held.pop());
    // The server notices the close on its next turn.
    held.push(admitted(server.addr()));
}

/// A client the server took in, retrying while it says it is full.
fn admitted(addr: SocketAddr) -> Client {
    let mut admitted = None;
    let room = wait_for(common::REPLY_TIMEOUT, || {
        let mut client = Client::connect(addr);
        let reply = client.reply();
        if reply == GREETING {
            admitted = Some(client);
            return true;
        }
        assert_eq!(reply, "421 4.3.2 Too many connections");
        false
    });
    assert!(
        room,
        "no room for a client within {:?}",
        common::REPLY_TIMEOUT
    );
    admitted.expect("the admitted client")
}

/// A client that pipelines commands with long replies and reads them only later: the server
/// stops reading it while its replies wait, without spinning, and delivers every reply.
#[test]
fn a_client_that_reads_late_gets_every_reply_without_the_server_spinning() {
    let server = Server::start("timeout = 60");
    let mut client = server.greeted();
    let mut writer = client.stream().try_clone().expect("clone the socket");
    // The sender blocks until the replies are read: allow it the whole test.
    writer
        .set_write_timeout(Some(Duration::from_secs(60)))
        .expect("set_write_timeout");
    const COMMANDS: usize = 20_000;
    let sender = thread::spawn(move || {
        let mut batch = "EXPN all\r\n".repeat(COMMANDS);
        batch.push_str("QUIT\r\n");
        writer.write_all(batch.as_bytes())
    });
    let pid = server.pid();
    let port = client.stream().local_addr().expect("local_addr").port();
    assert!(
        wait_for(Duration::from_secs(10), || procfs::stopped_reading(
            pid, port
        )),
        "the server never stopped reading a client that reads nothing"
    );
    let spent = cpu_ticks_during(pid, Duration::from_secs(2));
    assert!(
        spent <= 20,
        "{spent} ticks of CPU in 2 s while the client did not read"
    );

    let expn = client.reply();
    assert!(
        expn.starts_with("250-") && expn.contains("\n250 Reileen Kawahara <"),
        "{expn:?}"
    );
    let expn_reply: String = expn.lines().map(|line| format!("{line}\r\n")).collect();
    client.expect_repeated(expn_reply.as_bytes(), COMMANDS - 1);
    assert_eq!(client.reply(), "221 2.0.0 Goodbye");
    client.expect_closed();
    sender
        .join()
        .expect("the sending thread")
        .expect("send the batch");
}
