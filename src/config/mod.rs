//! Configuration: finding, reading and validating `blackhole.toml`.
//!
//! This module owns the option names, their defaults and their allowed
//! values, the listener entry syntax (`"[ADDRESS]:PORT [mode=MODE]
//! [delay=N|MIN-MAX]"`) and the original program's `key = value` file format,
//! which is still read unchanged. Both formats go through one intermediate
//! form ([`RawOptions`]) and one validation pass, so they cannot drift apart.
//! Which option names exist comes from the documented table,
//! [`options::OPTIONS`]; the tests check that the table, the fields of
//! [`RawOptions`] and the shipped `blackhole.toml` agree.
//!
//! It must not touch anything but the config file (and, for
//! [`Config::mail_name`], the files naming the host): whether certificate,
//! key, pidfile, user or group exist is checked later, by the code that uses
//! them. It never panics on what a file contains; every problem becomes a
//! one-line [`ConfigError`] naming the option and saying what is allowed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Value;

use crate::smtp::decimal;
use crate::smtp::policy::MAX_DELAY_SECS;
pub use crate::smtp::policy::{DelayRange, Mode};

use options::OPTIONS;

pub mod options;

/// Longest idle timeout, in seconds (the original's cap).
const MAX_TIMEOUT_SECS: u32 = 180;
const DEFAULT_TIMEOUT_SECS: u32 = 60;
const MAX_WORKERS: u32 = 256;
/// Far beyond what one process can hold open; a typo guard, not a tuning knob.
const MAX_MAX_CONNECTIONS: u32 = 1_000_000;
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 512_000;
/// 1 GiB: message bytes are counted, never stored, but the number is
/// advertised in EHLO and a larger one is a typo more often than a wish.
const MAX_MAX_MESSAGE_SIZE: u64 = 1_073_741_824;

/// One `listen` or `tls_listen` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    /// Implicit TLS from the first byte (a `tls_listen` entry).
    pub tls: bool,
    /// `mode=` flag: fixes the mode for this listener's connections.
    pub mode: Option<Mode>,
    /// `delay=` flag: fixes the delay for this listener's connections.
    pub delay: Option<DelayRange>,
    /// The entry as written, for messages.
    pub text: String,
}

impl ListenerSpec {
    /// A listener with flags ignores dynamic switch headers.
    pub fn has_flags(&self) -> bool {
        self.mode.is_some() || self.delay.is_some()
    }
}

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
    pub workers: u32,
    /// Connections served at once; `None`: as many as the descriptor limit allows.
    pub max_connections: Option<u32>,
    pub mailname: Option<String>,
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
            workers: 1,
            max_connections: None,
            mailname: None,
        }
    }
}

/// What `listen` means when the file does not set it: every IPv4 address,
/// port 25.
fn default_listener() -> ListenerSpec {
    ListenerSpec {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 25),
        tls: false,
        mode: None,
        delay: None,
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

/// A configuration problem, reported on one line and with exit code 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (as given), or a description of where the text came from.
    pub file: String,
    /// The option at fault, when one is.
    pub option: Option<String>,
    /// What is wrong, what is allowed and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_one_line(f, &self.file)?;
        if let Some(option) = &self.option {
            f.write_str(": option `")?;
            write_one_line(f, option)?;
            f.write_str("`")?;
        }
        f.write_str(": ")?;
        write_one_line(f, &self.message)
    }
}

/// Writes `s` with control characters escaped: messages quote values from
/// the file, and a quoted `"a\nb"` must not split the error over two lines.
fn write_one_line(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

impl std::error::Error for ConfigError {}

/// A problem found before the file name is attached.
#[derive(Debug)]
struct Problem {
    option: Option<String>,
    message: String,
}

impl Problem {
    fn general(message: impl Into<String>) -> Self {
        Problem {
            option: None,
            message: message.into(),
        }
    }

    fn option(option: &str, message: impl Into<String>) -> Self {
        Problem {
            option: Some(option.to_owned()),
            message: message.into(),
        }
    }

    fn in_file(self, origin: &Path) -> ConfigError {
        ConfigError {
            file: origin.display().to_string(),
            option: self.option,
            message: self.message,
        }
    }

    /// The problem as one phrase, for quoting inside another message.
    fn describe(&self) -> String {
        match &self.option {
            Some(option) => format!("option `{option}`: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// Reads the configuration: `path` when given, else `./blackhole.toml`,
/// else `/etc/blackhole.toml`, else the built-in defaults.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => {
            let found = [
                Path::new("blackhole.toml"),
                Path::new("/etc/blackhole.toml"),
            ]
            .into_iter()
            .find(|candidate| candidate.exists());
            match found {
                Some(path) => path.to_path_buf(),
                None => {
                    log::debug!("no blackhole.toml found, using the built-in defaults");
                    return Ok(Config::default());
                }
            }
        }
    };
    let bytes = std::fs::read(&path).map_err(|err| ConfigError {
        file: path.display().to_string(),
        option: None,
        message: format!("cannot read the config file: {err}; check the path and its permissions"),
    })?;
    // Lossy: a stray Latin-1 byte in a comment of an old file is no reason
    // to refuse it; a damaged value is then caught by validation.
    let text = String::from_utf8_lossy(&bytes);
    log::debug!("reading configuration from {}", path.display());
    parse(&text, &path)
}

/// Parses and validates a config file's text; `origin` names it in errors
/// and decides which error is reported when the text is neither TOML nor
/// the original's `key = value` format.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut config = match text.parse::<toml::Table>() {
        Ok(table) => from_toml(table)
            .and_then(build)
            .map_err(|problem| problem.in_file(origin))?,
        Err(toml_err) => match parse_legacy(text).and_then(build) {
            Ok(config) => {
                log::debug!(
                    "{} is not TOML; read it in the original's key = value format",
                    origin.display()
                );
                config
            }
            Err(legacy) => {
                let claims_toml = origin
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
                let problem = if claims_toml {
                    Problem::general(format!(
                        "{} (read in the original's `key = value` format instead, it fails too: {})",
                        describe_toml_error(&toml_err, text),
                        legacy.describe()
                    ))
                } else {
                    legacy
                };
                return Err(problem.in_file(origin));
            }
        },
    };
    config.source = Some(origin.to_path_buf());
    Ok(config)
}

