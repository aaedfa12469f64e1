//! An Exim of a test's own: its configuration, spool and logs in a scratch folder, one router that
//! hands everything to a smarthost on a loopback address, and no daemon: `send` delivers at once
//! (`-odi`) and `retry` runs the queue once, so the log is complete when either returns. Nothing
//! of a system Exim (`/etc/exim4`, `/var/spool/exim4`, `/var/log/exim4`) is read or written.
//!
//! Debian's Exim cannot be installed beside Postfix (each is the one mail-transport-agent), so
//! `.ci/exim-setup` unpacks its binary under `/opt/exim4`; an installed one is used where that is
//! missing.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{TempDir, run_with_input, run_with_limit, transcript};

/// Where `.ci/exim-setup` unpacks the binary, then where the package would put it.
const EXIM_PATHS: [&str; 2] = ["/opt/exim4/usr/sbin/exim4", "/usr/sbin/exim4"];

/// The user Debian's binary is built to run as (`EXIM_USER`): it writes the spool and the logs.
const EXIM_USER: &str = "Debian-exim";

/// How long one `exim` command may take, its deliveries included.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// The configuration of an instance in `dir` that sends everything to `smarthost`, BDAT
/// whenever the smarthost offers CHUNKING, never TLS. `exim_path` is the binary in use, so that
/// the copies Exim starts of itself (to send a bounce) find it; `keep_environment` is set, as
/// Exim warns in its log without it; the retry rule keeps a deferred message queued (with no
/// rule, Exim bounces on a temporary error).
fn configuration(exim: &Path, dir: &Path, smarthost: SocketAddr) -> String {
    let (exim, dir) = (exim.display(), dir.display());
    let (ip, port) = (smarthost.ip(), smarthost.port());
    format!(
        "exim_path = {exim}
primary_hostname = exim.test
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
keep_environment =

begin routers

smarthost:
  driver = manualroute
  route_list = * {ip}::{port} byname
  self = send
  transport = smarthost_smtp
  no_more

begin transports

smarthost_smtp:
  driver = smtp
  hosts_try_chunking = *
  hosts_avoid_tls = *
  allow_localhost

begin retry

* * F,1h,1m
"
    )
}

/// One line of Exim's main log about one recipient of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Exim's message id.
    pub id: String,
    /// `=>` delivered, `==` deferred, `**` bounced.
    pub mark: String,
    pub recipient: String,
    /// The rest of the line: router, transport, host, and the smarthost's reply.
    pub detail: String,
}

/// An Exim of the test's own; a folder and no process, so nothing to stop.
pub struct Exim {
    exim: PathBuf,
    dir: TempDir,
}

impl Exim {
    /// An instance that hands all mail to `smarthost`.
    pub fn new(smarthost: SocketAddr) -> Exim {
        let exim = find_exim();
        let dir = TempDir::new();
        // Exim drops to its user for `-C`, and so must be able to reach and write these.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("open the folder to Exim's user");
        let (uid, gid) = exim_user();
        for name in ["spool", "log"] {
            let sub = dir.path().join(name);
            fs::create_dir(&sub).unwrap_or_else(|e| panic!("create {}: {e}", sub.display()));
            chown(&sub, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to {EXIM_USER}: {e}", sub.display()));
        }
        dir.write("exim.conf", &configuration(&exim, dir.path(), smarthost));
        Exim { exim, dir }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.exim);
        command.arg("-C").arg(self.dir.path().join("exim.conf"));
        command
    }

    /// Submits `message` (headers and body, LF line ends) from `sender` to `recipients` and
    /// delivers it before returning (`-odi`).
    pub fn send(&self, sender: &str, recipients: &[&str], message: &str) {
        let mut command = self.command();
        command.args(["-odi", "-f", sender, "--"]).args(recipients);
        let out = run_with_input(&mut command, message.as_bytes(), COMMAND_LIMIT);
        assert!(
            out.status.success(),
            "exim: {}\nlog:\n{}",
            transcript(&out),
            self.log()
        );
    }

    /// One queue run over every waiting message, in the foreground, without waiting for their
    /// retry times (`-qf`).
    pub fn retry(&self) {
        let out = run_with_limit(self.command().arg("-qf"), COMMAND_LIMIT);
        assert!(
            out.status.success(),
            "exim -qf: {}\nlog:\n{}",
            transcript(&out),
            self.log()
        );
    }

    /// Everything Exim has logged so far: the main log, then the panic log if there is one.
    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join("log").join(name));
        let mut log = read("mainlog").unwrap_or_default();
        if let Ok(panic) = read("paniclog") {
            log.push_str("paniclog:\n");
            log.push_str(&panic);
        }
        log
    }

    /// The id Exim gave the message from `sender` (its `<=` line).
    pub fn message_id(&self, sender: &str) -> Option<String> {
        super::word_before(&self.log(), &format!(" <= {sender} "))
    }

    /// Every delivery, deferral and bounce logged for message `id`, oldest first.
    pub fn deliveries(&self, id: &str) -> Vec<Delivery> {
        self.log()
            .lines()
            .filter_map(|line| parse_delivery(id, line))
            .collect()
    }
}

/// `DATE TIME ID MARK RECIPIENT DETAIL`, when ID is `id` and MARK one of `=>`, `==`, `**`.
fn parse_delivery(id: &str, line: &str) -> Option<Delivery> {
    let mut fields = line.splitn(6, ' ').skip(2);
    if fields.next()? != id {
        return None;
    }
    let mark = fields.next()?;
    if !["=>", "==", "**"].contains(&mark) {
        return None;
    }
    Some(Delivery {
        id: id.to_owned(),
        mark: mark.to_owned(),
        recipient: fields.next()?.to_owned(),
        detail: fields.next().unwrap_or_default().to_owned(),
    })
}

/// The unpacked or installed Exim; fails, saying how to get one, when there is neither.
fn find_exim() -> PathBuf {
    EXIM_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no Exim at {}: run .ci/exim-setup (as root; it unpacks Debian's \
                 exim4-daemon-light beside Postfix)",
                EXIM_PATHS.join(" or ")
            )
        })
}

/// The uid and gid of `EXIM_USER`, from `id`, which asks NSS as Exim does.
fn exim_user() -> (u32, u32) {
    let number = |flag: &str| {
        let out = run_with_limit(Command::new("id").args([flag, EXIM_USER]), COMMAND_LIMIT);
        assert!(
            out.status.success(),
            "no user {EXIM_USER}, which Debian's Exim runs as: run .ci/exim-setup ({})",
            transcript(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("id {flag} {EXIM_USER} said {text:?}: {e}"))
    };
    (number("-u"), number("-g"))
}
