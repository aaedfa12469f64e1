//! What watching the server costs: the metrics endpoint and the event log.
//!
//!     cargo bench --bench metrics              # both sections
//!     cargo bench --bench metrics -- crowd     # or one: `cpu`, `crowd`
//!
//! - cpu: server CPU per 1,000 messages from Postfix's smtp-source, 20 persistent sessions,
//!   with nothing watched, with `metrics_listen` scraped every second, and with `event_log`
//!   writing to a file (the writer process's CPU counted with the server's). Runs alternate
//!   between the three, three rounds, medians compared: absolute figures drift on a shared
//!   machine, ratios measured in one run do not. Targets: metrics at most 1.03x nothing,
//!   the event log at most 1.15x.
//! - crowd: metrics on, 10,000 connections open (1,000 of them at DATA): RSS per connection
//!   (at most 1 KiB); server time per scrape, from /proc/PID/schedstat (under 5 ms); and
//!   1,000 replies delayed 1 s, coming due while scrapes run back to back, against the
//!   same without scrapes: p99 lateness at most 5 ms (one scrape's budget) worse.

#[allow(dead_code)]
mod support;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::crowd::{self, Stage};
use support::postfix;
use support::procfs;
use support::report::{self, Table, Targets, Verdict, count, millis};
use support::server::{self, ScratchDir, Server};
use support::smtp::{self, SmtpConn};
use support::stats::{median, percentile};

const SECTIONS: [&str; 2] = ["cpu", "crowd"];

const SESSIONS: usize = 20;
const MESSAGES: usize = 60_000;
const ROUNDS: usize = 3;
const METRICS_RATIO: f64 = 1.03;
const EVENT_LOG_RATIO: f64 = 1.15;
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

const CROWD: usize = 10_000;
const AT_DATA: usize = 1_000;
const IN_FLIGHT: usize = 200;
const SCRAPES: usize = 100;
const SCRAPE_BUDGET: f64 = 0.005;
const IDLE_BYTES: f64 = 1024.0;
const DELAY: Duration = Duration::from_secs(1);
const REPLY_GRACE: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(1);
/// How long the event log's writer may take to write the last lines of a run.
const WRITER_CATCH_UP: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    Nothing,
    Metrics,
    EventLog,
}

impl Watch {
    fn name(self) -> &'static str {
        match self {
            Watch::Nothing => "nothing watched",
            Watch::Metrics => "metrics, scraped every 1 s",
            Watch::EventLog => "event log to a file",
        }
    }
}

fn free_addr() -> io::Result<SocketAddr> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// `GET /metrics` over HTTP/1.0: the body, if the status was 200.
fn scrape(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, smtp::REPLY_TIMEOUT)?;
    stream.set_read_timeout(Some(smtp::REPLY_TIMEOUT))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 ") => Ok(body.to_owned()),
        _ => Err(io::Error::other(format!(
            "not a 200: {:?}",
            response.lines().next()
        ))),
    }
}

/// A sample's value in a metrics text (`name` with its labels, if any, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A thread that scrapes `addr` every `every` (or back to back for zero) until dropped.
struct Scraper {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<(usize, Option<String>)>>,
}

impl Scraper {
    fn start(addr: SocketAddr, every: Duration) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let stop = &*stopped;
            let (mut done, mut error) = (0, None);
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + every;
                match scrape(addr) {
                    Ok(_) => done += 1,
                    Err(e) => {
                        error.get_or_insert(e.to_string());
                    }
                }
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            (done, error)
        });
        Scraper {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops it: the scrapes that succeeded, and the first error.
    fn finish(mut self) -> (usize, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or((0, Some("the scraper panicked".into())))
    }
}

/// CPU seconds of `pid`, and of its children (the event log's writer).
fn cpu_and_children(pid: u32) -> (f64, f64) {
    let children =
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let of_children = children
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .map(procfs::cpu_seconds)
        .sum();
    (procfs::cpu_seconds(pid), of_children)
}

