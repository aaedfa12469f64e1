//! Listeners flagged `proxy`: a raw client sends PROXY v1 and v2 headers and the claimed
//! client is the one rules, the debug log and the event log see; a slow, bad or untrusted
//! header closes the connection without a greeting and is counted in /metrics; and HAProxy
//! (send-proxy, send-proxy-v2, its v2 LOCAL health check) in front of a plain and an SMTPS
//! listener, with swaks and smtplib connecting from 127.0.0.5.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::clients::{CLIENT_LIMIT, self_signed_certificate};
use common::{
    Client, GREETING, TempDir, free_port, require_program, run_with_limit, send_signal,
    spawn_with_config, transcript, wait_for,
};

const SETTLE: Duration = Duration::from_secs(10);

/// A rule for the claimed clients of the documentation block 203.0.113.0/24 and of
/// 2001:db8::/32: their recipients are refused with words of their own.
const PROXIED_RULE: &str = r#"
[[rule]]
name = "claimed"
on = "rcpt"
client = ["203.0.113.0/24", "2001:db8::/32"]
reply = "550 5.7.1 Claimed client refused"
"#;

/// A running blackhole with a config of the test's own; killed on drop.
struct Blackhole {
    child: Child,
    dir: TempDir,
}

impl Blackhole {
    /// Starts `blackhole -d -c FILE` with `text` as the file; waits until each of `ports`
    /// is listened on, as its log says (connecting to see would be a connection without a
    /// header, and counted).
    fn start(text: &str, ports: &[u16]) -> Blackhole {
        let dir = TempDir::new();
        let (child, _) = spawn_with_config(&dir, &["-d"], text);
        let server = Blackhole { child, dir };
        let listening = wait_for(SETTLE, || {
            let log = server.log();
            ports
                .iter()
                .all(|port| log.contains(&format!(":{port} as ")))
        });
        assert!(listening, "not listening:\n{}", server.log());
        server
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits until the debug log has `what`.
    fn expect_logged(&self, what: &str) {
        let found = wait_for(SETTLE, || self.log().contains(what));
        assert!(found, "no {what:?} in the log:\n{}", self.log());
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A v2 header: `command` 0x20 LOCAL or 0x21 PROXY, `family` 0x11 TCP over IPv4 or 0x21
/// over IPv6, then `payload` (addresses, then TLVs).
fn v2_header(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[command, family]);
    let length = u16::try_from(payload.len()).expect("a short payload");
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(payload);
    header
}

/// A v2 PROXY header for TCP over IPv6 from `source`, with an ALPN TLV.
fn v2_ipv6_with_tlv(source: &str) -> Vec<u8> {
    let source: std::net::Ipv6Addr = source.parse().expect("an IPv6 address");
    let mut payload = source.octets().to_vec();
    payload.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    payload.extend_from_slice(&[0x9c, 0x40, 0, 25]);
    payload.extend_from_slice(&[0x01, 0, 4]);
    payload.extend_from_slice(b"smtp");
    v2_header(0x21, 0x21, &payload)
}

/// Sends `header` and, in the same write, `EHLO`: the bytes after the header are the
/// client's first SMTP bytes. Then the greeting, the EHLO reply, MAIL, and RCPT's reply.
fn rcpt_reply_after(header: &[u8], smtp: SocketAddr) -> String {
    let mut client = Client::connect(smtp);
    let mut first = header.to_vec();
    first.extend_from_slice(b"EHLO client.example\r\n");
    client.send(&first);
    assert_eq!(client.reply(), GREETING);
    assert!(client.reply().starts_with("250-"), "EHLO answered");
    assert_eq!(client.command("MAIL FROM:<a@example.com>"), "250 2.1.0 OK");
    let reply = client.command("RCPT TO:<b@example.net>");
    assert_eq!(client.command("QUIT").split(' ').next(), Some("221"));
    reply
}

/// The `client` field of each line of `events` of `kind` ("message" or "connection").
fn clients_of(events: &str, kind: &str) -> Vec<String> {
    events
        .lines()
        .filter(|line| line.contains(&format!("\"type\":\"{kind}\"")))
        .filter_map(|line| {
            let at = line.find("\"client\":\"")? + "\"client\":\"".len();
            let end = line[at..].find('"')?;
            Some(line[at..at + end].to_owned())
        })
        .collect()
}

fn config(listen: &str, extra: &str) -> String {
    format!("mailname = \"blackhole.test\"\nlisten = [{listen}]\n{extra}\n")
}

#[test]
fn v1_and_v2_headers_name_the_client_rules_logs_and_events_see() {
    let port = free_port();
    let smtp = loopback(port);
    let dir = TempDir::new();
    let events = dir.path().join("events.json");
    let server = Blackhole::start(
        &config(
            &format!("\"{smtp} proxy\""),
            &format!("event_log = {events:?}\n{PROXIED_RULE}"),
        ),
        &[port],
    );
    let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n";
    assert_eq!(
        rcpt_reply_after(v1, smtp),
        "550 5.7.1 Claimed client refused"
    );
    let outside = b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n";
    assert_eq!(rcpt_reply_after(outside, smtp), "250 2.1.5 OK");
    let v6 = v2_ipv6_with_tlv("2001:db8::9");
    assert_eq!(
        rcpt_reply_after(&v6, smtp),
        "550 5.7.1 Claimed client refused"
    );
    // HAProxy's health check: v2 LOCAL, the proxy's own connection.
    assert_eq!(
        rcpt_reply_after(&v2_header(0x20, 0, &[]), smtp),
        "250 2.1.5 OK"
    );
    let v1_unknown = b"PROXY UNKNOWN\r\n";
    assert_eq!(rcpt_reply_after(v1_unknown, smtp), "250 2.1.5 OK");
    server.expect_logged("PROXY header: client 203.0.113.9 (via 127.0.0.1)");
    server.expect_logged("PROXY header: client 2001:db8::9 (via 127.0.0.1)");
    server.expect_logged("PROXY header: client 127.0.0.1 (via 127.0.0.1)");
    let lines = {
        let mut text = String::new();
        let done = wait_for(SETTLE, || {
            text = fs::read_to_string(&events).unwrap_or_default();
            clients_of(&text, "connection").len() == 5
        });
        assert!(done, "five connection lines:\n{text}");
        text
    };
    assert_eq!(
        clients_of(&lines, "connection"),
        [
            "203.0.113.9",
            "198.51.100.7",
            "2001:db8::9",
            "127.0.0.1",
            "127.0.0.1"
        ]
    );
}

#[test]
fn a_header_that_comes_a_byte_at_a_time_is_read_and_nothing_is_said_before() {
    let port = free_port();
    let smtp = loopback(port);
    let _server = Blackhole::start(&config(&format!("\"{smtp} proxy\""), ""), &[port]);
    let mut payload = vec![203, 0, 113, 5, 127, 0, 0, 1, 0x9c, 0x40, 0, 25];
    payload.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]);
    let header = v2_header(0x21, 0x11, &payload);
    let mut client = Client::connect(smtp);
    for byte in &header[..header.len() - 1] {
        client.send(std::slice::from_ref(byte));
        thread::sleep(Duration::from_millis(5));
    }
    client.expect_silence(Duration::from_millis(300));
    client.send(&header[header.len() - 1..]);
    assert_eq!(client.reply(), GREETING);
    client.ehlo();
}

