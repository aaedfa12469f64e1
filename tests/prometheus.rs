//! "What the server saw", end to end with real programs. Postfix's `smtp-source` sends a known
//! mix of messages: accepted, bounced by a rule (550 at the final reply) and delayed by a rule
//! (accepted 50 ms late). A real Prometheus scrapes the metrics endpoint every second through
//! the run. Then every counter as Prometheus read it back, the event log as Python's `json`
//! reads it, and the summary lines (on SIGUSR1, at exit) must agree with what the client sent,
//! exactly; `promtool check metrics` must accept the live exposition. A second run stops by
//! itself after its last message (`--stop-after-messages`), with the same account at exit.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use common::prometheus::{Prometheus, http_get};
use common::{
    TempDir, free_port, require_program, run_with_input, run_with_limit, send_signal,
    spawn_blackhole, transcript, wait_for, wait_with_limit,
};

/// Postfix's test client; /usr/sbin is not on every PATH.
const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
const HELO: &str = "client.test";
const RECIPIENT: &str = "rcpt@sink.test";
const ACCEPTED_SENDER: &str = "sender@accept.test";
const DELAYED_SENDER: &str = "slow@delay.test";
const BOUNCED_SENDER: &str = "bounce@refuse.test";
/// Body bytes of each message (smtp-source adds its four header lines).
const BODY_BYTES: u64 = 600;
/// How long the rule holds a delayed message's reply, in ms.
const DELAY_MS: u64 = 50;

/// The two rules that make the mix: matched on the sender, at the final reply.
fn rules() -> String {
    let delay = DELAY_MS as f64 / 1000.0;
    format!(
        r#"
[[rule]]
name = "bounce"
on = "message"
match = "bounce@*"
reply = "550 5.7.1 Refused by rule"

[[rule]]
name = "slow"
on = "message"
match = "slow@*"
delay = "{delay}"
"#
    )
}

/// How long the server, smtp-source, the event log and Prometheus each get to catch up.
const LIMIT: Duration = Duration::from_secs(30);

/// What one run sends.
struct Mix {
    accepted: u64,
    /// Persistent sessions (`-d`) the accepted messages share.
    accepted_sessions: u64,
    /// Each on a connection of its own, this many at once.
    delayed: u64,
    delayed_sessions: u64,
    /// Each by an smtp-source of its own: it gives up at the first refused message.
    bounced: u64,
}

const MIX: Mix = Mix {
    accepted: 2000,
    accepted_sessions: 20,
    delayed: 40,
    delayed_sessions: 8,
    bounced: 6,
};

impl Mix {
    fn messages(&self) -> u64 {
        self.accepted + self.delayed + self.bounced
    }

    fn connections(&self) -> u64 {
        self.accepted_sessions + self.delayed + self.bounced
    }

    /// smtp-source says QUIT on every connection but those where a 550 made it give up.
    fn quits(&self) -> u64 {
        self.connections() - self.bounced
    }
}

/// A blackhole with the metrics endpoint, the event log and the rules; killed on drop.
struct Observed {
    child: Child,
    dir: TempDir,
    smtp: SocketAddr,
    metrics: SocketAddr,
}

impl Observed {
    fn start(args: &[&str]) -> Observed {
        let dir = TempDir::new();
        let smtp = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let events = dir.path().join("events.json");
        let extra = format!(
            "metrics_listen = \"{metrics}\"\nevent_log = \"{}\"\n{}",
            events.display(),
            rules()
        );
        let (child, _) = spawn_blackhole(&dir, args, &smtp.to_string(), &extra);
        let mut server = Observed {
            child,
            dir,
            smtp,
            metrics,
        };
        // Ready when /healthz answers. No SMTP probe: every SMTP connection counted is the
        // client's.
        let ready = wait_for(LIMIT, || {
            let exited = server.child.try_wait().expect("try_wait").is_some();
            assert!(!exited, "blackhole exited:\n{}", server.log());
            http_get(metrics, "/healthz").is_some_and(|(status, _)| status == 200)
        });
        assert!(ready, "no /healthz on {metrics}:\n{}", server.log());
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn events(&self) -> PathBuf {
        self.dir.path().join("events.json")
    }

    /// The summary lines logged so far, from `connections:` on (the log's prefix cut).
    fn summaries(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| line.find("connections: ").map(|at| line[at..].to_owned()))
            .filter(|summary| summary.contains("; messages: "))
            .collect()
    }

    fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        wait_with_limit(&mut self.child, LIMIT)
            .unwrap_or_else(|| panic!("blackhole still running:\n{}", self.log()))
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `smtp-source -s SESSIONS -m MESSAGES`, from `sender` to `RECIPIENT`, to its end;
/// `persistent` (`-d`) sends message after message on each session's connection, otherwise
/// every message has a connection of its own.
fn smtp_source(
    smtp: SocketAddr,
    sender: &str,
    (messages, sessions): (u64, u64),
    persistent: bool,
) -> Output {
    assert!(
        Path::new(SMTP_SOURCE).is_file(),
        "{SMTP_SOURCE} is missing: run .ci/run or `apt-get install postfix`"
    );
    let mut command = Command::new(SMTP_SOURCE);
    command
        .args(["-s", &sessions.to_string(), "-m", &messages.to_string()])
        .args(["-l", &BODY_BYTES.to_string(), "-M", HELO])
        .args(["-f", sender, "-t", RECIPIENT]);
    if persistent {
        command.arg("-d");
    }
    run_with_limit(command.arg(smtp.to_string()), LIMIT)
}

/// Sends the accepted, then the delayed, then the bounced messages of `mix`; `between` runs
/// after the accepted ones.
fn send(smtp: SocketAddr, mix: &Mix, between: impl FnOnce()) {
    let accepted = (mix.accepted, mix.accepted_sessions);
    let out = smtp_source(smtp, ACCEPTED_SENDER, accepted, true);
    assert!(out.status.success(), "{}", transcript(&out));
    between();
    let delayed = (mix.delayed, mix.delayed_sessions);
    let out = smtp_source(smtp, DELAYED_SENDER, delayed, false);
    assert!(out.status.success(), "{}", transcript(&out));
    send_bounced(smtp, mix);
}

fn send_bounced(smtp: SocketAddr, mix: &Mix) {
    thread::scope(|scope| {
        let runs: Vec<_> = (0..mix.bounced)
            .map(|_| scope.spawn(move || smtp_source(smtp, BOUNCED_SENDER, (1, 1), false)))
            .collect();
        for run in runs {
            let out = run.join().expect("an smtp-source run");
            let said = transcript(&out);
            assert!(
                !out.status.success() && said.contains("550 5.7.1 Refused by rule"),
                "{said}"
            );
        }
    });
}

/// Adds up the event log (argv[1]) as Python's `json` reads it, into one JSON object;
/// argv[2] is the delay in ms the slow rule asks for.
const EVENT_LOG_TOTALS: &str = r#"
import sys, json, collections
delay = int(sys.argv[2])
t = dict(messages=0, connections=0, bytes=0, connection_bytes=0,
         connection_messages=0, recipient_count=0, delayed_in_full=0)
keyed = {key: collections.Counter() for key in
         ['codes', 'senders', 'recipients', 'helo', 'rules', 'ended', 'listeners']}
for line in open(sys.argv[1], encoding='utf-8'):
    e = json.loads(line)
    keyed['listeners'][e['listener']] += 1
    if e['type'] == 'message':
        t['messages'] += 1
        t['bytes'] += e['size']
        t['recipient_count'] += e['recipient_count']
        keyed['codes'][str(e['code'])] += 1
        keyed['senders'][e['mail_from']] += 1
        keyed['recipients'].update(e['recipients'])
        keyed['helo'][e['helo']] += 1
        keyed['rules'][str(e['rule'])] += 1
        if e['delay_asked_ms'] == delay and (e['delay_given_ms'] or 0) >= delay:
            t['delayed_in_full'] += 1
    elif e['type'] == 'connection':
        t['connections'] += 1
        t['connection_messages'] += e['messages']
        t['connection_bytes'] += e['bytes']
        keyed['ended'][e['ended']] += 1
    else:
        raise SystemExit('a line of no known type: ' + line)
t.update(keyed)
print(json.dumps(t))
"#;

/// The event log added up by `EVENT_LOG_TOTALS`.
fn event_log_totals(events: &Path) -> Value {
    let python = require_program("python3", "python3");
    let out = run_with_limit(
        Command::new(python)
            .args(["-c", EVENT_LOG_TOTALS])
            .arg(events.as_os_str())
            .arg(DELAY_MS.to_string()),
        LIMIT,
    );
    assert!(out.status.success(), "python: {}", transcript(&out));
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// Waits until the event log holds a line for every message and connection of `mix`.
fn wait_for_event_lines(events: &Path, mix: &Mix) {
    let lines = || {
        std::fs::read(events)
            .map(|text| text.iter().filter(|&&b| b == b'\n').count() as u64)
            .unwrap_or(0)
    };
    let all = mix.messages() + mix.connections();
    wait_for(LIMIT, || lines() >= all);
    assert_eq!(lines(), all, "event log lines");
}

/// Checks the event log against `mix`; returns the message bytes it counted.
fn check_event_log(events: &Path, mix: &Mix, listener: &str) -> u64 {
    let mut totals = event_log_totals(events);
    let bytes = totals["bytes"].as_u64().expect("bytes");
    assert!(bytes >= mix.messages() * BODY_BYTES, "{totals}");
    assert_eq!(totals["connection_bytes"], bytes, "{totals}");
    let object = totals.as_object_mut().expect("an object");
    let ended = object.remove("ended").unwrap_or_default();
    let rules = object.remove("rules").unwrap_or_default();
    let (m, c) = (mix.messages(), mix.connections());
    let expected = json!({
        "messages": m,
        "connections": c,
        "bytes": bytes,
        "connection_bytes": bytes,
        "connection_messages": m,
        "recipient_count": m,
        "delayed_in_full": mix.delayed,
        "codes": {"250": mix.accepted + mix.delayed, "550": mix.bounced},
        "senders": {
            ACCEPTED_SENDER: mix.accepted,
            DELAYED_SENDER: mix.delayed,
            BOUNCED_SENDER: mix.bounced,
        },
        "recipients": {RECIPIENT: m},
        "helo": {HELO: m},
        "listeners": {listener: m + c},
    });
    assert_eq!(totals, expected);
    assert_eq!(rules["bounce"], mix.bounced, "{rules}");
    let other_rules = rules.as_object().expect("rules").keys();
    assert!(
        other_rules
            .into_iter()
            .all(|rule| ["bounce", "slow", "None"].contains(&rule.as_str())),
        "{rules}"
    );
    let ended_total: u64 = ended
        .as_object()
        .expect("ended")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(ended_total, c, "{ended}");
    bytes
}

/// The summary line a run of `mix` ends with, all connections closed.
fn expected_summary(mix: &Mix, bytes: u64) -> String {
    let (c, m, b, d) = (mix.connections(), mix.messages(), mix.bounced, mix.delayed);
    format!(
        "connections: {c} opened, 0 open, 0 refused, 0 timed out; \
         messages: {m} (250: {}, 550: {b}); recipients: {m}; bytes: {bytes}; \
         rules fired: {} (bounce: {b}, slow: {d}); greylist: 0 deferred, 0 passed; \
         event log dropped: 0",
        mix.accepted + d,
        b + d,
    )
}

/// Each query (a `sum`, so one sample whatever the instance labels) and the value the client's
/// run makes it.
fn expected_series(mix: &Mix, listener: &str, bytes: u64) -> Vec<(String, f64)> {
    let (c, m) = (mix.connections() as f64, mix.messages() as f64);
    let counts = [
        (
            format!(r#"blackhole_connections_total{{listener="{listener}",tls="false"}}"#),
            c,
        ),
        ("blackhole_connections_total".into(), c),
        ("blackhole_connections_open".into(), 0.0),
        ("blackhole_connections_refused_total".into(), 0.0),
        ("blackhole_timeouts_total".into(), 0.0),
        ("blackhole_tls_handshakes_total".into(), 0.0),
        (r#"blackhole_commands_total{verb="helo"}"#.into(), c),
        (r#"blackhole_commands_total{verb="mail"}"#.into(), m),
        (r#"blackhole_commands_total{verb="rcpt"}"#.into(), m),
        (r#"blackhole_commands_total{verb="data"}"#.into(), m),
        (
            r#"blackhole_commands_total{verb="quit"}"#.into(),
            mix.quits() as f64,
        ),
        (
            "blackhole_commands_total".into(),
            c + 3.0 * m + mix.quits() as f64,
        ),
        (
            format!(r#"blackhole_messages_total{{listener="{listener}",code="250"}}"#),
            (mix.accepted + mix.delayed) as f64,
        ),
        (
            r#"blackhole_messages_total{code="550"}"#.into(),
            mix.bounced as f64,
        ),
        ("blackhole_messages_total".into(), m),
        ("blackhole_message_bytes_total".into(), bytes as f64),
        ("blackhole_recipients_total".into(), m),
        ("blackhole_auth_total".into(), 0.0),
        (
            r#"blackhole_rule_fired_total{rule="bounce"}"#.into(),
            mix.bounced as f64,
        ),
        (
            r#"blackhole_rule_fired_total{rule="slow"}"#.into(),
            mix.delayed as f64,
        ),
        (
            "blackhole_rule_fired_total".into(),
            (mix.bounced + mix.delayed) as f64,
        ),
        ("blackhole_greylist_total".into(), 0.0),
        ("blackhole_delayed_replies_pending".into(), 0.0),
        ("blackhole_event_log_dropped_total".into(), 0.0),
        ("blackhole_message_size_bytes_count".into(), m),
        ("blackhole_message_size_bytes_sum".into(), bytes as f64),
        (
            r#"blackhole_message_size_bytes_bucket{le="+Inf"}"#.into(),
            m,
        ),
        ("blackhole_session_duration_seconds_count".into(), c),
        (
            "blackhole_delay_lateness_seconds_count".into(),
            mix.delayed as f64,
        ),
    ];
    counts
        .into_iter()
        .map(|(series, value)| (format!("sum({series})"), value))
        .collect()
}

/// The queries whose answers differ from what is expected, with what Prometheus said.
fn mismatches(prometheus: &Prometheus, expected: &[(String, f64)]) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(query, want)| {
            let got = prometheus.value(query);
            (got != Some(*want)).then(|| format!("{query}: {got:?}, expected {want}"))
        })
        .collect()
}

/// Waits until every query gives what is expected, as it will after the next scrape.
fn settle(prometheus: &Prometheus, expected: &[(String, f64)]) {
    let mut wrong = Vec::new();
    let settled = wait_for(LIMIT, || {
        wrong = mismatches(prometheus, expected);
        wrong.is_empty()
    });
    assert!(settled, "as Prometheus read them:\n{}", wrong.join("\n"));
}

#[test]
fn prometheus_reads_back_what_the_client_sent() {
    let mut server = Observed::start(&[]);
    let prometheus = Prometheus::start(server.metrics);
    let listener = server.smtp.to_string();
    // Halfway, Prometheus must have scraped what was sent so far.
    let halfway = [
        (
            "sum(blackhole_messages_total)".to_owned(),
            MIX.accepted as f64,
        ),
        (
            "sum(blackhole_connections_total)".to_owned(),
            MIX.accepted_sessions as f64,
        ),
    ];
    send(server.smtp, &MIX, || settle(&prometheus, &halfway));
    wait_for_event_lines(&server.events(), &MIX);
    let bytes = check_event_log(&server.events(), &MIX, &listener);

    // A scrape after the last message and the last close brings every series to its final
    // value; until then some lag behind.
    settle(&prometheus, &expected_series(&MIX, &listener, bytes));
    // Every scrape, those during the load included, succeeded, and there were several.
    let up = r#"up{job="blackhole"}[10m]"#;
    assert_eq!(prometheus.value(&format!("min_over_time({up})")), Some(1.0));
    let scrapes = prometheus.value(&format!("count_over_time({up})"));
    assert!(scrapes.is_some_and(|n| n >= 2.0), "{scrapes:?} scrapes");

    let (status, text) = http_get(server.metrics, "/metrics").expect("a scrape");
    assert_eq!(status, 200);
    let promtool = require_program("promtool", "prometheus");
    let checked = run_with_input(
        Command::new(promtool).args(["check", "metrics"]),
        text.as_bytes(),
        LIMIT,
    );
    let said = transcript(&checked);
    assert!(checked.status.success(), "promtool: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool's lint: {said}");

    // The client's connections all ended as it ended them.
    let ended = event_log_totals(&server.events())["ended"].take();
    assert_eq!(
        ended,
        json!({"quit": MIX.quits(), "reset": MIX.bounced}),
        "why connections ended"
    );

    let summary = expected_summary(&MIX, bytes);
    send_signal("USR1", server.child.id());
    wait_for(LIMIT, || !server.summaries().is_empty());
    assert_eq!(
        server.summaries(),
        std::slice::from_ref(&summary),
        "on SIGUSR1"
    );
    send_signal("TERM", server.child.id());
    let status = server.wait_for_exit();
    assert!(status.success(), "{status}:\n{}", server.log());
    assert_eq!(server.summaries(), [summary.clone(), summary], "at exit");
}

#[test]
fn a_bounded_run_stops_after_its_last_message_with_the_same_account() {
    let total = MIX.messages().to_string();
    let mut server = Observed::start(&["--stop-after-messages", &total]);
    send(server.smtp, &MIX, || {});
    let status = server.wait_for_exit();
    assert!(status.success(), "{status}:\n{}", server.log());
    // The writer has finished its lines before the server exits.
    let bytes = check_event_log(&server.events(), &MIX, &server.smtp.to_string());
    assert_eq!(
        server.summaries(),
        [expected_summary(&MIX, bytes)],
        "the exit summary"
    );
}
