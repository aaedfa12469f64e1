//! TLS against the real binary: SMTPS (`tls_listen`) and STARTTLS on the plain listener, driven
//! by rustls's own client, Python's smtplib, curl, `openssl s_client` and swaks; the STARTTLS
//! command-injection defence; garbage and stalled handshakes; STARTTLS's error replies; and the
//! config checks of `tls_cert`, `tls_key` and `tls_listen`.
//!
//! Every test makes its own keys and self-signed certificates with `openssl` in a temp dir, and
//! the clients trust that certificate as their only root (so they check what the server sends).
//! A missing client is a failure, not a skip: `.ci/run` installs them.

mod common;

use base64::Engine as _;
use common::clients::{CLIENT_LIMIT, Target, Transport, curl, smtplib, swaks};
use common::{
    Client, MAILNAME, Server, TempDir, assert_queued, config_toml, free_port, procfs, read_reply,
    require_program, run_blackhole, run_with_input, run_with_limit, transcript, wait_for,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one handshake, reply or close may take. Generous: the machines that run this are
/// busy, and no test here waits this long when the server is right.
const PATIENCE: Duration = Duration::from_secs(15);

/// Both versions the server must speak; each test that cares runs with both.
const TLS_VERSIONS: [&SupportedProtocolVersion; 2] = [&TLS12, &TLS13];

/// The two ways into TLS: SMTPS (`tls_listen`, TLS from the first byte) and STARTTLS on the
/// plain listener.
#[derive(Clone, Copy, Debug)]
enum Way {
    Smtps,
    Starttls,
}

const WAYS: [Way; 2] = [Way::Smtps, Way::Starttls];

const READY_TO_START_TLS: &str = "220 2.0.0 Ready to start TLS";

// ------------------------------------------------------------------------------------------
// Keys and certificates, made by `openssl`.

/// The forms of private key file the server must read: PKCS#8 for either key type, and the
/// older "traditional" forms, PKCS#1 for RSA and SEC1 for EC.
#[derive(Clone, Copy, Debug)]
enum KeyForm {
    RsaPkcs8,
    RsaPkcs1,
    EcPkcs8,
    EcSec1,
}

impl KeyForm {
    const ALL: [KeyForm; 4] = [
        KeyForm::RsaPkcs8,
        KeyForm::RsaPkcs1,
        KeyForm::EcPkcs8,
        KeyForm::EcSec1,
    ];

    /// `openssl genpkey` arguments for a new key of this type (genpkey writes PKCS#8).
    fn genpkey_args(self) -> &'static [&'static str] {
        match self {
            // 2048 bits: webpki, under rustls's client, refuses smaller RSA keys.
            KeyForm::RsaPkcs8 | KeyForm::RsaPkcs1 => {
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
            }
            KeyForm::EcPkcs8 | KeyForm::EcSec1 => {
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
            }
        }
    }

    /// PKCS#1 and SEC1 are what `openssl pkey -traditional` writes.
    fn is_traditional(self) -> bool {
        matches!(self, KeyForm::RsaPkcs1 | KeyForm::EcSec1)
    }

    /// The PEM label that shows a key file really is in this form.
    fn pem_label(self) -> &'static str {
        match self {
            KeyForm::RsaPkcs8 | KeyForm::EcPkcs8 => "-----BEGIN PRIVATE KEY-----",
            KeyForm::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
            KeyForm::EcSec1 => "-----BEGIN EC PRIVATE KEY-----",
        }
    }
}

/// Runs `openssl ARGS` in `dir`, failing the test with openssl's own words if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let openssl = require_program("openssl", "openssl");
    let out = run_with_limit(
        Command::new(openssl).current_dir(dir).args(args),
        CLIENT_LIMIT,
    );
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        transcript(&out)
    );
}

/// A new private key in `form`, written as `dir/name`.
fn make_key(dir: &TempDir, name: &str, form: KeyForm) -> PathBuf {
    let pkcs8 = format!("{name}.pkcs8");
    let mut args = vec!["genpkey", "-out", &pkcs8];
    args.extend_from_slice(form.genpkey_args());
    openssl(dir.path(), &args);
    let mut convert = vec!["pkey", "-in", &pkcs8, "-out", name];
    if form.is_traditional() {
        convert.push("-traditional");
    }
    openssl(dir.path(), &convert);
    let key = dir.path().join(name);
    let text = fs::read_to_string(&key).expect("read the new key");
    assert!(
        text.starts_with(form.pem_label()),
        "openssl did not write a {form:?} key:\n{text}"
    );
    key
}

/// What `openssl req -x509` needs to make a server's certificate for `localhost` and 127.0.0.1.
/// CA:FALSE because webpki refuses a CA certificate as a server's own (openssl's default for
/// `req -x509` is a CA).
const LEAF_CERT_CONFIG: &str = "\
[req]
distinguished_name = name
x509_extensions = leaf
prompt = no
[name]
CN = localhost
[leaf]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
";

