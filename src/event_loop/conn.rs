//! One client connection: its socket, its TLS state, its session, and the bytes in flight.
//!
//! Owns the buffers and the socket calls (drained until `WouldBlock`, `Interrupted` retried,
//! `Ok(0)` taken as the client's end), plain or through rustls, and reports what happened as
//! a closed set of outcomes. What to do about it is the server's business; what to reply,
//! the session's.

use std::io::{self, Read, Write};
use std::net::IpAddr;

use mio::Interest;
use mio::net::TcpStream;

use super::timer::TimerKey;
use super::tls::TlsLayer;
use super::witness::Record;
use crate::smtp::session::Session;

/// The most listeners a loop serves: a connection names its own in one byte.
pub const MAX_LISTENERS: usize = u8::MAX as usize + 1;

/// Buffers larger than this are given back to the allocator once they empty; a smaller
/// output buffer goes back to the loop, to be lent again.
const KEEP_CAPACITY: usize = 1024;

/// Fields in order of alignment, laid out as written (`repr(C)`): the compiler's own order
/// left eight bytes of padding, and every connection, idle or not, pays for its size.
#[repr(C)]
pub struct Conn {
    pub session: Session,
    /// Input the session has not used yet: an unfinished line, or input that waits for a
    /// pause to end or for output to drain.
    pub tail: Vec<u8>,
    /// Replies not yet sent; `out[..written]` has gone. Without a buffer of its own while
    /// nothing is pending: replies are written into the loop's spare one, lent until they
    /// have gone, so they go from memory that is warm in the cache, and an idle connection
    /// holds no output buffer.
    pub out: Vec<u8>,
    pub written: usize,
    /// The TLS layer, from the first byte (SMTPS) or after STARTTLS.
    pub tls: Option<Box<TlsLayer>>,
    /// What its event lines need, only while the event log is on.
    pub record: Option<Box<Record>>,
    /// A serial number, for logs and to tell this connection from a later one in its slot.
    pub id: u64,
    /// When the client last completed a line, in ticks: the idle timeout counts from here.
    pub last_line_at: u64,
    pub idle_timer: Option<TimerKey>,
    pub delay_timer: Option<TimerKey>,
    pub stream: TcpStream,
    /// When it was accepted: the loop's milliseconds, low 32 bits (see [`Conn::age`]).
    pub opened_at: u32,
    /// Index of the listener it came through: its policy. (A configuration has at most 64;
    /// the loop takes at most [`MAX_LISTENERS`].) One byte, so that the flag of a connection
    /// awaiting its PROXY header costs an idle connection nothing.
    pub listener: u8,
    /// The client's address, as the rules see it.
    pub client: IpAddr,
    /// STARTTLS was accepted: TLS starts once the `220` has gone.
    pub starting_tls: bool,
    /// Whether the session has seen all of `tail` and needs more bytes to go on.
    pub tail_fed: bool,
    /// The socket may have bytes to read (readiness seen and not drained to `WouldBlock`).
    pub read_ready: bool,
    /// A throttled connection waits for its rest's timer before it reads again. The timer's
    /// key is not kept: a rest is never cancelled, and one that ends after its connection has
    /// gone finds no connection of its generation. So a throttled connection (its rate is
    /// the session's) holds no more than an idle one.
    pub resting: bool,
    /// The client has finished sending.
    pub peer_closed: bool,
    /// Readiness said the client has finished sending (its end is read after its bytes).
    pub end_announced: bool,
    /// Close once `out` has gone.
    pub closing: bool,
    /// The interest the socket is registered with; `None`: not registered (resting from a
    /// throttled read with nothing to send).
    pub interest: Option<Interest>,
    /// On the server's ready queue, to go on next turn.
    pub queued: bool,
    /// On a `proxy` listener, its PROXY header has not come yet: nothing has been said, and
    /// `client` is the proxy's address until the header names the client.
    pub awaiting_proxy: bool,
}

