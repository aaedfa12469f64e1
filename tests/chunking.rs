//! CHUNKING (RFC 3030) over a socket: `chunking = true` offers it and takes BDAT, whose
//! octets are read by count however the client's writes cut them; a chunk of a refused
//! transaction is read and thrown away, never run as commands; switch headers work across
//! chunks; sizes count against `max_message_size`. Python's smtplib has no BDAT, so it sends
//! the commands raw on its own connection. Without the option, EHLO is the original's.

mod common;

use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use common::{Client, Server, require_program, run_with_limit, transcript};

const CHUNKING: &str = "chunking = true\nmax_message_size = 1000";

fn envelope(client: &mut Client) {
    assert!(client.command("EHLO c").contains("\n250-CHUNKING\n"));
    assert_eq!(client.command("MAIL FROM:<a@example.com>"), "250 2.1.0 OK");
    assert_eq!(client.command("RCPT TO:<b@example.net>"), "250 2.1.5 OK");
}

fn is_bounce(reply: &str) -> bool {
    common::BOUNCES.contains(&reply)
}

#[test]
fn chunks_are_octets_however_the_writes_cut_them() {
    let server = Server::start(CHUNKING);
    let mut client = server.greeted();
    envelope(&mut client);
    // The header is split between two chunks, and the second chunk between two writes; a
    // dot line and a QUIT are data.
    client.send(b"BDAT 7\r\nX-Black");
    assert_eq!(client.reply(), "250 2.0.0 7 octets received");
    client.send(b"BDAT 30\r\nhole-Mode: bou");
    sleep(Duration::from_millis(100));
    client.send(b"nce\r\n\r\n.\r\nQUIT\r\n");
    assert_eq!(client.reply(), "250 2.0.0 30 octets received");
    client.send(b"BDAT 0 LAST\r\n");
    let reply = client.reply();
    assert!(is_bounce(&reply), "{reply}");
    assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
}

#[test]
fn a_refused_transaction_still_has_its_chunk_read() {
    let server = Server::start(CHUNKING);
    let mut client = server.greeted();
    // Pipelined: MAIL refused, so RCPT and BDAT are out of sequence; the chunk is a QUIT
    // that must not run.
    client.send(b"MAIL FROM:\r\nRCPT TO:<b@example.net>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(client.reply(), "501 5.5.4 Syntax: MAIL FROM: <address>");
    assert_eq!(client.reply(), "503 5.5.1 Error: need MAIL command");
    assert_eq!(client.reply(), "503 5.5.1 Error: need MAIL command");
    assert_eq!(client.reply(), "250 2.0.0 OK");
    // Too big: 552 after LAST, and the octets were all read.
    envelope(&mut client);
    let big = "x".repeat(700);
    client.send(format!("BDAT 700\r\n{big}BDAT 700 LAST\r\n{big}NOOP\r\n").as_bytes());
    assert_eq!(client.reply(), "250 2.0.0 700 octets received");
    assert_eq!(
        client.reply(),
        "552 Message size exceeds fixed maximum message size"
    );
    assert_eq!(client.reply(), "250 2.0.0 OK");
}

#[test]
fn without_the_option_bdat_is_unknown() {
    let server = Server::start("");
    let mut client = server.greeted();
    client.ehlo();
    assert_eq!(
        client.command("BDAT 0 LAST"),
        "502 5.5.2 Command not recognised"
    );
}

/// smtplib reads the EHLO reply; the chunks go raw on its socket.
const SMTPLIB_BDAT: &str = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10)
s.ehlo("client.example")
assert s.has_extn("chunking"), s.esmtp_features
assert s.mail("a@example.com")[0] == 250
assert s.rcpt("b@example.net")[0] == 250
message = b"Subject: chunked\r\n\r\n.\r\nbody\r\n"
s.send(b"BDAT %d\r\n" % 10 + message[:10])
code, text = s.getreply()
assert (code, text) == (250, b"2.0.0 10 octets received"), (code, text)
rest = message[10:]
s.send(b"BDAT %d LAST\r\n" % len(rest) + rest)
code, text = s.getreply()
assert code == 250 and text.startswith(b"2.0.0 OK: queued as <"), (code, text)
s.quit()
print("ok")
"#;

#[test]
fn python_sends_a_message_in_chunks() {
    let server = Server::start(CHUNKING);
    let python = require_program("python3", "python3");
    let port = server.port().to_string();
    let out = run_with_limit(
        Command::new(python).args(["-c", SMTPLIB_BDAT, "127.0.0.1", &port]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", transcript(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}
