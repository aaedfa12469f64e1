//! The metrics endpoint: a small HTTP/1.1 server on the loop's poll, for `GET /metrics` and
//! `GET /healthz`.
//!
//! It owns its listening socket and a few connections, each answered once and closed
//! (`Connection: close`). Whatever a client can make it hold is bounded: connections (`503`
//! past the limit), the request head (`431`), the time to send it (`408`), the time a
//! response may stall, and what is read and thrown away after it. Its deadlines are entries
//! in the loop's timer wheel ([`HttpTimer`]); its readiness comes as tokens carrying
//! [`TOKEN_BIT`]. What `/metrics` says is the caller's: it renders the body into the buffer
//! it is handed. Nothing a client sends can block, stall or panic the loop.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::accept_backoff::AcceptBackoff;
use super::timer::{TimerKey, TimerWheel};

/// Every token of the endpoint has this bit; the loop's own tokens never do.
pub const TOKEN_BIT: usize = 1 << 61;
/// A token's slot part (low 32 bits); the listener's is one no connection has.
const SLOT_MASK: usize = u32::MAX as usize;
const LISTENER_SLOT: usize = SLOT_MASK;
/// A connection's generation sits in the token above its slot, in bits 32 to 59: a readiness
/// event or a timer for a connection that has gone is not taken for the one in its slot now.
const GEN_MASK: u32 = (1 << 28) - 1;

pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Header lines in a request; more get `431`.
const MAX_HEADERS: usize = 32;
/// The most read from a socket in one call.
const READ_CHUNK: usize = 4096;
/// After its response, a connection is read (and what comes thrown away) until the client
/// closes, for this long and this much at most. Closing a socket with unread bytes in it
/// sends a reset, which can destroy the response before the client has read it.
const LINGER_MS: u64 = 1000;
const LINGER_BYTES: usize = 64 * 1024;

/// What a client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once; more get `503` and are closed.
    pub max_connections: usize,
    /// Bytes of request line and headers; more get `431`.
    pub max_head: usize,
    /// Milliseconds to send the whole request head (`408` after), and that a response may go
    /// without any of it being taken (closed after).
    pub idle_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            max_head: 8 * 1024,
            idle_ms: 10_000,
        }
    }
}

/// The endpoint's entries in the loop's timer wheel; the loop hands them back to
/// [`MetricsEndpoint::on_timer`] when they fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpTimer {
    /// A connection's deadline (re-armed lazily: it may fire early).
    Deadline { slot: u32, generation: u32 },
    /// The accept back-off is over.
    ResumeAccept,
}

/// What the endpoint needs from the loop for one call: the poll's registry, the timer wheel,
/// the time of this turn, and how to render the metrics.
pub struct Turn<'a, T> {
    pub registry: &'a Registry,
    pub timers: &'a mut TimerWheel<T>,
    /// Milliseconds, as the loop's clock counts.
    pub now: u64,
    pub render: &'a mut dyn FnMut(&mut Vec<u8>),
}

/// Whether a readiness token is the endpoint's.
pub fn owns(token: Token) -> bool {
    token.0 & TOKEN_BIT != 0
}

fn conn_token(slot: usize, generation: u32) -> Token {
    Token(TOKEN_BIT | (generation as usize) << 32 | slot)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Writing,
    /// The response has gone: reading until the client closes.
    Draining,
}

struct HttpConn {
    stream: TcpStream,
    slot: u32,
    generation: u32,
    phase: Phase,
    /// The request head so far, at most `Limits::max_head` bytes.
    head: Vec<u8>,
    /// The response; `out[..written]` has gone.
    out: Vec<u8>,
    written: usize,
    /// Bytes thrown away after the response.
    drained: usize,
    /// When the connection is given up, in the loop's milliseconds.
    deadline: u64,
    /// The timer for `deadline`, or for an earlier time (it is then re-armed when it fires).
    timer: Option<TimerKey>,
}

/// Where [`MetricsEndpoint::drive`] goes after a step.
enum Step {
    Again,
    /// Nothing more to do until an event or the deadline.
    Wait,
    Close,
}

pub struct MetricsEndpoint {
    /// `None` once stopping: no new connections.
    listener: Option<TcpListener>,
    conns: Slab<HttpConn>,
    limits: Limits,
    next_generation: u32,
    backoff: AcceptBackoff,
}

