//! What a scrape of `metrics_listen` says after known traffic, alone and with four workers
//! (one of them killed on the way); the SIGUSR1 and exit summaries; the bounded runs of
//! `--stop-after-messages` and `--stop-after-seconds`.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use common::supervisor::Supervisor;
use common::{
    Client, NO_SUCH_USER, Server, TempDir, free_port, greeted, greeted_from, send_signal,
    spawn_with_config, wait_for, wait_with_limit,
};

const SETTLE: Duration = Duration::from_secs(10);

/// `curl` for `path` on `addr`: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of the sample named exactly `series` (name and labels), if the text has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Sends one message on a greeted client that has said EHLO; its final reply.
fn message(client: &mut Client, rcpt: &str, headers: &str) -> String {
    assert!(
        client
            .command("MAIL FROM:<s@example.com>")
            .starts_with("250")
    );
    assert!(
        client
            .command(&format!("RCPT TO:<{rcpt}>"))
            .starts_with("250")
    );
    assert!(client.command("DATA").starts_with("354"));
    client.send(format!("{headers}Subject: t\r\n\r\nhello\r\n.\r\n").as_bytes());
    client.reply()
}

fn code(reply: &str) -> &str {
    &reply[..3]
}

fn metrics_toml(metrics: SocketAddr, extra: &str) -> String {
    format!("metrics_listen = \"{metrics}\"\n{extra}")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[test]
fn a_scrape_counts_a_known_mix_exactly() {
    let metrics = loopback(free_port());
    let server = Server::start(&metrics_toml(metrics, NO_SUCH_USER));
    let mut client = greeted(server.addr());
    assert!(client.command("EHLO client.test").starts_with("250"));
    assert_eq!(code(&message(&mut client, "a@example.net", "")), "250");
    let bounce = message(&mut client, "b@example.net", "X-Blackhole-Mode: bounce\r\n");
    assert!(
        bounce.starts_with('4') || bounce.starts_with('5'),
        "{bounce}"
    );
    assert!(
        client
            .command("MAIL FROM:<s@example.com>")
            .starts_with("250")
    );
    assert!(
        client
            .command("RCPT TO:<nobody@example.net>")
            .starts_with("550")
    );
    assert!(client.command("QUIT").starts_with("221"));

    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    let listener = server.addr().to_string();
    let count = |series: &str| sample(&text, series).unwrap_or(-1.0);
    let messages = |code: &str| {
        count(&format!(
            "blackhole_messages_total{{listener=\"{listener}\",code=\"{code}\"}}"
        ))
    };
    assert_eq!(messages("250"), 1.0, "{text}");
    assert_eq!(messages(code(&bounce)), 1.0, "{text}");
    assert_eq!(
        count("blackhole_rule_fired_total{rule=\"no such user\"}"),
        1.0
    );
    assert_eq!(count("blackhole_recipients_total"), 2.0);
    assert_eq!(count("blackhole_commands_total{verb=\"rcpt\"}"), 3.0);
    assert_eq!(count("blackhole_commands_total{verb=\"data\"}"), 2.0);
    let connections =
        format!("blackhole_connections_total{{listener=\"{listener}\",tls=\"false\"}}");
    // The test's own: the one that waited for the server to listen, and the client's.
    assert_eq!(count(&connections), 2.0, "{text}");
    assert_eq!(count("blackhole_message_size_bytes_count"), 2.0);
    assert!(count("process_resident_memory_bytes") > 0.0, "{text}");

    assert_eq!(http_get(metrics, "/healthz").0, 200);
    assert_eq!(http_get(metrics, "/nowhere").0, 404);
}

#[test]
fn a_metrics_address_in_use_stops_the_start_with_77() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port to take");
    let metrics = taken.local_addr().expect("its address");
    let dir = TempDir::new();
    let smtp = loopback(free_port());
    let text = format!("listen = [\"{smtp}\"]\n{}", metrics_toml(metrics, ""));
    let (mut child, _) = spawn_with_config(&dir, &[], &text);
    let status = wait_with_limit(&mut child, SETTLE).expect("it stops");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert_eq!(status.code(), Some(77), "{log}");
    assert!(log.contains("metrics_listen"), "{log}");
}

#[test]
fn sigusr1_logs_a_summary_and_the_server_goes_on() {
    let server = Server::start("");
    let mut client = greeted(server.addr());
    assert!(client.command("EHLO client.test").starts_with("250"));
    assert_eq!(code(&message(&mut client, "a@example.net", "")), "250");
    send_signal("USR1", server.pid());
    let logged = wait_for(SETTLE, || {
        server.stderr_log().contains("messages: 1 (250: 1)")
    });
    assert!(logged, "{}", server.stderr_log());
    assert_eq!(code(&message(&mut client, "a@example.net", "")), "250");
}

