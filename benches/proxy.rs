//! What reading a PROXY header costs: one message per connection on a listener flagged
//! `proxy` against the same on a plain listener of the same server.
//!
//!     cargo bench --bench proxy
//!
//! Target: PROXY header parsing adds at most 3% CPU per connection for one message per
//! connection.
//!
//! One server (one process) listens on both; the same client sends one message per
//! connection (greeting, EHLO, the pipelined envelope, the message, QUIT), and on the proxy
//! listener writes `PROXY TCP4 203.0.113.7 127.0.0.1 5555 25` first. Rounds alternate
//! between the listeners (plain then proxy, proxy then plain, ...), and each round's server
//! CPU is read around it: the run time in /proc/PID/schedstat (nanoseconds), with
//! utime+stime from /proc/PID/stat (10 ms ticks, too coarse for one round) summed over all
//! rounds beside it. The ratio judged is the median of the rounds' pairs, proxy over plain:
//! a pair is two rounds next to each other, which drift on a shared machine moves together.

#[allow(dead_code)]
mod support;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::procfs;
use support::report::{Table, Targets, Verdict, count};
use support::server::{self, Server};
use support::smtp::{self, SmtpConn};
use support::stats::median;

const PAIRS: usize = 60;
const CONNECTIONS_PER_ROUND: usize = 1_500;
const SESSIONS: usize = 8;
const WARMUP: usize = 1_000;
const RATIO: f64 = 1.03;
const HEADER: &[u8] = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 25\r\n";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    Plain,
    Proxy,
}

/// One round's figures.
struct Round {
    delivered: usize,
    errors: usize,
    first_error: Option<String>,
    /// Server run time, seconds (schedstat).
    run_time: f64,
    /// Server utime+stime, seconds.
    cpu: f64,
    wall: Duration,
}

impl Round {
    fn per_connection(&self) -> f64 {
        self.run_time / self.delivered.max(1) as f64
    }
}