/// A TOML syntax error on one line, with its position.
fn describe_toml_error(err: &toml::de::Error, text: &str) -> String {
    let what = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .map_or(0, |last| last.chars().count())
                + 1;
            format!("not valid TOML at line {line}, column {column}: {what}")
        }
        None => format!("not valid TOML: {what}"),
    }
}

/// The options as found in either format, before validation. Legacy files
/// give every value as a string; TOML files may give strings too (an
/// original file that happens to be valid TOML means the same thing).
///
/// One field per entry of [`OPTIONS`], in its order (a test checks it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptions {
    listen: Option<Value>,
    tls_listen: Option<Value>,
    tls_cert: Option<Value>,
    tls_key: Option<Value>,
    tls_dhparams: Option<Value>,
    timeout: Option<Value>,
    delay: Option<Value>,
    mode: Option<Value>,
    max_message_size: Option<Value>,
    dynamic_switch: Option<Value>,
    mailname: Option<Value>,
    max_connections: Option<Value>,
    workers: Option<Value>,
    user: Option<Value>,
    group: Option<Value>,
    pidfile: Option<Value>,
}

fn is_option(key: &str) -> bool {
    OPTIONS.iter().any(|option| option.name == key)
}

fn unknown_option(key: &str) -> Problem {
    let names: Vec<&str> = OPTIONS.iter().map(|option| option.name).collect();
    Problem::option(
        key,
        format!(
            "unknown option; the options are {} (check the spelling; \
             blackhole --help-config describes them)",
            names.join(", ")
        ),
    )
}

fn from_toml(table: toml::Table) -> Result<RawOptions, Problem> {
    // Checked here rather than left to serde so the message can name the
    // option in `ConfigError::option`; `deny_unknown_fields` stays as the
    // guarantee that nothing is silently dropped.
    if let Some(key) = table.keys().find(|key| !is_option(key)) {
        return Err(unknown_option(key));
    }
    table
        .try_into::<RawOptions>()
        .map_err(|err| Problem::general(err.message().to_owned()))
}

/// The original's format: `key = value` lines, `#` comments (also after a
/// value), blank lines, quotes removed, an empty value meaning "unset", the
/// last setting of a key winning. Every value is a string; the result goes
/// through the same path as a TOML file.
fn parse_legacy(text: &str) -> Result<RawOptions, Problem> {
    let mut table = toml::Table::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Problem::general(format!(
                "line {number}: `{line}` is not a setting; write `option = value` \
                 (or put the file in TOML format)"
            )));
        };
        let key = key.trim();
        if !is_option(key) {
            let mut problem = unknown_option(key);
            problem.message = format!("line {number}: {}", problem.message);
            return Err(problem);
        }
        let value: String = value.chars().filter(|c| *c != '"' && *c != '\'').collect();
        let value = value.trim();
        if value.is_empty() {
            table.remove(key);
        } else {
            table.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    from_toml(table)
}

/// Validates the raw options and fills in defaults. `source` is left unset.
fn build(raw: RawOptions) -> Result<Config, Problem> {
    let defaults = Config::default();

    let listen = listeners(raw.listen, "listen", false)?;
    let tls_listen = listeners(raw.tls_listen, "tls_listen", true)?.unwrap_or_default();
    let mut all = listen.unwrap_or(defaults.listeners);
    let has_tls_listeners = !tls_listen.is_empty();
    all.extend(tls_listen);
    if all.is_empty() {
        return Err(Problem::option(
            "listen",
            "nothing to listen on: listen and tls_listen are both empty; \
             give at least one address, e.g. listen = [\":25\"]",
        ));
    }
    check_duplicates(&all)?;

    let tls_cert = path(raw.tls_cert, "tls_cert")?;
    let tls_key = path(raw.tls_key, "tls_key")?;
    let tls_dhparams = path(raw.tls_dhparams, "tls_dhparams")?;
    check_tls(has_tls_listeners, tls_cert.is_some(), tls_key.is_some())?;

    let timeout_secs = count(raw.timeout, "timeout", MAX_TIMEOUT_SECS, "seconds")?
        .unwrap_or(defaults.timeout_secs);
    let workers =
        count(raw.workers, "workers", MAX_WORKERS, "processes")?.unwrap_or(defaults.workers);
    let max_connections = count(
        raw.max_connections,
        "max_connections",
        MAX_MAX_CONNECTIONS,
        "connections",
    )?;
    let max_message_size = number(
        raw.max_message_size,
        "max_message_size",
        1,
        MAX_MAX_MESSAGE_SIZE,
        "bytes",
    )?
    .unwrap_or(defaults.max_message_size);

    Ok(Config {
        source: None,
        listeners: all,
        tls_cert,
        tls_key,
        tls_dhparams,
        user: text(raw.user, "user")?,
        group: text(raw.group, "group")?,
        pidfile: path(raw.pidfile, "pidfile")?,
        timeout_secs,
        delay: delay(raw.delay)?,
        mode: mode(raw.mode)?.unwrap_or(defaults.mode),
        max_message_size,
        dynamic_switch: boolean(raw.dynamic_switch, "dynamic_switch")?
            .unwrap_or(defaults.dynamic_switch),
        workers,
        max_connections,
        mailname: mailname(raw.mailname)?,
    })
}

/// A whole number from 1 to `max`, as a u32.
fn count(value: Option<Value>, option: &str, max: u32, unit: &str) -> Result<Option<u32>, Problem> {
    number(value, option, 1, u64::from(max), unit)?
        .map(|n| to_u32(n, option))
        .transpose()
}

fn to_u32(n: u64, option: &str) -> Result<u32, Problem> {
    u32::try_from(n).map_err(|_| Problem::option(option, format!("`{n}` is too large")))
}

fn wrong_type(option: &str, expected: &str, found: &Value) -> Problem {
    Problem::option(
        option,
        format!("expected {expected}, found {}", found.type_str()),
    )
}

/// A string option; empty means unset.
fn text(value: Option<Value>, option: &str) -> Result<Option<String>, Problem> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
        Some(other) => Err(wrong_type(option, "a string", &other)),
    }
}

fn path(value: Option<Value>, option: &str) -> Result<Option<PathBuf>, Problem> {
    Ok(text(value, option)?.map(PathBuf::from))
}