#[test]
fn stop_after_messages_stops_after_exactly_n_with_the_summary() {
    let mut server = Server::start_with_args(&["--stop-after-messages", "3"], "");
    let mut client = greeted(server.addr());
    assert!(client.command("EHLO client.test").starts_with("250"));
    for _ in 0..3 {
        assert_eq!(code(&message(&mut client, "a@example.net", "")), "250");
    }
    let status = server.wait_for_exit(SETTLE);
    assert!(status.success(), "{status}: {}", server.stderr_log());
    let log = server.stderr_log();
    assert!(log.contains("messages: 3 (250: 3)"), "{log}");
    let refused = std::net::TcpStream::connect_timeout(&server.addr(), Duration::from_secs(1));
    assert!(refused.is_err(), "still listening");
}

#[test]
fn stop_after_seconds_stops_on_time() {
    let started = Instant::now();
    let mut server = Server::start_with_args(&["--stop-after-seconds", "1"], "");
    let status = server.wait_for_exit(SETTLE);
    assert!(status.success(), "{status}: {}", server.stderr_log());
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The one connection that waited for the server to listen.
    let log = server.stderr_log();
    assert!(log.contains("summary: connections: 1 opened"), "{log}");
    assert!(log.contains("--stop-after-seconds"), "{log}");
}

/// A supervisor of four workers serving SMTP on `smtp` and scrapes on `metrics`.
fn start_supervisor(smtp: SocketAddr, metrics: SocketAddr, args: &[&str]) -> Supervisor {
    let text = format!(
        "mailname = \"blackhole.test\"\nlisten = [\"{smtp}\"]\nworkers = 4\n{}",
        metrics_toml(metrics, "")
    );
    Supervisor::spawn(args, &text)
}

/// Waits until four workers of `supervisor` run, none of them in `gone`, and answer scrapes.
fn wait_workers(supervisor: &Supervisor, metrics: SocketAddr, gone: &[u32]) -> Vec<u32> {
    let mut workers = Vec::new();
    let ready = wait_for(SETTLE, || {
        workers = supervisor.workers();
        workers.len() == 4
            && workers.iter().all(|pid| !gone.contains(pid))
            && http_get(metrics, "/healthz").0 == 200
    });
    assert!(ready, "workers {workers:?}; log:\n{}", supervisor.log());
    workers
}

/// `n` messages, one connection each, from client addresses 127.0.0.2 up, so that every
/// worker takes some.
fn messages_from_many(smtp: SocketAddr, n: usize) {
    for i in 0..n {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 16) as u8);
        let mut client = greeted_from(source, smtp);
        assert!(client.command("EHLO client.test").starts_with("250"));
        assert_eq!(code(&message(&mut client, "a@example.net", "")), "250");
        assert!(client.command("QUIT").starts_with("221"));
    }
}

fn scraped_messages(metrics: SocketAddr, smtp: SocketAddr) -> f64 {
    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    let series = format!("blackhole_messages_total{{listener=\"{smtp}\",code=\"250\"}}");
    sample(&text, &series).unwrap_or(0.0)
}

#[test]
fn four_workers_scrape_as_one_and_a_killed_one_loses_nothing() {
    let (smtp, metrics) = (loopback(free_port()), loopback(free_port()));
    let supervisor = start_supervisor(smtp, metrics, &[]);
    let workers = wait_workers(&supervisor, metrics, &[]);
    messages_from_many(smtp, 32);
    // Any worker may answer: every scrape gives the sum of all four.
    for _ in 0..8 {
        assert_eq!(
            scraped_messages(metrics, smtp),
            32.0,
            "{}",
            supervisor.log()
        );
    }
    send_signal("KILL", workers[1]);
    wait_workers(&supervisor, metrics, &[workers[1]]);
    assert_eq!(
        scraped_messages(metrics, smtp),
        32.0,
        "{}",
        supervisor.log()
    );
    messages_from_many(smtp, 16);
    assert_eq!(
        scraped_messages(metrics, smtp),
        48.0,
        "{}",
        supervisor.log()
    );
    send_signal("USR1", supervisor.child.id());
    let logged = wait_for(SETTLE, || {
        supervisor.log().contains("messages: 48 (250: 48)")
    });
    assert!(logged, "{}", supervisor.log());
}

#[test]
fn four_workers_stop_after_messages_counted_over_all_of_them() {
    let (smtp, metrics) = (loopback(free_port()), loopback(free_port()));
    let mut supervisor = start_supervisor(smtp, metrics, &["--stop-after-messages", "12"]);
    wait_workers(&supervisor, metrics, &[]);
    messages_from_many(smtp, 12);
    let status = wait_with_limit(&mut supervisor.child, SETTLE).expect("it stops");
    assert!(status.success(), "{status}: {}", supervisor.log());
    assert!(
        supervisor.log().contains("messages: 12 (250: 12)"),
        "{}",
        supervisor.log()
    );
}
