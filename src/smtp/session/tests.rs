//! Transcript tests of the session core. Every transcript is also fed split at every byte
//! boundary and must give the same replies.

use base64::Engine;
use base64::engine::general_purpose;

use core::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::smtp::command::MAX_LINE;
use crate::smtp::greylist::{Greylist, GreylistSettings};
use crate::smtp::policy::DelayRange;
use crate::smtp::rules::{RuleBook, RuleState};

const FQDN: &str = "mx.example";

/// The client the tests' sessions serve.
pub(super) const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// What a session is told, with `rules` and their `state`, at `now_ms`.
pub(super) fn context<'a>(
    policy: &'a Policy,
    seed: ConnectionSeed,
    rules: &'a RuleBook,
    state: &'a mut RuleState,
    now_ms: u64,
) -> Context<'a> {
    Context {
        policy,
        seed,
        rules,
        rule_state: state,
        greylist: None,
        client: CLIENT,
        listener: 0,
        now_ms,
        // A box of nothing: no allocation, and a `&'static mut` to lend.
        observer: Box::leak(Box::new(crate::smtp::observer::Unobserved)),
    }
}

/// [`Session::feed`] without rules.
pub(super) fn feed(
    session: &mut Session,
    policy: &Policy,
    seed: ConnectionSeed,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Step {
    let (rules, mut state) = (RuleBook::default(), RuleState::default());
    session.feed(
        &mut context(policy, seed, &rules, &mut state, 0),
        input,
        out,
    )
}

/// [`Session::resume`] without rules.
pub(super) fn resume(
    session: &mut Session,
    policy: &Policy,
    seed: ConnectionSeed,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Step {
    let (rules, mut state) = (RuleBook::default(), RuleState::default());
    session.resume(
        &mut context(policy, seed, &rules, &mut state, 0),
        input,
        out,
    )
}

fn policy() -> Policy {
    Policy::new(FQDN.into(), Mode::Accept, None, true, 1000, false)
}

/// What a run of the session produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    /// Everything sent, message ids replaced by `{msgid}`.
    sent: String,
    /// The delays asked for, in order.
    pauses: Vec<u64>,
    /// How the run ended: `None` while the session still wants input.
    end: Option<Action>,
    /// Input left over when the run ended.
    left: usize,
}

/// Feeds `input` in pieces of `step` bytes as the event loop does: unused bytes are kept and
/// fed again with the next piece; a pause is resumed at once.
fn run_split(policy: &Policy, input: &[u8], step: usize) -> Run {
    run_ruled(policy, &RuleBook::default(), input, step)
}

/// [`run_split`] with `rules`, their counters fresh; the greeting is the first output.
fn run_ruled(policy: &Policy, rules: &RuleBook, input: &[u8], step: usize) -> Run {
    let mut session = Session::new(false);
    let mut state = RuleState::default();
    let mut cx = context(policy, ConnectionSeed::new(7, 1), rules, &mut state, 0);
    let (mut out, mut tail, mut pauses) = (Vec::new(), Vec::new(), Vec::new());
    if !rules.is_empty() {
        let action = session.greet(&mut cx, &mut out);
        if let Some(end) = follow(
            &mut session,
            &mut cx,
            action,
            &mut tail,
            &mut pauses,
            &mut out,
        ) {
            return finish(&out, pauses, Some(end), 0);
        }
    }
    for piece in input.chunks(step.max(1)) {
        tail.extend_from_slice(piece);
        loop {
            let before = tail.len();
            let result = session.feed(&mut cx, &tail, &mut out);
            tail.drain(..result.consumed);
            match follow(
                &mut session,
                &mut cx,
                result.action,
                &mut tail,
                &mut pauses,
                &mut out,
            ) {
                Some(end) => return finish(&out, pauses, Some(end), tail.len()),
                None if tail.len() == before || tail.is_empty() => break,
                None => {}
            }
        }
    }
    finish(&out, pauses, None, tail.len())
}

/// Carries out `action` as the loop does (a pause is over at once): the action that ends the
/// run, if it does.
fn follow(
    session: &mut Session,
    cx: &mut Context,
    mut action: Action,
    tail: &mut Vec<u8>,
    pauses: &mut Vec<u64>,
    out: &mut Vec<u8>,
) -> Option<Action> {
    while let Action::Pause { millis } = action {
        pauses.push(millis);
        let step = session.resume(cx, tail, out);
        tail.drain(..step.consumed);
        action = step.action;
    }
    match action {
        Action::Continue => None,
        end => Some(end),
    }
}

fn finish(out: &[u8], pauses: Vec<u64>, end: Option<Action>, left: usize) -> Run {
    Run {
        sent: normalise(out),
        pauses,
        end,
        left,
    }
}

/// Runs `input` whole and split at every byte boundary; all runs must agree.
fn run_with(policy: &Policy, input: &[u8]) -> Run {
    let whole = run_split(policy, input, input.len());
    for step in 1..input.len() {
        assert_eq!(
            run_split(policy, input, step),
            whole,
            "split every {step} bytes"
        );
    }
    whole
}

fn run(input: &str) -> Run {
    run_with(&policy(), input.as_bytes())
}

/// Replaces `<DIGITS.DIGITS.DIGITS@mx.example>` with `{msgid}`.
fn normalise(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out).into_owned();
    let suffix = format!("@{FQDN}>");
    let mut result = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find('<') {
        let candidate = &rest[start + 1..];
        let id_len = candidate.find(&suffix).filter(|&end| {
            let id = &candidate[..end];
            id.split('.').count() == 3
                && id
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        });
        match id_len {
            Some(end) => {
                result.push_str(&rest[..start]);
                result.push_str("{msgid}");
                rest = &candidate[end + suffix.len()..];
            }
            None => {
                result.push_str(&rest[..=start]);
                rest = candidate;
            }
        }
    }
    result.push_str(rest);
    result
}

fn sent(input: &str) -> String {
    run(input).sent
}

/// Each input, on a fresh session, gets exactly its replies.
fn assert_dialogues(dialogues: &[(&str, &str)]) {
    for (input, replies) in dialogues {
        assert_eq!(sent(input), *replies, "{input:?}");
    }
}

const EHLO_REPLY: &str = "250-mx.example\r\n250-HELP\r\n250-PIPELINING\r\n250-AUTH CRAM-MD5 LOGIN PLAIN\r\n250-SIZE 1000\r\n250-VRFY\r\n250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-EXPN\r\n250 DSN\r\n";

const BOUNCE_LINES: [&str; 10] = [
    "450 Requested mail action not taken: mailbox unavailable\r\n",
    "451 Requested action aborted: local error in processing\r\n",
    "452 Requested action not taken: insufficient system storage\r\n",
    "458 Unable to queue message\r\n",
    "521 Machine does not accept mail\r\n",
    "550 Requested action not taken: mailbox unavailable\r\n",
    "551 User not local\r\n",
    "552 Requested mail action aborted: exceeded storage allocation\r\n",
    "553 Requested action not taken: mailbox name not allowed\r\n",
    "571 Blocked\r\n",
];

const ENVELOPE: &str = "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n";
const ENVELOPE_REPLIES: &str =
    "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
const QUEUED: &str = "250 2.0.0 OK: queued as {msgid}\r\n";
const PARAM_SYNTAX: &str = "501 5.5.4 Syntax: parameters are KEYWORD or KEYWORD=VALUE\r\n";

#[test]
fn greeting_names_the_server() {
    assert_eq!(policy().greeting(), b"220 mx.example ESMTP\r\n");
}

#[test]
fn helo_and_ehlo_need_a_domain() {
    assert_eq!(sent("HELO client\r\n"), "250 OK\r\n");
    assert_eq!(sent("EHLO client\r\n"), EHLO_REPLY);
    assert_eq!(sent("HELO\r\n"), "501 5.5.4 Syntax: HELO domain.tld\r\n");
    assert_eq!(sent("ehlo  \r\n"), "501 5.5.4 Syntax: EHLO domain.tld\r\n");
}

#[test]
fn ehlo_offers_starttls_only_where_configured() {
    let with_tls = Policy::new(FQDN.into(), Mode::Accept, None, true, 1000, true);
    let reply = run_with(&with_tls, b"EHLO c\r\n").sent;
    assert!(reply.contains("250-STARTTLS\r\n250 DSN\r\n"), "{reply}");
    assert!(!sent("EHLO c\r\n").contains("STARTTLS"));
}

#[test]
fn a_whole_pipelined_session() {
    let input = format!("EHLO c\r\n{ENVELOPE}Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\nNOOP\r\n");
    let run = run(&input);
    assert_eq!(
        run.sent,
        format!("{EHLO_REPLY}{ENVELOPE_REPLIES}{QUEUED}221 2.0.0 Goodbye\r\n")
    );
    assert_eq!(run.end, Some(Action::Close));
    assert_eq!(run.left, 0, "input after QUIT is dropped");
}

#[test]
fn two_messages_on_one_connection_get_two_ids() {
    let input = format!("HELO c\r\n{ENVELOPE}a\r\n.\r\n{ENVELOPE}b\r\n.\r\n");
    assert_eq!(
        sent(&input),
        format!("250 OK\r\n{ENVELOPE_REPLIES}{QUEUED}{ENVELOPE_REPLIES}{QUEUED}")
    );
    let raw = {
        let mut session = Session::new(false);
        let mut out = Vec::new();
        feed(
            &mut session,
            &policy(),
            ConnectionSeed::new(1, 1),
            input.as_bytes(),
            &mut out,
        );
        String::from_utf8(out).unwrap()
    };
    let ids: Vec<&str> = raw.lines().filter(|l| l.contains("queued as")).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn dot_stuffed_lines_do_not_end_the_message() {
    let input = format!("{ENVELOPE}..leading\r\n...\r\n..\r\nlast\r\n.\r\nNOOP\r\n");
    assert_eq!(
        sent(&input),
        format!("{ENVELOPE_REPLIES}{QUEUED}250 2.0.0 OK\r\n")
    );
}

#[test]
fn smuggled_terminators_never_end_data() {
    for smuggled in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r"] {
        let input = format!("{ENVELOPE}Subject: x\r\n\r\nbody{smuggled}NOOP\r\n.\r\nNOOP\r\n");
        assert_eq!(
            sent(&input),
            format!("{ENVELOPE_REPLIES}{QUEUED}250 2.0.0 OK\r\n"),
            "{smuggled:?}"
        );
    }
}

#[test]
fn message_size_counts_up_to_the_final_dot_line() {
    // 1000 bytes in all: 9 lines of 100 + CRLF, a line of 77 + CRLF, then ".\r\n".
    let mut body = String::new();
    for _ in 0..9 {
        body.push_str(&"x".repeat(100));
        body.push_str("\r\n");
    }
    body.push_str(&"y".repeat(77));
    body.push_str("\r\n");
    assert_eq!(body.len() + 3, 1000);
    let exact = format!("{ENVELOPE}{body}.\r\n");
    assert_eq!(sent(&exact), format!("{ENVELOPE_REPLIES}{QUEUED}"));
    let over = format!("{ENVELOPE}z{body}.\r\nNOOP\r\n");
    assert_eq!(
        sent(&over),
        format!(
            "{ENVELOPE_REPLIES}552 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
        )
    );
}

#[test]
fn a_huge_message_is_counted_not_kept() {
    let mut session = Session::new(false);
    let (policy, seed, mut out) = (policy(), ConnectionSeed::new(1, 1), Vec::new());
    feed(&mut session, &policy, seed, ENVELOPE.as_bytes(), &mut out);
    let chunk = vec![b'x'; 65536];
    for _ in 0..100 {
        let step = feed(&mut session, &policy, seed, &chunk, &mut out);
        assert_eq!(step.consumed, chunk.len());
    }
    out.clear();
    feed(&mut session, &policy, seed, b"\r\n.\r\n", &mut out);
    assert_eq!(out, reply::TOO_BIG);
}

