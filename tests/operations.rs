//! Running blackhole as a service: `workers = N` (a supervisor, restarts, SO_REUSEPORT, and
//! how evenly the workers share connections from many client addresses), SIGHUP, dropping
//! root (`user`/`group`), `-b` and its pidfile, bind errors, `-t`, and the exit codes of the
//! command line.
//!
//! Every process a test starts is killed when the test ends, however it ends: servers and
//! supervisors by their handle, workers and `-b` daemons by a scan of /proc for the test's own
//! config path (a temp dir of its own, so nothing else can match).
//!
//! The evenness measurement prints its distribution; to see it:
//! `cargo test --release --test operations -- --nocapture four_workers`.

mod common;

use std::collections::HashSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::procfs::{
    self, alive, all_pids, cmdline, kill_every_process_naming, listening_inodes, listens,
    socket_inodes, stat, status_line, workers_of,
};
use common::{
    Client, TempDir, assert_bounce, assert_queued, blackhole_bin, config_toml, free_port, greeted,
    greeted_from, require_program, run_blackhole, run_with_limit, send_signal, spawn_blackhole,
    wait_for, wait_with_limit,
};

/// How long a start, a restart or a reload may take before the test calls it stuck.
const SETTLE: Duration = Duration::from_secs(10);
/// "Promptly": how long a stop, or a command that only checks and exits, may take. Far more
/// than either needs, so that a loaded machine does not fail it: it catches a hang, not slowness.
const PROMPT: Duration = Duration::from_secs(10);
/// The user and group `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;

/// The soft limit on open files of this process is at least `wanted` (raised with `prlimit`
/// from util-linux where it is lower, e.g. a CI machine's 1024), so that the test can hold
/// that many connections itself.
fn ensure_descriptors(wanted: u64) {
    let soft = || procfs::open_files_limit(std::process::id()).0;
    if soft() >= wanted {
        return;
    }
    // Raising the hard limit takes CAP_SYS_RESOURCE, which a container may not grant.
    let hard = procfs::open_files_limit(std::process::id()).1;
    assert!(
        hard >= wanted,
        "this test holds {wanted} descriptors and the hard limit is {hard}: raise it \
         (ulimit -Hn {wanted}, or LimitNOFILE=)"
    );
    let prlimit = require_program("prlimit", "util-linux");
    let output = run_with_limit(
        Command::new(prlimit).args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={wanted}:{hard}"),
        ]),
        PROMPT,
    );
    assert!(
        output.status.success() && soft() >= wanted,
        "cannot raise this test's descriptor limit to {wanted}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A blackhole started in the foreground with a config of its own (in its own temp dir, with
/// its stderr in `stderr.log` there). On drop: killed, and so is every process still naming
/// its config (workers, a daemon).
struct Blackhole {
    child: Child,
    config: PathBuf,
    addr: SocketAddr,
    dir: TempDir,
}

impl Blackhole {
    /// Starts `blackhole -c CONFIG` on a free loopback port, with `extra_toml` in the config.
    /// Does not wait: see `wait_serving` and `wait_workers`.
    fn start(extra_toml: &str) -> Blackhole {
        let dir = TempDir::new();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let (child, config) = spawn_blackhole(&dir, &[], &addr.to_string(), extra_toml);
        Blackhole {
            child,
            config,
            addr,
            dir,
        }
    }

    /// A single-process server, once it listens (checked in /proc, without connecting).
    fn serving(extra_toml: &str) -> Blackhole {
        let mut server = Blackhole::start(extra_toml);
        let (pid, port) = (server.pid(), server.addr.port());
        server.wait_until("listening", || listens(pid, port));
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn marker(&self) -> String {
        self.config.display().to_string()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Replaces the config file (same listener), e.g. before a SIGHUP.
    fn rewrite_config(&self, extra_toml: &str) {
        fs::write(
            &self.config,
            config_toml(&self.addr.to_string(), extra_toml),
        )
        .expect("rewrite the config");
    }

    fn write_config_text(&self, text: &str) {
        fs::write(&self.config, text).expect("rewrite the config");
    }

    fn signal(&self, signal: &str) {
        send_signal(signal, self.pid());
    }

    /// Rewrites the config with `extra_toml`, which must make messages bounce, and sends
    /// SIGHUP. `serving` are the processes that serve: the server itself, or its workers, each
    /// of which reloads on its own. New connections, one message each, tell when the reload has
    /// happened: for up to `SETTLE`, until one served by each process has bounced. A process
    /// accepts until it reloads, and bounces from then on.
    fn reload_to_bounce(&self, extra_toml: &str, serving: &[u32]) {
        self.rewrite_config(extra_toml);
        self.signal("HUP");
        let mut reloaded = HashSet::new();
        let mut last = String::new();
        let all = wait_for(SETTLE, || {
            let (server, reply) = one_message_served(self.addr, serving);
            if reply.starts_with("250 ") {
                assert!(
                    !reloaded.contains(&server),
                    "process {server} bounced after SIGHUP, then accepted: {reply:?}"
                );
            } else {
                assert_bounce(&reply);
                reloaded.insert(server);
            }
            last = reply;
            reloaded.len() == serving.len()
        });
        assert!(
            all,
            "{SETTLE:?} after SIGHUP with {extra_toml:?}, only {reloaded:?} of {serving:?} \
             bounce (last reply {last:?}); stderr:\n{}",
            self.log()
        );
    }

    /// Waits up to `SETTLE` for `done`, failing if the process exits first or it never holds.
    fn wait_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let mut exited = None;
        let held = wait_for(SETTLE, || {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                exited = Some(status);
                return true;
            }
            done()
        });
        if let Some(status) = exited {
            panic!(
                "blackhole exited ({status}) while waiting for: {what}; stderr:\n{}",
                self.log()
            );
        }
        assert!(
            held,
            "not within {SETTLE:?}: {what}; stderr:\n{}",
            self.log()
        );
    }

    /// The supervisor's live worker processes, sorted.
    fn workers(&self) -> Vec<u32> {
        workers_of(self.pid())
    }

    /// Waits until the supervisor has exactly `count` workers, each listening; returns them.
    fn wait_workers(&mut self, count: usize) -> Vec<u32> {
        let (pid, port) = (self.pid(), self.addr.port());
        let mut found = Vec::new();
        self.wait_until(&format!("{count} workers, each listening"), || {
            found = Vec::new();
            let workers = workers_of(pid);
            if workers.len() == count && workers.iter().all(|&pid| listens(pid, port)) {
                found = workers;
                return true;
            }
            false
        });
        found
    }

    /// Sends `signal` and waits up to `limit` for the exit.
    fn stop(&mut self, signal: &str, limit: Duration) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(&format!("SIG{signal}"), limit)
    }

    /// Waits up to `limit` for the exit that `cause` (a signal already sent) should bring.
    fn wait_exit(&mut self, cause: &str, limit: Duration) -> ExitStatus {
        wait_with_limit(&mut self.child, limit).unwrap_or_else(|| {
            panic!(
                "blackhole still running {limit:?} after {cause}; stderr:\n{}",
                self.log()
            )
        })
    }

    fn greeted(&self) -> Client {
        greeted(self.addr)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_every_process_naming(&self.marker());
    }
}

