//! LMTP (RFC 2033) over a socket, on a listener flagged `lmtp`: LHLO instead of HELO and EHLO,
//! and after the data one reply per accepted recipient, in RCPT order, each decided on its
//! own. Python's smtplib speaks LHLO; Postfix's `lmtp` client delivers one message to several
//! recipients, and its log shows each recipient's fate.

mod common;

use std::process::Command;
use std::time::Duration;

use common::postfix::{Delivery, Postfix};
use common::{NO_SUCH_USER, Server, require_program, run_with_limit, transcript};

/// The first recipient's reply after the data is refused, once.
const FIRST_AFTER_DATA_REFUSED: &str = r#"
[[rule]]
name = "full"
on = "message"
first = 1
reply = "552 5.2.2 Mailbox full"
"#;

#[test]
fn lhlo_and_a_reply_per_recipient() {
    let server = Server::start_with_listener_flags("lmtp", NO_SUCH_USER);
    let mut client = server.greeted();
    let helo = "500 5.5.1 Error: this is an LMTP service, use LHLO";
    assert_eq!(client.command("HELO c"), helo);
    assert_eq!(client.command("EHLO c"), helo);
    let lhlo = client.command("LHLO c");
    assert!(
        lhlo.starts_with("250-blackhole.test\n") && lhlo.ends_with("\n250 DSN"),
        "{lhlo}"
    );
    client.send(
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n\
          RCPT TO:<nobody@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n",
    );
    assert_eq!(client.reply(), "250 2.1.0 OK");
    assert_eq!(client.reply(), "250 2.1.5 OK");
    assert_eq!(client.reply(), "550 5.1.1 No such user");
    assert_eq!(client.reply(), "250 2.1.5 OK");
    assert_eq!(client.reply(), "354 End data with <CR><LF>.<CR><LF>");
    client.send(b"Subject: x\r\n\r\nhi\r\n.\r\nNOOP\r\n");
    let (first, second) = (client.reply(), client.reply());
    for reply in [&first, &second] {
        assert!(reply.starts_with("250 2.0.0 OK: queued as <"), "{reply}");
    }
    assert_ne!(first, second, "each recipient has its own id");
    assert_eq!(client.reply(), "250 2.0.0 OK");
}

#[test]
fn a_plain_listener_does_not_know_lhlo() {
    let server = Server::start("");
    let mut client = server.greeted();
    assert_eq!(client.command("LHLO c"), "502 5.5.2 Command not recognised");
}

/// smtplib's LMTP: `data` reads the first recipient's reply, `getreply` the second.
const SMTPLIB_LMTP: &str = r#"
import smtplib, sys
s = smtplib.LMTP(sys.argv[1], int(sys.argv[2]), timeout=10)
# LMTP's ehlo() sends LHLO: EHLO would get 500 here.
code, _ = s.ehlo("client.example")
assert code == 250, code
assert s.mail("a@example.com")[0] == 250
assert s.rcpt("first@example.net")[0] == 250
assert s.rcpt("second@example.net")[0] == 250
first = s.data(b"Subject: lmtp\r\n\r\nhello\r\n")
second = s.getreply()
print(first[0], second[0])
assert s.noop()[0] == 250
s.quit()
"#;

#[test]
fn python_hears_each_recipients_reply() {
    let server = Server::start_with_listener_flags("lmtp", FIRST_AFTER_DATA_REFUSED);
    let python = require_program("python3", "python3");
    let port = server.port().to_string();
    let out = run_with_limit(
        Command::new(python).args(["-c", SMTPLIB_LMTP, "127.0.0.1", &port]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", transcript(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "552 250\n");
}

/// How long Postfix may take to deliver.
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

fn outcome(delivery: &Delivery) -> (&str, &str) {
    (delivery.recipient.as_str(), delivery.status.as_str())
}

#[test]
fn postfix_delivers_over_lmtp_and_bounces_each_refused_recipient() {
    // nobody@ is refused at RCPT; of the other two, the first to hear its reply after the
    // data is refused by the rule, the other accepted.
    let rules = format!("{NO_SUCH_USER}\n{FIRST_AFTER_DATA_REFUSED}");
    let server = Server::start_with_listener_flags("lmtp", &rules);
    let postfix = Postfix::start_lmtp(server.addr());
    let id = "lmtp@postfix.test";
    let recipients = ["one@example.net", "nobody@example.net", "two@example.net"];
    let message = format!("From: s@example.com\nSubject: lmtp\nMessage-ID: <{id}>\n\nhi\n");
    postfix.send("s@example.com", &recipients, &message);
    let deliveries = postfix.wait_for_deliveries(id, DELIVERY_LIMIT, |d| d.len() >= 3);
    let mut seen: Vec<(&str, &str)> = deliveries.iter().map(outcome).collect();
    seen.sort();
    let refused_after_data = deliveries
        .iter()
        .find(|d| d.reason.contains("552 5.2.2 Mailbox full"))
        .unwrap_or_else(|| panic!("{deliveries:#?}"));
    let other = if refused_after_data.recipient == "one@example.net" {
        "two@example.net"
    } else {
        "one@example.net"
    };
    let mut expected = vec![
        ("nobody@example.net", "bounced"),
        (refused_after_data.recipient.as_str(), "bounced"),
        (other, "sent"),
    ];
    expected.sort();
    assert_eq!(seen, expected, "{deliveries:#?}\n{}", postfix.log());
    let at_rcpt = deliveries
        .iter()
        .find(|d| d.recipient == "nobody@example.net");
    assert!(
        at_rcpt.is_some_and(|d| d
            .reason
            .contains("550 5.1.1 No such user (in reply to RCPT TO command)")),
        "{deliveries:#?}"
    );
    assert!(
        refused_after_data
            .reason
            .contains("(in reply to end of DATA command)"),
        "{refused_after_data:?}"
    );
    assert!(
        postfix.log().contains("relay=127.0.0.1"),
        "{}",
        postfix.log()
    );
}