impl MetricsEndpoint {
    pub fn new(mut listener: TcpListener, registry: &Registry, limits: Limits) -> io::Result<Self> {
        let token = Token(TOKEN_BIT | LISTENER_SLOT);
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(MetricsEndpoint {
            listener: Some(listener),
            conns: Slab::with_capacity(limits.max_connections),
            limits,
            next_generation: 0,
            backoff: AcceptBackoff::default(),
        })
    }

    /// A readiness event with one of the endpoint's tokens (see [`owns`]).
    pub fn ready<T: From<HttpTimer>>(&mut self, token: Token, turn: &mut Turn<'_, T>) {
        let slot = token.0 & SLOT_MASK;
        if slot == LISTENER_SLOT {
            return self.accept(turn);
        }
        let generation = ((token.0 & !TOKEN_BIT) >> 32) as u32;
        if self.lookup(slot, generation).is_some() {
            self.drive(slot, turn);
        }
    }

    pub fn on_timer<T: From<HttpTimer>>(&mut self, timer: HttpTimer, turn: &mut Turn<'_, T>) {
        let (slot, generation) = match timer {
            HttpTimer::ResumeAccept => {
                self.backoff.resume();
                return self.accept(turn);
            }
            HttpTimer::Deadline { slot, generation } => (slot as usize, generation),
        };
        let idle_ms = self.limits.idle_ms;
        let Some(conn) = self.lookup(slot, generation) else {
            return;
        };
        conn.timer = None;
        if turn.now < conn.deadline {
            let at = conn.deadline;
            return conn.expect_by(at, turn.timers);
        }
        if conn.phase != Phase::Reading {
            // It stopped taking its response, or never closed after it.
            return self.close(slot, turn.timers);
        }
        debug!("metrics: request timed out");
        conn.answer(Answer::Error(Status::RequestTimeout), true, turn);
        conn.expect_by(turn.now + idle_ms, turn.timers);
        self.drive(slot, turn);
    }

    /// Stops accepting; connections open get their answer (`/healthz` says `503` from now).
    pub fn stop(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            // Other processes may hold the same socket: dropping it alone would not take it
            // out of this poll.
            let _ = registry.deregister(&mut listener);
        }
    }

    fn lookup(&mut self, slot: usize, generation: u32) -> Option<&mut HttpConn> {
        self.conns
            .get_mut(slot)
            .filter(|c| c.generation == generation)
    }

    fn accept<T: From<HttpTimer>>(&mut self, turn: &mut Turn<'_, T>) {
        loop {
            let Some(listener) = self.listener.as_ref().filter(|_| !self.backoff.resting()) else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    self.backoff.accepted();
                    if self.conns.len() >= self.limits.max_connections {
                        refuse(stream);
                    } else {
                        self.open(stream, turn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    let Some(wait) = self.backoff.failed(&e) else {
                        continue;
                    };
                    warn!("metrics: accept failed: {e}; trying again in {wait} ms");
                    turn.timers
                        .insert(turn.now + wait, HttpTimer::ResumeAccept.into());
                    return;
                }
            }
        }
    }

    fn open<T: From<HttpTimer>>(&mut self, mut stream: TcpStream, turn: &mut Turn<'_, T>) {
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        let generation = self.next_generation;
        self.next_generation = (generation + 1) & GEN_MASK;
        // Both interests, once: readiness is edge-triggered, so the writable edges of a
        // connection not writing cost a spurious event or two at most, and its interest never
        // has to change.
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = conn_token(slot, generation);
        if let Err(e) = turn.registry.register(&mut stream, token, interest) {
            warn!("metrics: cannot watch a new connection: {e}");
            return;
        }
        let _ = stream.set_nodelay(true);
        let conn = entry.insert(HttpConn {
            stream,
            slot: slot as u32,
            generation,
            phase: Phase::Reading,
            head: Vec::new(),
            out: Vec::new(),
            written: 0,
            drained: 0,
            deadline: 0,
            timer: None,
        });
        // The whole head must come within this: bytes trickling in do not extend it.
        conn.expect_by(turn.now + self.limits.idle_ms, turn.timers);
    }

    /// Moves one connection on as far as it can go, and closes it when it is done.
    fn drive<T: From<HttpTimer>>(&mut self, slot: usize, turn: &mut Turn<'_, T>) {
        let serving = self.listener.is_some();
        let limits = self.limits;
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let step = match conn.phase {
                Phase::Reading => conn.read_request(limits.max_head, serving, turn),
                Phase::Writing => conn.write_response(limits.idle_ms, turn),
                Phase::Draining => conn.drain(),
            };
            match step {
                Step::Again => {}
                Step::Wait => return,
                Step::Close => return self.close(slot, turn.timers),
            }
        }
    }

    fn close<T>(&mut self, slot: usize, timers: &mut TimerWheel<T>) {
        // Dropping the socket closes it and takes it out of the poll; an event already
        // fetched for it is dropped by its token's generation.
        let timer = self.conns.try_remove(slot).and_then(|conn| conn.timer);
        if let Some(key) = timer {
            timers.cancel(key);
        }
    }
}

