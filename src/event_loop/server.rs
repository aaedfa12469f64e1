//! The event loop: one thread, one `mio::Poll`, every connection.
//!
//! It accepts, reads into one shared buffer, feeds sessions, writes their replies, and keeps
//! time for them with one timer wheel (idle timeouts, delayed replies, accept back-off). The
//! poll timeout is the time to the next deadline, so nothing wakes the process while nothing
//! is due. It decides nothing about SMTP: that is the session's job.

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{Level, debug, info, log_enabled, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::ServerConfig;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::accept_backoff::AcceptBackoff;
use super::clock::Clock;
use super::conn::{Conn, MAX_LISTENERS, Received, read_socket};
use super::event_log::EventLog;
use super::metrics_http::{self, HttpTimer, Limits, MetricsEndpoint, Turn};
use super::proxy_header::{self, Reading};
use super::throttle;
use super::timer::TimerWheel;
use super::tls::TlsLayer;
use super::witness::{Account, Seen, Witness};
use crate::report::event::Ended;
use crate::report::tally::Tally;
use crate::smtp::greylist::{Greylist, GreylistSettings};
use crate::smtp::reply;
use crate::smtp::rules::{self, Cidr, RuleBook, RuleState};
use crate::smtp::session::{
    Action, ConnectionSeed, Context, OUTPUT_HIGH_WATER, Policy, Step as SessionStep,
};

/// The shared read buffer: the most read from one socket in one call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads or feeds for one connection before others get a turn; it is queued to go on.
const ROUNDS_PER_TURN: usize = 16;
/// How long a stopping server waits for its replies to go out.
const STOP_GRACE: u64 = 2000;

const SIGNAL_TOKEN: Token = Token(1 << 63);
/// The event log's pipe to its writer.
const EVENT_LOG_TOKEN: Token = Token(1 << 63 | 1);
const LISTENER_BIT: usize = 1 << 62;
/// Connection tokens carry the slab slot in the low 32 bits and the low bits of the
/// connection's serial number above them (bits 32 to 60), so a readiness event for a
/// connection that has gone is not taken for the one that took its slot. Bit 61 is the
/// metrics endpoint's ([`metrics_http::TOKEN_BIT`]).
const GEN_MASK: u64 = (1 << 29) - 1;
/// How long the event log's writer gets at exit, and on a reload that turns it off.
const EVENT_LOG_GRACE: Duration = Duration::from_secs(2);
const EVENT_LOG_OFF_GRACE: Duration = Duration::from_millis(100);

fn conn_token(slot: usize, id: u64) -> Token {
    Token(((id & GEN_MASK) as usize) << 32 | slot)
}

/// A connection as timers and the ready queue name it: slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnRef {
    slot: u32,
    generation: u32,
}

impl ConnRef {
    fn new(slot: usize, id: u64) -> Self {
        ConnRef {
            slot: slot as u32,
            generation: (id & GEN_MASK) as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Idle(ConnRef),
    /// A held reply is due; with the low 32 bits of its deadline, to tell how late it goes
    /// (the whole deadline would make every timer, idle ones too, eight bytes larger).
    Delay(ConnRef, u32),
    /// A throttled connection may read again.
    Throttle(ConnRef),
    ResumeAccept(u32),
    Http(HttpTimer),
    /// `--stop-after-seconds`.
    StopAfter,
}

impl From<HttpTimer> for Timer {
    fn from(timer: HttpTimer) -> Self {
        Timer::Http(timer)
    }
}

/// What SIGHUP can change while connections stay open: each listener's own settings, in
/// the listeners' order, the idle timeout, the connection limit and the rules.
pub struct Settings {
    pub listeners: Vec<ListenerSettings>,
    pub timeout_secs: u32,
    pub max_connections: usize,
    pub rules: Arc<RuleBook>,
    /// `[greylist]`, when greylisting is on.
    pub greylist: Option<GreylistSettings>,
    /// `event_log`: where event lines go (`-`: standard output); `None`: nowhere.
    pub event_log: Option<PathBuf>,
    /// Who may send a PROXY header (`proxy_trusted`).
    pub proxy_trusted: Vec<Cidr>,
}

/// One listener's settings.
pub struct ListenerSettings {
    /// What its sessions are told to do.
    pub policy: Policy,
    /// Whether its connections open with a PROXY header (the listener's `proxy` flag).
    pub proxy: bool,
}

/// What the loop counts into and reports through, besides its settings.
pub struct Reporting {
    /// Every serving process's tally (one without workers), for as long as the process
    /// lives.
    pub tallies: &'static [Tally],
    /// This process's slot in `tallies`: its worker number.
    pub slot: usize,
    /// The metrics endpoint's listening socket (`metrics_listen`).
    pub metrics: Option<TcpListener>,
    /// Processes besides those of `tallies` whose figures a scrape adds: the supervisor.
    pub other_pids: Vec<u32>,
    /// `--stop-after-messages`: stop once this many messages got their final reply here.
    pub stop_after_messages: Option<u64>,
    /// `--stop-after-seconds`: stop this long after the start.
    pub stop_after_seconds: Option<u64>,
    /// Whether SIGUSR1 and the exit log a summary (a supervisor does it for its workers).
    pub summaries: bool,
}

/// The rules and the counters they keep for the whole process (`first`, `every`, `rate`),
/// started afresh with each new book; and greylisting, whose memory outlives every reload.
struct Rules {
    book: Arc<RuleBook>,
    /// The book's rule names, the labels of its counts.
    names: Vec<String>,
    state: RuleState,
    greylist: Option<GreylistSettings>,
    triplets: Greylist,
}

/// Re-reads the configuration on SIGHUP: new settings, or `None` to keep the old ones (it
/// logs why).
pub type Reload = Box<dyn FnMut() -> Option<Settings>>;

/// A listening socket; what its connections are told to do is its policy in [`Settings`].
pub struct Listener {
    pub socket: TcpListener,
    pub tls: bool,
}

struct ListenerState {
    socket: Option<TcpListener>,
    policy: Policy,
    tls: bool,
    /// Its connections open with a PROXY header.
    proxy: bool,
    backoff: AcceptBackoff,
}

pub struct Server {
    poll: Poll,
    listeners: Vec<ListenerState>,
    conns: Slab<Conn>,
    /// Connections served at once; more get `421` and are closed.
    max_connections: usize,
    /// Whether the limit has been reported since the count was last well below it.
    limit_reported: bool,
    /// Where a certificate is configured: for SMTPS listeners and STARTTLS.
    tls: Option<Arc<ServerConfig>>,
    /// Who may send a PROXY header.
    proxy_trusted: Vec<Cidr>,
    timers: TimerWheel<Timer>,
    rules: Rules,
    /// The run's seed: each connection's random choices are drawn from it and the
    /// connection's serial number (`Conn::id`).
    seed: u64,
    scratch: Box<[u8]>,
    /// The output buffer idle connections share (see `Conn::lend_output`).
    spare_output: Vec<u8>,
    /// Connections that stopped before their socket said `WouldBlock`, to go on next turn.
    ready: Vec<ConnRef>,
    ready_next: Vec<ConnRef>,
    signals: Signals,
    clock: Clock,
    /// The clock's reading at the start of this turn of the loop.
    now: u64,
    timeout_ms: u64,
    next_id: u64,
    /// When a stopping server gives up on unsent replies.
    stop_by: Option<u64>,
    /// A stop is due at the end of this turn (`--stop-after-messages` was reached): no
    /// connection is fed meanwhile.
    stop_wanted: bool,
    reload: Reload,
    account: Account,
    /// The event log's path, opened once privileges are dropped ([`Server::open_event_log`]).
    event_log_path: Option<PathBuf>,
    metrics: Option<MetricsEndpoint>,
    other_pids: Vec<u32>,
    stop_after_messages: Option<u64>,
    summaries: bool,
}

/// Catches SIGTERM, SIGINT, SIGHUP and SIGUSR1 from now on, for [`Server::new`]. Called
/// before the listeners are bound: once a port takes connections, a script may signal the
/// server, and a signal must then stop it cleanly (or reload it, or log a summary), never
/// kill it.
pub fn catch_signals() -> io::Result<Signals> {
    Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1])
}

