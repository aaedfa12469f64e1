//! The `[greylist]` table, read into checked [`GreylistSettings`]: durations in seconds or
//! with a unit, the reply (a 4xx), the bound on entries, and the keys against each other.
//! Every problem names its key as `greylist.KEY`. Which keys exist comes from the documented
//! table ([`super::options::OPTIONS`], entry `greylist`); a test checks it against
//! [`RawGreylist`].

use serde::Deserialize;
use toml::Value;

use super::error::Problem;
use super::options::{KeyDoc, OPTIONS};
use super::values::{number, wrong_type};
use crate::smtp::decimal;
use crate::smtp::greylist::GreylistSettings;
use crate::smtp::rules::ReplyLine;

const DAY_SECS: u64 = 86_400;
/// Longest `delay`: a day-long wait is already more than any queue would sit through.
pub(super) const MAX_GREYLIST_DELAY_SECS: u64 = DAY_SECS;
/// Longest `expire`: retries stop well before 30 days in every MTA's default.
pub(super) const MAX_GREYLIST_EXPIRE_SECS: u64 = 30 * DAY_SECS;
/// Longest `pass_for`: a year (and a leap day).
pub(super) const MAX_GREYLIST_PASS_FOR_SECS: u64 = 366 * DAY_SECS;
/// Most `max_entries`: at about a hundred bytes each, some 10 GB of memory; a typo guard.
pub(super) const MAX_GREYLIST_ENTRIES: u64 = 100_000_000;

/// The table's keys, before they are checked: one field per documented key, in its order
/// (a test checks it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGreylist {
    delay: Option<Value>,
    expire: Option<Value>,
    pass_for: Option<Value>,
    reply: Option<Value>,
    max_entries: Option<Value>,
}

/// The keys `[greylist]` may have, as documented.
pub(super) fn greylist_keys() -> &'static [KeyDoc] {
    OPTIONS
        .iter()
        .find(|option| option.name == "greylist")
        .map_or(&[], |option| option.keys())
}

/// `greylist`: the settings when the file has a `[greylist]` table, `None` without one.
pub(super) fn greylist(value: Option<Value>) -> Result<Option<GreylistSettings>, Problem> {
    let table = match value {
        None => return Ok(None),
        Some(Value::Table(table)) => table,
        Some(other) => return Err(wrong_type("greylist", "a [greylist] table", &other)),
    };
    let raw = raw_greylist(table)?;
    settings(raw).map(Some)
}

/// The option name a key's problems are reported under.
fn option(key: &str) -> String {
    format!("greylist.{key}")
}

/// The table's keys, known ones only, strings trimmed as everywhere in the file.
fn raw_greylist(mut table: toml::Table) -> Result<RawGreylist, Problem> {
    // Checked here rather than left to serde so the message can name the key and list the
    // others; `deny_unknown_fields` stays as the guarantee that nothing is dropped.
    if let Some(key) = table
        .keys()
        .find(|key| !greylist_keys().iter().any(|k| k.name == *key))
    {
        let names: Vec<&str> = greylist_keys().iter().map(|k| k.name).collect();
        return Err(Problem::option(
            &option(key),
            format!(
                "unknown key; [greylist]'s keys are {} (blackhole --help-config describes \
                 them)",
                names.join(", ")
            ),
        ));
    }
    for (_, value) in table.iter_mut() {
        if let Value::String(s) = value {
            *s = s.trim().to_owned();
        }
    }
    table
        .try_into::<RawGreylist>()
        .map_err(|err| Problem::option("greylist", err.message().to_owned()))
}

