//! The event log's sending side: JSON lines go into a bounded buffer and from it into a
//! non-blocking pipe whose reader is a child process, the writer, that appends them to the
//! file (or copies them to standard output).
//!
//! The loop never waits for a disk: a slow or stuck file fills the pipe, then the buffer,
//! and from then on lines are dropped and counted, never half-sent and never kept without
//! bound. A writer that dies is replaced, at most once a second (less often while it keeps
//! dying). SIGHUP starts a new writer for the same path (after a log rotation renamed the
//! file) and the old one finishes the lines it has and exits when its pipe closes.
//!
//! The writer is this program run again with [`WRITER_FLAG`] (see `event_log_writer.rs`
//! beside `main.rs`); what it runs is a [`WriterCommand`], so that tests can start `sh`.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use log::warn;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// The first argument that makes this program an event log writer; the path follows it.
pub const WRITER_FLAG: &str = "--event-log-writer";
/// Bytes of whole lines waiting for the pipe; a line that does not fit is dropped.
pub const BUFFER_BYTES: usize = 1 << 20;
/// Unsent bytes past which a line is sent at once rather than at the end of the loop's turn,
/// so that one busy turn does not fill the buffer while the pipe has room.
const SEND_AT: usize = 64 << 10;
/// The pipe's size, asked for; the kernel may give less (its `pipe-max-size`).
const PIPE_BYTES: i32 = 1 << 20;
/// The shortest and longest wait before starting a writer again after one died; the wait
/// doubles while writers keep dying young.
const RESTART_WAIT: Duration = Duration::from_secs(1);
const RESTART_WAIT_MAX: Duration = Duration::from_secs(64);
/// Writers that were replaced and are still finishing their lines; past this, the oldest is
/// no longer waited for.
const MAX_RETIRING: usize = 8;
/// How often `finish` looks again whether the writers have exited.
const EXIT_CHECK: Duration = Duration::from_millis(5);

/// How to start a writer: a program that reads lines on its standard input.
#[derive(Clone, Debug)]
pub struct WriterCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl WriterCommand {
    /// `program` run as the event log writer for `path` (`-`: standard output).
    pub fn writer_mode(program: &Path, path: &Path) -> WriterCommand {
        WriterCommand {
            program: program.to_path_buf(),
            args: vec![WRITER_FLAG.into(), path.as_os_str().to_owned()],
        }
    }

    /// This very program as the writer for `path`: `/proc/self/exe` rather than its name,
    /// so that a writer started after the binary was replaced is still this version.
    pub fn this_program(path: &Path) -> io::Result<WriterCommand> {
        let own = Path::new("/proc/self/exe");
        let program = if own.exists() {
            own.to_path_buf()
        } else {
            std::env::current_exe()?
        };
        Ok(WriterCommand::writer_mode(&program, path))
    }

    fn spawn(&self) -> io::Result<Child> {
        Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .spawn()
    }
}

/// A running writer and the pipe to it.
struct Writer {
    child: Child,
    pipe: ChildStdin,
    started: Instant,
}

/// The event log, as the loop holds it. Register nothing yourself: it registers its pipe
/// with `token` for WRITABLE and wants [`EventLog::flush`] called on that token's events.
pub struct EventLog {
    command: WriterCommand,
    registry: Registry,
    token: Token,
    writer: Option<Writer>,
    /// When a writer may be started again, after the last one died.
    next_start: Instant,
    restart_wait: Duration,
    /// Replaced writers finishing their lines.
    retiring: Vec<Child>,
    /// Whole lines; `buffer[..sent]` has gone into the pipe.
    buffer: Vec<u8>,
    sent: usize,
    /// Whether the pipe has the head of a line whose rest is still in the buffer.
    mid_line: bool,
    /// The pipe said it was full: nothing is tried until its WRITABLE event.
    pipe_full: bool,
    dropped: u64,
}

impl EventLog {
    /// Starts this program as the writer for `path` (`-`: standard output).
    pub fn open(path: &Path, registry: &Registry, token: Token) -> io::Result<EventLog> {
        EventLog::start(WriterCommand::this_program(path)?, registry, token)
    }

    /// Starts `command` as the writer. An error only when the process cannot be started;
    /// a writer that cannot open its file says so on standard error and exits.
    pub fn start(command: WriterCommand, registry: &Registry, token: Token) -> io::Result<Self> {
        let mut log = EventLog {
            command,
            registry: registry.try_clone()?,
            token,
            writer: None,
            next_start: Instant::now(),
            restart_wait: RESTART_WAIT,
            retiring: Vec::new(),
            buffer: Vec::new(),
            sent: 0,
            mid_line: false,
            pipe_full: false,
            dropped: 0,
        };
        log.writer = Some(log.new_writer()?);
        Ok(log)
    }