impl Server {
    pub fn new(
        listeners: Vec<Listener>,
        mut signals: Signals,
        tls: Option<Arc<ServerConfig>>,
        settings: Settings,
        seed: u64,
        reload: Reload,
        reporting: Reporting,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;
        if listeners.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_LISTENERS} listeners can be served"),
            ));
        }
        if settings.listeners.len() != listeners.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "one policy per listener is needed",
            ));
        }
        let names = listener_names(&listeners);
        let account = Account::new(reporting.tallies, reporting.slot, names)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such tally slot"))?;
        account.tally.claim(std::process::id());
        let metrics = match reporting.metrics {
            Some(socket) => Some(MetricsEndpoint::new(
                socket,
                poll.registry(),
                Limits::default(),
            )?),
            None => None,
        };
        let mut timers = TimerWheel::new();
        if let Some(seconds) = reporting.stop_after_seconds {
            timers.insert(seconds.saturating_mul(1000), Timer::StopAfter);
        }
        Ok(Server {
            listeners: register_listeners(&poll, listeners, settings.listeners)?,
            poll,
            conns: Slab::new(),
            max_connections: settings.max_connections,
            limit_reported: false,
            tls,
            proxy_trusted: settings.proxy_trusted,
            timers,
            rules: Rules {
                greylist: settings.greylist,
                triplets: Greylist::default(),
                names: rules::names(settings.rules.rules()),
                book: settings.rules,
                state: RuleState::default(),
            },
            seed,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            spare_output: Vec::new(),
            ready: Vec::new(),
            ready_next: Vec::new(),
            signals,
            clock: Clock::start(),
            now: 0,
            timeout_ms: u64::from(settings.timeout_secs) * 1000,
            next_id: 1,
            stop_by: None,
            stop_wanted: false,
            reload,
            account,
            event_log_path: settings.event_log,
            metrics,
            other_pids: reporting.other_pids,
            stop_after_messages: reporting.stop_after_messages,
            summaries: reporting.summaries,
        })
    }

    /// Starts the event log's writer, if `event_log` is set: once privileges are dropped,
    /// so that the writer, and the file it creates, are the serving user's.
    pub fn open_event_log(&mut self) -> io::Result<()> {
        if let Some(path) = &self.event_log_path {
            let log = EventLog::open(path, self.poll.registry(), EVENT_LOG_TOKEN)?;
            self.account.events = Some(log);
        }
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM, then sends what is pending and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut fired = Vec::new();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = self.clock.now();
            for event in events.iter() {
                self.dispatch(event);
            }
            std::mem::swap(&mut self.ready, &mut self.ready_next);
            while let Some(conn) = self.ready_next.pop() {
                if let Some(c) = self.get(conn) {
                    c.queued = false;
                    self.drive(conn.slot as usize);
                }
            }
            self.timers.advance(self.now, &mut fired);
            for timer in fired.drain(..) {
                self.on_timer(timer);
            }
            // The turn's event lines go to the writer in one piece, and the figures that
            // move within a turn to the tally once.
            if let Some(log) = &mut self.account.events {
                log.end_turn();
            }
            self.account.count_dropped_lines();
            if self.rules.greylist.is_some() {
                self.note_greylist();
            }
            if self.stop_wanted && self.stop_by.is_none() {
                self.begin_stop();
            }
            if let Some(stop_by) = self.stop_by {
                let unsent = self.conns.iter().any(|(_, c)| c.can_send());
                if !unsent || self.now >= stop_by {
                    self.finish();
                    info!("stopped");
                    return Ok(());
                }
            }
        }
    }

    /// At exit, the last replies sent: the connections left are closed (their lines say
    /// `stop`), the event log's writer writes what it was sent, and the summary is logged.
    fn finish(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot);
        }
        self.account
            .finish_event_log(Instant::now() + EVENT_LOG_GRACE);
        if self.summaries {
            self.log_summary();
        }
    }

    /// The one-line summary of every process's tally, at SIGUSR1 and at exit.
    fn log_summary(&mut self) {
        self.note_greylist();
        self.account.count_dropped_lines();
        self.account.log_summary(&self.rules.names);
    }

    /// The greylist's size, for the gauges.
    fn note_greylist(&self) {
        let triplets = &self.rules.triplets;
        self.account
            .tally
            .greylist_memory(triplets.len() as u64, triplets.evicted());
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = match (self.timers.next_deadline(), self.stop_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|deadline| self.clock.wait_until(deadline))
    }

    fn dispatch(&mut self, event: &Event) {
        let token = event.token();
        if token == SIGNAL_TOKEN {
            self.on_signal();
        } else if token == EVENT_LOG_TOKEN {
            if let Some(log) = &mut self.account.events {
                log.flush();
            }
        } else if token.0 & LISTENER_BIT != 0 {
            self.accept(token.0 & !LISTENER_BIT);
        } else if metrics_http::owns(token) {
            self.metrics_turn(HttpEvent::Ready(token));
        } else {
            let conn = ConnRef {
                slot: token.0 as u32,
                generation: (token.0 >> 32) as u32,
            };
            if let Some(c) = self.get(conn) {
                if event.is_error() || event.is_write_closed() {
                    // Reset or hung up: nothing sent can arrive, and a connection waiting out
                    // a delay would not notice by itself.
                    debug!("[{}] connection lost", c.id);
                    return self.close(conn.slot as usize);
                }
                // The client's end is found by reading.
                if event.is_readable() || event.is_read_closed() {
                    c.read_ready = true;
                }
                if event.is_read_closed() {
                    c.end_announced = true;
                }
                self.drive(conn.slot as usize);
            }
        }
    }

    fn get(&mut self, conn: ConnRef) -> Option<&mut Conn> {
        lookup(&mut self.conns, conn)
    }

    /// A readiness event or a timer of the metrics endpoint: a scrape renders every
    /// process's tally.
    fn metrics_turn(&mut self, what: HttpEvent) {
        if self.metrics.is_none() {
            return;
        }
        // A scrape in the middle of a turn sees the greylist as it is.
        if self.rules.greylist.is_some() {
            self.note_greylist();
        }
        let Some(endpoint) = &mut self.metrics else {
            return;
        };
        let (account, other_pids) = (&mut self.account, &self.other_pids);
        let rules = &self.rules.names;
        let mut render = |out: &mut Vec<u8>| {
            account.count_dropped_lines();
            account.render(rules, other_pids, out);
        };
        let mut turn = Turn {
            registry: self.poll.registry(),
            timers: &mut self.timers,
            now: self.now,
            render: &mut render,
        };
        match what {
            HttpEvent::Ready(token) => endpoint.ready(token, &mut turn),
            HttpEvent::Timer(timer) => endpoint.on_timer(timer, &mut turn),
        }
    }

    fn on_signal(&mut self) {
        let (mut stop, mut reload, mut summary) = (false, false, false);
        for signal in self.signals.pending() {
            match signal {
                SIGHUP => reload = true,
                SIGUSR1 => summary = true,
                _ => stop = true,
            }
        }
        if reload {
            self.reload();
        }
        if summary && self.summaries {
            self.log_summary();
        }
        if stop && self.stop_by.is_none() {
            self.begin_stop();
        }
    }

    /// Stops accepting and sends what is pending: on SIGTERM or SIGINT, or once a
    /// `--stop-after` bound is reached.
    fn begin_stop(&mut self) {
        info!("stopping: no new connections; sending what is pending");
        for listener in &mut self.listeners {
            if let Some(mut socket) = listener.socket.take() {
                let _ = self.poll.registry().deregister(&mut socket);
            }
        }
        if let Some(endpoint) = &mut self.metrics {
            endpoint.stop(self.poll.registry());
        }
        self.stop_by = Some(self.now + STOP_GRACE);
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            // A final reply held back for a delay goes now: the client gets its answer
            // rather than a closed connection.
            if self.conns.get(slot).is_some_and(|c| c.session.is_waiting()) {
                self.resume_delayed(slot);
            } else {
                self.drive(slot);
            }
        }
    }

    /// Sends the reply a session holds back for a delay and goes on with the connection:
    /// the delay is over, or the server is stopping.
    fn resume_delayed(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(key) = c.delay_timer.take() {
            self.timers.cancel(key);
        }
        self.account.tally.delayed_reply_done();
        c.lend_output(&mut self.spare_output);
        let Some(step) =
            self.in_session(slot, |c, cx, _| c.session.resume(cx, &c.tail, &mut c.out))
        else {
            return;
        };
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(record) = &mut c.record {
            record.resumed();
        }
        c.tail.drain(..step.consumed);
        // The client has been waiting for us: its idle time starts now.
        c.last_line_at = self.now;
        c.tail_fed = false;
        self.check_stop_after_messages();
        self.act(slot, step.action);
        self.drive(slot);
    }

    /// SIGHUP: new settings for new messages and commands; open connections stay. The
    /// event log is opened again whatever the file says: a log rotation counts on it.
    fn reload(&mut self) {
        let Some(settings) = (self.reload)() else {
            if let Some(log) = &mut self.account.events {
                log.reopen();
            }
            return;
        };
        self.switch_event_log(settings.event_log.clone());
        if settings.listeners.len() != self.listeners.len() {
            warn!("reload: listener count changed; keeping the old settings until a restart");
            return;
        }
        for (listener, new) in self.listeners.iter_mut().zip(settings.listeners) {
            listener.policy = new.policy;
            listener.proxy = new.proxy;
        }
        self.proxy_trusted = settings.proxy_trusted;
        self.timeout_ms = u64::from(settings.timeout_secs) * 1000;
        self.max_connections = settings.max_connections;
        self.rules.names = rules::names(settings.rules.rules());
        self.rules.book = settings.rules;
        self.rules.state = RuleState::default();
        // New settings for new commands; the triplets remembered so far stay.
        self.rules.greylist = settings.greylist;
        info!("configuration reloaded");
    }

    /// SIGHUP: the event log opened again (a rotation may have renamed its file), at its
    /// new path, or switched on or off.
    fn switch_event_log(&mut self, path: Option<PathBuf>) {
        let same = path == self.event_log_path;
        match (&mut self.account.events, &path) {
            (Some(log), Some(_)) if same => log.reopen(),
            (Some(log), Some(new)) => log.reopen_at(new),
            (Some(_), None) => self
                .account
                .finish_event_log(Instant::now() + EVENT_LOG_OFF_GRACE),
            (None, Some(new)) => match EventLog::open(new, self.poll.registry(), EVENT_LOG_TOKEN) {
                Ok(log) => self.account.events = Some(log),
                Err(e) => warn!("event log: cannot start a writer for {}: {e}", show(new)),
            },
            (None, None) => {}
        }
        self.event_log_path = path;
    }

    /// `--stop-after-messages`: once reached, nothing more is fed and the stop begins at
    /// the end of the turn.
    fn check_stop_after_messages(&mut self) {
        if self
            .stop_after_messages
            .is_some_and(|n| self.account.messages >= n)
        {
            self.stop_wanted = true;
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get_mut(index) else {
                return;
            };
            if listener.backoff.resting() {
                return;
            }
            let Some(socket) = &listener.socket else {
                return;
            };
            match socket.accept() {
                Ok((stream, peer)) => {
                    listener.backoff.accepted();
                    if self.conns.len() >= self.max_connections {
                        self.refuse(stream);
                        continue;
                    }
                    if self.conns.len() < self.max_connections / 10 * 9 {
                        self.limit_reported = false;
                    }
                    debug!("connection from {peer}");
                    self.open(stream, index, peer.ip());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    let Some(wait) = listener.backoff.failed(&e) else {
                        continue;
                    };
                    warn!("accept failed: {e}; trying again in {wait} ms");
                    self.timers
                        .insert(self.now + wait, Timer::ResumeAccept(index as u32));
                    return;
                }
            }
        }
    }

    /// Over the connection limit: say so at once rather than leave the client hanging in
    /// the backlog, where a load test could not tell a full server from a slow one.
    fn refuse(&mut self, mut stream: TcpStream) {
        if !self.limit_reported {
            warn!(
                "{} connections: new ones get 421 until some close (max_connections)",
                self.conns.len()
            );
            self.limit_reported = true;
        }
        self.account.tally.connection_refused();
        // Best effort: a fresh socket's send buffer takes one short line; closing the socket
        // (dropping it) then sends FIN after it.
        let _ = stream.write(reply::TOO_MANY_CONNECTIONS);
    }

    fn open(&mut self, mut stream: TcpStream, listener: usize, peer: IpAddr) {
        let proxy = self.listeners[listener].proxy;
        if proxy && !self.proxy_trusted.iter().any(|block| block.contains(peer)) {
            // Closed unanswered: the header could name any client, and only the load
            // balancers are believed.
            debug!("{peer} may not send a PROXY header (proxy_trusted): closed");
            self.account.tally.proxy_rejected();
            return;
        }
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        let id = self.next_id;
        self.next_id += 1;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, conn_token(slot, id), Interest::READABLE)
        {
            warn!("cannot watch a new connection: {e}");
            return;
        }
        let tls = self.listeners[listener].tls;
        let mut conn = Conn::new(stream, listener as u8, peer, id, self.now, tls);
        // The header has the idle timeout to come, as a line would.
        conn.idle_timer = Some(self.timers.insert(
            self.now + self.timeout_ms,
            Timer::Idle(ConnRef::new(slot, id)),
        ));
        conn.awaiting_proxy = proxy;
        // A `proxy` listener defers the accept until the header's bytes have come: read them
        // now, without waiting for an event.
        conn.read_ready = proxy;
        entry.insert(conn);
        if proxy {
            // Nothing is said until the header has come: it comes first.
            self.drive(slot);
        } else if self.start(slot) {
            self.drive(slot);
        }
    }

    /// Opens the SMTP conversation of an accepted connection (once its PROXY header has
    /// come, on a `proxy` listener): its TLS layer on SMTPS, its counts, its greeting.
    /// False if it was closed instead.
    fn start(&mut self, slot: usize) -> bool {
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        let listener = usize::from(conn.listener);
        let tls = self.listeners[listener].tls;
        if tls {
            // A TLS handshake writes flights back to back; Nagle would hold the second until
            // the client's delayed ACK. Plain replies need no such help: every batch of them
            // leaves in one write, after a client command that acknowledged the one before.
            let _ = conn.stream.set_nodelay(true);
            match new_tls(self.tls.as_ref()) {
                Ok(layer) => conn.tls = Some(layer),
                Err(e) => {
                    warn!("cannot start TLS: {e}");
                    self.forget(slot);
                    return false;
                }
            }
        }
        self.account.tally.connection_opened(listener, tls);
        if self.account.events.is_some() {
            conn.record = Some(Box::default());
        }
        // On SMTPS the greeting waits inside rustls for the handshake to end.
        conn.lend_output(&mut self.spare_output);
        if let Some(action) = self.in_session(slot, |c, cx, _| c.session.greet(cx, &mut c.out)) {
            self.act(slot, action);
        }
        true
    }

    /// A connection taken out before it was counted as opened (no greeting went): its
    /// timers cancelled, its socket closed.
    fn forget(&mut self, slot: usize) {
        if !self.conns.contains(slot) {
            return;
        }
        let mut conn = self.conns.remove(slot);
        if let Some(key) = conn.idle_timer.take() {
            self.timers.cancel(key);
        }
    }

    /// A connection on a `proxy` listener before its header: peeks at what has come, and
    /// once the header is whole takes exactly its bytes from the socket, so that what
    /// follows (SMTP, or a TLS ClientHello) is read as usual; then the SMTP conversation
    /// starts with the client the header names.
    fn read_proxy_header(&mut self, slot: usize) -> Step {
        let Some(conn) = self.conns.get_mut(slot) else {
            return Step::Close;
        };
        // A header that came in pieces waits in `tail`, which holds nothing else before the
        // greeting. One ordinary read a header, as a peek and a read of its length would be
        // two; and a whole header in one read is parsed where it was read.
        let room = proxy_header::MAX_HEADER
            .saturating_sub(conn.tail.len())
            .max(1);
        let buf = &mut self.scratch[..room];
        // Before the header there is no TLS layer yet: it comes after, on SMTPS.
        let n = match read_socket(&mut conn.stream, buf) {
            Received::Bytes(n) => n,
            Received::End => {
                return proxy_refused(conn, "the client closed before its header ended");
            }
            Received::WouldBlock => {
                conn.read_ready = false;
                return Step::Wait;
            }
            Received::Failed(e) => return proxy_refused(conn, &format!("read failed: {e}")),
        };
        // A short read took all there was: the next bytes bring an event of their own (a
        // client waits for the greeting before it says more).
        conn.read_ready = n == room;
        if !conn.tail.is_empty() {
            conn.tail.extend_from_slice(&buf[..n]);
        }
        let received = if conn.tail.is_empty() {
            &buf[..n]
        } else {
            &conn.tail[..]
        };
        let (length, named) = match proxy_header::read(received) {
            Reading::Complete { length, client } => (length, client),
            Reading::Invalid(why) => return proxy_refused(conn, why),
            Reading::Incomplete if received.len() >= proxy_header::MAX_HEADER => {
                return proxy_refused(conn, "no header within its longest length");
            }
            Reading::Incomplete => {
                if conn.tail.is_empty() {
                    conn.tail.extend_from_slice(&buf[..n]);
                }
                // The rest of it comes with an event of its own.
                return Step::Again;
            }
        };
        // What follows the header is the client's: its first SMTP bytes, fed after the
        // greeting, or on SMTPS its first TLS bytes, handed to the TLS layer below.
        if conn.tail.is_empty() {
            conn.tail.extend_from_slice(&buf[length..n]);
        } else {
            conn.tail.drain(..length);
        }
        conn.tail_fed = false;
        let proxy = conn.client;
        // v2 LOCAL (a health check) and v1 UNKNOWN: the proxy's own connection.
        conn.client = named.unwrap_or(proxy);
        conn.awaiting_proxy = false;
        // The header is a complete line: the idle timeout counts from here.
        conn.last_line_at = self.now;
        debug!(
            "[{}] PROXY header: client {} (via {proxy})",
            conn.id, conn.client
        );
        if !self.start(slot) {
            return Step::Wait;
        }
        if let Some(conn) = self.conns.get_mut(slot)
            && let Some(tls) = &mut conn.tls
        {
            tls.receive_early(&conn.tail);
            conn.tail = Vec::new();
        }
        Step::Again
    }

    /// Moves one connection on as far as it can go: sends output, feeds the session what is
    /// waiting and what the socket has, and closes when it is done.
    fn drive(&mut self, slot: usize) {
        let mut rounds = ROUNDS_PER_TURN;
        loop {
            match self.round(slot, &mut rounds) {
                Step::Again => {}
                Step::Wait => return self.watch(slot),
                Step::Close => return self.close(slot),
            }
        }
    }

    /// One round of [`Server::drive`]: send, then the one next step the connection is ready
    /// for. Every round starts by sending, so the output of the last round goes out too, and
    /// output left unsent means the socket said WouldBlock: a writable event follows.
    fn round(&mut self, slot: usize, rounds: &mut usize) -> Step {
        let Some(conn) = self.conns.get_mut(slot) else {
            // Closed already: nothing is left to close.
            return Step::Close;
        };
        if !send(conn, &mut self.spare_output) {
            return Step::Close;
        }
        if conn.closing {
            // Replies that wait for a handshake that will not finish never go.
            return if conn.can_send() {
                Step::Wait
            } else {
                Step::Close
            };
        }
        if conn.starting_tls {
            return start_tls(conn, self.tls.as_ref());
        }
        if conn.awaiting_proxy {
            if self.stop_by.is_some() || !(conn.read_ready || conn.end_announced) {
                return Step::Wait;
            }
            return self.read_proxy_header(slot);
        }
        let unfed = !conn.tail.is_empty() && !conn.tail_fed;
        let readable = conn.read_ready && !conn.resting;
        if conn.session.is_waiting()
            || self.stop_by.is_some()
            || self.stop_wanted
            || conn.pending_output() >= OUTPUT_HIGH_WATER
            || !(unfed || conn.peer_closed || readable)
        {
            return Step::Wait;
        }
        if *rounds == 0 {
            // Work is left: let other connections have their turn first.
            if !conn.queued {
                conn.queued = true;
                self.ready.push(ConnRef::new(slot, conn.id));
            }
            return Step::Wait;
        }
        *rounds -= 1;
        let read = if unfed {
            0
        } else if conn.peer_closed {
            // Nothing more will come: what is left of the input is an unfinished line.
            conn.closing = true;
            return Step::Again;
        } else {
            match self.read_into_scratch(slot) {
                Ok(read) => read,
                Err(step) => return step,
            }
        };
        let Some(action) = self.in_session(slot, |conn, cx, (spare_output, scratch)| {
            feed(conn, cx, spare_output, &scratch[..read])
        }) else {
            return Step::Close;
        };
        self.check_stop_after_messages();
        self.act(slot, action);
        Step::Again
    }

    /// Calls into `slot`'s session: `call` gets the connection, the context its session is
    /// told (the connection's witness as its observer, its event record lent to the witness
    /// for the call), and the loop's spare output and read buffers. `None` if it has gone.
    fn in_session<R>(
        &mut self,
        slot: usize,
        call: impl FnOnce(&mut Conn, &mut Context, (&mut Vec<u8>, &[u8])) -> R,
    ) -> Option<R> {
        let conn = self.conns.get_mut(slot)?;
        let mut record = conn.record.take();
        let mut witness = self
            .account
            .witness(seen(conn), record.as_deref_mut(), self.now);
        let mut cx = context(
            &self.listeners,
            &mut self.rules,
            self.seed,
            self.now,
            conn,
            &mut witness,
        );
        let result = call(conn, &mut cx, (&mut self.spare_output, &self.scratch));
        conn.record = record;
        Some(result)
    }

    /// Reads what the socket has into the scratch buffer, no more than a throttle allows:
    /// how many bytes, or where `drive` goes when there are none.
    fn read_into_scratch(&mut self, slot: usize) -> Result<usize, Step> {
        let conn = self.conns.get_mut(slot).ok_or(Step::Close)?;
        let rate = conn.session.throttle();
        // A throttle's chunk is a twentieth of its rate: never more than the buffer.
        let limit = rate.map_or(READ_CHUNK, |rate| throttle::chunk(rate).min(READ_CHUNK));
        let handshaking = conn.handshaking();
        let received = receive(conn, &mut self.scratch[..limit], self.now).map(<[u8]>::len);
        if handshaking && !conn.handshaking() {
            self.account.tally.tls_handshake(true);
        }
        let read = received?;
        if let Some(rate) = rate {
            // A full chunk means the client is ahead of the throttle: the wait for the rest
            // of its line is the server's, not the client's idling.
            if read == limit {
                conn.last_line_at = self.now;
            }
            let rest = throttle::rest_after(rate, read);
            let timer = Timer::Throttle(ConnRef::new(slot, conn.id));
            // The rest's timer takes the idle timer's place (re-armed when the rest ends), so
            // a throttled connection holds no more timers than an idle one.
            if let Some(idle) = conn.idle_timer.take() {
                self.timers.cancel(idle);
            }
            self.timers.insert(self.clock.deadline_after(rest), timer);
            conn.resting = true;
        }
        Ok(read)
    }

    /// Watches the socket for what the connection waits for, telling the poll only of a
    /// change.
    fn watch(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let wanted = conn.wanted_interest();
        if wanted == conn.interest {
            return;
        }
        let (registry, token) = (self.poll.registry(), conn_token(slot, conn.id));
        let changed = match (conn.interest, wanted) {
            (_, None) => registry.deregister(&mut conn.stream),
            (None, Some(interest)) => registry.register(&mut conn.stream, token, interest),
            (Some(_), Some(interest)) => registry.reregister(&mut conn.stream, token, interest),
        };
        match changed {
            Ok(()) => conn.interest = wanted,
            Err(e) => {
                warn!("[{}] cannot watch the connection: {e}", conn.id);
                self.close(slot);
            }
        }
    }

    /// Carries out what the session asked for.
    #[inline]
    fn act(&mut self, slot: usize, action: Action) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        match action {
            Action::Continue => {}
            Action::Close => conn.closing = true,
            Action::Pause { millis } => {
                // Counted from now, not from the start of this turn: never early.
                let deadline = self.clock.deadline_after(millis);
                let timer = Timer::Delay(ConnRef::new(slot, conn.id), deadline as u32);
                conn.delay_timer = Some(self.timers.insert(deadline, timer));
                self.account.tally.delayed_reply_pending();
                if let Some(record) = &mut conn.record {
                    record.paused(self.now, millis);
                }
            }
            Action::StartTls => conn.starting_tls = true,
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::ResumeAccept(index) => {
                let index = index as usize;
                if let Some(listener) = self.listeners.get_mut(index) {
                    listener.backoff.resume();
                    self.accept(index);
                }
            }
            Timer::Delay(conn, due) => {
                if let Some(c) = lookup(&mut self.conns, conn) {
                    // It has fired: nothing to cancel.
                    c.delay_timer = None;
                    let late = lateness_micros(self.clock.micros(), due);
                    self.account.tally.delay_lateness(late);
                    self.resume_delayed(conn.slot as usize);
                }
            }
            Timer::Http(timer) => self.metrics_turn(HttpEvent::Timer(timer)),
            Timer::StopAfter => {
                info!("--stop-after-seconds: the time is up");
                self.stop_wanted = true;
            }
            Timer::Throttle(conn) => {
                if let Some(c) = lookup(&mut self.conns, conn) {
                    c.resting = false;
                    if c.idle_timer.is_none() {
                        // Checked again when it fires, against the connection's last line.
                        let due = (c.last_line_at + self.timeout_ms).max(self.now);
                        c.idle_timer = Some(self.timers.insert(due, Timer::Idle(conn)));
                    }
                    // It stopped reading before the socket said WouldBlock (or bytes came
                    // unannounced while nothing watched it): read again.
                    c.read_ready = true;
                    self.drive(conn.slot as usize);
                }
            }
            Timer::Idle(conn) => {
                let (now, timeout) = (self.now, self.timeout_ms);
                let Some(c) = lookup(&mut self.conns, conn) else {
                    return;
                };
                c.idle_timer = None;
                let slot = conn.slot as usize;
                if c.awaiting_proxy {
                    debug!("[{}] no PROXY header within the idle timeout", c.id);
                    return self.close(slot);
                }
                // The timer is re-armed lazily: it may fire before the connection's due time.
                let due = if c.session.is_waiting() {
                    now + timeout
                } else {
                    c.last_line_at + timeout
                };
                if now < due {
                    c.idle_timer = Some(self.timers.insert(due, Timer::Idle(conn)));
                    return;
                }
                debug!("[{}] idle timeout", c.id);
                self.account.tally.connection_timed_out();
                if let Some(record) = &mut c.record {
                    record.ends(Ended::Timeout);
                }
                if c.closing || c.handshaking() {
                    // Its last replies never went (the client stopped reading), or it never
                    // finished its TLS handshake: there is no way to tell it anything.
                    return self.close(slot);
                }
                c.session.time_out(&mut c.out);
                c.closing = true;
                // The 421 gets one more timeout to leave.
                c.idle_timer = Some(self.timers.insert(now + timeout, Timer::Idle(conn)));
                self.drive(slot);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if !self.conns.contains(slot) {
            return;
        }
        if self.conns[slot].awaiting_proxy {
            // Never greeted, never counted as opened: a missing, bad or slow header.
            if self.stop_by.is_none() {
                self.account.tally.proxy_rejected();
            }
            debug!("[{}] closed without a PROXY header", self.conns[slot].id);
            return self.forget(slot);
        }
        let mut conn = self.conns.remove(slot);
        let tally = self.account.tally;
        if conn.delay_timer.is_some() {
            tally.delayed_reply_done();
        }
        // A rest's timer is left to fire: it finds no connection of this generation.
        for key in [conn.idle_timer.take(), conn.delay_timer.take()]
            .into_iter()
            .flatten()
        {
            self.timers.cancel(key);
        }
        if conn.handshaking() {
            tally.tls_handshake(false);
        }
        let age = conn.age(self.now);
        tally.connection_closed(age.saturating_mul(1000));
        let why = if self.stop_by.is_some() {
            Ended::Stop
        } else {
            Ended::Reset
        };
        let record = conn.record.take();
        self.account
            .closed(seen(&conn), record.as_deref(), age, why);
        conn.say_goodbye();
        // Dropping the socket closes it, which also takes it out of the poll set: no
        // deregistration call is needed, and an event already fetched for it is dropped by
        // its token's generation.
        debug!("[{}] closed", conn.id);
    }
}