/// Every key read and checked, the defaults filled in.
fn settings(raw: RawGreylist) -> Result<GreylistSettings, Problem> {
    let defaults = GreylistSettings::default();
    let delay_ms = duration(raw.delay, "delay", 0, MAX_GREYLIST_DELAY_SECS)?;
    let delay_ms = delay_ms.unwrap_or(defaults.delay_ms);
    let expire_given = raw.expire.is_some();
    let expire_ms = duration(raw.expire, "expire", 1, MAX_GREYLIST_EXPIRE_SECS)?;
    let expire_ms = expire_ms.unwrap_or(defaults.expire_ms);
    // A retry passes once `delay` is over and before `expire` is: expire must be longer.
    if expire_ms <= delay_ms {
        let expire = written(expire_ms / 1000);
        let expire = if expire_given {
            expire
        } else {
            format!("{expire} by default")
        };
        return Err(Problem::option(
            &option("expire"),
            format!(
                "{expire} is not longer than delay ({}): a triplet would be forgotten before \
                 its retry could pass; make expire longer than delay",
                written(delay_ms / 1000)
            ),
        ));
    }
    let pass_for_ms = duration(raw.pass_for, "pass_for", 1, MAX_GREYLIST_PASS_FOR_SECS)?;
    let max_entries = number(
        raw.max_entries,
        &option("max_entries"),
        1,
        MAX_GREYLIST_ENTRIES,
        "entries",
    )?;
    Ok(GreylistSettings {
        delay_ms,
        expire_ms,
        pass_for_ms: pass_for_ms.unwrap_or(defaults.pass_for_ms),
        reply: reply(raw.reply)?.unwrap_or(defaults.reply),
        // `number` checked it is at most MAX_GREYLIST_ENTRIES, which fits.
        max_entries: max_entries.map_or(defaults.max_entries, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        }),
    })
}

/// A duration key, from `min_secs` to `max_secs`, in milliseconds.
fn duration(
    value: Option<Value>,
    key: &str,
    min_secs: u64,
    max_secs: u64,
) -> Result<Option<u64>, Problem> {
    let allowed = || {
        format!(
            "give whole seconds, or a string with a unit: \"90s\", \"15m\", \"4h\", \"36d\"; \
             from {} to {}",
            written(min_secs),
            written(max_secs)
        )
    };
    let (secs, shown) = match value {
        None => return Ok(None),
        Some(Value::Integer(i)) => (u64::try_from(i).ok(), i.to_string()),
        Some(Value::String(s)) => (seconds(&s), format!("\"{s}\"")),
        Some(other) => {
            return Err(wrong_type(
                &option(key),
                "whole seconds, or a string like \"4h\"",
                &other,
            ));
        }
    };
    let Some(secs) = secs else {
        return Err(Problem::option(
            &option(key),
            format!("{shown} is not a duration: {}", allowed()),
        ));
    };
    if !(min_secs..=max_secs).contains(&secs) {
        return Err(Problem::option(
            &option(key),
            format!("{shown} is out of range: {}", allowed()),
        ));
    }
    // At most MAX_GREYLIST_PASS_FOR_SECS, so the product fits.
    Ok(Some(secs.saturating_mul(1000)))
}

/// Seconds written `N`, `Ns`, `Nm`, `Nh` or `Nd`; `None` for anything else. Saturates, so
/// a huge number reads as too large rather than wrapping round to a small one.
fn seconds(s: &str) -> Option<u64> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY_SECS,
        _ => return None,
    };
    decimal::saturating(digits.as_bytes()).map(|n| n.saturating_mul(scale))
}

/// `secs` in the largest unit that writes it whole, as the file would: `"4h"`, `"90s"`.
fn written(secs: u64) -> String {
    let unit = [(DAY_SECS, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(scale, _)| secs > 0 && secs.is_multiple_of(*scale));
    match unit {
        Some((scale, unit)) => format!("\"{}{unit}\"", secs / scale),
        None => format!("\"{secs}s\""),
    }
}

/// `reply`: a reply line whose code defers, 4xx.
fn reply(value: Option<Value>) -> Result<Option<ReplyLine>, Problem> {
    let line = match value {
        None => return Ok(None),
        Some(Value::String(s)) => s
            .parse::<ReplyLine>()
            .map_err(|message| Problem::option(&option("reply"), message))?,
        Some(other) => return Err(wrong_type(&option("reply"), "a string", &other)),
    };
    if line.code() / 100 != 4 {
        return Err(Problem::option(
            &option("reply"),
            format!(
                "a {} does not defer: greylisting asks the client to retry, so give a 4xx \
                 reply, e.g. \"451 4.7.1 Greylisted, try again later\"",
                line.code()
            ),
        ));
    }
    Ok(Some(line))
}