/// What one read gave.
pub enum Received {
    Bytes(usize),
    WouldBlock,
    /// The client shut down its side.
    End,
    Failed(io::Error),
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        listener: u8,
        client: IpAddr,
        id: u64,
        now: u64,
        tls: bool,
    ) -> Self {
        Conn {
            stream,
            tls: None,
            starting_tls: false,
            session: Session::new(tls),
            listener,
            client,
            id,
            tail: Vec::new(),
            tail_fed: false,
            out: Vec::new(),
            written: 0,
            last_line_at: now,
            idle_timer: None,
            delay_timer: None,
            read_ready: false,
            resting: false,
            peer_closed: false,
            end_announced: false,
            closing: false,
            interest: Some(Interest::READABLE),
            queued: false,
            awaiting_proxy: false,
            opened_at: now as u32,
            record: None,
        }
    }

    /// Milliseconds since it was accepted, `now` on the same clock. Kept in 32 bits so that
    /// every connection pays four bytes for it: right for connections younger than 49 days.
    pub fn age(&self, now: u64) -> u64 {
        u64::from((now as u32).wrapping_sub(self.opened_at))
    }

    /// The TLS version agreed, if any.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls.as_ref().and_then(|tls| tls.version())
    }

    /// Reads what the client sent: plaintext, through TLS where it is on.
    pub fn read(&mut self, buf: &mut [u8]) -> Received {
        match &mut self.tls {
            Some(tls) => tls.read(&mut self.stream, buf),
            None => read_socket(&mut self.stream, buf),
        }
    }

    /// Whether something can be sent now: replies wait inside TLS until its handshake ends.
    pub fn can_send(&self) -> bool {
        match &self.tls {
            Some(tls) => {
                tls.wants_write() || (self.written < self.out.len() && !tls.is_handshaking())
            }
            None => self.written < self.out.len(),
        }
    }

    /// Whether a TLS handshake is still going on.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    /// Writes pending output until it is gone or the socket is full. Returns the range of
    /// `out` taken by this call (for the debug log), or the error that ends the connection.
    pub fn flush(&mut self) -> io::Result<std::ops::Range<usize>> {
        let start = self.written;
        let Some(tls) = &mut self.tls else {
            write_socket(&mut self.stream, &self.out, &mut self.written)?;
            return Ok(start..self.written);
        };
        // Send first, and encrypt only once everything before has gone: the records held
        // stay bounded, and output left unsent always means the socket said WouldBlock.
        while tls.send(&mut self.stream)? && self.written < self.out.len() {
            let taken = tls.encrypt(&self.out[self.written..])?;
            self.written += taken;
            if taken == 0 {
                // Still in the handshake: whatever it produced goes now, the replies later.
                tls.send(&mut self.stream)?;
                break;
            }
        }
        Ok(start..self.written)
    }

    /// Before replies are written: a connection without output holds no buffer of its
    /// own, and borrows the loop's, which is warm in the cache.
    pub fn lend_output(&mut self, spare: &mut Vec<u8>) {
        if self.out.capacity() == 0 {
            std::mem::swap(&mut self.out, spare);
        }
    }

    /// Drops sent output; once all has gone, the buffer goes back to the loop (or to the
    /// allocator, if the loop has one or it grew large). The input tail is freed when it
    /// empties after growing large.
    pub fn compact(&mut self, spare: &mut Vec<u8>) {
        if self.written == self.out.len() {
            self.written = 0;
            self.out.clear();
            if spare.capacity() == 0 && self.out.capacity() <= KEEP_CAPACITY {
                std::mem::swap(&mut self.out, spare);
            } else {
                self.out = Vec::new();
            }
        }
        if self.tail.is_empty() && self.tail.capacity() > KEEP_CAPACITY {
            self.tail = Vec::new();
        }
    }

    /// Unsent replies, counting only what is still to go (encrypted ones wait in the TLS
    /// layer, bounded by [`super::tls::SEND_BUFFER_LIMIT`]).
    pub fn pending_output(&self) -> usize {
        self.out.len() - self.written
    }

    /// READABLE (it also reports the client's end and errors) unless a throttled read rests;
    /// WRITABLE only while output that can go waits for room in the socket. `None`: neither.
    pub fn wanted_interest(&self) -> Option<Interest> {
        match (!self.resting, self.can_send()) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    /// Before the socket closes: a TLS connection sends its close_notify. Best effort; the
    /// FIN that closing sends follows the replies, so the client reads them all.
    pub fn say_goodbye(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.close(&mut self.stream);
        }
    }
}

