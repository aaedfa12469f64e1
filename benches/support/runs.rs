//! Measured runs of a load against servers: CPU counters read around each run, figures per
//! 1,000 messages, runs interleaved between servers, medians.
//!
//! The load itself is a closure (the bench's own generator or smtp-source), so both
//! throughput sections measure alike. Server CPU is utime+stime from /proc/PID/stat, as
//! `throughput.py` reads it.

use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::procfs;
use super::server::Server;
use super::stats::median;

/// What one drive of a server delivered.
pub struct Drive {
    pub wall: Duration,
    pub delivered: usize,
    pub errors: usize,
    /// The first thing that went wrong, if anything did.
    pub problem: Option<String>,
}

/// CPU counters read just before and just after a drive. `children` is the CPU of this
/// process's children that have been waited for: across a drive it grows by exactly
/// smtp-source's CPU (the servers are children too, but are reaped only when stopped).
struct Counters {
    server: f64,
    server_switches: u64,
    own: f64,
    children: f64,
    machine_busy: f64,
}

impl Counters {
    fn read(server: &Server) -> Counters {
        let (own, children) = procfs::own_cpu_seconds();
        Counters {
            server: server.cpu_seconds(),
            server_switches: server.context_switches(),
            own,
            children,
            machine_busy: procfs::machine_cpu_seconds().0,
        }
    }
}

/// One measured run.
struct Sample {
    msgs_per_s: f64,
    server_cpu_per_1k: f64,
    /// Server CPU over wall time: near 1 means the single-threaded server was the limit.
    server_busy: f64,
    client_cpu_per_1k: f64,
    /// Busy CPU on the machine that neither the server nor the client used: interference.
    other_cpu: f64,
    /// Server context switches per message: about how often it went to sleep in its poll
    /// (or was preempted) per message, a hint at how many wake-ups a message costs.
    switches_per_msg: f64,
    errors: usize,
    problem: Option<String>,
}

impl Sample {
    fn new(before: &Counters, after: &Counters, drive: Drive) -> Sample {
        let server = after.server - before.server;
        let client = (after.own - before.own) + (after.children - before.children);
        let wall = drive.wall.as_secs_f64().max(1e-9);
        let thousands = (drive.delivered.max(1)) as f64 / 1000.0;
        Sample {
            msgs_per_s: drive.delivered as f64 / wall,
            server_cpu_per_1k: server / thousands,
            server_busy: server / wall,
            client_cpu_per_1k: client / thousands,
            other_cpu: (after.machine_busy - before.machine_busy) - server - client,
            switches_per_msg: (after.server_switches - before.server_switches) as f64
                / drive.delivered.max(1) as f64,
            errors: drive.errors,
            problem: drive.problem,
        }
    }
}

/// The medians of one server's runs (errors summed, the first problem kept).
pub struct Summary {
    pub msgs_per_s: f64,
    pub server_cpu_per_1k: f64,
    pub server_busy: f64,
    pub client_cpu_per_1k: f64,
    pub other_cpu: f64,
    pub switches_per_msg: f64,
    pub errors: usize,
    pub problem: Option<String>,
}

impl Summary {
    fn of(samples: Vec<Sample>) -> Summary {
        let med = |f: fn(&Sample) -> f64| {
            median(&samples.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        Summary {
            msgs_per_s: med(|s| s.msgs_per_s),
            server_cpu_per_1k: med(|s| s.server_cpu_per_1k),
            server_busy: med(|s| s.server_busy),
            client_cpu_per_1k: med(|s| s.client_cpu_per_1k),
            other_cpu: med(|s| s.other_cpu),
            switches_per_msg: med(|s| s.switches_per_msg),
            errors: samples.iter().map(|s| s.errors).sum(),
            problem: samples.into_iter().find_map(|s| s.problem),
        }
    }
}

/// How many messages, how often.
pub struct Series {
    pub messages: usize,
    /// Messages sent to each server before measuring, so that its tables have grown.
    pub warmup: usize,
    pub runs: usize,
    /// Between runs, for the previous run's closing connections to settle.
    pub pause: Duration,
    /// Before each run, wait up to this long for the machine to be quiet (zero: don't).
    pub quiet_wait: Duration,
}

/// Busy share of all CPUs under which the machine counts as quiet, as `benchlib.py` has it.
const QUIET: f64 = 0.15;

/// Waits until the machine's busy share over half a second is under `QUIET`, at most `limit`:
/// other work on a shared 2-core machine takes CPU from the server or the client mid-run.
/// Returns the last busy share seen.
fn wait_for_quiet(limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let (busy0, total0) = procfs::machine_cpu_seconds();
        thread::sleep(Duration::from_millis(500));
        let (busy1, total1) = procfs::machine_cpu_seconds();
        let share = (busy1 - busy0) / (total1 - total0).max(1e-9);
        if share < QUIET || Instant::now() >= deadline {
            return share;
        }
    }
}

/// Warms every server up, then drives them `series.runs` times in turn (blackhole,
/// smtp-sink, blackhole, ...), so slow drifts of the machine hit both alike. One summary per
/// server, in the order given.
pub fn drive_in_turn(
    series: &Series,
    label: &str,
    servers: &[Server],
    mut drive: impl FnMut(SocketAddr, usize) -> io::Result<Drive>,
) -> io::Result<Vec<Summary>> {
    for server in servers {
        if series.warmup > 0 {
            drive(server.addr, series.warmup)?;
        }
    }
    let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
    for run in 1..=series.runs {
        for (server, samples) in servers.iter().zip(&mut samples) {
            eprintln!("   {label}: {} run {run}/{}", server.name, series.runs);
            thread::sleep(series.pause);
            if !series.quiet_wait.is_zero() {
                let busy = wait_for_quiet(series.quiet_wait);
                if busy >= QUIET {
                    eprintln!(
                        "   WARNING: machine still {:.0}% busy after {} s; figures may be skewed",
                        busy * 100.0,
                        series.quiet_wait.as_secs()
                    );
                }
            }
            let before = Counters::read(server);
            let outcome = drive(server.addr, series.messages)?;
            let after = Counters::read(server);
            samples.push(Sample::new(&before, &after, outcome));
        }
    }
    Ok(samples.into_iter().map(Summary::of).collect())
}