#[test]
fn mail_parameters() {
    let ok = "250 2.1.0 OK\r\n";
    for mail in [
        "MAIL FROM:<a@b>",
        "MAIL FROM: <a@b>",
        "mail from:<>",
        "MAIL FROM:<a@b> BODY=7BIT",
        "MAIL FROM:<a@b> body=8bitmime SMTPUTF8 SIZE=1000",
        "MAIL FROM:<j\u{f6}rg@ex\u{e4}mple.de> SMTPUTF8",
        "MAIL FROM:<a@b> RET=HDRS ENVID=x AUTH=<>",
    ] {
        assert_eq!(sent(&format!("{mail}\r\n")), ok, "{mail}");
    }
    let cases = [
        ("MAIL", "501 5.5.4 Syntax: MAIL FROM: <address>\r\n"),
        (
            "MAIL TO:<a@b>",
            "501 5.5.4 Syntax: MAIL FROM: <address>\r\n",
        ),
        ("MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM: <address>\r\n"),
        (
            "MAIL FROM:<a@b",
            "501 5.5.4 Syntax: MAIL FROM: <address>\r\n",
        ),
        (
            "MAIL FROM:<a@b> SIZE=1001",
            "552 Message size exceeds fixed maximum message size\r\n",
        ),
        (
            "MAIL FROM:<a@b> SIZE=99999999999999999999",
            "552 Message size exceeds fixed maximum message size\r\n",
        ),
        (
            "MAIL FROM:<a@b> SIZE=abc",
            "501 5.5.4 Syntax: SIZE=<number of octets>\r\n",
        ),
        (
            "MAIL FROM:<a@b> SIZE=",
            "501 5.5.4 Syntax: SIZE=<number of octets>\r\n",
        ),
        (
            "MAIL FROM:<a@b> SIZE",
            "501 5.5.4 Syntax: SIZE=<number of octets>\r\n",
        ),
        (
            "MAIL FROM:<a@b> BODY=BINARYMIME",
            "501 5.5.4 Syntax: BODY=7BIT|8BITMIME\r\n",
        ),
        (
            "MAIL FROM:<a@b> FROBNICATE=1",
            "555 5.5.4 Unsupported parameter\r\n",
        ),
        // SMTPUTF8 takes no value; RET, ENVID and AUTH need one.
        ("MAIL FROM:<a@b> SMTPUTF8=yes", PARAM_SYNTAX),
        ("MAIL FROM:<a@b> RET", PARAM_SYNTAX),
        ("MAIL FROM:<a@b> ENVID", PARAM_SYNTAX),
        ("MAIL FROM:<a@b> AUTH", PARAM_SYNTAX),
    ];
    for (mail, reply) in cases {
        assert_eq!(sent(&format!("{mail}\r\n")), reply, "{mail}");
    }
    // A rejected MAIL opens no transaction.
    assert_eq!(
        sent("MAIL FROM:<a@b> SIZE=5000\r\nRCPT TO:<c@d>\r\n"),
        "552 Message size exceeds fixed maximum message size\r\n503 5.5.1 Error: need MAIL command\r\n"
    );
    // Non-UTF-8 bytes in a path are just bytes.
    let run = run_with(&policy(), b"MAIL FROM:<j\xf6rg@example.com>\r\n");
    assert_eq!(run.sent, ok);
}

#[test]
fn commands_in_rfc_order() {
    let need_mail = "503 5.5.1 Error: need MAIL command\r\n";
    assert_dialogues(&[
        ("RCPT TO:<a@b>\r\n", need_mail),
        ("DATA\r\n", need_mail),
        (
            "MAIL FROM:<a@b>\r\nDATA\r\n",
            "250 2.1.0 OK\r\n503 5.5.1 Error: need RCPT command\r\n",
        ),
        (
            "MAIL FROM:<a@b>\r\nMAIL FROM:<c@d>\r\n",
            "250 2.1.0 OK\r\n503 5.5.1 Error: nested MAIL command\r\n",
        ),
        (
            "MAIL FROM:<a@b>\r\nRCPT\r\nRCPT TO:\r\nRCPT TO:<c@d> NOTIFY=NEVER ORCPT=rfc822;c@d\r\nRCPT TO:<e@f> X=1\r\nRCPT TO:<e@f> NOTIFY\r\n",
            "250 2.1.0 OK\r\n501 5.5.4 Syntax: RCPT TO: <address>\r\n501 5.5.4 Syntax: RCPT TO: <address>\r\n250 2.1.5 OK\r\n555 5.5.4 Unsupported parameter\r\n501 5.5.4 Syntax: parameters are KEYWORD or KEYWORD=VALUE\r\n",
        ),
    ]);
}

#[test]
fn rset_helo_and_ehlo_end_a_transaction() {
    for reset in ["RSET", "HELO c", "EHLO c"] {
        let out = sent(&format!(
            "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n{reset}\r\nDATA\r\nMAIL FROM:<a@b>\r\n"
        ));
        assert!(
            out.ends_with("503 5.5.1 Error: need MAIL command\r\n250 2.1.0 OK\r\n"),
            "{reset}: {out}"
        );
    }
}

#[test]
fn noop_etrn_and_help() {
    assert_eq!(
        sent("NOOP\r\nnoop with words\r\n"),
        "250 2.0.0 OK\r\n250 2.0.0 OK\r\n"
    );
    assert_eq!(
        sent("ETRN\r\nETRN example.com\r\n"),
        "250 Queueing started\r\n250 Queueing started\r\n"
    );
    let all = "Supported commands: AUTH DATA EHLO ETRN EXPN HELO MAIL NOOP QUIT RCPT RSET VRFY\r\n";
    assert_eq!(sent("HELP\r\n"), format!("250 {all}"));
    assert_eq!(sent("HELP FOO\r\n"), format!("501 {all}"));
    assert_eq!(sent("HELP STARTTLS\r\n"), format!("501 {all}"));
    assert_eq!(
        sent("help mail\r\n"),
        "250 Syntax: MAIL FROM: <address>\r\n"
    );
    assert_eq!(
        sent("HELP Expn\r\n"),
        "250 Syntax: EXPN <list1 | list2 | list3 | all>\r\n"
    );
    for verb in [
        "AUTH", "DATA", "EHLO", "ETRN", "EXPN", "HELO", "MAIL", "NOOP", "QUIT", "RCPT", "RSET",
        "VRFY",
    ] {
        assert!(
            sent(&format!("HELP {verb}\r\n")).starts_with("250 Syntax: "),
            "{verb}"
        );
    }
}

#[test]
fn vrfy() {
    assert_eq!(
        sent("VRFY pass=user@domain.tld\r\n"),
        "250 2.0.0 <pass=user@domain.tld> OK\r\n"
    );
    assert_eq!(
        sent("VRFY fail=user@domain.tld\r\n"),
        "550 5.7.1 <fail=user@domain.tld> unknown\r\n"
    );
    assert_eq!(
        sent("VRFY user@domain.tld\r\n"),
        "252 2.0.0 Will attempt delivery\r\n"
    );
    assert_eq!(
        sent("VRFY John Smith\r\n"),
        "252 2.0.0 Will attempt delivery\r\n"
    );
    assert_eq!(sent("VRFY\r\n"), "501 5.5.4 Syntax: VRFY <address>\r\n");
}

#[test]
fn vrfy_echoes_no_control_bytes() {
    // A bare LF ends the line, so only the CR and the other control bytes reach the echo.
    assert_eq!(
        run_with(&policy(), b"VRFY pass=a\rb\0c\x1bd\x7fe\tf\r\n").sent,
        "250 2.0.0 <pass=a?b?c?d?e?f> OK\r\n"
    );
    assert_eq!(
        run_with(&policy(), b"VRFY fail=a\r250 forged\r\n").sent,
        "550 5.7.1 <fail=a?250 forged> unknown\r\n"
    );
    assert_eq!(
        run_with(&policy(), b"VRFY pass=a\nNOOP\r\n").sent,
        "250 2.0.0 <pass=a> OK\r\n250 2.0.0 OK\r\n"
    );
    // UTF-8 addresses are echoed as they came (SMTPUTF8 is on offer).
    assert_eq!(
        sent("VRFY pass=j\u{f6}rg@ex\u{e4}mple.de\r\n"),
        "250 2.0.0 <pass=j\u{f6}rg@ex\u{e4}mple.de> OK\r\n"
    );
}

#[test]
fn vrfy_echo_keeps_the_reply_within_one_reply_line() {
    for verdict in ["pass=", "fail="] {
        // An odd prefix puts the cut inside a two-byte character.
        let arg = format!("{verdict}x{}", "\u{e9}".repeat(1000));
        let reply = sent(&format!("VRFY {arg}\r\n"));
        assert!(
            reply.len() <= reply::MAX_REPLY_LINE,
            "{} bytes",
            reply.len()
        );
        assert!(reply.ends_with("...> OK\r\n") || reply.ends_with("...> unknown\r\n"));
        let echoed = reply
            .split_once('<')
            .unwrap()
            .1
            .split_once("...>")
            .unwrap()
            .0;
        assert!(
            arg.starts_with(echoed),
            "cut inside a character: {echoed:?}"
        );
    }
    // The longest argument that fits is echoed whole.
    let fits = format!("pass={}", "x".repeat(reply::MAX_VRFY_ECHO - 5));
    assert_eq!(
        sent(&format!("VRFY {fits}\r\n")),
        format!("250 2.0.0 <{fits}> OK\r\n")
    );
}

#[test]
fn expn() {
    assert_eq!(
        sent("EXPN list1\r\n"),
        "250-Shadow <shadow@mx.example>\r\n250-Wednesday <wednesday@mx.example>\r\n250 Low-key Liesmith <low-key.liesmith@mx.example>\r\n"
    );
    assert_eq!(sent("EXPN <LIST1>\r\n"), sent("EXPN list1\r\n"));
    let all = sent("EXPN all\r\n");
    assert_eq!(all.lines().count(), 13);
    assert!(all.starts_with("250-Shadow <shadow@mx.example>\r\n"));
    assert!(all.contains("250-Jim Holden <jim.holden@mx.example>\r\n"));
    assert!(all.ends_with("250 Reileen Kawahara <reileen.kawahara@mx.example>\r\n"));
    assert_eq!(all.matches("250 ").count(), 1);
    assert_eq!(sent("EXPN list2\r\n").lines().count(), 4);
    assert_eq!(sent("EXPN fail=test-list\r\n"), "550 Not authorised\r\n");
    assert_eq!(sent("EXPN some-list\r\n"), "550 Not authorised\r\n");
    let syntax = "501 5.5.4 Syntax: EXPN <list1 | list2 | list3 | all>\r\n";
    assert_eq!(sent("EXPN\r\n"), syntax);
    assert_eq!(sent("EXPN list1 extra\r\n"), syntax);
}

#[test]
fn unknown_commands_are_counted_and_the_tenth_closes() {
    let nine = "BAD\r\n".repeat(9);
    let run_nine = run(&format!("{nine}NOOP\r\n"));
    assert_eq!(
        run_nine.sent,
        format!(
            "{}250 2.0.0 OK\r\n",
            "502 5.5.2 Command not recognised\r\n".repeat(9)
        )
    );
    assert_eq!(run_nine.end, None);
    let run_ten = run(&format!("{nine}\r\nNOOP\r\n"));
    assert_eq!(
        run_ten.sent,
        format!(
            "{}502 5.5.3 Too many unknown commands\r\n",
            "502 5.5.2 Command not recognised\r\n".repeat(9)
        )
    );
    assert_eq!(run_ten.end, Some(Action::Close));
    assert_eq!(
        sent("NOT_IMPLEMENTED\r\n"),
        "502 5.5.2 Command not recognised\r\n"
    );
    assert_eq!(
        run_with(&policy(), b"\xc3\x28\r\nNOOP\r\n").sent,
        "502 5.5.2 Command not recognised\r\n250 2.0.0 OK\r\n"
    );
}

