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
//! rounds beside it. The ratio is the median of the rounds' pairs, proxy over plain: a pair
//! is two rounds next to each other, which drift on a shared machine moves together.
//!
//! The judged rounds offer both listeners one load: connections start on a schedule, at 80%
//! of the slower listener's median rate in the flat-out pairs, which run first and are
//! printed beside. Flat out, the figure moves with the client: on loopback the kernel's work
//! of taking a segment in runs in the sender's time, so each reply the server writes is
//! taken in by the client's socket, and the client's thread woken, within the server's own
//! system call, at a cost that depends on what the client is doing; and the client, on the
//! same two cores, also writes the header. (The header's segment is taken in within the
//! client's write: on loopback the server is charged its read of it, not its receipt.) At
//! one offered load the client's pace is the same for both listeners, and the server's
//! extra work, one read and the parse, is what differs.

#[allow(dead_code)]
mod support;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use support::procfs;
use support::report::{Table, Targets, Verdict, count};
use support::server::{self, Server};
use support::smtp::{self, SmtpConn};
use support::stats::median;

const PAIRS: usize = 60;
/// Pairs of rounds run flat out, shown beside the judged ones.
const FLAT_OUT_PAIRS: usize = 20;
/// The judged rounds' offered rate, as a share of the slower listener's flat-out rate.
const OFFERED_SHARE: f64 = 0.8;
/// Below this, a round of `CONNECTIONS_PER_ROUND` would take too long: the server or the
/// machine is not fit to measure.
const MIN_OFFERED_RATE: f64 = 100.0;
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
    /// Server context switches, voluntary (its sleeps in the poll) and not.
    switches: u64,
    wall: Duration,
}

impl Round {
    fn per_connection(&self) -> f64 {
        self.run_time / self.delivered.max(1) as f64
    }

    /// Connections a second.
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

fn main() -> ExitCode {
    let Some(binary) = server::built_blackhole("proxy") else {
        return ExitCode::FAILURE;
    };
    procfs::raise_nofile_limit();
    let began = Instant::now();
    let mut targets = Targets::default();
    match run(&binary) {
        Ok(rounds) => report(&rounds, &mut targets),
        Err(e) => {
            println!("!! the run failed: {e}\n");
            targets.add("PROXY header cost", "error", "-", Verdict::Fail);
        }
    }
    targets.print_ending(began);
    ExitCode::SUCCESS
}

/// The rounds run: pairs (plain, proxy) at one offered rate, and flat out.
struct Rounds {
    /// Connections a second offered to both listeners in `offered`.
    rate: f64,
    offered: Vec<(Round, Round)>,
    flat_out: Vec<(Round, Round)>,
}

fn run(binary: &std::path::Path) -> io::Result<Rounds> {
    let proxy_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server::free_port()?));
    let server = Server::blackhole_listening(binary, &[format!("{proxy_addr} proxy")], "")?;
    println!(
        "blackhole PROXY bench: {}\nplain listener {}, proxy listener {proxy_addr}; \
         {FLAT_OUT_PAIRS} pairs flat out, then {PAIRS} at one offered rate, of rounds of {} \
         connections, {SESSIONS} at once, one message each\n",
        binary.display(),
        server.addr,
        count(CONNECTIONS_PER_ROUND as u64)
    );
    let addr_of = |listener| match listener {
        Listener::Plain => server.addr,
        Listener::Proxy => proxy_addr,
    };
    let pairs = |count: usize, pace: Option<f64>| {
        (0..count)
            .map(|pair| {
                // Each listener goes first in every other pair.
                let order = if pair % 2 == 0 {
                    [Listener::Plain, Listener::Proxy]
                } else {
                    [Listener::Proxy, Listener::Plain]
                };
                let [first, second] =
                    order.map(|l| round(&server, addr_of(l), l, CONNECTIONS_PER_ROUND, pace));
                match order[0] {
                    Listener::Plain => (first, second),
                    Listener::Proxy => (second, first),
                }
            })
            .collect::<Vec<_>>()
    };
    for listener in [Listener::Plain, Listener::Proxy] {
        round(&server, addr_of(listener), listener, WARMUP, None);
    }
    eprintln!("-- {FLAT_OUT_PAIRS} pairs flat out");
    let flat_out = pairs(FLAT_OUT_PAIRS, None);
    // The offered rate is a share of the slower listener's median rate flat out, on the
    // warm server: one cold or disturbed round does not set it.
    let median_rate = |pick: fn(&(Round, Round)) -> &Round| {
        let rates: Vec<f64> = flat_out.iter().map(|pair| pick(pair).rate()).collect();
        median(&rates).unwrap_or(0.0)
    };
    let rate = OFFERED_SHARE * median_rate(|pair| &pair.0).min(median_rate(|pair| &pair.1));
    let failed = flat_out.iter().any(|(a, b)| a.errors + b.errors > 0);
    if failed || !(rate.is_finite() && rate >= MIN_OFFERED_RATE) {
        return Err(io::Error::other(format!(
            "the flat-out rounds reached {rate:.0} connections a second at 80%{}: too few to \
             offer a load",
            if failed {
                ", with failed connections"
            } else {
                ""
            }
        )));
    }
    eprintln!("-- {PAIRS} pairs at {rate:.0} connections a second");
    let offered = pairs(PAIRS, Some(rate));
    Ok(Rounds {
        rate,
        offered,
        flat_out,
    })
}

