//! The TOML format and the one intermediate form, [`RawOptions`], that both formats produce:
//! a table of known option names, each value still unchecked. It also words TOML syntax
//! errors on one line.

use serde::Deserialize;
use toml::Value;

use super::error::Problem;
use super::options::OPTIONS;

/// The options as found in either format, before validation. Legacy files
/// give every value as a string; TOML files may give strings too (an
/// original file that happens to be valid TOML means the same thing).
/// Strings come trimmed, and a blank one is left out: in both formats an
/// empty value means the option is not set.
///
/// One field per entry of [`OPTIONS`], in its order (a test checks it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOptions {
    pub(super) listen: Option<Value>,
    pub(super) tls_listen: Option<Value>,
    pub(super) tls_cert: Option<Value>,
    pub(super) tls_key: Option<Value>,
    pub(super) tls_dhparams: Option<Value>,
    pub(super) timeout: Option<Value>,
    pub(super) delay: Option<Value>,
    pub(super) mode: Option<Value>,
    pub(super) max_message_size: Option<Value>,
    pub(super) dynamic_switch: Option<Value>,
    pub(super) chunking: Option<Value>,
    pub(super) mailname: Option<Value>,
    pub(super) max_connections: Option<Value>,
    pub(super) seed: Option<Value>,
    pub(super) workers: Option<Value>,
    pub(super) user: Option<Value>,
    pub(super) group: Option<Value>,
    pub(super) pidfile: Option<Value>,
    pub(super) metrics_listen: Option<Value>,
    pub(super) event_log: Option<Value>,
    pub(super) proxy_trusted: Option<Value>,
    /// The `[greylist]` table.
    pub(super) greylist: Option<Value>,
    /// `[[rule]]` tables.
    pub(super) rule: Option<Value>,
}

pub(super) fn is_option(key: &str) -> bool {
    OPTIONS.iter().any(|option| option.name == key)
}

/// The header of `key`'s tables (`[key]` or `[[key]]`), when it is written as tables.
pub(super) fn table_header(key: &str) -> Option<String> {
    OPTIONS
        .iter()
        .find(|option| option.name == key)
        .and_then(|option| option.header())
}

pub(super) fn unknown_option(key: &str) -> Problem {
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

/// The options of a parsed TOML table, which the original format builds too.
pub(super) fn options(mut table: toml::Table) -> Result<RawOptions, Problem> {
    // Checked here rather than left to serde so the message can name the
    // option in `ConfigError::option`; `deny_unknown_fields` stays as the
    // guarantee that nothing is silently dropped.
    if let Some(key) = table.keys().find(|key| !is_option(key)) {
        return Err(unknown_option(key));
    }
    table.retain(|_, value| match value {
        Value::String(s) => {
            *s = s.trim().to_owned();
            !s.is_empty()
        }
        _ => true,
    });
    table
        .try_into::<RawOptions>()
        .map_err(|err| Problem::general(err.message().to_owned()))
}

/// A TOML syntax error on one line, with its position.
pub(super) fn describe_error(err: &toml::de::Error, text: &str) -> String {
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
