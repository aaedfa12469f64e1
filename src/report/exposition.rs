//! The Prometheus text format (version 0.0.4) of a [`Totals`]: every family with its HELP
//! and TYPE, even with no samples yet, under the names SPEC.md promises.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use super::histogram::{Buckets, DELAY_LATENESS, HistogramTotals, MESSAGE_SIZE, SESSION_DURATION};
use super::tally::{AUTH_RESULTS, MECHANISMS, Totals, VERBS, message_of_key};

/// What the numbers in a [`Totals`] stand for, from the running configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Labels<'a> {
    /// Each listener's address text (`127.0.0.1:2525`), by listener index.
    pub listeners: &'a [String],
    /// The configured rules' names; firings of a rule no longer configured show as `other`.
    pub rules: &'a [String],
}

/// The standard `process_*` figures, summed over the serving processes by whoever read them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    /// The oldest process's start, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// The label value shown for what a bounded table or the labels could not name.
pub const OTHER: &str = "other";

/// Appends the text format of `totals` to `out`; `process` adds the `process_*` families.
pub fn render(
    totals: &Totals,
    labels: &Labels,
    process: Option<&ProcessFigures>,
    out: &mut Vec<u8>,
) {
    let mut text = Text::default();
    connections(&mut text, totals, labels);
    commands_and_auth(&mut text, totals);
    messages(&mut text, totals, labels);
    rules_and_greylist(&mut text, totals, labels);
    histograms(&mut text, totals);
    if let Some(process) = process {
        process_families(&mut text, process);
    }
    out.extend_from_slice(text.0.as_bytes());
}

/// The text being built. Writing to a `String` cannot fail: results are dropped on purpose.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{label}=\"");
                escape_label_value(&mut self.0, value);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the text format quotes it: backslash, double quote and newline escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn listener_name<'a>(labels: &'a Labels, index: usize) -> &'a str {
    labels.listeners.get(index).map_or(OTHER, String::as_str)
}