/// Each listener's address as its figures and lines name it: the address it is bound to.
fn listener_names(listeners: &[Listener]) -> Vec<String> {
    listeners
        .iter()
        .map(|l| {
            l.socket
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string())
        })
        .collect()
}

/// Registers every listener with the poll, each with its settings.
fn register_listeners(
    poll: &Poll,
    listeners: Vec<Listener>,
    settings: Vec<ListenerSettings>,
) -> io::Result<Vec<ListenerState>> {
    let mut states = Vec::with_capacity(listeners.len());
    for (index, (mut listener, settings)) in listeners.into_iter().zip(settings).enumerate() {
        poll.registry().register(
            &mut listener.socket,
            Token(LISTENER_BIT | index),
            Interest::READABLE,
        )?;
        states.push(ListenerState {
            socket: Some(listener.socket),
            policy: settings.policy,
            tls: listener.tls,
            proxy: settings.proxy,
            backoff: AcceptBackoff::default(),
        });
    }
    Ok(states)
}

/// Where [`Server::drive`] goes after a round.
enum Step {
    Again,
    /// Nothing more to do until an event or a timer.
    Wait,
    Close,
}

/// Sends what output can go and gives the buffer back once it has gone; false if the
/// connection failed.
fn send(conn: &mut Conn, spare_output: &mut Vec<u8>) -> bool {
    match conn.flush() {
        Ok(sent) => {
            if log_enabled!(Level::Debug) && !sent.is_empty() {
                log_lines(conn.id, "S:", &conn.out[sent]);
            }
            conn.compact(spare_output);
            true
        }
        Err(e) => {
            debug!("[{}] write failed: {e}", conn.id);
            false
        }
    }
}

