//! The `[[rule]]` tables, each read into a checked [`Rule`]. The values check themselves (the
//! types of `crate::smtp::rules`); this file reads TOML into them, resolves `listener` to the
//! listener's index, checks the keys against each other, and makes every problem name the
//! rule by its number and name. Which keys exist comes from the documented table
//! ([`super::options::OPTIONS`], entry `rule`); a test checks it against [`RawRule`].

use serde::Deserialize;
use toml::Value;

use super::error::Problem;
use super::listener::{ListenerSpec, parse_socket_addr};
use super::options::{KeyDoc, OPTIONS};
use super::values::{MAX_MAX_MESSAGE_SIZE, address_blocks, number, wrong_type};
use crate::smtp::rules::{Cidr, Glob, Probability, Rule, RuleDelay, Stage};

/// Rules in one file: each command tries them in order, so this bounds the work per command.
pub(super) const MAX_RULES: usize = 1000;
/// Longest rule name, in characters: it is a log field and a metric label.
pub(super) const MAX_RULE_NAME: usize = 100;
/// Entries in one rule's `client` list.
pub(super) const MAX_RULE_CLIENTS: usize = 1024;
/// Fastest `throttle`, in bytes per second: beyond it a throttle is no throttle.
pub(super) const MAX_THROTTLE: u64 = 1_000_000_000;
/// The largest `first` and `every`: the largest integer a TOML file can hold.
pub(super) const MAX_RULE_COUNT: u64 = i64::MAX as u64;

/// One table's keys, before they are checked: one field per documented key, in its order
/// (a test checks it), but `name`, which is read first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    on: Option<Value>,
    #[serde(rename = "match")]
    subject: Option<Value>,
    client: Option<Value>,
    listener: Option<Value>,
    probability: Option<Value>,
    first: Option<Value>,
    every: Option<Value>,
    rate: Option<Value>,
    reply: Option<Value>,
    delay: Option<Value>,
    disconnect: Option<Value>,
    after_bytes: Option<Value>,
    throttle: Option<Value>,
}

/// The keys a rule may have, as documented.
pub(super) fn rule_keys() -> &'static [KeyDoc] {
    OPTIONS
        .iter()
        .find(|option| option.name == "rule")
        .map_or(&[], |option| option.keys())
}

/// `rule`: the `[[rule]]` tables, in file order, read against the configuration's
/// `listeners`.
pub(super) fn rules(
    value: Option<Value>,
    listeners: &[ListenerSpec],
) -> Result<Vec<Rule>, Problem> {
    let tables = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(tables)) => tables,
        Some(other) => {
            return Err(wrong_type(
                "rule",
                "[[rule]] tables (an array of tables)",
                &other,
            ));
        }
    };
    if tables.len() > MAX_RULES {
        return Err(Problem::option(
            "rule",
            format!("{} rules: at most {MAX_RULES}", tables.len()),
        ));
    }
    let mut rules = Vec::with_capacity(tables.len());
    for (index, table) in tables.into_iter().enumerate() {
        let rule = rule(table, index + 1, listeners, &rules)?;
        rules.push(rule);
    }
    Ok(rules)
}

/// Rule number `number`, which comes after `earlier`.
fn rule(
    value: Value,
    number: usize,
    listeners: &[ListenerSpec],
    earlier: &[Rule],
) -> Result<Rule, Problem> {
    let Value::Table(mut table) = value else {
        return Err(wrong_type("rule", "a table of keys", &value).in_rule(number, None));
    };
    // The name first, so that every later problem can say which rule it is in.
    let name = name(table.remove("name")).map_err(|p| p.in_rule(number, None))?;
    let in_rule = |problem: Problem| problem.in_rule(number, name.as_deref());
    let full_name = name.clone().unwrap_or_else(|| format!("rule {number}"));
    if let Some(other) = earlier.iter().position(|rule| rule.name == full_name) {
        return Err(in_rule(Problem::option(
            "name",
            format!(
                "rule {} is called `{full_name}` too: give each rule a name of its own",
                other + 1
            ),
        )));
    }
    let raw = raw_rule(table).map_err(in_rule)?;
    let rule = build(raw, full_name, listeners).map_err(in_rule)?;
    check_together(&rule).map_err(in_rule)?;
    Ok(rule)
}

/// A table's keys, known ones only, strings trimmed as everywhere in the file.
fn raw_rule(mut table: toml::Table) -> Result<RawRule, Problem> {
    // Checked here rather than left to serde so the message can name the key and list the
    // others; `deny_unknown_fields` stays as the guarantee that nothing is dropped. (`name`
    // is known, and taken out already.)
    if let Some(key) = table
        .keys()
        .find(|key| !rule_keys().iter().any(|k| k.name == *key))
    {
        let names: Vec<&str> = rule_keys().iter().map(|k| k.name).collect();
        return Err(Problem::option(
            key,
            format!(
                "unknown key; a rule's keys are {} (blackhole --help-config describes them)",
                names.join(", ")
            ),
        ));
    }
    for (_, value) in table.iter_mut() {
        trim(value);
    }
    table
        .try_into::<RawRule>()
        .map_err(|err| Problem::general(err.message().to_owned()))
}

fn trim(value: &mut Value) {
    match value {
        Value::String(s) => *s = s.trim().to_owned(),
        Value::Array(items) => items.iter_mut().for_each(trim),
        _ => {}
    }
}

