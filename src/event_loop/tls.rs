//! One connection's TLS layer, on rustls's unbuffered API.
//!
//! The buffered `ServerConnection` keeps a 4 KiB receive buffer for the life of every
//! connection; here the buffers are ours and exist only while bytes are in them, so an idle
//! TLS connection holds its keys and state and nothing else. This module turns TLS records
//! into plaintext and plaintext into records, and sends and receives them on the socket the
//! caller passes; what the plaintext means is the session's business.

use std::io;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{Error, ServerConfig};

use super::conn::{Received, read_socket, write_socket};

/// Room asked for per record beyond its plaintext (header, tag, content type, padding).
const RECORD_OVERHEAD: usize = 64;
/// The most plaintext encrypted at once, and so about the most encrypted bytes held unsent
/// (more is taken only once they have gone): the TLS counterpart of the reply buffer's bound.
pub const SEND_BUFFER_LIMIT: usize = 16 * 1024;
/// The most received TLS bytes held: one record (at most 16 KiB of payload plus its header
/// and expansion) and the start of the next. rustls refuses larger records.
const RECEIVE_LIMIT: usize = 2 * (16 * 1024 + 2048);
/// During the handshake: rustls joins a handshake message of up to 64 KiB from its records
/// in our buffer before it discards any of them.
const HANDSHAKE_RECEIVE_LIMIT: usize = 64 * 1024 + 4 * (16 * 1024 + 2048);

pub struct TlsLayer {
    conn: UnbufferedServerConnection,
    /// TLS bytes received and not yet taken by rustls: the unfinished end of a record.
    incoming: Vec<u8>,
    /// Plaintext decrypted and not yet handed to the caller.
    plaintext: Vec<u8>,
    /// TLS bytes to send; `outgoing[..sent]` have gone.
    outgoing: Vec<u8>,
    sent: usize,
    /// The client sent close_notify.
    peer_closed: bool,
    /// A fatal error: nothing more is read; the alert it queued is in `outgoing`.
    failed: bool,
}

impl TlsLayer {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, Error> {
        Ok(TlsLayer {
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            failed: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The TLS version agreed (`TLSv1_3`), once the handshake has got that far.
    pub fn version(&self) -> Option<&'static str> {
        self.conn.protocol_version().and_then(|v| v.as_str())
    }

    /// Whether TLS bytes wait to be sent.
    pub fn wants_write(&self) -> bool {
        self.sent < self.outgoing.len()
    }

    /// Ciphertext read before this layer existed (with a PROXY header), taken as if it had
    /// just come from the socket.
    pub fn receive_early(&mut self, ciphertext: &[u8]) {
        if ciphertext.is_empty() {
            return;
        }
        self.incoming.extend_from_slice(ciphertext);
        if self.guarded_pump(&[]).is_err() {
            self.failed = true;
        }
    }

    /// Reads what the client sent, decrypted, into `buf`.
    pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> Received {
        loop {
            if !self.plaintext.is_empty() {
                let n = self.plaintext.len().min(buf.len());
                buf[..n].copy_from_slice(&self.plaintext[..n]);
                self.plaintext.drain(..n);
                release_if_empty(&mut self.plaintext);
                return Received::Bytes(n);
            }
            if self.peer_closed {
                return Received::End;
            }
            if self.failed {
                return Received::Failed(io::ErrorKind::InvalidData.into());
            }
            let limit = if self.is_handshaking() {
                HANDSHAKE_RECEIVE_LIMIT
            } else {
                RECEIVE_LIMIT
            };
            if self.incoming.len() >= limit {
                // rustls would have taken a whole record (or handshake message) by now: this
                // is not TLS.
                self.failed = true;
                continue;
            }
            let start = self.incoming.len();
            let room = (limit - start).min(16 * 1024 + 512);
            self.incoming.resize(start + room, 0);
            let got = read_socket(stream, &mut self.incoming[start..]);
            let n = if let Received::Bytes(n) = got { n } else { 0 };
            self.incoming.truncate(start + n);
            match got {
                Received::Bytes(_) => {
                    if let Err(e) = self.guarded_pump(&[]) {
                        self.failed = true;
                        if self.plaintext.is_empty() {
                            return Received::Failed(io::Error::new(io::ErrorKind::InvalidData, e));
                        }
                    }
                }
                Received::End | Received::WouldBlock => {
                    release_if_empty(&mut self.incoming);
                    return got;
                }
                Received::Failed(_) => return got,
            }
        }
    }

    /// Takes plaintext to send, as much as TLS allows now (none before the handshake ends,
    /// none while earlier records are unsent), and returns how much it took. The records go
    /// out with [`TlsLayer::send`]. After a fatal TLS error, nothing can be sent: an error.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::InvalidData.into());
        }
        if self.wants_write() {
            return Ok(0);
        }
        let chunk = &plaintext[..plaintext.len().min(SEND_BUFFER_LIMIT)];
        self.guarded_pump(chunk)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Sends waiting TLS bytes until they are gone or the socket is full. Returns whether
    /// everything went.
    pub fn send(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        if !write_socket(stream, &self.outgoing, &mut self.sent)? {
            return Ok(false);
        }
        self.outgoing.clear();
        self.sent = 0;
        release_if_empty(&mut self.outgoing);
        Ok(true)
    }