    /// Queues one line (its newline is added when missing) for the next [`EventLog::flush`].
    /// A line that does not fit in the buffer, holds a newline of its own, or comes while
    /// there is no writer, is dropped and counted. Never blocks.
    pub fn push(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if self.writer.is_none() {
            self.restart_if_due();
        }
        let fits = self.buffer.len() - self.sent + line.len() < BUFFER_BYTES;
        if self.writer.is_none() || !fits || memchr::memchr(b'\n', line).is_some() {
            self.dropped += 1;
            return;
        }
        // Sent by `flush`, once a turn of the loop (and on WRITABLE when the pipe was full),
        // so that a turn's lines cost one write, and the writer one read and one write.
        self.buffer.extend_from_slice(line);
        self.buffer.push(b'\n');
        if !self.pipe_full && self.buffer.len() - self.sent >= SEND_AT {
            self.flush();
        }
    }

    /// The end of the loop's turn: what its lines added goes, unless the pipe is full (its
    /// WRITABLE event will call [`EventLog::flush`]).
    pub fn end_turn(&mut self) {
        if !self.pipe_full && self.sent < self.buffer.len() {
            self.flush();
        }
    }

    /// Sends what the pipe takes: once a turn of the loop, and on the token's WRITABLE events.
    pub fn flush(&mut self) {
        let Some(writer) = &mut self.writer else {
            return;
        };
        self.pipe_full = false;
        while self.sent < self.buffer.len() {
            match writer.pipe.write(&self.buffer[self.sent..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.sent += n;
                    self.mid_line = self.buffer[self.sent - 1] != b'\n';
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pipe_full = true;
                    break;
                }
                Err(e) => return self.writer_died(&e),
            }
        }
        self.compact();
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Starts a new writer for the path (SIGHUP: the file may have been renamed); the old
    /// one writes the whole lines it was sent and exits. What waits in the buffer goes to
    /// the new one.
    pub fn reopen(&mut self) {
        self.flush();
        self.drop_rest_of_a_sent_line();
        self.retire_writer();
        self.restart_wait = RESTART_WAIT;
        match self.new_writer() {
            Ok(writer) => {
                self.writer = Some(writer);
                self.flush();
            }
            Err(e) => self.cannot_start(&e),
        }
    }

    /// [`EventLog::reopen`] at another path (SIGHUP with a changed `event_log`).
    pub fn reopen_at(&mut self, path: &Path) {
        match WriterCommand::this_program(path) {
            Ok(command) => self.reopen_with(command),
            Err(e) => warn!(
                "event log: cannot find this program to write to {}: {e}",
                path.display()
            ),
        }
    }

    /// [`EventLog::reopen`] with another writer, which later restarts start too.
    pub fn reopen_with(&mut self, command: WriterCommand) {
        self.command = command;
        self.reopen();
    }

    /// At exit: sends what can go before `deadline`, closes the pipe and waits, until
    /// `deadline` at most, for the writers to write what they were sent and exit. A writer
    /// still busy then is left to finish on its own. Returns the lines dropped in all.
    pub fn finish(mut self, deadline: Instant) -> u64 {
        if let Err(e) = self.send_until(deadline) {
            warn!("event log: cannot wait for the writer: {e}");
        }
        self.drop_waiting_lines();
        self.retire_writer();
        wait_for_exits(&mut self.retiring, deadline);
        if !self.retiring.is_empty() {
            warn!(
                "event log: {} writer(s) still writing at exit, left to finish",
                self.retiring.len()
            );
        }
        self.dropped
    }

    /// Sends the buffer, waiting for the pipe on a poll of its own, until it is sent or
    /// `deadline` passes.
    fn send_until(&mut self, deadline: Instant) -> io::Result<()> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        let fd = writer.pipe.as_raw_fd();
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&fd), Token(0), Interest::WRITABLE)?;
        let mut events = Events::with_capacity(1);
        loop {
            self.flush();
            let left = deadline.saturating_duration_since(Instant::now());
            if self.writer.is_none() || self.sent == self.buffer.len() || left.is_zero() {
                return Ok(());
            }
            match poll.poll(&mut events, Some(left)) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
                _ => {}
            }
        }
    }

    fn new_writer(&mut self) -> io::Result<Writer> {
        // A new pipe, empty.
        self.pipe_full = false;
        let mut child = self.command.spawn()?;
        let Some(pipe) = child.stdin.take() else {
            let _ = child.kill();
            return Err(io::Error::other("the writer has no standard input"));
        };
        let prepared = prepare_pipe(&pipe).and_then(|()| {
            self.registry.register(
                &mut SourceFd(&pipe.as_raw_fd()),
                self.token,
                Interest::WRITABLE,
            )
        });
        if let Err(e) = prepared {
            drop(pipe);
            self.retiring.push(child);
            return Err(e);
        }
        Ok(Writer {
            child,
            pipe,
            started: Instant::now(),
        })
    }

    fn restart_if_due(&mut self) {
        if Instant::now() < self.next_start {
            return;
        }
        self.reap();
        match self.new_writer() {
            Ok(writer) => self.writer = Some(writer),
            Err(e) => self.cannot_start(&e),
        }
    }

    fn cannot_start(&mut self, e: &io::Error) {
        warn!(
            "event log: cannot start a writer ({e}); lines are dropped until one starts, in {} s",
            self.restart_wait.as_secs()
        );
        self.schedule_restart();
    }

    /// The pipe broke: the writer exited. What it had not read is lost; what waits here is
    /// dropped too, and so is every line until a new writer starts.
    fn writer_died(&mut self, e: &io::Error) {
        let young = self
            .writer
            .as_ref()
            .is_some_and(|w| w.started.elapsed() < RESTART_WAIT_MAX);
        self.drop_waiting_lines();
        self.retire_writer();
        if !young {
            self.restart_wait = RESTART_WAIT;
        }
        warn!(
            "event log: the writer stopped ({e}); lines are dropped until a new one starts, in \
             {} s",
            self.restart_wait.as_secs()
        );
        self.schedule_restart();
    }

    fn schedule_restart(&mut self) {
        self.next_start = Instant::now() + self.restart_wait;
        self.restart_wait = (self.restart_wait * 2).min(RESTART_WAIT_MAX);
    }

    /// Closes the writer's pipe, so that it exits once it has written what it read.
    fn retire_writer(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = self
                .registry
                .deregister(&mut SourceFd(&writer.pipe.as_raw_fd()));
            drop(writer.pipe);
            self.retiring.push(writer.child);
        }
        self.reap();
    }

    /// Forgets the retired writers that have exited, and past [`MAX_RETIRING`] the oldest.
    fn reap(&mut self) {
        self.retiring
            .retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        let excess = self.retiring.len().saturating_sub(MAX_RETIRING);
        self.retiring.drain(..excess);
    }

    /// Counts every line not yet wholly in the pipe as dropped, and forgets them.
    fn drop_waiting_lines(&mut self) {
        let waiting = &self.buffer[self.sent..];
        self.dropped += memchr::memchr_iter(b'\n', waiting).count() as u64;
        self.buffer.clear();
        self.sent = 0;
        self.mid_line = false;
    }

    /// The writer drops a line it got only the head of: the rest must not reach the next.
    fn drop_rest_of_a_sent_line(&mut self) {
        if !self.mid_line {
            return;
        }
        if let Some(end) = memchr::memchr(b'\n', &self.buffer[self.sent..]) {
            self.sent += end + 1;
            self.dropped += 1;
        }
        self.mid_line = false;
        self.compact();
    }

    /// Moves what waits to the front once the sent part is the larger, so the buffer stays
    /// within twice its bound.
    fn compact(&mut self) {
        if self.sent == self.buffer.len() {
            self.buffer.clear();
            self.sent = 0;
        } else if self.sent >= BUFFER_BYTES / 2 {
            self.buffer.drain(..self.sent);
            self.sent = 0;
        }
    }
}

/// The write end non-blocking, and as large as the kernel lets it be.
fn prepare_pipe(pipe: &ChildStdin) -> io::Result<()> {
    fcntl(pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    // Without the right to a larger pipe it stays at the kernel's default (64 KiB): the
    // buffer still holds 1 MiB.
    let _ = fcntl(pipe, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    Ok(())
}

/// Waits until every child in `children` has exited (reaping them) or `deadline` passes;
/// those still running stay in `children`.
fn wait_for_exits(children: &mut Vec<Child>, deadline: Instant) {
    let mut pause = Poll::new().ok();
    let mut events = Events::with_capacity(1);
    loop {
        children.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        let left = deadline.saturating_duration_since(Instant::now());
        if children.is_empty() || left.is_zero() {
            return;
        }
        // A poll with nothing registered: the loop's own way of waiting a moment.
        match &mut pause {
            Some(poll) => {
                let _ = poll.poll(&mut events, Some(left.min(EXIT_CHECK)));
            }
            None => return,
        }
    }
}
