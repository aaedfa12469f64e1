//! `workers = N`: a supervisor and N worker processes.
//!
//! Each worker is this program again (`--worker`), the same single-threaded loop on the same
//! listeners: every worker binds them with SO_REUSEPORT and the kernel spreads new
//! connections over the workers. The supervisor serves nothing: it starts the workers,
//! restarts one that dies (within 100 ms, backing off to 30 s while it keeps dying), passes
//! SIGHUP on, and on SIGTERM/SIGINT stops every worker and then itself. It waits in a poll
//! loop like the workers, so it too never wakes while nothing happens.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// The first wait before a dead worker is started again, doubled while it keeps dying.
const RESTART_DELAY: Duration = Duration::from_millis(100);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A worker that lived this long had not been dying in a loop: its back-off starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long stopping workers get before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Set in a worker's environment: the supervisor's pid.
pub const SUPERVISOR_PID: &str = "BLACKHOLE_SUPERVISOR";
/// Set in a worker's environment: the text of the configuration the workers run.
pub const CONFIG_SNAPSHOT: &str = "BLACKHOLE_CONFIG";

/// How to start one worker.
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The configuration file's text as the workers run it; `None`: built-in defaults.
    pub config_text: Option<String>,
}

struct Worker {
    child: Option<Child>,
    started: Instant,
    /// Deaths in a row, each soon after its start.
    quick_deaths: u32,
    restart_at: Option<Instant>,
}

/// Runs the supervisor until SIGTERM or SIGINT. `check_config` is called on SIGHUP before the
/// workers are told to reload (it logs what it finds); it returns the configuration text a
/// worker started from then on gets, or `None` to keep the one it has.
pub fn run(
    count: u32,
    command: &mut WorkerCommand,
    mut check_config: impl FnMut() -> Option<String>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD])?;
    poll.registry()
        .register(&mut signals, Token(0), Interest::READABLE)?;
    let now = Instant::now();
    let mut workers: Vec<Worker> = (0..count)
        .map(|_| Worker {
            child: None,
            started: now,
            quick_deaths: 0,
            restart_at: Some(now),
        })
        .collect();
    info!("supervising {count} workers");
    let mut events = Events::with_capacity(8);
    loop {
        start_due(&mut workers, command);
        let timeout = workers
            .iter()
            .filter_map(|w| w.restart_at)
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let (mut stop, mut reload, mut reap) = (false, false, false);
        for signal in signals.pending() {
            match signal {
                SIGHUP => reload = true,
                SIGCHLD => reap = true,
                _ => stop = true,
            }
        }
        if stop {
            stop_all(&mut workers);
            info!("stopped");
            return Ok(());
        }
        if reap {
            reap_dead(&mut workers);
        }
        if reload {
            if let Some(text) = check_config() {
                command.config_text = Some(text);
            }
            signal_all(&workers, Signal::SIGHUP);
        }
    }
}

fn start_due(workers: &mut [Worker], command: &WorkerCommand) {
    let now = Instant::now();
    for (index, worker) in workers.iter_mut().enumerate() {
        if worker.restart_at.is_none_or(|at| at > now) {
            continue;
        }
        worker.restart_at = None;
        worker.started = now;
        let mut worker_command = Command::new(&command.program);
        worker_command
            .args(&command.args)
            .env(SUPERVISOR_PID, std::process::id().to_string())
            .stdin(Stdio::null());
        if let Some(text) = &command.config_text {
            worker_command.env(CONFIG_SNAPSHOT, text);
        }
        match worker_command.spawn() {
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
