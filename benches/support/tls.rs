//! SMTPS clients for the idle test: a self-signed certificate made by `openssl`, rustls's own
//! client (ring provider, TLS 1.3 only) trusting that certificate as its only root, and
//! connections that complete the handshake and read the 220 inside TLS.
//!
//! The handshakes are opened from a few threads (`crowd::open_with`), each keeping the
//! connections it opened: the server signs with RSA on one core, so a few handshakes in
//! flight keep it busy, and a thread per connection would only crowd the machine. Session
//! resumption is off, so every connection costs the server a full handshake.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, RootCertStore, StreamOwned};

use super::crowd::{self, Opened};
use super::smtp::{self, SmtpConn, Transport};

/// The name the certificate is made for and the client asks for.
const SERVER_NAME: &str = "localhost";

/// Stack of each opening thread: std's default, as rustls and webpki are not written for a
/// small stack, and there are only a few of these threads.
const OPENER_STACK: usize = 2 * 1024 * 1024;

/// A client's TLS stream: rustls's client connection on a blocking socket.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl Transport for TlsStream {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// A certificate and its private key, PEM files.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A new RSA 2048 key and a self-signed certificate for `localhost` valid for 2 days,
/// written into `dir` by `openssl req`. The certificate is a leaf (CA:FALSE) naming
/// `localhost` in its subjectAltName: webpki, under rustls's client, refuses a CA certificate
/// as a server's own and does not read the CN.
pub fn make_certificate(dir: &Path) -> io::Result<Certificate> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::other(
                    "openssl not found: the idle TLS test makes its certificate with \
                     `openssl req`; install it with `apt-get install -y openssl`",
                )
            } else {
                io::Error::other(format!("cannot run openssl: {e}"))
            }
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(io::Error::other(format!(
            "openssl req failed ({}): {}",
            out.status,
            tail.join("\n")
        )));
    }
    Ok(Certificate { cert, key })
}

/// rustls's client with the ring provider, TLS 1.3 only, trusting only `cert`, without
/// session resumption (every handshake a full one).
pub fn client_config(cert: &Path) -> io::Result<Arc<ClientConfig>> {
    let trusted = CertificateDer::from_pem_file(cert)
        .map_err(|e| io::Error::other(format!("cannot read {}: {e}", cert.display())))?;
    let mut roots = RootCertStore::empty();
    roots
        .add(trusted)
        .map_err(|e| io::Error::other(format!("cannot trust {}: {e}", cert.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| io::Error::other(format!("TLS client setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Completes a TLS 1.3 handshake on `stream` (time limits already set) and reads the 220
/// inside TLS.
fn greet(mut stream: TcpStream, config: &Arc<ClientConfig>) -> io::Result<SmtpConn<TlsStream>> {
    let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
    let mut conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream)
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
    }
    if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
        return Err(io::Error::other(format!(
            "negotiated {:?}, not TLS 1.3",
            conn.protocol_version()
        )));
    }
    let mut smtp = SmtpConn::over(StreamOwned::new(conn, stream));
    smtp.expect(220)?;
    Ok(smtp)
}

/// Connects to the SMTPS port `addr`, completes the handshake and reads the 220.
pub fn open_one(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<SmtpConn<TlsStream>> {
    greet(smtp::connect(addr)?, config)
}

/// Opens `n` SMTPS connections to `addr` from `threads` threads, each handshaken and greeted.
pub fn open(
    addr: SocketAddr,
    n: usize,
    threads: usize,
    config: &Arc<ClientConfig>,
) -> Opened<TlsStream> {
    crowd::open_with(n, threads, OPENER_STACK, || open_one(addr, config))
}

/// The start probe of an SMTPS server (see `Server::blackhole_tls`): on the first connection
/// that succeeds, the handshake, the 220 and QUIT.
pub fn greet_and_quit(config: Arc<ClientConfig>) -> impl Fn(TcpStream) -> io::Result<()> {
    move |stream| {
        stream.set_read_timeout(Some(smtp::REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(smtp::REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        greet(stream, &config)?.quit()
    }
}
