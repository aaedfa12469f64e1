//! The report room's output read by the programs that will read it: the metrics text by
//! Prometheus's own `promtool check metrics`, the event lines by Python's `json`.

use std::io::Write;
use std::process::{Command, Stdio};

use blackhole::report::event::{ConnectionEvent, Ended, MessageEvent, Origin};
use blackhole::report::exposition::{Labels, ProcessFigures, render};
use blackhole::report::tally::{Tally, Totals, VERBS};
use blackhole::smtp::observer::AuthResult;
use blackhole::smtp::switches::Switches;

/// Runs `program args` with `input` on its standard input; its status and both outputs.
fn run_with_input(program: &str, args: &[&str], input: &[u8]) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child
        .stdin
        .take()
        .expect("a stdin")
        .write_all(input)
        .expect("the input written");
    let output = child.wait_with_output().expect("it ran");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// A tally with some of everything, in two slots as two workers would keep it.
fn busy_totals() -> Totals {
    let (one, two) = (Tally::default(), Tally::default());
    for tally in [&one, &two] {
        tally.connection_opened(0, false);
        tally.connection_opened(1, true);
        tally.connection_closed(250_000);
        tally.tls_handshake(true);
        for (verb, _) in VERBS {
            tally.command(verb);
        }
        tally.message(0, 250, 3000);
        tally.recipient();
        tally.auth("PLAIN", AuthResult::Accepted);
        tally.auth("CRAM-MD5", AuthResult::Cancelled);
        tally.rule_fired("slow \"down\"");
        tally.greylisted(false);
        tally.delayed_reply_pending();
        tally.delay_lateness(800);
    }
    one.connection_refused();
    one.connection_timed_out();
    one.tls_handshake(false);
    one.message(1, 554, 70 * 1024 * 1024);
    one.rule_fired("a rule since removed");
    two.greylisted(true);
    two.greylist_memory(12, 3);
    two.event_log_dropped(4);
    two.proxy_rejected();
    Totals::of([&one, &two])
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

#[test]
fn promtool_accepts_the_metrics_text() {
    let listeners = ["127.0.0.1:2525".to_owned(), "[::1]:4650".to_owned()];
    let rules = ["slow \"down\"".to_owned(), "never fired".to_owned()];
    let labels = Labels {
        listeners: &listeners,
        rules: &rules,
    };
    let figures = ProcessFigures {
        cpu_seconds: 0.75,
        resident_memory_bytes: 8 << 20,
        virtual_memory_bytes: 64 << 20,
        open_fds: 12,
        max_fds: 65536,
        start_time_seconds: 1_700_000_000.5,
    };
    let mut out = Vec::new();
    render(&busy_totals(), &labels, Some(&figures), &mut out);
    let (ok, said) = run_with_input("promtool", &["check", "metrics"], &out);
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(ok, "promtool: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool's lint: {said}");

    let at = |series: &str| sample(&text, series);
    assert_eq!(
        at(r#"blackhole_connections_total{listener="127.0.0.1:2525",tls="false"}"#),
        2.0
    );
    assert_eq!(
        at(r#"blackhole_connections_total{listener="[::1]:4650",tls="true"}"#),
        2.0
    );
    assert_eq!(at("blackhole_connections_open"), 2.0);
    assert_eq!(at("blackhole_connections_refused_total"), 1.0);
    assert_eq!(at("blackhole_timeouts_total"), 1.0);
    assert_eq!(at(r#"blackhole_tls_handshakes_total{result="ok"}"#), 2.0);
    assert_eq!(
        at(r#"blackhole_tls_handshakes_total{result="failed"}"#),
        1.0
    );
    assert_eq!(at(r#"blackhole_commands_total{verb="unknown"}"#), 2.0);
    assert_eq!(
        at(r#"blackhole_messages_total{listener="127.0.0.1:2525",code="250"}"#),
        2.0
    );
    assert_eq!(
        at(r#"blackhole_messages_total{listener="[::1]:4650",code="554"}"#),
        1.0
    );
    assert_eq!(
        at("blackhole_message_bytes_total"),
        (6000 + 70 * 1024 * 1024) as f64
    );
    assert_eq!(at("blackhole_recipients_total"), 2.0);
    assert_eq!(
        at(r#"blackhole_auth_total{mechanism="plain",result="accepted"}"#),
        2.0
    );
    assert_eq!(
        at(r#"blackhole_auth_total{mechanism="cram-md5",result="cancelled"}"#),
        2.0
    );
    assert_eq!(
        at(r#"blackhole_rule_fired_total{rule="slow \"down\""}"#),
        2.0
    );
    assert_eq!(at(r#"blackhole_rule_fired_total{rule="never fired"}"#), 0.0);
    assert_eq!(at(r#"blackhole_rule_fired_total{rule="other"}"#), 1.0);
    assert_eq!(at(r#"blackhole_greylist_total{result="deferred"}"#), 2.0);
    assert_eq!(at(r#"blackhole_greylist_total{result="passed"}"#), 1.0);
    assert_eq!(at("blackhole_greylist_entries"), 12.0);
    assert_eq!(at("blackhole_greylist_evicted_total"), 3.0);
    assert_eq!(at("blackhole_delayed_replies_pending"), 2.0);
    assert_eq!(at("blackhole_event_log_dropped_total"), 4.0);
    assert_eq!(at("blackhole_proxy_rejected_total"), 1.0);
    assert_eq!(at(r#"blackhole_message_size_bytes_bucket{le="4096"}"#), 2.0);
    assert_eq!(
        at(r#"blackhole_message_size_bytes_bucket{le="67108864"}"#),
        2.0
    );
    assert_eq!(at(r#"blackhole_message_size_bytes_bucket{le="+Inf"}"#), 3.0);
    assert_eq!(at("blackhole_message_size_bytes_count"), 3.0);
    assert_eq!(
        at(r#"blackhole_session_duration_seconds_bucket{le="0.1"}"#),
        0.0
    );
    assert_eq!(
        at(r#"blackhole_session_duration_seconds_bucket{le="0.5"}"#),
        2.0
    );
    assert_eq!(at("blackhole_session_duration_seconds_sum"), 0.5);
    assert_eq!(
        at(r#"blackhole_delay_lateness_seconds_bucket{le="0.001"}"#),
        2.0
    );
    assert_eq!(at("blackhole_delay_lateness_seconds_sum"), 0.0016);
    assert_eq!(at("process_cpu_seconds_total"), 0.75);
    assert_eq!(at("process_max_fds"), 65536.0);
    assert_eq!(at("process_start_time_seconds"), 1_700_000_000.5);
}

#[test]
fn promtool_finds_fault_with_a_broken_text() {
    // The check above must be able to fail: the same tool on a text it should refuse.
    let (ok, said) = run_with_input(
        "promtool",
        &["check", "metrics"],
        b"# TYPE x counter\nx{a=\"1\"} 1\nx{a=\"1\"} 2\nnot a sample\n",
    );
    assert!(!ok, "promtool took a broken text: {said}");
}

#[test]
fn python_reads_every_event_line() {
    let origin = Origin {
        time_unix_ms: 1_709_251_199_999,
        connection: 3,
        worker: 1,
        listener: "127.0.0.1:2525",
        client: "2001:db8::7".parse().expect("an address"),
        tls: Some("TLSv1_3"),
    };
    let recipients: Vec<&[u8]> = vec![b"a@x", b"\xff\xfe@y", b"\"q\"@z"];
    let mut out = Vec::new();
    MessageEvent {
        origin,
        helo: Some(b"h\x00\x1b[0m"),
        auth_user: Some(b"alice"),
        mail_from: b"s@x",
        recipients: &recipients,
        recipient_count: 3,
        size: 10,
        switches: Switches::default(),
        rule: None,
        code: 250,
        delay_asked_ms: None,
        delay_given_ms: None,
        duration_ms: 1,
    }
    .append_to(&mut out);
    ConnectionEvent {
        origin,
        helo: None,
        messages: 1,
        bytes: 10,
        ended: Ended::Stop,
        duration_ms: 5,
    }
    .append_to(&mut out);
    let script = "import sys, json, datetime\n\
        lines = sys.stdin.read().split('\\n')\n\
        assert lines[-1] == '', lines\n\
        m, c = (json.loads(l) for l in lines[:-1])\n\
        t = datetime.datetime.fromisoformat(m['time'].replace('Z', '+00:00'))\n\
        assert t.timestamp() == 1709251199.999, t\n\
        assert m['recipients'][1] == '\\ufffd\\ufffd@y', m\n\
        assert m['recipients'][2] == '\"q\"@z', m\n\
        assert m['helo'] == 'h\\x00\\x1b[0m', m\n\
        assert m['switches'] == {'mode': None, 'delay': None}, m\n\
        assert c['type'] == 'connection' and c['ended'] == 'stop', c\n\
        assert c['client'] == '2001:db8::7', c\n\
        print('read', len(lines) - 1)\n";
    let (ok, said) = run_with_input("python3", &["-c", script], &out);
    assert!(ok, "python: {said}\n{}", String::from_utf8_lossy(&out));
    assert_eq!(said.trim(), "read 2");
}
