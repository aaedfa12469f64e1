//! The real binary over real TCP on 127.0.0.1: whole sessions, timing, limits, signals, exit
//! codes, and what the single-threaded loop must never do (make one connection wait for another,
//! or wake up while every connection is idle).

mod common;

use common::{Client, GREETING, Server, assert_bounce, assert_queued, procfs, wait_for};
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// The lines of the EHLO reply.
const EHLO_REPLY: [&str; 12] = [
    "250-blackhole.test",
    "250-HELP",
    "250-PIPELINING",
    "250-AUTH CRAM-MD5 LOGIN PLAIN",
    "250-SIZE 512000",
    "250-VRFY",
    "250-ETRN",
    "250-ENHANCEDSTATUSCODES",
    "250-8BITMIME",
    "250-SMTPUTF8",
    "250-EXPN",
    "250 DSN",
];

/// A short message whose headers are `headers` (each ending in CRLF), with its terminator.
fn message(headers: &str) -> String {
    format!("{headers}Subject: test\r\n\r\nHello.\r\n..a dot-stuffed line\r\n.\r\n")
}

#[test]
fn greeting_names_the_mailname() {
    let server = Server::start("");
    let mut client = server.connect();
    assert_eq!(client.reply(), GREETING);
}

#[test]
fn ehlo_lists_every_extension() {
    let server = Server::start("");
    let mut client = server.greeted();
    assert_eq!(
        client.command("EHLO client.example.com"),
        EHLO_REPLY.join("\n")
    );
}

#[test]
fn whole_messages_are_accepted_each_with_a_new_id() {
    let server = Server::start("");
    let mut client = server.connect();
    client.start_message();
    client.send(message("").as_bytes());
    let first = assert_queued(&client.reply());

    client.open_data();
    client.send(message("").as_bytes());
    let second = assert_queued(&client.reply());
    assert_ne!(first, second, "two messages got the same id");

    assert_eq!(client.command("QUIT"), "221 2.0.0 Goodbye");
    client.expect_closed();
}

#[test]
fn a_pipelined_session_in_one_write_is_answered_in_order() {
    let server = Server::start("");
    let mut client = server.connect();
    let session = format!(
        "EHLO client.example.com\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n\
         DATA\r\n{}NOOP\r\nRSET\r\nVRFY someone\r\nQUIT\r\n",
        message("")
    );
    client.send(session.as_bytes());
    assert_eq!(client.reply(), GREETING);
    let ehlo = client.reply();
    assert!(
        ehlo.starts_with("250-blackhole.test\n") && ehlo.ends_with("\n250 DSN"),
        "{ehlo:?}"
    );
    assert_eq!(client.reply(), "250 2.1.0 OK");
    assert_eq!(client.reply(), "250 2.1.5 OK");
    assert_eq!(client.reply(), "354 End data with <CR><LF>.<CR><LF>");
    assert_queued(&client.reply());
    assert_eq!(client.reply(), "250 2.0.0 OK");
    assert_eq!(client.reply(), "250 2.0.0 OK");
    assert_eq!(client.reply(), "252 2.0.0 Will attempt delivery");
    assert_eq!(client.reply(), "221 2.0.0 Goodbye");
    client.expect_closed();
}

#[test]
fn a_switch_header_picks_the_reply_for_that_message_only() {
    let server = Server::start("");
    let mut client = server.connect();
    client.start_message();
    client.send(message("X-Blackhole-Mode: bounce\r\n").as_bytes());
    assert_bounce(&client.reply());

    client.open_data();
    client.send(message("").as_bytes());
    assert_queued(&client.reply());
}

#[test]
fn a_bounce_listener_bounces_every_message_whatever_its_headers_say() {
    let server = Server::start_with_listener_flags("mode=bounce", "");
    let mut client = server.connect();
    client.start_message();
    // Listener flags switch the dynamic switches off, so this header must change nothing.
    client.send(message("X-Blackhole-Mode: accept\r\n").as_bytes());
    assert_bounce(&client.reply());
    for _ in 0..4 {
        client.open_data();
        client.send(message("").as_bytes());
        assert_bounce(&client.reply());
    }
}

