//! Many connections at once: opening thousands with many in flight, holding them idle,
//! checking that each still answers, and sending each a delayed message at the same moment.
//!
//! Opening uses one thread per connection in flight (blocking connect, then the greeting):
//! std has no non-blocking connect, and a few hundred small-stacked threads are cheap. Work
//! on connections already open is split into a few chunks, one thread each, which first
//! write to every connection of its chunk and only then read the replies, so that all
//! requests are in flight together as they would be from thousands of clients. The same
//! works on TLS connections (`SmtpConn` over a `Transport`), which `tls` opens with
//! `open_with`.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::smtp::{self, SmtpConn, Transport};

/// Threads that work through connections already open.
const WORKERS: usize = 16;
/// Stack of each opening thread: it only holds a connection's small buffer.
const OPENER_STACK: usize = 64 * 1024;
/// No new connection is started after this long (conns.py's default deadline), so a server
/// that stops accepting ends the test instead of stalling it for every connection left.
const OPEN_DEADLINE: Duration = Duration::from_secs(120);
/// How long closing all connections may take, so a server that does not close after QUIT
/// costs one wait, not one per connection.
const QUIT_DEADLINE: Duration = Duration::from_secs(10);

/// How far a connection is taken before it counts as open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connected and greeted (220 read).
    Greeted,
    /// EHLO, MAIL, RCPT and DATA done: the server waits for the message (354 read).
    InData,
}