/// Kills, on drop, every process still naming `marker` in its command line: for `-b`
/// daemons, which are no child of the test.
struct KillOnDrop {
    marker: String,
}

impl KillOnDrop {
    /// For the processes started with `config`.
    fn naming(config: &Path) -> KillOnDrop {
        KillOnDrop {
            marker: config.display().to_string(),
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_every_process_naming(&self.marker);
    }
}

// ---------------------------------------------------------------------------------------------
// SMTP

/// MAIL, RCPT, DATA and a short message on `client` (after its greeting); the final reply.
fn send_message(client: &mut Client) -> String {
    client.open_data();
    client.send(b"Subject: test\r\n\r\nHello.\r\n.\r\n");
    client.reply()
}

/// A new connection, one message, QUIT; the message's final reply.
fn one_message(addr: SocketAddr) -> String {
    let mut client = greeted(addr);
    let reply = send_message(&mut client);
    assert_eq!(client.command("QUIT"), "221 2.0.0 Goodbye");
    reply
}

/// Which of `serving` holds the server's end of `client`'s connection: the one with a socket
/// whose remote port is the client's local port. Waits up to `SETTLE` for exactly one.
fn serving_process(serving: &[u32], client: &Client) -> u32 {
    let port = client.stream().local_addr().expect("local_addr").port();
    let mut holders = Vec::new();
    let found = wait_for(SETTLE, || {
        holders = serving
            .iter()
            .copied()
            .filter(|&pid| {
                procfs::connections(pid)
                    .iter()
                    .any(|socket| socket.remote_port == port)
            })
            .collect();
        holders.len() == 1
    });
    assert!(
        found,
        "the connection from port {port} is held by {holders:?}, not by one of {serving:?}"
    );
    holders[0]
}

/// Like `one_message`, and which of `serving` served it.
fn one_message_served(addr: SocketAddr, serving: &[u32]) -> (u32, String) {
    let mut client = greeted_from(next_client(), addr);
    let server = serving_process(serving, &client);
    let reply = send_message(&mut client);
    assert_eq!(client.command("QUIT"), "221 2.0.0 Goodbye");
    (server, reply)
}

/// The next of 200 loopback client addresses, 127.0.0.2 on: workers take each client address
/// to one worker, so a test that must reach every worker comes from many addresses.
fn next_client() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 200;
    Ipv4Addr::new(127, 0, 0, 2 + n as u8)
}

/// New connections, one message each, every final reply checked by `check`: at least
/// `at_least` of them, and on until each of `serving` has served one (for up to `SETTLE`).
fn messages_until_each_served(
    addr: SocketAddr,
    serving: &[u32],
    at_least: usize,
    check: impl Fn(&str),
) {
    let mut served = HashSet::new();
    let mut sent = 0;
    // Each connection finds its worker in /proc/net/tcp, which is slow on a loaded machine:
    // the deadline is for the whole run of them, not for one.
    let each = wait_for(3 * SETTLE, || {
        let (server, reply) = one_message_served(addr, serving);
        check(&reply);
        served.insert(server);
        sent += 1;
        sent >= at_least && served.len() == serving.len()
    });
    assert!(
        each,
        "after {sent} connections in {:?}, only {served:?} of {serving:?} served one",
        3 * SETTLE
    );
}

/// The SIZE the EHLO reply advertises.
fn ehlo_size(client: &mut Client) -> u64 {
    let reply = client.command("EHLO client.example.com");
    reply
        .lines()
        .find_map(|line| line.strip_prefix("250-SIZE "))
        .and_then(|size| size.trim().parse().ok())
        .unwrap_or_else(|| panic!("no SIZE in the EHLO reply: {reply:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code of `output`, showing what the command said otherwise.
fn assert_exit(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: exit status {}; stdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn assert_stderr_names(output: &Output, needle: &str, what: &str) {
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(needle),
        "{what}: the message should name {needle:?}; stderr:\n{stderr}"
    );
}

fn assert_root() {
    assert_eq!(
        status_line(std::process::id(), "Uid").split(' ').nth(1),
        Some("0"),
        "these tests change user and so must run as root (they do in CI)"
    );
}

/// `setpriv` running COMMAND as nobody/nogroup with no supplementary groups and no
/// capabilities left.
fn as_nobody() -> Command {
    assert_root();
    let setpriv = require_program("setpriv", "util-linux");
    let mut command = Command::new(setpriv);
    command.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ]);
    command
}

/// A config file in a fresh temp dir (readable by everyone: TempDir is 0755, files 0644).
fn config_file(dir: &TempDir, listen: &str, extra_toml: &str) -> PathBuf {
    dir.write("blackhole.toml", &config_toml(listen, extra_toml))
}

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn nothing_listens(port: u16) -> bool {
    listening_inodes(port).is_empty()
        && TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_secs(1),
        )
        .is_err()
}

