//! Exim delivering through blackhole as its smarthost: with `chunking` on, Exim sends the message
//! with BDAT (blackhole's debug log shows the commands), and Exim's own log shows what it made of
//! each final reply: accepted and delivered, refused with a 5xx and bounced, refused with a 4xx
//! and deferred, then delivered on the retry. Without `chunking`, Exim falls back to DATA.

mod common;

use common::Server;
use common::exim::{Delivery, Exim};

const RECIPIENT: &str = "someone@example.net";

/// The server's configuration for Exim's tests: CHUNKING offered, then `rules`.
fn chunking_with(rules: &str) -> String {
    format!("chunking = true\n{rules}")
}

/// A server started with `-d`, so that its log holds every command line it read.
fn debug_server(toml: &str) -> Server {
    Server::start_with_args(&["-d"], toml)
}

/// The commands the server read that start with `verb` and a space (`BDAT 312 LAST`).
fn commands(server: &Server, verb: &str) -> Vec<String> {
    let needle = format!("] C: {verb} ");
    server
        .stderr_log()
        .lines()
        .filter_map(|line| Some(line[line.find(&needle)? + "] C: ".len()..].to_owned()))
        .collect()
}

/// Whether the server read a bare `DATA` command.
fn read_data_command(server: &Server) -> bool {
    server
        .stderr_log()
        .lines()
        .any(|line| line.ends_with("] C: DATA"))
}

fn message(subject: &str) -> String {
    format!("From: sender@example.com\nSubject: {subject}\n\nA line of body.\n")
}

/// Sends one message from `sender` through a fresh Exim to `server`; returns that Exim (its log
/// for failure messages, its queue for a retry) and its log lines about the message.
fn relay(server: &Server, sender: &str) -> (Exim, Vec<Delivery>) {
    let exim = Exim::new(server.addr());
    exim.send(sender, &[RECIPIENT], &message(sender));
    let id = exim
        .message_id(sender)
        .unwrap_or_else(|| panic!("no <= line for {sender}:\n{}", exim.log()));
    let deliveries = exim.deliveries(&id);
    (exim, deliveries)
}

/// The marks of `deliveries` (`=>`, `==`, `**`), in log order.
fn marks(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.mark.as_str()).collect()
}

/// The server read every message as one `BDAT N LAST` (they are small), and no `DATA`.
fn assert_sent_with_bdat(server: &Server) {
    let bdat = commands(server, "BDAT");
    assert!(
        !bdat.is_empty()
            && bdat.iter().all(|command| command.ends_with(" LAST"))
            && !read_data_command(server),
        "not BDAT ... LAST alone: {bdat:?}\nserver log:\n{}",
        server.stderr_log()
    );
}

#[test]
fn an_accepted_message_is_delivered_and_was_sent_with_bdat() {
    let server = debug_server(&chunking_with(""));
    let (exim, deliveries) = relay(&server, "accepted@example.com");
    assert_eq!(marks(&deliveries), ["=>"], "Exim's log:\n{}", exim.log());
    assert_eq!(deliveries[0].recipient, RECIPIENT);
    assert!(
        deliveries[0]
            .detail
            .contains("C=\"250 2.0.0 OK: queued as <"),
        "{deliveries:?}"
    );
    assert_sent_with_bdat(&server);
}

#[test]
fn a_message_refused_with_550_bounces() {
    let server = debug_server(&chunking_with(
        r#"
[[rule]]
name = "refuse the message"
on = "message"
match = "refused@*"
reply = "550 5.7.1 Message refused"
"#,
    ));
    let (exim, deliveries) = relay(&server, "refused@example.com");
    assert_eq!(marks(&deliveries), ["**"], "Exim's log:\n{}", exim.log());
    assert!(
        deliveries[0]
            .detail
            .ends_with(": 550 5.7.1 Message refused"),
        "{deliveries:?}"
    );
    assert_sent_with_bdat(&server);
}

#[test]
fn a_message_refused_with_451_is_deferred_then_delivered_on_the_retry() {
    let server = debug_server(&chunking_with(
        r#"
[[rule]]
name = "try again"
on = "message"
first = 1
reply = "451 4.3.0 Try again later"
"#,
    ));
    let (exim, deferred) = relay(&server, "deferred@example.com");
    assert_eq!(marks(&deferred), ["=="], "Exim's log:\n{}", exim.log());
    assert!(
        deferred[0].detail.ends_with(": 451 4.3.0 Try again later"),
        "{deferred:?}"
    );
    exim.retry();
    let deliveries = exim.deliveries(&deferred[0].id);
    assert_eq!(
        marks(&deliveries),
        ["==", "=>"],
        "Exim's log:\n{}",
        exim.log()
    );
    assert_eq!(
        commands(&server, "BDAT").len(),
        2,
        "{}",
        server.stderr_log()
    );
}

#[test]
fn without_chunking_exim_sends_data() {
    let server = debug_server("");
    let (exim, deliveries) = relay(&server, "plain@example.com");
    assert_eq!(marks(&deliveries), ["=>"], "Exim's log:\n{}", exim.log());
    assert!(
        read_data_command(&server) && commands(&server, "BDAT").is_empty(),
        "server log:\n{}",
        server.stderr_log()
    );
}
