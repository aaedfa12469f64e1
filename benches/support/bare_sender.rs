//! The floor for delayed replies: a bare sender that answers each message after the delay
//! and does nothing else, run as a process of its own like the server under test.
//!
//! It speaks just enough SMTP for the bench's client: a greeting, `250` to every command
//! line but DATA (`354`) and QUIT (`221`, then close), and after DATA the message up to
//! CRLF.CRLF, whose `250 2.0.0 OK` goes once the delay has passed, from one thread with one
//! `mio` poll and a queue of deadlines in arrival order. The connections thus have the same
//! history as blackhole's when the replies go. Under the same client, the difference
//! between its lateness and blackhole's is what blackhole adds; its own lateness is what
//! the kernel's loopback costs on this machine (each reply's send runs the client's TCP
//! receive path and wakes it).
//!
//! The bench starts it by running its own executable again with `BARE_SENDER_ENV` set to
//! the delay in milliseconds; the child prints its port on stdout.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use blackhole::event_loop::clock::wait_for;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::procfs;

const BARE_SENDER_ENV: &str = "BLACKHOLE_BENCH_BARE_SENDER";
const LISTENER: Token = Token(usize::MAX);
const GREETING: &[u8] = b"220 bare sender\r\n";
const REPLY: &[u8] = b"250 2.0.0 OK\r\n";
const END_OF_MESSAGE: &[u8] = b"\r\n.\r\n";

/// Runs the bare sender if this process was started as one, and says how it ended.
pub fn run_if_asked() -> Option<ExitCode> {
    let millis: u64 = std::env::var(BARE_SENDER_ENV).ok()?.parse().ok()?;
    Some(match serve(Duration::from_millis(millis)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare sender: {e}");
            ExitCode::FAILURE
        }
    })
}

pub struct BareSender {
    pub addr: SocketAddr,
    child: Child,
}

impl BareSender {
    pub fn start(delay: Duration) -> io::Result<BareSender> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(BARE_SENDER_ENV, delay.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout).read_line(&mut line)?;
        }
        match line.trim().parse::<u16>() {
            Ok(port) => Ok(BareSender {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                child,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::other("the bare sender did not start"))
            }
        }
    }

    pub fn cpu_seconds(&self) -> f64 {
        procfs::cpu_seconds(self.child.id())
    }
}

impl Drop for BareSender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Conn {
    /// None once the client has said QUIT.
    stream: Option<TcpStream>,
    /// Input not yet answered: a line, or the message so far (a few hundred octets).
    received: Vec<u8>,
    in_message: bool,
}

impl Conn {
    /// Answers every complete command line, or notes the message's end; returns whether
    /// the message has just ended.
    fn answer(&mut self) -> bool {
        if self.in_message {
            if !self.received.ends_with(END_OF_MESSAGE) {
                return false;
            }
            self.received.clear();
            self.in_message = false;
            return true;
        }
        while let Some(newline) = self.received.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.received.drain(..=newline).collect();
            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
            let reply: &[u8] = match &verb[..] {
                b"DATA" => {
                    self.in_message = true;
                    b"354 go on\r\n"
                }
                b"QUIT" => b"221 bye\r\n",
                _ => b"250 ok\r\n",
            };
            if let Some(stream) = &mut self.stream {
                let _ = stream.write(reply);
            }
            if verb == b"QUIT" {
                self.stream = None;
                return false;
            }
        }
        false
    }
}

fn serve(delay: Duration) -> io::Result<()> {
    procfs::raise_nofile_limit();
    let mut listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("{}", listener.local_addr()?.port());
    io::stdout().flush()?;

    let mut conns: Vec<Conn> = Vec::new();
    // Deadlines come in arrival order, so the queue is sorted by deadline.
    let mut due: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        // Long waits stop short of the kernel's slack on them, as blackhole's do.
        let timeout = due
            .front()
            .map(|&(at, _)| wait_for(at.saturating_duration_since(Instant::now())));
        poll.poll(&mut events, timeout)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    poll.registry().register(
                        &mut stream,
                        Token(conns.len()),
                        Interest::READABLE,
                    )?;
                    let _ = stream.write(GREETING);
                    conns.push(Conn {
                        stream: Some(stream),
                        received: Vec::new(),
                        in_message: false,
                    });
                }
                continue;
            }
            let index = event.token().0;
            let conn = &mut conns[index];
            while let Some(stream) = &mut conn.stream {
                match stream.read(&mut buf) {
                    Ok(0) => conn.stream = None,
                    Ok(n) => {
                        conn.received.extend_from_slice(&buf[..n]);
                        if conn.answer() {
                            due.push_back((Instant::now() + delay, index));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A connection the client dropped: nothing more to do for it.
                    Err(_) => conn.stream = None,
                }
            }
        }
        let now = Instant::now();
        while let Some(&(at, index)) = due.front() {
            if at > now {
                break;
            }
            due.pop_front();
            if let Some(stream) = &mut conns[index].stream {
                // A few octets into an empty socket buffer: written whole or not at all.
                let _ = stream.write(REPLY);
            }
        }
    }
}
