//! Connection limits: `max_connections`, and running out of file descriptors. The server must
//! go on serving the connections it holds, never spin on `accept`, and take new clients again
//! once room frees up.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, TempDir, blackhole_bin, config_toml, free_port};

/// A server started under `ulimit -n FDS`, killed on drop.
struct LimitedServer {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl LimitedServer {
    fn start(fds: u32, extra_toml: &str) -> LimitedServer {
        let dir = TempDir::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.write(
            "blackhole.toml",
            &config_toml(&addr.to_string(), extra_toml),
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {fds} && exec \"$0\" -c \"$1\""))
            .arg(blackhole_bin())
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn blackhole under ulimit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "blackhole did not listen on {addr}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        LimitedServer {
            child,
            addr,
            _dir: dir,
        }
    }

    /// User plus system CPU time the server has used, in clock ticks (1/100 s on Linux).
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("server /proc stat");
        // Fields after the command name, which is in parentheses: utime is the 12th, stime the 13th.
        let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the greeting if it arrives within `limit`.
fn greeting_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

fn noop_answered(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 256];
    stream.write_all(b"NOOP\r\n").is_ok()
        && matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"250 2.0.0 OK"))
}

#[test]
fn out_of_descriptors_the_server_serves_what_it_holds_and_recovers() {
    // max_connections above what 256 descriptors allow, so accept() itself runs out.
    let server = LimitedServer::start(256, "max_connections = 5000\ntimeout = 120");
    let clients: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    thread::sleep(Duration::from_millis(500));
    let (mut held, mut waiting): (Vec<TcpStream>, Vec<TcpStream>) = (Vec::new(), Vec::new());
    for mut client in clients {
        match greeting_within(&mut client, Duration::from_millis(20)) {
            Some(greeting) => {
                assert!(greeting.starts_with("220 "), "{greeting}");
                held.push(client);
            }
            None => waiting.push(client),
        }
    }
    assert!(
        (150..256).contains(&held.len()),
        "{} connections greeted with 256 descriptors",
        held.len()
    );
    for client in &mut held {
        assert!(noop_answered(client), "a held connection stopped answering");
    }
    // Descriptors exhausted, clients waiting: the accept back-off keeps the CPU idle.
    let before = server.cpu_ticks();
    thread::sleep(Duration::from_secs(3));
    let spent = server.cpu_ticks() - before;
    assert!(
        spent <= 30,
        "{spent} ticks of CPU in 3 s while out of descriptors"
    );

    // Room frees up: waiting clients are taken in and greeted.
    held.truncate(held.len() - 100);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut greeted_later = 0;
    for client in &mut waiting {
        let left = deadline.saturating_duration_since(Instant::now());
        if greeting_within(client, left.max(Duration::from_millis(10))).is_some() {
            greeted_later += 1;
        }
        if greeted_later == 50 {
            break;
        }
    }
    assert_eq!(
        greeted_later, 50,
        "waiting clients greeted once descriptors were free"
    );
    for client in &mut held {
        assert!(noop_answered(client), "a held connection stopped answering");
    }
}

#[test]
fn past_max_connections_clients_are_told_and_closed() {
    let server = LimitedServer::start(1024, "max_connections = 5");
    // The probe that saw the server listening may still count for a moment: retry on 421.
    let mut held: Vec<Client> = (0..5).map(|_| greeted_client(server.addr)).collect();
    let mut refused = Client::connect(server.addr);
    assert_eq!(refused.reply(), "421 4.3.2 Too many connections");
    refused.expect_closed();
    for client in &mut held {
        assert_eq!(client.command("NOOP"), "250 2.0.0 OK");
    }
    drop(held.pop());
    // The server notices the close on its next turn.
    held.push(greeted_client(server.addr));
}

/// A client the server took in, retrying while it says it is full.
fn greeted_client(addr: SocketAddr) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = Client::connect(addr);
        let reply = client.reply();
        if reply.starts_with("220 ") {
            return client;
        }
        assert_eq!(reply, "421 4.3.2 Too many connections");
        assert!(Instant::now() < deadline, "no room for a client within 5 s");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A client that pipelines commands with long replies and reads them only later: the server
/// stops reading it while its replies wait, without spinning, and delivers every reply.
#[test]
fn a_client_that_reads_late_gets_every_reply_without_the_server_spinning() {
    let server = common::Server::start("timeout = 60");
    let stream = TcpStream::connect(server.addr()).expect("connect");
    let mut writer = stream.try_clone().unwrap();
    const COMMANDS: usize = 20_000;
    let sender = thread::spawn(move || {
        let mut batch = "EXPN all\r\n".repeat(COMMANDS);
        batch.push_str("QUIT\r\n");
        writer.write_all(batch.as_bytes()).expect("send the batch");
    });
    thread::sleep(Duration::from_millis(500));
    let stat = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<u64> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields[0] + fields[1]
    };
    let before = stat(server.pid());
    thread::sleep(Duration::from_secs(2));
    let spent = stat(server.pid()) - before;
    assert!(
        spent <= 20,
        "{spent} ticks of CPU in 2 s while the client did not read"
    );

    let mut reader = stream;
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    reader
        .read_to_end(&mut received)
        .expect("every reply, then the close");
    sender.join().unwrap();
    let text = String::from_utf8(received).unwrap();
    let last_lines = text.matches("250 Reileen Kawahara").count();
    assert_eq!(last_lines, COMMANDS, "replies to every EXPN");
    assert!(
        text.ends_with("221 2.0.0 Goodbye\r\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
}
