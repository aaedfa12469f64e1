//! Tens of thousands of idle connections from a few client processes: each is one thread
//! with its own `mio` poll and non-blocking sockets, so the client costs a few system calls
//! per connection and is not what limits how fast the server greets. Processes rather than
//! threads, because a process may hold no more descriptors than its hard limit, which the
//! bench may not be allowed to raise: four processes hold 60,000 connections under a limit
//! of 20,000.
//!
//! Sockets are bound to loopback source addresses 127.0.0.2 and up before they connect, with
//! `IP_BIND_ADDRESS_NO_PORT` so the port is picked at connect time for the whole 4-tuple:
//! each source address then has the whole ephemeral port range to itself. A process keeps a
//! bounded number of connections between connect and greeting, so no listener's accept
//! queue overflows (a dropped SYN would come back a second later and spoil the rate).
//!
//! The client processes are this bench's own executable, started with `SWARM_ENV` set (the
//! bench's `main` hands over to `run_if_asked`). They go through three phases the caller
//! paces with a line on their standard input: `open`, `noop` (on every connection), then
//! closing (any line, or the end of input); after each of the first two they print one line
//! of figures. Between phases the connections sit idle in the server.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, SockAddr, Socket, Type};

use super::smtp;

/// Set in a client process's environment: its `Plan` and its number.
const SWARM_ENV: &str = "BLACKHOLE_BENCH_SWARM";
/// How long a phase may take before the connections still waiting count as failed.
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
const EVENTS: usize = 1024;

/// The first loopback source address; the `n`th one is 127.0.0.(2 + n).
const FIRST_SOURCE: u8 = 2;

/// Loopback source address number `n` (from 0): 127.0.0.2, 127.0.0.3, ...
pub fn source(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, FIRST_SOURCE.saturating_add(n as u8))
}

