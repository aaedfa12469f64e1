//! A Postfix instance of a test's own: its configuration, queue, data and log in a scratch folder,
//! relaying everything to one loopback address, and stopped on drop. Nothing of the system's
//! Postfix (`/etc/postfix`, `/var/spool/postfix`, syslog) is read or written, and nothing listens
//! or resolves: mail goes in through `sendmail -C` and out to the relay host only.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{TempDir, require_program, run_with_input, run_with_limit, transcript, wait_for};

/// How long one `postfix` or `sendmail` command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// How long the master may take to exit after `postfix stop`.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// The services a relay-only Postfix needs, none of them chrooted (no copy of the system's files
/// to make) and all but the master unprivileged; `postlog` carries the log to `maillog_file`,
/// since there may be no syslog. No `inet` service: nothing listens.
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// `main.cf` for an instance in `dir` relaying to `relay`. Retries come seconds apart, so that a
/// test sees a deferred message delivered on its next attempt.
fn main_cf(dir: &Path, relay: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        "compatibility_level = 3.6
config_directory = {dir}/etc
queue_directory = {dir}/spool
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [{ip}]:{port}
smtp_host_lookup = native
smtp_dns_support_level = disabled
smtp_tls_security_level = none
alias_maps =
alias_database =
biff = no
minimal_backoff_time = 2s
maximal_backoff_time = 4s
queue_run_delay = 2s
",
        ip = relay.ip(),
        port = relay.port()
    )
}

/// One delivery attempt of one recipient, as Postfix logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub recipient: String,
    /// `sent`, `deferred`, `bounced`...
    pub status: String,
    /// The rest of the line after the status: the relay's reply or what went wrong.
    pub reason: String,
}

/// A running Postfix of the test's own; stopped on drop, however the test ends.
pub struct Postfix {
    dir: TempDir,
}

impl Postfix {
    /// Starts an instance that relays all mail to `relay` (`relayhost = [IP]:PORT`).
    pub fn start(relay: SocketAddr) -> Postfix {
        Postfix::start_with(relay, "")
    }

    /// Starts an instance that delivers all mail to `server` over LMTP.
    pub fn start_lmtp(server: SocketAddr) -> Postfix {
        let transport = format!(
            "default_transport = lmtp:inet:{}:{}\n",
            server.ip(),
            server.port()
        );
        Postfix::start_with(server, &transport)
    }

    /// Starts an instance relaying to `relay`, with `extra` lines at the end of its main.cf.
    fn start_with(relay: SocketAddr, extra: &str) -> Postfix {
        let postfix = require_program("postfix", "postfix");
        let dir = TempDir::new();
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).expect("create the config directory");
        let main = main_cf(dir.path(), relay) + extra;
        fs::write(etc.join("main.cf"), main).expect("write main.cf");
        fs::write(etc.join("master.cf"), MASTER_CF).expect("write master.cf");
        // `postfix` starts in the queue directory; `postfix start` makes what is inside it,
        // and the data directory, with the owners and modes it insists on.
        fs::create_dir(dir.path().join("spool")).expect("create the queue directory");
        let instance = Postfix { dir };
        let out = run_with_limit(
            Command::new(postfix).arg("-c").arg(&etc).arg("start"),
            COMMAND_LIMIT,
        );
        assert!(
            out.status.success(),
            "postfix start: {}\nlog:\n{}",
            transcript(&out),
            instance.log()
        );
        instance
    }

    fn config_directory(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Queues `message` (a whole message, headers and body, LF line ends) from `sender` to
    /// `recipients` with Postfix's own `sendmail`.
    pub fn send(&self, sender: &str, recipients: &[&str], message: &str) {
        let sendmail = require_program("sendmail", "postfix");
        let mut command = Command::new(sendmail);
        command
            .arg("-C")
            .arg(self.config_directory())
            .args(["-f", sender, "--"])
            .args(recipients);
        let out = run_with_input(&mut command, message.as_bytes(), COMMAND_LIMIT);
        assert!(out.status.success(), "sendmail: {}", transcript(&out));
    }

    /// Everything Postfix has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// The queue id Postfix gave the message with this `Message-ID` (without angle brackets),
    /// once its cleanup has logged it.
    pub fn queue_id(&self, message_id: &str) -> Option<String> {
        super::word_before(&self.log(), &format!(": message-id=<{message_id}>"))
    }

    /// Every delivery attempt logged for queue id `id`, oldest first.
    pub fn deliveries(&self, id: &str) -> Vec<Delivery> {
        let prefix = format!(" {id}: to=<");
        self.log()
            .lines()
            .filter_map(|line| parse_delivery(&line[line.find(&prefix)? + prefix.len()..]))
            .collect()
    }

    /// Waits up to `limit` until the deliveries of the message with `message_id` satisfy
    /// `done`, then returns them; fails with the whole log if they never do.
    pub fn wait_for_deliveries(
        &self,
        message_id: &str,
        limit: Duration,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        let finished = wait_for(limit, || {
            deliveries = match self.queue_id(message_id) {
                Some(id) => self.deliveries(&id),
                None => Vec::new(),
            };
            done(&deliveries)
        });
        assert!(
            finished,
            "the deliveries of <{message_id}> after {limit:?}: {deliveries:#?}\nlog:\n{}",
            self.log()
        );
        deliveries
    }

    /// `postfix stop`, then waits for the master to let go of its lock, so that no Postfix
    /// process outlives the test or writes into a folder being removed.
    fn stop(&self) {
        let Some(postfix) = find_postfix() else {
            return;
        };
        let etc = self.config_directory();
        let _ = Command::new(&postfix)
            .arg("-c")
            .arg(&etc)
            .arg("stop")
            .output();
        // `postfix status` asks the master's lock, which a zombie no longer holds: a master
        // that has exited counts as stopped even where nobody reaps it.
        wait_for(STOP_LIMIT, || {
            Command::new(&postfix)
                .arg("-c")
                .arg(&etc)
                .arg("status")
                .output()
                .is_ok_and(|out| !out.status.success())
        });
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `postfix` on PATH, without failing: a drop during a panic must not panic again.
fn find_postfix() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("postfix"))
        .find(|candidate| candidate.is_file())
}

/// `RECIPIENT>, relay=..., status=STATUS (REASON)`, the rest of a delivery line after `to=<`.
fn parse_delivery(rest: &str) -> Option<Delivery> {
    let (recipient, fields) = rest.split_once('>')?;
    let status_and_reason = &fields[fields.find(" status=")? + " status=".len()..];
    let (status, reason) = status_and_reason
        .split_once(' ')
        .unwrap_or((status_and_reason, ""));
    Some(Delivery {
        recipient: recipient.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
    })
}
