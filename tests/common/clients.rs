//! The real mail clients, run to their end against a test server: Python's smtplib (through
//! tests/clients/smtplib_client.py), curl and swaks. Each runs plaintext, SMTPS or STARTTLS;
//! inside TLS each trusts the test's own certificate as its only root, so it checks what the
//! server sends. A missing client is a failure, not a skip (see `require_program`).

use super::{Server, TempDir, require_perl_module, require_program, run_with_limit};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// How long a real client may take for its whole run.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// How a client talks to the server: in plaintext, in TLS from the first byte (SMTPS), or in
/// plaintext until STARTTLS; `ca` is the certificate it trusts as its only root.
#[derive(Clone, Copy, Debug)]
pub enum Transport<'a> {
    Plain,
    Smtps { ca: &'a Path },
    Starttls { ca: &'a Path },
}

/// Where a client connects, and how.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub addr: SocketAddr,
    pub transport: Transport<'a>,
}

impl Server {
    /// The server's listener, in plaintext.
    pub fn target(&self) -> Target<'static> {
        Target {
            addr: self.addr(),
            transport: Transport::Plain,
        }
    }
}

/// Runs tests/clients/smtplib_client.py against `target` with `args` (see its usage).
pub fn smtplib(target: Target, args: &[&str]) -> Output {
    let python = require_program("python3", "python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtplib_client.py");
    let mut command = Command::new(python);
    command.arg(script).arg(target.addr.port().to_string());
    match target.transport {
        Transport::Plain => {}
        Transport::Smtps { ca } => {
            command.arg("smtps").arg(ca);
        }
        Transport::Starttls { ca } => {
            command.arg("starttls").arg(ca);
        }
    }
    run_with_limit(command.args(args), CLIENT_LIMIT)
}

/// Runs curl (verbose, so the dialogue is in the transcript) to send one message to `target`,
/// plus `extra_args`: `smtp://`, `smtps://`, or `smtp://` with `--ssl-reqd` (STARTTLS, or fail).
pub fn curl(target: Target, extra_args: &[&str]) -> Output {
    let curl = require_program("curl", "curl");
    let files = TempDir::new();
    let message = files.write(
        "message.eml",
        "From: a@example.com\r\nTo: b@example.net\r\nSubject: curl\r\n\r\nSent by curl.\r\n",
    );
    let (scheme, ca, way_args): (_, _, &[&str]) = match target.transport {
        Transport::Plain => ("smtp", None, &[]),
        Transport::Smtps { ca } => ("smtps", Some(ca), &[]),
        Transport::Starttls { ca } => ("smtp", Some(ca), &["--ssl-reqd"]),
    };
    let mut command = Command::new(curl);
    command.args(["-v", "--max-time", "20"]);
    if let Some(ca) = ca {
        command.arg("--cacert").arg(ca);
    }
    command
        .arg(format!("{scheme}://{}", target.addr))
        .args(way_args)
        .args(["--mail-from", "a@example.com"])
        .args(["--mail-rcpt", "b@example.net"])
        .arg("-T")
        .arg(&message)
        .args(extra_args);
    run_with_limit(&mut command, CLIENT_LIMIT)
}

/// Runs swaks to send one message to `target`, plus `extra_args`: `--tlsc` for SMTPS, `--tls`
/// for STARTTLS, either with `--tls-verify` (swaks checks no certificate unless asked).
pub fn swaks(target: Target, extra_args: &[&str]) -> Output {
    let swaks = require_program("swaks", "swaks libdigest-hmac-perl");
    let mut command = Command::new(swaks);
    command.arg("--server").arg(target.addr.to_string());
    let tls = match target.transport {
        Transport::Plain => None,
        Transport::Smtps { ca } => Some(("--tlsc", ca)),
        Transport::Starttls { ca } => Some(("--tls", ca)),
    };
    if let Some((flag, ca)) = tls {
        // swaks's TLS comes from these; without them it says little more than "not available".
        require_perl_module("Net::SSLeay", "libnet-ssleay-perl");
        require_perl_module("IO::Socket::SSL", "libio-socket-ssl-perl");
        command
            .arg(flag)
            .args(["--tls-verify", "--tls-ca-path"])
            .arg(ca);
    }
    command
        .args(["--to", "b@example.net", "--from", "a@example.com"])
        .args(["--timeout", "20"])
        .args(extra_args);
    run_with_limit(&mut command, CLIENT_LIMIT)
}

/// Runs tests/clients/smtplib_steps.py against `addr` with `args` (see its usage): smtplib
/// one command at a time, each reply's code and how long it took.
pub fn smtplib_steps(addr: SocketAddr, args: &[&str]) -> Output {
    let python = require_program("python3", "python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtplib_steps.py");
    let mut command = Command::new(python);
    command.arg(script).arg(addr.port().to_string()).args(args);
    run_with_limit(&mut command, CLIENT_LIMIT)
}

/// A self-signed certificate for 127.0.0.1 (a P-256 key, two days), and its key, written as
/// `cert.pem` and `key.pem` in `dir`.
pub fn self_signed_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let openssl = require_program("openssl", "openssl");
    let made = run_with_limit(
        Command::new(openssl).current_dir(dir).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=blackhole.test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ]),
        CLIENT_LIMIT,
    );
    assert!(made.status.success(), "{}", super::transcript(&made));
    (dir.join("cert.pem"), dir.join("key.pem"))
}