/// A self-signed certificate for `key`, written as `dir/name`.
fn make_cert(dir: &TempDir, name: &str, key: &Path) -> PathBuf {
    let config = dir.write("leaf-cert.cnf", LEAF_CERT_CONFIG);
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-new",
            "-config",
            path_str(&config),
            "-key",
            path_str(key),
            "-days",
            "2",
            "-out",
            name,
        ],
    );
    dir.path().join(name)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

// ------------------------------------------------------------------------------------------
// A server with a certificate.

/// A running `blackhole` with a certificate: STARTTLS on its plain port, SMTPS on `smtps`.
struct TlsServer {
    server: Server,
    smtps: SocketAddr,
    /// The server's certificate: what the clients trust, as their only root.
    cert: PathBuf,
    /// Holds the certificate and key files.
    _files: TempDir,
}

impl TlsServer {
    /// With an EC key (quick to make); `server_reads_every_key_form` covers the others.
    fn start(extra_toml: &str) -> TlsServer {
        TlsServer::start_with_key(KeyForm::EcPkcs8, extra_toml)
    }

    fn start_with_key(form: KeyForm, extra_toml: &str) -> TlsServer {
        let files = TempDir::new();
        let key = make_key(&files, "key.pem", form);
        let cert = make_cert(&files, "cert.pem", &key);
        let smtps = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let server = Server::start(&format!(
            "tls_listen = [\"{smtps}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra_toml}",
            cert.display(),
            key.display()
        ));
        TlsServer {
            server,
            smtps,
            cert,
            _files: files,
        }
    }

    /// The port to connect to for `way`.
    fn addr(&self, way: Way) -> SocketAddr {
        match way {
            Way::Smtps => self.smtps,
            Way::Starttls => self.server.addr(),
        }
    }

    /// Where and how a real client connects for `way`, trusting the server's certificate.
    fn target(&self, way: Way) -> Target<'_> {
        let ca = self.cert.as_path();
        let transport = match way {
            Way::Smtps => Transport::Smtps { ca },
            Way::Starttls => Transport::Starttls { ca },
        };
        Target {
            addr: self.addr(way),
            transport,
        }
    }

    fn cert_str(&self) -> &str {
        path_str(&self.cert)
    }
}

// ------------------------------------------------------------------------------------------
// rustls's own client.

/// A client config that speaks only `version` and trusts only the certificate in `cert`.
fn client_config(cert: &Path, version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let cert = CertificateDer::from_pem_file(cert).expect("read the test certificate");
    roots.add(cert).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("rustls speaks TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A raw connection to `addr`, for TLS or for bytes that are not SMTP.
fn connect(addr: SocketAddr) -> TcpStream {
    Client::connect(addr).into_stream()
}

/// An SMTP client inside TLS, reading whole replies like `common::Client`.
struct TlsClient {
    tls: StreamOwned<ClientConnection, TcpStream>,
    /// Plaintext received but not yet handed out as reply lines.
    pending: Vec<u8>,
}

impl TlsClient {
    /// The client's own port, as the server sees it.
    fn local_port(&self) -> u16 {
        self.tls.sock.local_addr().expect("local address").port()
    }

    /// Connects to the SMTPS port; handshake done, greeting not yet read.
    fn smtps(server: &TlsServer, version: &'static SupportedProtocolVersion) -> TlsClient {
        TlsClient::handshake(connect(server.smtps), &server.cert, version)
    }

    /// Connects to the plain port and says EHLO (which must offer STARTTLS) and STARTTLS;
    /// handshake done, nothing read inside TLS yet.
    fn starttls(server: &TlsServer, version: &'static SupportedProtocolVersion) -> TlsClient {
        let mut plain = server.server.connect();
        assert_eq!(plain.reply(), format!("220 {MAILNAME} ESMTP"));
        let ehlo = plain.command("EHLO client.example.com");
        assert!(
            offers_starttls(&ehlo),
            "EHLO on the plain port with a certificate should offer STARTTLS: {ehlo:?}"
        );
        assert_eq!(plain.command("STARTTLS"), READY_TO_START_TLS);
        TlsClient::handshake(plain.into_stream(), &server.cert, version)
    }

    /// A session inside TLS, come `way`, ready for EHLO (an SMTPS greeting is read).
    fn open(server: &TlsServer, way: Way, version: &'static SupportedProtocolVersion) -> TlsClient {
        match way {
            Way::Smtps => {
                let mut client = TlsClient::smtps(server, version);
                client.greeting();
                client
            }
            Way::Starttls => TlsClient::starttls(server, version),
        }
    }

    /// A TLS client on `stream` (new, or just past STARTTLS's 220) with the handshake done.
    fn handshake(
        mut stream: TcpStream,
        cert: &Path,
        version: &'static SupportedProtocolVersion,
    ) -> TlsClient {
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(PATIENCE))
            .expect("set_write_timeout");
        let name = ServerName::try_from("localhost").expect("a valid server name");
        let mut conn =
            ClientConnection::new(client_config(cert, version), name).expect("a TLS client");
        while conn.is_handshaking() {
            conn.complete_io(&mut stream)
                .unwrap_or_else(|e| panic!("TLS handshake ({version:?}): {e}"));
        }
        let client = TlsClient {
            tls: StreamOwned::new(conn, stream),
            pending: Vec::new(),
        };
        assert_eq!(
            client.tls.conn.protocol_version(),
            Some(version.version),
            "the negotiated TLS version"
        );
        client
    }

    fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).expect("send inside TLS");
        self.tls.flush().expect("send inside TLS");
    }

    fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn reply(&mut self) -> String {
        read_reply(&mut self.tls, &mut self.pending)
            .unwrap_or_else(|e| panic!("no reply inside TLS: {e}"))
    }

    fn greeting(&mut self) {
        assert_eq!(self.reply(), format!("220 {MAILNAME} ESMTP"));
    }

    /// EHLO, checked; returns the reply.
    fn ehlo(&mut self) -> String {
        let reply = self.command("EHLO client.example.com");
        assert!(
            reply.starts_with(&format!("250-{MAILNAME}\n")) && reply.ends_with("\n250 DSN"),
            "EHLO reply inside TLS: {reply:?}"
        );
        reply
    }

    /// MAIL, RCPT, DATA and a body that spans several TLS records, answered with the queued
    /// reply.
    fn send_message(&mut self) {
        assert_eq!(self.command("MAIL FROM:<a@example.com>"), "250 2.1.0 OK");
        assert_eq!(self.command("RCPT TO:<b@example.net>"), "250 2.1.5 OK");
        assert_eq!(self.command("DATA"), "354 End data with <CR><LF>.<CR><LF>");
        self.send(message_body().as_bytes());
        assert_queued(&self.reply());
    }

    /// QUIT inside TLS: `221`, then the server's close_notify, then the end of the stream.
    fn quit(&mut self) {
        assert_eq!(self.command("QUIT"), "221 2.0.0 Goodbye");
        // rustls reads end of stream as Ok(0) only after a close_notify; a bare TCP close
        // is an UnexpectedEof error.
        let mut byte = [0u8; 1];
        match self.tls.read(&mut byte) {
            Ok(0) => {}
            other => panic!("after 221, expected close_notify, got {other:?}"),
        }
        match self.tls.sock.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("after close_notify, expected the connection closed, got {other:?}"),
        }
    }
}