#[test]
fn over_long_lines_get_one_error_and_the_session_goes_on() {
    let long = format!("NOOP {}\r\nNOOP\r\n", "a".repeat(70_000));
    let run = run_split(&policy(), long.as_bytes(), 1000);
    assert_eq!(run.sent, "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n");
    let fits = format!("NOOP {}\r\n", "a".repeat(MAX_LINE - 7));
    assert_eq!(fits.len(), MAX_LINE);
    assert_eq!(
        run_split(&policy(), fits.as_bytes(), 100).sent,
        "250 2.0.0 OK\r\n"
    );
    let over = format!("NOOP {}\r\n", "a".repeat(MAX_LINE - 6));
    assert_eq!(
        run_split(&policy(), over.as_bytes(), 100).sent,
        "500 5.5.2 Line too long\r\n"
    );
}

#[test]
fn a_bare_lf_ends_a_command_line() {
    assert_eq!(sent("NOOP\nHELO c\n"), "250 2.0.0 OK\r\n250 OK\r\n");
}

#[test]
fn quit_closes_and_drops_the_rest() {
    let run = run("QUIT\r\nNOOP\r\n");
    assert_eq!(run.sent, "221 2.0.0 Goodbye\r\n");
    assert_eq!((run.end, run.left), (Some(Action::Close), 0));
}

fn b64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

const AUTH_OK: &str = "235 2.7.0 Authentication successful\r\n";
const AUTH_FAILED: &str = "535 5.7.8 Authentication failed\r\n";

