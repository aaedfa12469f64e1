//! The option values: one reader per kind (number, boolean, text, path, mode, delay, mail
//! name, listener list) and the `build` pass that checks each against its range, checks the
//! options against each other and fills in the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Value;

use super::error::Problem;
use super::listener::{ListenerSpec, parse_listener, parse_socket_addr};
use super::toml_file::RawOptions;
use super::{Cidr, Config, DelayRange, Mode, is_host_name_like};
use super::{greylist_table, rule_table};
use crate::smtp::decimal;
use crate::smtp::policy::MAX_DELAY_SECS;

/// Longest idle timeout, in seconds (the original's cap).
pub(super) const MAX_TIMEOUT_SECS: u32 = 180;
pub(super) const MAX_WORKERS: u32 = 256;
/// Far beyond what one process can hold open; a typo guard, not a tuning knob.
pub(super) const MAX_MAX_CONNECTIONS: u32 = 1_000_000;
/// 1 GiB: message bytes are counted, never stored, but the number is
/// advertised in EHLO and a larger one is a typo more often than a wish.
pub(super) const MAX_MAX_MESSAGE_SIZE: u64 = 1_073_741_824;
/// The largest integer a TOML file can hold, so that both ways of writing a seed (a number
/// or a string of digits) reach the same values.
pub(super) const MAX_SEED: u64 = i64::MAX as u64;
/// Listeners, `listen` and `tls_listen` together: the metrics keep per-listener counters in
/// fixed tables.
pub(super) use crate::report::tally::MAX_LISTENERS;
/// Entries in `proxy_trusted`: each connection to a `proxy` listener is checked against them.
pub(super) const MAX_PROXY_TRUSTED: usize = 1024;

/// Validates the raw options and fills in defaults. `source` is left unset.
pub(super) fn build(raw: RawOptions) -> Result<Config, Problem> {
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
    check_listener_count(&all)?;
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

    let metrics_listen = metrics_listen(raw.metrics_listen, &all)?;

    // Last, as the tables come last in the file.
    let greylist = greylist_table::greylist(raw.greylist)?;
    let rules = rule_table::rules(raw.rule, &all)?;

    Ok(Config {
        source: None,
        listeners: all,
        tls_cert,
        tls_key,
        tls_dhparams,
        user: text(raw.user, "user")?,
        group: text(raw.group, "group")?,
        pidfile: path(raw.pidfile, "pidfile")?,
        metrics_listen,
        event_log: event_log(raw.event_log)?,
        proxy_trusted: proxy_trusted(raw.proxy_trusted)?.unwrap_or(defaults.proxy_trusted),
        timeout_secs,
        delay: delay(raw.delay)?,
        mode: mode(raw.mode)?.unwrap_or(defaults.mode),
        max_message_size,
        dynamic_switch: boolean(raw.dynamic_switch, "dynamic_switch")?
            .unwrap_or(defaults.dynamic_switch),
        chunking: boolean(raw.chunking, "chunking")?.unwrap_or(defaults.chunking),
        workers,
        max_connections,
        seed: number(raw.seed, "seed", 0, MAX_SEED, "")?,
        mailname: mailname(raw.mailname)?,
        rules,
        greylist,
    })
}

/// A whole number from 1 to `max`, as a u32.
fn count(value: Option<Value>, option: &str, max: u32, unit: &str) -> Result<Option<u32>, Problem> {
    let n = number(value, option, 1, u64::from(max), unit)?;
    // `number` checked `n <= max`, so it fits.
    Ok(n.map(|n| u32::try_from(n).unwrap_or(max)))
}

pub(super) fn wrong_type(option: &str, expected: &str, found: &Value) -> Problem {
    Problem::option(
        option,
        format!("expected {expected}, found {}", found.type_str()),
    )
}

/// A string option.
fn text(value: Option<Value>, option: &str) -> Result<Option<String>, Problem> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(option, "a string", &other)),
    }
}

fn path(value: Option<Value>, option: &str) -> Result<Option<PathBuf>, Problem> {
    Ok(text(value, option)?.map(PathBuf::from))
}

