//! Greylisting seen from outside: the real server with `[greylist]`, driven by Python's
//! smtplib and by raw clients from many loopback addresses. A first attempt is deferred at
//! RCPT, a retry too early is deferred again, a retry after the delay is delivered; the
//! memory of triplets survives a SIGHUP; and with four workers every client's retries reach
//! the worker that remembers it.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::clients::CLIENT_LIMIT;
use common::procfs::{children, cmdline, listens};
use common::{
    Server, config_toml, greeted_from, require_program, run_with_limit, send_signal, transcript,
    wait_for,
};

/// The delay the tests configure, and how long they wait to be past it.
const DELAY: &str = "delay = 1";
const PAST_DELAY: Duration = Duration::from_millis(1300);

/// One message through smtplib; what it says of it: `SENT` or `DEFERRED CODE`.
fn smtplib_send(server: &Server) -> String {
    let python = require_program("python3", "python3");
    let script = format!(
        r#"
import smtplib
try:
    with smtplib.SMTP("127.0.0.1", {port}, timeout=20) as s:
        s.sendmail("a@example.com", ["b@example.net"], "Subject: x\r\n\r\nbody\r\n")
    print("SENT")
except smtplib.SMTPRecipientsRefused as e:
    print("DEFERRED", e.recipients["b@example.net"][0])
"#,
        port = server.port()
    );
    let out = run_with_limit(Command::new(python).args(["-c", &script]), CLIENT_LIMIT);
    assert!(out.status.success(), "{}", transcript(&out));
    transcript(&out).trim().to_owned()
}

#[test]
fn smtplib_is_deferred_then_delivered_after_the_delay() {
    let server = Server::start(&format!("[greylist]\n{DELAY}\n"));
    assert_eq!(smtplib_send(&server), "DEFERRED 451");
    assert_eq!(
        smtplib_send(&server),
        "DEFERRED 451",
        "a retry before the delay"
    );
    thread::sleep(PAST_DELAY);
    assert_eq!(smtplib_send(&server), "SENT");
    assert_eq!(
        smtplib_send(&server),
        "SENT",
        "a passed triplet is let through"
    );
}

#[test]
fn the_memory_of_triplets_survives_a_reload() {
    let server = Server::start(&format!("[greylist]\n{DELAY}\n"));
    assert_eq!(smtplib_send(&server), "DEFERRED 451");
    // Reload with another setting beside greylisting; the triplet seen must be remembered.
    std::fs::write(
        server.config_path(),
        config_toml(
            &server.addr().to_string(),
            &format!("timeout = 30\n[greylist]\n{DELAY}\nmax_entries = 500\n"),
        ),
    )
    .expect("rewrite the config");
    send_signal("HUP", server.pid());
    assert!(
        wait_for(Duration::from_secs(10), || server
            .stderr_log()
            .contains("configuration reloaded")),
        "no reload: {}",
        server.stderr_log()
    );
    thread::sleep(PAST_DELAY);
    assert_eq!(smtplib_send(&server), "SENT", "the retry after the reload");
}

/// MAIL and RCPT from `client`; the RCPT reply.
fn rcpt_from(server: &Server, client: Ipv4Addr) -> String {
    let mut c = greeted_from(client, server.addr());
    assert_eq!(c.command("MAIL FROM:<a@example.com>"), "250 2.1.0 OK");
    let reply = c.command("RCPT TO:<b@example.net>");
    assert_eq!(c.command("QUIT"), "221 2.0.0 Goodbye");
    reply
}

#[test]
fn with_four_workers_every_clients_retry_reaches_its_memory() {
    let server = Server::start(&format!("workers = 4\n[greylist]\n{DELAY}\n"));
    let (pid, port) = (server.pid(), server.port());
    assert!(
        wait_for(Duration::from_secs(10), || {
            let workers: Vec<u32> = children(pid)
                .into_iter()
                .filter(|&w| cmdline(w).contains("--worker"))
                .collect();
            workers.len() == 4 && workers.iter().all(|&w| listens(w, port))
        }),
        "four listening workers"
    );
    let clients: Vec<Ipv4Addr> = (2..18).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect();
    for &client in &clients {
        assert!(
            rcpt_from(&server, client).starts_with("451 "),
            "first sight of {client}"
        );
    }
    thread::sleep(PAST_DELAY);
    // Each client's retry, and a second connection of each, must find the worker that saw it.
    for round in 0..2 {
        for &client in &clients {
            assert_eq!(
                rcpt_from(&server, client),
                "250 2.1.5 OK",
                "retry {round} of {client}: another worker, which never saw it?"
            );
        }
    }
}
