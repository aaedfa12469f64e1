//! The message load generator: a fixed number of messages sent over parallel sessions, one
//! thread per session, as fast as the server answers.
//!
//! One blocking thread per session is the simplest generator that std allows and is cheap
//! enough here: each reply wakes exactly one thread, as each would wake one coroutine of an
//! event loop, and the generator's own CPU is reported beside the server's so a run where
//! the client was the bottleneck shows itself. Sessions take messages from one shared
//! counter (as smtp-source does), so a slow session does not leave the others idle at the
//! end.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::smtp::{self, SmtpConn};

/// Errors after which one session gives up, so a broken server ends the run quickly.
const MAX_ERRORS_PER_SESSION: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialogue {
    /// One connection per session for the whole run; MAIL, RCPT and DATA leave in one write
    /// (RFC 2920 PIPELINING), then the message: two round trips a message.
    Pipelined,
    /// One connection per session; every command waits for its reply: four round trips.
    Lockstep,
    /// A connection per message: greeting, EHLO, the pipelined envelope, the message, QUIT.
    PerConnection,
}

pub struct Load {
    pub addr: SocketAddr,
    pub sessions: usize,
    pub messages: usize,
    pub dialogue: Dialogue,
}

pub struct Outcome {
    /// From the moment every session was ready to the last one's end.
    pub wall: Duration,
    pub delivered: usize,
    pub errors: usize,
    pub first_error: Option<String>,
}

struct Tally {
    delivered: usize,
    errors: usize,
    first_error: Option<String>,
}

/// Sends `load.messages` messages and waits for every final reply.
pub fn run(load: &Load) -> Outcome {
    let message = smtp::message("");
    let next = AtomicUsize::new(0);
    // The sessions and this thread: timing starts when all sessions have connected.
    let ready = Barrier::new(load.sessions + 1);
    let tally = Mutex::new(Tally {
        delivered: 0,
        errors: 0,
        first_error: None,
    });
    let mut started = Instant::now();
    thread::scope(|scope| {
        for _ in 0..load.sessions {
            scope.spawn(|| {
                let session = session(load, &message, &next, &ready);
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                tally.delivered += session.delivered;
                tally.errors += session.errors;
                if tally.first_error.is_none() {
                    tally.first_error = session.first_error;
                }
            });
        }
        ready.wait();
        started = Instant::now();
    });
    let wall = started.elapsed();
    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    Outcome {
        wall,
        delivered: tally.delivered,
        errors: tally.errors,
        first_error: tally.first_error,
    }
}

fn session(load: &Load, message: &[u8], next: &AtomicUsize, ready: &Barrier) -> Tally {
    let mut tally = Tally {
        delivered: 0,
        errors: 0,
        first_error: None,
    };
    let fail = |tally: &mut Tally, e: io::Error| {
        tally.errors += 1;
        tally.first_error.get_or_insert_with(|| e.to_string());
    };
    let mut conn = None;
    if load.dialogue != Dialogue::PerConnection {
        match SmtpConn::open_ehlo(load.addr) {
            Ok(c) => conn = Some(c),
            Err(e) => fail(&mut tally, e),
        }
    }
    // Every session reaches the barrier, connected or not, or the others would wait forever.
    ready.wait();
    while tally.errors < MAX_ERRORS_PER_SESSION
        && next.fetch_add(1, Ordering::Relaxed) < load.messages
    {
        match one_message(load, &mut conn, message) {
            Ok(()) => tally.delivered += 1,
            Err(e) => {
                // The connection is in an unknown state: the next message starts afresh.
                conn = None;
                fail(&mut tally, e);
            }
        }
    }
    if let Some(conn) = conn {
        let _ = conn.quit();
    }
    tally
}

fn one_message(load: &Load, conn: &mut Option<SmtpConn>, message: &[u8]) -> io::Result<()> {
    if load.dialogue == Dialogue::PerConnection {
        let mut c = SmtpConn::open_ehlo(load.addr)?;
        pipelined(&mut c, message)?;
        return c.quit();
    }
    let c = match conn {
        Some(c) => c,
        None => conn.insert(SmtpConn::open_ehlo(load.addr)?),
    };
    match load.dialogue {
        Dialogue::Lockstep => lockstep(c, message),
        _ => pipelined(c, message),
    }
}

fn pipelined(c: &mut SmtpConn, message: &[u8]) -> io::Result<()> {
    c.send(smtp::ENVELOPE)?;
    c.expect(250)?;
    c.expect(250)?;
    c.expect(354)?;
    c.send(message)?;
    c.expect(250)
}

fn lockstep(c: &mut SmtpConn, message: &[u8]) -> io::Result<()> {
    for (command, code) in [(smtp::MAIL, 250), (smtp::RCPT, 250), (smtp::DATA, 354)] {
        c.send(command)?;
        c.expect(code)?;
    }
    c.send(message)?;
    c.expect(250)
}
