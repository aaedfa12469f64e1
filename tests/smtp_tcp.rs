//! The real binary over real TCP on 127.0.0.1: whole sessions, timing, limits, signals, exit
//! codes, and what the single-threaded loop must never do (make one connection wait for another,
//! or wake up while every connection is idle).

mod common;

use common::{Client, Server, TempDir, assert_bounce, assert_queued, config_toml, run_blackhole};
use std::io::{ErrorKind, Write};
use std::thread;
use std::time::{Duration, Instant};

const GREETING: &str = "220 blackhole.test ESMTP";

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
    let mut client = server.connect();
    assert_eq!(client.reply(), GREETING);
    let expected = [
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
    assert_eq!(
        client.command("EHLO client.example.com"),
        expected.join("\n")
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

#[test]
fn a_delayed_reply_makes_no_other_connection_wait() {
    let server = Server::start("");
    let mut slow = server.connect();
    slow.start_message();
    // The NOOP pipelined after the message must wait behind the delayed final reply.
    slow.send(format!("{}NOOP\r\n", message("X-Blackhole-Delay: 1\r\n")).as_bytes());
    let sent = Instant::now();

    // One thread serves everything: while `slow` waits, another connection is served at once.
    let mut other = server.connect();
    assert_eq!(other.reply(), GREETING);
    other.ehlo();
    other.open_data();
    other.send(message("").as_bytes());
    assert_queued(&other.reply());
    let other_done = sent.elapsed();
    assert!(
        other_done < Duration::from_millis(500),
        "the other connection waited {other_done:?}"
    );

    assert_queued(&slow.reply());
    let delayed = sent.elapsed();
    assert!(
        delayed >= Duration::from_millis(900),
        "the delayed reply came after {delayed:?}"
    );
    assert!(
        delayed < Duration::from_secs(3),
        "the delayed reply came after {delayed:?}"
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
    // Written one after another, so the deadlines fall at every point within a millisecond.
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
    for (client, sent) in clients.iter_mut().zip(sent) {
        assert_queued(&client.reply());
        let waited = sent.elapsed();
        assert!(
            waited >= Duration::from_secs(1),
            "a 1 s delay answered after {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(3),
            "a 1 s delay answered after {waited:?}"
        );
    }
}

/// Waits for the `421 Timeout` of a server with `timeout = 1`, counting from `since`.
fn expect_timeout_after_one_second(client: &mut Client, since: Instant) {
    let reply = client
        .reply_within(Duration::from_secs(4))
        .expect("421 Timeout within 4 s");
    let waited = since.elapsed();
    assert_eq!(reply, "421 Timeout");
    assert!(
        waited >= Duration::from_millis(900),
        "timed out after only {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "timed out after {waited:?}"
    );
    client.expect_closed();
}

#[test]
fn an_idle_client_gets_421_timeout_and_is_closed() {
    let server = Server::start("timeout = 1");
    let mut client = server.connect();
    assert_eq!(client.reply(), GREETING);
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
fn the_idle_timeout_counts_complete_lines_not_bytes() {
    let server = Server::start("timeout = 1");
    let mut client = server.connect();
    assert_eq!(client.reply(), GREETING);
    let since = Instant::now();
    // A byte every 200 ms that never makes a line must not keep the connection alive.
    let reply = loop {
        assert!(
            since.elapsed() < Duration::from_secs(4),
            "no 421 while trickling bytes"
        );
        // The server may already have closed; a failed write shows up as the reply below.
        let _ = client.stream().write(b"x");
        match client.reply_within(Duration::from_millis(200)) {
            Ok(reply) => break reply,
            Err(e) if common::is_timeout(&e) => continue,
            Err(e) => panic!("no 421 before the close: {e}"),
        }
    };
    let waited = since.elapsed();
    assert_eq!(reply, "421 Timeout");
    assert!(
        waited < Duration::from_millis(2500),
        "timed out after {waited:?}"
    );
}

#[test]
fn the_tenth_unknown_command_closes_the_connection() {
    let server = Server::start("");
    let mut client = server.connect();
    assert_eq!(client.reply(), GREETING);
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
    let mut client = server.connect();
    assert_eq!(client.reply(), GREETING);
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
    let mut idle = server.connect();
    assert_eq!(idle.reply(), GREETING);
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
    common::send_signal("INT", server.pid());
    let status = server.wait_for_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
}

#[test]
fn a_second_server_on_a_port_in_use_exits_77_naming_the_address() {
    let server = Server::start("");
    let dir = TempDir::new();
    let config = dir.write(
        "blackhole.toml",
        &config_toml(&server.addr().to_string(), ""),
    );
    let out = run_blackhole(&["-c", config.to_str().unwrap()], Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&server.addr().to_string()),
        "stderr does not name the address:\n{stderr}"
    );

    // The first server is unharmed.
    let mut client = server.connect();
    assert_eq!(client.reply(), GREETING);
}

#[test]
fn test_mode_rejects_a_bad_mode_with_64_naming_file_and_option() {
    let dir = TempDir::new();
    let config = dir.write(
        "bad.toml",
        &config_toml("127.0.0.1:2525", "mode = \"sideways\""),
    );
    let config = config.to_str().unwrap();
    let out = run_blackhole(&["-t", "-c", config], Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr:\n{stderr}");
    assert!(
        stderr.contains("mode"),
        "stderr does not name the option:\n{stderr}"
    );
    assert!(
        stderr.contains(config),
        "stderr does not name the file:\n{stderr}"
    );
}

#[test]
fn test_mode_accepts_a_good_config_with_0() {
    let dir = TempDir::new();
    let extra = "mode = \"random\"\ntimeout = 30\ndelay = \"1-2\"\nmax_message_size = 1000\n\
                 dynamic_switch = false";
    let config = dir.write(
        "good.toml",
        &config_toml("127.0.0.1:2525 mode=bounce delay=1", extra),
    );
    let out = run_blackhole(
        &["-t", "-c", config.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_and_version_exit_0() {
    for flag in ["-h", "--help", "-v", "--version"] {
        let out = run_blackhole(&[flag], Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(0), "blackhole {flag}");
        assert!(
            !out.stdout.is_empty() || !out.stderr.is_empty(),
            "blackhole {flag} printed nothing"
        );
    }
}

#[test]
fn debug_logs_every_line_received_and_sent() {
    let server = Server::start_with_args(&["-d"], "");
    let mut client = server.connect();
    assert_eq!(client.reply(), GREETING);
    assert_eq!(
        client.command("VRFY debug-marker"),
        "252 2.0.0 Will attempt delivery"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let log = server.stderr_log();
        if log.contains("VRFY debug-marker") && log.contains("252 2.0.0 Will attempt delivery") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "-d did not log the VRFY and its reply:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_pidfile_holds_the_process_id() {
    let pid_dir = TempDir::new();
    let pidfile = pid_dir.path().join("blackhole.pid");
    let server = Server::start(&format!("pidfile = \"{}\"", pidfile.display()));
    let written = std::fs::read_to_string(&pidfile).expect("read the pidfile");
    assert_eq!(written.trim(), server.pid().to_string());
}

#[test]
fn a_client_that_never_reads_does_not_stop_the_server() {
    let server = Server::start("");
    let flood = server.connect();
    flood
        .stream()
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Thousands of EHLOs whose replies are never read: a server that buffers without bound or
    // blocks on this socket fails the checks below. Stop once the server stops reading (our
    // write times out) or after 64 MiB.
    let batch = "EHLO flood.example.com\r\n".repeat(1000);
    let mut written = 0usize;
    while written < 64 << 20 {
        match flood.stream().write(batch.as_bytes()) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }

    let started = Instant::now();
    let mut other = server.connect();
    other.start_message();
    other.send(message("").as_bytes());
    assert_queued(&other.reply());
    assert_eq!(other.command("QUIT"), "221 2.0.0 Goodbye");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "another connection took {took:?} during the flood"
    );
    // The flooding connection stayed open, unread, through all of the above.
    drop(flood);
}

/// Waits until `bytes` have arrived on `client` without reading them.
fn wait_until_received(client: &Client, bytes: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 8192];
    loop {
        let n = client.stream().peek(&mut buf).expect("peek");
        if buf[..n].windows(bytes.len()).any(|w| w == bytes) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never received {:?}",
            String::from_utf8_lossy(bytes)
        );
        thread::sleep(Duration::from_millis(1));
    }
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

/// Context switches of every thread of `pid` so far: each wake-up of the process counts one.
#[cfg(target_os = "linux")]
fn context_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    let mut total = 0;
    for task in tasks {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(("voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches", count)) =
                line.split_once(':')
            {
                total += count.trim().parse::<u64>().expect("a count");
            }
        }
    }
    total
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
    // Let the server finish whatever the last replies started.
    thread::sleep(Duration::from_millis(300));
    let before = context_switches(server.pid());
    thread::sleep(Duration::from_secs(3));
    let after = context_switches(server.pid());
    assert!(
        after - before <= 2,
        "the server woke up {} times in 3 s with 50 idle connections",
        after - before
    );
    drop(clients);
}