/// Headers, 100 KiB or so of text (several 16 KiB TLS records), a line that needs
/// dot-stuffing, and the terminator.
fn message_body() -> String {
    let mut body = String::from("From: a@example.com\r\nTo: b@example.net\r\nSubject: TLS\r\n\r\n");
    for n in 0..1500 {
        body.push_str(&format!(
            "line {n:04}: the quick brown fox jumps over the lazy dog, twice over\r\n"
        ));
    }
    body.push_str("..a line that started with a dot\r\n.\r\n");
    body
}

fn offers_starttls(ehlo_reply: &str) -> bool {
    ehlo_reply.lines().any(|line| line == "250-STARTTLS")
}

/// `AUTH PLAIN` with its initial response: authorisation id (empty), user, password.
fn auth_plain(user: &str, password: &str) -> String {
    let response = format!("\0{user}\0{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(response);
    format!("AUTH PLAIN {encoded}")
}

#[test]
fn rustls_delivers_a_message_over_smtps() {
    let server = TlsServer::start("");
    for version in TLS_VERSIONS {
        let mut client = TlsClient::smtps(&server, version);
        client.greeting();
        client.ehlo();
        client.send_message();
        client.quit();
    }
}

#[test]
fn rustls_delivers_a_message_after_starttls() {
    let server = TlsServer::start("");
    for version in TLS_VERSIONS {
        let mut client = TlsClient::starttls(&server, version);
        // A fresh session: no greeting inside TLS, and EHLO again before mail.
        client.ehlo();
        client.send_message();
        client.quit();
    }
}

#[test]
fn rustls_auth_plain_succeeds_unless_the_user_says_fail() {
    let server = TlsServer::start("");
    for (way, version) in [(Way::Smtps, &TLS13), (Way::Starttls, &TLS12)] {
        let mut client = TlsClient::open(&server, way, version);
        client.ehlo();
        assert_eq!(
            client.command(&auth_plain("fail=alice", "pw")),
            "535 5.7.8 Authentication failed",
            "{way:?}"
        );
        assert_eq!(
            client.command(&auth_plain("alice", "pw")),
            "235 2.7.0 Authentication successful",
            "{way:?}"
        );
        client.send_message();
        client.quit();
    }
}

#[test]
fn server_reads_every_key_form() {
    for form in KeyForm::ALL {
        let server = TlsServer::start_with_key(form, "");
        for version in TLS_VERSIONS {
            let mut client = TlsClient::smtps(&server, version);
            client.greeting();
            client.ehlo();
            client.quit();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Real clients.

/// Asserts that a real client's run ended with exit code `code` and that its transcript holds
/// each of `expected`. Returns the transcript.
fn assert_run(what: &str, out: &Output, code: i32, expected: &[&str]) -> String {
    let text = transcript(out);
    assert_eq!(out.status.code(), Some(code), "{what}: exit code\n{text}");
    for needle in expected {
        assert!(text.contains(needle), "{what}: no {needle:?} in\n{text}");
    }
    text
}

#[test]
fn smtplib_sends_each_way() {
    let server = TlsServer::start("");
    for way in WAYS {
        let out = smtplib(server.target(way), &["send"]);
        // The script prints the TLS version once the connection is encrypted.
        assert_run(&format!("{way:?}"), &out, 0, &["TLS TLSv1.", "SENT"]);
    }
}

#[test]
fn smtplib_login_inside_tls_succeeds_unless_the_user_says_fail() {
    let server = TlsServer::start("");
    for way in WAYS {
        let refused = smtplib(server.target(way), &["login", "fail=alice", "pw"]);
        // The script exits 3 when smtplib raises SMTPAuthenticationError.
        assert_run(
            &format!("{way:?} fail=alice"),
            &refused,
            3,
            &["TLS TLSv1.", "AUTHFAIL 535 5.7.8 Authentication failed"],
        );

        let accepted = smtplib(server.target(way), &["login", "alice", "pw"]);
        assert_run(
            &format!("{way:?} alice"),
            &accepted,
            0,
            &[
                "TLS TLSv1.",
                "AUTH 235 2.7.0 Authentication successful",
                "SENT",
            ],
        );
    }
}

/// What curl's verbose transcript shows of a connection encrypted `way`: the TLS version and,
/// for STARTTLS, that it asked for it; then `more`.
fn curl_expects<'a>(way: Way, more: &[&'a str]) -> Vec<&'a str> {
    let mut expected = vec!["SSL connection using TLSv1."];
    if let Way::Starttls = way {
        expected.push("> STARTTLS");
    }
    expected.extend_from_slice(more);
    expected
}

#[test]
fn curl_delivers_each_way() {
    let server = TlsServer::start("");
    for way in WAYS {
        let out = curl(server.target(way), &[]);
        let expected = curl_expects(way, &["< 250 2.0.0 OK: queued as <"]);
        assert_run(&format!("{way:?}"), &out, 0, &expected);
    }
}

#[test]
fn curl_login_inside_tls_succeeds_unless_the_user_says_fail() {
    const CURLE_LOGIN_DENIED: i32 = 67;
    let server = TlsServer::start("");
    for way in WAYS {
        let refused = curl(server.target(way), &["--user", "fail=alice:pw"]);
        let expected = curl_expects(way, &["< 535 5.7.8 Authentication failed"]);
        let what = format!("{way:?} fail=alice");
        assert_run(&what, &refused, CURLE_LOGIN_DENIED, &expected);

        let accepted = curl(server.target(way), &["--user", "alice:pw"]);
        let expected = curl_expects(
            way,
            &[
                "< 235 2.7.0 Authentication successful",
                "< 250 2.0.0 OK: queued as <",
            ],
        );
        assert_run(&format!("{way:?} alice"), &accepted, 0, &expected);
    }
}

/// A whole session for `openssl s_client`'s stdin, sent as it is read (so: pipelined).
const S_CLIENT_SESSION: &str = "EHLO client.example.com\r\n\
    MAIL FROM:<a@example.com>\r\n\
    RCPT TO:<b@example.net>\r\n\
    DATA\r\n\
    Subject: s_client\r\n\
    \r\n\
    Sent by openssl s_client.\r\n\
    .\r\n\
    QUIT\r\n";

/// Runs `openssl s_client` with one TLS version (`-tls1_2` or `-tls1_3`), come `way`, feeding
/// it `S_CLIENT_SESSION`. It checks the server's certificate.
fn s_client(server: &TlsServer, way: Way, version_flag: &str) -> Output {
    let openssl = require_program("openssl", "openssl");
    let mut command = Command::new(openssl);
    command
        .arg("s_client")
        .arg("-connect")
        .arg(server.addr(way).to_string());
    if let Way::Starttls = way {
        command.args(["-starttls", "smtp"]);
    }
    command
        .arg(version_flag)
        .args(["-CAfile", server.cert_str(), "-verify_return_error"])
        // Keep reading after stdin ends, until the server closes; this also stops s_client
        // from taking lines that start with Q or R as its own commands.
        .arg("-ign_eof");
    run_with_input(&mut command, S_CLIENT_SESSION.as_bytes(), CLIENT_LIMIT)
}

#[test]
fn openssl_s_client_session_each_way_with_each_version() {
    let server = TlsServer::start("");
    for way in WAYS {
        for (flag, protocol) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
            let what = format!("s_client {way:?} {flag}");
            let out = s_client(&server, way, flag);
            // s_client's summary line: "New, TLSv1.3, Cipher is ...".
            let summary = format!("New, {protocol}, Cipher is ");
            let text = assert_run(
                &what,
                &out,
                0,
                &[&summary, "Verification: OK", "221 2.0.0 Goodbye"],
            );
            let queued = text
                .lines()
                .find(|line| line.starts_with("250 2.0.0 OK: queued as <"))
                .unwrap_or_else(|| panic!("{what}: no queued reply:\n{text}"));
            assert_queued(queued);
        }
    }
}