/// A whole number in `min..=max`, given as an integer or a string of
/// digits.
fn number(
    value: Option<Value>,
    option: &str,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<Option<u64>, Problem> {
    let allowed = || format!("give a whole number of {unit} from {min} to {max}");
    let n = match value {
        None => return Ok(None),
        Some(Value::Integer(i)) => u64::try_from(i).ok().map(|n| (n, i.to_string())),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            match decimal::saturating(s.as_bytes()) {
                Some(n) => Some((n, s.to_owned())),
                None => {
                    return Err(Problem::option(
                        option,
                        format!("`{s}` is not a number: {}", allowed()),
                    ));
                }
            }
        }
        Some(other) => {
            return Err(wrong_type(option, "a whole number", &other));
        }
    };
    match n {
        Some((n, _)) if (min..=max).contains(&n) => Ok(Some(n)),
        Some((_, shown)) => Err(Problem::option(
            option,
            format!("`{shown}` is out of range: {}", allowed()),
        )),
        // A negative TOML integer.
        None => Err(Problem::option(
            option,
            format!("a negative value is not allowed: {}", allowed()),
        )),
    }
}

fn boolean(value: Option<Value>, option: &str) -> Result<Option<bool>, Problem> {
    match value {
        None => Ok(None),
        Some(Value::Boolean(b)) => Ok(Some(b)),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else if s.eq_ignore_ascii_case("true") {
                Ok(Some(true))
            } else if s.eq_ignore_ascii_case("false") {
                Ok(Some(false))
            } else {
                Err(Problem::option(
                    option,
                    format!("`{s}` is not allowed: use true or false"),
                ))
            }
        }
        Some(other) => Err(wrong_type(option, "true or false", &other)),
    }
}

fn mode(value: Option<Value>) -> Result<Option<Mode>, Problem> {
    match text(value, "mode")? {
        None => Ok(None),
        Some(s) => s
            .parse::<Mode>()
            .map(Some)
            .map_err(|message| Problem::option("mode", message)),
    }
}

/// `delay`: an integer, or a string `"N"` or `"MIN-MAX"`.
fn delay(value: Option<Value>) -> Result<Option<DelayRange>, Problem> {
    let range = match value {
        None => return Ok(None),
        Some(Value::Integer(i)) => parse_delay(&i.to_string()),
        Some(Value::String(s)) => {
            if s.trim().is_empty() {
                return Ok(None);
            }
            parse_delay(&s)
        }
        Some(other) => {
            return Err(wrong_type(
                "delay",
                "seconds as a number or a string \"MIN-MAX\"",
                &other,
            ));
        }
    };
    range
        .map(Some)
        .map_err(|message| Problem::option("delay", message))
}

fn mailname(value: Option<Value>) -> Result<Option<String>, Problem> {
    let name = text(value, "mailname")?;
    match name {
        Some(name) if !is_host_name_like(&name) => Err(Problem::option(
            "mailname",
            format!(
                "`{name}` is not a host name: give one name without spaces, \
                 e.g. mail.example.com"
            ),
        )),
        name => Ok(name),
    }
}

