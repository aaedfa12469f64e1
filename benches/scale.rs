//! Scale-out: 60,000 idle connections held at once with `workers = 4`, against the same with
//! one process.
//!
//!     cargo bench --bench scale
//!
//! Target: with `workers = 4` and the clients spread over several loopback source addresses
//! (127.0.0.2 and up, so the ephemeral ports do not run out), 60,000 idle connections held
//! at once, each still answering NOOP, at most 1 KiB of RSS each over all processes, greeted
//! at no less than 20,000 connections a second.
//!
//! - The client is `support::swarm`: four processes of this bench, each one thread with
//!   its own `mio` poll, 15,000 connections and at most 128 of them between connect and
//!   greeting. The rate is greetings
//!   over the whole ramp, from the first connect to the last 220.
//! - RSS is VmRSS summed over the supervisor and its workers, before any connection and
//!   with all of them held (and again after the NOOPs): per connection, the difference over
//!   the connections greeted.
//! - Eight source addresses, as many as a multiple of four: the workers' steering program
//!   sends each address to one worker (address modulo the number of workers), so each
//!   worker gets two of them, 15,000 connections.
//! - Descriptors: the bench raises its own limit (soft and hard, when it may; else soft to
//!   hard), and the server, which inherits it, is told `max_connections = 60000`. The limit
//!   is per process: a hard limit of 20,000 lets four workers hold 15,000 each, but not one
//!   process 60,000. Where a process cannot hold its share, the bench says so and fails
//!   that target, and measures as many connections as the limit lets it for comparison.

#[allow(dead_code)]
mod support;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use support::family;
use support::procfs;
use support::report::{Table, Targets, Verdict, count};
use support::server::{self, Server};
use support::smtp::SmtpConn;
use support::swarm::{self, Phase, Swarm};

const CONNECTIONS: usize = 60_000;
const SOURCES: usize = 8;
const CLIENT_PROCESSES: usize = 4;
/// Per client process; with four, at most 512 connections wait for their greeting, fewer
/// than one listening socket's backlog (1,024).
const IN_FLIGHT: usize = 128;
const GREETINGS_PER_SECOND: f64 = 20_000.0;
const BYTES_PER_CONNECTION: f64 = 1024.0;
/// Descriptors the bench asks for, per process: one process holds all the server's side
/// with `workers = 1`.
const NOFILE_WANTED: u64 = 131_072;
/// Descriptors a process needs besides its connections (listeners, poll, pipes, files).
const NOFILE_SPARE: u64 = 64;
const SETTLE: Duration = Duration::from_secs(1);
/// How long the supervisor may take to have every worker serving.
const WORKERS_START: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    if let Some(code) = swarm::run_if_asked() {
        return code;
    }
    let Some(binary) = server::built_blackhole("scale") else {
        return ExitCode::FAILURE;
    };
    let ((soft, hard), hard_before) = family::raise_nofile_limit_to(NOFILE_WANTED);
    let room = soft.saturating_sub(NOFILE_SPARE) as usize;
    print_header((soft, hard), hard_before);
    let began = Instant::now();
    let mut targets = Targets::default();
    let mut runs = Vec::new();
    if room < CONNECTIONS.div_ceil(CLIENT_PROCESSES) {
        println!(
            "!! a client process may open {soft} descriptors: too few for its {} connections\n",
            count(CONNECTIONS.div_ceil(CLIENT_PROCESSES) as u64)
        );
        targets.add(
            "client processes",
            format!("{soft} descriptors"),
            "-",
            Verdict::Fail,
        );
    } else {
        for workers in [4, 1] {
            eprintln!(
                "-- workers = {workers} (at {:.0} s)",
                began.elapsed().as_secs_f64()
            );
            let connections = what_fits(workers, room, (soft, hard));
            match hold(&binary, workers, connections) {
                Ok(held) => runs.push(held),
                Err(e) => {
                    println!("!! workers = {workers} failed: {e}\n");
                    targets.add(format!("workers = {workers}"), "error", "-", Verdict::Fail);
                }
            }
        }
    }
    print_runs(&runs);
    for held in &runs {
        judge(held, &mut targets);
    }
    targets.print_ending(began);
    ExitCode::SUCCESS
}

/// The connections `workers` processes can hold, each with `room` descriptors for them
/// (60,000 if they can), in whole thousands; says so when it is fewer.
fn what_fits(workers: usize, room: usize, (soft, hard): (u64, u64)) -> usize {
    let share = CONNECTIONS.div_ceil(workers);
    if share <= room {
        return CONNECTIONS;
    }
    let fits = room * workers / 1000 * 1000;
    println!(
        "!! workers = {workers}: each serving process would hold {} connections, but may open \
         only {soft} descriptors (hard limit {hard}, which this bench may not raise): measuring \
         {} connections instead. Raise the limit (ulimit -Hn as root, \
         LimitNOFILE=) to hold {}.\n",
        count(share as u64),
        count(fits as u64),
        count(CONNECTIONS as u64)
    );
    fits
}

