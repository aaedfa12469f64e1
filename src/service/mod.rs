//! Running as a service: everything between a parsed command line and the event loop.
//!
//! It owns the process around the loop: the configuration checked (what `-t` checks), the
//! listeners bound (`bind`), the TLS files loaded (`tls_files`), the pidfile (`pidfile`),
//! root dropped (`privileges`), `-b` (`background`) and `workers = N` (`supervisor`). What
//! the loop is told, at start and on every SIGHUP, is decided in `settings` by pure
//! functions of the configuration.
//!
//! Everything a person can get wrong before the first connection (config, a port in use, a
//! user that does not exist) is told in one line naming the file, the option and the fix,
//! with a distinct exit code: 64 usage or config, 77 permission or an address in use.
//! It must not speak SMTP, must not touch a socket once it is handed to the loop, and must
//! not leave a file half-written where another program may read it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, error, info, warn};

use crate::config::{self, Config};
use crate::event_loop::server::{Listener, Reporting, Server, catch_signals};
use crate::report::tally::Tally;
use crate::smtp::rules;
use privileges::Identity;
use settings::{descriptor_limit, reloader, restart_needed, settings_for};
use supervisor::{Oversight, WorkerCommand};
use tally_slots::{TALLY_SLOTS, TallySlots};

pub use crate::event_loop::event_log::WRITER_FLAG as EVENT_LOG_WRITER_FLAG;

pub mod background;
pub mod bind;
pub mod pidfile;
pub mod privileges;
pub mod settings;
pub mod supervisor;
pub mod systemd;
pub mod tally_slots;
pub mod tls_files;

pub const EXIT_USAGE: u8 = 64;
pub const EXIT_SOFTWARE: u8 = 70;
pub const EXIT_PERMISSION: u8 = 77;

/// What the command line asked for.
pub struct Args {
    pub conf: Option<PathBuf>,
    pub test: bool,
    pub debug: bool,
    pub quiet: bool,
    pub background: bool,
    pub less_secure: bool,
    /// Started by a supervisor as one of its workers.
    pub worker: bool,
    /// `--seed`: overrides the `seed` option.
    pub seed: Option<u64>,
    /// `--stop-after-messages N`: stop cleanly once N messages had their final reply.
    pub stop_after_messages: Option<u64>,
    /// `--stop-after-seconds S`: stop cleanly S seconds after the start.
    pub stop_after_seconds: Option<u64>,
}

/// What `--help-config` prints: every configuration option, documented.
pub fn config_documentation() -> String {
    config::options::options_documentation()
}

