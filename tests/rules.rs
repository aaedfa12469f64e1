//! Scripted faults seen from outside: the real server with `[[rule]]` tables, driven by a raw
//! SMTP client, swaks and Python's smtplib. Each effect of SPEC.md's rules is shown as a
//! client sees it: a reply instead of the normal one with its consequences for the
//! transaction, a delay, a disconnect with or without 421, a cut mid-DATA, a throttled link.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::clients::{CLIENT_LIMIT, self_signed_certificate, swaks};
use common::{
    Client, NO_SUCH_USER, Server, TempDir, assert_queued, greeted, procfs, require_program,
    run_with_limit, transcript,
};

/// How far a measured time may stray from what a rule asks, on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn a_refused_recipient_is_bounced_and_the_others_of_the_message_delivered() {
    let server = Server::start(NO_SUCH_USER);
    let out = swaks(
        server.target(),
        &[
            "--to",
            "someone@example.net,nobody@example.net,other@example.net",
        ],
    );
    let text = transcript(&out);
    assert!(text.contains("<** 550 5.1.1 No such user"), "{text}");
    assert!(text.contains("<-  250 2.0.0 OK: queued as"), "{text}");
    assert_eq!(
        text.matches("<-  250 2.1.5 OK").count(),
        2,
        "two recipients accepted: {text}"
    );
}

#[test]
fn a_recipient_refused_alone_leaves_data_without_recipients() {
    let server = Server::start("[[rule]]\non = \"rcpt\"\nreply = \"450 4.2.1 Mailbox busy\"\n");
    let mut client = server.greeted();
    client.ehlo();
    assert_eq!(client.command("MAIL FROM:<a@example.com>"), "250 2.1.0 OK");
    assert_eq!(
        client.command("RCPT TO:<b@example.net>"),
        "450 4.2.1 Mailbox busy"
    );
    let data = client.command("DATA");
    assert!(
        data.starts_with("503") || data.starts_with("554"),
        "DATA: {data}"
    );
    // The session goes on: a refused transaction is not a broken one.
    assert_eq!(client.command("RSET"), "250 2.0.0 OK");
}

#[test]
fn fail_twice_then_accept_seen_by_smtplib() {
    let server = Server::start(
        "[[rule]]\nname = \"flaky sender\"\non = \"mail\"\nfirst = 2\nreply = \"451 4.3.0 Try again\"\n",
    );
    let python = require_program("python3", "python3");
    let script = format!(
        r#"
import smtplib
for attempt in range(3):
    try:
        with smtplib.SMTP("127.0.0.1", {port}, timeout=20) as s:
            s.sendmail("a@example.com", ["b@example.net"], "Subject: x\r\n\r\nbody\r\n")
        print("attempt", attempt, "SENT")
    except smtplib.SMTPSenderRefused as e:
        print("attempt", attempt, "REFUSED", e.smtp_code)
"#,
        port = server.port()
    );
    let out = run_with_limit(Command::new(python).args(["-c", &script]), CLIENT_LIMIT);
    let text = transcript(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "attempt 0 REFUSED 451",
            "attempt 1 REFUSED 451",
            "attempt 2 SENT"
        ],
        "{text}"
    );
}

#[test]
fn a_delayed_greeting_comes_after_its_delay() {
    let server = Server::start("[[rule]]\non = \"connect\"\ndelay = 1.5\n");
    let started = Instant::now();
    let mut client = server.connect();
    assert!(client.reply().starts_with("220 "));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(1500) + SLACK,
        "greeting after {took:?}"
    );
    // Only the greeting was delayed.
    let started = Instant::now();
    client.ehlo();
    assert!(started.elapsed() < SLACK);
}

#[test]
fn a_disconnect_says_421_or_nothing() {
    let server = Server::start(
        r#"
[[rule]]
on = "helo"
match = "bad.example"
disconnect = "421"

[[rule]]
on = "helo"
match = "silent.example"
disconnect = "close"
"#,
    );
    let mut client = server.greeted();
    let reply = client.command("EHLO bad.example");
    assert!(reply.starts_with("421 4.4.2 "), "{reply}");
    client.expect_closed();

    let mut client = server.greeted();
    client.send_line("HELO silent.example");
    client.expect_closed();

    // Other names are served.
    let mut client = server.greeted();
    client.ehlo();
}

