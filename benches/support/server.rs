//! Starting and stopping the servers under test, and reading them through /proc.
//!
//! Each start is fresh (a new process, a new free port on 127.0.0.1, for blackhole a config
//! of its own in a scratch folder), so no measurement inherits another's connections or
//! grown tables. The time from spawn to the port accepting a connection is measured on every
//! start. Stopping is by the process id we started, never by name.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::procfs;

pub const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
pub const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

/// How long a server may take to listen before the start counts as failed.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How often the port is tried while a server starts: fine enough to time a start of a few
/// milliseconds, coarse enough not to take a CPU from the server that is starting.
const START_POLL: Duration = Duration::from_micros(100);

/// The blackhole binary to measure: `BLACKHOLE_BENCH_BIN` if set (to compare builds), else
/// the release build `cargo bench` has just made of this package.
pub fn blackhole_binary() -> PathBuf {
    std::env::var_os("BLACKHOLE_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_blackhole")))
}

/// [`blackhole_binary`] if it is there; else `None`, with a line on stderr from `bench` (the
/// bench's name) saying how to build it.
pub fn built_blackhole(bench: &str) -> Option<PathBuf> {
    let binary = blackhole_binary();
    if binary.is_file() {
        return Some(binary);
    }
    eprintln!(
        "{bench} bench: {} not found: run `cargo build --release` (or `cargo bench`, which \
         builds it)",
        binary.display()
    );
    None
}

/// Whether Postfix's test programs are installed (and not turned off with
/// `BLACKHOLE_BENCH_NO_POSTFIX=1`, which runs the bench as a machine without them would).
pub fn postfix_available() -> bool {
    !postfix_turned_off() && Path::new(SMTP_SINK).is_file() && Path::new(SMTP_SOURCE).is_file()
}

pub fn postfix_turned_off() -> bool {
    std::env::var("BLACKHOLE_BENCH_NO_POSTFIX").is_ok_and(|v| v == "1")
}

/// A loopback port that was free a moment ago (the OS picked it, and we let it go).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A folder for one server's config and log (or for files a test makes, such as a
/// certificate), removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new() -> io::Result<ScratchDir> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "blackhole-bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// From spawn to the first accepted connection.
    pub listening_after: Duration,
    child: Child,
    dir: ScratchDir,
}

impl Server {
    /// blackhole on a free port with `timeout = 180` (nothing may time out while the idle
    /// tests hold their connections), `-q` as servers/blackhole.sh runs it.
    pub fn blackhole(binary: &Path) -> io::Result<Server> {
        Server::blackhole_with(binary, "")
    }

    /// `blackhole`, with `extra_toml` (tables such as `[[rule]]` included) after its options.
    pub fn blackhole_with(binary: &Path, extra_toml: &str) -> io::Result<Server> {
        Server::blackhole_listening(binary, &[], extra_toml)
    }

    /// `blackhole_with`, with `more` listeners (each a whole `listen` entry, flags and all)
    /// after the one on a free port, which is probed.
    pub fn blackhole_listening(
        binary: &Path,
        more: &[String],
        extra_toml: &str,
    ) -> io::Result<Server> {
        let port = free_port()?;
        let listeners: Vec<String> = std::iter::once(format!("\"127.0.0.1:{port}\""))
            .chain(more.iter().map(|entry| format!("{entry:?}")))
            .collect();
        let options = format!("listen = [{}]\n{extra_toml}", listeners.join(", "));
        Server::blackhole_configured(binary, port, &options, &greet_and_quit)
    }

    /// blackhole as `blackhole` starts it, but listening only for SMTPS: one `tls_listen`
    /// listener on a free port with `cert` and `key`. `probe` takes the first connection
    /// that succeeds (plain TCP, to the SMTPS port) through its handshake, greeting and QUIT.
    pub fn blackhole_tls(
        binary: &Path,
        cert: &Path,
        key: &Path,
        probe: &dyn Fn(TcpStream) -> io::Result<()>,
    ) -> io::Result<Server> {
        let port = free_port()?;
        let options = format!(
            "listen = []\ntls_listen = [\"127.0.0.1:{port}\"]\ntls_cert = {}\ntls_key = {}\n",
            toml_string(cert)?,
            toml_string(key)?
        );
        Server::blackhole_configured(binary, port, &options, probe)
    }

