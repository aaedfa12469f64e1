//! `workers = N`: a supervisor and N worker processes.
//!
//! Each worker is this program again (`--worker`), the same single-threaded loop on the same
//! listeners. The supervisor binds them all, before the first worker starts: per listener, a
//! SO_REUSEPORT group with one socket per worker, in worker order (`bind::bind_groups`). It
//! keeps every socket open for its lifetime and hands worker `i` its own at each start, open
//! across exec and named in `BLACKHOLE_LISTENERS`; a worker binds nothing. So a dead
//! worker's sockets stay in their groups, in their places: the connections they queue wait
//! for its replacement, and every client address reaches one worker, the same on every
//! listener, whichever workers die. The supervisor serves nothing: it starts the workers,
//! restarts one that dies (within 100 ms, backing off to 30 s while it keeps dying), passes
//! SIGHUP on, and on SIGTERM/SIGINT stops every worker and then itself. It waits in a poll
//! loop like the workers, so it too never wakes while nothing happens (but for a
//! `--stop-after-messages` run, whose count it looks at every 20 ms).
//!
//! It also creates the workers' tally slots (worker `i` counts into slot `i`, a restarted
//! worker goes on in its predecessor's) and, with `metrics_listen`, the one listening socket
//! every worker serves scrapes from; it logs the summary of all slots on SIGUSR1 and at
//! exit, and carries out `--stop-after-messages` and `--stop-after-seconds` for all of them.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use socket2::Socket;

use super::tally_slots::{TALLY_SLOTS, TallySlots};
use crate::event_loop::witness::log_summary;
use crate::report::tally::Tally;

/// The first wait before a dead worker is started again, doubled while it keeps dying.
const RESTART_DELAY: Duration = Duration::from_millis(100);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A worker that lived this long had not been dying in a loop: its back-off starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long stopping workers get before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the messages of a `--stop-after-messages` run are counted.
const COUNT_EVERY: Duration = Duration::from_millis(20);

/// Set in a worker's environment: the supervisor's pid.
pub const SUPERVISOR_PID: &str = "BLACKHOLE_SUPERVISOR";
/// Set in a worker's environment: the text of the configuration the workers run.
pub const CONFIG_SNAPSHOT: &str = "BLACKHOLE_CONFIG";
/// Set in a worker's environment: its listening sockets' descriptors, in the order of the
/// configuration's listeners, separated by commas.
pub const LISTENER_FDS: &str = "BLACKHOLE_LISTENERS";
/// Set in a worker's environment: its number, which is its tally slot.
pub const WORKER_INDEX: &str = "BLACKHOLE_WORKER";
/// Set in a worker's environment: the descriptor of the metrics endpoint's socket.
pub const METRICS_FD: &str = "BLACKHOLE_METRICS";

/// How to start one worker.
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The configuration file's text as the workers run it; `None`: built-in defaults.
    pub config_text: Option<String>,
    /// The metrics endpoint's socket, which every worker serves.
    pub metrics: Option<TcpListener>,
}

/// What the supervisor keeps account of for its workers.
pub struct Oversight {
    /// The workers' tallies: worker `i`'s is slot `i`.
    pub slots: &'static TallySlots,
    /// The listeners' addresses and the rules' names, for the summary.
    pub listeners: Vec<String>,
    pub rules: Vec<String>,
    /// `--stop-after-messages`: stop every worker once they have finished this many.
    pub stop_after_messages: Option<u64>,
    /// `--stop-after-seconds`: stop every worker then.
    pub stop_at: Option<Instant>,
}

impl Oversight {
    fn log_summary(&self) {
        log_summary(self.slots.all(), &self.listeners, &self.rules);
    }

    /// Whether a `--stop-after` bound is reached.
    fn bound_reached(&self) -> bool {
        if self.stop_at.is_some_and(|at| Instant::now() >= at) {
            info!("--stop-after-seconds: the time is up");
            return true;
        }
        let Some(limit) = self.stop_after_messages else {
            return false;
        };
        let done: u64 = self.slots.all().iter().map(Tally::messages_answered).sum();
        if done >= limit {
            info!("--stop-after-messages: {done} messages have had their final reply");
        }
        done >= limit
    }