/// Once the `220` to STARTTLS has gone in plaintext (nothing is read meanwhile), the TLS
/// layer takes over the socket.
fn start_tls(conn: &mut Conn, config: Option<&Arc<ServerConfig>>) -> Step {
    if conn.can_send() {
        return Step::Wait;
    }
    match new_tls(config) {
        Ok(tls) => {
            debug!("[{}] TLS handshake after STARTTLS", conn.id);
            conn.tls = Some(tls);
            conn.starting_tls = false;
            // A fresh session, as slow to read as the last; plaintext pipelined after
            // STARTTLS is dropped.
            conn.session = conn.session.for_tls();
            conn.tail.clear();
            conn.tail_fed = false;
            Step::Again
        }
        Err(e) => {
            warn!("[{}] cannot start TLS: {e}", conn.id);
            Step::Close
        }
    }
}

/// Reads what the socket has into `scratch`: the bytes, or where `drive` goes when there
/// are none (another round after `WouldBlock` or the client's end, a close after an error).
fn receive<'a>(conn: &mut Conn, scratch: &'a mut [u8], now: u64) -> Result<&'a [u8], Step> {
    match conn.read(scratch) {
        Received::Bytes(n) => {
            if n < scratch.len() && conn.tls.is_none() && !conn.end_announced {
                // A short read emptied the socket, and with edge-triggered readiness any
                // later bytes bring a new event: no need for a read that would only say
                // WouldBlock (as nginx does). Not when the client's end was announced with
                // the bytes: no new event would tell of it.
                conn.read_ready = false;
            }
            let input = &scratch[..n];
            if log_enabled!(Level::Debug) {
                log_lines(conn.id, "C:", input);
            }
            if memchr::memchr(b'\n', input).is_some() {
                conn.last_line_at = now;
            }
            Ok(input)
        }
        Received::WouldBlock => {
            conn.read_ready = false;
            Err(Step::Again)
        }
        Received::End => {
            conn.read_ready = false;
            conn.peer_closed = true;
            Err(Step::Again)
        }
        Received::Failed(e) => {
            debug!("[{}] read failed: {e}", conn.id);
            Err(Step::Close)
        }
    }
}