#[test]
fn a_message_is_cut_after_the_bytes_a_rule_allows() {
    let server =
        Server::start("[[rule]]\non = \"message\"\ndisconnect = \"421\"\nafter_bytes = 1000\n");
    let mut client = server.greeted();
    client.ehlo();
    client.open_data();
    let line = format!("{}\r\n", "x".repeat(98));
    // 100 bytes a line: nothing is said while under 1,000 bytes; past them the cut comes
    // at once, not at the end of the message.
    for _ in 0..9 {
        client.send(line.as_bytes());
    }
    client.expect_silence(Duration::from_millis(300));
    client.send(line.as_bytes());
    client.send(line.as_bytes());
    let reply = client.reply();
    assert!(reply.starts_with("421 4.4.2 "), "{reply}");
    client.expect_closed();
}

/// Sends a message of `body` bytes (the client has had its 354) as fast as the server takes
/// it, and returns how long it took, from the first byte to the final reply.
fn time_a_message(client: &mut Client, body: usize) -> Duration {
    let line = format!("{}\r\n", "y".repeat(998));
    let mut stream = client.stream().try_clone().expect("a second handle");
    let writer = std::thread::spawn(move || {
        for _ in 0..body / line.len() {
            stream.write_all(line.as_bytes()).expect("write the body");
        }
        stream.write_all(b".\r\n").expect("end the message");
    });
    let started = Instant::now();
    let reply = client
        .reply_within(Duration::from_secs(30))
        .expect("the final reply");
    let took = started.elapsed();
    writer.join().expect("the writer");
    assert_queued(&reply);
    took
}

/// Asserts that `bytes` in `took` is no more than a tenth above the `throttle`, in bytes per
/// second, nor far below it (on a loaded machine every rest may end a little late).
fn assert_rate(bytes: usize, took: Duration, throttle: u64) {
    let rate = bytes as f64 / took.as_secs_f64();
    let throttle = throttle as f64;
    assert!(
        (throttle * 0.8..=throttle * 1.1).contains(&rate),
        "{bytes} bytes in {took:?}: {rate:.0} bytes/s, throttle {throttle}"
    );
}

#[test]
fn a_throttled_link_is_read_at_its_rate() {
    const RATE: u64 = 100_000;
    let server = Server::start(&format!(
        "max_message_size = 1000000\n[[rule]]\non = \"data\"\nthrottle = {RATE}\n"
    ));
    let mut client = server.greeted();
    client.ehlo();
    client.open_data();
    assert_rate(300_000, time_a_message(&mut client, 300_000), RATE);
}

#[test]
fn a_throttle_with_a_delay_slows_the_link_once_the_delay_is_over() {
    const RATE: u64 = 50_000;
    let server = Server::start(&format!(
        "[[rule]]\non = \"helo\"\ndelay = 0.5\nthrottle = {RATE}\n"
    ));
    let mut client = server.greeted();
    let started = Instant::now();
    client.ehlo();
    assert!(started.elapsed() >= Duration::from_millis(500));
    client.open_data();
    assert_rate(100_000, time_a_message(&mut client, 100_000), RATE);
}

#[test]
fn a_throttle_on_a_message_whose_reply_waits_slows_the_next() {
    const RATE: u64 = 50_000;
    let server = Server::start(&format!(
        "delay = 1\n[[rule]]\non = \"message\"\nthrottle = {RATE}\n"
    ));
    let mut client = server.greeted();
    client.ehlo();
    client.open_data();
    let started = Instant::now();
    client.send(b"Subject: first\r\n\r\nhi\r\n.\r\n");
    assert_queued(&client.reply());
    assert!(started.elapsed() >= Duration::from_secs(1));
    client.open_data();
    // Its final reply waits its second too.
    let took = time_a_message(&mut client, 100_000);
    assert_rate(100_000, took.saturating_sub(Duration::from_secs(1)), RATE);
}

#[test]
fn a_throttle_on_starttls_slows_the_link_inside_tls() {
    const RATE: u64 = 50_000;
    const BODY: usize = 100_000;
    let files = TempDir::new();
    let (cert, key) = self_signed_certificate(files.path());
    let server = Server::start(&format!(
        "tls_cert = {cert:?}\ntls_key = {key:?}\n\
         [[rule]]\non = \"starttls\"\nthrottle = {RATE}\n"
    ));
    let line = format!("{}\r\n", "z".repeat(998));
    let message = files.write("message.eml", &line.repeat(BODY / line.len()));
    let curl = require_program("curl", "curl");
    let started = Instant::now();
    let out = run_with_limit(
        Command::new(curl)
            .arg(format!("smtp://{}", server.addr()))
            .args(["--ssl-reqd", "--insecure", "--max-time", "30"])
            .args([
                "--mail-from",
                "a@example.com",
                "--mail-rcpt",
                "b@example.net",
            ])
            .arg("-T")
            .arg(&message),
        CLIENT_LIMIT,
    );
    let took = started.elapsed();
    assert!(out.status.success(), "{}", transcript(&out));
    // Unthrottled, the message would take a fraction of a second. The time curl takes to
    // start and shake hands makes the rate look lower than it is.
    let rate = BODY as f64 / took.as_secs_f64();
    assert!(
        (RATE as f64 * 0.5..=RATE as f64 * 1.1).contains(&rate),
        "{BODY} bytes inside TLS in {took:?}: {rate:.0} bytes/s, throttle {RATE}"
    );
}