#[test]
fn auth_plain() {
    assert_eq!(sent("AUTH PLAIN pass=letmein\r\n"), AUTH_OK);
    assert_eq!(sent("AUTH PLAIN fail=letmein\r\n"), AUTH_FAILED);
    assert_eq!(
        sent(&format!("AUTH PLAIN {}\r\n", b64(b"\0fail=alice\0secret"))),
        AUTH_FAILED
    );
    assert_eq!(
        sent(&format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0secret"))),
        AUTH_OK
    );
    assert_eq!(
        sent("AUTH PLAIN\r\npass=letmein\r\n"),
        format!("334 \r\n{AUTH_OK}")
    );
    assert_eq!(
        sent(&format!(
            "auth plain\r\n{}\r\n",
            b64(b"\0fail=bob\0pw").trim_end_matches('=')
        )),
        format!("334 \r\n{AUTH_FAILED}")
    );
}

#[test]
fn auth_login() {
    assert_eq!(
        sent("AUTH LOGIN\r\npass=letmein\r\n"),
        format!("334 VXNlcm5hbWU6\r\n{AUTH_OK}")
    );
    assert_eq!(
        sent("AUTH LOGIN\r\nfail=letmein\r\n"),
        format!("334 VXNlcm5hbWU6\r\n{AUTH_FAILED}")
    );
    let steps = "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n";
    let login = |user: &[u8], password: &[u8]| {
        sent(&format!(
            "AUTH LOGIN\r\n{}\r\n{}\r\n",
            b64(user),
            b64(password)
        ))
    };
    assert_eq!(login(b"alice", b"secret"), format!("{steps}{AUTH_OK}"));
    assert_eq!(
        login(b"fail=alice", b"secret"),
        format!("{steps}{AUTH_FAILED}")
    );
    assert_eq!(
        login(b"alice", b"fail=secret"),
        format!("{steps}{AUTH_FAILED}")
    );
    assert_eq!(
        sent(&format!(
            "AUTH LOGIN {}\r\n{}\r\n",
            b64(b"fail=alice"),
            b64(b"pw")
        )),
        format!("334 UGFzc3dvcmQ6\r\n{AUTH_FAILED}")
    );
    assert_eq!(
        sent(&format!(
            "AUTH LOGIN {}\r\n{}\r\n",
            b64(b"alice"),
            b64(b"pw")
        )),
        format!("334 UGFzc3dvcmQ6\r\n{AUTH_OK}")
    );
}

#[test]
fn auth_cram_md5_challenges_with_a_message_id() {
    let mut session = Session::new(false);
    let (policy, seed, mut out) = (policy(), ConnectionSeed::new(3, 1), Vec::new());
    feed(&mut session, &policy, seed, b"AUTH CRAM-MD5\r\n", &mut out);
    let line = String::from_utf8(out.clone()).unwrap();
    let challenge = line.strip_prefix("334 ").unwrap().trim_end();
    let decoded = general_purpose::STANDARD.decode(challenge).unwrap();
    assert_eq!(normalise(&decoded), "{msgid}");
    out.clear();
    feed(
        &mut session,
        &policy,
        seed,
        format!("{}\r\n", b64(b"fail=bob 0123abcd")).as_bytes(),
        &mut out,
    );
    assert_eq!(out, AUTH_FAILED.as_bytes());
    assert_eq!(
        sent("AUTH CRAM-MD5\r\npass=letmein\r\n").lines().nth(1),
        Some("235 2.7.0 Authentication successful")
    );
    assert_eq!(
        sent("AUTH CRAM-MD5 abc\r\n"),
        "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"
    );
}

#[test]
fn auth_errors() {
    let syntax = "501 5.5.4 Syntax: AUTH mechanism\r\n";
    let twice = format!("{AUTH_OK}503 5.5.1 Already authenticated\r\n250 2.0.0 OK\r\n");
    let again = format!("{AUTH_FAILED}{AUTH_OK}");
    let not_a_command = format!("334 \r\n{AUTH_OK}250 2.0.0 OK\r\n");
    assert_dialogues(&[
        ("AUTH\r\n", syntax),
        ("AUTH FOO\r\n", syntax),
        (
            "AUTH PLAIN pass=x extra\r\n",
            "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n",
        ),
        (
            "AUTH PLAIN\r\n*\r\nNOOP\r\n",
            "334 \r\n501 5.7.0 Authentication cancelled\r\n250 2.0.0 OK\r\n",
        ),
        (
            "AUTH LOGIN\r\n*\r\n",
            "334 VXNlcm5hbWU6\r\n501 5.7.0 Authentication cancelled\r\n",
        ),
        (
            "AUTH PLAIN pass=one\r\nAUTH PLAIN pass=two\r\nNOOP\r\n",
            &twice,
        ),
        // A failed AUTH may be tried again.
        ("AUTH PLAIN fail=x\r\nAUTH PLAIN pass=x\r\n", &again),
        // An AUTH reply is not a command, whatever it says.
        ("AUTH PLAIN\r\nQUIT\r\nNOOP\r\n", &not_a_command),
    ]);
    assert!(
        sent("MAIL FROM:<a@b>\r\nAUTH PLAIN pass=x\r\n")
            .ends_with("503 5.5.1 Error: AUTH not permitted during a mail transaction\r\n")
    );
    let long = format!("AUTH PLAIN\r\n{}\r\nNOOP\r\n", "A".repeat(5000));
    assert_eq!(
        sent(&long),
        "334 \r\n500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"
    );
}

#[test]
fn starttls_without_a_certificate_is_not_implemented() {
    assert_eq!(sent("STARTTLS\r\n"), "500 Not implemented\r\n");
}

#[test]
fn starttls_drops_what_was_pipelined_after_it() {
    let with_tls = Policy::new(FQDN.into(), Mode::Accept, None, true, 1000, true);
    let run = run_with(&with_tls, b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\n");
    assert!(
        run.sent
            .ends_with("250 DSN\r\n220 2.0.0 Ready to start TLS\r\n"),
        "{}",
        run.sent
    );
    assert_eq!((run.end, run.left), (Some(Action::StartTls), 0));
    assert_eq!(
        run_with(&with_tls, b"STARTTLS now\r\n").sent,
        "501 5.5.4 Syntax: STARTTLS\r\n"
    );
    for policy in [&with_tls, &policy()] {
        let mut inside = Session::new(true);
        let mut out = Vec::new();
        feed(
            &mut inside,
            policy,
            ConnectionSeed::new(1, 1),
            b"STARTTLS\r\nEHLO c\r\n",
            &mut out,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("503 5.5.1 Error: TLS already active\r\n"),
            "{out}"
        );
        assert!(!out.contains("STARTTLS"), "offered again inside TLS: {out}");
    }
}

fn message(headers: &str) -> String {
    format!("{ENVELOPE}{headers}Subject: x\r\n\r\nbody\r\n.\r\n")
}

/// The last reply line (CRLF included) to one message, with the generator seeded `seed`.
fn final_reply(policy: &Policy, seed: u64) -> String {
    let mut out = Vec::new();
    let input = message("");
    feed(
        &mut Session::new(false),
        policy,
        ConnectionSeed::new(seed, 1),
        input.as_bytes(),
        &mut out,
    );
    let sent = normalise(&out);
    let last = sent.rsplit_terminator("\r\n").next().unwrap_or_default();
    format!("{last}\r\n")
}

#[test]
fn bounce_and_random_modes() {
    let bounce = Policy::new(FQDN.into(), Mode::Bounce, None, true, 1000, false);
    let random = Policy::new(FQDN.into(), Mode::Random, None, true, 1000, false);
    let mut seen_bounces = std::collections::HashSet::new();
    let mut random_bounces = std::collections::HashSet::new();
    let mut random_accepted = 0;
    for seed in 0..300 {
        let last = final_reply(&bounce, seed);
        assert!(BOUNCE_LINES.contains(&last.as_str()), "{last}");
        seen_bounces.insert(last);
        let last = final_reply(&random, seed);
        if last == QUEUED {
            random_accepted += 1;
        } else {
            assert!(BOUNCE_LINES.contains(&last.as_str()), "{last}");
            random_bounces.insert(last);
        }
    }
    assert_eq!(seen_bounces.len(), 10, "every bounce reply turns up");
    assert_eq!(
        random_bounces.len(),
        10,
        "every bounce reply turns up in random mode"
    );
    assert!(
        (10..60).contains(&random_accepted),
        "random accepts about 1 in 11: {random_accepted}"
    );
}

#[test]
fn switch_headers_choose_this_messages_fate_only() {
    let bounce_then_plain = format!("{}{}", message("X-Blackhole-Mode: bounce\r\n"), message(""));
    let out = sent(&bounce_then_plain);
    let finals: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("250 2.1") && !l.starts_with("354"))
        .collect();
    assert_eq!(finals.len(), 2);
    assert!(
        BOUNCE_LINES.contains(&format!("{}\r\n", finals[0]).as_str()),
        "{}",
        finals[0]
    );
    assert_eq!(format!("{}\r\n", finals[1]), QUEUED);
    // Accept on a bouncing server.
    let bounce = Policy::new(FQDN.into(), Mode::Bounce, None, true, 1000, false);
    assert!(
        run_with(&bounce, message("X-Blackhole-Mode: accept\r\n").as_bytes())
            .sent
            .ends_with(QUEUED)
    );
    // A switch line in the body is text.
    assert!(
        sent(&format!(
            "{ENVELOPE}Subject: x\r\n\r\nX-Blackhole-Mode: bounce\r\n.\r\n"
        ))
        .ends_with(QUEUED)
    );
    // Malformed switches are ignored.
    for header in [
        "X-Blackhole-Mode bounce\r\n",
        "X-Blackhole-Delay: 1:2\r\n",
        "X-Blackhole-Mode: sideways\r\n",
    ] {
        let run = run(&message(header));
        assert!(run.sent.ends_with(QUEUED), "{header}");
        assert!(run.pauses.is_empty(), "{header}");
    }
    assert!(
        run_with(
            &policy(),
            &[
                ENVELOPE.as_bytes(),
                b"X-Blackhole-Mode: b\xffunce\r\n\r\n.\r\n"
            ]
            .concat()
        )
        .sent
        .ends_with(QUEUED)
    );
}

#[test]
fn delays_pause_before_the_final_reply() {
    let run = run(&message("X-Blackhole-Delay: 2\r\n"));
    assert_eq!(run.pauses, vec![2000]);
    assert!(run.sent.ends_with(QUEUED));
    let ranged = message("X-Blackhole-Delay: 1, 3\r\n");
    let drawn: Vec<u64> = (0..50)
        .map(|seed| {
            let mut session = Session::new(false);
            let step = feed(
                &mut session,
                &policy(),
                ConnectionSeed::new(seed, 1),
                ranged.as_bytes(),
                &mut Vec::new(),
            );
            match step.action {
                Action::Pause { millis } => millis,
                other => panic!("seed {seed}: {other:?} instead of a pause"),
            }
        })
        .collect();
    // Drawn from the whole range, not pinned to one end of it.
    assert!(
        drawn.iter().all(|ms| (1000..=3000).contains(ms)),
        "{drawn:?}"
    );
    assert!(drawn.iter().any(|&ms| ms < 1500), "{drawn:?}");
    assert!(drawn.iter().any(|&ms| ms > 2500), "{drawn:?}");
    assert!(
        self::run(&message("X-Blackhole-Delay: 0\r\n"))
            .pauses
            .is_empty()
    );
    assert!(
        self::run(&message("X-Blackhole-Delay: -3\r\n"))
            .pauses
            .is_empty()
    );
    assert_eq!(
        self::run(&message("X-Blackhole-Delay: 600\r\n")).pauses,
        vec![60_000]
    );
    // The next message has no delay of its own.
    let two = format!("{}{}", message("X-Blackhole-Delay: 2\r\n"), message(""));
    assert_eq!(self::run(&two).pauses, vec![2000]);
}

#[test]
fn configured_delay_and_its_override() {
    let delayed = Policy::new(
        FQDN.into(),
        Mode::Accept,
        DelayRange::new(2, 2),
        true,
        1000,
        false,
    );
    assert_eq!(
        run_with(&delayed, message("").as_bytes()).pauses,
        vec![2000]
    );
    assert_eq!(
        run_with(&delayed, message("X-Blackhole-Delay: 1\r\n").as_bytes()).pauses,
        vec![1000]
    );
}

#[test]
fn without_dynamic_switches_headers_change_nothing() {
    let fixed = Policy::new(FQDN.into(), Mode::Accept, None, false, 1000, false);
    let run = run_with(
        &fixed,
        message("X-Blackhole-Mode: bounce\r\nX-Blackhole-Delay: 2\r\n").as_bytes(),
    );
    assert!(run.sent.ends_with(QUEUED));
    assert!(run.pauses.is_empty());
}

#[test]
fn commands_after_a_delayed_message_wait_for_its_reply() {
    let mut session = Session::new(false);
    let (policy, seed, mut out) = (policy(), ConnectionSeed::new(1, 1), Vec::new());
    let input = format!("{}NOOP\r\n", message("X-Blackhole-Delay: 5\r\n"));
    let step = feed(&mut session, &policy, seed, input.as_bytes(), &mut out);
    assert_eq!(step.action, Action::Pause { millis: 5000 });
    assert_eq!(step.consumed, input.len() - 6);
    assert!(session.is_waiting());
    assert!(normalise(&out).ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"));
    // Fed while waiting, it takes nothing.
    let again = feed(&mut session, &policy, seed, b"NOOP\r\n", &mut out);
    assert_eq!(again.consumed, 0);
    resume(&mut session, &policy, seed, b"", &mut out);
    feed(&mut session, &policy, seed, b"NOOP\r\n", &mut out);
    assert!(normalise(&out).ends_with(&format!("{QUEUED}250 2.0.0 OK\r\n")));
}

#[test]
fn timeout_says_so_and_closes() {
    let mut session = Session::new(false);
    let mut out = Vec::new();
    session.time_out(&mut out);
    assert_eq!(out, b"421 Timeout\r\n");
    assert!(session.is_closed());
    let step = feed(
        &mut session,
        &policy(),
        ConnectionSeed::new(1, 1),
        b"NOOP\r\n",
        &mut out,
    );
    assert_eq!(step.action, Action::Close);
}

#[test]
fn output_is_bounded_while_the_client_does_not_read() {
    let mut session = Session::new(false);
    let (policy, seed, mut out) = (policy(), ConnectionSeed::new(1, 1), Vec::new());
    let flood = "EHLO c\r\n".repeat(5000);
    let step = feed(&mut session, &policy, seed, flood.as_bytes(), &mut out);
    assert!(step.consumed < flood.len());
    assert!(out.len() < OUTPUT_HIGH_WATER + 1024);
    out.clear();
    let rest = feed(
        &mut session,
        &policy,
        seed,
        &flood.as_bytes()[step.consumed..],
        &mut out,
    );
    assert!(rest.consumed > 0);
}

/// Everything a session sent for `input` fed in pieces of `step` bytes with the connection
/// seed `seed`, message ids and challenges as they are, and the delays it asked for.
fn raw_run(
    policy: &Policy,
    seed: ConnectionSeed,
    input: &[u8],
    step: usize,
) -> (Vec<u8>, Vec<u64>) {
    let mut session = Session::new(false);
    let (mut out, mut tail, mut pauses) = (Vec::new(), Vec::new(), Vec::new());
    for piece in input.chunks(step.max(1)) {
        tail.extend_from_slice(piece);
        loop {
            let step = feed(&mut session, policy, seed, &tail, &mut out);
            tail.drain(..step.consumed);
            match step.action {
                Action::Pause { millis } => {
                    pauses.push(millis);
                    let step = resume(&mut session, policy, seed, &tail, &mut out);
                    tail.drain(..step.consumed);
                }
                _ => break,
            }
        }
    }
    (out, pauses)
}

#[test]
fn random_choices_follow_the_seed_not_the_reads() {
    let policy = Policy::new(
        FQDN.into(),
        Mode::Random,
        DelayRange::new(0, 3),
        true,
        1000,
        false,
    );
    let mut input = String::from("EHLO client.example\r\nAUTH CRAM-MD5\r\n*\r\n");
    for _ in 0..12 {
        input.push_str(&message(""));
    }
    input.push_str("AUTH CRAM-MD5\r\n*\r\nQUIT\r\n");
    let input = input.as_bytes();
    let whole = raw_run(&policy, ConnectionSeed::new(42, 1), input, input.len());
    // However the client's bytes are cut into reads, the same seed gives the same bytes:
    // replies, message ids, challenges, and the same delays.
    for step in [1, 2, 7, 64, 500] {
        assert_eq!(
            raw_run(&policy, ConnectionSeed::new(42, 1), input, step),
            whole,
            "reads of {step} bytes"
        );
    }
    // Another seed, or another connection of the same run, draws otherwise.
    let other = raw_run(&policy, ConnectionSeed::new(43, 1), input, input.len());
    assert_ne!(other.0, whole.0, "seed 43 sent what seed 42 sent");
    let (a, b) = (ConnectionSeed::new(42, 1), ConnectionSeed::new(42, 2));
    assert_ne!(
        raw_run(&policy, a, input, 64),
        raw_run(&policy, b, input, 64)
    );
    // The draws do vary within one run: not every message gets the same reply or delay.
    let sent = String::from_utf8_lossy(&whole.0);
    let finals: std::collections::HashSet<&str> = sent
        .lines()
        .filter(|l| l.starts_with("250 2.0.0") || l.starts_with('4') || l.starts_with('5'))
        .collect();
    assert!(finals.len() > 3, "12 random replies, too alike: {finals:?}");
    assert!(
        whole.1.iter().any(|&d| d != whole.1[0]),
        "delays {:?}",
        whole.1
    );
}

#[test]
fn starttls_does_not_repeat_the_draws_before_it() {
    let policy = policy();
    let input = message("");
    let mut plain = Session::new(false);
    let mut encrypted = Session::new(true);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let seed = ConnectionSeed::new(9, 1);
    feed(&mut plain, &policy, seed, input.as_bytes(), &mut a);
    feed(&mut encrypted, &policy, seed, input.as_bytes(), &mut b);
    assert_ne!(a, b, "the same message id before and after STARTTLS");
}

/// Rules from `(stage, what to set)` pairs.
fn book(rules: Vec<crate::smtp::rules::Rule>) -> RuleBook {
    RuleBook::new(rules)
}

fn rule(on: &str, set: impl FnOnce(&mut crate::smtp::rules::Rule)) -> crate::smtp::rules::Rule {
    let mut rule = crate::smtp::rules::Rule::new("r".into(), on.parse().expect("a stage"));
    set(&mut rule);
    rule
}

fn replying(on: &str, line: &str) -> crate::smtp::rules::Rule {
    rule(on, |r| r.reply = Some(line.parse().expect("a reply line")))
}

/// `input` with `rules`, whole and split at every byte boundary (fresh counters each run):
/// all runs must agree.
fn ruled(rules: &RuleBook, input: &str) -> Run {
    let input = input.as_bytes();
    let whole = run_ruled(&policy(), rules, input, input.len());
    for step in 1..input.len() {
        assert_eq!(
            run_ruled(&policy(), rules, input, step),
            whole,
            "split every {step} bytes"
        );
    }
    whole
}

const GREETING: &str = "220 mx.example ESMTP\r\n";

#[test]
fn a_rule_replies_instead_at_each_command_stage() {
    let cases = [
        ("helo", "HELO c\r\n", "250 OK\r\n"),
        ("helo", "EHLO c\r\n", EHLO_REPLY),
        ("rset", "RSET\r\n", "250 2.0.0 OK\r\n"),
        ("noop", "NOOP\r\n", "250 2.0.0 OK\r\n"),
        ("vrfy", "VRFY pass=x\r\n", "250 2.0.0 <pass=x> OK\r\n"),
        ("expn", "EXPN nobody\r\n", "550 Not authorised\r\n"),
        ("starttls", "STARTTLS\r\n", "500 Not implemented\r\n"),
    ];
    for (stage, command, normal) in cases {
        let rules = book(vec![replying(stage, "452 4.3.1 Not now")]);
        let run = ruled(&rules, &format!("{command}RSET\r\n"));
        let after = if stage == "rset" {
            "452 4.3.1 Not now"
        } else {
            "250 2.0.0 OK"
        };
        assert_eq!(
            run.sent,
            format!("{GREETING}452 4.3.1 Not now\r\n{after}\r\n"),
            "{stage}"
        );
        // Another stage's rule leaves the command alone.
        let other = if stage == "noop" { "quit" } else { "noop" };
        let rules = book(vec![replying(other, "452 4.3.1 Not now")]);
        assert_eq!(
            ruled(&rules, command).sent,
            format!("{GREETING}{normal}"),
            "{stage}"
        );
    }
    // QUIT closes whatever the reply.
    let rules = book(vec![replying("quit", "421 4.3.2 Bye now")]);
    let run = ruled(&rules, "QUIT\r\nNOOP\r\n");
    assert_eq!(run.sent, format!("{GREETING}421 4.3.2 Bye now\r\n"));
    assert_eq!(run.end, Some(Action::Close));
}

#[test]
fn the_greeting_can_be_replaced_delayed_or_refused() {
    let rules = book(vec![replying("connect", "554 5.7.1 Go away")]);
    assert_eq!(
        ruled(&rules, "QUIT\r\n").sent,
        format!("554 5.7.1 Go away\r\n221 2.0.0 Goodbye\r\n")
    );
    let rules = book(vec![rule("connect", |r| {
        r.delay = Some("1.5".parse().unwrap())
    })]);
    let run = ruled(&rules, "NOOP\r\n");
    assert_eq!(
        (run.sent, run.pauses),
        (format!("{GREETING}250 2.0.0 OK\r\n"), vec![1500])
    );
    let rules = book(vec![rule("connect", |r| {
        r.disconnect = Some("421".parse().unwrap())
    })]);
    let run = ruled(&rules, "NOOP\r\n");
    assert_eq!(run.sent, "421 4.4.2 mx.example closing connection\r\n");
    assert_eq!(run.end, Some(Action::Close));
    let rules = book(vec![rule("connect", |r| {
        r.disconnect = Some("close".parse().unwrap())
    })]);
    let run = ruled(&rules, "NOOP\r\n");
    assert_eq!((run.sent.as_str(), run.end), ("", Some(Action::Close)));
}

const ONLY_QUIT: &str = "503 5.5.1 Error: service refused, only QUIT is accepted\r\n";

#[test]
fn a_refusing_greeting_takes_nothing_but_quit() {
    let commands = "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nNOOP\r\nXYZZY\r\n";
    for greeting in ["554 5.7.1 Go away", "450 4.7.1 Not now"] {
        let rules = book(vec![replying("connect", greeting)]);
        let run = ruled(&rules, &format!("{commands}QUIT\r\nNOOP\r\n"));
        assert_eq!(
            run.sent,
            format!("{greeting}\r\n{}221 2.0.0 Goodbye\r\n", ONLY_QUIT.repeat(6))
        );
        assert_eq!((run.end, run.left), (Some(Action::Close), 0));
    }
    // Delayed, the refusal holds all the same.
    let rules = book(vec![rule("connect", |r| {
        r.reply = Some("554 5.7.1 Go away".parse().expect("a reply line"));
        r.delay = Some("2".parse().expect("a delay"));
    })]);
    let run = ruled(&rules, "HELO c\r\nQUIT\r\n");
    assert_eq!(run.pauses, vec![2000]);
    assert_eq!(
        run.sent,
        format!("554 5.7.1 Go away\r\n{ONLY_QUIT}221 2.0.0 Goodbye\r\n")
    );
}

#[test]
fn a_rule_reply_of_421_closes_the_connection() {
    let rules = book(vec![replying("connect", "421 4.3.2 Shutting down")]);
    let run = ruled(&rules, "NOOP\r\n");
    assert_eq!(run.sent, "421 4.3.2 Shutting down\r\n");
    assert_eq!(run.end, Some(Action::Close));
    for (stage, before) in [
        ("helo", ""),
        ("mail", ""),
        ("rcpt", "250 2.1.0 OK\r\n"),
        ("noop", "250 2.1.0 OK\r\n250 2.1.5 OK\r\n"),
        ("data", "250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.0.0 OK\r\n"),
    ] {
        let rules = book(vec![replying(stage, "421 4.3.2 Closing")]);
        let input = "HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nNOOP\r\nDATA\r\nRSET\r\n";
        let run = ruled(&rules, input);
        let helo = if stage == "helo" { "" } else { "250 OK\r\n" };
        assert_eq!(
            run.sent,
            format!("{GREETING}{helo}{before}421 4.3.2 Closing\r\n"),
            "{stage}"
        );
        assert_eq!((run.end, run.left), (Some(Action::Close), 0), "{stage}");
    }
    // The final reply of a message, too.
    let rules = book(vec![replying("message", "421 4.3.2 Closing")]);
    let run = ruled(&rules, &format!("{}NOOP\r\n", message("")));
    assert!(
        run.sent
            .ends_with(&format!("{ENVELOPE_REPLIES}421 4.3.2 Closing\r\n"))
    );
    assert_eq!(run.end, Some(Action::Close));
}

#[test]
fn a_refused_mail_opens_no_transaction() {
    let mut refuse = replying("mail", "451 4.3.0 Try again");
    refuse.subject = Some(crate::smtp::rules::Glob::new("*@spam.example").unwrap());
    let rules = book(vec![refuse]);
    let run = ruled(
        &rules,
        "MAIL FROM:<x@spam.example>\r\nRCPT TO:<b@example.net>\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n",
    );
    assert_eq!(
        run.sent,
        format!(
            "{GREETING}451 4.3.0 Try again\r\n503 5.5.1 Error: need MAIL command\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n"
        )
    );
}

#[test]
fn a_refused_recipient_does_not_count() {
    let mut refuse = replying("rcpt", "550 5.1.1 No such user");
    refuse.subject = Some(crate::smtp::rules::Glob::new("nobody@*").unwrap());
    let rules = book(vec![refuse]);
    let run = ruled(
        &rules,
        "MAIL FROM:<a@example.com>\r\nRCPT TO:<nobody@example.net>\r\nDATA\r\nRCPT TO:<b@example.net>\r\nDATA\r\n.\r\n",
    );
    assert_eq!(
        run.sent,
        format!(
            "{GREETING}250 2.1.0 OK\r\n550 5.1.1 No such user\r\n503 5.5.1 Error: need RCPT command\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n{QUEUED}"
        )
    );
}

#[test]
fn a_refused_data_leaves_the_next_lines_commands() {
    let rules = book(vec![replying("data", "451 4.3.0 No data today")]);
    let run = ruled(&rules, &format!("{ENVELOPE}NOOP\r\n.\r\n"));
    assert_eq!(
        run.sent,
        format!(
            "{GREETING}250 2.1.0 OK\r\n250 2.1.5 OK\r\n451 4.3.0 No data today\r\n250 2.0.0 OK\r\n502 5.5.2 Command not recognised\r\n"
        )
    );
}

#[test]
fn a_rule_reply_accepts_a_command_only_as_a_client_would_read_it() {
    // After MAIL, a 2xx to RCPT adds the recipient and a 3xx to DATA starts the message.
    let rules = book(vec![
        replying("rcpt", "250 2.1.5 Sure"),
        replying("data", "354 Go on"),
    ]);
    let run = ruled(
        &rules,
        "MAIL FROM:<a@x>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhello\r\n.\r\n",
    );
    assert_eq!(
        run.sent,
        format!("{GREETING}250 2.1.0 OK\r\n250 2.1.5 Sure\r\n354 Go on\r\n{QUEUED}")
    );
    // Without MAIL, a 2xx to RCPT adds nothing: DATA still wants a recipient.
    let run = ruled(&rules, "RCPT TO:<b@example.net>\r\nDATA\r\nNOOP\r\n");
    assert_eq!(
        run.sent,
        format!("{GREETING}250 2.1.5 Sure\r\n354 Go on\r\n250 2.0.0 OK\r\n")
    );
    // A 2xx to DATA is no 354: the client goes on with commands, and so does the server.
    let rules = book(vec![replying("data", "250 2.0.0 Not now")]);
    let run = ruled(&rules, &format!("{ENVELOPE}RSET\r\nQUIT\r\n"));
    assert!(
        run.sent
            .ends_with("250 2.0.0 Not now\r\n250 2.0.0 OK\r\n221 2.0.0 Goodbye\r\n"),
        "{}",
        run.sent
    );
    let rules = book(vec![replying("mail", "250 2.1.0 Fine")]);
    let run = ruled(&rules, "MAIL FROM:bad syntax\r\nRCPT TO:<b@x>\r\n");
    assert_eq!(
        run.sent,
        format!("{GREETING}250 2.1.0 Fine\r\n250 2.1.5 OK\r\n")
    );
}

#[test]
fn message_rules_match_the_sender_kept_from_mail() {
    let mut bounce = replying("message", "554 5.6.0 Rejected");
    bounce.subject = Some(crate::smtp::rules::Glob::new("*@bounce.example").unwrap());
    let rules = book(vec![bounce]);
    let two = "MAIL FROM:<a@bounce.example>\r\nRCPT TO:<b@x>\r\nDATA\r\n.\r\n\
               MAIL FROM:<a@fine.example>\r\nRCPT TO:<b@x>\r\nDATA\r\n.\r\n";
    let run = ruled(&rules, two);
    let finals: Vec<&str> = run
        .sent
        .lines()
        .filter(|l| l.starts_with("554") || l.starts_with("250 2.0.0"))
        .collect();
    assert_eq!(
        finals,
        ["554 5.6.0 Rejected", "250 2.0.0 OK: queued as {msgid}"]
    );
}

#[test]
fn first_and_every_count_across_commands() {
    let fail_twice = rule("rcpt", |r| {
        r.reply = Some("451 4.3.0 Later".parse().unwrap());
        r.first = Some(2);
    });
    let rules = book(vec![fail_twice]);
    let input = "MAIL FROM:<a@x>\r\n".to_owned() + &"RCPT TO:<b@x>\r\n".repeat(4);
    let run = ruled(&rules, &input);
    assert_eq!(
        run.sent,
        format!(
            "{GREETING}250 2.1.0 OK\r\n451 4.3.0 Later\r\n451 4.3.0 Later\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n"
        )
    );
    let every_second = rule("noop", |r| {
        r.reply = Some("250 2.0.0 Second".parse().unwrap());
        r.every = Some(2);
    });
    let run = ruled(&book(vec![every_second]), &"NOOP\r\n".repeat(4));
    assert_eq!(
        run.sent,
        format!(
            "{GREETING}250 2.0.0 OK\r\n250 2.0.0 Second\r\n250 2.0.0 OK\r\n250 2.0.0 Second\r\n"
        )
    );
}

#[test]
fn a_delayed_command_is_held_then_answered() {
    let slow = rule("rcpt", |r| {
        r.delay = Some("2".parse().unwrap());
        r.reply = Some("452 4.5.3 Too many".parse().unwrap());
        r.first = Some(1);
    });
    let rules = book(vec![slow]);
    let input = "MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nNOOP\r\n";
    let run = ruled(&rules, input);
    assert_eq!(run.pauses, vec![2000]);
    assert_eq!(
        run.sent,
        format!("{GREETING}250 2.1.0 OK\r\n452 4.5.3 Too many\r\n250 2.1.5 OK\r\n250 2.0.0 OK\r\n")
    );
    // While held, nothing is answered and the line is not used.
    let mut session = Session::new(false);
    let (policy, mut state) = (policy(), RuleState::default());
    let mut cx = context(&policy, ConnectionSeed::new(1, 1), &rules, &mut state, 0);
    let mut out = Vec::new();
    let step = session.feed(&mut cx, input.as_bytes(), &mut out);
    assert_eq!(step.action, Action::Pause { millis: 2000 });
    assert_eq!(step.consumed, "MAIL FROM:<a@x>\r\n".len());
    assert!(session.is_waiting());
    let rest = &input.as_bytes()[step.consumed..];
    assert_eq!(session.feed(&mut cx, rest, &mut out).consumed, 0);
    let resumed = session.resume(&mut cx, rest, &mut out);
    assert_eq!(resumed.consumed, "RCPT TO:<b@x>\r\n".len());
    assert!(out.ends_with(b"452 4.5.3 Too many\r\n"));
    // A delay without a reply holds the normal one; AUTH's is held within its exchange.
    let login = rule("auth", |r| r.delay = Some("1".parse().unwrap()));
    let auth = format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64(b"user"), b64(b"secret"));
    let run = ruled(&book(vec![login]), &auth);
    assert_eq!(run.pauses, vec![1000]);
    assert_eq!(
        run.sent,
        format!(
            "{GREETING}334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
        )
    );
}

#[test]
fn a_delayed_final_reply_and_a_disconnect_after_it() {
    let slow = rule("message", |r| {
        r.delay = Some("3".parse().unwrap());
        r.disconnect = Some("421".parse().unwrap());
    });
    let run = ruled(&book(vec![slow]), &format!("{}NOOP\r\n", message("")));
    assert_eq!(run.pauses, vec![3000]);
    assert_eq!(run.end, Some(Action::Close));
    assert!(run.sent.ends_with(
        "354 End data with <CR><LF>.<CR><LF>\r\n421 4.4.2 mx.example closing connection\r\n"
    ));
    // The rule's delay replaces the one the message asked for.
    let slow = rule("message", |r| r.delay = Some("0.25".parse().unwrap()));
    let run = ruled(&book(vec![slow]), &message("X-Blackhole-Delay: 5\r\n"));
    assert_eq!(run.pauses, vec![250]);
    assert!(run.sent.ends_with(QUEUED));
}

#[test]
fn disconnects_close_at_once() {
    let rules = book(vec![rule("mail", |r| {
        r.disconnect = Some("close".parse().unwrap())
    })]);
    let run = ruled(&rules, "NOOP\r\nMAIL FROM:<a@x>\r\nNOOP\r\n");
    assert_eq!(run.sent, format!("{GREETING}250 2.0.0 OK\r\n"));
    assert_eq!((run.end, run.left), (Some(Action::Close), 0));
    let rules = book(vec![rule("helo", |r| {
        r.disconnect = Some("421".parse().unwrap())
    })]);
    let run = ruled(&rules, "EHLO c\r\nNOOP\r\n");
    assert_eq!(
        run.sent,
        format!("{GREETING}421 4.4.2 mx.example closing connection\r\n")
    );
    assert_eq!(run.end, Some(Action::Close));
}

#[test]
fn auth_rules_match_the_decoded_user_name() {
    let mut deny = replying("auth", "535 5.7.8 Not you");
    deny.subject = Some(crate::smtp::rules::Glob::new("mallory").unwrap());
    let rules = book(vec![deny]);
    let plain = |user: &str| format!("AUTH PLAIN {}\r\n", b64(format!("\0{user}\0pw").as_bytes()));
    assert!(
        ruled(&rules, &plain("mallory"))
            .sent
            .ends_with("535 5.7.8 Not you\r\n")
    );
    assert!(
        ruled(&rules, &plain("alice"))
            .sent
            .ends_with("235 2.7.0 Authentication successful\r\n")
    );
    let login = |user: &str| format!("AUTH LOGIN {}\r\n{}\r\n", b64(user.as_bytes()), b64(b"pw"));
    assert!(
        ruled(&rules, &login("mallory"))
            .sent
            .ends_with("535 5.7.8 Not you\r\n")
    );
    assert!(
        ruled(&rules, &login("alice"))
            .sent
            .ends_with("235 2.7.0 Authentication successful\r\n")
    );
    // Refused: the session is not authenticated, and AUTH may be tried again.
    let again = format!("{}{}", plain("mallory"), plain("alice"));
    assert!(
        ruled(&rules, &again)
            .sent
            .ends_with("235 2.7.0 Authentication successful\r\n")
    );
}

#[test]
fn throttle_is_asked_of_the_loop() {
    let rules = book(vec![rule("helo", |r| r.throttle = Some(100))]);
    let (policy, mut state) = (policy(), RuleState::default());
    let mut cx = context(&policy, ConnectionSeed::new(1, 1), &rules, &mut state, 0);
    let mut session = Session::new(false);
    let mut out = Vec::new();
    assert_eq!(session.throttle(), None);
    let step = session.feed(&mut cx, b"EHLO c\r\nNOOP\r\n", &mut out);
    assert_eq!(step.consumed, 14);
    assert_eq!(session.throttle(), NonZeroU32::new(100));
    assert!(normalise(&out).starts_with(EHLO_REPLY));
}

#[test]
fn after_bytes_cuts_the_message_at_every_boundary() {
    let body = "Subject: x\r\n\r\n".to_owned() + &"line of text\r\n".repeat(10) + ".\r\n";
    let input = format!("{ENVELOPE}{body}NOOP\r\n");
    for n in [0, 1, 5, 40, body.len() as u64 - 1] {
        for disconnect in ["421", "close"] {
            let cut = rule("message", |r| {
                r.after_bytes = Some(n);
                r.disconnect = Some(disconnect.parse().unwrap());
            });
            let run = ruled(&book(vec![cut]), &input);
            let said = if disconnect == "421" {
                "421 4.4.2 mx.example closing connection\r\n"
            } else {
                ""
            };
            assert_eq!(
                run.sent,
                format!("{GREETING}{ENVELOPE_REPLIES}{said}"),
                "{n} {disconnect}"
            );
            assert_eq!(run.end, Some(Action::Close), "{n}");
        }
    }
    // A message that ends within the bytes is not cut.
    let cut = rule("message", |r| {
        r.after_bytes = Some(body.len() as u64);
        r.disconnect = Some("close".parse().unwrap());
    });
    let run = ruled(&book(vec![cut]), &input);
    assert_eq!(
        run.sent,
        format!("{GREETING}{ENVELOPE_REPLIES}{QUEUED}250 2.0.0 OK\r\n")
    );
    assert_eq!(run.end, None);
}

/// One command line through a session with greylisting on, at `now_ms`; the reply.
fn greylisted(
    session: &mut Session,
    settings: &GreylistSettings,
    triplets: &mut Greylist,
    line: &str,
    now_ms: u64,
) -> String {
    let (policy, rules, mut state) = (policy(), RuleBook::default(), RuleState::default());
    let mut cx = context(
        &policy,
        ConnectionSeed::new(1, 1),
        &rules,
        &mut state,
        now_ms,
    );
    cx.greylist = Some((settings, triplets));
    let mut out = Vec::new();
    session.feed(&mut cx, format!("{line}\r\n").as_bytes(), &mut out);
    String::from_utf8_lossy(&out).trim_end().to_owned()
}

#[test]
fn greylisting_defers_a_first_sight_and_passes_a_retry_after_the_delay() {
    let settings = GreylistSettings {
        delay_ms: 60_000,
        ..GreylistSettings::default()
    };
    let mut triplets = Greylist::default();
    let mut first = Session::new(false);
    let say =
        |s: &mut Session, t: &mut Greylist, line: &str, now| greylisted(s, &settings, t, line, now);
    assert_eq!(
        say(&mut first, &mut triplets, "MAIL FROM:<a@example.com>", 0),
        "250 2.1.0 OK"
    );
    assert_eq!(
        say(&mut first, &mut triplets, "RCPT TO:<b@example.net>", 0),
        "451 4.7.1 Greylisted, try again later"
    );
    // A deferred recipient does not count: DATA has none.
    let data = say(&mut first, &mut triplets, "DATA", 0);
    assert!(data.starts_with("503") || data.starts_with("554"), "{data}");
    // A retry too early, on a new connection: deferred again.
    let mut early = Session::new(false);
    say(
        &mut early,
        &mut triplets,
        "MAIL FROM:<A@Example.com>",
        30_000,
    );
    assert!(say(&mut early, &mut triplets, "RCPT TO:<b@example.net>", 30_000).starts_with("451"));
    // After the delay: through, and the transaction goes on.
    let mut retry = Session::new(false);
    say(
        &mut retry,
        &mut triplets,
        "MAIL FROM:<a@example.com>",
        61_000,
    );
    assert_eq!(
        say(&mut retry, &mut triplets, "RCPT TO:<b@example.net>", 61_000),
        "250 2.1.5 OK"
    );
    assert_eq!(
        say(&mut retry, &mut triplets, "DATA", 61_000),
        "354 End data with <CR><LF>.<CR><LF>"
    );
    // Another sender to the same recipient is another triplet.
    let mut other = Session::new(false);
    say(
        &mut other,
        &mut triplets,
        "MAIL FROM:<z@example.com>",
        61_000,
    );
    assert!(say(&mut other, &mut triplets, "RCPT TO:<b@example.net>", 61_000).starts_with("451"));
}

#[test]
fn a_reload_during_a_held_delay_answers_as_if_no_rule_had_fired() {
    let policy = policy();
    let seed = ConnectionSeed::new(1, 1);
    let before = book(vec![rule("mail", |r| {
        r.delay = Some("1".parse().expect("a delay"))
    })]);
    // The new book's rule 0 is another rule altogether.
    let after = book(vec![rule("connect", |r| {
        r.disconnect = Some(crate::smtp::rules::Disconnect::Close)
    })]);
    let mut state = RuleState::default();
    let mut session = Session::new(false);
    let line = b"MAIL FROM:<a@example.com>\r\n";
    let mut out = Vec::new();
    let step = session.feed(
        &mut context(&policy, seed, &before, &mut state, 0),
        line,
        &mut out,
    );
    assert_eq!(step.action, Action::Pause { millis: 1000 });
    let step = session.resume(
        &mut context(&policy, seed, &after, &mut state, 1000),
        &line[step.consumed..],
        &mut out,
    );
    assert_eq!(step.action, Action::Continue);
    assert_eq!(String::from_utf8_lossy(&out), "250 2.1.0 OK\r\n");
}

#[test]
fn greylisting_switched_on_mid_transaction_costs_no_extra_deferral() {
    let settings = GreylistSettings {
        delay_ms: 60_000,
        ..GreylistSettings::default()
    };
    let mut triplets = Greylist::default();
    let (policy, rules, mut state) = (policy(), RuleBook::default(), RuleState::default());
    let mut session = Session::new(false);
    let mut out = Vec::new();
    // MAIL before the reload that switches greylisting on.
    let mut cx = context(&policy, ConnectionSeed::new(1, 1), &rules, &mut state, 0);
    session.feed(&mut cx, b"MAIL FROM:<a@example.com>\r\n", &mut out);
    assert_eq!(out, b"250 2.1.0 OK\r\n");
    let rcpt = greylisted(
        &mut session,
        &settings,
        &mut triplets,
        "RCPT TO:<b@example.net>",
        1_000,
    );
    assert_eq!(rcpt, "250 2.1.5 OK");
    // The next transaction is greylisted on its own sender, not on a stale one.
    let mut next = Session::new(false);
    let say =
        |s: &mut Session, t: &mut Greylist, line: &str, now| greylisted(s, &settings, t, line, now);
    say(&mut next, &mut triplets, "MAIL FROM:<a@example.com>", 2_000);
    assert!(say(&mut next, &mut triplets, "RCPT TO:<b@example.net>", 2_000).starts_with("451"));
    say(&mut next, &mut triplets, "RSET", 62_000);
    say(
        &mut next,
        &mut triplets,
        "MAIL FROM:<a@example.com>",
        62_000,
    );
    assert_eq!(
        say(&mut next, &mut triplets, "RCPT TO:<b@example.net>", 62_000),
        "250 2.1.5 OK"
    );
}

// ---------------------------------------------------------------------------------------------
// The account a session gives of itself

/// Writes down every observation as a short line.
#[derive(Default)]
struct Recorder(Vec<String>);

impl crate::smtp::observer::Observer for Recorder {
    fn command(&mut self, verb: Verb) {
        self.0.push(format!("command {verb:?}"));
    }
    fn greeted(&mut self, name: &[u8]) {
        self.0
            .push(format!("greeted {}", String::from_utf8_lossy(name)));
    }
    fn auth_user(&mut self, user: &[u8]) {
        self.0
            .push(format!("user {}", String::from_utf8_lossy(user)));
    }
    fn auth(&mut self, mechanism: &'static str, result: crate::smtp::observer::AuthResult) {
        self.0.push(format!("auth {mechanism} {}", result.as_str()));
    }
    fn sender(&mut self, address: &[u8]) {
        self.0
            .push(format!("sender {}", String::from_utf8_lossy(address)));
    }
    fn recipient(&mut self, address: &[u8]) {
        self.0
            .push(format!("recipient {}", String::from_utf8_lossy(address)));
    }
    fn transaction_dropped(&mut self) {
        self.0.push("dropped".into());
    }
    fn rule_fired(&mut self, rule: &str) {
        self.0.push(format!("fired {rule}"));
    }
    fn greylisted(&mut self, passed: bool) {
        self.0.push(format!("greylisted {passed}"));
    }
    fn data_ended(&mut self, size: u64, switches: &Switches) {
        let mode = switches.mode.map_or("-", |m| m.as_str());
        self.0.push(format!("data {size} {mode}"));
    }
    fn message(&mut self, message: &crate::smtp::observer::MessageEnd) {
        let code = message.code.map_or("none".into(), |c| c.to_string());
        self.0
            .push(format!("message {code} {}", message.rule.unwrap_or("-")));
    }
    fn ending(&mut self, why: crate::smtp::observer::Ending) {
        self.0.push(format!("ending {why:?}"));
    }
}

/// What a session with `rules` reports over `input`, fed whole, pauses over at once.
fn observed(policy: &Policy, rules: &RuleBook, input: &str) -> Vec<String> {
    let mut recorder = Recorder::default();
    let mut state = RuleState::default();
    let mut session = Session::new(false);
    let mut cx = context(policy, ConnectionSeed::new(7, 1), rules, &mut state, 0);
    cx.observer = &mut recorder;
    let (mut out, mut tail, mut pauses) = (Vec::new(), input.as_bytes().to_vec(), Vec::new());
    let action = session.greet(&mut cx, &mut out);
    let mut end = follow(
        &mut session,
        &mut cx,
        action,
        &mut tail,
        &mut pauses,
        &mut out,
    );
    while end.is_none() && !tail.is_empty() {
        let step = session.feed(&mut cx, &tail, &mut out);
        tail.drain(..step.consumed);
        end = follow(
            &mut session,
            &mut cx,
            step.action,
            &mut tail,
            &mut pauses,
            &mut out,
        );
        if step.consumed == 0 && end.is_none() {
            break;
        }
    }
    recorder.0
}

#[test]
fn a_session_reports_what_it_sees_and_says() {
    let policy = Policy::new(FQDN.into(), Mode::Accept, None, true, 1000, true);
    let input = "EHLO client.example more\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n\
                 RCPT TO:<c@y> NOTIFY=NEVER\r\nDATA\r\nX-Blackhole-Mode: bounce\r\n\r\nhi\r\n.\r\n\
                 MAIL FROM:<d@x>\r\nRSET\r\nBOGUS\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\nQUIT\r\n";
    let seen = observed(&policy, &RuleBook::default(), input);
    let expected = [
        "command Ehlo",
        "greeted client.example",
        "command Mail",
        "sender a@x",
        "command Rcpt",
        "recipient b@y",
        "command Rcpt",
        "recipient c@y",
        "command Data",
        // As `max_message_size` counts: the final `.<CRLF>` included.
        "data 35 bounce",
        // The bounce is drawn from ten; its code is whatever was said.
    ];
    assert_eq!(seen[..expected.len()], expected, "all seen: {seen:#?}");
    let message = &seen[expected.len()];
    assert!(
        message.starts_with("message 4") || message.starts_with("message 5"),
        "a bounce's code: {message}"
    );
    assert_eq!(
        seen[expected.len() + 1..],
        [
            "command Mail",
            "sender d@x",
            "command Rset",
            "dropped",
            "command Unknown",
            "command Auth",
            "user user",
            "auth plain accepted",
            "command Quit",
            "ending Quit",
        ],
        "all seen: {seen:#?}"
    );
}

#[test]
fn a_session_reports_the_rules_that_fire_and_what_they_said() {
    let rules = book(vec![
        replying("rcpt", "550 5.1.1 no such user"),
        rule("message", |r| {
            r.name = "slow".into();
            r.delay = Some("2".parse().expect("a delay"));
        }),
    ]);
    let seen = observed(
        &policy(),
        &rules,
        "HELO h\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nNOOP\r\nQUIT\r\n",
    );
    assert_eq!(
        seen,
        [
            "command Helo",
            "greeted h",
            "command Mail",
            "sender a@x",
            "command Rcpt",
            "fired r",
            "command Noop",
            "command Quit",
            "ending Quit",
        ]
    );
    // A delayed reply: the command is counted once, the rule once, the message with its code.
    let delayed = book(vec![rule("data", |r| {
        r.delay = Some("1".parse().expect("a delay"));
    })]);
    let seen = observed(
        &policy(),
        &delayed,
        "HELO h\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        seen.iter().filter(|s| *s == "command Data").count(),
        1,
        "{seen:#?}"
    );
    assert_eq!(
        seen.iter().filter(|s| *s == "fired r").count(),
        1,
        "{seen:#?}"
    );
    assert!(seen.contains(&"message 250 -".to_string()), "{seen:#?}");
}

#[test]
fn a_rule_that_cuts_a_message_off_reports_its_end() {
    let rules = book(vec![rule("message", |r| {
        r.name = "cut".into();
        r.after_bytes = Some(4);
    })]);
    let seen = observed(
        &policy(),
        &rules,
        "HELO h\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n0123456789\r\n.\r\n",
    );
    let tail: Vec<&str> = seen
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        ["data 4 -", "fired cut", "message 421 cut", "ending Rule"],
        "{seen:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// CHUNKING (RFC 3030) and LMTP (RFC 2033)

fn chunking() -> Policy {
    policy().with_chunking(true)
}

fn lmtp() -> Policy {
    policy().with_lmtp(true)
}

/// `input` under `policy` with `rules`, whole and split at every byte boundary: all runs must
/// agree.
fn ruled_with(policy: &Policy, rules: &RuleBook, input: &str) -> Run {
    let input = input.as_bytes();
    let whole = run_ruled(policy, rules, input, input.len());
    for step in 1..input.len() {
        assert_eq!(
            run_ruled(policy, rules, input, step),
            whole,
            "split every {step} bytes"
        );
    }
    whole
}

fn chunked(input: &str) -> String {
    run_with(&chunking(), input.as_bytes()).sent
}

/// A BDAT command and its chunk.
fn bdat(chunk: &str, last: bool) -> String {
    let last = if last { " LAST" } else { "" };
    format!("BDAT {}{last}\r\n{chunk}", chunk.len())
}

const MAIL_RCPT: &str = "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n";
const MAIL_RCPT_REPLIES: &str = "250 2.1.0 OK\r\n250 2.1.5 OK\r\n";

#[test]
fn chunking_is_offered_only_where_configured() {
    let ehlo = EHLO_REPLY.replace("250-EXPN\r\n", "250-EXPN\r\n250-CHUNKING\r\n");
    assert_eq!(chunked("EHLO c\r\n"), ehlo);
    assert_eq!(sent("EHLO c\r\n"), EHLO_REPLY);
    // Without it, BDAT is a command like any unknown one, and what follows it is commands.
    assert_eq!(
        sent("BDAT 6 LAST\r\nNOOP\r\n"),
        "502 5.5.2 Command not recognised\r\n250 2.0.0 OK\r\n"
    );
}

#[test]
fn chunks_are_read_by_count_and_a_dot_line_is_data() {
    // The chunks hold a dot line and commands: octets, not lines, and never commands.
    let input = format!(
        "{MAIL_RCPT}{}{}NOOP\r\n",
        bdat("A: b\r\n\r\n.\r\nQUIT\r\nx", false),
        bdat(".\r\nRSET\r\n", true)
    );
    assert_eq!(
        chunked(&input),
        format!("{MAIL_RCPT_REPLIES}250 2.0.0 18 octets received\r\n{QUEUED}250 2.0.0 OK\r\n")
    );
    // An empty last chunk ends the message; so does one alone.
    assert_eq!(
        chunked(&format!("{MAIL_RCPT}BDAT 3\r\nabcBDAT 0 LAST\r\n")),
        format!("{MAIL_RCPT_REPLIES}250 2.0.0 3 octets received\r\n{QUEUED}")
    );
    assert_eq!(
        chunked(&format!("{MAIL_RCPT}BDAT 0 LAST\r\nNOOP\r\n")),
        format!("{MAIL_RCPT_REPLIES}{QUEUED}250 2.0.0 OK\r\n")
    );
    // The next transaction is a new message.
    let two = format!("{MAIL_RCPT}BDAT 1 LAST\r\nx{MAIL_RCPT}BDAT 1 LAST\r\ny");
    assert_eq!(
        chunked(&two),
        format!("{MAIL_RCPT_REPLIES}{QUEUED}{MAIL_RCPT_REPLIES}{QUEUED}")
    );
}

#[test]
fn a_chunk_without_a_transaction_is_read_and_thrown_away() {
    // MAIL refused in a pipeline: the chunk's commands are never run.
    let input = "MAIL FROM:\r\nRCPT TO:<b@example.net>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n";
    assert_eq!(
        chunked(input),
        "501 5.5.4 Syntax: MAIL FROM: <address>\r\n\
         503 5.5.1 Error: need MAIL command\r\n\
         503 5.5.1 Error: need MAIL command\r\n\
         250 2.0.0 OK\r\n"
    );
    // Every RCPT refused: 554, once the chunk has been read.
    let input = "MAIL FROM:<a@b>\r\nRCPT TO:\r\nBDAT 12\r\nRSET\r\nQUIT\r\nBDAT 0 LAST\r\nNOOP\r\n";
    assert_eq!(
        chunked(input),
        "250 2.1.0 OK\r\n\
         501 5.5.4 Syntax: RCPT TO: <address>\r\n\
         554 5.5.1 Error: no valid recipients\r\n\
         554 5.5.1 Error: no valid recipients\r\n\
         250 2.0.0 OK\r\n"
    );
}

#[test]
fn a_bdat_that_does_not_parse_reads_no_chunk() {
    for arg in [
        "",
        " x",
        " 5 FIRST",
        " -1",
        " 5 LAST x",
        " 123456789012345678901",
    ] {
        assert_eq!(
            chunked(&format!("{MAIL_RCPT}BDAT{arg}\r\nNOOP\r\n")),
            format!("{MAIL_RCPT_REPLIES}501 5.5.4 Syntax: BDAT size [LAST]\r\n250 2.0.0 OK\r\n"),
            "{arg:?}"
        );
    }
}

#[test]
fn bdat_and_data_do_not_mix() {
    let input = format!("{MAIL_RCPT}BDAT 2\r\nabDATA\r\nRCPT TO:<c@d>\r\nBDAT 1 LAST\r\nc");
    assert_eq!(
        chunked(&input),
        format!(
            "{MAIL_RCPT_REPLIES}250 2.0.0 2 octets received\r\n\
             503 5.5.1 Error: bad sequence of commands after BDAT\r\n\
             503 5.5.1 Error: bad sequence of commands after BDAT\r\n{QUEUED}"
        )
    );
    // RSET drops the chunks so far; MAIL inside is nested.
    let input = format!("{MAIL_RCPT}BDAT 2\r\nabMAIL FROM:<x@y>\r\nRSET\r\nBDAT 1 LAST\r\nc");
    assert_eq!(
        chunked(&input),
        format!(
            "{MAIL_RCPT_REPLIES}250 2.0.0 2 octets received\r\n\
             503 5.5.1 Error: nested MAIL command\r\n250 2.0.0 OK\r\n\
             503 5.5.1 Error: need MAIL command\r\n"
        )
    );
}

#[test]
fn chunk_sizes_count_against_the_limit_and_are_still_read() {
    // The limit is 1000: 600 + 600 is too big, said after LAST.
    let a = "a".repeat(600);
    let input = format!("{MAIL_RCPT}BDAT 600\r\n{a}BDAT 600 LAST\r\n{a}NOOP\r\n");
    let run = run_split(&chunking(), input.as_bytes(), 7);
    assert_eq!(
        run.sent,
        format!(
            "{MAIL_RCPT_REPLIES}250 2.0.0 600 octets received\r\n\
             552 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
        )
    );
    // 1000 octets exactly pass.
    let input = format!("{MAIL_RCPT}BDAT 1000 LAST\r\n{}", "b".repeat(1000));
    assert!(
        run_split(&chunking(), input.as_bytes(), 13)
            .sent
            .ends_with(QUEUED)
    );
}

#[test]
fn a_huge_chunk_is_counted_not_kept() {
    let mut session = Session::new(false);
    let policy = chunking();
    let seed = ConnectionSeed::new(1, 1);
    let mut out = Vec::new();
    let head = format!("{MAIL_RCPT}BDAT 18446744073709551615 LAST\r\n");
    let step = feed(&mut session, &policy, seed, head.as_bytes(), &mut out);
    assert_eq!(step.consumed, head.len());
    let block = vec![b'.'; 1 << 16];
    for _ in 0..64 {
        let step = feed(&mut session, &policy, seed, &block, &mut out);
        assert_eq!(step.consumed, block.len(), "every octet is used at once");
    }
    assert!(session.in_data());
    assert_eq!(normalise(&out), MAIL_RCPT_REPLIES);
}

#[test]
fn switch_headers_are_read_across_chunks() {
    // The header is cut in the middle of its name, then between its CR and LF.
    let input = format!(
        "{MAIL_RCPT}{}{}{}",
        bdat("X-Black", false),
        bdat("hole-Mode: bounce\r", false),
        bdat("\n\r\nbody\r\n", true)
    );
    let run = run_with(&chunking(), input.as_bytes());
    let last = run
        .sent
        .rsplit_terminator("\r\n")
        .next()
        .unwrap_or_default();
    assert!(
        BOUNCE_LINES.contains(&format!("{last}\r\n").as_str()),
        "{}",
        run.sent
    );
    // The delay switch holds the reply that comes after LAST.
    let input = format!("{MAIL_RCPT}{}", bdat("X-Blackhole-Delay: 3\r\n\r\n", true));
    let run = run_with(&chunking(), input.as_bytes());
    assert_eq!(
        (run.sent, run.pauses),
        (format!("{MAIL_RCPT_REPLIES}{QUEUED}"), vec![3000])
    );
    // In the body, a switch is text.
    let input = format!(
        "{MAIL_RCPT}{}",
        bdat("\r\nX-Blackhole-Mode: bounce\r\n\r\n", true)
    );
    assert!(chunked(&input).ends_with(QUEUED));
}

#[test]
fn rules_see_the_first_bdat_as_data_and_answer_after_last() {
    // A rule at data refuses the first BDAT: its chunk is still read and dropped.
    let rules = book(vec![replying("data", "554 5.7.1 Not today")]);
    let input = format!("{MAIL_RCPT}BDAT 6\r\nQUIT\r\nBDAT 4 LAST\r\nNOOPNOOP\r\n");
    let run = ruled_with(&chunking(), &rules, &input);
    assert_eq!(
        run.sent,
        format!(
            "{GREETING}{MAIL_RCPT_REPLIES}554 5.7.1 Not today\r\n554 5.7.1 Not today\r\n\
             250 2.0.0 OK\r\n"
        )
    );
    // Even a 354 from it starts no DATA.
    let rules = book(vec![replying("data", "354 Go on")]);
    let run = ruled_with(
        &chunking(),
        &rules,
        &format!("{MAIL_RCPT}BDAT 2\r\nabNOOP\r\n"),
    );
    assert_eq!(
        run.sent,
        format!("{GREETING}{MAIL_RCPT_REPLIES}354 Go on\r\n250 2.0.0 OK\r\n")
    );
    // Only the first BDAT of a message is the data stage's.
    let rules = book(vec![rule("data", |r| r.delay = Some("2".parse().unwrap()))]);
    let input = format!("{MAIL_RCPT}BDAT 1\r\naBDAT 1\r\nbBDAT 1 LAST\r\nc");
    let run = ruled_with(&chunking(), &rules, &input);
    assert_eq!(run.pauses, vec![2000]);
    // A rule at message answers after LAST.
    let rules = book(vec![replying("message", "451 4.3.0 Try later")]);
    let input = format!("{MAIL_RCPT}BDAT 1\r\naBDAT 1 LAST\r\nbNOOP\r\n");
    assert_eq!(
        ruled_with(&chunking(), &rules, &input).sent,
        format!(
            "{GREETING}{MAIL_RCPT_REPLIES}250 2.0.0 1 octets received\r\n\
             451 4.3.0 Try later\r\n250 2.0.0 OK\r\n"
        )
    );
}

#[test]
fn after_bytes_cuts_a_chunked_message_off() {
    let rules = book(vec![rule("message", |r| {
        r.after_bytes = Some(5);
        r.disconnect = Some("421".parse().unwrap());
    })]);
    let input = format!("{MAIL_RCPT}BDAT 3\r\nabcBDAT 3 LAST\r\ndefNOOP\r\n");
    let run = ruled_with(&chunking(), &rules, &input);
    assert_eq!(
        run.sent,
        format!(
            "{GREETING}{MAIL_RCPT_REPLIES}250 2.0.0 3 octets received\r\n\
             421 4.4.2 mx.example closing connection\r\n"
        )
    );
    assert_eq!(run.end, Some(Action::Close));
}

#[test]
fn a_chunked_message_is_reported_once() {
    let input = format!("EHLO c\r\n{MAIL_RCPT}BDAT 1\r\naBDAT 2 LAST\r\nbcQUIT\r\n");
    let seen = observed(&chunking(), &RuleBook::default(), &input);
    assert_eq!(
        seen,
        [
            "command Ehlo",
            "greeted c",
            "command Mail",
            "sender a@example.com",
            "command Rcpt",
            "recipient b@example.net",
            "command Bdat",
            "command Bdat",
            "data 3 -",
            "message 250 -",
            "command Quit",
            "ending Quit",
        ]
    );
}

#[test]
fn an_lmtp_listener_takes_lhlo_only() {
    let run = run_with(&lmtp(), b"HELO c\r\nEHLO c\r\nLHLO\r\nLHLO c\r\n");
    assert_eq!(
        run.sent,
        format!(
            "500 5.5.1 Error: this is an LMTP service, use LHLO\r\n\
             500 5.5.1 Error: this is an LMTP service, use LHLO\r\n\
             501 5.5.4 Syntax: LHLO domain.tld\r\n{EHLO_REPLY}"
        )
    );
    assert_eq!(sent("LHLO c\r\n"), "502 5.5.2 Command not recognised\r\n");
    // LHLO offers CHUNKING where EHLO would.
    let both = lmtp().with_chunking(true);
    assert!(
        run_with(&both, b"LHLO c\r\n")
            .sent
            .contains("250-CHUNKING\r\n")
    );
}

const LMTP_ENVELOPE: &str = "LHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n\
     RCPT TO:\r\nRCPT TO:<c@example.net>\r\nDATA\r\n";

#[test]
fn lmtp_replies_once_per_accepted_recipient() {
    let input = format!("{LMTP_ENVELOPE}Subject: x\r\n\r\n.\r\nNOOP\r\n");
    let run = run_with(&lmtp(), input.as_bytes());
    assert_eq!(
        run.sent,
        format!(
            "{EHLO_REPLY}250 2.1.0 OK\r\n250 2.1.5 OK\r\n\
             501 5.5.4 Syntax: RCPT TO: <address>\r\n250 2.1.5 OK\r\n\
             354 End data with <CR><LF>.<CR><LF>\r\n{QUEUED}{QUEUED}250 2.0.0 OK\r\n"
        )
    );
    // Each recipient draws its own id.
    let mut out = Vec::new();
    let seed = ConnectionSeed::new(3, 1);
    feed(
        &mut Session::new(false),
        &lmtp(),
        seed,
        input.as_bytes(),
        &mut out,
    );
    let text = String::from_utf8_lossy(&out);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("250 2.0.0 OK: queued as "))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    // Too big: every recipient hears it.
    let big = format!("{LMTP_ENVELOPE}{}\r\n.\r\n", "x".repeat(1000));
    let run = run_split(&lmtp(), big.as_bytes(), 11);
    let too_big = "552 Message size exceeds fixed maximum message size\r\n";
    assert!(
        run.sent.ends_with(&format!("{too_big}{too_big}")),
        "{}",
        run.sent
    );
}

#[test]
fn each_lmtp_recipient_draws_its_own_fate() {
    let random = Policy::new(FQDN.into(), Mode::Random, None, true, 1000, false).with_lmtp(true);
    let mut input = String::from("LHLO c\r\nMAIL FROM:<a@b>\r\n");
    for n in 0..40 {
        input.push_str(&format!("RCPT TO:<r{n}@b>\r\n"));
    }
    input.push_str("DATA\r\n.\r\n");
    let run = run_split(&random, input.as_bytes(), input.len());
    let finals: Vec<&str> = run.sent.lines().skip(12 + 1 + 40 + 1).collect();
    assert_eq!(finals.len(), 40, "{}", run.sent);
    let accepted = finals.iter().filter(|l| l.starts_with("250 ")).count();
    assert!(0 < accepted && accepted < 40, "{accepted} of 40 accepted");
    // The switch applies to every recipient, and its delay comes once.
    let input =
        format!("{LMTP_ENVELOPE}X-Blackhole-Mode: bounce\r\nX-Blackhole-Delay: 2\r\n\r\n.\r\n");
    let run = run_with(&lmtp(), input.as_bytes());
    let finals: Vec<&str> = run.sent.lines().skip(12 + 5).collect();
    assert_eq!(finals.len(), 2, "{}", run.sent);
    assert!(
        finals
            .iter()
            .all(|l| BOUNCE_LINES.contains(&format!("{l}\r\n").as_str()))
    );
    assert_eq!(run.pauses, vec![2000]);
}

#[test]
fn lmtp_rules_decide_for_each_recipient() {
    // `first = 1`: the first recipient's reply is the rule's, the second's the normal one.
    let rules = book(vec![rule("message", |r| {
        r.reply = Some("452 4.2.2 Mailbox full".parse().unwrap());
        r.first = Some(1);
    })]);
    let input = format!("{LMTP_ENVELOPE}\r\n.\r\n");
    let run = ruled_with(&lmtp(), &rules, &input);
    assert!(
        run.sent
            .ends_with(&format!("452 4.2.2 Mailbox full\r\n{QUEUED}")),
        "{}",
        run.sent
    );
    // A rule at rcpt refuses one recipient: one reply fewer. Its delay at message comes before
    // each reply it decides.
    let rules = book(vec![
        rule("rcpt", |r| {
            r.reply = Some("550 5.1.1 No such user".parse().unwrap());
            r.subject = Some(crate::smtp::rules::Glob::new("c@*").unwrap());
        }),
        rule("message", |r| r.delay = Some("1".parse().unwrap())),
    ]);
    let run = ruled_with(&lmtp(), &rules, &input);
    assert!(
        run.sent.ends_with(&format!(
            "550 5.1.1 No such user\r\n354 End data with <CR><LF>.<CR><LF>\r\n{QUEUED}"
        )),
        "{}",
        run.sent
    );
    assert_eq!(run.pauses, vec![1000]);
    // Reported: the data once, a message per reply.
    let seen = observed(&lmtp(), &RuleBook::default(), &input);
    let ends: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("data") || l.starts_with("message"))
        .collect();
    assert_eq!(ends, ["data 5 -", "message 250 -", "message 250 -"]);
}

