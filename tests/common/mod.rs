//! Helpers shared by the socket tests: a scratch folder, the real `blackhole` binary started on a
//! free loopback port, an SMTP line client over a plain `TcpStream`, and a way to find the real
//! mail clients on PATH. Std only, so that the tests need nothing the server does not.

// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

pub mod clients;
pub mod exim;
pub mod postfix;
pub mod procfs;
pub mod prometheus;
pub mod supervisor;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const MAILNAME: &str = "blackhole.test";

/// The greeting of a server with `MAILNAME`.
pub const GREETING: &str = "220 blackhole.test ESMTP";

/// A rule that refuses every recipient `nobody@...`, as a test of a recipient that does not
/// exist writes it.
pub const NO_SUCH_USER: &str = r#"
[[rule]]
name = "no such user"
on = "rcpt"
match = "nobody@*"
reply = "550 5.1.1 No such user"
"#;

/// How long a reply may take before the test calls the server stuck.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The ten bounce replies of SPEC.md, without CRLF.
pub const BOUNCES: [&str; 10] = [
    "450 Requested mail action not taken: mailbox unavailable",
    "451 Requested action aborted: local error in processing",
    "452 Requested action not taken: insufficient system storage",
    "458 Unable to queue message",
    "521 Machine does not accept mail",
    "550 Requested action not taken: mailbox unavailable",
    "551 User not local",
    "552 Requested mail action aborted: exceeded storage allocation",
    "553 Requested action not taken: mailbox name not allowed",
    "571 Blocked",
];

pub fn blackhole_bin() -> &'static str {
    env!("CARGO_BIN_EXE_blackhole")
}