/// Every key read into its type; `name` has been read already.
fn build(raw: RawRule, name: String, listeners: &[ListenerSpec]) -> Result<Rule, Problem> {
    let RawRule {
        on,
        subject,
        client,
        listener: at,
        probability: chance,
        first,
        every,
        rate,
        reply,
        delay: wait,
        disconnect,
        after_bytes,
        throttle,
    } = raw;
    let on = text(on, "on", str::parse::<Stage>)?.ok_or_else(|| {
        Problem::option(
            "on",
            "missing: every rule says where it applies, e.g. on = \"rcpt\"",
        )
    })?;
    let mut rule = Rule::new(name, on);
    rule.subject = text(subject, "match", Glob::new)?;
    rule.clients = clients(client)?;
    rule.listener = listener(at, listeners)?;
    rule.probability = probability(chance)?;
    rule.first = number(first, "first", 1, MAX_RULE_COUNT, "")?;
    rule.every = number(every, "every", 1, MAX_RULE_COUNT, "")?;
    rule.rate = text(rate, "rate", str::parse)?;
    rule.reply = text(reply, "reply", str::parse)?;
    rule.delay = delay(wait)?;
    rule.disconnect = text(disconnect, "disconnect", str::parse)?;
    let size_limit = MAX_MAX_MESSAGE_SIZE;
    rule.after_bytes = number(after_bytes, "after_bytes", 1, size_limit, "bytes")?;
    let throttle = number(throttle, "throttle", 1, MAX_THROTTLE, "bytes per second")?;
    // `number` checked it is at most MAX_THROTTLE, which fits.
    rule.throttle = throttle.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Ok(rule)
}

/// The keys that only make sense with others, or not with others.
fn check_together(rule: &Rule) -> Result<(), Problem> {
    if !rule.has_effect() {
        return Err(Problem::general(
            "no effect: a rule does something when it fires; give it at least one of \
             reply, delay, disconnect and throttle",
        ));
    }
    if rule.reply.is_some() && rule.disconnect.is_some() {
        return Err(Problem::option(
            "reply",
            "not with disconnect, which says its own words (nothing for \"close\", a 421 \
             for \"421\"): leave out one of them",
        ));
    }
    if rule.after_bytes.is_some() && (rule.on != Stage::Message || rule.disconnect.is_none()) {
        return Err(Problem::option(
            "after_bytes",
            "cuts a message off, so it needs on = \"message\" and disconnect",
        ));
    }
    Ok(())
}

/// A string key, read by `parse`.
fn text<T>(
    value: Option<Value>,
    key: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, Problem> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => parse(&s)
            .map(Some)
            .map_err(|message| Problem::option(key, message)),
        Some(other) => Err(wrong_type(key, "a string", &other)),
    }
}

/// `name`: one line, not empty, not too long. Not there: `None`.
fn name(value: Option<Value>) -> Result<Option<String>, Problem> {
    let Some(mut value) = value else {
        return Ok(None);
    };
    trim(&mut value);
    let check = |s: &str| {
        if s.is_empty() {
            Err("empty: give the rule a name, or leave name out for `rule N`".to_owned())
        } else if s.chars().any(char::is_control) {
            Err("a name is one line: no line breaks or control characters".to_owned())
        } else if s.chars().count() > MAX_RULE_NAME {
            Err(format!("a name is at most {MAX_RULE_NAME} characters"))
        } else {
            Ok(s.to_owned())
        }
    };
    text(Some(value), "name", check)
}

/// `client`: one block or a list of them.
fn clients(value: Option<Value>) -> Result<Vec<Cidr>, Problem> {
    let blocks = address_blocks(
        value,
        "client",
        MAX_RULE_CLIENTS,
        "an empty list matches no client: leave client out to match every client",
    )?;
    Ok(blocks.unwrap_or_default())
}

/// `listener`: the index of the listener on that socket address.
fn listener(value: Option<Value>, listeners: &[ListenerSpec]) -> Result<Option<usize>, Problem> {
    let Some(address) = text(value, "listener", |s| Ok(s.to_owned()))? else {
        return Ok(None);
    };
    let addr = parse_socket_addr(&address).map_err(|message| {
        Problem::option(
            "listener",
            format!("{message} (give a listener's address, without its flags)"),
        )
    })?;
    let found: Vec<usize> = (0..listeners.len())
        .filter(|&i| listeners[i].addr == addr)
        .collect();
    match found[..] {
        [index] => Ok(Some(index)),
        [] => {
            let entries: Vec<String> = listeners.iter().map(|l| format!("`{}`", l.text)).collect();
            Err(Problem::option(
                "listener",
                format!(
                    "`{address}` is no listener: the listeners are {}",
                    entries.join(", ")
                ),
            ))
        }
        _ => Err(Problem::option(
            "listener",
            format!(
                "`{address}` is {} listeners (port 0 picks a port for each): give the one \
                 the rule is for a port of its own",
                found.len()
            ),
        )),
    }
}

/// `probability`: a number from 0 to 1, integer or float.
fn probability(value: Option<Value>) -> Result<Option<Probability>, Problem> {
    let p = match value {
        None => return Ok(None),
        Some(Value::Integer(i)) => i as f64,
        Some(Value::Float(f)) => f,
        Some(other) => return Err(wrong_type("probability", "a number from 0 to 1", &other)),
    };
    Probability::new(p)
        .map(Some)
        .map_err(|message| Problem::option("probability", message))
}

/// `delay`: seconds as a number, or a string `"N"` or `"MIN-MAX"`.
fn delay(value: Option<Value>) -> Result<Option<RuleDelay>, Problem> {
    let written = match value {
        None => return Ok(None),
        Some(Value::Integer(i)) => i.to_string(),
        Some(Value::Float(f)) => f.to_string(),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(wrong_type(
                "delay",
                "seconds as a number or a string \"MIN-MAX\"",
                &other,
            ));
        }
    };
    written
        .parse()
        .map(Some)
        .map_err(|message| Problem::option("delay", message))
}