pub struct Opened<S = TcpStream> {
    pub conns: Vec<SmtpConn<S>>,
    /// From the first connect to the last connection ready.
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

/// Opens `n` connections to `addr`, `in_flight` at a time, each taken to `stage`.
pub fn open(addr: SocketAddr, n: usize, in_flight: usize, stage: Stage) -> Opened {
    open_with(n, in_flight, OPENER_STACK, || open_one(addr, stage))
}

/// Opens `n` connections with `open_one`, on `openers` threads of `stack` bytes of stack
/// each, every thread taking the next connection to open until `n` have been tried (or
/// `OPEN_DEADLINE` has passed). Each thread keeps the connections it opened.
pub fn open_with<S: Send>(
    n: usize,
    openers: usize,
    stack: usize,
    open_one: impl Fn() -> io::Result<SmtpConn<S>> + Sync,
) -> Opened<S> {
    let next = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    let openers = openers.min(n).max(1);
    // Thread creation is not part of the time to open.
    let ready = Barrier::new(openers + 1);
    let mut started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..openers)
            .map(|_| {
                thread::Builder::new()
                    .stack_size(stack)
                    .spawn_scoped(scope, || {
                        let mut mine = Vec::new();
                        ready.wait();
                        let deadline = Instant::now() + OPEN_DEADLINE;
                        while Instant::now() < deadline && next.fetch_add(1, Ordering::Relaxed) < n
                        {
                            match open_one() {
                                Ok(conn) => mine.push(conn),
                                Err(e) => {
                                    let mut first =
                                        first_error.lock().unwrap_or_else(|e| e.into_inner());
                                    first.get_or_insert_with(|| e.to_string());
                                }
                            }
                        }
                        mine
                    })
                    .expect("spawn an opening thread")
            })
            .collect();
        ready.wait();
        started = Instant::now();
        for handle in handles {
            conns.extend(handle.join().unwrap_or_default());
        }
    });
    Opened {
        elapsed: started.elapsed(),
        conns,
        first_error: first_error.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

fn open_one(addr: SocketAddr, stage: Stage) -> io::Result<SmtpConn> {
    if stage == Stage::Greeted {
        return SmtpConn::open(addr);
    }
    let mut conn = SmtpConn::open_ehlo(addr)?;
    conn.send(smtp::ENVELOPE)?;
    conn.expect(250)?;
    conn.expect(250)?;
    conn.expect(354)?;
    Ok(conn)
}

/// NOOP on every connection, all in flight together. Returns how many answered 250 and the
/// first thing that went wrong otherwise.
pub fn noop_all<S: Transport + Send>(conns: &mut [SmtpConn<S>]) -> (usize, Option<String>) {
    let answered = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    let per_worker = chunk_size(conns.len());
    for_chunks(conns, per_worker, |chunk| {
        let mut sent = vec![false; chunk.len()];
        for (conn, sent) in chunk.iter_mut().zip(&mut sent) {
            *sent = conn.send(smtp::NOOP).is_ok();
        }
        for (conn, sent) in chunk.iter_mut().zip(sent) {
            let outcome = if sent {
                conn.expect(250)
            } else {
                Err(io::Error::other("NOOP could not be sent"))
            };
            match outcome {
                Ok(()) => {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    });
    let first = first_error.into_inner().unwrap_or_else(|e| e.into_inner());
    (answered.into_inner(), first)
}

/// What came back for the delayed messages.
pub struct Delayed {
    /// For each message answered 250: when it was written, and how long its reply took.
    pub answered: Vec<(Instant, Duration)>,
    pub failures: usize,
    pub first_error: Option<String>,
}

impl Delayed {
    /// Reply times, in the order the messages were written.
    pub fn latencies_in_write_order(&self) -> Vec<Duration> {
        let mut answered = self.answered.clone();
        answered.sort_by_key(|&(written, _)| written);
        answered.into_iter().map(|(_, latency)| latency).collect()
    }

    /// From the first message written to the last.
    pub fn write_spread(&self) -> Duration {
        let written = self.answered.iter().map(|&(written, _)| written);
        match (written.clone().min(), written.max()) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }
}

/// Sends `message` (ending in its final dot) on every connection, as fast as `threads`
/// threads can write, and times each final reply from the moment its own message was
/// written. Each thread reads its replies in the order it wrote: they come back in about
/// that order, so one wake-up serves most of a chunk.
pub fn send_delayed(
    conns: &mut [SmtpConn],
    message: &[u8],
    wait: Duration,
    threads: usize,
) -> Delayed {
    let per_thread = conns.len().div_ceil(threads.max(1)).max(1);
    // Every chunk's thread writes only once all are ready, so the writes bunch together.
    let ready = Barrier::new(conns.len().div_ceil(per_thread).max(1));
    let answered = Mutex::new(Vec::with_capacity(conns.len()));
    let first_error = Mutex::new(None);
    for_chunks(conns, per_thread, |chunk| {
        for conn in chunk.iter_mut() {
            let _ = conn.set_reply_timeout(wait);
        }
        let mut written = Vec::with_capacity(chunk.len());
        ready.wait();
        for conn in chunk.iter_mut() {
            let at = Instant::now();
            written.push(conn.send(message).map(|()| at));
        }
        let mut mine = Vec::with_capacity(chunk.len());
        for (conn, written) in chunk.iter_mut().zip(&written) {
            let outcome = match written {
                Ok(at) => match conn.reply() {
                    Ok(250) => Ok((*at, at.elapsed())),
                    Ok(code) => Err(format!("final reply {code}")),
                    Err(e) => Err(format!("no final reply: {e}")),
                },
                Err(e) => Err(format!("message not sent: {e}")),
            };
            match outcome {
                Ok(sample) => mine.push(sample),
                Err(e) => {
                    let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(e);
                }
            }
            let _ = conn.set_reply_timeout(smtp::REPLY_TIMEOUT);
        }
        answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(mine);
    });
    let answered = answered.into_inner().unwrap_or_else(|e| e.into_inner());
    Delayed {
        failures: conns.len() - answered.len(),
        answered,
        first_error: first_error.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

/// QUIT on every connection, waiting for each server-side close (see `SmtpConn::quit`),
/// all within `QUIT_DEADLINE`; connections still open then are simply dropped.
pub fn quit_all<S: Transport + Send>(conns: Vec<SmtpConn<S>>) {
    let per_worker = chunk_size(conns.len());
    let deadline = Instant::now() + QUIT_DEADLINE;
    let mut conns = conns.into_iter();
    thread::scope(|scope| {
        loop {
            let chunk: Vec<SmtpConn<S>> = conns.by_ref().take(per_worker).collect();
            if chunk.is_empty() {
                break;
            }
            scope.spawn(move || {
                for conn in chunk {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || conn.set_reply_timeout(left).is_err() {
                        continue;
                    }
                    let _ = conn.quit();
                }
            });
        }
    });
}

/// Runs `work` on chunks of `per_thread` connections, a thread each, in parallel.
fn for_chunks<S: Send>(
    conns: &mut [SmtpConn<S>],
    per_thread: usize,
    work: impl Fn(&mut [SmtpConn<S>]) + Sync,
) {
    thread::scope(|scope| {
        for chunk in conns.chunks_mut(per_thread) {
            let work = &work;
            scope.spawn(move || work(chunk));
        }
    });
}

/// Connections per worker so that `WORKERS` threads (or fewer) cover `len`.
fn chunk_size(len: usize) -> usize {
    len.div_ceil(WORKERS).max(1)
}