fn print_header((soft, hard): (u64, u64), hard_before: u64) {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let ports = ephemeral_ports();
    println!(
        "blackhole scale bench: {}",
        server::blackhole_binary().display()
    );
    println!(
        "{cpus} CPUs; descriptors soft/hard {soft}/{hard} (hard limit found: {hard_before}); \
         ephemeral ports {}..={} ({} per source address)",
        ports.0,
        ports.1,
        count(ports.1.saturating_sub(ports.0) + 1)
    );
    let per_source = CONNECTIONS.div_ceil(SOURCES) as u64;
    if ports.1.saturating_sub(ports.0) + 1 < per_source {
        println!(
            "WARNING: {per_source} connections per source address need more ephemeral ports \
             (net.ipv4.ip_local_port_range)"
        );
    }
    println!(
        "{} connections from 127.0.0.2..=127.0.0.{} ({per_source} each), {CLIENT_PROCESSES} client \
         processes, {IN_FLIGHT} in flight in each\n",
        count(CONNECTIONS as u64),
        1 + SOURCES
    );
}

/// `net.ipv4.ip_local_port_range`.
fn ephemeral_ports() -> (u64, u64) {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut ends = text.split_whitespace().filter_map(|n| n.parse().ok());
    (ends.next().unwrap_or(0), ends.next().unwrap_or(0))
}

/// One run: 60,000 connections held by a fresh server with `workers` workers.
struct Held {
    workers: usize,
    /// Connections tried: 60,000, or what the descriptor limit allows.
    connections: usize,
    ramp: Ramp,
    opened: Phase,
    noop: Phase,
    overflows: u64,
    rss_before: u64,
    rss_held: u64,
    rss_after_noop: u64,
    /// Per serving process: its pid and the descriptors it held with every connection open.
    descriptors: Vec<(u32, usize)>,
    alive: bool,
}

/// CPU seconds used while the connections opened: who else took the machine's CPUs.
struct Ramp {
    server: f64,
    clients: f64,
    /// Every CPU's busy time, whoever used it.
    machine: f64,
}

impl Held {
    fn per_conn(&self, rss: u64) -> f64 {
        rss.saturating_sub(self.rss_before) as f64 * 1024.0 / self.opened.ok.max(1) as f64
    }

    fn worst_per_conn(&self) -> f64 {
        self.per_conn(self.rss_held.max(self.rss_after_noop))
    }

    fn all_answered(&self) -> bool {
        self.opened.ok == self.connections && self.noop.ok == self.connections && self.alive
    }
}

fn hold(binary: &Path, workers: usize, connections: usize) -> io::Result<Held> {
    let extra = format!("workers = {workers}\nmax_connections = {CONNECTIONS}\n");
    let mut server = Server::blackhole_with(binary, &extra)?;
    wait_for_workers(&server, workers)?;
    thread::sleep(SETTLE);
    let rss_before = family::rss_kib(server.pid());
    let overflows_before = procfs::listen_overflows();
    let plan = swarm::Plan {
        addr: server.addr,
        connections,
        sources: SOURCES,
        processes: CLIENT_PROCESSES,
        in_flight: IN_FLIGHT,
    };
    let machine_before = procfs::machine_cpu_seconds().0;
    let server_before = family::cpu_seconds(server.pid());
    let (mut swarm, opened) = Swarm::open(plan)?;
    let ramp = Ramp {
        server: family::cpu_seconds(server.pid()) - server_before,
        clients: swarm.cpu_seconds(),
        machine: procfs::machine_cpu_seconds().0 - machine_before,
    };
    let overflows = procfs::listen_overflows().saturating_sub(overflows_before);
    thread::sleep(SETTLE);
    let rss_held = family::rss_kib(server.pid());
    let descriptors = serving_processes(server.pid(), workers)
        .into_iter()
        .map(|pid| (pid, family::open_descriptors(pid)))
        .collect();
    let noop = swarm.noop_all()?;
    thread::sleep(SETTLE / 2);
    let rss_after_noop = family::rss_kib(server.pid());
    let alive = server.alive() && serving_processes(server.pid(), workers).len() == workers;
    server.stop();
    swarm.close();
    Ok(Held {
        workers,
        connections,
        ramp,
        opened,
        noop,
        overflows,
        rss_before,
        rss_held,
        rss_after_noop,
        descriptors,
        alive,
    })
}

/// The processes that serve connections: the workers, or the server itself without any.
fn serving_processes(pid: u32, workers: usize) -> Vec<u32> {
    let family = family::processes(pid);
    if workers > 1 {
        family.into_iter().skip(1).collect()
    } else {
        family
    }
}