/// `blackhole_proxy_rejected_total` as `metrics` serves it.
fn rejected(metrics: SocketAddr) -> u64 {
    let mut stream = TcpStream::connect(metrics).expect("connect to the metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("ask");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("the metrics");
    text.lines()
        .find_map(|line| line.strip_prefix("blackhole_proxy_rejected_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no blackhole_proxy_rejected_total in:\n{text}"))
}

/// Waits until the count is `expected`.
fn expect_rejected(metrics: SocketAddr, expected: u64) {
    let mut seen = 0;
    let reached = wait_for(SETTLE, || {
        seen = rejected(metrics);
        seen == expected
    });
    assert!(
        reached,
        "blackhole_proxy_rejected_total {seen}, not {expected}"
    );
}

#[test]
fn slow_bad_and_untrusted_headers_close_without_a_greeting_and_are_counted() {
    let (trusted_port, untrusted_port, metrics_port) = (free_port(), free_port(), free_port());
    let metrics = loopback(metrics_port);
    let server = Blackhole::start(
        &config(
            &format!("\"127.0.0.1:{trusted_port} proxy\""),
            &format!("timeout = 1\nmetrics_listen = \"{metrics}\""),
        ),
        &[trusted_port],
    );
    let before = rejected(metrics);
    // Slow: half a header, then nothing until the idle timeout.
    let mut slow = Client::connect(loopback(trusted_port));
    slow.send(b"PROXY TCP4 203.0.113.9 ");
    slow.expect_closed();
    expect_rejected(metrics, before + 1);
    server.expect_logged("no PROXY header within the idle timeout");
    // Missing: nothing at all. The listener defers the accept for a second, then hands the
    // connection over anyway, and the idle timeout ends it.
    let mut silent = Client::connect(loopback(trusted_port));
    silent.expect_closed();
    expect_rejected(metrics, before + 2);
    let before = before + 1;
    // Bad: SMTP where the header should be.
    let mut bad = Client::connect(loopback(trusted_port));
    bad.send(b"EHLO client.example\r\n");
    bad.expect_closed();
    expect_rejected(metrics, before + 2);
    // Oversized: a v2 header declaring more than 512 bytes after its fixed part.
    let mut oversized = Client::connect(loopback(trusted_port));
    oversized.send(&v2_header(0x21, 0x11, &[0; 600]));
    oversized.expect_closed();
    expect_rejected(metrics, before + 3);
    drop(server);

    // Untrusted: from 127.0.0.1 where only 10.0.0.0/8 may send headers.
    let server = Blackhole::start(
        &config(
            &format!("\"127.0.0.1:{untrusted_port} proxy\""),
            &format!("proxy_trusted = [\"10.0.0.0/8\"]\nmetrics_listen = \"{metrics}\""),
        ),
        &[untrusted_port],
    );
    let before = rejected(metrics);
    let mut untrusted = Client::connect(loopback(untrusted_port));
    untrusted.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n");
    untrusted.expect_closed();
    expect_rejected(metrics, before + 1);
    server.expect_logged("127.0.0.1 may not send a PROXY header");
    // SIGHUP reads proxy_trusted again: loopback, the default, may send it now.
    let text = config(&format!("\"127.0.0.1:{untrusted_port} proxy\""), "");
    fs::write(server.dir.path().join("blackhole.toml"), text).expect("rewrite the config");
    send_signal("HUP", server.child.id());
    server.expect_logged("configuration reloaded");
    let header = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n";
    assert_eq!(
        rcpt_reply_after(header, loopback(untrusted_port)),
        "250 2.1.5 OK"
    );
}

/// HAProxy in the foreground with `text` as its configuration; killed on drop.
struct Haproxy(Child);

impl Haproxy {
    fn start(dir: &Path, text: &str) -> Haproxy {
        let haproxy = require_program("haproxy", "haproxy");
        let config = dir.join("haproxy.cfg");
        fs::write(&config, text).expect("write haproxy.cfg");
        let checked = run_with_limit(
            Command::new(&haproxy).arg("-c").arg("-f").arg(&config),
            CLIENT_LIMIT,
        );
        assert!(checked.status.success(), "{}", transcript(&checked));
        let log = fs::File::create(dir.join("haproxy.log")).expect("create haproxy.log");
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log twice"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        Haproxy(child)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What HAProxy's stats socket says to `show stat`.
fn haproxy_stats(socket: &Path) -> String {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  s.sendall(b'show stat\\n')\n\
                  out = b''\n\
                  while True:\n    \
                      chunk = s.recv(65536)\n    \
                      if not chunk: break\n    \
                      out += chunk\n\
                  sys.stdout.write(out.decode())\n";
    let out = run_with_limit(
        Command::new("python3").args(["-c", script]).arg(socket),
        CLIENT_LIMIT,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// smtplib from 127.0.0.5 through `port`: STARTTLS, or TLS from the first byte, checking
/// the certificate against `ca`.
fn smtplib_from_127_0_0_5(port: u16, smtps: bool, ca: &Path) -> std::process::Output {
    let script = r#"
import smtplib, ssl, sys
port, smtps, ca = int(sys.argv[1]), sys.argv[2] == "smtps", sys.argv[3]
context = ssl.create_default_context(cafile=ca)
source = ("127.0.0.5", 0)
if smtps:
    smtp = smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=context, source_address=source)
else:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=source)
    smtp.starttls(context=context)
smtp.sendmail("a@example.com", ["b@example.net"], "Subject: via HAProxy\r\n\r\nhi\r\n")
smtp.quit()
print("SENT")
"#;
    let mode = if smtps { "smtps" } else { "starttls" };
    run_with_limit(
        Command::new(require_program("python3", "python3"))
            .args(["-c", script, &port.to_string(), mode])
            .arg(ca),
        CLIENT_LIMIT,
    )
}

#[test]
fn haproxy_in_front_passes_the_clients_address_and_its_health_check_keeps_it_up() {
    let files = TempDir::new();
    let (cert, key) = self_signed_certificate(files.path());
    let (plain, smtps) = (free_port(), free_port());
    let fronts: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let events = files.path().join("events.json");
    let text = format!(
        "mailname = \"blackhole.test\"\nlisten = [\"127.0.0.1:{plain} proxy\"]\n\
         tls_listen = [\"127.0.0.1:{smtps} proxy\"]\ntls_cert = {cert:?}\ntls_key = {key:?}\n\
         event_log = {events:?}\n"
    );
    let server = Blackhole::start(&text, &[plain, smtps]);
    let stats = files.path().join("haproxy.sock");
    // v1 and v2 to each listener; the v2 plain backend is health-checked over SMTP, its
    // check sending a v2 LOCAL header.
    let backends = [
        (plain, "send-proxy", ""),
        (plain, "send-proxy-v2", " check inter 300 rise 1"),
        (smtps, "send-proxy", ""),
        (smtps, "send-proxy-v2", ""),
    ];
    let mut haproxy_cfg = format!(
        "global\n    stats socket {} mode 600 level admin\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    \
         timeout server 30s\n",
        stats.display()
    );
    for (i, (backend, proxy, check)) in backends.iter().enumerate() {
        let smtpchk = if check.is_empty() {
            ""
        } else {
            "    option smtpchk HELO haproxy.example\n"
        };
        haproxy_cfg.push_str(&format!(
            "listen front{i}\n    bind 127.0.0.1:{}\n{smtpchk}    \
             server blackhole 127.0.0.1:{backend} {proxy}{check}\n",
            fronts[i]
        ));
    }
    let _haproxy = Haproxy::start(files.path(), &haproxy_cfg);
    let up = wait_for(SETTLE, || {
        haproxy_stats(&stats)
            .lines()
            .any(|line| line.starts_with("front1,blackhole,") && line.contains(",UP,"))
    });
    assert!(
        up,
        "the checked server is not UP:\n{}",
        haproxy_stats(&stats)
    );
    server.expect_logged("PROXY header: client 127.0.0.1 (via 127.0.0.1)");

    let swaks = require_program("swaks", "swaks");
    for (i, (_, _, _)) in backends.iter().enumerate() {
        let tls = if i < 2 { "--tls" } else { "--tlsc" };
        let out = run_with_limit(
            Command::new(&swaks)
                .args(["--server", &format!("127.0.0.1:{}", fronts[i])])
                .args(["--local-interface", "127.0.0.5", tls])
                .args(["--to", "b@example.net", "--from", "a@example.com"])
                .args(["--timeout", "20"]),
            CLIENT_LIMIT,
        );
        let said = transcript(&out);
        assert!(out.status.success(), "swaks through front{i}:\n{said}");
        assert!(said.contains("250 2.0.0 OK"), "front{i}:\n{said}");
    }
    for (front, smtps) in [(fronts[1], false), (fronts[3], true)] {
        let out = smtplib_from_127_0_0_5(front, smtps, &cert);
        assert!(
            out.status.success() && transcript(&out).contains("SENT"),
            "{}",
            transcript(&out)
        );
    }
    server.expect_logged("PROXY header: client 127.0.0.5 (via 127.0.0.1)");
    let mut text = String::new();
    let all = wait_for(SETTLE, || {
        text = fs::read_to_string(&events).unwrap_or_default();
        clients_of(&text, "message").len() == 6
    });
    assert!(all, "six message lines:\n{text}");
    assert!(
        clients_of(&text, "message")
            .iter()
            .all(|c| c == "127.0.0.5"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("\"type\":\"message\""))
            .filter(|l| l.contains("\"tls\":\"TLSv1"))
            .count()
            == 6,
        "every message went inside TLS:\n{text}"
    );
}

/// A TLS client whose ClientHello leaves in the very write that carries the PROXY header, so
/// that the server reads both at once; it prints the greeting it gets over TLS.
fn smtps_hello_with_the_header(port: u16, header: &str, ca: &Path) -> std::process::Output {
    let script = r#"
import socket, ssl, sys
port, header, ca = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
context = ssl.create_default_context(cafile=ca)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
sock.sendall(header + outgoing.read())
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        if outgoing.pending:
            sock.sendall(outgoing.read())
        data = sock.recv(65536)
        if not data:
            sys.exit("closed during the handshake")
        incoming.write(data)
if outgoing.pending:
    sock.sendall(outgoing.read())
greeting = b""
while b"\r\n" not in greeting:
    try:
        greeting += tls.read(4096)
    except ssl.SSLWantReadError:
        data = sock.recv(65536)
        if not data:
            sys.exit("closed before the greeting")
        incoming.write(data)
print(greeting.decode().strip())
"#;
    run_with_limit(
        Command::new(require_program("python3", "python3"))
            .args(["-c", script, &port.to_string(), header])
            .arg(ca),
        CLIENT_LIMIT,
    )
}

#[test]
fn a_client_hello_in_the_same_read_as_the_header_is_not_lost() {
    let files = TempDir::new();
    let (cert, key) = self_signed_certificate(files.path());
    let port = free_port();
    let smtps = loopback(port);
    let server = Blackhole::start(
        &format!(
            "mailname = \"blackhole.test\"\nlisten = []\ntls_listen = [\"{smtps} proxy\"]\n\
             tls_cert = {cert:?}\ntls_key = {key:?}\n"
        ),
        &[port],
    );
    let out =
        smtps_hello_with_the_header(port, "PROXY TCP4 203.0.113.4 127.0.0.1 4000 465\r\n", &cert);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.starts_with("220 "),
        "greeting over TLS: {said:?}, stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.expect_logged("PROXY header: client 203.0.113.4 (via 127.0.0.1)");
}