    /// Queues a close_notify and sends what it can (best effort: the socket closes next).
    pub fn close(&mut self, stream: &mut TcpStream) {
        if !self.failed && !self.is_handshaking() {
            let _ = self.guarded(Self::queue_last_record);
        }
        let _ = self.send(stream);
    }

    /// [`TlsLayer::pump`], under [`TlsLayer::guarded`].
    fn guarded_pump(&mut self, to_send: &[u8]) -> Result<usize, Error> {
        self.guarded(|layer| layer.pump(to_send))
    }

    /// Runs `step`, a call into rustls, with a panic turned into this connection's error:
    /// what one client sends must not end every other connection. (A panic there would be
    /// a rustls bug or a broken contract of its unbuffered API; the connection is closed.)
    fn guarded<T>(&mut self, step: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(self)));
        result.unwrap_or_else(|_| {
            self.failed = true;
            // A record may have been left half written: none of it goes out.
            self.outgoing = Vec::new();
            self.sent = 0;
            Err(Error::General("internal error in the TLS layer".into()))
        })
    }

    /// Runs rustls over the received bytes until it needs more of them: decrypted plaintext
    /// goes to `self.plaintext`, handshake and alert records to `self.outgoing`, and once the
    /// handshake is over `to_send` is encrypted. Returns how much of `to_send` was taken.
    fn pump(&mut self, to_send: &[u8]) -> Result<usize, Error> {
        // Records are appended below: first drop what has gone, so `outgoing` holds only
        // what is still to send.
        self.outgoing.drain(..self.sent);
        self.sent = 0;
        let mut taken = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let step = state.and_then(|state| match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    Ok(false)
                }
                ConnectionState::ReadEarlyData(mut early) => {
                    // Early data is not enabled; should a client send it, it is dropped.
                    while let Some(record) = early.next_record() {
                        discard += record?.discard;
                    }
                    Ok(false)
                }
                ConnectionState::EncodeTlsData(mut encoding) => {
                    write_into(&mut self.outgoing, 1024, |out| {
                        encoding.encode(out).map_err(encode_size)
                    })?;
                    Ok(false)
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // The records wait in `outgoing`, in order, for `send`.
                    transmit.done();
                    Ok(false)
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    if !to_send.is_empty() && taken == 0 {
                        let expansion = RECORD_OVERHEAD * (to_send.len() / (16 * 1024) + 1);
                        write_into(&mut self.outgoing, to_send.len() + expansion, |out| {
                            traffic.encrypt(to_send, out).map_err(encrypt_size)
                        })?;
                        taken = to_send.len();
                    }
                    Ok(true)
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    Ok(false)
                }
                // Closed, BlockedHandshake, and whatever later versions add: wait for input.
                _ => Ok(true),
            });
            self.discard_received(discard);
            match step {
                Ok(false) => {}
                Ok(true) => return Ok(taken),
                Err(e) => {
                    self.failed = true;
                    // rustls queued an alert: the next call hands it over to be sent.
                    let _ = self.queue_last_record();
                    return Err(e);
                }
            }
        }
    }

    /// The last record this side sends, into `outgoing`: after a fatal error the alert
    /// rustls queued, else a close_notify.
    fn queue_last_record(&mut self) -> Result<(), Error> {
        // The same buffer as before: rustls remembers positions in it.
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.incoming);
        let queued = match state {
            Ok(ConnectionState::EncodeTlsData(mut encoding)) => {
                write_into(&mut self.outgoing, 64, |out| {
                    encoding.encode(out).map_err(encode_size)
                })
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                write_into(&mut self.outgoing, 64, |out| {
                    traffic.queue_close_notify(out).map_err(encrypt_size)
                })
            }
            _ => Ok(()),
        };
        self.discard_received(discard);
        queued
    }

    /// Drops the received bytes rustls is done with: at most all of them, whatever it says.
    fn discard_received(&mut self, discard: usize) {
        self.incoming.drain(..discard.min(self.incoming.len()));
    }
}