/// Waits until every worker runs and each source address is greeted, so the baseline is
/// taken with every process serving.
fn wait_for_workers(server: &Server, workers: usize) -> io::Result<()> {
    let deadline = Instant::now() + WORKERS_START;
    while serving_processes(server.pid(), workers).len() < workers {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("{workers} workers did not start")));
        }
        thread::sleep(Duration::from_millis(10));
    }
    for n in 0..SOURCES {
        let from = swarm::source(n);
        while let Err(e) = probe(from, server.addr) {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("no greeting to {from}: {e}")));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Connects from `from`, reads the 220 and quits.
fn probe(from: Ipv4Addr, to: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SockAddr::from(SocketAddrV4::new(from, 0)))?;
    socket.connect_timeout(&SockAddr::from(to), PROBE_TIMEOUT)?;
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let mut conn = SmtpConn::over(stream);
    conn.expect(220)?;
    conn.quit()
}

fn print_runs(runs: &[Held]) {
    let mut table = Table::new(
        format!(
            "Idle connections (connect + 220, {} in flight; then NOOP on every one)",
            CLIENT_PROCESSES * IN_FLIGHT
        ),
        &[
            "workers",
            "N",
            "greeted",
            "ramp",
            "greetings/s",
            "listen overflows",
            "RSS before",
            "RSS held",
            "per conn",
            "NOOP 250",
            "NOOP/s",
            "per conn after NOOP",
        ],
    );
    for held in runs {
        table.row(vec![
            held.workers.to_string(),
            count(held.connections as u64),
            count(held.opened.ok as u64),
            format!("{:.3} s", held.opened.elapsed.as_secs_f64()),
            count(held.opened.per_second() as u64),
            count(held.overflows),
            format!("{} KiB", count(held.rss_before)),
            format!("{} KiB", count(held.rss_held)),
            format!("{:.0} B", held.per_conn(held.rss_held)),
            count(held.noop.ok as u64),
            count(held.noop.per_second() as u64),
            format!("{:.0} B", held.per_conn(held.rss_after_noop)),
        ]);
    }
    table.note("RSS: VmRSS of the supervisor and every worker, summed; per conn: (held - before) / greeted");
    table.note("ramp: from the first connect to the last greeting; listen overflows: TcpExt ListenOverflows");
    for held in runs {
        let spread: Vec<String> = held
            .descriptors
            .iter()
            .map(|(pid, fds)| format!("{pid}: {}", count(*fds as u64)))
            .collect();
        table.note(format!(
            "workers = {}: open descriptors per serving process, all held: {}",
            held.workers,
            spread.join(", ")
        ));
        let ramp = &held.ramp;
        table.note(format!(
            "workers = {}: CPU over the ramp: server {:.2} s, clients {:.2} s, anything else {:.2} s",
            held.workers,
            ramp.server,
            ramp.clients,
            (ramp.machine - ramp.server - ramp.clients).max(0.0)
        ));
        for (what, phase) in [("open", &held.opened), ("NOOP", &held.noop)] {
            if let Some(error) = &phase.first_error {
                table.note(format!(
                    "workers = {}: {} {what} failures, the first: {error}",
                    held.workers,
                    count(phase.failed as u64)
                ));
            }
        }
        if !held.alive {
            table.note(format!("workers = {}: a server process died", held.workers));
        }
    }
    table.print();
}

fn judge(held: &Held, targets: &mut Targets) {
    let who = format!("workers = {}", held.workers);
    let all_held = held.connections == CONNECTIONS && held.all_answered();
    // The target is `workers = 4`'s; one process is measured for comparison, and only
    // fails if its connections do not all answer.
    let verdict = |pass: bool| match held.workers {
        1 => Verdict::Info,
        _ => Verdict::from_check(pass && all_held),
    };
    targets.add(
        format!(
            "{who}: {} held, each answering NOOP",
            count(held.connections as u64)
        ),
        format!(
            "{} greeted, {} NOOP 250",
            count(held.opened.ok as u64),
            count(held.noop.ok as u64)
        ),
        "all",
        match held.workers {
            1 => Verdict::from_check(held.all_answered()),
            _ => Verdict::from_check(all_held),
        },
    );
    let of = if held.connections == CONNECTIONS {
        String::new()
    } else {
        format!(" ({} held)", count(held.connections as u64))
    };
    targets.add(
        format!("{who}: RSS per connection, all processes{of}"),
        format!("{:.0} B", held.worst_per_conn()),
        "<= 1,024 B",
        verdict(held.worst_per_conn() <= BYTES_PER_CONNECTION),
    );
    targets.add(
        format!("{who}: greetings per second over the ramp{of}"),
        count(held.opened.per_second() as u64),
        ">= 20,000",
        verdict(held.opened.per_second() >= GREETINGS_PER_SECOND),
    );
}
