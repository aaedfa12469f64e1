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

    /// Whether TLS bytes wait to be sent.
    pub fn wants_write(&self) -> bool {
        self.sent < self.outgoing.len()
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
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
                let _ = write_into(&mut self.outgoing, 64, |out| {
                    traffic.queue_close_notify(out).map_err(encrypt_size)
                });
            }
            self.incoming.drain(..discard);
        }
        let _ = self.send(stream);
    }

    /// [`TlsLayer::pump`], with a rustls panic turned into this connection's error: what one
    /// client sends must not end every other connection. (A panic there would be a rustls
    /// bug or a broken contract of its unbuffered API; the connection is closed.)
    fn guarded_pump(&mut self, to_send: &[u8]) -> Result<usize, Error> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.pump(to_send)))
            .unwrap_or_else(|_| {
                self.failed = true;
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
            self.incoming.drain(..discard.min(self.incoming.len()));
            match step {
                Ok(false) => {}
                Ok(true) => return Ok(taken),
                Err(e) => {
                    self.failed = true;
                    // rustls queued an alert: the next call hands it over to be sent.
                    self.take_alert();
                    return Err(e);
                }
            }
        }
    }

    /// After a fatal error: the alert rustls queued, into `outgoing`.
    fn take_alert(&mut self) {
        // The same buffer as before: rustls remembers positions in it.
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut encoding)) = state {
            let _ = write_into(&mut self.outgoing, 64, |out| {
                encoding.encode(out).map_err(encode_size)
            });
        }
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
