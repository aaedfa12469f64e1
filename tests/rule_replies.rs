//! Rule replies that change the course of a connection, seen from outside: a greeting that
//! refuses the session leaves only QUIT (RFC 5321 3.1), and a 421 at any stage closes the
//! connection after it (RFC 5321 3.8).

mod common;

use common::Server;

#[test]
fn a_refusing_greeting_answers_503_until_quit() {
    let server = Server::start("[[rule]]\non = \"connect\"\nreply = \"554 5.7.1 No service\"\n");
    let mut client = server.connect();
    assert_eq!(client.reply(), "554 5.7.1 No service");
    for command in ["EHLO client.example", "MAIL FROM:<a@example.com>", "NOOP"] {
        let reply = client.command(command);
        assert!(reply.starts_with("503 5.5.1 "), "{command}: {reply}");
    }
    assert_eq!(client.command("QUIT"), "221 2.0.0 Goodbye");
    client.expect_closed();
}

#[test]
fn a_421_greeting_closes() {
    let server = Server::start("[[rule]]\non = \"connect\"\nreply = \"421 4.3.2 Not today\"\n");
    let mut client = server.connect();
    assert_eq!(client.reply(), "421 4.3.2 Not today");
    client.expect_closed();
}

#[test]
fn a_421_reply_to_a_recipient_closes_after_it() {
    let server = Server::start("[[rule]]\non = \"rcpt\"\nreply = \"421 4.3.2 Going down\"\n");
    let mut client = server.greeted();
    client.ehlo();
    assert_eq!(client.command("MAIL FROM:<a@example.com>"), "250 2.1.0 OK");
    assert_eq!(
        client.command("RCPT TO:<b@example.net>"),
        "421 4.3.2 Going down"
    );
    client.expect_closed();
}
