//! Scripted faults as real clients see them: Python's smtplib (driven a command at a time by
//! tests/clients/smtplib_steps.py, which times each) and swaks (its transcript, timed with
//! `--show-time-lapse`) against the real server with `[[rule]]` tables. Every effect of
//! SPEC.md's rules: a reply at each stage, a delay, a disconnect with and without 421, a cut
//! mid-DATA, a throttled link measured in bytes per second, and the conditions people combine
//! (the first N, every Nth, a client's address block, a seeded probability).

mod common;

use std::thread;
use std::time::Duration;

use common::clients::{smtplib_steps, swaks};
use common::{Server, TempDir, transcript};

/// How much longer than a rule's delay a client may wait for its reply, on a loaded machine.
const SLACK: Duration = Duration::from_millis(1000);

/// One line of smtplib_steps.py: a step of one session, what came of it, how long it took.
#[derive(Debug)]
struct Step {
    session: u32,
    /// The step ("connect" for the greeting, "message" for the reply after the data).
    name: String,
    /// A reply code, "sent", or the exception smtplib raised (`SMTPSenderRefused:451`).
    outcome: String,
    took: Duration,
    /// For `sendmail`, the refused recipients.
    detail: String,
}

impl Step {
    /// "NAME OUTCOME", with the detail if there is one: how a dialogue is compared.
    fn said(&self) -> String {
        [self.name.as_str(), &self.outcome, &self.detail]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Runs smtplib_steps.py with `args` against `server` and returns its steps; fails unless the
/// script ran to its end (an unexpected exception is a traceback and a failed exit).
fn smtplib(server: &Server, args: &[&str]) -> Vec<Step> {
    let out = smtplib_steps(server.addr(), args);
    let text = transcript(&out);
    assert!(out.status.success(), "smtplib_steps.py {args:?}:\n{text}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| parse_step(line).unwrap_or_else(|| panic!("not a step: {line:?}\n{text}")))
        .collect()
}

fn parse_step(line: &str) -> Option<Step> {
    let mut parts = line.splitn(5, ' ');
    let session = parts.next()?.parse().ok()?;
    let name = parts.next()?.to_owned();
    let outcome = parts.next()?.to_owned();
    let took = Duration::from_millis(parts.next()?.parse().ok()?);
    let detail = parts.next().unwrap_or("").to_owned();
    Some(Step {
        session,
        name,
        outcome,
        took,
        detail,
    })
}

/// What each session said, step by step, as `Step::said`.
fn dialogues(steps: &[Step]) -> Vec<Vec<String>> {
    let sessions = steps.iter().map(|s| s.session).max().unwrap_or(0);
    (1..=sessions)
        .map(|n| {
            let of_session = steps.iter().filter(|s| s.session == n);
            of_session.map(Step::said).collect()
        })
        .collect()
}

/// The one dialogue of a single-session run.
fn dialogue(steps: &[Step]) -> Vec<String> {
    let mut all = dialogues(steps);
    assert_eq!(all.len(), 1, "one session: {steps:#?}");
    all.remove(0)
}

/// Runs swaks (see `common::clients::swaks`) against `server` with `args`, timing every
/// reply; returns its transcript and exit code.
fn swaks_run(server: &Server, args: &[&str]) -> (String, i32) {
    let mut all = vec!["--show-time-lapse"];
    all.extend_from_slice(args);
    let out = swaks(server.target(), &all);
    let code = out.status.code().unwrap_or(-1);
    (transcript(&out), code)
}

/// How long swaks waited for the reply to the line it sent as `sent` (e.g. "RCPT
/// TO:<a@b.c>", or "." for the message), from `--show-time-lapse`.
fn swaks_lapse(transcript: &str, sent: &str) -> Duration {
    let mut last_sent = None;
    for line in transcript.lines() {
        if let Some(command) = line.strip_prefix(" -> ") {
            last_sent = Some(command);
        } else if let Some(lapse) = line.strip_prefix("=== response in ")
            && last_sent == Some(sent)
        {
            let seconds: f64 = lapse
                .trim_end_matches('s')
                .parse()
                .unwrap_or_else(|_| panic!("not a lapse: {line:?}"));
            return Duration::from_secs_f64(seconds);
        }
    }
    panic!("no reply timed after {sent:?} in:\n{transcript}")
}

/// The reply swaks received right after it sent `sent`.
fn swaks_reply_to<'a>(transcript: &'a str, sent: &str) -> &'a str {
    let mut lines = transcript.lines();
    lines
        .find(|line| line.strip_prefix(" -> ") == Some(sent))
        .unwrap_or_else(|| panic!("swaks never sent {sent:?}:\n{transcript}"));
    lines
        .find(|line| line.starts_with("<") || line.starts_with("***"))
        .unwrap_or_else(|| panic!("no reply to {sent:?}:\n{transcript}"))
}

/// `[[rule]]` with `on` and the given keys (each a whole `key = value` line).
fn rule(on: &str, keys: &[&str]) -> String {
    format!("[[rule]]\non = \"{on}\"\n{}\n", keys.join("\n"))
}

/// Whether `took` is at least `delay` and not much more.
fn about(took: Duration, delay: Duration) -> bool {
    took >= delay && took < delay + SLACK
}

/// A whole smtplib dialogue and what each line says when no rule touches it: the stages in
/// the order a session meets them, each with the step that gets there.
const DIALOGUE: [(&str, &str, &str); 11] = [
    ("connect", "", "220"),
    ("helo", "ehlo", "250"),
    ("auth", "auth", "235"),
    ("mail", "mail", "250"),
    ("rcpt", "rcpt", "250"),
    ("data", "data", "354"),
    ("message", "", "250"),
    ("vrfy", "vrfy", "252"),
    ("noop", "noop", "250"),
    ("rset", "rset", "250"),
    ("quit", "quit", "221"),
];

/// Each stage's scripted reply, and what smtplib makes of it.
const SCRIPTED: [(&str, &str, &str); 11] = [
    ("connect", "554 5.7.1 No service here", "554"),
    ("helo", "550 5.7.1 Not that name", "550"),
    (
        "auth",
        "454 4.7.0 Try again later",
        "SMTPAuthenticationError:454",
    ),
    ("mail", "553 5.1.8 Bad sender", "553"),
    ("rcpt", "550 5.1.1 No such user", "550"),
    ("data", "554 5.5.1 No data today", "554"),
    ("message", "552 5.3.4 Too big for us", "552"),
    ("vrfy", "550 5.1.1 Unknown user", "550"),
    ("noop", "502 5.5.1 Not here", "502"),
    ("rset", "451 4.3.0 Cannot reset", "451"),
    ("quit", "554 5.3.0 Not leaving", "554"),
];

/// The steps that take a session through `stage`, and the dialogue smtplib_steps.py shows
/// when `stage` answers `scripted` and everything before it is untouched.
fn through(stage: &str, scripted: &str) -> (Vec<&'static str>, Vec<String>) {
    let end = DIALOGUE
        .iter()
        .position(|(on, _, _)| *on == stage)
        .unwrap_or_else(|| panic!("no stage {stage}"));
    let steps = DIALOGUE[..=end]
        .iter()
        .map(|(_, step, _)| *step)
        .filter(|step| !step.is_empty())
        .collect();
    let said = DIALOGUE[..=end]
        .iter()
        .map(|(on, _, normal)| {
            let name = if *on == "helo" { "ehlo" } else { on };
            let outcome = if *on == stage { scripted } else { normal };
            format!("{name} {outcome}")
        })
        .collect();
    (steps, said)
}

#[test]
fn smtplib_sees_a_scripted_reply_at_every_stage() {
    // Untouched, the whole dialogue is as DIALOGUE says: what each stage's rule changes.
    let server = Server::start("");
    let (steps, said) = through("quit", "221");
    assert_eq!(dialogue(&smtplib(&server, &steps)), said);
    for (stage, reply, seen) in SCRIPTED {
        let server = Server::start(&rule(stage, &[&format!("reply = \"{reply}\"")]));
        let (steps, said) = through(stage, seen);
        assert_eq!(
            dialogue(&smtplib(&server, &steps)),
            said,
            "on = \"{stage}\", reply = \"{reply}\""
        );
    }
}

/// The stages swaks goes through (it sends no RSET, NOOP or VRFY), its reply there when a rule
/// scripts it, and swaks's exit code for it (a refused QUIT after a delivered message is no
/// failure to swaks).
const SWAKS_SCRIPTED: [(&str, &str, i32); 8] = [
    ("connect", "554 5.7.1 No service here", 21),
    ("helo", "550 5.7.1 Not that name", 22),
    ("auth", "454 4.7.0 Try again later", 28),
    ("mail", "553 5.1.8 Bad sender", 23),
    ("rcpt", "550 5.1.1 No such user", 24),
    ("data", "554 5.5.1 No data today", 25),
    ("message", "552 5.3.4 Too big for us", 26),
    ("quit", "554 5.3.0 Not leaving", 0),
];

const SWAKS_AUTH: [&str; 6] = [
    "--auth",
    "PLAIN",
    "--auth-user",
    "alice",
    "--auth-password",
    "pw",
];

#[test]
fn swaks_sees_a_scripted_reply_at_every_stage() {
    let server = Server::start("");
    let (text, code) = swaks_run(&server, &SWAKS_AUTH);
    assert_eq!(code, 0, "{text}");
    assert!(
        !text.contains("<**"),
        "an untouched session fails nothing:\n{text}"
    );
    for (stage, reply, exit) in SWAKS_SCRIPTED {
        let server = Server::start(&rule(stage, &[&format!("reply = \"{reply}\"")]));
        let (text, code) = swaks_run(&server, &SWAKS_AUTH);
        let context = format!("on = \"{stage}\", reply = \"{reply}\":\n{text}");
        assert!(text.contains(&format!("\n<** {reply}\n")), "{context}");
        assert_eq!(code, exit, "{context}");
    }
}

#[test]
fn a_delay_holds_back_its_reply_and_no_other() {
    let rules = [
        rule("rcpt", &["match = \"slow@*\"", "delay = 1.0"]),
        rule("message", &["match = \"slow@*\"", "delay = 1.5"]),
    ];
    let server = Server::start(&rules.concat());
    thread::scope(|s| {
        s.spawn(|| {
            let steps = smtplib(
                &server,
                &[
                    "ehlo",
                    "mail:slow@example.com",
                    "rcpt:slow@example.net",
                    "rcpt:quick@example.net",
                    "data",
                ],
            );
            let said: Vec<String> = steps.iter().map(Step::said).collect();
            let all = ["connect", "ehlo", "mail", "rcpt", "rcpt", "data", "message"];
            assert_eq!(said.len(), all.len(), "{steps:#?}");
            let wanted = [0, 0, 0, 1000, 0, 0, 1500].map(Duration::from_millis);
            for ((step, name), delay) in steps.iter().zip(all).zip(wanted) {
                assert_eq!(step.name, name, "{steps:#?}");
                assert!(about(step.took, delay), "{step:?}, delay {delay:?}");
            }
        });
        s.spawn(|| {
            let args = ["--from", "slow@example.com"];
            let to = ["--to", "slow@example.net,quick@example.net"];
            let (text, code) = swaks_run(&server, &[&args[..], &to[..]].concat());
            assert_eq!(code, 0, "{text}");
            let lapses = [
                ("MAIL FROM:<slow@example.com>", 0),
                ("RCPT TO:<slow@example.net>", 1000),
                ("RCPT TO:<quick@example.net>", 0),
                (".", 1500),
            ];
            for (sent, delay) in lapses {
                let took = swaks_lapse(&text, sent);
                let delay = Duration::from_millis(delay);
                assert!(
                    about(took, delay),
                    "{sent}: {took:?}, delay {delay:?}\n{text}"
                );
            }
        });
    });
}

#[test]
fn a_disconnect_says_421_or_nothing_to_smtplib_and_swaks() {
    let rules = [
        rule("helo", &["match = \"bad.example\"", "disconnect = \"421\""]),
        rule(
            "helo",
            &["match = \"silent.example\"", "disconnect = \"close\""],
        ),
    ];
    let server = Server::start(&rules.concat());
    let cases: [(&str, &[&str]); 3] = [
        ("good.example", &["connect 220", "ehlo 250", "noop 250"]),
        (
            "bad.example",
            &["connect 220", "ehlo 421", "noop SMTPServerDisconnected"],
        ),
        (
            "silent.example",
            &["connect 220", "ehlo SMTPServerDisconnected"],
        ),
    ];
    for (name, said) in cases {
        let ehlo = format!("ehlo:{name}");
        assert_eq!(
            dialogue(&smtplib(&server, &[&ehlo, "noop"])),
            said,
            "{name}"
        );
    }

    let closed = "*** Remote host closed connection unexpectedly.";
    let (text, code) = swaks_run(&server, &["--ehlo", "bad.example"]);
    assert_eq!(
        swaks_reply_to(&text, "EHLO bad.example"),
        "<** 421 4.4.2 blackhole.test closing connection",
        "{text}"
    );
    assert!(text.contains(closed), "{text}");
    assert_eq!(code, 6, "{text}");
    let (text, code) = swaks_run(&server, &["--ehlo", "silent.example"]);
    assert_eq!(swaks_reply_to(&text, "EHLO silent.example"), closed);
    assert_eq!(code, 6, "{text}");
}

/// A file of `size` bytes for swaks's `--data`: three headers, then lines of 100 bytes (the
/// last one shorter), all ending in CRLF; swaks sends it and "\r\n.\r\n".
fn message_file(dir: &TempDir, name: &str, size: usize) -> String {
    let head = "From: a@example.com\r\nTo: b@example.net\r\nSubject: swaks\r\n\r\n";
    let mut text = head.to_owned();
    while text.len() + 100 <= size {
        text.push_str(&format!("{}\r\n", "x".repeat(98)));
    }
    let rest = size - text.len();
    assert!(rest != 1, "no line is one byte");
    if rest > 0 {
        text.push_str(&format!("{}\r\n", "y".repeat(rest - 2)));
    }
    assert_eq!(text.len(), size);
    dir.write(name, &text).display().to_string()
}

#[test]
fn a_message_cut_after_its_bytes_fails_smtplib_and_swaks() {
    let cut = |how| {
        rule(
            "message",
            &[&format!("disconnect = \"{how}\""), "after_bytes = 1000"],
        )
    };
    let dir = TempDir::new();
    let short = message_file(&dir, "short.eml", 900);
    let long = message_file(&dir, "long.eml", 5000);

    // A message under the bytes goes through; one over them is cut, the connection with it.
    let server = Server::start(&cut("421"));
    let steps = smtplib(&server, &["sendmail:900", "sendmail:5000", "noop"]);
    assert_eq!(
        dialogue(&steps),
        [
            "connect 220",
            "sendmail sent",
            "sendmail SMTPDataError:421",
            "noop SMTPServerDisconnected"
        ]
    );
    let (text, code) = swaks_run(&server, &["--data", &format!("@{short}")]);
    assert_eq!(code, 0, "{text}");
    let (text, code) = swaks_run(&server, &["--data", &format!("@{long}")]);
    assert_eq!(
        swaks_reply_to(&text, "."),
        "<** 421 4.4.2 blackhole.test closing connection",
        "{text}"
    );
    assert_eq!(code, 26, "{text}");

    let server = Server::start(&cut("close"));
    let steps = smtplib(&server, &["sendmail:900", "sendmail:5000"]);
    assert_eq!(
        dialogue(&steps),
        [
            "connect 220",
            "sendmail sent",
            "sendmail SMTPServerDisconnected"
        ]
    );
    let (text, code) = swaks_run(&server, &["--data", &format!("@{long}")]);
    assert_eq!(
        swaks_reply_to(&text, "."),
        "*** Remote host closed connection unexpectedly.",
        "{text}"
    );
    assert_eq!(code, 6, "{text}");
}

#[test]
fn a_throttled_link_is_read_at_its_rate_by_smtplib_and_swaks() {
    const RATE: u32 = 20_000;
    const SIZE: usize = 60_000;
    let server = Server::start(&rule("data", &[&format!("throttle = {RATE}")]));
    let within = |bytes: usize, took: Duration| {
        let (rate, wanted) = (bytes as f64 / took.as_secs_f64(), f64::from(RATE));
        assert!(
            (wanted * 0.9..=wanted * 1.1).contains(&rate),
            "{bytes} bytes in {took:?}: {rate:.0} bytes/s, throttle {RATE}"
        );
    };
    // Each is its own connection with its own throttle: both at once take the time of one.
    thread::scope(|s| {
        s.spawn(|| {
            let size = SIZE.to_string();
            let steps = smtplib(&server, &["ehlo", "mail", "rcpt", &format!("data:{size}")]);
            let message = steps.last().expect("steps");
            assert_eq!(message.said(), "message 250", "{steps:#?}");
            // The message and its ".\r\n".
            within(SIZE + 3, message.took);
        });
        s.spawn(|| {
            let dir = TempDir::new();
            let file = message_file(&dir, "message.eml", SIZE);
            let (text, code) = swaks_run(&server, &["--data", &format!("@{file}")]);
            assert_eq!(code, 0, "{text}");
            // The file, then "\r\n.\r\n".
            within(SIZE + 5, swaks_lapse(&text, "."));
        });
    });
}

#[test]
fn fail_twice_then_accept_as_smtplib_and_swaks_retry() {
    let twice = rule(
        "mail",
        &["first = 2", "reply = \"451 4.3.0 Try again later\""],
    );
    let server = Server::start(&twice);
    let steps = smtplib(&server, &["--sessions", "3", "sendmail"]);
    let refused = ["connect 220", "sendmail SMTPSenderRefused:451"];
    let sent = ["connect 220", "sendmail sent"];
    assert_eq!(dialogues(&steps), [&refused[..], &refused[..], &sent[..]]);

    let server = Server::start(&twice);
    for attempt in 0..3 {
        let (text, code) = swaks_run(&server, &[]);
        let reply = swaks_reply_to(&text, "MAIL FROM:<a@example.com>");
        if attempt < 2 {
            assert_eq!(reply, "<** 451 4.3.0 Try again later", "{text}");
            assert_eq!(code, 23, "{text}");
        } else {
            assert_eq!(reply, "<-  250 2.1.0 OK", "{text}");
            assert_eq!(code, 0, "{text}");
        }
    }
}

#[test]
fn every_third_recipient_is_refused_for_smtplib_and_swaks() {
    let third = rule(
        "rcpt",
        &["every = 3", "reply = \"452 4.5.3 Too many recipients\""],
    );
    let server = Server::start(&third);
    let steps = smtplib(&server, &["sendmail:200:7"]);
    assert_eq!(
        dialogue(&steps),
        [
            "connect 220",
            "sendmail sent r3@example.net=452,r6@example.net=452"
        ]
    );

    let server = Server::start(&third);
    let to: Vec<String> = (1..=7).map(|n| format!("r{n}@example.net")).collect();
    let (text, code) = swaks_run(&server, &["--to", &to.join(",")]);
    assert_eq!(code, 0, "{text}");
    for (n, address) in to.iter().enumerate() {
        let reply = swaks_reply_to(&text, &format!("RCPT TO:<{address}>"));
        let wanted = if (n + 1) % 3 == 0 {
            "<** 452 4.5.3 Too many recipients"
        } else {
            "<-  250 2.1.5 OK"
        };
        assert_eq!(reply, wanted, "{address}:\n{text}");
    }
}

#[test]
fn a_client_block_is_refused_and_its_neighbours_served() {
    let server = Server::start(&rule(
        "connect",
        &[
            "client = \"127.0.0.2/31\"",
            "reply = \"554 5.7.1 Not from your network\"",
        ],
    ));
    // 127.0.0.2/31 is .2 and .3, not .1 or .4.
    for (source, greeting) in [
        ("127.0.0.1", "220"),
        ("127.0.0.2", "554"),
        ("127.0.0.3", "554"),
        ("127.0.0.4", "220"),
    ] {
        let steps = smtplib(&server, &["--source", source]);
        assert_eq!(
            dialogue(&steps),
            [format!("connect {greeting}")],
            "{source}"
        );

        let (text, code) = swaks_run(&server, &["--local-interface", source]);
        let refused = text.contains("\n<** 554 5.7.1 Not from your network\n");
        assert_eq!(refused, greeting == "554", "{source}:\n{text}");
        assert_eq!(code, if refused { 21 } else { 0 }, "{source}:\n{text}");
    }
}

/// What a run of `smtplib` sessions and then `swaks` runs (each sending one message) meet
/// from a server started with `--seed SEED` whose MAIL refuses with probability 1/2: one
/// letter a session, `r` refused and `s` sent.
fn seeded_pattern(seed: &str, sessions: usize, swaks_runs: usize) -> (String, String) {
    let maybe = rule(
        "mail",
        &["probability = 0.5", "reply = \"451 4.3.0 Maybe later\""],
    );
    let server = Server::start_with_args(&["--seed", seed], &maybe);
    let steps = smtplib(&server, &["--sessions", &sessions.to_string(), "sendmail"]);
    let smtplib_pattern = steps
        .iter()
        .filter(|step| step.name == "sendmail")
        .map(|step| match step.outcome.as_str() {
            "sent" => 's',
            "SMTPSenderRefused:451" => 'r',
            other => panic!("sendmail: {other}"),
        })
        .collect();
    let swaks_pattern = (0..swaks_runs)
        .map(|_| {
            let (text, code) = swaks_run(&server, &[]);
            match code {
                0 => 's',
                23 if text.contains("<** 451 4.3.0 Maybe later") => 'r',
                _ => panic!("swaks exit {code}:\n{text}"),
            }
        })
        .collect();
    (smtplib_pattern, swaks_pattern)
}

#[test]
fn a_seeded_probability_fires_in_the_same_pattern_every_run() {
    let (smtplib_first, swaks_first) = seeded_pattern("1234", 16, 8);
    for pattern in [&smtplib_first, &swaks_first] {
        assert!(
            pattern.contains('r') && pattern.contains('s'),
            "a probability of 1/2 both fires and rests: {pattern}"
        );
    }
    assert_eq!(
        seeded_pattern("1234", 16, 8),
        (smtplib_first.clone(), swaks_first),
        "the same seed, the same pattern"
    );
    let (smtplib_other, _) = seeded_pattern("4321", 16, 0);
    assert_ne!(
        smtplib_other, smtplib_first,
        "another seed, another pattern"
    );
}