/// Waits up to `SETTLE` for `pidfile`, then asserts that it holds exactly `pid` and a newline.
/// The server writes a temp file and renames it, so the file is whole from the moment it
/// exists: whatever is read then is what the server meant.
fn assert_pidfile_holds(pidfile: &Path, pid: u32) {
    assert!(
        wait_for(SETTLE, || pidfile.exists()),
        "no pidfile {} within {SETTLE:?}",
        pidfile.display()
    );
    assert_eq!(
        fs::read_to_string(pidfile).ok(),
        Some(format!("{pid}\n")),
        "the pidfile {} should hold the pid {pid} and a newline",
        pidfile.display()
    );
}

/// The names of the files in `dir`, sorted: to see that no pidfile, nor a temp file on its
/// way to becoming one, is left behind.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list a temp dir")
        .map(|entry| {
            entry
                .expect("a temp dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// workers = N

#[test]
fn supervisor_starts_workers_restarts_a_killed_one_and_stops_them_on_sigterm() {
    let mut server = Blackhole::start("workers = 3");
    let workers = server.wait_workers(3);
    for &pid in &workers {
        let command = cmdline(pid);
        assert!(
            command.contains("--worker") && command.contains(&server.marker()),
            "worker {pid} should be `blackhole --worker -c CONFIG`: {command:?}"
        );
    }
    assert!(
        listens(server.pid(), server.addr.port()),
        "the supervisor holds every worker's listening socket"
    );
    for _ in 0..6 {
        assert_queued(&one_message(server.addr));
    }

    let victim = workers[1];
    send_signal("KILL", victim);
    let killed = Instant::now();
    let mut replaced = None;
    let restarted = wait_for(SETTLE, || {
        let now = server.workers();
        if now.len() == 3 && !now.contains(&victim) {
            replaced = Some((now, killed.elapsed()));
            return true;
        }
        false
    });
    assert!(
        restarted,
        "worker {victim} killed, not replaced within {SETTLE:?} (workers now {:?}); stderr:\n{}",
        server.workers(),
        server.log()
    );
    let (now, took) = replaced.expect("replaced");
    println!("worker {victim} killed with SIGKILL: a new worker ran after {took:?}");
    // The supervisor restarts within 100 ms; the rest is headroom for a loaded machine.
    assert!(
        took <= Duration::from_secs(3),
        "the killed worker was restarted only after {took:?} (at most 3 s)"
    );
    // Reaped before it was replaced: no zombie of it is left under the supervisor.
    assert!(
        stat(victim).is_none_or(|s| s.ppid != server.pid()),
        "the killed worker {victim} was not reaped"
    );
    for pid in workers.iter().filter(|&&pid| pid != victim) {
        assert!(
            now.contains(pid),
            "worker {pid} was not killed yet is gone: {now:?}"
        );
    }
    let after_restart = server.wait_workers(3);
    assert_eq!(after_restart, now, "the workers changed again");
    // The new worker serves, and so do the others.
    messages_until_each_served(server.addr, &after_restart, 6, |reply| {
        assert_queued(reply);
    });

    let asked = Instant::now();
    let status = server.stop("TERM", PROMPT);
    println!(
        "SIGTERM to the supervisor: exited {status} after {:?}",
        asked.elapsed()
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.log());
    for pid in workers.iter().chain(&after_restart) {
        assert!(
            !alive(*pid),
            "worker {pid} is still running after the supervisor exited"
        );
    }
    assert!(
        listening_inodes(server.addr.port()).is_empty(),
        "someone still listens on {} after the stop",
        server.addr
    );
}

#[test]
fn sigint_to_the_supervisor_stops_every_worker() {
    let mut server = Blackhole::start("workers = 2");
    let workers = server.wait_workers(2);
    assert_queued(&one_message(server.addr));
    let status = server.stop("INT", PROMPT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.log());
    for pid in workers {
        assert!(!alive(pid), "worker {pid} still running after SIGINT");
    }
    assert!(nothing_listens(server.addr.port()));
}

/// The evenness measurement: 1,000 idle connections from 200 client addresses to 4 workers,
/// which take each client address to one worker; each worker's share counted from its open
/// sockets in /proc/PID/fd.
#[test]
fn four_workers_share_the_connections_evenly() {
    const WORKERS: usize = 4;
    const CONNECTIONS: usize = 1000;
    ensure_descriptors(2048);
    let mut server = Blackhole::start(&format!("workers = {WORKERS}"));
    let workers = server.wait_workers(WORKERS);
    let sockets =
        |pids: &[u32]| -> Vec<usize> { pids.iter().map(|&pid| socket_inodes(pid).len()).collect() };
    // The baseline (listener, signal sockets): the same twice in a row, 100 ms apart. The
    // sleep is the measurement's interval, not a wait for something: the wait is `wait_for`.
    let mut baseline = sockets(&workers);
    assert!(
        wait_for(SETTLE, || {
            thread::sleep(Duration::from_millis(100));
            let again = sockets(&workers);
            let same = again == baseline;
            baseline = again;
            same
        }),
        "the workers' socket counts do not settle"
    );

    // Each connection reads its greeting: some worker has accepted it.
    let clients: Vec<Client> = (0..CONNECTIONS)
        .map(|_| greeted_from(next_client(), server.addr))
        .collect();
    let mut held = Vec::new();
    let counted = wait_for(SETTLE, || {
        held = sockets(&workers)
            .iter()
            .zip(&baseline)
            .map(|(now, base)| now.saturating_sub(*base))
            .collect();
        held.iter().sum::<usize>() == CONNECTIONS
    });
    println!("{CONNECTIONS} idle connections over {WORKERS} workers (SO_REUSEPORT):");
    for (pid, count) in workers.iter().zip(&held) {
        println!(
            "  worker {pid}: {count:4} connections, {:5.1}%",
            *count as f64 * 100.0 / CONNECTIONS as f64
        );
    }
    let (min, max) = (
        held.iter().min().copied().unwrap_or(0),
        held.iter().max().copied().unwrap_or(0),
    );
    println!(
        "  min {min}, max {max}, ideal {} each",
        CONNECTIONS / WORKERS
    );
    assert!(
        counted,
        "the workers hold {} connections between them, not {CONNECTIONS}: {held:?}",
        held.iter().sum::<usize>()
    );
    for (pid, count) in workers.iter().zip(&held) {
        let share = *count as f64 / CONNECTIONS as f64;
        assert!(
            (0.15..=0.35).contains(&share),
            "worker {pid} holds {count} of {CONNECTIONS} connections ({:.1}%, expected 15% to \
             35%): {held:?}",
            share * 100.0
        );
    }
    // Still serving with all of them open.
    assert_queued(&one_message(server.addr));
    drop(clients);
    assert_eq!(server.stop("TERM", PROMPT).code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// SIGHUP

#[test]
fn sighup_applies_the_new_config_to_open_and_new_connections() {
    let server = Blackhole::serving("mode = \"accept\"\nmax_message_size = 100000");
    let mut open = server.greeted();
    assert_eq!(ehlo_size(&mut open), 100000);
    assert_queued(&send_message(&mut open));

    server.reload_to_bounce(
        "mode = \"bounce\"\ntimeout = 5\nmax_message_size = 200000",
        &[server.pid()],
    );

    // The connection opened before the reload, still open, follows the new config.
    for _ in 0..5 {
        assert_bounce(&send_message(&mut open));
    }
    assert_eq!(ehlo_size(&mut open), 200000);
    assert_eq!(open.command("NOOP"), "250 2.0.0 OK");
    // New connections too.
    for _ in 0..5 {
        let mut client = server.greeted();
        assert_eq!(ehlo_size(&mut client), 200000);
        assert_bounce(&send_message(&mut client));
    }
    assert_eq!(open.command("QUIT"), "221 2.0.0 Goodbye");

    // timeout = 5: an idle connection is closed after 5 s, not the old 60. Timed from before
    // the connect, so that a slow greeting cannot make the close look early.
    let since = Instant::now();
    let mut idle = server.greeted();
    let timed_out = idle.reply_within(Duration::from_secs(30));
    let waited = since.elapsed();
    assert_eq!(
        timed_out.as_deref().ok(),
        Some("421 Timeout"),
        "an idle connection after the reload: {timed_out:?} after {waited:?}"
    );
    assert!(
        (Duration::from_millis(4500)..=Duration::from_secs(15)).contains(&waited),
        "timeout = 5 after the reload, yet the idle connection was closed after {waited:?}"
    );
    idle.expect_closed();
}

#[test]
fn sighup_with_a_config_that_does_not_parse_keeps_the_old_one() {
    let mut server = Blackhole::serving("mode = \"accept\"\nmax_message_size = 100000");
    let mut open = server.greeted();
    assert_eq!(ehlo_size(&mut open), 100000);
    assert_queued(&send_message(&mut open));
    let logged_before = server.log().len();

    server.write_config_text("mode = \"bounce\"\nthis is [not toml\n");
    server.signal("HUP");
    let (log_path, marker) = (server.log_path(), server.marker());
    server.wait_until(
        "a whole log line after the SIGHUP naming the config file that does not parse",
        || {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            log.get(logged_before..)
                .is_some_and(|said| said.contains(&marker) && said.ends_with('\n'))
        },
    );
    let log = server.log();
    println!(
        "logged on the bad SIGHUP: {:?}",
        log.get(logged_before..).unwrap_or_default()
    );

    // The old config goes on: the open connection, and new ones.
    for _ in 0..3 {
        assert_queued(&send_message(&mut open));
    }
    assert_eq!(ehlo_size(&mut open), 100000);
    for _ in 0..3 {
        assert_queued(&one_message(server.addr));
    }

    // And a good config on the next SIGHUP still applies.
    server.reload_to_bounce("mode = \"bounce\"", &[server.pid()]);
    assert_bounce(&send_message(&mut open));
    assert_eq!(open.command("QUIT"), "221 2.0.0 Goodbye");
}

#[test]
fn every_worker_draws_from_the_seed_the_supervisor_logged() {
    let mut server = Blackhole::start("workers = 2");
    let workers = server.wait_workers(2);
    let log = server.log();
    let seed = log
        .lines()
        .find_map(|line| line.split("replay a run with --seed ").nth(1))
        .unwrap_or_else(|| panic!("no seed in the supervisor's log:\n{log}"))
        .trim()
        .to_owned();
    for worker in workers {
        let args = cmdline(worker);
        assert!(
            args.contains(&format!(" --seed {seed} "))
                || args.ends_with(&format!(" --seed {seed}")),
            "worker {worker} runs `{args}`, not the logged seed {seed}"
        );
    }
    assert_eq!(
        log.matches("replay a run with --seed").count(),
        1,
        "one seed, logged once:\n{log}"
    );
}

#[test]
fn sighup_to_the_supervisor_reaches_the_workers() {
    let mut server = Blackhole::start("workers = 2\nmode = \"accept\"");
    let workers = server.wait_workers(2);
    for _ in 0..4 {
        assert_queued(&one_message(server.addr));
    }
    server.reload_to_bounce("workers = 2\nmode = \"bounce\"", &workers);
    // Both have reloaded: from now on every connection bounces, whichever worker takes it.
    messages_until_each_served(server.addr, &workers, 20, assert_bounce);
    // Reloaded in place: the same worker processes serve on, none was started again.
    let after = server.wait_workers(2);
    println!("workers before SIGHUP {workers:?}, after {after:?}");
    assert_eq!(
        after,
        workers,
        "SIGHUP replaced workers instead of reloading them; stderr:\n{}",
        server.log()
    );
    assert_eq!(server.stop("TERM", PROMPT).code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// user and group

#[test]
fn user_and_group_drop_root_and_every_supplementary_group() {
    assert_root();
    let mut server = Blackhole::serving("user = \"nobody\"\ngroup = \"nogroup\"");
    // A greeting and a message: the process serves, so it is past the switch.
    assert_queued(&one_message(server.addr));
    let pid = server.pid();
    let (uid, gid, groups) = (
        status_line(pid, "Uid"),
        status_line(pid, "Gid"),
        status_line(pid, "Groups"),
    );
    println!("serving process {pid}: Uid: {uid} / Gid: {gid} / Groups: {groups}");
    assert_eq!(uid, "65534 65534 65534 65534", "Uid: line");
    assert_eq!(gid, "65534 65534 65534 65534", "Gid: line");
    assert_eq!(
        groups, "65534",
        "Groups: line (supplementary groups dropped)"
    );
    let mut client = server.greeted();
    assert_queued(&send_message(&mut client));
    assert_eq!(server.stop("TERM", PROMPT).code(), Some(0));
}

#[test]
fn an_unknown_user_or_group_is_a_config_error() {
    let dir = TempDir::new();
    let listen = loopback(free_port());
    let cases = [
        ("user = \"nosuchperson4711\"", "user", "nosuchperson4711"),
        (
            "user = \"nobody\"\ngroup = \"nosuchclan4711\"",
            "group",
            "nosuchclan4711",
        ),
        ("group = \"nosuchclan4711\"", "group", "nosuchclan4711"),
    ];
    for (extra, option, name) in cases {
        let config = config_file(&dir, &listen, extra);
        let conf = config.to_str().expect("utf-8 path");
        for args in [vec!["-c", conf], vec!["-t", "-c", conf]] {
            let what = format!("{extra:?} with {args:?}");
            let output = run_blackhole(&args, PROMPT);
            assert_exit(&output, 64, &what);
            assert_stderr_names(&output, option, &what);
            assert_stderr_names(&output, name, &what);
        }
    }
    assert!(nothing_listens(listen_port(&listen)));
}

fn listen_port(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[test]
fn switching_user_without_the_right_exits_77() {
    let dir = TempDir::new();
    let port = free_port();
    let config = config_file(&dir, &loopback(port), "user = \"root\"");
    let _cleanup = KillOnDrop::naming(&config);
    let output = run_with_limit(
        as_nobody().arg(blackhole_bin()).arg("-c").arg(&config),
        PROMPT,
    );
    assert_exit(&output, 77, "user = \"root\" started as nobody");
    assert_stderr_names(&output, "user", "user = \"root\" started as nobody");
    assert!(nothing_listens(port));
}

// ---------------------------------------------------------------------------------------------
// -b

/// `blackhole.toml` in `dir`, listening on `port`, with `blackhole.pid` beside it as its
/// pidfile; and the guard that kills whatever runs with it.
fn config_with_pidfile(dir: &TempDir, port: u16) -> (PathBuf, PathBuf, KillOnDrop) {
    let pidfile = dir.path().join("blackhole.pid");
    let pidfile_line = format!("pidfile = \"{}\"", pidfile.display());
    let config = config_file(dir, &loopback(port), &pidfile_line);
    let guard = KillOnDrop::naming(&config);
    (config, pidfile, guard)
}

/// `blackhole -b -c CONFIG`: its output, and the pid it says it runs as.
fn start_background(config: &Path) -> (Output, Option<u32>) {
    let started = Instant::now();
    let output = run_blackhole(&["-b", "-c", config.to_str().expect("utf-8 path")], PROMPT);
    println!("blackhole -b returned after {:?}", started.elapsed());
    let pid = text(&output.stdout)
        .split("running in the background as process ")
        .nth(1)
        .and_then(|rest| {
            rest.split_whitespace()
                .next()
                .and_then(|pid| pid.parse().ok())
        });
    (output, pid)
}

#[test]
fn background_daemon_serves_from_its_own_session_and_cleans_up_on_sigterm() {
    let dir = TempDir::new();
    let port = free_port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (config, pidfile, _cleanup) = config_with_pidfile(&dir, port);
    let (output, pid) = start_background(&config);
    assert_exit(&output, 0, "blackhole -b");
    let pid = pid.unwrap_or_else(|| {
        panic!(
            "no \"running in the background as process PID\" on stdout: {:?}",
            text(&output.stdout)
        )
    });
    assert_pidfile_holds(&pidfile, pid);
    assert!(alive(pid), "the daemon {pid} is not running");
    assert!(
        cmdline(pid).contains(&config.display().to_string()),
        "process {pid} is not our daemon: {:?}",
        cmdline(pid)
    );
    let stat = stat(pid).expect("the daemon's /proc/PID/stat");
    assert_eq!(stat.tty_nr, 0, "the daemon has a controlling terminal");
    assert_eq!(stat.session, pid, "the daemon should lead its own session");
    assert!(listens(pid, port), "the daemon does not hold the listener");
    assert_queued(&one_message(addr));
    let mut client = greeted(addr);
    assert_queued(&send_message(&mut client));
    assert_eq!(client.command("QUIT"), "221 2.0.0 Goodbye");

    send_signal("TERM", pid);
    assert!(
        wait_for(PROMPT, || !alive(pid)),
        "the daemon {pid} still runs {PROMPT:?} after SIGTERM"
    );
    assert_eq!(
        files_in(dir.path()),
        ["blackhole.toml"],
        "the pidfile, or a temp file of it, is left after a clean stop"
    );
    assert!(nothing_listens(port));
}

#[test]
fn a_second_start_on_the_same_pidfile_is_refused() {
    let dir = TempDir::new();
    let (port, other_port) = (free_port(), free_port());
    let (config, pidfile, _first) = config_with_pidfile(&dir, port);
    // Another port: only the pidfile stands in the way of the second start.
    let second = dir.write(
        "second.toml",
        &config_toml(
            &loopback(other_port),
            &format!("pidfile = \"{}\"", pidfile.display()),
        ),
    );
    let _second = KillOnDrop::naming(&second);
    let (output, pid) = start_background(&config);
    assert_exit(&output, 0, "the first blackhole -b");
    let pid = pid.expect("the first daemon's pid on stdout");
    assert!(alive(pid));
    // The second start must find the first one's pidfile, so it has to be there first.
    assert_pidfile_holds(&pidfile, pid);

    let background = run_blackhole(&["-b", "-c", second.to_str().expect("utf-8")], PROMPT);
    let foreground = run_blackhole(&["-c", second.to_str().expect("utf-8")], PROMPT);
    for (output, what) in [
        (&background, "a second -b start on the same pidfile"),
        (&foreground, "a foreground start on the same pidfile"),
    ] {
        assert_exit(output, 77, what);
        assert_stderr_names(output, &pidfile.display().to_string(), what);
        assert!(
            !text(&output.stdout).contains("running in the background"),
            "{what}: {:?}",
            text(&output.stdout)
        );
    }
    assert!(nothing_listens(other_port));
    // Unchanged by the refused starts, and no temp file of theirs left beside it.
    assert_pidfile_holds(&pidfile, pid);
    assert_eq!(
        files_in(dir.path()),
        ["blackhole.pid", "blackhole.toml", "second.toml"],
        "files beside the pidfile after the refused starts"
    );
    assert!(alive(pid), "the first daemon died");
    assert_queued(&one_message(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    send_signal("TERM", pid);
    assert!(
        wait_for(PROMPT, || !alive(pid)),
        "the daemon ignored SIGTERM"
    );
}

#[test]
fn a_bind_error_under_background_is_reported_by_the_command() {
    let dir = TempDir::new();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a port");
    let port = taken.local_addr().expect("local_addr").port();
    let (config, _, _cleanup) = config_with_pidfile(&dir, port);
    let (output, pid) = start_background(&config);
    assert_exit(&output, 77, "blackhole -b on a port in use");
    assert_stderr_names(&output, &loopback(port), "blackhole -b on a port in use");
    assert_eq!(pid, None, "it says it runs in the background");
    assert_eq!(
        files_in(dir.path()),
        ["blackhole.toml"],
        "a pidfile, or a temp file of it, was written"
    );
    // The command has returned, so every process it started exists by now: any still there
    // after the wait is left running.
    let marker = config.display().to_string();
    let ours = || -> Vec<u32> {
        all_pids()
            .into_iter()
            .filter(|&p| alive(p) && cmdline(p).contains(&marker))
            .collect()
    };
    assert!(
        wait_for(PROMPT, || ours().is_empty()),
        "blackhole processes left running: {:?}",
        ours()
    );
}

// ---------------------------------------------------------------------------------------------
// Bind errors

#[test]
fn a_port_in_use_exits_77_naming_the_address() {
    let dir = TempDir::new();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a port");
    let port = taken.local_addr().expect("local_addr").port();
    for extra in ["", "workers = 2"] {
        let config = config_file(&dir, &loopback(port), extra);
        let _cleanup = KillOnDrop::naming(&config);
        let what = format!("a port in use, config {extra:?}");
        let output = run_blackhole(&["-c", config.to_str().expect("utf-8")], PROMPT);
        assert_exit(&output, 77, &what);
        assert_stderr_names(&output, &loopback(port), &what);
    }
}

#[test]
fn a_second_server_on_a_running_servers_port_exits_77_and_the_first_serves_on() {
    // The first server single or with workers (whose sockets share their port with any
    // process that asks for SO_REUSEPORT), the second likewise: each pair must refuse.
    for first_extra in ["", "workers = 2"] {
        let mut first = Blackhole::start(first_extra);
        let holders = if first_extra.is_empty() {
            let (pid, port) = (first.pid(), first.addr.port());
            first.wait_until("listening", || listens(pid, port));
            vec![pid]
        } else {
            first.wait_workers(2)
        };
        let port = first.addr.port();
        let dir = TempDir::new();
        for extra in ["", "workers = 2"] {
            let config = config_file(&dir, &loopback(port), extra);
            let _cleanup = KillOnDrop::naming(&config);
            let what =
                format!("a second server ({extra:?}) on the port of a first one ({first_extra:?})");
            let output = run_blackhole(&["-c", config.to_str().expect("utf-8")], PROMPT);
            assert_exit(&output, 77, &what);
            assert_stderr_names(&output, &loopback(port), &what);
        }
        // The first server alone still holds the port, and serves.
        let theirs: HashSet<u64> = holders.iter().flat_map(|&pid| socket_inodes(pid)).collect();
        let listening = listening_inodes(port);
        assert!(
            !listening.is_empty() && listening.is_subset(&theirs),
            "listeners on {port} not the first server's: {listening:?} (its sockets {theirs:?})"
        );
        assert_queued(&one_message(first.addr));
    }
}

#[test]
fn a_port_below_1024_without_the_right_exits_77() {
    let dir = TempDir::new();
    let config = config_file(&dir, "127.0.0.1:25", "");
    let _cleanup = KillOnDrop::naming(&config);
    let output = run_with_limit(
        as_nobody().arg(blackhole_bin()).arg("-c").arg(&config),
        PROMPT,
    );
    assert_exit(&output, 77, "listen 127.0.0.1:25 as nobody");
    assert_stderr_names(&output, "127.0.0.1:25", "listen 127.0.0.1:25 as nobody");
    assert!(
        !text(&output.stderr).to_lowercase().contains("in use"),
        "as nobody, port 25 should be refused for want of the right: {}",
        text(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// -t

#[test]
fn test_flag_checks_without_serving() {
    let dir = TempDir::new();
    let port = free_port();
    let listen = loopback(port);

    let bad_option = config_file(&dir, &listen, "no_such_option = 1");
    let output = run_blackhole(&["-t", "-c", bad_option.to_str().expect("utf-8")], PROMPT);
    assert_exit(&output, 64, "-t, an unknown option");
    assert_stderr_names(&output, "no_such_option", "-t, an unknown option");
    assert_stderr_names(
        &output,
        &bad_option.display().to_string(),
        "-t, an unknown option",
    );

    let bad_value = dir.write(
        "bad-value.toml",
        &config_toml(&listen, "mode = \"sideways\""),
    );
    let output = run_blackhole(&["-t", "-c", bad_value.to_str().expect("utf-8")], PROMPT);
    assert_exit(&output, 64, "-t, a bad mode");
    assert_stderr_names(&output, "mode", "-t, a bad mode");
    assert_stderr_names(&output, &bad_value.display().to_string(), "-t, a bad mode");

    let unknown_user = dir.write(
        "unknown-user.toml",
        &config_toml(&listen, "user = \"nosuchperson4711\""),
    );
    let output = run_blackhole(
        &["--test", "-c", unknown_user.to_str().expect("utf-8")],
        PROMPT,
    );
    assert_exit(&output, 64, "--test, an unknown user");
    assert_stderr_names(&output, "user", "--test, an unknown user");

    // Every kind of option set, listener flags too, so that -t has all of them to check.
    let pidfile = dir.path().join("blackhole.pid");
    let good = dir.write(
        "good.toml",
        &config_toml(
            &format!("{listen} mode=bounce delay=1"),
            &format!(
                "pidfile = \"{}\"\nuser = \"nobody\"\ngroup = \"nogroup\"\nworkers = 2\n\
                 mode = \"random\"\ntimeout = 30\ndelay = \"1-2\"\nmax_message_size = 1000\n\
                 dynamic_switch = false",
                pidfile.display()
            ),
        ),
    );
    let _cleanup = KillOnDrop::naming(&good);
    let started = Instant::now();
    let output = run_blackhole(&["-t", "-c", good.to_str().expect("utf-8")], PROMPT);
    println!("-t on a good config took {:?}", started.elapsed());
    assert_exit(&output, 0, "-t, a good config");
    assert!(
        nothing_listens(port),
        "-t left something listening on {listen}"
    );
    assert_eq!(
        files_in(dir.path()),
        [
            "bad-value.toml",
            "blackhole.toml",
            "good.toml",
            "unknown-user.toml"
        ],
        "-t wrote a file (the pidfile, or a temp file of it)"
    );
}

#[test]
fn test_flag_checks_rules() {
    let dir = TempDir::new();
    let listen = loopback(free_port());

    let bad = dir.write(
        "bad-rule.toml",
        &config_toml(
            &listen,
            "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 No such user\"\n\
             [[rule]]\nname = \"slow rcpt\"\non = \"rcpt\"\ndelay = 700",
        ),
    );
    let output = run_blackhole(&["-t", "-c", bad.to_str().expect("utf-8")], PROMPT);
    assert_exit(&output, 64, "-t, a rule with too long a delay");
    let expected = format!(
        "{}: rule 2 (\"slow rcpt\"), option `delay`: `700` is too long a delay: at most 600 \
         seconds",
        bad.display()
    );
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("rule 2"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line naming the rule; stderr:\n{stderr}"
    );
    assert!(lines[0].ends_with(&expected), "{stderr}");

    let good = dir.write(
        "good-rule.toml",
        &config_toml(
            &format!("{listen} mode=bounce"),
            &format!(
                "[[rule]]\nname = \"slow rcpt\"\non = \"rcpt\"\ndelay = \"0.5-600\"\n\
                 match = \"*@example.com\"\nclient = [\"127.0.0.0/8\", \"::1\"]\n\
                 listener = \"{listen}\"\nprobability = 0.5\nfirst = 3\nevery = 2\n\
                 rate = \"10/60\"\nreply = \"450 4.2.0 Try later\"\nthrottle = 1000\n\
                 [[rule]]\non = \"message\"\ndisconnect = \"421\"\nafter_bytes = 100"
            ),
        ),
    );
    let output = run_blackhole(&["-t", "-c", good.to_str().expect("utf-8")], PROMPT);
    assert_exit(&output, 0, "-t, good rules");
}

// ---------------------------------------------------------------------------------------------
// The command line's exit codes

#[test]
fn an_unknown_argument_exits_64() {
    for args in [&["--no-such-flag"][..], &["-x"], &["-t", "extra-word"]] {
        let output = run_blackhole(args, PROMPT);
        let what = format!("blackhole {args:?}");
        assert_exit(&output, 64, &what);
        assert!(!output.stderr.is_empty(), "{what}: no message");
    }
}

#[test]
fn help_and_version_exit_0() {
    for flag in ["-v", "--version"] {
        let output = run_blackhole(&[flag], PROMPT);
        assert_exit(&output, 0, flag);
        assert_eq!(
            text(&output.stdout),
            format!("blackhole {}\n", env!("CARGO_PKG_VERSION")),
            "blackhole {flag}"
        );
        assert_eq!(text(&output.stderr), "", "blackhole {flag}");
    }
    for flag in ["-h", "--help"] {
        let output = run_blackhole(&[flag], PROMPT);
        assert_exit(&output, 0, flag);
        let stdout = text(&output.stdout);
        assert!(
            stdout.contains("Usage: blackhole "),
            "blackhole {flag}: no usage line:\n{stdout}"
        );
        for option in [
            "-c, --conf",
            "-t, --test",
            "-d, --debug",
            "-b, --background",
            "-q, --quiet",
            "-ls, --less-secure",
            "-v, --version",
            "-h, --help",
        ] {
            assert!(
                stdout.contains(option),
                "blackhole {flag} does not name {option}:\n{stdout}"
            );
        }
        assert_eq!(text(&output.stderr), "", "blackhole {flag}");
    }
}

#[test]
fn quiet_silences_warnings_and_less_secure_is_accepted() {
    let dir = TempDir::new();
    // `tls_dhparams` is accepted and unused: a warning, which -q must silence.
    let config = config_file(
        &dir,
        &loopback(free_port()),
        "tls_dhparams = \"/nonexistent/dhparams.pem\"",
    );
    let conf = config.to_str().expect("utf-8 path");
    let warned = run_blackhole(&["-t", "-c", conf], PROMPT);
    assert_exit(&warned, 0, "-t with tls_dhparams");
    assert_stderr_names(&warned, "tls_dhparams", "-t with tls_dhparams");
    for quiet in ["-q", "--quiet"] {
        let output = run_blackhole(&[quiet, "-t", "-c", conf], PROMPT);
        assert_exit(&output, 0, quiet);
        assert_eq!(
            text(&output.stderr),
            "",
            "{quiet} should silence the warning"
        );
    }
    for less_secure in ["-ls", "--less-secure"] {
        let output = run_blackhole(&[less_secure, "-t", "-c", conf], PROMPT);
        assert_exit(&output, 0, less_secure);
        assert_stderr_names(&output, "-ls has no effect", less_secure);
    }
}

#[test]
fn help_config_names_every_option() {
    let output = run_blackhole(&["--help-config"], PROMPT);
    assert_exit(&output, 0, "--help-config");
    let stdout = text(&output.stdout);
    let words: HashSet<&str> = stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    for option in [
        "listen",
        "tls_listen",
        "tls_cert",
        "tls_key",
        "tls_dhparams",
        "user",
        "group",
        "pidfile",
        "timeout",
        "delay",
        "mode",
        "max_message_size",
        "dynamic_switch",
        "workers",
        "mailname",
        "max_connections",
    ] {
        assert!(
            words.contains(option),
            "--help-config does not name `{option}`:\n{stdout}"
        );
    }
}

#[test]
fn print_systemd_unit_exits_0_with_a_unit() {
    let output = run_blackhole(&["--print-systemd-unit"], PROMPT);
    assert_exit(&output, 0, "--print-systemd-unit");
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ExecStart=") && l.contains("blackhole")),
        "no ExecStart= running blackhole:\n{stdout}"
    );
    assert!(
        lines.contains(&"AmbientCapabilities=CAP_NET_BIND_SERVICE"),
        "no AmbientCapabilities=CAP_NET_BIND_SERVICE:\n{stdout}"
    );
    assert!(
        lines.contains(&"[Service]"),
        "no [Service] section:\n{stdout}"
    );
}

#[test]
fn a_restarted_worker_keeps_the_running_configuration() {
    let mut server = Blackhole::start("workers = 2");
    let workers = server.wait_workers(2);
    // The file now names another port: a worker started again must not bind it.
    let other = free_port();
    server.write_config_text(&config_toml(&loopback(other), "workers = 2"));
    let victim = workers[0];
    send_signal("KILL", victim);
    let (supervisor, port) = (server.pid(), server.addr.port());
    let mut restarted = Vec::new();
    server.wait_until("2 workers again, the killed one replaced", || {
        restarted = workers_of(supervisor);
        restarted.len() == 2 && !restarted.contains(&victim)
    });
    assert!(
        restarted.contains(&workers[1]),
        "the worker not killed was replaced too: before {workers:?}, now {restarted:?}"
    );
    let new = *restarted
        .iter()
        .find(|&&pid| pid != workers[1])
        .expect("the new worker");
    server.wait_until("the new worker listening", || listens(new, port));
    assert!(
        !listens(new, other),
        "the restarted worker bound the edited file's port {other}"
    );
    assert_queued(&one_message(server.addr));
}

#[test]
fn workers_that_dropped_root_die_with_a_killed_supervisor() {
    assert_root();
    let mut server = Blackhole::start("workers = 2\nuser = \"nobody\"\ngroup = \"nogroup\"");
    let workers = server.wait_workers(2);
    let port = server.addr.port();
    for &pid in &workers {
        server.wait_until("a worker serving as nobody", || {
            listens(pid, port) && status_line(pid, "Uid").contains("65534")
        });
    }
    send_signal("KILL", server.pid());
    let gone = wait_for(SETTLE, || workers.iter().all(|&pid| !alive(pid)));
    assert!(
        gone,
        "workers {workers:?} outlived their supervisor (still alive: {:?})",
        workers.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
}

#[test]
fn sigterm_sends_a_delayed_reply_at_once() {
    let pid_dir = TempDir::new();
    let pidfile = pid_dir.path().join("blackhole.pid");
    let mut server =
        Blackhole::serving(&format!("delay = 30\npidfile = \"{}\"", pidfile.display()));
    // A single process, in the foreground: its own pid, removed again at the clean exit.
    assert_pidfile_holds(&pidfile, server.pid());
    let mut client = greeted(server.addr);
    // Pipelined: only the final reply after the data waits for the delay.
    client.send(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    for expected in [
        "250 OK",
        "250 2.1.0 OK",
        "250 2.1.5 OK",
        "354 End data with <CR><LF>.<CR><LF>",
    ] {
        assert_eq!(client.reply(), expected);
    }
    client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    // The silence is what is tested here: the delay holds the reply back.
    client.expect_silence(Duration::from_millis(300));
    server.signal("TERM");
    // Well within the 30 s delay, with room for a loaded machine.
    let reply = client
        .reply_within(Duration::from_secs(10))
        .expect("the delayed reply after SIGTERM");
    assert_queued(&reply);
    client.expect_closed();
    // That one SIGTERM is enough: nothing pending is left to hold the exit up.
    let status = server.wait_exit("SIGTERM", PROMPT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.log());
    assert_eq!(
        files_in(pid_dir.path()),
        Vec::<String>::new(),
        "the pidfile, or a temp file of it, is left after a clean stop"
    );
}