impl HttpConn {
    /// Gives the connection up at `at`. A timer already set for an earlier time is kept: it
    /// is re-armed when it fires, so a deadline that moves on costs no timer operation.
    fn expect_by<T: From<HttpTimer>>(&mut self, at: u64, timers: &mut TimerWheel<T>) {
        let set_sooner = self.timer.is_some() && self.deadline <= at;
        self.deadline = at;
        if set_sooner {
            return;
        }
        if let Some(key) = self.timer.take() {
            timers.cancel(key);
        }
        let timer = HttpTimer::Deadline {
            slot: self.slot,
            generation: self.generation,
        };
        self.timer = Some(timers.insert(at, timer.into()));
    }

    /// Reads until the request head is whole (and answers it), the socket is empty, or the
    /// client is gone.
    fn read_request<T>(&mut self, max_head: usize, serving: bool, turn: &mut Turn<'_, T>) -> Step {
        let mut chunk = [0; READ_CHUNK];
        loop {
            let n = match self.stream.read(&mut chunk) {
                // Gone before asking anything whole: there is no one to answer.
                Ok(0) => return Step::Close,
                Ok(n) => n,
                Err(e) => return after_failed_io(&e),
            };
            // Bytes past the limit are either a body, ignored, or make the head too large.
            let room = max_head.saturating_sub(self.head.len());
            self.head.extend_from_slice(&chunk[..n.min(room)]);
            let answer = match examine(&self.head) {
                Some(answer) => answer,
                None if self.head.len() >= max_head => Answer::Error(Status::HeadTooLarge),
                None => continue,
            };
            self.answer(answer, serving, turn);
            return Step::Again;
        }
    }

    /// Prepares the response; what is left of the request is not read any more.
    fn answer<T>(&mut self, answer: Answer, serving: bool, turn: &mut Turn<'_, T>) {
        match answer {
            Answer::Error(status) => debug!("metrics: {}", status.line()),
            Answer::Serve { .. } => {}
        }
        self.out = respond(answer, serving, turn.render);
        self.written = 0;
        self.head = Vec::new();
        self.phase = Phase::Writing;
    }

    fn write_response<T: From<HttpTimer>>(&mut self, idle_ms: u64, turn: &mut Turn<'_, T>) -> Step {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Step::Close,
                Ok(n) => {
                    self.written += n;
                    self.expect_by(turn.now + idle_ms, turn.timers);
                }
                Err(e) => return after_failed_io(&e),
            }
        }
        self.out = Vec::new();
        // FIN after the response; the client's close then ends the connection.
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return Step::Close;
        }
        self.phase = Phase::Draining;
        self.expect_by(turn.now + LINGER_MS, turn.timers);
        Step::Again
    }

    /// Reads and throws away what the client sends after its request, until it closes.
    fn drain(&mut self) -> Step {
        let mut chunk = [0; READ_CHUNK];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Step::Close,
                Ok(n) => {
                    self.drained += n;
                    if self.drained > LINGER_BYTES {
                        return Step::Close;
                    }
                }
                Err(e) => return after_failed_io(&e),
            }
        }
    }
}

/// Where a connection goes after a read or write error: on after `WouldBlock` (to wait) or
/// `Interrupted` (to retry), closed after any other.
fn after_failed_io(e: &io::Error) -> Step {
    match e.kind() {
        io::ErrorKind::WouldBlock => Step::Wait,
        io::ErrorKind::Interrupted => Step::Again,
        _ => Step::Close,
    }
}