#[test]
fn every_nth_and_probability_zero() {
    let server = Server::start(
        r#"
[[rule]]
on = "noop"
probability = 0
reply = "500 never"

[[rule]]
on = "noop"
every = 3
reply = "250 2.0.0 third"
"#,
    );
    let mut client = greeted(server.addr());
    let replies: Vec<String> = (0..6).map(|_| client.command("NOOP")).collect();
    assert_eq!(
        replies,
        [
            "250 2.0.0 OK",
            "250 2.0.0 OK",
            "250 2.0.0 third",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
            "250 2.0.0 third"
        ]
    );
}

#[test]
fn a_throttle_faster_than_a_read_serves_on() {
    // A twentieth of this rate is more than one read of the loop: it must be cut to one.
    let mut server = Server::start("[[rule]]\non = \"helo\"\nthrottle = 1000000000\n");
    let mut client = server.greeted();
    client.ehlo();
    for _ in 0..3 {
        assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
    }
    client.open_data();
    client.send(format!("{}\r\n.\r\n", "z".repeat(200_000)).as_bytes());
    assert_queued(&client.reply());
    assert!(
        server.is_running(),
        "the server died: {}",
        server.stderr_log()
    );
}

#[test]
fn a_client_ahead_of_its_throttle_is_not_timed_out() {
    // 20 bytes a second, a 1 s idle timeout: the 60-byte line takes the server 3 s to read,
    // and the client sent it all at once; the wait is the server's.
    let server = Server::start("timeout = 1\n[[rule]]\non = \"connect\"\nthrottle = 20\n");
    let mut client = server.greeted();
    let line = format!("NOOP {}", "x".repeat(53));
    client.send_line(&line);
    let reply = client
        .reply_within(Duration::from_secs(10))
        .expect("a reply, not a timeout");
    assert_eq!(reply, "250 2.0.0 OK");
}

/// Connections each server holds in the memory test.
const HELD: usize = 2000;

/// How much the server's resident memory grows, in bytes per connection, with `HELD`
/// connections that each said `EHLO name` and `NOOP` (read, where a rule throttles them, at
/// the throttle) and are then left idle.
fn memory_per_connection(name: &str) -> u64 {
    let server = Server::start_with_fd_limit(
        HELD as u32 + 100,
        "timeout = 120\n[[rule]]\non = \"helo\"\nmatch = \"slow.example\"\nthrottle = 1000000\n",
    );
    let pid = server.pid();
    let serve = |client: &mut Client| {
        assert!(client.command(&format!("EHLO {name}")).starts_with("250"));
        assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
    };
    // Whatever is allocated once, at the first connection, is not counted.
    serve(&mut server.greeted());
    std::thread::sleep(Duration::from_millis(200));
    let before = procfs::rss_kib(pid).expect("the server's VmRSS");
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut client = server.greeted();
        serve(&mut client);
        held.push(client);
    }
    // Every rest is over.
    std::thread::sleep(Duration::from_millis(200));
    let after = procfs::rss_kib(pid).expect("the server's VmRSS");
    after.saturating_sub(before) * 1024 / HELD as u64
}

/// The soft limit on this process's open files is at least `wanted`, raised if need be.
fn ensure_descriptors(wanted: u64) {
    let (soft, hard) = procfs::open_files_limit(std::process::id());
    if soft >= wanted {
        return;
    }
    assert!(
        hard >= wanted,
        "{wanted} descriptors needed, the hard limit is {hard}"
    );
    let prlimit = require_program("prlimit", "util-linux");
    let pid = std::process::id().to_string();
    let out = run_with_limit(
        Command::new(prlimit).args(["--pid", &pid, &format!("--nofile={wanted}:{hard}")]),
        CLIENT_LIMIT,
    );
    assert!(out.status.success(), "{}", transcript(&out));
}

#[test]
fn a_throttled_connection_costs_no_more_memory_than_an_idle_one() {
    ensure_descriptors(HELD as u64 + 100);
    let idle = memory_per_connection("idle.example");
    let throttled = memory_per_connection("slow.example");
    println!("per connection: idle {idle} bytes, throttled {throttled} bytes");
    assert!(
        throttled <= idle + 16,
        "a throttled connection takes {throttled} bytes, an idle one {idle}"
    );
}