/// A connection on a `proxy` listener that sent no good header: it is closed unanswered
/// (and counted, as it closes).
fn proxy_refused(conn: &Conn, why: &str) -> Step {
    debug!("[{}] PROXY header refused: {why}", conn.id);
    Step::Close
}

/// A TLS layer for a new SMTPS connection or after STARTTLS.
fn new_tls(config: Option<&Arc<ServerConfig>>) -> Result<Box<TlsLayer>, String> {
    let config = config.ok_or("no certificate is configured")?;
    let tls = TlsLayer::new(Arc::clone(config)).map_err(|e| e.to_string())?;
    Ok(Box::new(tls))
}

/// The connection `conn` names, if it is still there and not a later one in its slot.
fn lookup(conns: &mut Slab<Conn>, conn: ConnRef) -> Option<&mut Conn> {
    conns
        .get_mut(conn.slot as usize)
        .filter(|c| (c.id & GEN_MASK) as u32 == conn.generation)
}

/// What a connection's session is told with each call.
fn context<'a>(
    listeners: &'a [ListenerState],
    rules: &'a mut Rules,
    seed: u64,
    now: u64,
    conn: &Conn,
    observer: &'a mut Witness,
) -> Context<'a> {
    Context {
        policy: &listeners[usize::from(conn.listener)].policy,
        seed: ConnectionSeed::new(seed, conn.id),
        rules: &rules.book,
        rule_state: &mut rules.state,
        greylist: rules.greylist.as_ref().map(|s| (s, &mut rules.triplets)),
        client: conn.client,
        listener: usize::from(conn.listener),
        now_ms: now,
        observer,
    }
}

