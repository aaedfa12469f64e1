//! Postfix relaying through blackhole as its `relayhost`: a Postfix instance of the test's own
//! hands mail to a server with `[[rule]]` faults, and Postfix's own log shows what a real MTA
//! makes of each: a refused recipient bounced while the others go, a cut connection and a 4xx
//! deferred and then delivered on the retry, nothing lost; greylisted mail deferred, retried
//! and delivered.

mod common;

use std::time::Duration;

use common::postfix::{Delivery, Postfix};
use common::{NO_SUCH_USER, Server};

/// How long Postfix may take to deliver, retries included: its backoff here is 2 to 4 s, and a
/// loaded machine adds to it.
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

const SENDER: &str = "sender@example.com";

/// A message with `Message-ID: <ID>` and a body of `body_lines` lines of 70 bytes.
fn message(id: &str, body_lines: usize) -> String {
    let mut text = format!("From: {SENDER}\nSubject: relayed\nMessage-ID: <{id}>\n\n");
    for n in 0..body_lines {
        text.push_str(&format!("{n:04} {}\n", "x".repeat(65)));
    }
    text
}

/// The deliveries' (recipient, status) pairs, in log order.
fn outcomes(deliveries: &[Delivery]) -> Vec<(&str, &str)> {
    deliveries
        .iter()
        .map(|d| (d.recipient.as_str(), d.status.as_str()))
        .collect()
}

fn has_status(deliveries: &[Delivery], status: &str) -> bool {
    deliveries.iter().any(|d| d.status == status)
}

/// A message of `body_lines` lines to one recipient, relayed through `server` by a Postfix of
/// its own: Postfix's log must show it deferred, for `reason`, then sent on the retry.
fn deferred_then_sent(server: &Server, id: &str, body_lines: usize, reason: &str) {
    let postfix = Postfix::start(server.addr());
    postfix.send(SENDER, &["someone@example.net"], &message(id, body_lines));
    let deliveries = postfix.wait_for_deliveries(id, DELIVERY_LIMIT, |d| has_status(d, "sent"));
    assert_eq!(
        outcomes(&deliveries),
        [
            ("someone@example.net", "deferred"),
            ("someone@example.net", "sent")
        ],
        "{deliveries:#?}"
    );
    assert!(deliveries[0].reason.contains(reason), "{:?}", deliveries[0]);
}

#[test]
fn a_refused_recipient_bounces_and_the_other_of_the_message_is_sent() {
    let server = Server::start(NO_SUCH_USER);
    let postfix = Postfix::start(server.addr());
    let id = "two-recipients@postfix.test";
    postfix.send(
        SENDER,
        &["someone@example.net", "nobody@example.net"],
        &message(id, 1),
    );
    let deliveries = postfix.wait_for_deliveries(id, DELIVERY_LIMIT, |d| d.len() >= 2);
    let mut seen = outcomes(&deliveries);
    seen.sort();
    assert_eq!(
        seen,
        [
            ("nobody@example.net", "bounced"),
            ("someone@example.net", "sent")
        ],
        "{deliveries:#?}"
    );
    let bounced = deliveries.iter().find(|d| d.status == "bounced").unwrap();
    assert!(
        bounced
            .reason
            .contains("550 5.1.1 No such user (in reply to RCPT TO command)"),
        "{bounced:?}"
    );
}

#[test]
fn a_message_cut_mid_data_is_deferred_then_sent_on_the_retry() {
    let server = Server::start(
        r#"
[[rule]]
name = "drop mid-message"
on = "message"
after_bytes = 500
disconnect = "close"
first = 1
"#,
    );
    // 100 lines of 70 bytes: far past the cut at 500.
    deferred_then_sent(&server, "cut-mid-data@postfix.test", 100, "lost connection");
}

#[test]
fn a_temporary_refusal_of_mail_is_deferred_then_sent_on_the_retry() {
    let server = Server::start(
        r#"
[[rule]]
name = "try again"
on = "mail"
first = 1
reply = "451 4.3.0 Try again later"
"#,
    );
    deferred_then_sent(
        &server,
        "try-again@postfix.test",
        1,
        "451 4.3.0 Try again later (in reply to MAIL FROM command)",
    );
}

#[test]
fn greylisted_mail_is_deferred_retried_and_delivered() {
    // Postfix retries after 2 to 4 s here: a 1 s greylist delay lets the first retry through.
    let server = Server::start("[greylist]\ndelay = 1\n");
    deferred_then_sent(
        &server,
        "greylisted@postfix.test",
        1,
        "451 4.7.1 Greylisted, try again later (in reply to RCPT TO command)",
    );
}
