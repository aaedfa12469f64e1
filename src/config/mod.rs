//! Configuration: finding, reading and validating `blackhole.toml`.
//!
//! This module owns the option names, their defaults and their allowed
//! values, the listener entry syntax (`"[ADDRESS]:PORT [mode=MODE]
//! [delay=N|MIN-MAX]"`) and the original program's `key = value` file format,
//! which is still read unchanged. Both formats go through one intermediate
//! form (`RawOptions`) and one validation pass, so they cannot drift apart.
//! Which option names exist comes from the documented table,
//! [`options::OPTIONS`]; the tests check that the table, the fields of
//! `RawOptions` and the shipped `blackhole.toml` agree.
//!
//! It must not touch anything but the config file (and, for
//! [`Config::mail_name`], the files naming the host): whether certificate,
//! key, pidfile, user or group exist is checked later, by the code that uses
//! them. It must not bind, serve or decide anything about SMTP. It never
//! panics on what a file contains; every problem becomes a one-line
//! [`ConfigError`] naming the option and saying what is allowed.
//!
//! Its files, one job each: `toml_file` (the TOML format and `RawOptions`),
//! `legacy_file` (the original format), `listener` (the entry syntax),
//! `values` (value readers and the validation pass), `rule_table` (the
//! `[[rule]]` tables) and `greylist_table` (the `[greylist]` table), which
//! only TOML files have, `error` (how problems are reported) and `options`
//! (the documented table).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use crate::smtp::greylist::GreylistSettings;
pub use crate::smtp::policy::{DelayRange, Mode};
pub use crate::smtp::rules::{Cidr, Rule};
pub use error::ConfigError;
pub use listener::{ListenerSpec, parse_listener};

use error::Problem;

mod error;
mod greylist_table;
mod legacy_file;
mod listener;
pub mod options;
mod rule_table;
mod toml_file;
mod values;

#[cfg(test)]
mod tests;

const DEFAULT_TIMEOUT_SECS: u32 = 60;
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 512_000;

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file read; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// `listen` entries, then `tls_listen` entries.
    pub listeners: Vec<ListenerSpec>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accepted for compatibility; rustls negotiates ECDHE and never uses it.
    pub tls_dhparams: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub pidfile: Option<PathBuf>,
    pub timeout_secs: u32,
    pub delay: Option<DelayRange>,
    pub mode: Mode,
    pub max_message_size: u64,
    pub dynamic_switch: bool,
    /// Whether BDAT is taken and CHUNKING offered.
    pub chunking: bool,
    pub workers: u32,
    /// Connections served at once; `None`: as many as the descriptor limit allows.
    pub max_connections: Option<u32>,
    /// What every random choice is drawn from; `None`: a new seed at every start.
    pub seed: Option<u64>,
    pub mailname: Option<String>,
    /// `[[rule]]` tables, in file order.
    pub rules: Vec<Rule>,
    /// `[greylist]`; `None`: no greylisting.
    pub greylist: Option<GreylistSettings>,
    /// Where `/metrics` and `/healthz` are served; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The file one JSON line per message and per connection is appended to, `-` being
    /// standard output; `None`: no event log.
    pub event_log: Option<PathBuf>,
    /// Who may send a PROXY header on a listener flagged `proxy`.
    pub proxy_trusted: Vec<Cidr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            listeners: vec![default_listener()],
            tls_cert: None,
            tls_key: None,
            tls_dhparams: None,
            user: None,
            group: None,
            pidfile: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            delay: None,
            mode: Mode::Accept,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            dynamic_switch: true,
            chunking: false,
            workers: 1,
            max_connections: None,
            seed: None,
            mailname: None,
            rules: Vec::new(),
            greylist: None,
            metrics_listen: None,
            event_log: None,
            proxy_trusted: default_proxy_trusted(),
        }
    }
}

/// `proxy_trusted` when the file does not set it: the loopback addresses, where a load
/// balancer on the same host connects from.
fn default_proxy_trusted() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|block| block.parse().ok())
        .collect()
}

/// What `listen` means when the file does not set it: every IPv4 address,
/// port 25.
fn default_listener() -> ListenerSpec {
    ListenerSpec {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 25),
        tls: false,
        mode: None,
        delay: None,
        lmtp: false,
        proxy: false,
        text: ":25".to_owned(),
    }
}

impl Config {
    /// The name the server calls itself in its greeting, EHLO reply and
    /// message ids: the `mailname` option, else the first line of
    /// `/etc/mailname`, else the host's name, else `localhost`.
    pub fn mail_name(&self) -> String {
        if let Some(name) = &self.mailname {
            return name.clone();
        }
        mail_name_from(&[
            Path::new("/etc/mailname"),
            Path::new("/proc/sys/kernel/hostname"),
            Path::new("/etc/hostname"),
        ])
    }
}

/// The first usable name in the first of `files` that has one.
fn mail_name_from(files: &[&Path]) -> String {
    files
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|text| {
            text.lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .filter(|line| is_host_name_like(line))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A name that can go into `220 {name} ESMTP` without breaking the line.
fn is_host_name_like(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Reads the configuration: `path` when given, else `./blackhole.toml`,
/// else `/etc/blackhole.toml`, else the built-in defaults.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => match find_config_file() {
            Some(path) => path,
            None => {
                log::debug!("no blackhole.toml found, using the built-in defaults");
                return Ok(Config::default());
            }
        },
    };
    let bytes = std::fs::read(&path).map_err(|err| {
        Problem::general(format!(
            "cannot read the config file: {err}; check the path and its permissions"
        ))
        .in_file(&path)
    })?;
    // Lossy: a stray Latin-1 byte in a comment of an old file is no reason
    // to refuse it; a damaged value is then caught by validation.
    let text = String::from_utf8_lossy(&bytes);
    log::debug!("reading configuration from {}", path.display());
    parse(&text, &path)
}

/// The first of the usual places that holds a file.
fn find_config_file() -> Option<PathBuf> {
    [
        Path::new("blackhole.toml"),
        Path::new("/etc/blackhole.toml"),
    ]
    .into_iter()
    .find(|candidate| candidate.exists())
    .map(Path::to_path_buf)
}

/// Parses and validates a config file's text; `origin` names it in errors
/// and decides which error is reported when the text is neither TOML nor
/// the original's `key = value` format.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let built = match text.parse::<toml::Table>() {
        Ok(table) => toml_file::options(table).and_then(values::build),
        Err(toml_err) => parse_legacy(text, origin, &toml_err),
    };
    let mut config = built.map_err(|problem| problem.in_file(origin))?;
    config.source = Some(origin.to_path_buf());
    Ok(config)
}

/// Text that is not TOML, read in the original's format. If that fails too,
/// a file named `.toml` gets both reasons, any other file the original's.
fn parse_legacy(text: &str, origin: &Path, toml_err: &toml::de::Error) -> Result<Config, Problem> {
    match legacy_file::options(text).and_then(values::build) {
        Ok(config) => {
            log::debug!(
                "{} is not TOML; read it in the original's key = value format",
                origin.display()
            );
            Ok(config)
        }
        Err(legacy) if claims_toml(origin) => Err(Problem::general(format!(
            "{} (read in the original's `key = value` format instead, it fails too: {})",
            toml_file::describe_error(toml_err, text),
            legacy.describe()
        ))),
        Err(legacy) => Err(legacy),
    }
}

fn claims_toml(origin: &Path) -> bool {
    origin
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"))
}