    /// blackhole run `-q` on a config of `options` (its listeners among them, `port` the one
    /// `probe` takes) with `timeout = 180` and the bench's mailname.
    fn blackhole_configured(
        binary: &Path,
        port: u16,
        options: &str,
        probe: &dyn Fn(TcpStream) -> io::Result<()>,
    ) -> io::Result<Server> {
        let dir = ScratchDir::new()?;
        let config = dir.0.join("blackhole.toml");
        fs::write(
            &config,
            format!("timeout = 180\nmailname = \"bench.local\"\n{options}"),
        )?;
        let mut command = Command::new(binary);
        command.arg("-q").arg("-c").arg(&config);
        Server::start("blackhole", command, port, dir, probe)
    }

    /// Postfix smtp-sink as /work/shared/bench/servers/smtp-sink.sh runs it: no cap on
    /// simultaneous connections below ours, a command timeout longer than any test, a
    /// backlog of 4096.
    pub fn smtp_sink() -> io::Result<Server> {
        let dir = ScratchDir::new()?;
        let port = free_port()?;
        let mut command = Command::new(SMTP_SINK);
        if procfs::running_as_root() {
            // smtp-sink refuses to run as root without a user to switch to.
            command.args(["-u", "nobody"]);
        }
        command
            .args(["-m", "50000", "-t", "300"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("4096");
        Server::start("smtp-sink", command, port, dir, &greet_and_quit)
    }

    fn start(
        name: &'static str,
        mut command: Command,
        port: u16,
        dir: ScratchDir,
        probe: &dyn Fn(TcpStream) -> io::Result<()>,
    ) -> io::Result<Server> {
        // A file, not a pipe: nobody reads a pipe during the run, and a full one would stall
        // the server.
        let log = fs::File::create(dir.0.join("server.log"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let spawned_at = Instant::now();
        let child = command.spawn()?;
        let mut server = Server {
            name,
            addr,
            listening_after: Duration::ZERO,
            child,
            dir,
        };
        let first = server.wait_until_listening(spawned_at)?;
        server.listening_after = spawned_at.elapsed();
        probe(first).map_err(|e| server.failure(&format!("first connection failed: {e}")))?;
        Ok(server)
    }

    fn wait_until_listening(&mut self, spawned_at: Instant) -> io::Result<TcpStream> {
        loop {
            match TcpStream::connect(self.addr) {
                Ok(stream) => return Ok(stream),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(self.failure(&format!("exited ({status}) before listening")));
            }
            if spawned_at.elapsed() > START_LIMIT {
                return Err(self.failure("did not listen within 10 s"));
            }
            thread::sleep(START_POLL);
        }
    }

    /// An error naming the server and carrying the end of its log.
    fn failure(&self, what: &str) -> io::Error {
        let log = fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "{} on {}: {what}; its log ends:\n{}",
            self.name,
            self.addr,
            tail.join("\n")
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu_seconds(&self) -> f64 {
        procfs::cpu_seconds(self.pid())
    }

    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid())
    }

    pub fn context_switches(&self) -> u64 {
        procfs::context_switches(self.pid())
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (a clean stop), then SIGKILL if it has not exited within 5 s.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        // Std cannot send SIGTERM; the shell's builtin kill is everywhere.
        let _ = Command::new("sh")
            .args(["-c", "kill -s TERM \"$1\"", "sh", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `path` as a TOML basic string.
fn toml_string(path: &Path) -> io::Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| io::Error::other(format!("{} is not UTF-8", path.display())))?;
    Ok(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Reads the 220 on the connection that proved the server listens, and says goodbye.
fn greet_and_quit(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut greeting = [0u8; 512];
    let n = stream.read(&mut greeting)?;
    if !greeting[..n].starts_with(b"220") {
        return Err(io::Error::other(format!(
            "greeting {:?}",
            String::from_utf8_lossy(&greeting[..n])
        )));
    }
    stream.write_all(b"QUIT\r\n")?;
    let _ = stream.read(&mut greeting);
    Ok(())
}