/// A connection as its event lines name it.
fn seen(conn: &Conn) -> Seen {
    Seen {
        id: conn.id,
        listener: usize::from(conn.listener),
        client: conn.client,
        tls: conn.tls_version(),
    }
}

/// A path as a message shows it.
fn show(path: &Path) -> std::path::Display<'_> {
    path.display()
}

/// How late a held reply leaves, in microseconds: `now` on the loop's clock in
/// microseconds, `due` the low 32 bits of its deadline in milliseconds (it is never more
/// than 49 days behind).
fn lateness_micros(now: u64, due: u32) -> u64 {
    let now_ms = now / 1000;
    let behind = u64::from((now_ms as u32).wrapping_sub(due));
    now.saturating_sub(now_ms.saturating_sub(behind) * 1000)
}

/// What the metrics endpoint is told of.
enum HttpEvent {
    Ready(Token),
    Timer(HttpTimer),
}

/// Gives the session the connection's waiting input followed by `fresh` bytes, and keeps
/// what it does not use.
fn feed(conn: &mut Conn, cx: &mut Context, spare_output: &mut Vec<u8>, fresh: &[u8]) -> Action {
    conn.lend_output(spare_output);
    // The session bounds output by `out.len()`: make that the unsent part.
    conn.out.drain(..conn.written);
    conn.written = 0;
    let step = if conn.tail.is_empty() {
        let step: SessionStep = conn.session.feed(cx, fresh, &mut conn.out);
        conn.tail.extend_from_slice(&fresh[step.consumed..]);
        step
    } else {
        conn.tail.extend_from_slice(fresh);
        let step = conn.session.feed(cx, &conn.tail, &mut conn.out);
        conn.tail.drain(..step.consumed);
        step
    };
    // Unless it stopped for a pause or for its output, the session needs more bytes before
    // it can use what is left.
    conn.tail_fed = step.action == Action::Continue && conn.out.len() < OUTPUT_HIGH_WATER;
    step.action
}