/// A non-blocking socket bound to `from` (its port chosen at connect time) and connecting
/// to `to`.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> io::Result<std::net::TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    bind_address_no_port(&socket)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(SocketAddrV4::new(from, 0)))?;
    match socket.connect(&SockAddr::from(to)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Linux's `IP_BIND_ADDRESS_NO_PORT`, which socket2 does not offer: without it, `bind`
/// takes a port for the address alone and the ports run out across all addresses at once.
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is open for the call, and `on` is a c_int that outlives it,
    // with its size given.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine, so the
/// client processes' times can be set against each other.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// What the caller asks for.
#[derive(Clone, Copy)]
pub struct Plan {
    pub addr: SocketAddr,
    /// Connections in all.
    pub connections: usize,
    /// Source addresses, 127.0.0.2 and up; connection `i` comes from address `i % sources`.
    pub sources: usize,
    /// Client processes; connection `i` is held by process `i % processes`.
    pub processes: usize,
    /// Per process: connections between connect and their greeting (or NOOP and its reply).
    pub in_flight: usize,
}

impl Plan {
    fn to_env(self, index: usize) -> String {
        format!(
            "{} {} {} {} {} {index}",
            self.addr, self.connections, self.sources, self.processes, self.in_flight
        )
    }

    fn from_env(text: &str) -> Option<(Plan, usize)> {
        let mut words = text.split_whitespace();
        let plan = Plan {
            addr: words.next()?.parse().ok()?,
            connections: words.next()?.parse().ok()?,
            sources: words.next()?.parse::<usize>().ok()?.max(1),
            processes: words.next()?.parse::<usize>().ok()?.max(1),
            in_flight: words.next()?.parse().ok()?,
        };
        Some((plan, words.next()?.parse().ok()?))
    }
}

/// One phase's outcome, over all client processes.
#[derive(Default)]
pub struct Phase {
    pub ok: usize,
    pub failed: usize,
    /// From the first connect (or NOOP) of any process to the last greeting (or 250).
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl Phase {
    fn merge(reports: Vec<Report>) -> Phase {
        let first = reports.iter().filter_map(|r| r.first_start).min();
        let last = reports.iter().filter_map(|r| r.last_done).max();
        Phase {
            ok: reports.iter().map(|r| r.ok).sum(),
            failed: reports.iter().map(|r| r.failed).sum(),
            elapsed: match (first, last) {
                (Some(first), Some(last)) => Duration::from_nanos(last.saturating_sub(first)),
                _ => Duration::ZERO,
            },
            first_error: reports.into_iter().find_map(|r| r.first_error),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct ClientProcess {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// The running client processes: they hold their connections between phases.
pub struct Swarm {
    clients: Vec<ClientProcess>,
}

impl Swarm {
    /// Starts the client processes and, once every one is ready, has them open every
    /// connection; returns once all are greeted or given up on.
    pub fn open(plan: Plan) -> io::Result<(Swarm, Phase)> {
        let mut swarm = Swarm {
            clients: Vec::with_capacity(plan.processes),
        };
        let exe = std::env::current_exe()?;
        for index in 0..plan.processes.max(1) {
            let mut child = Command::new(&exe)
                .env(SWARM_ENV, plan.to_env(index))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other("a client process without its pipes"));
            };
            swarm.clients.push(ClientProcess {
                child,
                input,
                output: BufReader::new(output),
            });
        }
        for client in &mut swarm.clients {
            if read_line(&mut client.output)?.trim() != "ready" {
                return Err(io::Error::other("a client process did not start"));
            }
        }
        let opened = swarm.phase("open")?;
        Ok((swarm, opened))
    }

    /// NOOP on every greeted connection, `in_flight` at a time per process.
    pub fn noop_all(&mut self) -> io::Result<Phase> {
        self.phase("noop")
    }

    /// CPU seconds the client processes have used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.clients
            .iter()
            .map(|client| super::procfs::cpu_seconds(client.child.id()))
            .sum()
    }

    /// Closes every connection (without QUIT: the server sees the end of the stream).
    pub fn close(mut self) {
        for client in self.clients.drain(..) {
            let ClientProcess {
                mut child, input, ..
            } = client;
            // The end of its input is the client's signal to close and exit.
            drop(input);
            let _ = child.wait();
        }
    }

    fn phase(&mut self, name: &str) -> io::Result<Phase> {
        for client in &mut self.clients {
            writeln!(client.input, "{name}")?;
        }
        let mut reports = Vec::with_capacity(self.clients.len());
        for client in &mut self.clients {
            let line = read_line(&mut client.output)?;
            reports.push(Report::parse(&line).ok_or_else(|| {
                io::Error::other(format!("a client process said {line:?} after {name}"))
            })?);
        }
        Ok(Phase::merge(reports))
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for client in &mut self.clients {
            let _ = client.child.kill();
            let _ = client.child.wait();
        }
    }
}

fn read_line(from: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if from.read_line(&mut line)? == 0 {
        return Err(io::Error::other("a client process ended early"));
    }
    Ok(line)
}

/// In a client process (`SWARM_ENV` set): runs it and returns its exit code; otherwise
/// `None`.
pub fn run_if_asked() -> Option<ExitCode> {
    let (plan, index) = Plan::from_env(&std::env::var(SWARM_ENV).ok()?)?;
    Some(match client_process(plan, index) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarm client {index}: {e}");
            ExitCode::FAILURE
        }
    })
}

fn client_process(plan: Plan, index: usize) -> io::Result<()> {
    let mut client = Client::new()?;
    // This process's connections: every `processes`th, starting at `index`.
    let mine: Vec<usize> = (index..plan.connections).step_by(plan.processes).collect();
    let mut stdout = io::stdout();
    let mut commands = io::stdin().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut command = String::new();
    loop {
        command.clear();
        commands.read_line(&mut command)?;
        let report = match command.trim() {
            "open" => client.open(&plan, &mine),
            "noop" => client.noop_all(plan.in_flight),
            _ => return Ok(()),
        };
        writeln!(stdout, "{}", report.line())?;
        stdout.flush()?;
    }
}

/// One process's share of a phase.
#[derive(Default)]
struct Report {
    ok: usize,
    failed: usize,
    /// `monotonic_ns` readings.
    first_start: Option<u64>,
    last_done: Option<u64>,
    first_error: Option<String>,
}

impl Report {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        self.first_error.get_or_insert(what);
    }

    /// `ok failed first_start last_done error...`, 0 for a time not taken.
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.ok,
            self.failed,
            self.first_start.unwrap_or(0),
            self.last_done.unwrap_or(0),
            self.first_error.as_deref().unwrap_or("").replace('\n', " ")
        )
    }

    fn parse(line: &str) -> Option<Report> {
        let mut words = line.trim_end().splitn(5, ' ');
        let mut number = || words.next()?.parse::<u64>().ok();
        let (ok, failed) = (number()?, number()?);
        let (first, last) = (number()?, number()?);
        let error = words.next().unwrap_or("");
        Some(Report {
            ok: ok as usize,
            failed: failed as usize,
            first_start: (first > 0).then_some(first),
            last_done: (last > 0).then_some(last),
            first_error: (!error.is_empty()).then(|| error.to_owned()),
        })
    }
}

/// A reply line being read: its code from the first three bytes, done at the line feed
/// of a line whose fourth byte is not `-`.
#[derive(Default)]
struct ReplyLine {
    code: u16,
    at: u8,
    continued: bool,
}

impl ReplyLine {
    /// Takes bytes in; the code once a final reply line has ended.
    fn take(&mut self, bytes: &[u8]) -> Option<u16> {
        for &byte in bytes {
            match (self.at, byte) {
                (_, b'\n') if !self.continued => return Some(self.code),
                (_, b'\n') => *self = ReplyLine::default(),
                (0..=2, b'0'..=b'9') => self.code = self.code * 10 + u16::from(byte - b'0'),
                (0..=2, _) => self.code = 1000,
                (3, b'-') => self.continued = true,
                _ => {}
            }
            self.at = self.at.saturating_add(1);
        }
        None
    }
}

