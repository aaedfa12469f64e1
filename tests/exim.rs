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

const SHORT_BODY: &str = "A line of body.\n";

/// Sends a message from `sender` with `body` (LF line ends) through a fresh Exim to `server`;
/// returns that Exim (its log for failure messages, its queue for a retry) and its log lines
/// about the message.
fn relay(server: &Server, sender: &str, body: &str) -> (Exim, Vec<Delivery>) {
    let exim = Exim::new(server.addr());
    let message = format!("From: {sender}\nSubject: relayed\n\n{body}");
    exim.send(sender, &[RECIPIENT], &message);
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

/// The server read the messages with BDAT, and no `DATA`.
fn assert_sent_with_bdat(server: &Server) {
    let bdat = commands(server, "BDAT");
    assert!(
        !bdat.is_empty() && !read_data_command(server),
        "not BDAT alone: {bdat:?}\nserver log:\n{}",
        server.stderr_log()
    );
}

/// The size a `BDAT N [LAST]` command announces.
fn chunk_size(command: &str) -> usize {
    command
        .split(' ')
        .nth(1)
        .and_then(|size| size.parse().ok())
        .unwrap_or_else(|| panic!("no chunk size in {command:?}"))
}

#[test]
fn an_accepted_message_is_delivered_and_was_sent_with_bdat() {
    let server = debug_server(&chunking_with(""));
    let (exim, deliveries) = relay(&server, "accepted@example.com", SHORT_BODY);
    assert_eq!(marks(&deliveries), ["=>"], "Exim's log:\n{}", exim.log());
    assert_eq!(deliveries[0].recipient, RECIPIENT);
    // `K`: Exim's own word that the message went with CHUNKING.
    assert!(
        deliveries[0]
            .detail
            .contains("] K C=\"250 2.0.0 OK: queued as <"),
        "{deliveries:?}"
    );
    let bdat = commands(&server, "BDAT");
    assert!(
        bdat.len() == 1 && bdat[0].ends_with(" LAST") && !read_data_command(&server),
        "not one BDAT ... LAST alone: {bdat:?}\nserver log:\n{}",
        server.stderr_log()
    );
}

#[test]
fn a_large_message_goes_in_two_chunks_and_is_delivered() {
    let server = debug_server(&chunking_with(""));
    let body = format!("{}\n", "x".repeat(99)).repeat(2000);
    let (exim, deliveries) = relay(&server, "large@example.com", &body);
    assert_eq!(marks(&deliveries), ["=>"], "Exim's log:\n{}", exim.log());
    // Exim sends its headers as one chunk and the body, CRLF line ends, as the LAST.
    let bdat = commands(&server, "BDAT");
    assert!(
        bdat.len() == 2
            && !bdat[0].ends_with(" LAST")
            && bdat[1].ends_with(" LAST")
            && chunk_size(&bdat[1]) >= body.len() + 2000,
        "{bdat:?}\nserver log:\n{}",
        server.stderr_log()
    );
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
    let (exim, deliveries) = relay(&server, "refused@example.com", SHORT_BODY);
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
    let (exim, deferred) = relay(&server, "deferred@example.com", SHORT_BODY);
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
    let (exim, deliveries) = relay(&server, "plain@example.com", SHORT_BODY);
    assert_eq!(marks(&deliveries), ["=>"], "Exim's log:\n{}", exim.log());
    assert!(!deliveries[0].detail.contains("] K "), "{deliveries:?}");
    assert!(
        read_data_command(&server) && commands(&server, "BDAT").is_empty(),
        "server log:\n{}",
        server.stderr_log()
    );
}