#[test]
fn lmtp_answers_bdat_last_per_recipient() {
    let both = lmtp().with_chunking(true);
    let input = "LHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nRCPT TO:<d@e>\r\nBDAT 2\r\n\r\nBDAT 3 LAST\r\nabcNOOP\r\n";
    let run = run_with(&both, input.as_bytes());
    assert!(
        run.sent.ends_with(&format!(
            "250 2.0.0 2 octets received\r\n{QUEUED}{QUEUED}250 2.0.0 OK\r\n"
        )),
        "{}",
        run.sent
    );
}

#[test]
fn a_transaction_takes_at_most_max_recipients() {
    let mut input = String::from("MAIL FROM:<a@b>\r\n");
    for n in 0..=MAX_RECIPIENTS {
        input.push_str(&format!("RCPT TO:<r{n}@b>\r\n"));
    }
    input.push_str("RSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<again@b>\r\n");
    let run = run_split(&policy(), input.as_bytes(), 4096);
    let lines: Vec<&str> = run.sent.lines().collect();
    let accepted = lines.iter().filter(|l| **l == "250 2.1.5 OK").count();
    assert_eq!(
        accepted,
        usize::from(MAX_RECIPIENTS) + 1,
        "the limit is per transaction"
    );
    assert_eq!(
        lines[usize::from(MAX_RECIPIENTS) + 1],
        "452 4.5.3 Too many recipients"
    );
}