/// A folder of its own under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        // Tests of one binary run in parallel threads, and test binaries run side by side:
        // the process id plus a counter keeps the names apart.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "blackhole-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        self.write_bytes(name, contents.as_bytes())
    }

    pub fn write_bytes(&self, name: &str, contents: &[u8]) -> PathBuf {
        let file = self.path.join(name);
        fs::write(&file, contents).expect("write a temp file");
        file
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago (the OS picked it, and we let it go).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Starts `blackhole ARGS -c CONFIG` without waiting for it. The config, `blackhole.toml`
/// (`listen` and `extra_toml`, see `config_toml`), and the server's `stderr.log` are in `dir`.
/// Returns the process and the config's path.
pub fn spawn_blackhole(
    dir: &TempDir,
    args: &[&str],
    listen: &str,
    extra_toml: &str,
) -> (Child, PathBuf) {
    spawn_with_config(dir, args, &config_toml(listen, extra_toml))
}

/// Starts the real binary with `args` and `text` as its whole config file (in `dir`), its
/// stderr in `dir`'s `stderr.log`; returns it and the config's path.
pub fn spawn_with_config(dir: &TempDir, args: &[&str], text: &str) -> (Child, PathBuf) {
    let config = dir.write("blackhole.toml", text);
    let mut command = Command::new(blackhole_bin());
    command.args(args).arg("-c").arg(&config);
    (spawn_logging(dir, &mut command), config)
}

/// Starts `command` with no stdin or stdout and its stderr in `dir`'s `stderr.log`.
fn spawn_logging(dir: &TempDir, command: &mut Command) -> Child {
    // stderr goes to a file, not a pipe: nobody reads a pipe while the test runs, and a full
    // pipe would block the server's logging and so the server.
    let log = fs::File::create(dir.path().join("stderr.log")).expect("create stderr.log");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"))
}

/// A running `blackhole` with its own config; killed and reaped on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Server {
    /// A server on one free loopback port, with `mailname = "blackhole.test"` and `extra_toml`.
    pub fn start(extra_toml: &str) -> Server {
        Server::start_with(&[], "", extra_toml)
    }

    /// Like `start`, with `listener_flags` (e.g. `mode=bounce`) after the listen address.
    pub fn start_with_listener_flags(listener_flags: &str, extra_toml: &str) -> Server {
        Server::start_with(&[], listener_flags, extra_toml)
    }

    /// Like `start`, with extra command-line arguments before `-c FILE`.
    pub fn start_with_args(args: &[&str], extra_toml: &str) -> Server {
        Server::start_with(args, "", extra_toml)
    }

    /// Like `start`, under `ulimit -n FDS`: at most `fds` descriptors, listeners included.
    pub fn start_with_fd_limit(fds: u32, extra_toml: &str) -> Server {
        Server::launch("", |dir, listen| {
            let config = dir.write("blackhole.toml", &config_toml(listen, extra_toml));
            let mut command = Command::new("sh");
            // `exec` keeps the process id, so `pid()` is the server's own.
            command
                .arg("-c")
                .arg(format!("ulimit -n {fds} && exec \"$0\" -c \"$1\""))
                .arg(blackhole_bin())
                .arg(config);
            spawn_logging(dir, &mut command)
        })
    }

    fn start_with(args: &[&str], listener_flags: &str, extra_toml: &str) -> Server {
        Server::launch(listener_flags, |dir, listen| {
            spawn_blackhole(dir, args, listen, extra_toml).0
        })
    }

    /// Picks a free port, starts the server there with `spawn(dir, listen)` and waits until
    /// it listens.
    fn launch(listener_flags: &str, spawn: impl FnOnce(&TempDir, &str) -> Child) -> Server {
        let dir = TempDir::new();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let listen = format!("{addr} {listener_flags}");
        let child = spawn(&dir, listen.trim_end());
        let mut server = Server { child, addr, dir };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let limit = Duration::from_secs(10);
        let listening = wait_for(limit, || {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "blackhole exited ({status}) before listening on {}; stderr:\n{}",
                    self.addr,
                    self.stderr_log()
                );
            }
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
        });
        assert!(
            listening,
            "blackhole did not listen on {} within {limit:?}; stderr:\n{}",
            self.addr,
            self.stderr_log()
        );
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The config file it was started with (rewrite it, then SIGHUP, to reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("blackhole.toml")
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has logged so far.
    pub fn stderr_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A new connection that has read its greeting.
    pub fn greeted(&self) -> Client {
        greeted(self.addr)
    }

    /// The server process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        send_signal("TERM", self.child.id());
        self.wait_for_exit(limit)
    }

    /// Waits up to `limit` for the process to exit (after a signal the test sent).
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_with_limit(&mut self.child, limit).unwrap_or_else(|| {
            panic!(
                "blackhole still running after {limit:?}; stderr:\n{}",
                self.stderr_log()
            )
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The word just before `needle` on the first line of `log` that has it: the id a mail
/// program's log line gives a message, before what it says of it.
pub fn word_before(log: &str, needle: &str) -> Option<String> {
    log.lines().find_map(|line| {
        let before = &line[..line.find(needle)?];
        before.rsplit(' ').next().map(str::to_owned)
    })
}

/// The config every test server gets: our mail name, one listener, then the test's own lines.
pub fn config_toml(listen: &str, extra_toml: &str) -> String {
    format!("mailname = \"{MAILNAME}\"\nlisten = [\"{listen}\"]\n{extra_toml}\n")
}

/// `kill -SIGNAL PID`, since std cannot send a signal; through `sh`, whose builtin `kill` is
/// there even where the procps package is not.
pub fn send_signal(signal: &str, pid: u32) {
    let status = Command::new("sh")
        .args([
            "-c",
            "kill -s \"$1\" \"$2\"",
            "sh",
            signal,
            &pid.to_string(),
        ])
        .status()
        .expect("run sh -c kill");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

pub fn wait_with_limit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_for(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Runs `blackhole ARGS` to its end, killing it (and failing) if it outlives `limit`.
pub fn run_blackhole(args: &[&str], limit: Duration) -> Output {
    run_with_limit(Command::new(blackhole_bin()).args(args), limit)
}

/// Runs a command to its end with captured output, failing if it outlives `limit`.
pub fn run_with_limit(command: &mut Command, limit: Duration) -> Output {
    run_capturing(command, Stdio::null(), limit)
}

/// Like `run_with_limit`, with `input` as the command's whole stdin (then end of file).
pub fn run_with_input(command: &mut Command, input: &[u8], limit: Duration) -> Output {
    let dir = TempDir::new();
    // A file, not a pipe: the command reads it at its own pace while we only wait.
    let stdin = fs::File::open(dir.write_bytes("stdin", input)).expect("open the stdin file");
    run_capturing(command, Stdio::from(stdin), limit)
}

fn run_capturing(command: &mut Command, stdin: Stdio, limit: Duration) -> Output {
    let dir = TempDir::new();
    // Files rather than pipes, so that a chatty program cannot block on a full pipe while we wait.
    let stdout = fs::File::create(dir.path().join("stdout")).expect("create stdout file");
    let stderr = fs::File::create(dir.path().join("stderr")).expect("create stderr file");
    let mut child = command
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let status = wait_with_limit(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = fs::read(dir.path().join("stdout")).unwrap_or_default();
    let stderr = fs::read(dir.path().join("stderr")).unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{command:?} still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// The full path of `program` on PATH. The real-client tests do not skip when a client is
/// missing: they fail here, and say how to get it.
pub fn require_program(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not on PATH: run .ci/run (it installs the test clients) \
                 or `apt-get install {debian_package}`"
            )
        })
}

/// Fails, saying how to get it, unless `perl` can load `module` (swaks needs Net::SSLeay and
/// IO::Socket::SSL for TLS, and says little more than "not available" without them).
pub fn require_perl_module(module: &str, debian_package: &str) {
    let perl = require_program("perl", "perl");
    let loaded = Command::new(perl)
        .arg(format!("-M{module}"))
        .args(["-e", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        loaded,
        "perl cannot load {module}: run .ci/run (it installs the test clients) \
         or `apt-get install {debian_package}`"
    );
}

/// An SMTP client that sends raw bytes and reads whole replies, one at a time.
pub struct Client {
    stream: TcpStream,
    /// Bytes received but not yet handed out as reply lines.
    pending: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::over(stream)
    }

    /// A connection to `addr` from the loopback address `source` (any port): the whole of
    /// 127/8 is loopback, so a test can be many clients, as workers that steer by client
    /// address see them.
    pub fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        socket
            .bind(&SocketAddr::from((source, 0)).into())
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        socket
            .connect_timeout(&addr.into(), REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect from {source} to {addr}: {e}"));
        Client::over(socket.into())
    }

    fn over(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("set_write_timeout");
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket itself, e.g. for a TLS handshake after `220 Ready to start TLS`. Panics if
    /// the server sent more than the test has read: nothing may follow that 220 in plaintext.
    pub fn into_stream(self) -> TcpStream {
        assert!(
            self.pending.is_empty(),
            "plaintext after the last reply read: {:?}",
            String::from_utf8_lossy(&self.pending)
        );
        self.stream
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the server");
    }

    /// Sends `line` plus CRLF.
    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes());
    }

    /// Sends a command and returns its reply.
    pub fn command(&mut self, line: &str) -> String {
        self.send_line(line);
        self.reply()
    }

    /// One whole reply: its lines without CRLF, joined by "\n". Panics on timeout or close.
    pub fn reply(&mut self) -> String {
        self.reply_within(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("no reply from the server: {e}"))
    }

    /// One whole reply, or the error that came instead (`UnexpectedEof` for a close).
    pub fn reply_within(&mut self, limit: Duration) -> io::Result<String> {
        self.stream.set_read_timeout(Some(limit))?;
        read_reply(&mut self.stream, &mut self.pending)
    }

    /// Reads `count` copies of `unit` (raw bytes, CRLFs included), failing at the first
    /// difference: for long runs of one reply, which `reply` would take long to split.
    pub fn expect_repeated(&mut self, unit: &[u8], count: usize) {
        let total = unit.len() * count;
        let mut matched = 0;
        let mut chunk = std::mem::take(&mut self.pending);
        let mut at = 0;
        while matched < total {
            if at == chunk.len() {
                chunk.resize(64 * 1024, 0);
                let n = self.stream.read(&mut chunk).unwrap_or_else(|e| {
                    panic!("{matched} of {total} bytes of repeated replies, then {e}")
                });
                assert!(
                    n > 0,
                    "closed after {matched} of {total} bytes of repeated replies"
                );
                chunk.truncate(n);
                at = 0;
            }
            let offset = matched % unit.len();
            let n = (chunk.len() - at)
                .min(unit.len() - offset)
                .min(total - matched);
            if chunk[at..at + n] != unit[offset..offset + n] {
                panic!(
                    "at byte {matched} of {count} repeated replies: {:?} instead of {:?}",
                    String::from_utf8_lossy(&chunk[at..at + n]),
                    String::from_utf8_lossy(&unit[offset..offset + n]),
                );
            }
            at += n;
            matched += n;
        }
        self.pending = chunk.split_off(at);
    }

    /// Asserts that nothing arrives for `quiet` (no reply, no close).
    pub fn expect_silence(&mut self, quiet: Duration) {
        match self.reply_within(quiet) {
            Err(e) if is_timeout(&e) => {
                assert!(
                    self.pending.is_empty(),
                    "unexpected partial reply: {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
            }
            Err(e) => panic!("expected silence, got {e}"),
            Ok(reply) => panic!("expected silence, got reply {reply:?}"),
        }
    }

    /// Asserts that the server closes the connection within `REPLY_TIMEOUT`, sending nothing more.
    pub fn expect_closed(&mut self) {
        match self.reply_within(REPLY_TIMEOUT) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.pending.is_empty() => {}
            // A reset is a close too (the server may close with our bytes still unread).
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the server to close the connection, got {e}"),
            Ok(reply) => panic!("expected the server to close the connection, got {reply:?}"),
        }
    }

    /// Greeting, EHLO, MAIL, RCPT and DATA, each checked, ready for the message.
    pub fn start_message(&mut self) {
        assert_eq!(self.reply(), GREETING);
        self.ehlo();
        self.open_data();
    }

    pub fn ehlo(&mut self) {
        let reply = self.command("EHLO client.example.com");
        assert!(
            reply.starts_with(&format!("250-{MAILNAME}\n")) && reply.ends_with("\n250 DSN"),
            "EHLO reply: {reply:?}"
        );
    }

    /// MAIL, RCPT and DATA, each checked.
    pub fn open_data(&mut self) {
        assert_eq!(self.command("MAIL FROM:<a@example.com>"), "250 2.1.0 OK");
        assert_eq!(self.command("RCPT TO:<b@example.net>"), "250 2.1.5 OK");
        assert_eq!(self.command("DATA"), "354 End data with <CR><LF>.<CR><LF>");
    }
}

/// A new connection to `addr` from `source` that has read its greeting.
pub fn greeted_from(source: Ipv4Addr, addr: SocketAddr) -> Client {
    let mut client = Client::connect_from(source, addr);
    assert_eq!(client.reply(), GREETING);
    client
}

/// A new connection to `addr` that has read its greeting.
pub fn greeted(addr: SocketAddr) -> Client {
    let mut client = Client::connect(addr);
    assert_eq!(client.reply(), GREETING);
    client
}

/// A real client's stdout and stderr together, for assertions and failure messages.
pub fn transcript(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One whole reply from `source`: its lines without CRLF, joined by "\n". `pending` holds bytes
/// received but not yet handed out, before and after (so any byte stream can carry replies:
/// a `TcpStream`, or a TLS stream in the TLS tests). A close is `UnexpectedEof`.
pub fn read_reply(source: &mut impl Read, pending: &mut Vec<u8>) -> io::Result<String> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(source, pending)?;
        // "250-..." continues a reply, "250 ..." (or a bare code) ends it.
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok(lines.join("\n"));
        }
    }
}

fn read_line(source: &mut impl Read, pending: &mut Vec<u8>) -> io::Result<String> {
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            return Ok(text.trim_end_matches(['\r', '\n']).to_string());
        }
        let mut chunk = [0u8; 4096];
        match source.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed (unfinished line: {:?})",
                        String::from_utf8_lossy(pending)
                    ),
                ));
            }
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Asserts that `reply` is the accept reply, `250 2.0.0 OK: queued as <D.D.D@blackhole.test>`,
/// and returns the message id.
pub fn assert_queued(reply: &str) -> String {
    let id = reply
        .strip_prefix("250 2.0.0 OK: queued as <")
        .and_then(|rest| rest.strip_suffix(&format!("@{MAILNAME}>")))
        .unwrap_or_else(|| panic!("not an accept reply: {reply:?}"));
    let parts: Vec<&str> = id.split('.').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "message id is not DIGITS.DIGITS.DIGITS: {reply:?}"
    );
    id.to_string()
}

pub fn assert_bounce(reply: &str) {
    assert!(
        BOUNCES.contains(&reply),
        "not one of the ten bounce replies: {reply:?}"
    );
}

/// Polls `done` every 10 ms until it holds (true) or `limit` passes (false).
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
