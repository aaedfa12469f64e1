//! Real mail clients against the real binary: Python's smtplib, curl and swaks each deliver a
//! message, and AUTH with every mechanism each of them can use fails for a user named
//! `fail=alice` (which they send base64-encoded) and succeeds for `alice`.
//!
//! A missing client is a failure, not a skip: `.ci/run` installs them.

mod common;

use common::clients::{curl, smtplib, swaks};
use common::{Server, transcript};
use std::process::Output;

const MECHANISMS: [&str; 3] = ["PLAIN", "LOGIN", "CRAM-MD5"];

/// Whether a client puts its first response on the AUTH line (RFC 4954's initial response):
/// both ways for PLAIN and LOGIN; CRAM-MD5 has none (the server's challenge comes first), so
/// asking for one changes nothing and is not a case of its own.
fn initial_response_choices(mechanism: &str) -> &'static [bool] {
    if mechanism == "CRAM-MD5" {
        &[false]
    } else {
        &[false, true]
    }
}

/// Asserts that `text` shows the client's AUTH command (in a line starting with `sent`, e.g.
/// "> ") and that the command held an initial response exactly when `initial` says so.
fn assert_auth_line(text: &str, sent: &str, mechanism: &str, initial: bool, what: &str) {
    let command = format!("{sent}AUTH {mechanism}");
    let line = text
        .lines()
        .map(str::trim_end)
        .find(|line| line.starts_with(&command))
        .unwrap_or_else(|| panic!("{what}: no {command:?} line:\n{text}"));
    let argument = line[command.len()..].trim();
    assert_eq!(
        !argument.is_empty(),
        initial,
        "{what}: initial response {argument:?}:\n{text}"
    );
}

/// Asserts that an smtplib run authenticated (235) and then delivered its message.
fn assert_smtplib_authenticated(out: &Output, what: &str) {
    let text = transcript(out);
    assert_eq!(out.status.code(), Some(0), "{what}:\n{text}");
    assert!(
        text.contains("AUTH 235 2.7.0 Authentication successful"),
        "{what}:\n{text}"
    );
    assert!(text.contains("SENT"), "{what}:\n{text}");
}

/// Asserts that smtplib raised SMTPAuthenticationError with 535.
fn assert_smtplib_refused(out: &Output, what: &str) {
    let text = transcript(out);
    assert_eq!(out.status.code(), Some(3), "{what}:\n{text}");
    assert!(
        text.contains("AUTHFAIL 535 5.7.8 Authentication failed"),
        "{what}:\n{text}"
    );
}

#[test]
fn smtplib_sendmail_delivers_a_message() {
    let server = Server::start("");
    let out = smtplib(server.target(), &["send"]);
    let text = transcript(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("SENT"), "{text}");
}

#[test]
fn smtplib_login_succeeds_unless_the_user_says_fail() {
    // login() picks the mechanism itself from the EHLO reply (CRAM-MD5 first).
    let server = Server::start("");
    assert_smtplib_refused(
        &smtplib(server.target(), &["login", "fail=alice", "pw"]),
        "login fail=alice",
    );
    assert_smtplib_authenticated(
        &smtplib(server.target(), &["login", "alice", "pw"]),
        "login alice",
    );
}

#[test]
fn smtplib_auth_with_each_mechanism_succeeds_unless_the_user_says_fail() {
    let server = Server::start("");
    for mechanism in MECHANISMS {
        for &initial in initial_response_choices(mechanism) {
            let flag = if initial { "initial" } else { "noinitial" };
            let what = format!("smtplib AUTH {mechanism} ({flag})");
            let refused = smtplib(
                server.target(),
                &["auth", mechanism, "fail=alice", "pw", flag],
            );
            let what_refused = format!("{what} as fail=alice");
            assert_smtplib_refused(&refused, &what_refused);
            assert_auth_line(
                &transcript(&refused),
                "> ",
                mechanism,
                initial,
                &what_refused,
            );
            let accepted = smtplib(server.target(), &["auth", mechanism, "alice", "pw", flag]);
            let what_accepted = format!("{what} as alice");
            assert_smtplib_authenticated(&accepted, &what_accepted);
            assert_auth_line(
                &transcript(&accepted),
                "> ",
                mechanism,
                initial,
                &what_accepted,
            );
        }
    }
}