/// `listen`/`tls_listen`: an array of entries, or (as in the original's
/// format) one string of comma-separated entries. `None` when unset; an
/// empty array is `Some(empty)`.
fn listeners(
    value: Option<Value>,
    option: &str,
    tls: bool,
) -> Result<Option<Vec<ListenerSpec>>, Problem> {
    let entries: Vec<String> = match value {
        None => return Ok(None),
        Some(Value::String(s)) => {
            if s.trim().is_empty() {
                return Ok(None);
            }
            s.split(',').map(str::to_owned).collect()
        }
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(wrong_type(
                    option,
                    "entries that are strings like \":25\"",
                    &other,
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(wrong_type(
                option,
                "an array of strings like [\":25\"]",
                &other,
            ));
        }
    };
    entries
        .iter()
        .map(|entry| {
            parse_listener(entry, tls).map_err(|message| {
                Problem::option(option, format!("entry `{}`: {message}", entry.trim()))
            })
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Two entries on one socket address cannot both be bound. Port 0 asks the
/// kernel for a free port, so several such entries never collide.
fn check_duplicates(listeners: &[ListenerSpec]) -> Result<(), Problem> {
    for (i, later) in listeners.iter().enumerate() {
        if later.addr.port() == 0 {
            continue;
        }
        if let Some(earlier) = listeners[..i].iter().find(|l| l.addr == later.addr) {
            let option = if later.tls { "tls_listen" } else { "listen" };
            return Err(Problem::option(
                option,
                format!(
                    "`{}` and `{}` are the same address ({}); a socket address can be \
                     listened on once, remove one of them",
                    earlier.text, later.text, later.addr
                ),
            ));
        }
    }
    Ok(())
}

/// TLS needs a certificate and its key together; `tls_listen` needs both.
fn check_tls(has_tls_listeners: bool, cert: bool, key: bool) -> Result<(), Problem> {
    if cert == key && (cert || !has_tls_listeners) {
        return Ok(());
    }
    let missing = if cert { "tls_key" } else { "tls_cert" };
    let reason = if has_tls_listeners {
        "tls_listen is set"
    } else if cert {
        "tls_cert is set"
    } else {
        "tls_key is set"
    };
    Err(Problem::option(
        missing,
        format!(
            "{reason} but {missing} is not; TLS needs tls_cert (a PEM certificate file) \
             and tls_key (its PEM private key file)"
        ),
    ))
}

/// Parses one listener entry: `"[ADDRESS]:PORT [mode=MODE] [delay=N|MIN-MAX]"`.
///
/// `:25` is every IPv4 address, `:::25` every IPv6 address; IPv6 addresses
/// may be bracketed (`[::1]:25`) or not (`::1:25`, split at the last
/// colon). Port 0 asks for any free port. Flags come in any order, each at
/// most once.
pub fn parse_listener(entry: &str, tls: bool) -> Result<ListenerSpec, String> {
    let text = entry.trim();
    let mut words = text.split_whitespace();
    let Some(address) = words.next() else {
        return Err(
            "empty entry: write \"[ADDRESS]:PORT [mode=MODE] [delay=N|MIN-MAX]\", e.g. \":25\""
                .to_owned(),
        );
    };
    let addr = parse_socket_addr(address)?;
    let mut mode = None;
    let mut delay = None;
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "`{word}` is not a flag: the flags are mode=MODE and delay=N or delay=MIN-MAX"
            ));
        };
        if name.eq_ignore_ascii_case("mode") {
            if mode.is_some() {
                return Err("mode= is given twice: give it once".to_owned());
            }
            mode = Some(value.parse::<Mode>()?);
        } else if name.eq_ignore_ascii_case("delay") {
            if delay.is_some() {
                return Err("delay= is given twice: give it once".to_owned());
            }
            delay = Some(parse_delay(value)?);
        } else {
            return Err(format!(
                "unknown flag `{name}`: the flags are mode=MODE and delay=N or delay=MIN-MAX"
            ));
        }
    }
    Ok(ListenerSpec {
        addr,
        tls,
        mode,
        delay,
        text: text.to_owned(),
    })
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, port)) = rest.split_once("]:") else {
            return Err(format!(
                "`{s}` is not an address: write [IPV6]:PORT, e.g. [::1]:25"
            ));
        };
        let ip = host.parse::<Ipv6Addr>().map_err(|_| {
            format!("`{host}` is not an IPv6 address (brackets are only for IPv6 addresses)")
        })?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), parse_port(port)?));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "`{s}` has no port: write [ADDRESS]:PORT, e.g. :25, :::25 or 127.0.0.1:25"
        ));
    };
    let port = parse_port(port)?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>().map_err(|_| {
            if host.contains(':') {
                format!(
                    "`{s}` is not an IPv6 address and port: write [ADDRESS]:PORT, \
                     e.g. [::1]:25 or :::25"
                )
            } else {
                format!(
                    "`{host}` is not an IP address: give an IPv4 or IPv6 address, or nothing \
                     before the port for every IPv4 address (:25)"
                )
            }
        })?
    };
    Ok(SocketAddr::new(ip, port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    let parsed = decimal::saturating(port.as_bytes()).and_then(|n| u16::try_from(n).ok());
    parsed.ok_or_else(|| {
        format!("`{port}` is not a port: use a number from 0 to 65535 (0 picks a free port)")
    })
}

/// A delay written `N` or `MIN-MAX`, in seconds, at most 60.
fn parse_delay(s: &str) -> Result<DelayRange, String> {
    let s = s.trim();
    let (min, max) = match s.split_once('-') {
        Some((min, max)) => (min.trim(), max.trim()),
        None => (s, s),
    };
    let seconds = |part: &str| -> Result<u32, String> {
        let n = decimal::saturating(part.as_bytes()).ok_or_else(|| {
            format!(
                "`{s}` is not a delay: give seconds as N or MIN-MAX, e.g. 5 or 5-10, \
                     from 0 to {MAX_DELAY_SECS}"
            )
        })?;
        u32::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_DELAY_SECS)
            .ok_or_else(|| {
                format!("`{s}` is too long a delay: delays are from 0 to {MAX_DELAY_SECS} seconds")
            })
    };
    let (min_secs, max_secs) = (seconds(min)?, seconds(max)?);
    if min_secs > max_secs {
        return Err(format!(
            "`{s}` has MIN above MAX: write the smaller number first, e.g. {max_secs}-{min_secs}"
        ));
    }
    // Both are at most MAX_DELAY_SECS and MIN is not above MAX: checked just above.
    DelayRange::new(min_secs, max_secs).ok_or_else(|| format!("`{s}` is not a delay"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((a, port))
    }

    fn v6(s: &str, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(s.parse().unwrap()), port)
    }

    fn addr_of(entry: &str) -> SocketAddr {
        parse_listener(entry, false)
            .unwrap_or_else(|e| panic!("{entry}: {e}"))
            .addr
    }

    fn toml(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    fn legacy(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("blackhole.conf"))
    }

    /// The error for `text`, which must name `option`.
    fn option_error(text: &str, option: &str) -> ConfigError {
        match toml(text) {
            Ok(config) => panic!("{text:?} was accepted: {config:?}"),
            Err(err) => {
                assert_eq!(err.option.as_deref(), Some(option), "{err}");
                err
            }
        }
    }

    fn range(min_secs: u32, max_secs: u32) -> DelayRange {
        DelayRange::new(min_secs, max_secs).unwrap()
    }

    #[test]
    fn address_forms() {
        assert_eq!(addr_of(":25"), v4([0, 0, 0, 0], 25));
        assert_eq!(addr_of("0.0.0.0:25"), v4([0, 0, 0, 0], 25));
        assert_eq!(addr_of(":::25"), v6("::", 25));
        assert_eq!(addr_of("127.0.0.1:25"), v4([127, 0, 0, 1], 25));
        assert_eq!(addr_of("[::1]:25"), v6("::1", 25));
        assert_eq!(addr_of("[::]:2525"), v6("::", 2525));
        assert_eq!(addr_of("::1:25"), v6("::1", 25));
        assert_eq!(addr_of("fe80::1:2525"), v6("fe80::1", 2525));
        assert_eq!(addr_of("localhost:587"), v4([127, 0, 0, 1], 587));
        assert_eq!(addr_of("127.0.0.1:0"), v4([127, 0, 0, 1], 0));
        assert_eq!(addr_of(":65535"), v4([0, 0, 0, 0], 65535));
        assert_eq!(addr_of("  10.1.2.3:25  "), v4([10, 1, 2, 3], 25));
    }

    #[test]
    fn bad_addresses() {
        for entry in [
            "",
            "   ",
            "25",
            "127.0.0.1",
            ":65536",
            ":-1",
            ":+25",
            ":",
            "127.0.0.1:",
            "[::1]25",
            "[::1]",
            "[127.0.0.1]:25",
            "example.com:25",
            "1.2.3:25",
            "256.0.0.1:25",
        ] {
            assert!(parse_listener(entry, false).is_err(), "{entry:?} accepted");
        }
    }

    #[test]
    fn listener_keeps_text_and_tls() {
        let spec = parse_listener("  :465 mode=bounce ", true).unwrap();
        assert_eq!(spec.text, ":465 mode=bounce");
        assert!(spec.tls);
        assert!(spec.has_flags());
        let plain = parse_listener(":25", false).unwrap();
        assert!(!plain.tls);
        assert!(!plain.has_flags());
    }

    #[test]
    fn flags() {
        let spec = parse_listener(":25 mode=bounce", false).unwrap();
        assert_eq!((spec.mode, spec.delay), (Some(Mode::Bounce), None));
        let spec = parse_listener(":25 delay=5", false).unwrap();
        assert_eq!((spec.mode, spec.delay), (None, Some(range(5, 5))));
        assert!(spec.has_flags());
        let spec = parse_listener(":25 delay=1-5 mode=RANDOM", false).unwrap();
        assert_eq!(
            (spec.mode, spec.delay),
            (Some(Mode::Random), Some(range(1, 5)))
        );
        let spec = parse_listener("[::1]:25   mode=accept\tdelay=0-60", false).unwrap();
        assert_eq!(
            (spec.mode, spec.delay),
            (Some(Mode::Accept), Some(range(0, 60)))
        );
        let spec = parse_listener(":25 delay=7-7", false).unwrap();
        assert_eq!(spec.delay, Some(range(7, 7)));
    }

    #[test]
    fn bad_flags() {
        for entry in [
            ":25 mode=bogus",
            ":25 mode=",
            ":25 delay=61",
            ":25 delay=5-61",
            ":25 delay=10-5",
            ":25 delay=a",
            ":25 delay=-5",
            ":25 delay=",
            ":25 delay=1-2-3",
            ":25 delay=99999999999",
            ":25 speed=1",
            ":25 mode",
            ":25 mode=bounce mode=accept",
            ":25 delay=1 delay=2",
            ":25, :26",
        ] {
            assert!(parse_listener(entry, false).is_err(), "{entry:?} accepted");
        }
        let err = parse_listener(":25 speed=1", false).unwrap_err();
        assert!(err.contains("speed") && err.contains("mode="), "{err}");
        let err = parse_listener(":25 delay=10-5", false).unwrap_err();
        assert!(err.contains("5-10"), "{err}");
    }

    #[test]
    fn mode_from_str() {
        assert_eq!("accept".parse::<Mode>(), Ok(Mode::Accept));
        assert_eq!("Bounce".parse::<Mode>(), Ok(Mode::Bounce));
        assert_eq!("RANDOM".parse::<Mode>(), Ok(Mode::Random));
        assert!("".parse::<Mode>().is_err());
        assert!("accepted".parse::<Mode>().is_err());
        assert_eq!(Mode::Bounce.to_string(), "bounce");
    }

    #[test]
    fn defaults() {
        let config = Config::default();
        assert_eq!(config.source, None);
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].addr, v4([0, 0, 0, 0], 25));
        assert!(!config.listeners[0].tls && !config.listeners[0].has_flags());
        assert_eq!(config.timeout_secs, 60);
        assert_eq!(config.delay, None);
        assert_eq!(config.mode, Mode::Accept);
        assert_eq!(config.max_message_size, 512_000);
        assert!(config.dynamic_switch);
        assert_eq!(config.workers, 1);
        assert_eq!(
            (&config.tls_cert, &config.tls_key, &config.tls_dhparams),
            (&None, &None, &None)
        );
        assert_eq!(
            (
                &config.user,
                &config.group,
                &config.pidfile,
                &config.mailname
            ),
            (&None, &None, &None, &None)
        );

        // An empty file (or comments only) means every default.
        for text in ["", "# nothing here\n\n"] {
            let mut parsed = toml(text).unwrap();
            assert_eq!(parsed.source.as_deref(), Some(Path::new("test.toml")));
            parsed.source = None;
            assert_eq!(parsed, config);
        }
    }

    #[test]
    fn full_toml_file() {
        let config = toml(
            r#"
            listen = [":25", ":::25 mode=bounce", "127.0.0.1:587 delay=1-5"]
            tls_listen = ["[::1]:465 mode=random delay=3"]
            tls_cert = "/etc/ssl/blackhole.crt"
            tls_key = "/etc/ssl/blackhole.key"
            tls_dhparams = "/etc/ssl/dhparams.pem"
            user = "nobody"
            group = "nogroup"
            pidfile = "/run/blackhole.pid"
            timeout = 180
            delay = "2-4"
            mode = "Random"
            max_message_size = 1073741824
            dynamic_switch = false
            workers = 256
            mailname = "mx.example.com"
            "#,
        )
        .unwrap();
        let addrs: Vec<_> = config.listeners.iter().map(|l| (l.addr, l.tls)).collect();
        assert_eq!(
            addrs,
            [
                (v4([0, 0, 0, 0], 25), false),
                (v6("::", 25), false),
                (v4([127, 0, 0, 1], 587), false),
                (v6("::1", 465), true),
            ]
        );
        assert_eq!(config.listeners[1].mode, Some(Mode::Bounce));
        assert_eq!(config.listeners[2].delay, Some(range(1, 5)));
        assert_eq!(config.listeners[3].mode, Some(Mode::Random));
        assert_eq!(config.listeners[3].delay, Some(range(3, 3)));
        assert_eq!(
            config.tls_cert.as_deref(),
            Some(Path::new("/etc/ssl/blackhole.crt"))
        );
        assert_eq!(
            config.tls_key.as_deref(),
            Some(Path::new("/etc/ssl/blackhole.key"))
        );
        assert_eq!(
            config.tls_dhparams.as_deref(),
            Some(Path::new("/etc/ssl/dhparams.pem"))
        );
        assert_eq!(config.user.as_deref(), Some("nobody"));
        assert_eq!(config.group.as_deref(), Some("nogroup"));
        assert_eq!(
            config.pidfile.as_deref(),
            Some(Path::new("/run/blackhole.pid"))
        );
        assert_eq!(config.timeout_secs, 180);
        assert_eq!(config.delay, Some(range(2, 4)));
        assert_eq!(config.mode, Mode::Random);
        assert_eq!(config.max_message_size, 1_073_741_824);
        assert!(!config.dynamic_switch);
        assert_eq!(config.workers, 256);
        assert_eq!(config.mailname.as_deref(), Some("mx.example.com"));
        assert_eq!(config.mail_name(), "mx.example.com");
    }

    #[test]
    fn delay_forms() {
        assert_eq!(toml("delay = 0").unwrap().delay, Some(range(0, 0)));
        assert_eq!(toml("delay = 60").unwrap().delay, Some(range(60, 60)));
        assert_eq!(toml("delay = \"7\"").unwrap().delay, Some(range(7, 7)));
        assert_eq!(toml("delay = \"5-10\"").unwrap().delay, Some(range(5, 10)));
        assert_eq!(toml("delay = \"\"").unwrap().delay, None);
    }

    #[test]
    fn bad_option_values() {
        let cases = [
            ("timeout = 0", "timeout"),
            ("timeout = 181", "timeout"),
            ("timeout = -1", "timeout"),
            ("timeout = \"soon\"", "timeout"),
            ("timeout = 1.5", "timeout"),
            ("timeout = true", "timeout"),
            ("delay = 61", "delay"),
            ("delay = -1", "delay"),
            ("delay = \"10-5\"", "delay"),
            ("delay = \"5-61\"", "delay"),
            ("delay = \"soon\"", "delay"),
            ("delay = [1, 2]", "delay"),
            ("mode = \"bogus\"", "mode"),
            ("mode = 1", "mode"),
            ("max_message_size = 0", "max_message_size"),
            ("max_message_size = 1073741825", "max_message_size"),
            ("max_message_size = -5", "max_message_size"),
            ("max_message_size = \"big\"", "max_message_size"),
            ("dynamic_switch = \"yes\"", "dynamic_switch"),
            ("dynamic_switch = 1", "dynamic_switch"),
            ("workers = 0", "workers"),
            ("workers = 257", "workers"),
            ("workers = \"many\"", "workers"),
            ("mailname = \"mail example\"", "mailname"),
            ("mailname = \"a\\r\\nb\"", "mailname"),
            ("mailname = 5", "mailname"),
            ("user = 1000", "user"),
            ("group = false", "group"),
            ("pidfile = 3", "pidfile"),
            ("tls_cert = 3", "tls_cert"),
            ("tls_key = []", "tls_key"),
            ("tls_dhparams = 1", "tls_dhparams"),
            ("listen = \":99999\"", "listen"),
            ("listen = [\":25 mode=x\"]", "listen"),
            ("listen = [25]", "listen"),
            ("listen = 25", "listen"),
            ("listen = [\"\"]", "listen"),
            ("tls_listen = [\"foo\"]", "tls_listen"),
            ("listen = []\ntls_listen = []", "listen"),
            ("listen = []", "listen"),
        ];
        for (text, option) in cases {
            let err = option_error(text, option);
            let shown = err.to_string();
            assert!(!shown.contains('\n'), "{shown}");
            assert!(shown.starts_with("test.toml: option `"), "{shown}");
        }
        let err = option_error("timeout = 500", "timeout");
        assert!(err.message.contains("1 to 180"), "{err}");
        let err = option_error("workers = 0", "workers");
        assert!(err.message.contains("1 to 256"), "{err}");
        let err = option_error("mode = \"bogus\"", "mode");
        assert!(err.message.contains("accept, bounce or random"), "{err}");
        let err = option_error("dynamic_switch = \"yes\"", "dynamic_switch");
        assert!(err.message.contains("true or false"), "{err}");
        let err = option_error("delay = 61", "delay");
        assert!(err.message.contains("60"), "{err}");
        let err = option_error("listen = []", "listen");
        assert!(err.message.contains("nothing to listen on"), "{err}");
    }

    #[test]
    fn tls_listen_needs_cert_and_key() {
        let err = option_error("tls_listen = [\":465\"]\ntls_key = \"k.pem\"", "tls_cert");
        assert!(err.message.contains("tls_listen"), "{err}");
        option_error("tls_listen = [\":465\"]\ntls_cert = \"c.pem\"", "tls_key");
        option_error("tls_listen = [\":465\"]", "tls_cert");
        // Half a certificate is an error even without tls_listen (STARTTLS).
        option_error("tls_cert = \"c.pem\"", "tls_key");
        option_error("tls_key = \"k.pem\"", "tls_cert");
        // Both without tls_listen: STARTTLS on the plain listeners.
        let config = toml("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"").unwrap();
        assert!(config.listeners.iter().all(|l| !l.tls));
        // tls_listen alone, with listen emptied, is enough to listen on.
        let config =
            toml("listen = []\ntls_listen = [\":465\"]\ntls_cert = \"c\"\ntls_key = \"k\"")
                .unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert!(config.listeners[0].tls);
        // Leaving listen out keeps its default next to tls_listen.
        let config = toml("tls_listen = [\":465\"]\ntls_cert = \"c\"\ntls_key = \"k\"").unwrap();
        let texts: Vec<_> = config.listeners.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, [":25", ":465"]);
    }

    #[test]
    fn unknown_option_names_it() {
        let err = option_error("listen = [\":25\"]\nlisten_on = \":25\"", "listen_on");
        assert!(err.message.contains("mailname"), "{err}");
        assert!(err.message.contains("max_message_size"), "{err}");
        let shown = err.to_string();
        assert!(
            shown.starts_with("test.toml: option `listen_on`: unknown option"),
            "{shown}"
        );
        option_error("[server]\nlisten = [\":25\"]", "server");

        // Not TOML (an unquoted string), so read as the original's format.
        let err = legacy("timeout = 30\nspeed = 9\nmode = bounce\n").unwrap_err();
        assert_eq!(err.option.as_deref(), Some("speed"));
        assert!(err.message.contains("line 2"), "{err}");
        assert!(err.message.contains("dynamic_switch"), "{err}");
    }

    #[test]
    fn duplicate_listeners() {
        let err = option_error("listen = [\":25\", \"0.0.0.0:25\"]", "listen");
        assert!(
            err.message.contains(":25") && err.message.contains("0.0.0.0:25"),
            "{err}"
        );
        option_error("listen = [\":::25\", \"[::]:25\"]", "listen");
        option_error(
            "listen = [\":25\"]\ntls_listen = [\":25\"]\ntls_cert = \"c\"\ntls_key = \"k\"",
            "tls_listen",
        );
        // IPv4 and IPv6 wildcards are different sockets; so are two ports.
        let config = toml("listen = [\":25\", \":::25\", \":587\", \"127.0.0.1:25\"]").unwrap();
        assert_eq!(config.listeners.len(), 4);
        // Port 0 gets a fresh port each time: tests bind several.
        let config = toml("listen = [\"127.0.0.1:0\", \"127.0.0.1:0 mode=bounce\"]").unwrap();
        assert_eq!(config.listeners.len(), 2);
    }

    #[test]
    fn legacy_file_equivalent_to_toml() {
        let old = "\
# The original's configuration file
listen = :25, :::25 mode=bounce, 127.0.0.1:587 delay=1-5   # IPv4 and IPv6
tls_listen=:465 mode=random
tls_cert = /etc/ssl/blackhole.crt
tls_key=/etc/ssl/blackhole.key
tls_dhparams = \"/etc/ssl/dhparams.pem\"

user = nobody
group = 'nogroup'
pidfile = /run/blackhole.pid
timeout = 45
delay = 5
mode = Bounce
max_message_size = 1024000
dynamic_switch = False
workers = 4
mailname = mx.example.com
";
        let new = r#"
listen = [":25", ":::25 mode=bounce", "127.0.0.1:587 delay=1-5"]
tls_listen = [":465 mode=random"]
tls_cert = "/etc/ssl/blackhole.crt"
tls_key = "/etc/ssl/blackhole.key"
tls_dhparams = "/etc/ssl/dhparams.pem"
user = "nobody"
group = "nogroup"
pidfile = "/run/blackhole.pid"
timeout = 45
delay = 5
mode = "bounce"
max_message_size = 1024000
dynamic_switch = false
workers = 4
mailname = "mx.example.com"
"#;
        let mut from_old = legacy(old).unwrap();
        let mut from_new = toml(new).unwrap();
        assert_eq!(
            from_old.source.as_deref(),
            Some(Path::new("blackhole.conf"))
        );
        from_old.source = None;
        from_new.source = None;
        assert_eq!(from_old, from_new);
        assert_eq!(from_old.listeners.len(), 4);
        assert_eq!(from_old.mode, Mode::Bounce);
        assert!(!from_old.dynamic_switch);

        // The same file named .toml is read the same way.
        let mut as_toml_name = toml(old).unwrap();
        as_toml_name.source = None;
        assert_eq!(as_toml_name, from_new);
    }

    #[test]
    fn legacy_empty_values_are_unset() {
        let config = legacy(
            "listen =\ntls_listen=\ntls_cert=\ntls_key=\ntls_dhparams =\nuser=\ngroup=\n\
             pidfile=\ntimeout=\ndelay=\nmode=\nmax_message_size=\ndynamic_switch=\n\
             workers=\nmailname=\n",
        )
        .unwrap();
        let expected = Config {
            source: config.source.clone(),
            ..Config::default()
        };
        assert_eq!(config, expected);

        // A later empty value unsets an earlier one; the last setting wins.
        let config = legacy("tls_key = k.pem\ntls_key =\nmode = bounce\nmode = random\n").unwrap();
        assert_eq!(config.tls_key, None);
        assert_eq!(config.mode, Mode::Random);
    }

    #[test]
    fn legacy_values_are_checked() {
        for (text, option) in [
            ("timeout = 181", "timeout"),
            ("delay = 61", "delay"),
            ("mode = sideways", "mode"),
            ("dynamic_switch = yes", "dynamic_switch"),
            ("workers = 0", "workers"),
            ("max_message_size = lots", "max_message_size"),
            ("listen = :25, 0.0.0.0:25", "listen"),
            ("listen = :25 mode=nope", "listen"),
            ("listen = :25,", "listen"),
            ("tls_listen = :465", "tls_cert"),
        ] {
            let err = legacy(text).unwrap_err();
            assert_eq!(err.option.as_deref(), Some(option), "{text}: {err}");
            assert!(err.to_string().starts_with("blackhole.conf: option `"));
        }
    }

    #[test]
    fn legacy_line_without_equals() {
        let err = legacy("timeout = 30\n\n  # fine\nlisten :25\n").unwrap_err();
        assert_eq!(err.option, None);
        assert!(err.message.contains("line 4"), "{err}");
        assert!(err.message.contains("listen :25"), "{err}");
        assert_eq!(err.file, "blackhole.conf");
    }

    #[test]
    fn neither_format() {
        // A .toml file gets the TOML error, with its position.
        let text = "listen = [\":25\"\nmode = \"accept\"\n";
        let err = toml(text).unwrap_err();
        assert_eq!(err.option, None);
        assert!(err.message.contains("not valid TOML at line"), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        // Anything else gets the legacy error.
        let err = legacy("this is not a config\n").unwrap_err();
        assert!(err.message.contains("line 1"), "{err}");
        assert!(!err.message.contains("TOML at"), "{err}");
    }

    #[test]
    fn display_is_one_line() {
        let err = ConfigError {
            file: "/etc/blackhole.toml".to_owned(),
            option: Some("timeout".to_owned()),
            message: "bad".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "/etc/blackhole.toml: option `timeout`: bad"
        );
        let err = ConfigError {
            option: None,
            ..err
        };
        assert_eq!(err.to_string(), "/etc/blackhole.toml: bad");
        let err = ConfigError {
            message: "`a\r\nb` is bad".to_owned(),
            ..err
        };
        assert_eq!(err.to_string(), "/etc/blackhole.toml: `a\\r\\nb` is bad");
    }

    fn scratch_file(name: &str, contents: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("blackhole-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn load_reads_the_named_file() {
        let path = scratch_file("load.toml", "listen = [\"127.0.0.1:0\"]\nworkers = 2\n");
        let config = load(Some(&path)).unwrap();
        assert_eq!(config.source.as_deref(), Some(path.as_path()));
        assert_eq!(config.workers, 2);

        let missing = path.with_file_name("missing.toml");
        let err = load(Some(&missing)).unwrap_err();
        assert_eq!(err.file, missing.display().to_string());
        assert!(err.message.contains("cannot read"), "{err}");
    }

    #[test]
    fn mail_name_sources() {
        let blank = scratch_file("mailname-blank", "\n   \n");
        let named = scratch_file("mailname", "\n  mx.example.org \nother\n");
        let host = scratch_file("hostname", "box\n");
        let spaced = scratch_file("mailname-spaced", "two words\n");
        let missing = blank.with_file_name("absent");
        assert_eq!(mail_name_from(&[&named, &host]), "mx.example.org");
        assert_eq!(mail_name_from(&[&missing, &blank, &host]), "box");
        assert_eq!(mail_name_from(&[&spaced, &host]), "box");
        assert_eq!(mail_name_from(&[&missing]), "localhost");
        // Without the option it is whatever the host says, never empty.
        let name = Config::default().mail_name();
        assert!(is_host_name_like(&name), "{name:?}");
    }

    /// The field names serde knows `T` by: the list its derived
    /// `Deserialize` hands to `deserialize_struct`.
    fn serde_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        use serde::de::{self, Visitor};
        use std::cell::Cell;

        struct FieldsOf<'a>(&'a Cell<&'static [&'static str]>);

        impl<'de> serde::Deserializer<'de> for FieldsOf<'_> {
            type Error = de::value::Error;

            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("not a struct"))
            }

            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.set(fields);
                Err(de::Error::custom("fields recorded"))
            }

            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }

        let fields = Cell::new(&[][..]);
        let _ = T::deserialize(FieldsOf(&fields));
        fields.get()
    }

    #[test]
    fn raw_options_are_the_table() {
        let names: Vec<&str> = OPTIONS.iter().map(|option| option.name).collect();
        assert_eq!(serde_fields::<RawOptions>(), names.as_slice());
    }

    /// `tls_cert` and `tls_key`, which `tls_listen` needs, except `option`.
    fn tls_companions(option: &str) -> String {
        [("tls_cert", "\"c.pem\""), ("tls_key", "\"k.pem\"")]
            .iter()
            .filter(|(name, _)| *name != option)
            .map(|(name, value)| format!("{name} = {value}\n"))
            .collect()
    }

    #[test]
    fn every_option_is_accepted() {
        for option in OPTIONS {
            let base = tls_companions(option.name);
            let without = toml(&tls_companions("")).unwrap();
            for example in option.examples {
                let text = format!("{base}{} = {example}\n", option.name);
                let with = toml(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
                assert_ne!(with, without, "{text:?} changed nothing");
            }
            // The original's format knows every option too; empty is unset.
            let text = format!("{} =\n", option.name);
            assert!(legacy(&text).is_ok(), "{text:?}");
        }
        // Nothing outside the table.
        for key in ["listen_on", "Listen", "server", "tls", "max_connection"] {
            option_error(&format!("{key} = 1"), key);
            let err = legacy(&format!("{key} = 1")).unwrap_err();
            assert_eq!(err.option.as_deref(), Some(key));
        }
    }

    #[test]
    fn documented_defaults_are_the_defaults() {
        let mut spelled = 0;
        for option in OPTIONS {
            // A default the file could spell must mean what leaving the
            // option out means; the others are words, not TOML.
            let text = format!("{} = {}", option.name, option.default);
            if text.parse::<toml::Table>().is_ok() {
                let mut config = toml(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
                config.source = None;
                assert_eq!(config, Config::default(), "{text:?}");
                spelled += 1;
            }
        }
        assert_eq!(
            spelled, 7,
            "listen, tls_listen, timeout, mode, size, switch, workers"
        );
    }

    #[test]
    fn documented_limits_are_the_limits() {
        let doc = |name: &str| {
            OPTIONS
                .iter()
                .find(|option| option.name == name)
                .map(|option| option.doc)
                .unwrap()
        };
        let limits = [
            ("timeout", 1, u64::from(MAX_TIMEOUT_SECS)),
            ("delay", 0, u64::from(MAX_DELAY_SECS)),
            ("max_message_size", 1, MAX_MAX_MESSAGE_SIZE),
            ("max_connections", 1, u64::from(MAX_MAX_CONNECTIONS)),
            ("workers", 1, u64::from(MAX_WORKERS)),
        ];
        for (name, min, max) in limits {
            let range = format!("{min} to {max}");
            assert!(doc(name).contains(&range), "{name}: doc should say {range}");
            toml(&format!("{name} = {min}")).unwrap();
            toml(&format!("{name} = {max}")).unwrap();
            option_error(&format!("{name} = {}", max + 1), name);
            if min > 0 {
                option_error(&format!("{name} = {}", min - 1), name);
            }
        }
        assert!(doc("listen").contains(&format!("0 to {MAX_DELAY_SECS}")));
        assert!(doc("mode").contains("bounce") && doc("mode").contains("random"));
    }

    const SHIPPED: &str = include_str!("../../blackhole.toml");

    /// The option a line of the shipped file sets, or would set once
    /// uncommented (`name = ...` or `# name = ...`).
    fn shipped_setting(line: &str) -> Option<(&str, bool)> {
        let (line, commented) = match line.strip_prefix("# ") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let (name, _) = line.split_once(" = ")?;
        let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        plain.then_some((name, commented))
    }

    #[test]
    fn shipped_file_shows_every_option_in_order() {
        let named: Vec<&str> = SHIPPED
            .lines()
            .filter_map(shipped_setting)
            .map(|(name, _)| name)
            .collect();
        for name in &named {
            assert!(is_option(name), "blackhole.toml sets unknown option {name}");
        }
        let mut first: Vec<&str> = Vec::new();
        for name in named {
            if !first.contains(&name) {
                first.push(name);
            }
        }
        let table: Vec<&str> = OPTIONS.iter().map(|option| option.name).collect();
        assert_eq!(
            first, table,
            "blackhole.toml should show every option, as `name = ` or `# name = `, in the table's order"
        );
    }

    #[test]
    fn shipped_suggestions_parse() {
        // Uncommenting the suggestions (one per option at a time, the first
        // for the others) still gives a valid file.
        let lines: Vec<&str> = SHIPPED.lines().collect();
        let suggestions: Vec<(usize, &str)> = lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| match shipped_setting(line) {
                Some((name, true)) => Some((i, name)),
                _ => None,
            })
            .collect();
        assert!(suggestions.len() >= 8, "{suggestions:?}");
        for &(chosen, chosen_name) in &suggestions {
            let mut taken: Vec<&str> = Vec::new();
            let text: String = lines
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    let name = suggestions.iter().find(|(at, _)| *at == i).map(|(_, n)| *n);
                    let uncomment = match name {
                        Some(name) if name == chosen_name => i == chosen,
                        Some(name) if !taken.contains(&name) => {
                            taken.push(name);
                            true
                        }
                        _ => false,
                    };
                    let line = if uncomment { &line[2..] } else { line };
                    format!("{line}\n")
                })
                .collect();
            let config = toml(&text).unwrap_or_else(|err| panic!("line {}: {err}", chosen + 1));
            assert!(config.tls_cert.is_some() && config.pidfile.is_some());
        }
    }

    #[test]
    fn shipped_file_parses() {
        let config = parse(
            include_str!("../../blackhole.toml"),
            Path::new("blackhole.toml"),
        )
        .unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].addr, v4([127, 0, 0, 1], 2525));
        assert!(!config.listeners[0].has_flags());
        let expected = Config {
            source: config.source.clone(),
            listeners: config.listeners.clone(),
            ..Config::default()
        };
        assert_eq!(config, expected);
    }
}