/// How late a timed reply may come on a loaded machine and still count as on time: far less
/// than any mistake the timing tests look for (a delay or timeout doubled, or never firing).
const LATENESS: Duration = Duration::from_secs(2);

#[test]
fn a_delayed_reply_makes_no_other_connection_wait() {
    let server = Server::start("");
    let mut slow = server.connect();
    slow.start_message();
    // The NOOP pipelined after the message must wait behind the delayed final reply.
    let delay = Duration::from_secs(2);
    let sent = Instant::now();
    slow.send(format!("{}NOOP\r\n", message("X-Blackhole-Delay: 2\r\n")).as_bytes());

    // One thread serves everything: while `slow` waits, another connection is served in full.
    let mut other = server.greeted();
    other.ehlo();
    other.open_data();
    other.send(message("").as_bytes());
    assert_queued(&other.reply());
    let other_done = sent.elapsed();
    assert!(
        other_done < delay,
        "the other connection was served only after {other_done:?}, once the delay was over"
    );

    assert_queued(&slow.reply());
    let delayed = sent.elapsed();
    assert!(
        delayed >= delay,
        "a {delay:?} delay answered after {delayed:?}"
    );
    assert!(
        delayed < delay + LATENESS,
        "a {delay:?} delay answered after {delayed:?}"
    );
    assert_eq!(slow.reply(), "250 2.0.0 OK");
}

#[test]
fn delayed_replies_are_never_early() {
    let server = Server::start("");
    let mut clients: Vec<Client> = (0..40).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.start_message();
    }
    // Written one after another with a pause between, so that the deadlines fall at every
    // point within a millisecond: the pause is what spreads them, not a wait for anything.
    let message = message("X-Blackhole-Delay: 1\r\n");
    let sent: Vec<Instant> = clients
        .iter_mut()
        .map(|client| {
            let at = Instant::now();
            client.send(message.as_bytes());
            thread::sleep(Duration::from_micros(130));
            at
        })
        .collect();
    let delay = Duration::from_secs(1);
    for (client, sent) in clients.iter_mut().zip(sent) {
        assert_queued(&client.reply());
        let waited = sent.elapsed();
        assert!(waited >= delay, "a 1 s delay answered after {waited:?}");
        assert!(
            waited < delay + LATENESS,
            "a 1 s delay answered after {waited:?}"
        );
    }
}

/// Waits for the `421 Timeout` of a server with `timeout = 1`, counting from `since`.
fn expect_timeout_after_one_second(client: &mut Client, since: Instant) {
    let timeout = Duration::from_secs(1);
    let reply = client
        .reply_within(timeout + LATENESS)
        .expect("421 Timeout");
    let waited = since.elapsed();
    assert_eq!(reply, "421 Timeout");
    assert!(
        waited >= Duration::from_millis(900),
        "timed out after only {waited:?}"
    );
    assert!(waited < timeout + LATENESS, "timed out after {waited:?}");
    client.expect_closed();
}

#[test]
fn an_idle_client_gets_421_timeout_and_is_closed() {
    let server = Server::start("timeout = 1");
    let mut client = server.greeted();
    let since = Instant::now();
    expect_timeout_after_one_second(&mut client, since);
}

#[test]
fn the_idle_timeout_also_holds_inside_data() {
    let server = Server::start("timeout = 1");
    let mut client = server.connect();
    client.start_message();
    client.send(b"Subject: never finished\r\n");
    let since = Instant::now();
    expect_timeout_after_one_second(&mut client, since);
}

#[test]
fn every_complete_line_restarts_the_idle_timeout() {
    let server = Server::start("timeout = 1");
    let mut client = server.greeted();
    // A command every 250 ms for three timeouts' length: a server that counted the timeout
    // from the connect, or from anything but the last line, would close it on the way.
    let busy_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < busy_until {
        assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
        client.expect_silence(Duration::from_millis(250));
    }
    let since = Instant::now();
    assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
    expect_timeout_after_one_second(&mut client, since);
}

