//! The `blackhole` command: arguments, logging, configuration, then the event loop.
//!
//! Everything a person can get wrong before the first connection (arguments, config, a
//! port in use) is told here in one line naming the file, the option and the fix, with a
//! distinct exit code: 64 usage or config, 77 permission or an address in use.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, info, warn};

use blackhole::config::{self, Config};
use blackhole::listener;
use blackhole::server::{Listener, Server};
use blackhole::session::Policy;
use blackhole::tls;

const EXIT_USAGE: u8 = 64;
const EXIT_SOFTWARE: u8 = 70;
const EXIT_PERMISSION: u8 = 77;

const HELP: &str = "\
blackhole: an SMTP server that accepts mail and throws it away

Usage: blackhole [-c FILE] [-t] [-d] [-b] [-q] [-ls] [-v] [-h]

  -c, --conf FILE      read FILE (TOML, or the original's key = value format);
                       without it: ./blackhole.toml, else /etc/blackhole.toml,
                       else built-in defaults
  -t, --test           check the configuration and exit (0 good, 64 bad)
  -d, --debug          log every line received and sent
  -b, --background     detach into the background (not available in this version)
  -q, --quiet          log errors only
  -ls, --less-secure   accepted for compatibility; no effect (see README)
  -v, --version        print the version and exit
  -h, --help           print this help and exit

Exit codes: 0 clean, 64 usage or configuration, 77 permission or address in use.
";

/// What the command line asked for.
struct Args {
    conf: Option<PathBuf>,
    test: bool,
    debug: bool,
    quiet: bool,
    less_secure: bool,
}

enum Command {
    Serve(Args),
    Print(String),
}

fn parse_args() -> Result<Command, String> {
    // `-ls` is one flag, not `-l -s`: spell it the long way before parsing.
    let raw = std::env::args_os()
        .skip(1)
        .map(|a| {
            if a == "-ls" {
                "--less-secure".into()
            } else {
                a
            }
        })
        .collect();
    let mut args = pico_args::Arguments::from_vec(raw);
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Print(HELP.into()));
    }
    if args.contains(["-v", "--version"]) {
        return Ok(Command::Print(format!(
            "blackhole {}\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if args.contains(["-b", "--background"]) {
        return Err(
            "-b/--background is not available in this version: run blackhole in the \
                    foreground under a service manager instead"
                .into(),
        );
    }
    let parsed = Args {
        conf: args
            .opt_value_from_os_str(["-c", "--conf"], |s| Ok::<_, String>(PathBuf::from(s)))
            .map_err(|e| format!("{e}: -c needs a file name"))?,
        test: args.contains(["-t", "--test"]),
        debug: args.contains(["-d", "--debug"]),
        quiet: args.contains(["-q", "--quiet"]),
        less_secure: args.contains("--less-secure"),
    };
    let rest = args.finish();
    if let Some(unknown) = rest.first() {
        return Err(format!(
            "unknown argument {}: see blackhole --help",
            unknown.to_string_lossy()
        ));
    }
    Ok(Command::Serve(parsed))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Command::Serve(args)) => args,
        Ok(Command::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("blackhole: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(&args);
    match run(&args) {
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

fn run(args: &Args) -> Result<(), Failure> {
    let config = config::load(args.conf.as_deref()).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let file = config.source.as_ref().map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    refuse_unavailable(&config, &file)?;
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
    let tls = tls::server_config(&config, &file).map_err(|e| (EXIT_USAGE, e))?;
    if args.test {
        println!("{file}: configuration OK");
        return Ok(());
    }

    let fqdn = config.mail_name();
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for spec in &config.listeners {
        let socket = listener::bind(spec).map_err(|e| (e.exit_code as u8, e.message))?;
        let policy = Policy::new(
            fqdn.clone(),
            spec.mode.unwrap_or(config.mode),
            spec.delay.or(config.delay),
            config.dynamic_switch && !spec.has_flags(),
            config.max_message_size,
            tls.is_some() && !spec.tls,
        );
        if let Ok(addr) = socket.local_addr() {
            let kind = if spec.tls { "SMTPS" } else { "SMTP" };
            info!("listening for {kind} on {addr} as {fqdn}");
        }
        listeners.push(Listener {
            socket,
            policy,
            tls: spec.tls,
        });
    }
    if let Some(pidfile) = &config.pidfile {
        std::fs::write(pidfile, format!("{}\n", std::process::id())).map_err(|e| {
            (
                EXIT_PERMISSION,
                format!(
                    "{file}: option `pidfile`: cannot write {}: {e}; choose a writable path",
                    pidfile.display()
                ),
            )
        })?;
    }
    let max_connections = connection_limit(&config, listeners.len());
    info!("serving at most {max_connections} connections at once");
    let result = Server::new(listeners, tls, max_connections, config.timeout_secs, seed())
        .and_then(|mut server| server.run())
        .map_err(|e| (EXIT_SOFTWARE, format!("event loop failed: {e}")));
    if let Some(pidfile) = &config.pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    result
}

/// Options this version parses but cannot act on yet: refusing them is better than
/// silently serving something else than was asked for.
fn refuse_unavailable(config: &Config, file: &str) -> Result<(), Failure> {
    let refuse =
        |option: &str, why: &str| Err((EXIT_USAGE, format!("{file}: option `{option}`: {why}")));
    if config.workers > 1 {
        return refuse(
            "workers",
            "more than one worker is not available in this version: set workers = 1 and run one blackhole per core on its own port",
        );
    }
    if config.user.is_some() || config.group.is_some() {
        return refuse(
            if config.user.is_some() {
                "user"
            } else {
                "group"
            },
            "switching user is not available in this version: remove the option and start blackhole as the user it should run as",
        );
    }
    Ok(())
}

/// Descriptors a process needs besides its connections: standard streams, the poll
/// instance, the signal pipe, a few for files, plus one per listener.
const RESERVED_DESCRIPTORS: u64 = 16;

/// `max_connections`, or as many connections as the descriptor limit leaves room for.
fn connection_limit(config: &Config, listeners: usize) -> usize {
    let fds = descriptor_limit();
    let room = fds.map(|n| {
        n.saturating_sub(RESERVED_DESCRIPTORS + listeners as u64)
            .max(1)
    });
    match (config.max_connections, room) {
        (Some(max), Some(room)) if u64::from(max) > room => {
            warn!(
                "max_connections = {max} is more than the descriptor limit ({}) allows: \
                 past {room} connections, new clients wait until one closes; raise it with ulimit -n",
                fds.unwrap_or(0)
            );
            max as usize
        }
        (Some(max), _) => max as usize,
        (None, Some(room)) => room as usize,
        (None, None) => 1024,
    }
}

/// The soft limit on open files, from /proc (Linux).
fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A seed for replies chosen at random and message ids: different on every start.
fn seed() -> u128 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos ^ (u128::from(std::process::id()) << 64)
}