/// Appends what `fill` writes to `buf`, giving it `guess` bytes of room first and as much as
/// it asks for if that was too little.
fn write_into(
    buf: &mut Vec<u8>,
    guess: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, SizeOrError>,
) -> Result<(), Error> {
    let start = buf.len();
    let mut room = guess;
    loop {
        buf.resize(start + room, 0);
        match fill(&mut buf[start..]) {
            Ok(written) => {
                buf.truncate(start + written);
                return Ok(());
            }
            Err(SizeOrError::Size(required)) if required > room => room = required,
            Err(SizeOrError::Size(_)) | Err(SizeOrError::Other) => {
                buf.truncate(start);
                return Err(Error::General("cannot encode a TLS record".into()));
            }
        }
    }
}

enum SizeOrError {
    Size(usize),
    Other,
}

fn encode_size(e: EncodeError) -> SizeOrError {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            SizeOrError::Size(required_size)
        }
        _ => SizeOrError::Other,
    }
}

fn encrypt_size(e: EncryptError) -> SizeOrError {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            SizeOrError::Size(required_size)
        }
        _ => SizeOrError::Other,
    }
}

/// An empty buffer gives its memory back: idle connections hold none.
fn release_if_empty(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{
        AeadKey, Iv, MessageDecrypter, MessageEncrypter, OutboundOpaqueMessage,
        OutboundPlainMessage, Tls13AeadAlgorithm, UnsupportedOperationError,
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{
        CipherSuiteCommon, ClientConfig, ClientConnection, ConnectionTrafficSecrets, ContentType,
        RootCertStore, SupportedCipherSuite, Tls13CipherSuite,
    };
    use std::io::{Read, Write};
    use std::process::Command;
    use std::sync::OnceLock;
    use std::time::Duration;

    /// A self-signed certificate for `localhost` and its key, in PEM, made once by
    /// `openssl` and kept in memory (written to its standard output, so no file is left).
    fn cert_and_key() -> &'static [u8] {
        static PEM: OnceLock<Vec<u8>> = OnceLock::new();
        PEM.get_or_init(|| {
            let made = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
                .args([
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=DNS:localhost",
                ])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .args(["-keyout", "/dev/stdout", "-out", "/dev/stdout"])
                .output()
                .expect("run openssl");
            assert!(made.status.success(), "openssl: {made:?}");
            made.stdout
        })
    }

    fn certificate() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(cert_and_key()).expect("the certificate")
    }

    fn server_config(suite: SupportedCipherSuite) -> Arc<ServerConfig> {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::ring::default_provider()
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate()],
                PrivateKeyDer::from_pem_slice(cert_and_key()).expect("the key"),
            )
            .expect("a server config");
        // Nothing follows the handshake: what the client reads next is what `close` sent.
        config.send_tls13_tickets = 0;
        Arc::new(config)
    }

    fn client() -> ClientConnection {
        let mut roots = RootCertStore::empty();
        roots.add(certificate()).expect("trust it");
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("a server name");
        ClientConnection::new(Arc::new(config), name).expect("a client")
    }

    const SUITE: SupportedCipherSuite =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;

    /// The server's end of a loopback pair (non-blocking, as in the loop) and the client's.
    fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("non-blocking");
        (TcpStream::from_std(accepted), client)
    }

    /// The handshake, step by step: the client's hello, the server's flight, the client's
    /// Finished.
    fn handshake(
        layer: &mut TlsLayer,
        stream: &mut TcpStream,
        client: &mut ClientConnection,
        socket: &mut std::net::TcpStream,
    ) {
        client.write_tls(socket).expect("the client hello");
        read_what_arrived(layer, stream);
        layer.send(stream).expect("the server's flight");
        client.complete_io(socket).expect("the client's end of it");
        read_what_arrived(layer, stream);
        assert!(!layer.is_handshaking() && !layer.wants_write());
    }

    /// Waits for what the client sent, and lets the layer take it all (it holds no plaintext).
    fn read_what_arrived(layer: &mut TlsLayer, stream: &mut TcpStream) {
        let mut poll = mio::Poll::new().expect("a poll");
        let mut events = mio::Events::with_capacity(1);
        let registry = poll.registry();
        registry
            .register(stream, mio::Token(0), mio::Interest::READABLE)
            .expect("register");
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .expect("poll");
        assert!(!events.is_empty(), "the client's bytes did not come");
        poll.registry().deregister(stream).expect("deregister");
        let mut buf = [0u8; 64];
        assert!(matches!(layer.read(stream, &mut buf), Received::WouldBlock));
    }

    /// Everything the server sent until it closed.
    fn rest_of(socket: &mut std::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        socket.read_to_end(&mut got).expect("read to the end");
        got
    }

    #[test]
    fn closing_mid_handshake_sends_the_flight_and_nothing_more() {
        let (mut stream, mut socket) = pair();
        let mut layer = TlsLayer::new(server_config(SUITE)).expect("a layer");
        let mut client = client();
        client.write_tls(&mut socket).expect("the client hello");
        read_what_arrived(&mut layer, &mut stream);
        assert!(layer.is_handshaking() && layer.wants_write());
        let pending = layer.outgoing.len() - layer.sent;
        layer.close(&mut stream);
        drop(stream);
        assert_eq!(rest_of(&mut socket).len(), pending);
    }

    #[test]
    fn closing_sends_a_close_notify() {
        let (mut stream, mut socket) = pair();
        let mut layer = TlsLayer::new(server_config(SUITE)).expect("a layer");
        let mut client = client();
        handshake(&mut layer, &mut stream, &mut client, &mut socket);
        // A record torn in two waits in `incoming`: close leaves it be.
        client.writer().write_all(b"QUIT\r\n").expect("plaintext");
        let mut record = Vec::new();
        client.write_tls(&mut record).expect("a record");
        socket
            .write_all(&record[..record.len() / 2])
            .expect("half a record");
        read_what_arrived(&mut layer, &mut stream);
        assert_eq!(layer.incoming.len(), record.len() / 2);
        layer.close(&mut stream);
        drop(stream);
        let rest = rest_of(&mut socket);
        assert!(rest.len() <= 64, "one short record: {} bytes", rest.len());
        client.read_tls(&mut &rest[..]).expect("the last records");
        let state = client.process_new_packets().expect("a clean end");
        assert!(state.peer_has_closed(), "the client saw a close_notify");
    }

    /// A cipher that works, except that it panics when asked to encrypt an alert: a stand-in
    /// for a rustls bug met while closing.
    struct PanicsOnAlerts(&'static dyn Tls13AeadAlgorithm);
    struct PanickingEncrypter(Box<dyn MessageEncrypter>);

    impl Tls13AeadAlgorithm for PanicsOnAlerts {
        fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
            Box::new(PanickingEncrypter(self.0.encrypter(key, iv)))
        }
        fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
            self.0.decrypter(key, iv)
        }
        fn key_len(&self) -> usize {
            self.0.key_len()
        }
        fn extract_keys(
            &self,
            key: AeadKey,
            iv: Iv,
        ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
            self.0.extract_keys(key, iv)
        }
    }

    impl MessageEncrypter for PanickingEncrypter {
        fn encrypt(
            &mut self,
            msg: OutboundPlainMessage<'_>,
            seq: u64,
        ) -> Result<OutboundOpaqueMessage, Error> {
            assert_ne!(msg.typ, ContentType::Alert, "a broken cipher");
            self.0.encrypt(msg, seq)
        }
        fn encrypted_payload_len(&self, payload_len: usize) -> usize {
            self.0.encrypted_payload_len(payload_len)
        }
    }

    fn suite_that_panics_on_alerts() -> SupportedCipherSuite {
        let SupportedCipherSuite::Tls13(suite) = SUITE else {
            unreachable!("a TLS 1.3 suite")
        };
        let aead: &'static PanicsOnAlerts = Box::leak(Box::new(PanicsOnAlerts(suite.aead_alg)));
        SupportedCipherSuite::Tls13(Box::leak(Box::new(Tls13CipherSuite {
            common: CipherSuiteCommon { ..suite.common },
            aead_alg: aead,
            ..*suite
        })))
    }

    #[test]
    fn a_panic_in_rustls_while_closing_ends_only_this_connection() {
        let (mut stream, mut socket) = pair();
        let mut layer =
            TlsLayer::new(server_config(suite_that_panics_on_alerts())).expect("a layer");
        let mut client = client();
        handshake(&mut layer, &mut stream, &mut client, &mut socket);
        layer.close(&mut stream);
        assert!(layer.failed, "the panic is this connection's error");
        drop(stream);
        let rest = rest_of(&mut socket);
        assert!(rest.is_empty(), "a half-written record went: {rest:?}");
    }
}