#[test]
fn the_idle_timeout_counts_complete_lines_not_bytes() {
    let server = Server::start("timeout = 1");
    let mut client = server.greeted();
    // A byte every 200 ms that never makes a line must not keep the connection alive: a
    // server that counted bytes as activity would never time out.
    let deadline = Instant::now() + Duration::from_secs(1) + LATENESS;
    let reply = loop {
        assert!(
            Instant::now() < deadline,
            "no 421 within 1 s (and {LATENESS:?} to spare) while trickling bytes"
        );
        // The server may already have closed; a failed write shows up as the reply below.
        let _ = client.stream().write(b"x");
        match client.reply_within(Duration::from_millis(200)) {
            Ok(reply) => break reply,
            Err(e) if common::is_timeout(&e) => continue,
            Err(e) => panic!("no 421 before the close: {e}"),
        }
    };
    assert_eq!(reply, "421 Timeout");
    client.expect_closed();
}

#[test]
fn the_tenth_unknown_command_closes_the_connection() {
    let server = Server::start("");
    let mut client = server.greeted();
    for n in 1..=9 {
        assert_eq!(
            client.command(&format!("BOGUS{n}")),
            "502 5.5.2 Command not recognised"
        );
    }
    assert_eq!(
        client.command("BOGUS10"),
        "502 5.5.3 Too many unknown commands"
    );
    client.expect_closed();
}

#[test]
fn an_over_long_line_gets_one_500_and_the_session_goes_on() {
    let server = Server::start("");
    let mut client = server.greeted();
    // Just over the 2048-octet limit, then far over it (more than any buffer should hold).
    for length in [2100, 100_000] {
        let line = format!("NOOP {}\r\nNOOP\r\n", "a".repeat(length));
        client.send(line.as_bytes());
        assert_eq!(
            client.reply(),
            "500 5.5.2 Line too long",
            "line of {length} octets"
        );
        assert_eq!(
            client.reply(),
            "250 2.0.0 OK",
            "after a line of {length} octets"
        );
    }
}

#[test]
fn a_bare_lf_never_ends_data() {
    let server = Server::start("");
    let mut client = server.connect();
    client.start_message();
    // Each of these would end DATA on a server that took a bare LF as a line end ("SMTP
    // smuggling"); the commands after them would then be answered.
    client.send(
        b"Subject: smuggling\r\n\r\nbody\n.\nMAIL FROM:<x@evil.example>\r\n\
          body\n.\r\nRCPT TO:<y@evil.example>\r\n\
          body\r\n.\nDATA\r\n\
          body\r.\r\nNOOP\r\n",
    );
    client.expect_silence(Duration::from_millis(500));
    client.send(b".\r\nNOOP\r\n");
    assert_queued(&client.reply());
    assert_eq!(client.reply(), "250 2.0.0 OK");
    client.expect_silence(Duration::from_millis(200));
}

#[test]
fn sigterm_makes_the_server_exit_0_promptly() {
    let mut server = Server::start("");
    // An open connection must not hold the exit up.
    let _idle = server.greeted();
    let status = server.terminate(Duration::from_secs(3));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}

#[test]
fn sigint_makes_the_server_exit_0_promptly() {
    let mut server = Server::start("");
    // An open connection must not hold the exit up.
    let _idle = server.greeted();
    common::send_signal("INT", server.pid());
    let status = server.wait_for_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
}

#[test]
fn a_signal_as_soon_as_the_port_answers_stops_the_server_cleanly() {
    // Signals are caught before the listeners are bound, so a script that signals the server
    // the moment its port answers gets a clean exit, never a process killed by the signal.
    // The port is polled without pause, to signal within microseconds of the bind.
    use nix::sys::signal::Signal::{SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM, SIGINT, SIGTERM, SIGINT, SIGTERM] {
        let dir = common::TempDir::new();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        let (mut child, _config) = common::spawn_blackhole(&dir, &[], &addr.to_string(), "");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "no listener on {addr}");
        }
        // Sent from this process, not by a `kill` command, which would take milliseconds.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the server");
        let status = common::wait_with_limit(&mut child, Duration::from_secs(5));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "exit after {signal} as soon as the port answered: {status:?}"
        );
    }
}

