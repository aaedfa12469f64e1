//! The `blackhole` command: reads the command line and hands it to [`service::run`].
//!
//! A command line that does not parse is told here in one line, with exit code 64;
//! everything after (configuration, binding, serving) is the service's. Started as the
//! event log's writer (a hidden first argument), it is that and nothing else.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use blackhole::service::{self, Args, EXIT_USAGE};

mod event_log_writer;

/// The hidden first argument the event log starts its writer with, the path following.
const EVENT_LOG_WRITER: &str = service::EVENT_LOG_WRITER_FLAG;
/// The longest bounded run, in seconds: a year.
const MAX_STOP_AFTER_SECONDS: u64 = 365 * 24 * 3600;

const HELP: &str = "\
blackhole: an SMTP server that accepts mail and throws it away

Usage: blackhole [-c FILE] [-t] [-d] [-b] [-q] [--seed N] [-ls] [-v] [-h]
                 [--stop-after-messages N] [--stop-after-seconds S]

  -c, --conf FILE        read FILE (TOML, or the original's key = value format);
                         without it: ./blackhole.toml, else /etc/blackhole.toml,
                         else built-in defaults
  -t, --test             check the configuration, certificate, key, user and group,
                         and exit (0 good, 64 bad)
  -d, --debug            log every line received and sent
  -b, --background       detach into the background once listening
  -q, --quiet            log errors only
  --seed N               seed every random choice with N (overrides the seed
                         option): the same connections and commands get the
                         same replies; without either, the seed is logged
  --stop-after-messages N
                         stop cleanly (pending replies sent) once N messages
                         have had their final reply: a bounded run to profile
  --stop-after-seconds S stop cleanly S seconds after the start (1 to 31536000)
  -ls, --less-secure     accepted for compatibility; no effect (see README)
  -v, --version          print the version and exit
  -h, --help             print this help and exit
  --help-config          print the documentation of every configuration option
  --print-systemd-unit   print a systemd unit for running blackhole as a service

Signals: SIGTERM/SIGINT stop (pending replies are sent first); SIGHUP re-reads the
configuration and reopens the event log; SIGUSR1 logs a summary.
Exit codes: 0 clean, 64 usage or configuration, 77 permission or address in use.
";

/// A seed as `--seed` takes it: the same numbers the `seed` option takes.
fn parse_seed(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(|| "not a seed".to_owned())
}

/// A count as `--stop-after-messages` takes it: a whole number from 1.
fn parse_positive(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "not a positive whole number".to_owned())
}

/// Seconds as `--stop-after-seconds` takes them: from 1 to a year.
fn parse_run_seconds(text: &str) -> Result<u64, String> {
    Some(parse_positive(text)?)
        .filter(|&n| n <= MAX_STOP_AFTER_SECONDS)
        .ok_or_else(|| "too long".to_owned())
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
    if args.contains("--help-config") {
        return Ok(Command::Print(service::config_documentation()));
    }
    if args.contains("--print-systemd-unit") {
        return Ok(Command::Print(service::systemd::UNIT.into()));
    }
    let parsed = Args {
        conf: args
            .opt_value_from_os_str(["-c", "--conf"], |s| Ok::<_, String>(PathBuf::from(s)))
            .map_err(|e| format!("{e}: -c needs a file name"))?,
        test: args.contains(["-t", "--test"]),
        debug: args.contains(["-d", "--debug"]),
        quiet: args.contains(["-q", "--quiet"]),
        background: args.contains(["-b", "--background"]),
        less_secure: args.contains("--less-secure"),
        worker: args.contains("--worker"),
        seed: args
            .opt_value_from_fn("--seed", parse_seed)
            .map_err(|e| format!("{e}: --seed needs a whole number from 0 to {}", i64::MAX))?,
        stop_after_messages: args
            .opt_value_from_fn("--stop-after-messages", parse_positive)
            .map_err(|e| format!("{e}: --stop-after-messages needs a whole number from 1"))?,
        stop_after_seconds: args
            .opt_value_from_fn("--stop-after-seconds", parse_run_seconds)
            .map_err(|e| {
                format!(
                    "{e}: --stop-after-seconds needs a whole number of seconds \
                     from 1 to {MAX_STOP_AFTER_SECONDS}"
                )
            })?,
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

/// The path after [`EVENT_LOG_WRITER`], when that is the first argument.
fn event_log_writer_path() -> Option<Result<OsString, String>> {
    let mut raw = std::env::args_os().skip(1);
    if raw.next()? != EVENT_LOG_WRITER {
        return None;
    }
    Some(
        raw.next()
            .ok_or_else(|| format!("{EVENT_LOG_WRITER} needs a path")),
    )
}

fn main() -> ExitCode {
    let command = match event_log_writer_path() {
        Some(Ok(path)) => return event_log_writer::run(&path),
        Some(Err(message)) => Err(message),
        None => parse_args(),
    };
    match command {
        Ok(Command::Serve(args)) => service::run(&args),
        Ok(Command::Print(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("blackhole: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