fn main() -> ExitCode {
    let binary = server::blackhole_binary();
    if !binary.is_file() {
        eprintln!(
            "proxy bench: {} not found: run `cargo build --release`",
            binary.display()
        );
        return ExitCode::FAILURE;
    }
    procfs::raise_nofile_limit();
    let began = Instant::now();
    let mut targets = Targets::default();
    match run(&binary) {
        Ok(pairs) => report(&pairs, &mut targets),
        Err(e) => {
            println!("!! the run failed: {e}\n");
            targets.add("PROXY header cost", "error", "-", Verdict::Fail);
        }
    }
    targets.table().print();
    println!(
        "{} target(s) FAIL; the run took {:.0} s",
        targets.failures(),
        began.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn free_loopback_addr() -> io::Result<SocketAddr> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Pairs of rounds, (plain, proxy) each, in the order run.
fn run(binary: &std::path::Path) -> io::Result<Vec<(Round, Round)>> {
    let proxy_addr = free_loopback_addr()?;
    let server = Server::blackhole_listening(binary, &[format!("{proxy_addr} proxy")], "")?;
    println!(
        "blackhole PROXY bench: {}\nplain listener {}, proxy listener {proxy_addr}; \
         {PAIRS} pairs of rounds of {} connections, {SESSIONS} at once, one message each\n",
        binary.display(),
        server.addr,
        count(CONNECTIONS_PER_ROUND as u64)
    );
    let addr_of = |listener| match listener {
        Listener::Plain => server.addr,
        Listener::Proxy => proxy_addr,
    };
    for listener in [Listener::Plain, Listener::Proxy] {
        round(&server, addr_of(listener), listener, WARMUP);
    }
    let mut pairs = Vec::with_capacity(PAIRS);
    for pair in 0..PAIRS {
        eprintln!("-- pair {}", pair + 1);
        let order = if pair % 2 == 0 {
            [Listener::Plain, Listener::Proxy]
        } else {
            [Listener::Proxy, Listener::Plain]
        };
        let [first, second] = order.map(|l| round(&server, addr_of(l), l, CONNECTIONS_PER_ROUND));
        pairs.push(match order[0] {
            Listener::Plain => (first, second),
            Listener::Proxy => (second, first),
        });
    }
    Ok(pairs)
}

/// Server run time so far, in seconds, to the nanosecond (schedstat's first field; the
/// server is one thread).
fn run_time(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// `n` connections to `addr`, one message each, over `SESSIONS` threads.
fn round(server: &Server, addr: SocketAddr, listener: Listener, n: usize) -> Round {
    let message = smtp::message("");
    let next = AtomicUsize::new(0);
    let ready = Barrier::new(SESSIONS + 1);
    let tally = Mutex::new((0, 0, None::<String>));
    let (mut run_before, mut cpu_before, mut started) = (0.0, 0.0, Instant::now());
    thread::scope(|scope| {
        for _ in 0..SESSIONS {
            scope.spawn(|| {
                ready.wait();
                let (mut delivered, mut errors, mut first) = (0, 0, None);
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    match one_connection(addr, listener, &message) {
                        Ok(()) => delivered += 1,
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                tally.0 += delivered;
                tally.1 += errors;
                if tally.2.is_none() {
                    tally.2 = first;
                }
            });
        }
        run_before = run_time(server.pid());
        cpu_before = server.cpu_seconds();
        started = Instant::now();
        ready.wait();
    });
    let wall = started.elapsed();
    let (delivered, errors, first_error) = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    Round {
        delivered,
        errors,
        first_error,
        run_time: run_time(server.pid()) - run_before,
        cpu: server.cpu_seconds() - cpu_before,
        wall,
    }
}

fn one_connection(addr: SocketAddr, listener: Listener, message: &[u8]) -> io::Result<()> {
    let stream = smtp::connect(addr)?;
    let mut conn = SmtpConn::over(stream);
    if listener == Listener::Proxy {
        conn.send(HEADER)?;
    }
    conn.expect(220)?;
    conn.send(smtp::EHLO)?;
    conn.expect(250)?;
    conn.send(smtp::ENVELOPE)?;
    conn.expect(250)?;
    conn.expect(250)?;
    conn.expect(354)?;
    conn.send(message)?;
    conn.expect(250)?;
    conn.quit()
}

/// One listener's rounds added up.
struct Totals {
    run_time: f64,
    cpu: f64,
    delivered: f64,
}

impl Totals {
    fn of<'a>(rounds: impl Iterator<Item = &'a Round>) -> Totals {
        let mut totals = Totals {
            run_time: 0.0,
            cpu: 0.0,
            delivered: 0.0,
        };
        for round in rounds {
            totals.run_time += round.run_time;
            totals.cpu += round.cpu;
            totals.delivered += round.delivered as f64;
        }
        totals
    }

    fn run_time_per_connection(&self) -> f64 {
        self.run_time / self.delivered.max(1.0)
    }

    fn cpu_per_connection(&self) -> f64 {
        self.cpu / self.delivered.max(1.0)
    }
}

fn report(pairs: &[(Round, Round)], targets: &mut Targets) {
    let mut table = Table::new(
        "Server CPU per connection, one message each (schedstat run time)",
        &[
            "pair",
            "plain",
            "proxy",
            "ratio",
            "plain conn/s",
            "proxy conn/s",
        ],
    );
    let micros = |seconds: f64| format!("{:.1} us", seconds * 1e6);
    let rate = |r: &Round| count((r.delivered as f64 / r.wall.as_secs_f64().max(1e-9)) as u64);
    let mut ratios = Vec::with_capacity(pairs.len());
    for (index, (plain, proxy)) in pairs.iter().enumerate() {
        let ratio = proxy.per_connection() / plain.per_connection().max(1e-12);
        ratios.push(ratio);
        table.row(vec![
            (index + 1).to_string(),
            micros(plain.per_connection()),
            micros(proxy.per_connection()),
            format!("{ratio:.3}"),
            rate(plain),
            rate(proxy),
        ]);
    }
    let plain = Totals::of(pairs.iter().map(|pair| &pair.0));
    let proxy = Totals::of(pairs.iter().map(|pair| &pair.1));
    let total_ratio = proxy.run_time_per_connection() / plain.run_time_per_connection();
    let ticks_ratio = proxy.cpu_per_connection() / plain.cpu_per_connection();
    let median_ratio = median(&ratios).unwrap_or(f64::INFINITY);
    table.note(format!(
        "over all rounds: schedstat ratio {total_ratio:.3}; utime+stime ratio {ticks_ratio:.3} \
         ({:.1} us against {:.1} us per connection)",
        proxy.cpu_per_connection() * 1e6,
        plain.cpu_per_connection() * 1e6
    ));
    let errors: usize = pairs.iter().map(|(a, b)| a.errors + b.errors).sum();
    if let Some(error) = pairs
        .iter()
        .flat_map(|(a, b)| [&a.first_error, &b.first_error])
        .find_map(|e| e.as_ref())
    {
        table.note(format!("{errors} connections failed; the first: {error}"));
    }
    table.print();
    targets.add(
        "PROXY header: server CPU per connection, proxy / plain (median of pairs)",
        format!("{median_ratio:.3}"),
        format!("<= {RATIO:.2}"),
        Verdict::from_check(median_ratio <= RATIO && errors == 0),
    );
}