#[test]
fn debug_logs_every_line_received_and_sent() {
    let server = Server::start_with_args(&["-d"], "");
    let mut client = server.greeted();
    assert_eq!(
        client.command("VRFY debug-marker"),
        "252 2.0.0 Will attempt delivery"
    );
    let logged = wait_for(Duration::from_secs(5), || {
        let log = server.stderr_log();
        log.contains("VRFY debug-marker") && log.contains("252 2.0.0 Will attempt delivery")
    });
    assert!(
        logged,
        "-d did not log the VRFY and its reply:\n{}",
        server.stderr_log()
    );
}

/// The command the flooding client pipelines, over and over.
const FLOOD_COMMAND: &str = "EHLO flood.example.com\r\n";

/// The most the flooding client sends before it stops on its own.
const FLOOD_LIMIT: usize = 64 << 20;

/// How far the server's resident memory may grow while one client floods it without reading.
/// A server that bounds its buffers holds one connection's output high-water mark (64 KiB)
/// and one read chunk (64 KiB): a few hundred KiB with the allocator's slack. A server that
/// buffered replies without limit would go on reading, and hold the 186-byte EHLO reply for
/// every 24 bytes sent (7.75 times what the client sends): it passes this bound after about
/// 2 MiB of the up to `FLOOD_LIMIT` (64 MiB) the client sends; one that kept only the
/// unanswered commands, after 16 MiB.
const FLOOD_RSS_GROWTH_KIB: u64 = 16 * 1024;