struct Conn {
    stream: TcpStream,
    line: ReplyLine,
    waiting: bool,
}

struct Client {
    poll: Poll,
    events: Events,
    conns: Vec<Option<Conn>>,
    buf: [u8; 512],
}

enum Outcome {
    Pending,
    Reply(u16),
    Failed(String),
}

impl Client {
    fn new() -> io::Result<Client> {
        Ok(Client {
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS),
            conns: Vec::new(),
            buf: [0; 512],
        })
    }

    /// Opens the connections numbered `mine`, keeping at most `plan.in_flight` ungreeted.
    fn open(&mut self, plan: &Plan, mine: &[usize]) -> Report {
        let mut report = Report::default();
        self.conns.reserve(mine.len());
        let mut next = mine.iter();
        let mut in_flight = 0;
        let deadline = Instant::now() + PHASE_DEADLINE;
        report.first_start = Some(monotonic_ns());
        loop {
            while in_flight < plan.in_flight {
                let Some(&n) = next.next() else { break };
                match self.connect(plan, n) {
                    Ok(()) => in_flight += 1,
                    Err(e) => {
                        report.fail(format!("connect from {}: {e}", source(n % plan.sources)))
                    }
                }
            }
            if in_flight == 0 || Instant::now() > deadline {
                break;
            }
            in_flight -= self.wait_for_replies(220, &mut report);
        }
        for conn in self
            .conns
            .iter_mut()
            .filter(|c| c.as_ref().is_some_and(|c| c.waiting))
        {
            *conn = None;
            report.fail("no greeting within the deadline".into());
        }
        report
    }

    fn connect(&mut self, plan: &Plan, n: usize) -> io::Result<()> {
        let stream = connect_from(source(n % plan.sources), plan.addr)?;
        let mut stream = TcpStream::from_std(stream);
        let token = Token(self.conns.len());
        self.poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)?;
        self.conns.push(Some(Conn {
            stream,
            line: ReplyLine::default(),
            waiting: true,
        }));
        Ok(())
    }

    /// One poll: reads what came on waiting connections; returns how many got their reply
    /// (or failed) and so are no longer waiting.
    fn wait_for_replies(&mut self, expected: u16, report: &mut Report) -> usize {
        if let Err(e) = self
            .poll
            .poll(&mut self.events, Some(Duration::from_secs(1)))
        {
            if e.kind() != io::ErrorKind::Interrupted {
                report.fail(format!("poll: {e}"));
            }
            return 0;
        }
        let mut finished = 0;
        let tokens: Vec<usize> = self.events.iter().map(|event| event.token().0).collect();
        for token in tokens {
            let Some(Some(conn)) = self.conns.get_mut(token) else {
                continue;
            };
            if !conn.waiting {
                continue;
            }
            match read_reply(conn, &mut self.buf) {
                Outcome::Pending => continue,
                Outcome::Reply(code) if code == expected => {
                    report.ok += 1;
                    report.last_done = Some(monotonic_ns());
                    conn.waiting = false;
                }
                Outcome::Reply(code) => {
                    report.fail(format!("expected {expected}, got {code}"));
                    self.conns[token] = None;
                }
                Outcome::Failed(e) => {
                    report.fail(e);
                    self.conns[token] = None;
                }
            }
            finished += 1;
        }
        finished
    }

    /// NOOP on every open connection, at most `in_flight` awaiting their 250.
    fn noop_all(&mut self, in_flight: usize) -> Report {
        let mut report = Report::default();
        let open: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].is_some())
            .collect();
        let mut next = open.into_iter();
        let mut waiting = 0;
        let deadline = Instant::now() + PHASE_DEADLINE;
        report.first_start = Some(monotonic_ns());
        loop {
            while waiting < in_flight {
                let Some(i) = next.next() else { break };
                match self.send_noop(i) {
                    Ok(()) => waiting += 1,
                    Err(e) => {
                        report.fail(format!("NOOP not sent: {e}"));
                        self.conns[i] = None;
                    }
                }
            }
            if waiting == 0 || Instant::now() > deadline {
                break;
            }
            waiting -= self.wait_for_replies(250, &mut report);
        }
        if waiting > 0 {
            report.failed += waiting;
            report
                .first_error
                .get_or_insert("no 250 within the deadline".into());
        }
        report
    }

    fn send_noop(&mut self, i: usize) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return Err(io::Error::other("closed"));
        };
        // Six bytes into an empty send buffer: all or nothing.
        if conn.stream.write(smtp::NOOP)? != smtp::NOOP.len() {
            return Err(io::Error::other("short write"));
        }
        conn.line = ReplyLine::default();
        conn.waiting = true;
        Ok(())
    }
}

/// Reads what the socket has (edge-triggered: until it would block) into the reply line.
fn read_reply(conn: &mut Conn, buf: &mut [u8]) -> Outcome {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return Outcome::Failed("the server closed the connection".into()),
            Ok(n) => {
                if let Some(code) = conn.line.take(&buf[..n]) {
                    return Outcome::Reply(code);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    }
}