/// Server run time so far, in seconds, to the nanosecond (schedstat's first field; the
/// server is one thread).
fn run_time(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// `n` connections to `addr`, one message each, over `SESSIONS` threads: flat out, or the
/// k-th started no sooner than k / `pace` seconds into the round.
fn round(
    server: &Server,
    addr: SocketAddr,
    listener: Listener,
    n: usize,
    pace: Option<f64>,
) -> Round {
    let message = smtp::message("");
    let next = AtomicUsize::new(0);
    let ready = Barrier::new(SESSIONS + 1);
    let tally = Mutex::new((0, 0, None::<String>));
    let (mut run_before, mut cpu_before, mut switches_before) = (0.0, 0.0, 0);
    // Set just before the threads are let go: the schedule every thread keeps.
    let start = OnceLock::new();
    thread::scope(|scope| {
        for _ in 0..SESSIONS {
            scope.spawn(|| {
                ready.wait();
                let began = start.get().copied().unwrap_or_else(Instant::now);
                let (mut delivered, mut errors, mut first) = (0, 0, None);
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= n {
                        break;
                    }
                    if let Some(rate) = pace {
                        // A connection behind its time starts at once: the round catches up.
                        let at = began + Duration::from_secs_f64(k as f64 / rate);
                        thread::sleep(at.saturating_duration_since(Instant::now()));
                    }
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
        switches_before = server.context_switches();
        start.get_or_init(Instant::now);
        ready.wait();
    });
    let wall = start.get().map_or(Duration::ZERO, Instant::elapsed);
    let (delivered, errors, first_error) = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    Round {
        delivered,
        errors,
        first_error,
        run_time: run_time(server.pid()) - run_before,
        cpu: server.cpu_seconds() - cpu_before,
        switches: server.context_switches() - switches_before,
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
    /// Seconds the rounds took, first connection to last.
    wall: f64,
    cpu: f64,
    switches: f64,
    delivered: f64,
}

impl Totals {
    fn of<'a>(rounds: impl Iterator<Item = &'a Round>) -> Totals {
        let mut totals = Totals {
            run_time: 0.0,
            wall: 0.0,
            cpu: 0.0,
            switches: 0.0,
            delivered: 0.0,
        };
        for round in rounds {
            totals.run_time += round.run_time;
            totals.wall += round.wall.as_secs_f64();
            totals.cpu += round.cpu;
            totals.switches += round.switches as f64;
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

    /// Connections a second over the rounds.
    fn rate(&self) -> f64 {
        self.delivered / self.wall.max(1e-9)
    }

    fn switches_per_connection(&self) -> f64 {
        self.switches / self.delivered.max(1.0)
    }
}

fn report(rounds: &Rounds, targets: &mut Targets) {
    let flat_out = pair_table(
        "Server CPU per connection, one message each, flat out",
        None,
        &rounds.flat_out,
    );
    let offered = pair_table(
        &format!(
            "Server CPU per connection, one message each, {} connections a second offered \
             (the judged pairs)",
            count(rounds.rate as u64)
        ),
        Some(rounds.rate),
        &rounds.offered,
    );
    targets.add(
        "PROXY header: server CPU per connection, proxy / plain (median of pairs, one load)",
        format!("{:.3}", offered.median),
        format!("<= {RATIO:.2}"),
        Verdict::from_check(offered.median <= RATIO && offered.errors == 0),
    );
    targets.add(
        "the same, flat out (shown, not judged)",
        format!("{:.3}", flat_out.median),
        "-",
        Verdict::Info,
    );
}

/// What a table of pairs showed.
struct PairFigures {
    median: f64,
    errors: usize,
}

/// Prints a table of `pairs`, each pair's CPU per connection and ratio, and the totals;
/// with the rate they were `offered`, what each listener's rounds reached of it.
fn pair_table(title: &str, offered: Option<f64>, pairs: &[(Round, Round)]) -> PairFigures {
    let mut table = Table::new(
        title,
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
    let rate = |r: &Round| count(r.rate() as u64);
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
    table.note(format!(
        "over all rounds: schedstat {:.1} us against {:.1} us per connection, ratio \
         {total_ratio:.3}; utime+stime {:.1} us against {:.1} us, ratio {ticks_ratio:.3}",
        proxy.run_time_per_connection() * 1e6,
        plain.run_time_per_connection() * 1e6,
        proxy.cpu_per_connection() * 1e6,
        plain.cpu_per_connection() * 1e6
    ));
    table.note(format!(
        "server context switches per connection (voluntary and not): {:.2} proxy, {:.2} plain",
        proxy.switches_per_connection(),
        plain.switches_per_connection()
    ));
    if let Some(rate) = offered {
        table.note(format!(
            "reached of the offered {} connections a second: {:.0}% plain, {:.0}% proxy",
            count(rate as u64),
            100.0 * plain.rate() / rate,
            100.0 * proxy.rate() / rate
        ));
    }
    let errors: usize = pairs.iter().map(|(a, b)| a.errors + b.errors).sum();
    if let Some(error) = pairs
        .iter()
        .flat_map(|(a, b)| [&a.first_error, &b.first_error])
        .find_map(|e| e.as_ref())
    {
        table.note(format!("{errors} connections failed; the first: {error}"));
    }
    table.print();
    PairFigures {
        median: median(&ratios).unwrap_or(f64::INFINITY),
        errors,
    }
}