/// Writes `buf[*written..]` until it has all gone (true) or the socket is full (false),
/// moving `written` on; `Interrupted` is retried, and a socket that takes nothing ends the
/// connection like any other error.
pub fn write_socket(stream: &mut TcpStream, buf: &[u8], written: &mut usize) -> io::Result<bool> {
    while *written < buf.len() {
        match stream.write(&buf[*written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads once into `buf`, retrying `Interrupted`; `Ok(0)` is the client's end.
pub fn read_socket(stream: &mut TcpStream, buf: &mut [u8]) -> Received {
    loop {
        return match stream.read(buf) {
            Ok(0) => Received::End,
            Ok(n) => Received::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Received::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Received::Failed(e),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection on the accepting end of a loopback pair, and the client's end.
    fn pair() -> (Conn, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("its address"))
            .expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("non-blocking");
        let address = client.local_addr().expect("its address").ip();
        let conn = Conn::new(TcpStream::from_std(accepted), 0, address, 1, 0, false);
        (conn, client)
    }

    #[test]
    fn output_that_went_gives_the_buffer_back() {
        let (mut conn, mut client) = pair();
        let mut spare = Vec::with_capacity(256);
        conn.lend_output(&mut spare);
        assert_eq!(spare.capacity(), 0, "the spare is lent, not copied");
        conn.out.extend_from_slice(b"250 OK\r\n");
        assert_eq!(conn.flush().expect("flush"), 0..8);
        conn.compact(&mut spare);
        assert_eq!(
            conn.out.capacity(),
            0,
            "an idle connection holds no output buffer"
        );
        assert!(spare.capacity() >= 8, "the buffer is back with the loop");
        let mut got = [0u8; 8];
        client.read_exact(&mut got).expect("the reply arrives");
        assert_eq!(&got, b"250 OK\r\n");
    }

    #[test]
    fn unsent_output_keeps_its_buffer() {
        let (mut conn, _client) = pair();
        let mut spare = Vec::new();
        conn.lend_output(&mut spare);
        // More than the socket buffers hold while the client reads nothing.
        conn.out.resize(64 << 20, b'x');
        conn.flush().expect("flush");
        let pending = conn.pending_output();
        assert!(pending > 0, "the socket filled up");
        conn.compact(&mut spare);
        assert_eq!(
            spare.capacity(),
            0,
            "a buffer still in use is not the loop's"
        );
        assert_eq!(conn.pending_output(), pending);
        assert!(conn.out[conn.written..].iter().all(|&b| b == b'x'));
    }

    /// Every connection pays for this, idle or not; a throttled or delayed one holds nothing
    /// more, on the heap or here. (360 bytes when a throttle was boxed beside it.)
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_connection_is_no_larger_than_it_was() {
        let size = std::mem::size_of::<Conn>();
        println!("size_of::<Conn>() = {size}");
        assert!(size <= 344, "a connection takes {size} bytes");
    }

    #[test]
    fn a_large_buffer_goes_back_to_the_allocator() {
        let (mut conn, _client) = pair();
        let mut spare = Vec::new();
        conn.out = vec![b'x'; 4 * KEEP_CAPACITY];
        conn.written = conn.out.len();
        conn.compact(&mut spare);
        assert_eq!(conn.out.capacity(), 0);
        assert_eq!(spare.capacity(), 0, "the loop keeps only a small spare");
    }
}