fn bool_text(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn connections(text: &mut Text, totals: &Totals, labels: &Labels) {
    let name = "blackhole_connections_total";
    text.family(
        name,
        "counter",
        "Connections accepted, by listener and TLS from the first byte.",
    );
    let mut by_label: BTreeMap<(&str, bool), u64> = BTreeMap::new();
    for (index, by_tls) in totals.connections_opened.0.iter().enumerate() {
        for (tls, &count) in [false, true].into_iter().zip(by_tls) {
            if count > 0 {
                *by_label
                    .entry((listener_name(labels, index), tls))
                    .or_default() += count;
            }
        }
    }
    for ((listener, tls), count) in by_label {
        text.sample(
            name,
            &[("listener", listener), ("tls", bool_text(tls))],
            count,
        );
    }
    text.single(
        "blackhole_connections_open",
        "gauge",
        "Connections open now.",
        totals.connections_open,
    );
    text.single(
        "blackhole_connections_refused_total",
        "counter",
        "Connections turned away at max_connections.",
        totals.connections_refused,
    );
    text.single(
        "blackhole_timeouts_total",
        "counter",
        "Connections closed for idling past the timeout.",
        totals.timeouts,
    );
    let name = "blackhole_tls_handshakes_total";
    text.family(name, "counter", "TLS handshakes, by result.");
    text.sample(name, &[("result", "ok")], totals.tls_handshakes[1]);
    text.sample(name, &[("result", "failed")], totals.tls_handshakes[0]);
}

fn commands_and_auth(text: &mut Text, totals: &Totals) {
    let name = "blackhole_commands_total";
    text.family(name, "counter", "SMTP commands read, by verb.");
    for ((_, verb), count) in VERBS.iter().zip(totals.commands) {
        text.sample(name, &[("verb", verb)], count);
    }
    let name = "blackhole_auth_total";
    text.family(name, "counter", "AUTH exchanges, by mechanism and result.");
    for (mechanism, by_result) in MECHANISMS.iter().zip(&totals.auth) {
        for (result, count) in AUTH_RESULTS.iter().zip(by_result) {
            let labels = [("mechanism", *mechanism), ("result", result.as_str())];
            text.sample(name, &labels, count);
        }
    }
}

fn messages(text: &mut Text, totals: &Totals, labels: &Labels) {
    let name = "blackhole_messages_total";
    text.family(
        name,
        "counter",
        "Messages given a final reply, by listener and reply code.",
    );
    let mut by_label: BTreeMap<(&str, String), u64> = BTreeMap::new();
    for (&key, &count) in &totals.messages {
        let (listener, code) = message_of_key(key);
        *by_label
            .entry((listener_name(labels, listener), code.to_string()))
            .or_default() += count;
    }
    if totals.messages_other > 0 {
        *by_label.entry((OTHER, OTHER.to_owned())).or_default() += totals.messages_other;
    }
    for ((listener, code), count) in &by_label {
        text.sample(name, &[("listener", listener), ("code", code)], count);
    }
    text.single(
        "blackhole_message_bytes_total",
        "counter",
        "Octets of message data received.",
        totals.message_bytes,
    );
    text.single(
        "blackhole_recipients_total",
        "counter",
        "Recipients accepted.",
        totals.recipients,
    );
}

fn rules_and_greylist(text: &mut Text, totals: &Totals, labels: &Labels) {
    let name = "blackhole_rule_fired_total";
    text.family(name, "counter", "Rule firings, by rule name.");
    let (named, other) = totals.rules_by_name(labels.rules);
    for (rule, count) in named {
        text.sample(name, &[("rule", rule)], count);
    }
    if other > 0 {
        text.sample(name, &[("rule", OTHER)], other);
    }
    let name = "blackhole_greylist_total";
    text.family(
        name,
        "counter",
        "Recipients greylisting deferred or let pass.",
    );
    text.sample(name, &[("result", "deferred")], totals.greylist[0]);
    text.sample(name, &[("result", "passed")], totals.greylist[1]);
    text.single(
        "blackhole_greylist_entries",
        "gauge",
        "Triplets the greylist holds now.",
        totals.greylist_entries,
    );
    text.single(
        "blackhole_greylist_evicted_total",
        "counter",
        "Triplets evicted from a full greylist.",
        totals.greylist_evicted,
    );
    text.single(
        "blackhole_delayed_replies_pending",
        "gauge",
        "Replies held back by a delay now.",
        totals.delayed_replies_pending,
    );
    text.single(
        "blackhole_event_log_dropped_total",
        "counter",
        "Event lines dropped because the event log fell behind.",
        totals.event_log_dropped,
    );
    text.single(
        "blackhole_proxy_rejected_total",
        "counter",
        "Connections closed for an untrusted or bad PROXY header.",
        totals.proxy_rejected,
    );
}

fn histograms(text: &mut Text, totals: &Totals) {
    let families = [
        (
            "blackhole_message_size_bytes",
            "Size of messages given a final reply.",
            &MESSAGE_SIZE,
            &totals.message_size,
        ),
        (
            "blackhole_session_duration_seconds",
            "Time from accept to close.",
            &SESSION_DURATION,
            &totals.session_duration,
        ),
        (
            "blackhole_delay_lateness_seconds",
            "How late a delayed reply left after its due time.",
            &DELAY_LATENESS,
            &totals.delay_lateness,
        ),
    ];
    for (name, help, buckets, figures) in families {
        histogram(text, name, help, buckets, figures);
    }
}

fn shown(buckets: &Buckets, value: u64) -> f64 {
    value as f64 / buckets.per_shown_unit as f64
}

fn histogram(
    text: &mut Text,
    name: &str,
    help: &str,
    buckets: &Buckets,
    figures: &HistogramTotals,
) {
    text.family(name, "histogram", help);
    let bucket = format!("{name}_bucket");
    let bounds = buckets
        .bounds
        .iter()
        .map(|&b| shown(buckets, b).to_string());
    for (le, count) in bounds
        .chain(["+Inf".to_owned()])
        .zip(figures.cumulative(buckets))
    {
        text.sample(&bucket, &[("le", &le)], count);
    }
    text.sample(&format!("{name}_sum"), &[], shown(buckets, figures.sum));
    text.sample(&format!("{name}_count"), &[], figures.count());
}

fn process_families(text: &mut Text, process: &ProcessFigures) {
    text.single(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
        process.cpu_seconds,
    );
    text.single(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        process.resident_memory_bytes,
    );
    text.single(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        process.virtual_memory_bytes,
    );
    text.single(
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        process.open_fds,
    );
    text.single(
        "process_max_fds",
        "gauge",
        "Limit on open file descriptors.",
        process.max_fds,
    );
    text.single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        process.start_time_seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tally::Tally;
    use crate::smtp::command::Verb;
    use crate::smtp::observer::AuthResult;

    /// Every sample line as `name{labels}` and its value, in order.
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                (series.to_owned(), value.to_owned())
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> String {
        samples(text)
            .into_iter()
            .find(|(s, _)| s == series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .1
    }

    fn rendered(tally: &Tally, labels: &Labels) -> String {
        let mut out = Vec::new();
        render(&Totals::of([tally]), labels, None, &mut out);
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = rendered(&Tally::default(), &Labels::default());
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or_default().to_owned());
            } else if !line.starts_with('#') {
                let series = line.split(['{', ' ']).next().unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        series
                            .strip_suffix(s)
                            .filter(|f| declared.iter().any(|d| d == f))
                    })
                    .unwrap_or(series);
                assert_eq!(declared.last().map(String::as_str), Some(family), "{line}");
            }
        }
        assert_eq!(declared.len(), 20, "{declared:?}");
        for name in &declared {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn figures_appear_under_their_labels() {
        let tally = Tally::default();
        tally.connection_opened(1, true);
        tally.connection_opened(9, false);
        tally.command(Verb::StartTls);
        tally.auth("LOGIN", AuthResult::Refused);
        tally.message(1, 451, 5000);
        tally.rule_fired("say \"no\"");
        tally.delay_lateness(1500);
        let listeners = ["127.0.0.1:2525".to_owned(), "[::1]:465".to_owned()];
        let rules = ["say \"no\"".to_owned(), "never".to_owned()];
        let labels = Labels {
            listeners: &listeners,
            rules: &rules,
        };
        let text = rendered(&tally, &labels);
        let at = |series: &str| value(&text, series);
        assert_eq!(
            at(r#"blackhole_connections_total{listener="[::1]:465",tls="true"}"#),
            "1"
        );
        assert_eq!(
            at(r#"blackhole_connections_total{listener="other",tls="false"}"#),
            "1"
        );
        assert_eq!(at("blackhole_connections_open"), "2");
        assert_eq!(at(r#"blackhole_commands_total{verb="starttls"}"#), "1");
        assert_eq!(at(r#"blackhole_commands_total{verb="mail"}"#), "0");
        assert_eq!(
            at(r#"blackhole_auth_total{mechanism="login",result="refused"}"#),
            "1"
        );
        assert_eq!(
            at(r#"blackhole_messages_total{listener="[::1]:465",code="451"}"#),
            "1"
        );
        assert_eq!(at(r#"blackhole_rule_fired_total{rule="say \"no\""}"#), "1");
        assert_eq!(at(r#"blackhole_rule_fired_total{rule="never"}"#), "0");
        assert_eq!(at(r#"blackhole_message_size_bytes_bucket{le="4096"}"#), "0");
        assert_eq!(
            at(r#"blackhole_message_size_bytes_bucket{le="16384"}"#),
            "1"
        );
        assert_eq!(at("blackhole_message_size_bytes_sum"), "5000");
        assert_eq!(
            at(r#"blackhole_delay_lateness_seconds_bucket{le="0.001"}"#),
            "0"
        );
        assert_eq!(
            at(r#"blackhole_delay_lateness_seconds_bucket{le="0.0025"}"#),
            "1"
        );
        assert_eq!(
            at(r#"blackhole_delay_lateness_seconds_bucket{le="+Inf"}"#),
            "1"
        );
        assert_eq!(at("blackhole_delay_lateness_seconds_sum"), "0.0015");
    }

    #[test]
    fn a_duplicate_rule_name_is_one_series() {
        let tally = Tally::default();
        tally.rule_fired("twice");
        let rules = ["twice".to_owned(), "twice".to_owned(), "idle".to_owned()];
        let labels = Labels {
            listeners: &[],
            rules: &rules,
        };
        let text = rendered(&tally, &labels);
        let series: Vec<_> = samples(&text)
            .into_iter()
            .filter(|(s, _)| s.starts_with("blackhole_rule_fired_total"))
            .collect();
        assert_eq!(series.len(), 2, "{series:?}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, r#"a\\b\"c\nd"#);
    }

    #[test]
    fn process_figures_are_shown_when_given() {
        let figures = ProcessFigures {
            cpu_seconds: 1.25,
            resident_memory_bytes: 4096,
            open_fds: 9,
            ..ProcessFigures::default()
        };
        let mut out = Vec::new();
        render(
            &Totals::default(),
            &Labels::default(),
            Some(&figures),
            &mut out,
        );
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(value(&text, "process_cpu_seconds_total"), "1.25");
        assert_eq!(value(&text, "process_resident_memory_bytes"), "4096");
        assert_eq!(value(&text, "process_open_fds"), "9");
    }
}