/// What swaks says once the connection is encrypted.
const SWAKS_TLS_STARTED: &str = "=== TLS started with cipher TLSv1.";

/// swaks's exit code for "error in AUTH transaction".
const SWAKS_AUTH_ERROR: i32 = 28;

#[test]
fn swaks_delivers_each_way() {
    let server = TlsServer::start("");
    for way in WAYS {
        let out = swaks(server.target(way), &[]);
        // swaks marks the lines it receives inside TLS with "<~".
        let expected = [SWAKS_TLS_STARTED, "<~  250 2.0.0 OK: queued as <"];
        assert_run(&format!("swaks {way:?}"), &out, 0, &expected);
    }
}

#[test]
fn swaks_auth_plain_inside_tls_succeeds_unless_the_user_says_fail() {
    let server = TlsServer::start("");
    for way in WAYS {
        let with_user = |user: &str| {
            let auth = [
                "--auth",
                "PLAIN",
                "--auth-user",
                user,
                "--auth-password",
                "pw",
            ];
            swaks(server.target(way), &auth)
        };

        // "<~*": received inside TLS, and an error.
        assert_run(
            &format!("swaks {way:?} fail=alice"),
            &with_user("fail=alice"),
            SWAKS_AUTH_ERROR,
            &[SWAKS_TLS_STARTED, "<~* 535 5.7.8 Authentication failed"],
        );
        assert_run(
            &format!("swaks {way:?} alice"),
            &with_user("alice"),
            0,
            &[
                SWAKS_TLS_STARTED,
                "<~  235 2.7.0 Authentication successful",
                "<~  250 2.0.0 OK: queued as <",
            ],
        );
    }
}