#[test]
fn a_rules_2xx_past_the_recipient_bound_adds_no_recipient() {
    let rules = book(vec![replying("rcpt", "250 2.1.5 Scripted")]);
    let mut input = String::from("LHLO c\r\nMAIL FROM:<a@b>\r\n");
    for n in 0..=MAX_RECIPIENTS {
        input.push_str(&format!("RCPT TO:<r{n}@b>\r\n"));
    }
    input.push_str("DATA\r\nx\r\n.\r\n");
    // Every RCPT hears the rule; the session counts the recipients it could take, and owes
    // and tells the observer of that many.
    let seen = observed(&lmtp(), &rules, &input);
    let recipients = seen.iter().filter(|s| s.starts_with("recipient ")).count();
    assert_eq!(recipients, usize::from(MAX_RECIPIENTS), "{:?}", &seen[..4]);
    let run = run_ruled(&lmtp(), &rules, input.as_bytes(), input.len());
    let scripted = run.sent.matches("250 2.1.5 Scripted").count();
    assert_eq!(scripted, usize::from(MAX_RECIPIENTS) + 1);
    let after_data = &run.sent[run.sent.find("354").expect("DATA was taken")..];
    assert_eq!(after_data.lines().count() - 1, usize::from(MAX_RECIPIENTS));
}