/// Serves (or checks, or detaches) as `args` say, and says how it ended.
pub fn run(args: &Args) -> ExitCode {
    if args.background && background::is_detached() {
        background::leave_session();
    }
    init_logging(args);
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("blackhole: {message}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(args: &Args) {
    let level = if args.debug {
        LevelFilter::Debug
    } else if args.quiet {
        LevelFilter::Error
    } else {
        LevelFilter::Info
    };
    let config = simplelog::ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    let _ = simplelog::TermLogger::init(
        level,
        config,
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
}

type Failure = (u8, String);

/// Everything checked before serving: what `-t` checks, too.
struct Checked {
    config: Config,
    /// The config file's name, for messages.
    file: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    identity: Option<Identity>,
    /// What every random choice is drawn from.
    seed: u64,
}

fn check(args: &Args) -> Result<Checked, Failure> {
    let config = match (
        args.worker,
        std::env::var(supervisor::CONFIG_SNAPSHOT),
        &args.conf,
    ) {
        // A worker reads the configuration its supervisor runs, not whatever the file says
        // now: a worker restarted after an edit must serve the sockets it inherits as the
        // listeners they were bound for.
        (true, Ok(text), Some(path)) => config::parse(&text, path),
        _ => config::load(args.conf.as_deref()),
    }
    .map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let file = config.source.as_ref().map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    let tls = tls_files::server_config(&config, &file).map_err(|e| (EXIT_USAGE, e))?;
    let identity = privileges::resolve(config.user.as_deref(), config.group.as_deref(), &file)
        .map_err(|e| (e.exit_code, e.message))?;
    Ok(Checked {
        seed: seed(args, &config),
        config,
        file,
        tls,
        identity,
    })
}

fn start(args: &Args) -> Result<(), Failure> {
    let checked = check(args)?;
    let (config, file) = (&checked.config, &checked.file);
    if !args.worker {
        if args.less_secure {
            info!(
                "-ls has no effect: the TLS library offers only secure protocol versions and ciphers"
            );
        }
        if config.tls_dhparams.is_some() {
            warn!(
                "{file}: option `tls_dhparams` is unused: TLS key exchange is ECDHE, which needs no DH parameters"
            );
        }
    }
    if args.test {
        println!("{file}: configuration OK");
        return Ok(());
    }
    if args.background && !background::is_detached() {
        let pid = background::start_background()?;
        println!("blackhole: running in the background as process {pid}");
        return Ok(());
    }
    if args.worker {
        return serve(args, checked, true);
    }
    info!(
        "random choices seeded with {seed}: replay a run with --seed {seed}",
        seed = checked.seed
    );
    if let Some(path) = &config.pidfile {
        pidfile::check_not_running(path, file).map_err(|e| (EXIT_PERMISSION, e))?;
    }
    if config.workers > 1 {
        return supervise(args, &checked);
    }
    serve(args, checked, false)
}

/// One process serving: catch signals, bind (a worker inherits its sockets instead), write the
/// pidfile, drop root, serve until told to stop.
fn serve(args: &Args, checked: Checked, worker: bool) -> Result<(), Failure> {
    let Checked {
        config,
        file,
        tls,
        identity,
        seed,
    } = checked;
    // Signals are caught from here on: before any port answers, so that a stop or reload
    // sent as soon as one does is carried out, not fatal.
    let signals =
        catch_signals().map_err(|e| (EXIT_SOFTWARE, format!("cannot catch signals: {e}")))?;
    let listeners = if worker {
        inherited_listeners(&config)?
    } else {
        bind_listeners(&config)?
    };
    let reporting = reporting(args, &config, worker)?;
    let settings = settings_for(&config, tls.is_some(), descriptor_limit());
    let max_connections = settings.max_connections;
    let reload = reloader(args.conf.clone(), config.clone(), tls.is_some());
    let mut server = Server::new(listeners, signals, tls, settings, seed, reload, reporting)
        .map_err(|e| (EXIT_SOFTWARE, format!("cannot start the event loop: {e}")))?;
    let pidfile = config.pidfile.clone().filter(|_| !worker);
    if let Some(path) = &pidfile {
        pidfile::write(path, &file).map_err(|e| (EXIT_PERMISSION, e))?;
        if let Some(identity) = &identity {
            pidfile::hand_over(path, identity);
        }
    }
    let result = (|| {
        if let Some(identity) = &identity {
            privileges::become_identity(identity).map_err(|e| (e.exit_code, e.message))?;
        }
        // After the identity change, which clears the parent-death signal.
        if worker && !supervisor::follow_supervisor() {
            return Err((EXIT_SOFTWARE, "the supervisor has gone".to_owned()));
        }
        // As the serving user: the writer, and the file it creates, are that user's.
        server.open_event_log().map_err(|e| {
            (
                EXIT_SOFTWARE,
                format!("event_log: cannot start its writer: {e}"),
            )
        })?;
        info!("serving at most {max_connections} connections at once");
        if background::is_detached() {
            background::release_streams()
                .map_err(|e| (EXIT_SOFTWARE, format!("cannot detach: {e}")))?;
        }
        server
            .run()
            .map_err(|e| (EXIT_SOFTWARE, format!("event loop failed: {e}")))
    })();
    if let Some(path) = &pidfile {
        pidfile::remove(path);
    }
    result
}

/// What the loop counts into and reports through. One process: a tally slot of its own, the
/// metrics socket bound here, the `--stop-after` bounds and summaries. A worker: its slot
/// and the metrics socket from its supervisor, which keeps the bounds and the summaries.
fn reporting(args: &Args, config: &Config, worker: bool) -> Result<Reporting, Failure> {
    if worker {
        let slots = std::env::var(TALLY_SLOTS)
            .map_err(|_| format!("--worker needs {TALLY_SLOTS}, set by its supervisor"))
            .and_then(|handle| TallySlots::inherit(&handle).map_err(|e| e.to_string()))
            .map_err(|e| (EXIT_USAGE, e))?;
        let slot = supervisor::worker_index().map_err(|e| (EXIT_USAGE, e))?;
        let metrics =
            supervisor::inherited_metrics(config.metrics_listen).map_err(|e| (EXIT_USAGE, e))?;
        return Ok(Reporting {
            tallies: leak(slots),
            slot,
            metrics: metrics.map(mio::net::TcpListener::from_std),
            other_pids: supervisor::supervisor_pid().into_iter().collect(),
            stop_after_messages: None,
            stop_after_seconds: None,
            summaries: false,
        });
    }
    let slots = create_slots(1)?;
    let metrics = config.metrics_listen.map(bind_metrics).transpose()?;
    Ok(Reporting {
        tallies: leak(slots),
        slot: 0,
        metrics: metrics.map(mio::net::TcpListener::from_std),
        other_pids: Vec::new(),
        stop_after_messages: args.stop_after_messages,
        stop_after_seconds: args.stop_after_seconds,
        summaries: true,
    })
}

/// Shared memory for `count` processes' tallies.
fn create_slots(count: usize) -> Result<TallySlots, Failure> {
    TallySlots::create(count).map_err(|e| {
        (
            EXIT_SOFTWARE,
            format!("cannot make room for the counters: {e}"),
        )
    })
}

/// The tallies, for the rest of the process's life: the loop and the supervisor read them
/// until they exit.
fn leak(slots: TallySlots) -> &'static [Tally] {
    Box::leak(Box::new(slots)).all()
}

/// `metrics_listen`, bound, and said so.
fn bind_metrics(addr: SocketAddr) -> Result<std::net::TcpListener, Failure> {
    let socket = bind::bind_metrics(addr).map_err(|e| (e.exit_code as u8, e.message))?;
    if let Ok(addr) = socket.local_addr() {
        info!("serving metrics on http://{addr}/metrics");
    }
    Ok(socket)
}

/// A single process's listeners, bound.
fn bind_listeners(config: &Config) -> Result<Vec<Listener>, Failure> {
    let fqdn = config.mail_name();
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for spec in &config.listeners {
        let socket = bind::bind(spec).map_err(|e| (e.exit_code as u8, e.message))?;
        if let Ok(addr) = socket.local_addr() {
            log_listening(spec.tls, addr, &fqdn);
        }
        listeners.push(Listener {
            socket,
            tls: spec.tls,
        });
    }
    Ok(listeners)
}

/// A worker's listeners: the sockets its supervisor bound for it.
fn inherited_listeners(config: &Config) -> Result<Vec<Listener>, Failure> {
    let addresses: Vec<SocketAddr> = config.listeners.iter().map(|spec| spec.addr).collect();
    let sockets = supervisor::inherited_listeners(&addresses).map_err(|e| (EXIT_USAGE, e))?;
    Ok(sockets
        .into_iter()
        .zip(&config.listeners)
        .map(|(socket, spec)| Listener {
            socket: mio::net::TcpListener::from_std(socket),
            tls: spec.tls,
        })
        .collect())
}

fn log_listening(tls: bool, addr: SocketAddr, fqdn: &str) {
    let kind = if tls { "SMTPS" } else { "SMTP" };
    info!("listening for {kind} on {addr} as {fqdn}");
}

/// `workers = N`: bind every worker's sockets, write the pidfile, then supervise.
fn supervise(args: &Args, checked: &Checked) -> Result<(), Failure> {
    let (config, file) = (&checked.config, &checked.file);
    // Here, once, before any worker starts, and kept until the supervisor ends: see
    // `supervisor`. An address in use or not permitted is reported now, with its exit code.
    let sockets = bind::bind_groups(&config.listeners, config.workers)
        .map_err(|e| (e.exit_code as u8, e.message))?;
    let fqdn = config.mail_name();
    for (spec, socket) in config
        .listeners
        .iter()
        .zip(sockets.first().into_iter().flatten())
    {
        if let Ok(addr) = socket.local_addr() {
            log_listening(spec.tls, addr, &fqdn);
        }
    }
    let metrics = config.metrics_listen.map(bind_metrics).transpose()?;
    let oversight = oversight(args, config, &sockets)?;
    if let Some(path) = &config.pidfile {
        pidfile::write(path, file).map_err(|e| (EXIT_PERMISSION, e))?;
    }
    if background::is_detached() {
        background::release_streams()
            .map_err(|e| (EXIT_SOFTWARE, format!("cannot detach: {e}")))?;
    }
    let mut command = worker_command(args, config, checked.seed, metrics)?;
    let conf = args.conf.clone();
    let running = config.clone();
    let result = supervisor::run(sockets, &mut command, oversight, move |oversight| {
        match config::load(conf.as_deref()) {
            Ok(new) => {
                let restart = restart_needed(&running, &new);
                if restart.is_empty() {
                    info!("configuration checked: telling the workers to reload");
                    oversight.rules = rules::names(&new.rules);
                    return new.source.as_deref().and_then(config_text);
                }
                warn!(
                    "reload: {} changed; that takes a restart, and a worker started again \
                     meanwhile keeps the running configuration",
                    restart.join(", ")
                );
            }
            Err(e) => error!("reload: {e}; the workers keep their configuration"),
        }
        None
    })
    .map_err(|e| (EXIT_SOFTWARE, format!("supervisor failed: {e}")));
    if let Some(path) = &config.pidfile {
        pidfile::remove(path);
    }
    result
}

/// The workers' tally slots, and what the supervisor needs to sum them up and watch them.
fn oversight(
    args: &Args,
    config: &Config,
    sockets: &[Vec<std::net::TcpListener>],
) -> Result<Oversight, Failure> {
    let slots = create_slots(sockets.len())?;
    let listeners = sockets.first().map_or_else(Vec::new, |first| {
        first
            .iter()
            .map(|s| {
                s.local_addr()
                    .map_or_else(|_| "?".to_owned(), |a| a.to_string())
            })
            .collect()
    });
    let started = std::time::Instant::now();
    Ok(Oversight {
        slots: Box::leak(Box::new(slots)),
        listeners,
        rules: rules::names(&config.rules),
        stop_after_messages: args.stop_after_messages,
        stop_at: args
            .stop_after_seconds
            .map(|s| started + std::time::Duration::from_secs(s)),
    })
}

/// This program again, as a worker reading the same configuration.
fn worker_command(
    args: &Args,
    config: &Config,
    seed: u64,
    metrics: Option<std::net::TcpListener>,
) -> Result<WorkerCommand, Failure> {
    let program = std::env::current_exe().map_err(|e| {
        (
            EXIT_SOFTWARE,
            format!("cannot find this program to start workers: {e}"),
        )
    })?;
    let mut worker_args: Vec<OsString> = vec!["--worker".into()];
    if let Some(source) = &config.source {
        worker_args.push("-c".into());
        worker_args.push(source.clone().into_os_string());
    }
    if args.debug {
        worker_args.push("-d".into());
    }
    if args.quiet {
        worker_args.push("-q".into());
    }
    // Every worker draws from the one seed that was logged, so that it replays them all.
    worker_args.push("--seed".into());
    worker_args.push(seed.to_string().into());
    Ok(WorkerCommand {
        program,
        args: worker_args,
        config_text: config.source.as_deref().and_then(config_text),
        metrics,
    })
}

/// The text of a config file, for the workers' snapshot.
fn config_text(path: &std::path::Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The seed every random choice is drawn from: `--seed`, else the `seed` option, else a new
/// one, different at every start, within the range the option takes so that it can be given
/// back to replay the run.
fn seed(args: &Args, config: &Config) -> u64 {
    args.seed.or(config.seed).unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = (nanos as u64) ^ ((nanos >> 64) as u64) ^ (u64::from(std::process::id()) << 40);
        mixed & (i64::MAX as u64)
    })
}