// ------------------------------------------------------------------------------------------
// STARTTLS's own replies.

#[test]
fn plaintext_pipelined_after_starttls_is_thrown_away() {
    // A man in the middle can append plaintext commands after the client's STARTTLS; the
    // server must not run them inside the TLS session that follows (CVE-2011-0411 and kin).
    let server = TlsServer::start("");
    let mut plain = server.server.connect();
    assert_eq!(plain.reply(), format!("220 {MAILNAME} ESMTP"));
    plain.ehlo();
    plain.send(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n");
    assert_eq!(plain.reply(), READY_TO_START_TLS);
    let mut client = TlsClient::handshake(plain.into_stream(), &server.cert, &TLS13);
    // A reply to the injected MAIL would come before this one or before the next.
    client.ehlo();
    assert_eq!(
        client.command("RCPT TO:<b@example.net>"),
        "503 5.5.1 Error: need MAIL command"
    );
    client.send_message();
    client.quit();
}

#[test]
fn starttls_forgets_the_plaintext_session() {
    // RFC 3207, 4.2: after the handshake the server discards what it learnt from the client
    // in plaintext, its authentication included; an open transaction goes too.
    let server = TlsServer::start("");
    let mut plain = server.server.connect();
    assert_eq!(plain.reply(), format!("220 {MAILNAME} ESMTP"));
    plain.ehlo();
    assert_eq!(
        plain.command(&auth_plain("alice", "pw")),
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(plain.command("MAIL FROM:<a@example.com>"), "250 2.1.0 OK");
    assert_eq!(plain.command("STARTTLS"), READY_TO_START_TLS);
    let mut client = TlsClient::handshake(plain.into_stream(), &server.cert, &TLS13);
    client.ehlo();
    assert_eq!(
        client.command("RCPT TO:<b@example.net>"),
        "503 5.5.1 Error: need MAIL command"
    );
    assert_eq!(
        client.command(&auth_plain("alice", "pw")),
        "235 2.7.0 Authentication successful"
    );
    client.send_message();
    client.quit();
}

/// STARTTLS inside TLS gets 503, and the session goes on inside TLS.
fn assert_starttls_refused_inside_tls(mut client: TlsClient) {
    client.ehlo();
    let reply = client.command("STARTTLS");
    assert!(
        reply.starts_with("503 "),
        "STARTTLS inside TLS should get 503: {reply:?}"
    );
    client.send_message();
    client.quit();
}

#[test]
fn starttls_over_smtps_gets_503() {
    let server = TlsServer::start("");
    assert_starttls_refused_inside_tls(TlsClient::open(&server, Way::Smtps, &TLS13));
}

#[test]
fn starttls_after_starttls_gets_503() {
    let server = TlsServer::start("");
    assert_starttls_refused_inside_tls(TlsClient::starttls(&server, &TLS13));
}

#[test]
fn starttls_with_an_argument_gets_501_and_the_session_stays_plain() {
    let server = TlsServer::start("");
    let mut plain = server.server.connect();
    assert_eq!(plain.reply(), format!("220 {MAILNAME} ESMTP"));
    plain.ehlo();
    let reply = plain.command("STARTTLS now");
    assert!(reply.starts_with("501 "), "{reply:?}");
    assert_eq!(plain.command("NOOP"), "250 2.0.0 OK");
}

#[test]
fn without_a_certificate_starttls_is_not_implemented() {
    let server = Server::start("");
    let mut plain = server.connect();
    assert_eq!(plain.reply(), format!("220 {MAILNAME} ESMTP"));
    let ehlo = plain.command("EHLO client.example.com");
    assert!(!offers_starttls(&ehlo), "{ehlo:?}");
    assert_eq!(plain.command("STARTTLS"), "500 Not implemented");
    assert_eq!(plain.command("NOOP"), "250 2.0.0 OK");
}

#[test]
fn ehlo_over_smtps_does_not_offer_starttls() {
    let server = TlsServer::start("");
    let mut client = TlsClient::smtps(&server, &TLS13);
    client.greeting();
    let ehlo = client.ehlo();
    assert!(!offers_starttls(&ehlo), "{ehlo:?}");
}

#[test]
fn ehlo_after_starttls_does_not_offer_starttls_again() {
    // RFC 3207, 4.2: "The server MUST NOT return the STARTTLS extension in response to an
    // EHLO command received after a TLS handshake has completed."
    let server = TlsServer::start("");
    let mut client = TlsClient::starttls(&server, &TLS13);
    let ehlo = client.ehlo();
    assert!(
        !offers_starttls(&ehlo),
        "EHLO inside TLS after STARTTLS offers STARTTLS again: {ehlo:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Garbage and stalled handshakes.

/// What the server sent on a raw socket before closing it, and when it closed (measured from
/// `since`). Fails, saying `what` the test sent, if it is still open after `limit`.
fn read_until_closed(
    what: &str,
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    stream
        .set_read_timeout(Some(limit))
        .expect("set_read_timeout");
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            // The server may close with our bytes unread, which the kernel turns into a reset.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "{what}: the server did not close the connection within {limit:?} ({e}); \
                 it sent {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (received, since.elapsed())
}

/// Asserts that `bytes` are nothing but whole TLS alert records (content type 21): no SMTP
/// greeting in plaintext, no handshake.
fn assert_alerts_only(what: &str, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        assert!(
            rest.len() >= 5 && rest[0] == 21,
            "{what}: expected TLS alerts or nothing, got {bytes:02x?} ({:?})",
            String::from_utf8_lossy(bytes)
        );
        let length = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        assert!(
            rest.len() >= 5 + length,
            "{what}: a cut TLS record: {bytes:02x?}"
        );
        rest = &rest[5 + length..];
    }
}

/// `len` bytes from a fixed-seed xorshift generator: noise, but the same noise every run.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

/// Garbage the server must refuse as soon as it has read it, without waiting for more.
fn garbage_cases() -> Vec<(&'static str, Vec<u8>)> {
    let random = noise(4096);
    // A TLS record type first would make the server wait for the whole record, and the
    // third case covers that; this one is garbage from the first byte.
    assert!(
        !(20..=24).contains(&random[0]),
        "pick another seed: the noise starts with a TLS record type"
    );
    // A well-formed handshake record header (type 22, TLS 1.0 on the record layer, as
    // ClientHellos have) announcing exactly the noise that follows.
    let mut framed_noise = vec![22, 3, 1];
    framed_noise.extend_from_slice(&4091u16.to_be_bytes());
    framed_noise.extend_from_slice(&noise(4091));
    vec![
        ("plaintext SMTP", b"EHLO client.example.com\r\n".to_vec()),
        ("4 KiB of noise", random),
        ("a handshake record of noise", framed_noise),
    ]
}

#[test]
fn garbage_instead_of_a_client_hello_gets_an_alert_or_a_close_and_others_are_served() {
    // The default idle timeout, so that a close within PATIENCE is the server's answer to
    // the garbage, not the timeout.
    let server = TlsServer::start("timeout = 60");
    for (what, garbage) in garbage_cases() {
        let mut stream = connect(server.smtps);
        // The server may close before it has read it all: a failed write is fine.
        let _ = stream.write_all(&garbage);
        let (received, _) = read_until_closed(what, &mut stream, Instant::now(), PATIENCE);
        assert_alerts_only(what, &received);

        let mut client = TlsClient::smtps(&server, &TLS13);
        client.greeting();
        client.ehlo();
        client.send_message();
        client.quit();
    }
}

/// With `timeout = 2`, a connection must be closed after about 2 s: not at once (then it was
/// not the timeout), and not much later than 2 s plus a busy machine's slack. Each test times
/// it from before the event that starts the timeout, so that a slow test cannot make the close
/// look early.
const IDLE_TIMEOUT_TOML: &str = "timeout = 2";
const EARLIEST_IDLE_CLOSE: Duration = Duration::from_millis(1500);
const LATEST_IDLE_CLOSE: Duration = Duration::from_secs(8);

fn assert_closed_by_idle_timeout(what: &str, stream: &mut TcpStream, since: Instant) {
    let (received, after) = read_until_closed(what, stream, since, PATIENCE);
    assert!(
        (EARLIEST_IDLE_CLOSE..=LATEST_IDLE_CLOSE).contains(&after),
        "{what}: closed after {after:?}, expected about 2 s"
    );
    assert_alerts_only(what, &received);
}

/// The first half of a real ClientHello, as rustls's client writes it.
fn half_a_client_hello(cert: &Path) -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("a valid server name");
    let mut conn = ClientConnection::new(client_config(cert, &TLS13), name).expect("a TLS client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("write a ClientHello");
    assert!(hello.len() > 100, "a ClientHello of {} bytes", hello.len());
    hello.truncate(hello.len() / 2);
    hello
}

#[test]
fn silent_smtps_client_is_closed_by_the_idle_timeout() {
    let server = TlsServer::start(IDLE_TIMEOUT_TOML);
    let connected = Instant::now();
    let mut stream = connect(server.smtps);
    assert_closed_by_idle_timeout("a silent SMTPS client", &mut stream, connected);
}

#[test]
fn smtps_client_that_stops_mid_handshake_is_closed_by_the_idle_timeout() {
    let server = TlsServer::start(IDLE_TIMEOUT_TOML);
    let hello = half_a_client_hello(&server.cert);
    let connected = Instant::now();
    let mut stream = connect(server.smtps);
    stream.write_all(&hello).expect("send half a ClientHello");
    let what = "half a ClientHello on SMTPS";
    assert_closed_by_idle_timeout(what, &mut stream, connected);
}

#[test]
fn client_that_stops_mid_handshake_after_starttls_is_closed_by_the_idle_timeout() {
    let server = TlsServer::start(IDLE_TIMEOUT_TOML);
    let hello = half_a_client_hello(&server.cert);
    let mut plain = server.server.connect();
    assert_eq!(plain.reply(), format!("220 {MAILNAME} ESMTP"));
    plain.ehlo();
    // STARTTLS is the last complete line, from which the timeout runs.
    let asked = Instant::now();
    assert_eq!(plain.command("STARTTLS"), READY_TO_START_TLS);
    let mut stream = plain.into_stream();
    stream.write_all(&hello).expect("send half a ClientHello");
    let what = "half a ClientHello after STARTTLS";
    assert_closed_by_idle_timeout(what, &mut stream, asked);
}

// ------------------------------------------------------------------------------------------
// Config errors.

/// A config file in `dir` with one free plain listener and `extra_toml`.
fn write_config(dir: &TempDir, name: &str, extra_toml: &str) -> PathBuf {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    dir.write(name, &config_toml(&listen.to_string(), extra_toml))
}

/// Checks a bad config both with `-t` and by starting the server: each must exit 64 with a
/// message that says every one of `names` (options and file paths).
fn assert_config_refused(what: &str, config: &Path, names: &[&str]) {
    for check_only in [true, false] {
        let mut args = vec!["-c", path_str(config)];
        if check_only {
            args.push("-t");
        }
        // Without -t a config that passes would start serving; the limit catches that.
        let out = run_blackhole(&args, CLIENT_LIMIT);
        assert_run(&format!("{what}, {args:?}"), &out, 64, names);
    }
}

#[test]
fn bad_tls_configs_exit_64_naming_the_option_and_the_file() {
    let dir = TempDir::new();
    let key = make_key(&dir, "key.pem", KeyForm::EcSec1);
    let cert = make_cert(&dir, "cert.pem", &key);
    let other_key = make_key(&dir, "other-key.pem", KeyForm::EcPkcs8);
    let rsa_key = make_key(&dir, "rsa-key.pem", KeyForm::RsaPkcs1);
    let rsa_cert = make_cert(&dir, "rsa-cert.pem", &rsa_key);
    let missing = dir.path().join("missing.pem");
    let folder = dir.path().to_path_buf();
    let tls_listen = format!(
        "tls_listen = [\"{}\"]",
        SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
    );
    let pair = |cert: &Path, key: &Path| {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        )
    };

    // The good pair passes, so that each refusal below is down to its own change.
    let good = write_config(
        &dir,
        "good.toml",
        &format!("{tls_listen}\n{}", pair(&cert, &key)),
    );
    let out = run_blackhole(&["-t", "-c", path_str(&good)], CLIENT_LIMIT);
    assert_run("good config", &out, 0, &[]);

    let file_cases: [(&str, String, &str, &Path); 7] = [
        (
            "missing cert file",
            pair(&missing, &key),
            "tls_cert",
            &missing,
        ),
        ("cert is a folder", pair(&folder, &key), "tls_cert", &folder),
        ("cert file holds a key", pair(&key, &key), "tls_cert", &key),
        (
            "missing key file",
            pair(&cert, &missing),
            "tls_key",
            &missing,
        ),
        (
            "key file holds a certificate",
            pair(&cert, &cert),
            "tls_key",
            &cert,
        ),
        (
            "key of another EC cert",
            pair(&cert, &other_key),
            "tls_key",
            &other_key,
        ),
        (
            "EC key for an RSA cert",
            pair(&rsa_cert, &key),
            "tls_key",
            &key,
        ),
    ];
    for (n, (what, toml, option, file)) in file_cases.into_iter().enumerate() {
        let config = write_config(&dir, &format!("file-case-{n}.toml"), &toml);
        assert_config_refused(what, &config, &[option, path_str(file)]);
    }

    // An option missing: the message names it and the config file that lacks it.
    let cert_only = format!("tls_cert = \"{}\"", cert.display());
    let key_only = format!("tls_key = \"{}\"", key.display());
    let option_cases: [(&str, String, &[&str]); 5] = [
        ("tls_cert without tls_key", cert_only.clone(), &["tls_key"]),
        ("tls_key without tls_cert", key_only.clone(), &["tls_cert"]),
        (
            "tls_listen without cert or key",
            tls_listen.clone(),
            &["tls_listen", "tls_cert"],
        ),
        (
            "tls_listen with only tls_cert",
            format!("{tls_listen}\n{cert_only}"),
            &["tls_listen", "tls_key"],
        ),
        (
            "tls_listen with only tls_key",
            format!("{tls_listen}\n{key_only}"),
            &["tls_listen", "tls_cert"],
        ),
    ];
    for (n, (what, toml, options)) in option_cases.into_iter().enumerate() {
        let config = write_config(&dir, &format!("option-case-{n}.toml"), &toml);
        let mut names = options.to_vec();
        names.push(path_str(&config));
        assert_config_refused(what, &config, &names);
    }
}

/// A whole first flight of rustls's client: the ClientHello as it goes on the wire.
fn client_hello(cert: &Path, version: &'static SupportedProtocolVersion) -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("a valid server name");
    let mut conn = ClientConnection::new(client_config(cert, version), name).expect("a TLS client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("write a ClientHello");
    hello
}

/// ClientHellos with random bytes changed, cut short or doubled: every one is refused or
/// waited on, none takes the server down, and a real client is served afterwards.
#[test]
fn mutated_client_hellos_never_take_the_server_down() {
    let server = TlsServer::start("timeout = 60");
    let hellos = [
        client_hello(&server.cert, &TLS13),
        client_hello(&server.cert, &TLS12),
    ];
    let flips = noise(4 * 400);
    for (round, flip) in flips.chunks(4).enumerate() {
        let mut hello = hellos[round % 2].clone();
        let at = (usize::from(flip[0]) << 8 | usize::from(flip[1])) % hello.len();
        match round % 4 {
            0 => hello[at] ^= flip[2] | 1,
            1 => hello[at] = flip[2],
            2 => hello.truncate(at.max(1)),
            _ => {
                let copy = hello.clone();
                hello.extend_from_slice(&copy);
                hello[at] ^= flip[3] | 1;
            }
        }
        let mut stream = connect(server.smtps);
        let _ = stream.write_all(&hello);
        // Close without waiting: the server must cope with every state this leaves it in.
        drop(stream);
    }
    let mut client = TlsClient::smtps(&server, &TLS13);
    client.greeting();
    client.ehlo();
    client.send_message();
    client.quit();
    let log = server.server.stderr_log();
    assert!(!log.contains("panicked"), "the TLS layer panicked:\n{log}");
}

/// A TLS client that pipelines commands with long replies and reads them only later gets
/// every reply: replies held back while the socket was full are encrypted and sent as soon
/// as it drains.
#[test]
fn a_tls_client_that_reads_late_gets_every_reply() {
    let server = TlsServer::start("timeout = 60");
    let mut client = TlsClient::smtps(&server, &TLS13);
    client.greeting();
    const COMMANDS: usize = 30_000;
    let mut batch = "EHLO client.example.com\r\n".repeat(COMMANDS);
    batch.push_str("QUIT\r\n");
    client.send(batch.as_bytes());
    // Reading late is what is tested: wait until the replies have filled the socket and the
    // server holds the rest of the commands back, unread, until the reads below drain it.
    let (pid, port) = (server.server.pid(), client.local_port());
    assert!(
        wait_for(Duration::from_secs(10), || procfs::stopped_reading(
            pid, port
        )),
        "the server never stopped reading a client that does not read its replies"
    );
    for n in 0..COMMANDS {
        let reply = client.reply();
        assert!(reply.ends_with("250 DSN"), "EHLO reply {n}: {reply:?}");
    }
    assert_eq!(client.reply(), "221 2.0.0 Goodbye");
}
