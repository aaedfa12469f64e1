//! One client SMTP connection: blocking std socket (plain, or TLS over it), bytes out, whole
//! replies in.
//!
//! Built for the load generator's hot path: the messages are prepared once as bytes, and a
//! reply is only looked at for its code, read through one reusable buffer that keeps what
//! arrived beyond the reply (pipelined replies often come in one segment). No allocation per
//! message. Every read and write has a time limit so a stuck server fails the run instead of
//! hanging it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long any one reply may take before the server is called stuck.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may take to close after its 221.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The dialogue's fixed parts, the same bytes for every message and every server.
pub const EHLO: &[u8] = b"EHLO bench.local\r\n";
pub const MAIL: &[u8] = b"MAIL FROM:<bench@bench.local>\r\n";
pub const RCPT: &[u8] = b"RCPT TO:<sink@bench.local>\r\n";
pub const DATA: &[u8] = b"DATA\r\n";
pub const ENVELOPE: &[u8] =
    b"MAIL FROM:<bench@bench.local>\r\nRCPT TO:<sink@bench.local>\r\nDATA\r\n";
pub const NOOP: &[u8] = b"NOOP\r\n";
pub const QUIT: &[u8] = b"QUIT\r\n";

/// Payload bytes per message, as `smtp-source -l 1024` sends.
pub const PAYLOAD_BYTES: usize = 1024;

/// A message of a few headers and `PAYLOAD_BYTES` of body in 78-octet lines, with its final
/// dot. `extra_header` (a whole line with CRLF, or empty) goes first, where switches are read.
pub fn message(extra_header: &str) -> Vec<u8> {
    let mut text = format!(
        "{extra_header}From: <bench@bench.local>\r\nTo: <sink@bench.local>\r\n\
         Subject: blackhole load bench\r\n\r\n"
    )
    .into_bytes();
    let mut left = PAYLOAD_BYTES;
    while left > 0 {
        let line = left.min(80) - 2;
        text.extend(std::iter::repeat_n(b'x', line));
        text.extend_from_slice(b"\r\n");
        left -= line + 2;
    }
    text.extend_from_slice(b".\r\n");
    text
}

/// What an SMTP connection runs over: a blocking socket, or a TLS stream on one. The socket
/// is where time limits are set.
pub trait Transport: Read + Write {
    fn socket(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

pub struct SmtpConn<S = TcpStream> {
    stream: S,
    buf: Box<[u8]>,
    /// `buf[start..end]` is received and not yet handed out.
    start: usize,
    end: usize,
}

/// A blocking socket connected to `addr`, with the time limits of every reply and without
/// Nagle: commands are small and each one waits for its reply, Nagle would only delay them.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl SmtpConn {
    /// Connects and reads the greeting, which must be 220.
    pub fn open(addr: SocketAddr) -> io::Result<SmtpConn> {
        let mut conn = SmtpConn::over(connect(addr)?);
        conn.expect(220)?;
        Ok(conn)
    }

    /// Connects, reads the greeting and says EHLO.
    pub fn open_ehlo(addr: SocketAddr) -> io::Result<SmtpConn> {
        let mut conn = SmtpConn::open(addr)?;
        conn.send(EHLO)?;
        conn.expect(250)?;
        Ok(conn)
    }
}

impl<S: Transport> SmtpConn<S> {
    /// An SMTP connection on `stream`, nothing read yet (the greeting is still to come).
    pub fn over(stream: S) -> SmtpConn<S> {
        SmtpConn {
            stream,
            // Enough for any reply here (EHLO's is about 250 octets) and for a few pipelined
            // ones; kept small because the idle tests hold 10,000 of these.
            buf: vec![0; 1024].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn set_reply_timeout(&self, limit: Duration) -> io::Result<()> {
        self.stream.socket().set_read_timeout(Some(limit))
    }

    /// Writes `bytes` and flushes them (a TLS stream may hold them back until then).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one whole reply (every continuation line of a multi-line one) and returns its
    /// code.
    pub fn reply(&mut self) -> io::Result<u16> {
        loop {
            while let Some(newline) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line = &self.buf[self.start..self.start + newline];
                self.start += newline + 1;
                // "250-..." continues the reply; "250 ..." or a bare "250" ends it.
                if line.get(3) == Some(&b'-') {
                    continue;
                }
                return parse_code(line);
            }
            self.fill()?;
        }
    }

    /// Reads one reply and fails unless its code is `code`.
    pub fn expect(&mut self, code: u16) -> io::Result<()> {
        match self.reply()? {
            got if got == code => Ok(()),
            got => Err(io::Error::other(format!("expected {code}, got {got}"))),
        }
    }

    /// Sends QUIT, reads 221, then waits for the server to close, so that the server (not
    /// the bench) keeps the TIME_WAIT state and the bench's ephemeral ports stay free for
    /// the next tens of thousands of connections.
    pub fn quit(mut self) -> io::Result<()> {
        self.send(QUIT)?;
        self.expect(221)?;
        // A shorter wait than for a reply, unless the caller has set one shorter still.
        let socket = self.stream.socket();
        let limit = socket
            .read_timeout()?
            .map_or(CLOSE_TIMEOUT, |t| t.min(CLOSE_TIMEOUT));
        socket.set_read_timeout(Some(limit))?;
        let mut rest = [0u8; 64];
        loop {
            match self.stream.read(&mut rest) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads more bytes, making room first by dropping what was handed out.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::other(
                "reply line longer than the client's buffer",
            ));
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn parse_code(line: &[u8]) -> io::Result<u16> {
    line.get(..3)
        .filter(|digits| digits.iter().all(u8::is_ascii_digit))
        .map(|d| d.iter().fold(0, |n, &b| n * 10 + u16::from(b - b'0')))
        .ok_or_else(|| {
            io::Error::other(format!(
                "not an SMTP reply: {:?}",
                String::from_utf8_lossy(line)
            ))
        })
}
