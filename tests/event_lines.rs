//! The event log as the server writes it, read by Python's `json`: one line per message and
//! per connection with the promised fields; a SIGHUP after a rename writes to a new file;
//! `"-"` writes to standard output.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Client, NO_SUCH_USER, Server, TempDir, free_port, greeted, send_signal, wait_for};

const SETTLE: Duration = Duration::from_secs(10);

/// Python reads every line of `text` as JSON and prints, per line, the fields the test
/// looks at, separated by `|`.
fn python_fields(text: &str) -> Vec<String> {
    let script = r#"
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e["type"] == "message":
        print("|".join(str(x) for x in ["message", e["connection"], e["worker"], e["listener"],
            e["client"], e["tls"], e["helo"], e["auth_user"], e["mail_from"],
            ",".join(e["recipients"]), e["recipient_count"], e["size"], e["switches"]["mode"],
            e["rule"], e["code"], e["delay_asked_ms"], e["delay_given_ms"] is not None,
            e["duration_ms"] >= 0, e["time"].endswith("Z")]))
    else:
        print("|".join(str(x) for x in ["connection", e["connection"], e["helo"],
            e["messages"], e["bytes"], e["ended"], e["duration_ms"] >= 0]))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    use std::io::Write;
    let mut stdin = child.stdin.take().expect("its stdin");
    stdin.write_all(text.as_bytes()).expect("lines written");
    drop(stdin);
    let output = child.wait_with_output().expect("python3 ran");
    assert!(output.status.success(), "python3 could not read:\n{text}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn read_when(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    let arrived = wait_for(SETTLE, || {
        text = fs::read_to_string(path).unwrap_or_default();
        text.lines().count() >= lines
    });
    assert!(arrived, "not {lines} lines in {}:\n{text}", path.display());
    text
}

fn message(client: &mut Client, rcpts: &[&str], headers: &str) -> String {
    assert!(
        client
            .command("MAIL FROM:<s@example.com>")
            .starts_with("250")
    );
    for rcpt in rcpts {
        client.command(&format!("RCPT TO:<{rcpt}>"));
    }
    assert!(client.command("DATA").starts_with("354"));
    client.send(format!("{headers}\r\nhello\r\n.\r\n").as_bytes());
    client.reply()
}

#[test]
fn one_line_per_message_and_per_connection_with_its_fields() {
    let dir = TempDir::new();
    let log = dir.path().join("events.json");
    let extra = format!("event_log = \"{}\"\n{NO_SUCH_USER}", log.display());
    let server = Server::start(&extra);
    let mut client = greeted(server.addr());
    assert!(client.command("EHLO client.test").starts_with("250"));
    let first = message(
        &mut client,
        &["a@example.net", "nobody@example.net", "b@x"],
        "",
    );
    assert!(first.starts_with("250"), "{first}");
    let second = message(
        &mut client,
        &["c@example.net"],
        "X-Blackhole-Mode: bounce\r\n",
    );
    assert!(client.command("QUIT").starts_with("221"));
    // The probe that waited for the server to listen, then the client's three lines.
    let text = read_when(&log, 4);
    let fields = python_fields(&text);
    let listener = server.addr().to_string();
    // As max_message_size counts it: the final dot line included.
    let size = "\r\nhello\r\n.\r\n".len();
    assert!(
        fields.contains(&format!(
            "message|2|0|{listener}|127.0.0.1|None|client.test|None|s@example.com|\
         a@example.net,b@x|2|{size}|None|None|250|None|False|True|True"
        )),
        "{fields:#?}"
    );
    let bounce_size = size + "X-Blackhole-Mode: bounce\r\n".len();
    assert!(
        fields.contains(&format!(
            "message|2|0|{listener}|127.0.0.1|None|client.test|None|s@example.com|\
         c@example.net|1|{bounce_size}|bounce|None|{}|None|False|True|True",
            &second[..3]
        )),
        "{fields:#?}"
    );
    let bytes = size + bounce_size;
    assert!(
        fields.contains(&format!("connection|2|client.test|2|{bytes}|quit|True")),
        "{fields:#?}"
    );
    assert!(
        fields.contains(&"connection|1|None|0|0|reset|True".to_owned()),
        "{fields:#?}"
    );
    assert_eq!(fields.len(), 4, "{fields:#?}");
}

#[test]
fn sighup_after_a_rename_writes_to_a_new_file() {
    let dir = TempDir::new();
    let log = dir.path().join("events.json");
    let server = Server::start(&format!("event_log = \"{}\"\n", log.display()));
    read_when(&log, 1);
    let rotated = dir.path().join("events.json.1");
    fs::rename(&log, &rotated).expect("rename the log");
    send_signal("HUP", server.pid());
    let reloaded = wait_for(SETTLE, || server.stderr_log().contains("reloaded"));
    assert!(reloaded, "{}", server.stderr_log());
    let mut client = greeted(server.addr());
    assert!(client.command("QUIT").starts_with("221"));
    let text = read_when(&log, 1);
    assert!(text.contains("\"ended\":\"quit\""), "{text}");
    assert_eq!(
        fs::read_to_string(&rotated)
            .unwrap_or_default()
            .lines()
            .count(),
        1
    );
}

#[test]
fn a_dash_writes_the_lines_to_standard_output() {
    let dir = TempDir::new();
    let port = free_port();
    let config = dir.write(
        "blackhole.toml",
        &format!(
            "mailname = \"{}\"\nlisten = [\"127.0.0.1:{port}\"]\nevent_log = \"-\"\n",
            common::MAILNAME
        ),
    );
    let stdout = fs::File::create(dir.path().join("stdout")).expect("a file for stdout");
    let mut child = Command::new(common::blackhole_bin())
        .arg("-c")
        .arg(&config)
        .args(["--stop-after-messages", "1"])
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("start blackhole");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let listening = wait_for(SETTLE, || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    assert!(listening);
    let mut client = greeted(addr);
    assert!(client.command("EHLO client.test").starts_with("250"));
    assert!(message(&mut client, &["a@example.net"], "").starts_with("250"));
    let stopped = common::wait_with_limit(&mut child, SETTLE).expect("it stops");
    assert!(stopped.success());
    let text = fs::read_to_string(dir.path().join("stdout")).unwrap_or_default();
    let fields = python_fields(&text);
    assert!(fields.iter().any(|f| f.starts_with("message|")), "{text}");
    assert!(
        fields.iter().any(|f| f.ends_with("|stop|True")),
        "the client's connection, closed by the stop: {text}"
    );
}