#[test]
fn curl_delivers_a_message() {
    let server = Server::start("");
    let out = curl(server.target(), &[]);
    let text = transcript(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("< 250 2.0.0 OK: queued as <"), "{text}");
}

#[test]
fn curl_auth_with_each_mechanism_succeeds_unless_the_user_says_fail() {
    const CURLE_LOGIN_DENIED: i32 = 67;
    let server = Server::start("");
    for mechanism in MECHANISMS {
        // With --sasl-ir curl puts the first response on the AUTH line.
        for &initial in initial_response_choices(mechanism) {
            let login_options = format!("AUTH={mechanism}");
            let what = format!("curl AUTH {mechanism} (initial response: {initial})");
            let with_user = |user: &str| {
                let mut args = vec!["--user", user, "--login-options", &login_options];
                if initial {
                    args.push("--sasl-ir");
                }
                curl(server.target(), &args)
            };

            let refused = with_user("fail=alice:pw");
            let text = transcript(&refused);
            assert_eq!(
                refused.status.code(),
                Some(CURLE_LOGIN_DENIED),
                "{what} fail=alice:\n{text}"
            );
            assert_auth_line(
                &text,
                "> ",
                mechanism,
                initial,
                &format!("{what} fail=alice"),
            );
            assert!(
                text.contains("< 535 5.7.8 Authentication failed"),
                "{what} fail=alice:\n{text}"
            );

            let accepted = with_user("alice:pw");
            let text = transcript(&accepted);
            assert_eq!(accepted.status.code(), Some(0), "{what} alice:\n{text}");
            assert_auth_line(&text, "> ", mechanism, initial, &format!("{what} alice"));
            assert!(
                text.contains("< 235 2.7.0 Authentication successful"),
                "{what} alice:\n{text}"
            );
            assert!(
                text.contains("< 250 2.0.0 OK: queued as <"),
                "{what} alice:\n{text}"
            );
        }
    }
}

#[test]
fn swaks_delivers_a_message() {
    let server = Server::start("");
    let out = swaks(server.target(), &[]);
    let text = transcript(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("<-  250 2.0.0 OK: queued as <"), "{text}");
}

#[test]
fn swaks_auth_with_each_mechanism_succeeds_unless_the_user_says_fail() {
    let server = Server::start("");
    for mechanism in MECHANISMS {
        let with_user = |user: &str| {
            swaks(
                server.target(),
                &[
                    "--auth",
                    mechanism,
                    "--auth-user",
                    user,
                    "--auth-password",
                    "pw",
                ],
            )
        };

        let refused = with_user("fail=alice");
        let text = transcript(&refused);
        assert_ne!(
            refused.status.code(),
            Some(0),
            "swaks {mechanism} fail=alice:\n{text}"
        );
        assert!(
            text.contains(&format!(" -> AUTH {mechanism}")),
            "swaks {mechanism} fail=alice:\n{text}"
        );
        assert!(
            text.contains("<** 535 5.7.8 Authentication failed"),
            "swaks {mechanism} fail=alice:\n{text}"
        );

        let accepted = with_user("alice");
        let text = transcript(&accepted);
        assert_eq!(
            accepted.status.code(),
            Some(0),
            "swaks {mechanism} alice:\n{text}"
        );
        assert!(
            text.contains("<-  235 2.7.0 Authentication successful"),
            "swaks {mechanism} alice:\n{text}"
        );
        assert!(
            text.contains("<-  250 2.0.0 OK: queued as <"),
            "swaks {mechanism} alice:\n{text}"
        );
    }
}