    /// When to look at the bounds next.
    fn next_look(&self) -> Option<Instant> {
        let counting = self
            .stop_after_messages
            .map(|_| Instant::now() + COUNT_EVERY);
        match (counting, self.stop_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

struct Worker {
    /// Its socket in each listener's group, kept open while it is dead or starting.
    sockets: Vec<TcpListener>,
    child: Option<Child>,
    started: Instant,
    /// Deaths in a row, each soon after its start.
    quick_deaths: u32,
    restart_at: Option<Instant>,
}

/// Runs the supervisor until SIGTERM or SIGINT (or a `--stop-after` bound), with one worker
/// for each entry of `sockets` (its listening sockets, from `bind::bind_groups`).
/// `check_config` is called on SIGHUP before the workers are told to reload (it logs what it
/// finds, and may give the summary new rule names); it returns the configuration text a
/// worker started from then on gets, or `None` to keep the one it has.
pub fn run(
    sockets: Vec<Vec<TcpListener>>,
    command: &mut WorkerCommand,
    mut oversight: Oversight,
    mut check_config: impl FnMut(&mut Oversight) -> Option<String>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1])?;
    poll.registry()
        .register(&mut signals, Token(0), Interest::READABLE)?;
    let now = Instant::now();
    let count = sockets.len();
    let mut workers: Vec<Worker> = sockets
        .into_iter()
        .map(|sockets| Worker {
            sockets,
            child: None,
            started: now,
            quick_deaths: 0,
            restart_at: Some(now),
        })
        .collect();
    info!("supervising {count} workers");
    let mut events = Events::with_capacity(8);
    loop {
        start_due(&mut workers, command, oversight.slots);
        let timeout = workers
            .iter()
            .filter_map(|w| w.restart_at)
            .chain(oversight.next_look())
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let pending = Pending::of(&mut signals);
        if pending.stop || oversight.bound_reached() {
            stop_all(&mut workers);
            oversight.log_summary();
            info!("stopped");
            return Ok(());
        }
        if pending.reap {
            reap_dead(&mut workers);
        }
        if pending.reload {
            if let Some(text) = check_config(&mut oversight) {
                command.config_text = Some(text);
            }
            signal_all(&workers, Signal::SIGHUP);
        }
        if pending.summary {
            oversight.log_summary();
        }
    }
}

/// The signals that came since the last look.
#[derive(Default)]
struct Pending {
    stop: bool,
    reload: bool,
    reap: bool,
    summary: bool,
}

impl Pending {
    fn of(signals: &mut Signals) -> Pending {
        let mut pending = Pending::default();
        for signal in signals.pending() {
            match signal {
                SIGHUP => pending.reload = true,
                SIGCHLD => pending.reap = true,
                SIGUSR1 => pending.summary = true,
                _ => pending.stop = true,
            }
        }
        pending
    }
}

fn start_due(workers: &mut [Worker], command: &WorkerCommand, slots: &TallySlots) {
    let now = Instant::now();
    for (index, worker) in workers.iter_mut().enumerate() {
        if worker.restart_at.is_none_or(|at| at > now) {
            continue;
        }
        worker.restart_at = None;
        worker.started = now;
        match spawn_worker(index, &worker.sockets, command, slots) {
            Ok(child) => {
                info!("worker {index} started as process {}", child.id());
                worker.child = Some(child);
            }
            Err(e) => {
                error!("cannot start worker {index}: {e}");
                schedule_restart(worker);
            }
        }
    }
}

/// Starts worker `index` with `sockets`, the tally slots and the metrics socket open across
/// exec (every other descriptor of the supervisor's is closed on exec) and named in its
/// environment.
fn spawn_worker(
    index: usize,
    sockets: &[TcpListener],
    command: &WorkerCommand,
    slots: &TallySlots,
) -> io::Result<Child> {
    let mut fds: Vec<RawFd> = sockets.iter().map(AsRawFd::as_raw_fd).collect();
    let mut named = String::new();
    for (i, fd) in fds.iter().enumerate() {
        let _ = write!(named, "{}{fd}", if i == 0 { "" } else { "," });
    }
    let mut worker_command = Command::new(&command.program);
    worker_command
        .args(&command.args)
        .env(SUPERVISOR_PID, std::process::id().to_string())
        .env(LISTENER_FDS, named)
        .env(WORKER_INDEX, index.to_string())
        .env(TALLY_SLOTS, slots.handle())
        .stdin(Stdio::null());
    fds.push(slots.raw_fd());
    if let Some(metrics) = &command.metrics {
        worker_command.env(METRICS_FD, metrics.as_raw_fd().to_string());
        fds.push(metrics.as_raw_fd());
    }
    if let Some(text) = &command.config_text {
        worker_command.env(CONFIG_SNAPSHOT, text);
    }
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls may be made: it calls fcntl, which is one, on descriptors open
    // in the supervisor and so in the child, and reads memory it owns, allocating nothing.
    unsafe {
        worker_command.pre_exec(move || {
            for &fd in &fds {
                // Only this child's descriptor table changes: the supervisor's copies stay
                // closed on exec for the other workers.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    worker_command.spawn()
}

fn reap_dead(workers: &mut [Worker]) {
    for (index, worker) in workers.iter_mut().enumerate() {
        let Some(child) = &mut worker.child else {
            continue;
        };
        let Ok(Some(status)) = child.try_wait() else {
            continue;
        };
        let pid = child.id();
        worker.child = None;
        let delay = schedule_restart(worker);
        warn!(
            "worker {index} (process {pid}) ended: {status}; starting it again in {} ms",
            delay.as_millis()
        );
    }
}

/// Schedules the next start of a dead worker and returns the wait: short after a long life,
/// longer after each quick death.
fn schedule_restart(worker: &mut Worker) -> Duration {
    if worker.started.elapsed() >= HEALTHY_AFTER {
        worker.quick_deaths = 0;
    }
    let delay = RESTART_DELAY
        .saturating_mul(1 << worker.quick_deaths.min(10))
        .min(RESTART_DELAY_MAX);
    worker.quick_deaths = worker.quick_deaths.saturating_add(1);
    worker.restart_at = Some(Instant::now() + delay);
    delay
}

fn signal_all(workers: &[Worker], signal: Signal) {
    for child in workers.iter().filter_map(|w| w.child.as_ref()) {
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
    }
}

/// SIGTERM to every worker (each sends what it has pending and exits), then waits; a worker
/// still there after the grace period is killed.
fn stop_all(workers: &mut [Worker]) {
    info!("stopping the workers");
    signal_all(workers, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    for worker in workers.iter_mut() {
        let Some(mut child) = worker.child.take() else {
            continue;
        };
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    warn!("worker process {} did not stop: killing it", child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

/// In a worker: stop when the supervisor goes away, even if it was killed and could not say
/// so. Returns false when the supervisor is already gone.
pub fn follow_supervisor() -> bool {
    let Some(supervisor) = std::env::var(SUPERVISOR_PID)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return true;
    };
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    nix::unistd::getppid().as_raw() == supervisor
}

/// In a worker: its number (its tally slot), from its supervisor.
pub fn worker_index() -> Result<usize, String> {
    std::env::var(WORKER_INDEX)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("--worker needs {WORKER_INDEX}, set by its supervisor"))
}

/// In a worker: the metrics endpoint's socket its supervisor passed on, if `addr` is set.
pub fn inherited_metrics(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, String> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let fd = std::env::var(METRICS_FD)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
        .filter(|&fd| fd > 2)
        .ok_or_else(|| format!("metrics_listen is set, but {METRICS_FD} names no descriptor"))?;
    adopt(fd, addr)
        .map(Some)
        .map_err(|e| format!("{METRICS_FD}: {fd}: {e}"))
}

/// In a worker: the pid of its supervisor, whose figures a scrape adds to its own.
pub fn supervisor_pid() -> Option<u32> {
    std::env::var(SUPERVISOR_PID).ok()?.parse().ok()
}

/// In a worker: the listening sockets its supervisor passed on, one for each of
/// `addresses` (the configuration's listeners, in order), each checked to be a listening
/// socket on that address.
pub fn inherited_listeners(addresses: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let named = std::env::var(LISTENER_FDS).map_err(|_| {
        format!("--worker is for a supervisor to start, with {LISTENER_FDS} naming its sockets")
    })?;
    let fds = parse_fds(&named)
        .filter(|fds| fds.len() == addresses.len())
        .ok_or_else(|| {
            format!(
                "{LISTENER_FDS}={named:?}: not {} distinct descriptors above 2",
                addresses.len()
            )
        })?;
    fds.into_iter()
        .zip(addresses)
        .map(|(fd, &addr)| adopt(fd, addr).map_err(|e| format!("{LISTENER_FDS}: {fd}: {e}")))
        .collect()
}

/// Descriptors separated by commas: none of the standard streams, none twice.
fn parse_fds(text: &str) -> Option<Vec<RawFd>> {
    let fds = text
        .split(',')
        .map(|fd| fd.parse::<RawFd>().ok().filter(|&fd| fd > 2))
        .collect::<Option<Vec<RawFd>>>()?;
    let distinct: HashSet<RawFd> = fds.iter().copied().collect();
    (distinct.len() == fds.len()).then_some(fds)
}

/// Takes over the inherited descriptor `fd`, if it is a socket listening on `addr` (any port
/// when `addr`'s is 0), non-blocking and closed on exec again.
fn adopt(fd: RawFd, addr: SocketAddr) -> Result<TcpListener, String> {
    // SAFETY: F_GETFD reads the descriptor's flags and nothing else, open or not.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err("not an open descriptor".to_owned());
    }
    // SAFETY: the descriptor is open, and the supervisor passed it on for this process to
    // own; `parse_fds` made sure no other entry names it, and nothing else here takes it.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let local = socket.local_addr().ok().and_then(|a| a.as_socket());
    let listening = socket.is_listener().unwrap_or(false);
    let on_addr = local.is_some_and(|local| {
        local.ip() == addr.ip() && (addr.port() == 0 || local.port() == addr.port())
    });
    if !(listening && on_addr) {
        return Err(format!(
            "not a socket listening on {addr} (it is on {local:?})"
        ));
    }
    socket
        .set_cloexec(true)
        .and_then(|()| socket.set_nonblocking(true))
        .map_err(|e| e.to_string())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::*;

    #[test]
    fn descriptors_are_a_list_of_distinct_ones_past_the_standard_streams() {
        assert_eq!(parse_fds("3"), Some(vec![3]));
        assert_eq!(parse_fds("7,4,12"), Some(vec![7, 4, 12]));
        for bad in [
            "",
            "3,",
            "3,3",
            "2",
            "0,5",
            "-4",
            "x",
            "3 ,4",
            "99999999999",
        ] {
            assert_eq!(parse_fds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_worker_adopts_only_a_socket_listening_on_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let adopted = adopt(listener.into_raw_fd(), addr).unwrap();
        assert_eq!(adopted.local_addr().unwrap(), addr);
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let port_picked = TcpListener::bind(any_port).unwrap();
        assert!(adopt(port_picked.into_raw_fd(), any_port).is_ok());

        // `adopted` still holds `addr`'s port: this one is on another.
        let elsewhere = TcpListener::bind(any_port).unwrap();
        assert!(
            adopt(elsewhere.into_raw_fd(), addr).is_err(),
            "another port"
        );
        let ipv6 = TcpListener::bind("[::1]:0").unwrap();
        assert!(
            adopt(ipv6.into_raw_fd(), any_port).is_err(),
            "another address"
        );
        let unbound = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        unbound.bind(&any_port.into()).unwrap();
        assert!(
            adopt(unbound.into_raw_fd(), any_port).is_err(),
            "not listening"
        );
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        assert!(adopt(file.into_raw_fd(), any_port).is_err(), "not a socket");
        drop(adopted);
    }
}