/// Over the connection limit: say so at once, best effort. What the client has sent already
/// is read first, so that closing sends a FIN after the answer, not a reset instead of it.
fn refuse(mut stream: TcpStream) {
    let mut chunk = [0; READ_CHUNK];
    let _ = stream.read(&mut chunk);
    let answer = compose(
        Status::Unavailable,
        b"too many connections\n".to_vec(),
        false,
    );
    let _ = stream.write(&answer);
}

/// What a request asks for, or the error it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Serve { resource: Resource, head_only: bool },
    Error(Status),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Metrics,
    Health,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadTooLarge,
    Unavailable,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// The answer to a request head, or `None` while it is not whole.
fn examine(head: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => Some(route(&request)),
        Err(httparse::Error::TooManyHeaders) => Some(Answer::Error(Status::HeadTooLarge)),
        Err(_) => Some(Answer::Error(Status::BadRequest)),
    }
}

/// A body the request announces is not read: the connection closes after the answer.
fn route(request: &httparse::Request) -> Answer {
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Answer::Error(Status::BadRequest);
    };
    // HTTP/1.1 requires Host (RFC 9112, 3.2).
    let has_host = request
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("host"));
    if request.version == Some(1) && !has_host {
        return Answer::Error(Status::BadRequest);
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let resource = match path {
        "/metrics" => Resource::Metrics,
        "/healthz" => Resource::Health,
        _ => return Answer::Error(Status::NotFound),
    };
    match method {
        "GET" => Answer::Serve {
            resource,
            head_only: false,
        },
        "HEAD" => Answer::Serve {
            resource,
            head_only: true,
        },
        _ => Answer::Error(Status::MethodNotAllowed),
    }
}

/// The whole response to send.
fn respond(answer: Answer, serving: bool, render: &mut dyn FnMut(&mut Vec<u8>)) -> Vec<u8> {
    match answer {
        Answer::Serve {
            resource: Resource::Metrics,
            head_only,
        } => {
            let mut body = Vec::new();
            render(&mut body);
            compose_typed(Status::Ok, METRICS_CONTENT_TYPE, body, head_only)
        }
        Answer::Serve {
            resource: Resource::Health,
            head_only,
        } => {
            let (status, body) = if serving {
                (Status::Ok, "ok\n")
            } else {
                (Status::Unavailable, "stopping\n")
            };
            compose(status, body.as_bytes().to_vec(), head_only)
        }
        Answer::Error(status) => {
            let reason = status.line().split_once(' ').map_or("", |(_, r)| r);
            compose(status, format!("{reason}\n").into_bytes(), false)
        }
    }
}

fn compose(status: Status, body: Vec<u8>, head_only: bool) -> Vec<u8> {
    compose_typed(status, TEXT_CONTENT_TYPE, body, head_only)
}