/// Server time so far, in seconds, to the nanosecond (/proc/PID/schedstat's first field:
/// the server has one thread).
fn run_time(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

fn lines_in(file: &Path) -> usize {
    fs::read(file).map_or(0, |text| text.iter().filter(|&&b| b == b'\n').count())
}

/// Server CPU seconds per 1,000 messages for one smtp-source run, with `watch` on: the
/// server's with its children's, and the children's alone.
fn cpu_per_thousand(binary: &Path, watch: Watch) -> io::Result<(f64, f64)> {
    let scratch = ScratchDir::new()?;
    let metrics = free_addr()?;
    let events: PathBuf = scratch.path().join("events.json");
    let extra = match watch {
        Watch::Nothing => String::new(),
        Watch::Metrics => format!("metrics_listen = \"{metrics}\"\n"),
        Watch::EventLog => format!("event_log = \"{}\"\n", events.display()),
    };
    let mut server = Server::blackhole_with(binary, &extra)?;
    let scraper = (watch == Watch::Metrics).then(|| Scraper::start(metrics, SCRAPE_EVERY));
    let before = cpu_and_children(server.pid());
    let run = postfix::smtp_source(server.addr, MESSAGES, SESSIONS, true)?;
    if watch == Watch::EventLog {
        // The writer's share of the run includes writing its last lines: a line per message
        // and per connection (the start's probe too).
        let all = MESSAGES + SESSIONS + 1;
        let deadline = Instant::now() + WRITER_CATCH_UP;
        while lines_in(&events) < all && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
    let after = cpu_and_children(server.pid());
    server.stop();
    if !run.ok {
        return Err(io::Error::other(format!("smtp-source: {}", run.problem)));
    }
    if let Some(scraper) = scraper {
        let (scrapes, error) = scraper.finish();
        if let Some(error) = error.filter(|_| scrapes == 0) {
            return Err(io::Error::other(format!("no scrape succeeded: {error}")));
        }
    }
    if watch == Watch::EventLog && lines_in(&events) < MESSAGES {
        let lines = lines_in(&events);
        return Err(io::Error::other(format!("{lines} event lines")));
    }
    let per_thousand = |seconds: f64| seconds / MESSAGES as f64 * 1000.0;
    let children = after.1 - before.1;
    Ok((
        per_thousand(after.0 - before.0 + children),
        per_thousand(children),
    ))
}

fn cpu(binary: &Path, targets: &mut Targets) -> io::Result<()> {
    let watches = [Watch::Nothing, Watch::Metrics, Watch::EventLog];
    let mut figures = vec![Vec::new(); watches.len()];
    let mut writer = Vec::new();
    for round in 1..=ROUNDS {
        for (n, watch) in watches.iter().enumerate() {
            let (figure, children) = cpu_per_thousand(binary, *watch)?;
            eprintln!("   round {round}: {}: {figure:.4} s", watch.name());
            figures[n].push(figure);
            if *watch == Watch::EventLog {
                writer.push(children);
            }
        }
    }
    let medians: Vec<f64> = figures
        .iter()
        .map(|f| median(f).unwrap_or(f64::NAN))
        .collect();
    print_cpu(&watches, &figures, &medians, median(&writer));
    for (n, limit) in [(1, METRICS_RATIO), (2, EVENT_LOG_RATIO)] {
        let ratio = medians[n] / medians[0];
        targets.add(
            format!("CPU per message, {}", watches[n].name()),
            format!("{ratio:.3}x nothing watched"),
            format!("<= {limit}x"),
            Verdict::from_check(ratio <= limit),
        );
    }
    Ok(())
}

fn print_cpu(watches: &[Watch], figures: &[Vec<f64>], medians: &[f64], writer: Option<f64>) {
    let mut table = Table::new(
        format!(
            "Server CPU per 1,000 messages (smtp-source, {SESSIONS} persistent sessions, \
             {} messages a run, median of {ROUNDS})",
            count(MESSAGES as u64)
        ),
        &["watching", "CPU s / 1,000", "runs", "ratio"],
    );
    for ((watch, m), runs) in watches.iter().zip(medians).zip(figures) {
        let runs: Vec<String> = runs.iter().map(|f| format!("{f:.4}")).collect();
        table.row(vec![
            watch.name().into(),
            format!("{m:.4}"),
            runs.join(" "),
            format!("{:.3}x", m / medians[0]),
        ]);
    }
    if let Some(writer) = writer {
        table.note(format!(
            "event log: the writer process's CPU is counted with the server's \
             ({writer:.4} s / 1,000 of it, median)"
        ));
    }
    table.print();
}

/// MAIL, RCPT and DATA again on every connection, after a message's final reply.
fn reopen_data(conns: &mut [SmtpConn]) -> usize {
    let reopened = AtomicUsize::new(0);
    thread::scope(|scope| {
        for chunk in conns.chunks_mut(AT_DATA.div_ceil(8)) {
            let reopened = &reopened;
            scope.spawn(move || {
                for conn in chunk {
                    let ok = conn.send(smtp::ENVELOPE).is_ok()
                        && conn.expect(250).is_ok()
                        && conn.expect(250).is_ok()
                        && conn.expect(354).is_ok();
                    if ok {
                        reopened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    reopened.into_inner()
}

/// Lateness of each delayed reply (seconds past the delay), p99 and max, and how many of the
/// connections got their 250.
struct Lateness {
    p99: f64,
    max: f64,
    answered: usize,
    scrapes: usize,
}

fn delayed_round(conns: &mut [SmtpConn], scrapes_to: Option<SocketAddr>) -> Lateness {
    let message = smtp::message(&format!("X-Blackhole-Delay: {}\r\n", DELAY.as_secs()));
    let scraper = scrapes_to.map(|addr| Scraper::start(addr, Duration::ZERO));
    let delayed = crowd::send_delayed(conns, &message, DELAY + REPLY_GRACE, 1);
    let scrapes = scraper.map_or(0, |scraper| scraper.finish().0);
    let lateness: Vec<f64> = delayed
        .latencies_in_write_order()
        .iter()
        .map(|l| l.as_secs_f64() - DELAY.as_secs_f64())
        .collect();
    Lateness {
        p99: percentile(&lateness, 99.0).unwrap_or(f64::MAX),
        max: lateness.iter().copied().fold(f64::MIN, f64::max),
        answered: delayed.answered.len(),
        scrapes,
    }
}

/// Scrapes one after another with the crowd open: server time and wall time of each, and
/// what the last one said about open connections.
fn time_scrapes(server: &Server, metrics: SocketAddr) -> io::Result<(f64, f64, Option<f64>)> {
    let mut walls = Vec::with_capacity(SCRAPES);
    let mut open = None;
    let before = run_time(server.pid());
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let text = scrape(metrics)?;
        walls.push(started.elapsed().as_secs_f64());
        open = sample(&text, "blackhole_connections_open");
    }
    let per_scrape = (run_time(server.pid()) - before) / SCRAPES as f64;
    Ok((per_scrape, median(&walls).unwrap_or(f64::NAN), open))
}

/// What the crowd section measured.
struct Crowd {
    held: usize,
    answered_noop: usize,
    /// RSS bytes per connection held.
    per_conn: f64,
    /// Server seconds per scrape, the median scrape's wall time, and the open connections the
    /// last scrape counted.
    per_scrape: f64,
    /// The same with no connection open.
    per_scrape_alone: f64,
    scrape_wall: f64,
    open: Option<f64>,
    quiet: Lateness,
    scraped: Lateness,
    reopened: usize,
}

fn measure_crowd(binary: &Path) -> io::Result<Crowd> {
    let metrics = free_addr()?;
    let server = Server::blackhole_with(binary, &format!("metrics_listen = \"{metrics}\"\n"))?;
    thread::sleep(SETTLE);
    let (alone, _, _) = time_scrapes(&server, metrics)?;
    let rss_before = server.rss_kib();
    eprintln!("   opening {} connections", count(CROWD as u64));
    let mut idle = crowd::open(server.addr, CROWD - AT_DATA, IN_FLIGHT, Stage::Greeted);
    let mut at_data = crowd::open(server.addr, AT_DATA, IN_FLIGHT, Stage::InData);
    let held = idle.conns.len() + at_data.conns.len();
    let (noop_ok, _) = crowd::noop_all(&mut idle.conns);
    thread::sleep(SETTLE);
    let per_conn = server.rss_kib().saturating_sub(rss_before) as f64 * 1024.0 / held as f64;
    eprintln!("   {SCRAPES} scrapes");
    let (per_scrape, scrape_wall, open) = time_scrapes(&server, metrics)?;
    eprintln!("   {} delayed replies, no scrapes", count(AT_DATA as u64));
    let quiet = delayed_round(&mut at_data.conns, None);
    let reopened = reopen_data(&mut at_data.conns);
    eprintln!(
        "   {} delayed replies, scrapes back to back",
        count(AT_DATA as u64)
    );
    let scraped = delayed_round(&mut at_data.conns, Some(metrics));
    crowd::quit_all(idle.conns);
    crowd::quit_all(at_data.conns);
    Ok(Crowd {
        held,
        // Those at DATA answer with their delayed message's 250.
        answered_noop: noop_ok + quiet.answered,
        per_conn,
        per_scrape,
        per_scrape_alone: alone,
        scrape_wall,
        open,
        quiet,
        scraped,
        reopened,
    })
}

fn print_crowd(c: &Crowd) {
    let mut table = Table::new(
        format!(
            "{} connections open, metrics on ({} at DATA)",
            count(CROWD as u64),
            count(AT_DATA as u64)
        ),
        &["measure", "figure"],
    );
    let open = c.open.map_or("-".into(), |n| format!("{n}"));
    let rows = [
        (
            "connections held / answering",
            format!("{} / {}", c.held, c.answered_noop),
        ),
        ("blackhole_connections_open in the scrape", open),
        ("RSS per connection", format!("{:.0} bytes", c.per_conn)),
        ("server time per scrape", millis(c.per_scrape)),
        ("the same, no connection open", millis(c.per_scrape_alone)),
        ("scrape wall time, median", millis(c.scrape_wall)),
    ];
    for (measure, figure) in rows {
        table.row(vec![measure.into(), figure]);
    }
    for (name, round) in [
        ("no scrapes", &c.quiet),
        ("scrapes back to back", &c.scraped),
    ] {
        table.row(vec![
            format!("delay lateness p99 / max, {name}"),
            format!(
                "{} / {} ({} answered, {} scrapes)",
                millis(round.p99),
                millis(round.max),
                round.answered,
                round.scrapes
            ),
        ]);
    }
    table.note(format!(
        "{} connections back at DATA for the second round; server time from /proc/PID/schedstat",
        c.reopened
    ));
    table.print();
}

fn crowd_section(binary: &Path, targets: &mut Targets) -> io::Result<()> {
    let c = measure_crowd(binary)?;
    print_crowd(&c);
    let all_held = c.held == CROWD && c.answered_noop == CROWD;
    targets.add(
        "RSS per idle connection, metrics on",
        format!("{:.0} bytes ({} held)", c.per_conn, c.held),
        format!("<= {IDLE_BYTES:.0} bytes"),
        Verdict::from_check(all_held && c.per_conn <= IDLE_BYTES),
    );
    targets.add(
        format!("server time per scrape, {} open", count(CROWD as u64)),
        millis(c.per_scrape),
        format!("< {}", millis(SCRAPE_BUDGET)),
        Verdict::from_check(c.open == Some(CROWD as f64) && c.per_scrape < SCRAPE_BUDGET),
    );
    let worse = c.scraped.p99 - c.quiet.p99;
    let all_answered = c.quiet.answered == AT_DATA && c.scraped.answered == AT_DATA;
    targets.add(
        "delayed replies while scraped: p99 lateness",
        format!(
            "{} ({} without scrapes, {} scrapes)",
            millis(c.scraped.p99),
            millis(c.quiet.p99),
            c.scraped.scrapes
        ),
        format!("<= {} + {}", millis(c.quiet.p99), millis(SCRAPE_BUDGET)),
        Verdict::from_check(all_answered && c.scraped.scrapes > 0 && worse <= SCRAPE_BUDGET),
    );
    Ok(())
}

fn main() -> ExitCode {
    let sections = match report::sections_from_args(&SECTIONS) {
        Ok(sections) => sections,
        Err(message) => {
            eprintln!("metrics bench: {message}");
            return ExitCode::from(2);
        }
    };
    procfs::raise_nofile_limit();
    let Some(binary) = server::built_blackhole("metrics") else {
        return ExitCode::FAILURE;
    };
    if sections.contains(&"cpu") && !server::postfix_available() {
        eprintln!("metrics bench: {} is needed", server::SMTP_SOURCE);
        return ExitCode::FAILURE;
    }
    let mut targets = Targets::default();
    for section in sections {
        eprintln!("-- {section}");
        let outcome = match section {
            "cpu" => cpu(&binary, &mut targets),
            _ => crowd_section(&binary, &mut targets),
        };
        if let Err(e) = outcome {
            println!("!! section {section} failed: {e}\n");
            targets.add(format!("section {section}"), "error", "-", Verdict::Fail);
        }
    }
    targets.table().print();
    let failures = targets.failures();
    println!("{failures} target(s) FAIL");
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