fn log_lines(id: u64, who: &str, bytes: &[u8]) {
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        debug!("[{id}] {who} {}", printable(line));
    }
}

/// A line as the log shows it: control bytes escaped (`\r`, `\u{1b}`), so that what a client
/// sends can neither forge a log line nor drive the terminal that shows the log.
fn printable(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            escaped
                .into_iter()
                .flatten()
                .chain((!c.is_control()).then_some(c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_reply_is_measured_from_its_whole_deadline() {
        assert_eq!(lateness_micros(2_000_700, 2_000), 700);
        assert_eq!(lateness_micros(2_003_250, 2_000), 3_250);
        // The clock past 2^32 ms: the deadline's low bits still find it.
        let now_ms = (1u64 << 32) + 5;
        let due = (now_ms - 3) as u32;
        assert_eq!(lateness_micros(now_ms * 1000 + 10, due), 3_010);
        assert_eq!(lateness_micros(0, 0), 0);
    }

    #[test]
    fn connection_tokens_never_look_like_another_kind() {
        for (slot, id) in [(0, 0), (u32::MAX as usize - 1, u64::MAX), (7, GEN_MASK)] {
            let token = conn_token(slot, id);
            assert!(!metrics_http::owns(token), "{slot} {id}");
            assert_eq!(token.0 & LISTENER_BIT, 0);
            assert_ne!(token, SIGNAL_TOKEN);
            assert_ne!(token, EVENT_LOG_TOKEN);
        }
        assert!(!metrics_http::owns(EVENT_LOG_TOKEN));
    }

    #[test]
    fn logged_lines_escape_control_bytes() {
        assert_eq!(printable(b"EHLO client.example"), "EHLO client.example");
        assert_eq!(
            printable("MAIL FROM:<ü@example>".as_bytes()),
            "MAIL FROM:<ü@example>"
        );
        assert_eq!(
            printable(b"VRFY a\rINFO forged\x1b[2J\x00"),
            "VRFY a\\rINFO forged\\u{1b}[2J\\u{0}"
        );
        assert_eq!(printable(b"\tx\x7f"), "\\tx\\u{7f}");
    }
}