/// The status line and headers before `body` (before nothing for HEAD, which is told the
/// length all the same).
fn compose_typed(
    status: Status,
    content_type: &str,
    mut body: Vec<u8>,
    head_only: bool,
) -> Vec<u8> {
    let allow = if status == Status::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        status.line(),
        body.len(),
    );
    if head_only {
        return head.into_bytes();
    }
    body.splice(0..0, head.into_bytes());
    body
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpStream as StdStream};
    use std::time::{Duration, Instant};

    use mio::{Events, Poll};

    use super::*;
    use crate::event_loop::clock::Clock;

    /// The endpoint on a loopback port, driven by a loop of its own: the clients are
    /// non-blocking sockets the test uses between turns.
    struct Harness {
        poll: Poll,
        events: Events,
        endpoint: MetricsEndpoint,
        timers: TimerWheel<HttpTimer>,
        clock: Clock,
        address: SocketAddr,
        metrics: Vec<u8>,
    }

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            let found = self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name));
            found.map(|(_, value)| value.as_str())
        }
    }

    impl Harness {
        fn new(limits: Limits) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let address = listener.local_addr().unwrap();
            let poll = Poll::new().unwrap();
            let endpoint = MetricsEndpoint::new(listener, poll.registry(), limits).unwrap();
            Harness {
                poll,
                events: Events::with_capacity(64),
                endpoint,
                timers: TimerWheel::new(),
                clock: Clock::start(),
                address,
                metrics: b"blackhole_up 1\n".to_vec(),
            }
        }

        /// One turn of the loop: waits up to `wait` for events, handles them, then the due
        /// timers.
        fn turn(&mut self, wait: Duration) {
            self.poll.poll(&mut self.events, Some(wait)).unwrap();
            let metrics = &self.metrics;
            let mut render = |out: &mut Vec<u8>| out.extend_from_slice(metrics);
            let mut turn = Turn {
                registry: self.poll.registry(),
                timers: &mut self.timers,
                now: self.clock.now(),
                render: &mut render,
            };
            for event in self.events.iter() {
                assert!(owns(event.token()));
                self.endpoint.ready(event.token(), &mut turn);
            }
            let mut fired = Vec::new();
            turn.timers.advance(turn.now, &mut fired);
            for timer in fired {
                self.endpoint.on_timer(timer, &mut turn);
            }
        }

        fn connect(&self) -> StdStream {
            let client = StdStream::connect(self.address).unwrap();
            client.set_nonblocking(true).unwrap();
            client.set_nodelay(true).unwrap();
            client
        }

        /// Turns the loop until `done` holds, at most 5 s.
        fn turn_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) {
            let give_up = Instant::now() + Duration::from_secs(5);
            while !done(self) {
                assert!(Instant::now() < give_up, "no progress in 5 s");
                self.turn(Duration::from_millis(5));
            }
        }

        /// Everything the server sends until it closes.
        fn read_to_end(&mut self, client: &mut StdStream) -> Vec<u8> {
            let mut received = Vec::new();
            let mut ended = false;
            self.turn_until(|_| {
                ended = ended || read_some(client, &mut received, usize::MAX);
                ended
            });
            received
        }

        fn exchange(&mut self, request: &[u8]) -> Response {
            let mut client = self.connect();
            client.write_all(request).unwrap();
            let received = self.read_to_end(&mut client);
            parse_response(&received)
        }

        fn open_conns(&self) -> usize {
            self.endpoint.conns.len()
        }
    }

    /// A client whose receive window is a few KiB, so that the server's writes stall.
    fn small_window_client(address: SocketAddr) -> StdStream {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        let socket = socket.unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&address.into()).unwrap();
        socket.set_nonblocking(true).unwrap();
        socket.into()
    }

    /// Reads what has come, up to `most` bytes; true once the server has closed.
    fn read_some(client: &mut StdStream, into: &mut Vec<u8>, most: usize) -> bool {
        let mut chunk = [0; 16 * 1024];
        let mut taken = 0;
        while taken < most {
            let want = chunk.len().min(most - taken);
            match client.read(&mut chunk[..want]) {
                Ok(0) => return true,
                Ok(n) => {
                    into.extend_from_slice(&chunk[..n]);
                    taken += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) => panic!("the client's read failed: {e}"),
            }
        }
        false
    }

    fn parse_response(bytes: &[u8]) -> Response {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(length) = response.parse(bytes).unwrap() else {
            panic!(
                "an incomplete response: {:?}",
                String::from_utf8_lossy(bytes)
            );
        };
        let headers = response.headers.iter();
        let headers = headers.map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into()));
        Response {
            status: response.code.unwrap(),
            headers: headers.collect(),
            body: bytes[length..].to_vec(),
        }
    }

    /// A response as HTTP/1.1 requires of it here: its length, and a close after it.
    fn well_formed(response: &Response, head_only: bool) {
        assert_eq!(response.header("connection"), Some("close"));
        let length: usize = response.header("content-length").unwrap().parse().unwrap();
        if head_only {
            assert!(response.body.is_empty());
        } else {
            assert_eq!(length, response.body.len());
        }
    }

    #[test]
    fn metrics_and_health_are_served() {
        let mut harness = Harness::new(Limits::default());
        let metrics = harness.exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.header("content-type"), Some(METRICS_CONTENT_TYPE));
        assert_eq!(metrics.body, b"blackhole_up 1\n");
        well_formed(&metrics, false);

        let health = harness.exchange(b"GET /healthz?probe=1 HTTP/1.0\r\n\r\n");
        assert_eq!((health.status, &health.body[..]), (200, &b"ok\n"[..]));
        well_formed(&health, false);
    }

    #[test]
    fn head_gets_the_headers_and_no_body() {
        let mut harness = Harness::new(Limits::default());
        let metrics = harness.exchange(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.header("content-length"), Some("15"));
        well_formed(&metrics, true);
        let health = harness.exchange(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(health.status, 200);
        assert_eq!(health.header("content-length"), Some("3"));
        well_formed(&health, true);
    }

    #[test]
    fn each_error_has_its_status() {
        let mut harness = Harness::new(Limits::default());
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        let cases: [(&[u8], u16); 8] = [
            (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            (b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            (b"POST /metrics/x HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            (b"GET /metrics HTTP/1.1\r\n\r\n", 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
            (huge.as_bytes(), 431),
            (many.as_bytes(), 431),
        ];
        for (request, status) in cases {
            let response = harness.exchange(request);
            harness.turn_until(|h| h.open_conns() == 0);
            let shown = String::from_utf8_lossy(&request[..request.len().min(40)]);
            assert_eq!(response.status, status, "{shown}");
            well_formed(&response, false);
            let allow = (status == 405).then_some("GET, HEAD");
            assert_eq!(response.header("allow"), allow, "{shown}");
        }
    }

    #[test]
    fn a_body_on_get_is_not_taken_for_anything() {
        let mut harness = Harness::new(Limits::default());
        harness.metrics = vec![b'#'; 1 << 20];
        // The body, and a pipelined request after it, are read and thrown away: closing with
        // them unread would reset the connection and lose what of the answer is in flight.
        let body = "b".repeat(20_000);
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}\
             POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            body.len()
        );
        let mut client = harness.connect();
        client.write_all(request.as_bytes()).unwrap();
        harness.turn_until(|h| h.open_conns() == 1);
        harness.turn(Duration::from_millis(50));
        let response = parse_response(&harness.read_to_end(&mut client));
        assert_eq!(response.status, 200);
        assert!(
            response.body == harness.metrics,
            "{} bytes",
            response.body.len()
        );
        well_formed(&response, false);
    }

    #[test]
    fn a_request_split_at_every_byte_is_answered() {
        let mut harness = Harness::new(Limits::default());
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n";
        let mut client = harness.connect();
        for byte in request {
            client.write_all(&[*byte]).unwrap();
            harness.turn(Duration::from_millis(1));
        }
        let response = parse_response(&harness.read_to_end(&mut client));
        assert_eq!(
            (response.status, &response.body[..]),
            (200, &b"blackhole_up 1\n"[..])
        );
    }

    #[test]
    fn a_slow_request_times_out_with_408() {
        let limits = Limits {
            idle_ms: 200,
            ..Limits::default()
        };
        let mut harness = Harness::new(limits);
        let mut client = harness.connect();
        let started = Instant::now();
        // Bytes trickling in, one every few milliseconds, do not keep it open: the head must
        // be whole in time.
        client.write_all(b"GET /metr").unwrap();
        let mut received = Vec::new();
        let (mut last_byte, mut answered_after) = (started, None);
        harness.turn_until(|_| {
            let ended = read_some(&mut client, &mut received, usize::MAX);
            if !received.is_empty() {
                answered_after.get_or_insert_with(|| started.elapsed());
            } else if last_byte.elapsed() >= Duration::from_millis(5) {
                // Paced by the clock, not by the loop's turns: a turn with a byte to read
                // is over at once, and bytes at that rate would fill the head's bound.
                let _ = client.write(b"i");
                last_byte = Instant::now();
            }
            ended
        });
        let response = parse_response(&received);
        let waited = answered_after.expect("an answer came before the close");
        assert_eq!(response.status, 408);
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_millis(1000), "{waited:?}");
        harness.turn_until(|h| h.open_conns() == 0);
    }

    #[test]
    fn a_client_that_stops_reading_is_closed() {
        let limits = Limits {
            idle_ms: 200,
            ..Limits::default()
        };
        let mut harness = Harness::new(limits);
        harness.metrics = vec![b'#'; 8 << 20];
        let mut client = harness.connect();
        client.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let writing = |h: &mut Harness| {
            let conn = h.endpoint.conns.iter().next().map(|(_, c)| c);
            conn.is_some_and(|c| c.phase == Phase::Writing)
        };
        harness.turn_until(writing);
        let started = Instant::now();
        harness.turn_until(|h| h.open_conns() == 0);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(harness.timers.is_empty());
    }

    #[test]
    fn past_the_connection_limit_clients_get_503() {
        let mut harness = Harness::new(Limits::default());
        let mut held: Vec<StdStream> = (0..16).map(|_| harness.connect()).collect();
        harness.turn_until(|h| h.open_conns() == 16);
        let refused = harness.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(refused.status, 503);
        well_formed(&refused, false);
        assert_eq!(harness.open_conns(), 16);
        // The connections held are served all the same, and make room once done.
        let mut first = held.remove(0);
        first
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let response = parse_response(&harness.read_to_end(&mut first));
        assert_eq!(response.status, 200);
        drop(first);
        harness.turn_until(|h| h.open_conns() == 15);
        let served = harness.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(served.status, 200);
    }

    #[test]
    fn a_large_body_reaches_a_slow_reader_whole() {
        let mut harness = Harness::new(Limits::default());
        let metrics: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
        harness.metrics = metrics.clone();
        let mut client = small_window_client(harness.address);
        harness.turn_until(|h| h.open_conns() == 1);
        // Loopback buffers would take a megabyte at once: make the server's small, as a
        // slow network would.
        for (_, conn) in &harness.endpoint.conns {
            let socket = socket2::SockRef::from(&conn.stream);
            socket.set_send_buffer_size(16 * 1024).unwrap();
        }
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let writing = |h: &mut Harness| {
            let conn = h.endpoint.conns.iter().next().map(|(_, c)| c);
            conn.is_some_and(|c| c.phase == Phase::Writing && c.written > 0)
        };
        harness.turn_until(writing);
        // The socket took only part of it: the rest waits for the reader.
        let mut received = Vec::new();
        let mut reads = 0;
        harness.turn_until(|h| {
            h.turn(Duration::from_millis(1));
            reads += 1;
            read_some(&mut client, &mut received, 8 * 1024)
        });
        assert!(reads > 64, "{reads} reads");
        let response = parse_response(&received);
        assert_eq!(response.status, 200);
        assert!(
            response.body == metrics,
            "{} bytes of {}",
            response.body.len(),
            metrics.len()
        );
        harness.turn_until(|h| h.open_conns() == 0);
    }

    #[test]
    fn a_stopping_endpoint_answers_what_is_open_and_takes_no_more() {
        let mut harness = Harness::new(Limits::default());
        let mut client = harness.connect();
        harness.turn_until(|h| h.open_conns() == 1);
        harness.endpoint.stop(harness.poll.registry());
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let response = parse_response(&harness.read_to_end(&mut client));
        assert_eq!(
            (response.status, &response.body[..]),
            (503, &b"stopping\n"[..])
        );
        assert!(StdStream::connect(harness.address).is_err());
    }

    #[test]
    fn events_for_a_connection_gone_do_not_reach_its_successor() {
        let mut harness = Harness::new(Limits::default());
        let first = harness.connect();
        harness.turn_until(|h| h.open_conns() == 1);
        let old = harness
            .endpoint
            .conns
            .iter()
            .next()
            .map(|(s, c)| (s, c.generation));
        let (slot, generation) = old.unwrap();
        drop(first);
        harness.turn_until(|h| h.open_conns() == 0);
        let _second = harness.connect();
        harness.turn_until(|h| h.open_conns() == 1);
        assert!(harness.endpoint.lookup(slot, generation).is_none());
        assert!(harness.endpoint.conns.contains(slot));
        let token = conn_token(slot, generation);
        assert!(owns(token) && token.0 & (1 << 62 | 1 << 63) == 0);
    }

    #[test]
    fn a_resting_listener_leaves_clients_waiting_until_it_resumes() {
        let mut harness = Harness::new(Limits::default());
        // As after an accept error (descriptors exhausted): no accepting until the timer.
        let exhausted = io::Error::from_raw_os_error(24); // EMFILE
        assert!(harness.endpoint.backoff.failed(&exhausted).is_some());
        let mut client = harness.connect();
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        harness.turn(Duration::from_millis(50));
        assert_eq!(harness.open_conns(), 0);
        harness.timers.insert(0, HttpTimer::ResumeAccept);
        let response = parse_response(&harness.read_to_end(&mut client));
        assert_eq!(response.status, 200);
    }
}