/// A whole number in `min..=max`, given as an integer or a string of
/// digits.
pub(super) fn number(
    value: Option<Value>,
    option: &str,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<Option<u64>, Problem> {
    let allowed = || match unit {
        "" => format!("give a whole number from {min} to {max}"),
        unit => format!("give a whole number of {unit} from {min} to {max}"),
    };
    let (n, shown) = match value {
        None => return Ok(None),
        Some(Value::Integer(i)) => match u64::try_from(i) {
            Ok(n) => (n, i.to_string()),
            Err(_) => {
                return Err(Problem::option(
                    option,
                    format!("a negative value is not allowed: {}", allowed()),
                ));
            }
        },
        Some(Value::String(s)) => match decimal::saturating(s.as_bytes()) {
            Some(n) => (n, s),
            None => {
                return Err(Problem::option(
                    option,
                    format!("`{s}` is not a number: {}", allowed()),
                ));
            }
        },
        Some(other) => return Err(wrong_type(option, "a whole number", &other)),
    };
    if (min..=max).contains(&n) {
        Ok(Some(n))
    } else {
        Err(Problem::option(
            option,
            format!("`{shown}` is out of range: {}", allowed()),
        ))
    }
}

fn boolean(value: Option<Value>, option: &str) -> Result<Option<bool>, Problem> {
    match value {
        None => Ok(None),
        Some(Value::Boolean(b)) => Ok(Some(b)),
        Some(Value::String(s)) => {
            if s.eq_ignore_ascii_case("true") {
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
        Some(Value::String(s)) => parse_delay(&s),
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
    let Some(entries) = string_list(
        value,
        option,
        "an array of strings like [\":25\"]",
        "entries that are strings like \":25\"",
    )?
    else {
        return Ok(None);
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

/// At most [`MAX_LISTENERS`], named by the option that went past it.
fn check_listener_count(listeners: &[ListenerSpec]) -> Result<(), Problem> {
    let Some(extra) = listeners.get(MAX_LISTENERS) else {
        return Ok(());
    };
    let option = if extra.tls { "tls_listen" } else { "listen" };
    Err(Problem::option(
        option,
        format!(
            "{} listeners are too many: listen and tls_listen together may have at most \
             {MAX_LISTENERS} entries; remove some (one wildcard address such as \":25\" \
             covers every address of the host)",
            listeners.len()
        ),
    ))
}

/// `metrics_listen`: one `"[ADDRESS]:PORT"`, not on a port an SMTP listener binds.
fn metrics_listen(
    value: Option<Value>,
    listeners: &[ListenerSpec],
) -> Result<Option<SocketAddr>, Problem> {
    let option = "metrics_listen";
    let Some(entry) = text(value, option)? else {
        return Ok(None);
    };
    let addr = parse_socket_addr(&entry).map_err(|message| {
        Problem::option(
            option,
            format!("{message}; e.g. metrics_listen = \"127.0.0.1:9025\""),
        )
    })?;
    if let Some(smtp) = listeners.iter().find(|l| same_socket(l.addr, addr)) {
        return Err(Problem::option(
            option,
            format!(
                "`{entry}` is the address of the SMTP listener `{}`; give the metrics a port \
                 of their own, e.g. metrics_listen = \"127.0.0.1:9025\"",
                smtp.text
            ),
        ));
    }
    Ok(Some(addr))
}

/// Whether binding both would collide: one port (not 0, which picks a free one), one address
/// family, and one address or a wildcard on either side. IPv6 listeners are IPv6-only, so
/// `:::25` and `:25` do not collide.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `event_log`: a file name, or `-` for standard output.
fn event_log(value: Option<Value>) -> Result<Option<PathBuf>, Problem> {
    let option = "event_log";
    let Some(name) = text(value, option)? else {
        return Ok(None);
    };
    let problem = if name.contains(char::is_control) {
        "has a control character"
    } else if name.ends_with('/') {
        "ends with / and so names a directory"
    } else {
        return Ok(Some(PathBuf::from(name)));
    };
    Err(Problem::option(
        option,
        format!(
            "`{name}` {problem}: give the file to append to, e.g. \
             event_log = \"/var/log/blackhole/events.json\", or \"-\" for standard output"
        ),
    ))
}

/// `proxy_trusted`: a list of address blocks, or (as in the original's format) one string
/// of comma-separated blocks. `None` when unset.
fn proxy_trusted(value: Option<Value>) -> Result<Option<Vec<Cidr>>, Problem> {
    address_blocks(
        value,
        "proxy_trusted",
        MAX_PROXY_TRUSTED,
        "an empty list trusts no proxy: name the load balancers' addresses, \
         e.g. proxy_trusted = [\"10.0.0.0/8\", \"::1\"]",
    )
}

/// An option of address blocks (`proxy_trusted`, a rule's `client`): an array of them, or
/// one string of comma-separated blocks; not empty (`empty` says why), at most `max`.
/// `None` when unset.
pub(super) fn address_blocks(
    value: Option<Value>,
    option: &'static str,
    max: usize,
    empty: &str,
) -> Result<Option<Vec<Cidr>>, Problem> {
    let Some(entries) = string_list(
        value,
        option,
        "address blocks like \"10.0.0.0/8\", in a list",
        "address blocks as strings like \"10.0.0.0/8\"",
    )?
    else {
        return Ok(None);
    };
    if entries.is_empty() {
        return Err(Problem::option(option, empty));
    }
    if entries.len() > max {
        return Err(Problem::option(
            option,
            format!("{} entries: at most {max}", entries.len()),
        ));
    }
    entries
        .iter()
        .map(|entry| {
            entry
                .trim()
                .parse::<Cidr>()
                .map_err(|message| Problem::option(option, message))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// An option that lists strings: an array of them, or (as in the original's format) one
/// string of comma-separated entries. `None` when unset. `expected` says what the option
/// takes, `entries` what each entry must be.
fn string_list(
    value: Option<Value>,
    option: &str,
    expected: &str,
    entries: &str,
) -> Result<Option<Vec<String>>, Problem> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.split(',').map(str::to_owned).collect())),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(wrong_type(option, entries, &other)),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(wrong_type(option, expected, &other)),
    }
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

/// A delay written `N` or `MIN-MAX`, in seconds, at most 60.
pub(super) fn parse_delay(s: &str) -> Result<DelayRange, String> {
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