/// Pipelines `FLOOD_COMMAND` on `stream` without reading, until the server stops reading it
/// or `FLOOD_LIMIT` bytes are out. Fails as soon as the server's memory grows past
/// `FLOOD_RSS_GROWTH_KIB`. Returns how many bytes went out.
fn flood_until_the_server_stops_reading(server: &Server, mut stream: &TcpStream) -> usize {
    let pid = server.pid();
    let port = stream.local_addr().expect("local_addr").port();
    let rss = || procfs::rss_kib(pid).expect("the server's VmRSS");
    let baseline = rss();
    let assert_bounded = |written: usize| {
        let grown = rss().saturating_sub(baseline);
        assert!(
            grown <= FLOOD_RSS_GROWTH_KIB,
            "the server grew by {grown} KiB while a client sent {written} bytes, reading nothing"
        );
    };
    let batch = FLOOD_COMMAND.repeat(1000);
    // A write that blocks this long is the cue to look whether the server stopped reading.
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .expect("set_write_timeout");
    let mut written = 0;
    while written < FLOOD_LIMIT {
        // Go on where a short write stopped, so that every command arrives whole.
        match stream.write(&batch.as_bytes()[written % FLOOD_COMMAND.len()..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if common::is_timeout(&e) && procfs::stopped_reading(pid, port) => break,
            Err(e) if common::is_timeout(&e) => {}
            Err(e) => panic!("the flooding connection failed after {written} bytes: {e}"),
        }
        assert_bounded(written);
    }
    // The server went on reading after the last measurement, until it stopped: measure where
    // it ended up, with all it will take of the flood inside.
    assert_bounded(written);
    stream
        .set_write_timeout(Some(common::REPLY_TIMEOUT))
        .expect("set_write_timeout");
    written
}

#[test]
fn a_client_that_never_reads_does_not_stop_the_server() {
    let server = Server::start("");
    let mut flood = server.greeted();
    let written = flood_until_the_server_stops_reading(&server, flood.stream());

    // The flood holds no one else up.
    let started = Instant::now();
    let mut other = server.connect();
    other.start_message();
    other.send(message("").as_bytes());
    assert_queued(&other.reply());
    assert_eq!(other.command("QUIT"), "221 2.0.0 Goodbye");
    let took = started.elapsed();
    assert!(
        took < LATENESS,
        "another connection took {took:?} during the flood"
    );

    // The flooding connection is still open and, once it reads, gets every reply in order.
    let mut writer = flood
        .stream()
        .try_clone()
        .expect("clone the flooding socket");
    let unfinished = written % FLOOD_COMMAND.len();
    let ending = match unfinished {
        0 => "QUIT\r\n".to_string(),
        _ => format!("{}QUIT\r\n", &FLOOD_COMMAND[unfinished..]),
    };
    // The server reads the ending only as its replies are read: send it alongside.
    let sender = thread::spawn(move || writer.write_all(ending.as_bytes()));
    let commands = written.div_ceil(FLOOD_COMMAND.len());
    let ehlo_reply = format!("{}\r\n", EHLO_REPLY.join("\r\n"));
    flood.expect_repeated(ehlo_reply.as_bytes(), commands);
    assert_eq!(flood.reply(), "221 2.0.0 Goodbye");
    flood.expect_closed();
    sender
        .join()
        .expect("the sending thread")
        .expect("send the end of the flood");
}

/// Waits until `bytes` have arrived on `client` without reading them.
fn wait_until_received(client: &Client, bytes: &[u8]) {
    let mut buf = [0u8; 8192];
    let received = wait_for(common::REPLY_TIMEOUT, || {
        let n = client.stream().peek(&mut buf).expect("peek");
        buf[..n].windows(bytes.len()).any(|w| w == bytes)
    });
    assert!(
        received,
        "never received {:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn the_server_keeps_serving_after_many_connections_reset_mid_data() {
    let mut server = Server::start("");
    for _ in 0..300 {
        let mut client = server.connect();
        client.send(
            b"EHLO reset.example.com\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n\
              DATA\r\nSubject: cut short\r\n\r\nhalf a li",
        );
        // Closing with the replies unread makes the kernel send a reset, not a FIN.
        wait_until_received(&client, b"354 ");
        drop(client);
    }
    assert!(
        server.is_running(),
        "the server died; stderr:\n{}",
        server.stderr_log()
    );
    let mut client = server.connect();
    client.start_message();
    client.send(message("").as_bytes());
    assert_queued(&client.reply());
}

#[cfg(target_os = "linux")]
#[test]
fn idle_connections_cause_no_wake_ups() {
    let server = Server::start("timeout = 60");
    let mut clients: Vec<Client> = (0..50).map(|_| server.connect()).collect();
    for client in &mut clients {
        assert_eq!(client.reply(), GREETING);
        assert_eq!(
            client.command("EHLO idle.example.com").lines().last(),
            Some("250 DSN")
        );
    }
    // The last replies are read; the server goes back to waiting for events (and sleeps).
    let pid = server.pid();
    assert!(
        wait_for(common::REPLY_TIMEOUT, || procfs::stat(pid)
            .is_some_and(|s| s.state == 'S')),
        "the server never went to sleep with 50 idle connections"
    );
    let before = procfs::context_switches(pid);
    // Three quiet seconds are the measurement itself: every wake-up in them counts.
    thread::sleep(Duration::from_secs(3));
    let woken = procfs::context_switches(pid) - before;
    assert!(
        woken <= 2,
        "the server woke up {woken} times in 3 s with 50 idle connections"
    );
    drop(clients);
}

#[test]
fn the_idle_timeout_starts_after_a_delayed_reply() {
    let server = Server::start("timeout = 1");
    let mut client = server.connect();
    client.start_message();
    // The server keeps the client waiting twice the idle timeout: that wait is not the
    // client's idleness, and the connection stays open for a full timeout after the reply.
    client.send(message("X-Blackhole-Delay: 2\r\n").as_bytes());
    let reply = client
        .reply_within(Duration::from_secs(2) + LATENESS)
        .expect("the delayed reply");
    assert_queued(&reply);
    client.expect_silence(Duration::from_millis(500));
    let since = Instant::now();
    assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
    expect_timeout_after_one_second(&mut client, since);
}
