//! The event log's sending side with real writer processes: lines arrive whole and in
//! order, a writer that does not read makes lines drop (counted) without ever blocking a
//! push, SIGHUP's reopen follows a renamed file, a dead writer is replaced at most once a
//! second, and the real binary's writer mode appends whole lines (also from two writers at
//! once), keeps writing through the stop signals, and exits when its input closes.
//!
//! The test binary cannot be started as the writer, so most tests run `sh -c 'cat >> FILE'`
//! as one; the binary's own writer mode is started by its path.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blackhole::event_loop::event_log::{BUFFER_BYTES, EventLog, WriterCommand};
use common::{TempDir, blackhole_bin, send_signal, wait_with_limit};
use mio::{Events, Poll, Token};

const TOKEN: Token = Token(7);
const FINISH: Duration = Duration::from_secs(10);

/// `sh -c SCRIPT` as the writer; the script sees FILE as `$1`.
fn shell_writer(script: &str, file: &Path) -> WriterCommand {
    WriterCommand {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            script.into(),
            "sh".into(),
            file.as_os_str().to_owned(),
        ],
    }
}

fn cat_to(file: &Path) -> WriterCommand {
    shell_writer("exec cat >> \"$1\"", file)
}

/// A poll loop of the test's own, as the server's would hold the event log.
struct Loop {
    poll: Poll,
    events: Events,
}

impl Loop {
    fn new() -> Loop {
        Loop {
            poll: Poll::new().expect("a poll"),
            events: Events::with_capacity(16),
        }
    }

    fn start(&self, command: WriterCommand) -> EventLog {
        EventLog::start(command, self.poll.registry(), TOKEN).expect("start the writer")
    }

    /// One turn: waits up to `wait`, then flushes on the event log's events.
    /// One turn of a loop, as the server's: what is ready, then the turn's lines sent.
    fn turn(&mut self, log: &mut EventLog, wait: Duration) {
        match self.poll.poll(&mut self.events, Some(wait)) {
            // A signal (a writer's SIGCHLD, where something handles it) cuts the wait short.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => self.events.clear(),
            result => result.expect("poll"),
        }
        if self.events.iter().any(|event| event.token() == TOKEN) {
            log.flush();
        }
        log.end_turn();
    }
}

/// Line `i`: its number, then filler of a length that varies, up to several pipe pages.
fn line(i: usize) -> String {
    let filler = "x".repeat((i * 7919) % 9000);
    format!("{{\"n\":{i},\"filler\":\"{filler}\"}}")
}

fn file_len(file: &Path) -> usize {
    fs::metadata(file).map_or(0, |m| m.len() as usize)
}

fn read_lines(file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn lines_arrive_whole_and_in_order() {
    let dir = TempDir::new();
    let file = dir.path().join("events.json");
    let mut lp = Loop::new();
    let mut log = lp.start(cat_to(&file));
    let count = 3000;
    let mut pushed = 0;
    for i in 0..count {
        let text = line(i);
        log.push(text.as_bytes());
        pushed += text.len() + 1;
        lp.turn(&mut log, Duration::ZERO);
        // Paced to the writer, a busy machine's `cat` included: no more than half the
        // buffer ahead of the file, so that nothing is dropped and every line is checked.
        let until = Instant::now() + FINISH;
        while pushed.saturating_sub(file_len(&file)) > BUFFER_BYTES / 2 && Instant::now() < until {
            lp.turn(&mut log, Duration::from_millis(5));
        }
    }
    // Until the writer has caught up, as a loop that keeps turning would.
    let until = Instant::now() + FINISH;
    while log.dropped() == 0 && Instant::now() < until && read_lines(&file).len() < count {
        lp.turn(&mut log, Duration::from_millis(10));
    }
    assert_eq!(log.finish(Instant::now() + FINISH), 0);
    let expected: Vec<String> = (0..count).map(line).collect();
    let got = read_lines(&file);
    assert_eq!(got.len(), count);
    assert!(got == expected, "lines out of order or cut");
}

#[test]
fn finish_sends_what_waits_then_waits_for_the_writer() {
    let dir = TempDir::new();
    let file = dir.path().join("events.json");
    let lp = Loop::new();
    // A writer that starts reading only after a while: the lines wait in the pipe and
    // the buffer (about 700 kB of them, within its 1 MiB), and finish must send them all
    // before it returns.
    let mut log = lp.start(shell_writer("sleep 0.3; exec cat >> \"$1\"", &file));
    let count = 150;
    for i in 0..count {
        log.push(line(i).as_bytes());
    }
    let dropped = log.finish(Instant::now() + FINISH);
    assert_eq!(dropped, 0);
    assert_eq!(read_lines(&file), (0..count).map(line).collect::<Vec<_>>());
}

#[test]
fn a_writer_that_does_not_read_makes_pushes_drop_without_blocking() {
    let dir = TempDir::new();
    let pid_file = dir.path().join("pid");
    let lp = Loop::new();
    let mut log = lp.start(shell_writer("echo $$ > \"$1\"; exec sleep 60", &pid_file));
    let one = vec![b'x'; 999];
    let pushes = 4 * BUFFER_BYTES / 1000;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for _ in 0..pushes {
        let before = Instant::now();
        log.push(&one);
        slowest = slowest.max(before.elapsed());
    }
    let all = started.elapsed();
    // The pipe (64 KiB to 1 MiB) and the buffer (1 MiB) hold at most about 2 MiB; the rest
    // of the 4 MiB pushed is dropped, each line counted.
    let kept = pushes as u64 - log.dropped();
    assert!(log.dropped() > 0, "nothing dropped");
    assert!(
        kept * 1000 <= 2 * BUFFER_BYTES as u64 + 4096,
        "{kept} lines kept"
    );
    assert!(
        kept * 1000 >= BUFFER_BYTES as u64 - 1000,
        "{kept} lines kept"
    );
    assert!(
        slowest < Duration::from_millis(50),
        "a push took {slowest:?}"
    );
    assert!(all < Duration::from_secs(2), "{pushes} pushes took {all:?}");
    // Bounded at exit too: the writer is not waited for past the deadline.
    let before = Instant::now();
    let dropped = log.finish(Instant::now() + Duration::from_millis(200));
    assert!(
        before.elapsed() < Duration::from_secs(2),
        "{:?}",
        before.elapsed()
    );
    assert!(dropped >= pushes as u64 - kept, "{dropped}");
    let pid = fs::read_to_string(&pid_file).expect("the writer's pid");
    send_signal("KILL", pid.trim().parse().expect("a pid"));
}

#[test]
fn reopen_after_a_rename_writes_to_the_new_file() {
    let dir = TempDir::new();
    let file = dir.path().join("events.json");
    let rotated = dir.path().join("events.json.1");
    let mut lp = Loop::new();
    let mut log = lp.start(cat_to(&file));
    log.push(b"{\"before\":1}");
    let until = Instant::now() + FINISH;
    while read_lines(&file).is_empty() && Instant::now() < until {
        lp.turn(&mut log, Duration::from_millis(10));
    }
    fs::rename(&file, &rotated).expect("rotate");
    log.reopen();
    log.push(b"{\"after\":1}\n");
    log.push(b"{\"after\":2}");
    assert_eq!(log.finish(Instant::now() + FINISH), 0);
    assert_eq!(read_lines(&rotated), ["{\"before\":1}"]);
    assert_eq!(read_lines(&file), ["{\"after\":1}", "{\"after\":2}"]);
}

#[test]
fn reopen_with_another_path_writes_there() {
    let dir = TempDir::new();
    let first = dir.path().join("first.json");
    let second = dir.path().join("second.json");
    let lp = Loop::new();
    let mut log = lp.start(cat_to(&first));
    log.push(b"{\"to\":\"first\"}");
    log.reopen_with(cat_to(&second));
    log.push(b"{\"to\":\"second\"}");
    assert_eq!(log.finish(Instant::now() + FINISH), 0);
    assert_eq!(read_lines(&first), ["{\"to\":\"first\"}"]);
    assert_eq!(read_lines(&second), ["{\"to\":\"second\"}"]);
}

#[test]
fn a_dead_writer_drops_lines_and_is_replaced_at_most_once_a_second() {
    let dir = TempDir::new();
    let starts = dir.path().join("starts");
    let mut lp = Loop::new();
    // Each writer notes its start and exits without reading.
    let mut log = lp.start(shell_writer("echo started >> \"$1\"", &starts));
    let until = Instant::now() + FINISH;
    while read_lines(&starts).is_empty() && Instant::now() < until {
        lp.turn(&mut log, Duration::from_millis(10));
    }
    // Gone: pushes break the pipe, and for a second no writer is started again.
    let burst_started = Instant::now();
    let mut pushed = 0;
    while burst_started.elapsed() < Duration::from_millis(500) {
        log.push(b"{}");
        pushed += 1;
        lp.turn(&mut log, Duration::from_millis(5));
    }
    assert_eq!(
        read_lines(&starts).len(),
        1,
        "started again within a second"
    );
    assert!(log.dropped() >= pushed - 1, "{} of {pushed}", log.dropped());
    // A second on, a push starts a new one (which dies too).
    let until = Instant::now() + Duration::from_millis(1500);
    while read_lines(&starts).len() < 2 && Instant::now() < until {
        log.push(b"{}");
        lp.turn(&mut log, Duration::from_millis(20));
    }
    assert_eq!(read_lines(&starts).len(), 2);
    log.finish(Instant::now() + FINISH);
}

#[test]
fn lines_that_cannot_be_whole_are_dropped() {
    let dir = TempDir::new();
    let file = dir.path().join("events.json");
    let lp = Loop::new();
    let mut log = lp.start(cat_to(&file));
    log.push(b"two\nlines");
    log.push(&vec![b'x'; BUFFER_BYTES]);
    log.push(b"fine");
    assert_eq!(log.dropped(), 2);
    assert_eq!(log.finish(Instant::now() + FINISH), 2);
    assert_eq!(read_lines(&file), ["fine"]);
}

/// The binary's writer mode for `path`, its input a pipe the test holds.
fn binary_writer(path: &str) -> std::process::Child {
    Command::new(blackhole_bin())
        .args(["--event-log-writer", path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer")
}

#[test]
fn the_binary_appends_whole_lines_through_stop_signals() {
    let dir = TempDir::new();
    let file = dir.path().join("events.json");
    fs::write(&file, "{\"old\":1}\n").expect("an earlier line");
    let mut writer = binary_writer(file.to_str().expect("a UTF-8 path"));
    let mut input = writer.stdin.take().expect("its stdin");
    input.write_all(b"{\"a\":1}\n{\"b\"").expect("write");
    // The signals a server is stopped or reloaded with, as a terminal or a service manager
    // would send them to the whole group: the writer goes on.
    std::thread::sleep(Duration::from_millis(100));
    for signal in ["TERM", "INT", "HUP"] {
        send_signal(signal, writer.id());
    }
    input.write_all(b":2}\n{\"cut\":").expect("write");
    drop(input);
    let status = wait_with_limit(&mut writer, FINISH).expect("the writer exits at EOF");
    assert!(status.success(), "{status:?}");
    assert_eq!(read_lines(&file), ["{\"old\":1}", "{\"a\":1}", "{\"b\":2}"]);
}

#[test]
fn the_binary_creates_the_file_0640_or_writes_to_stdout() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let file = dir.path().join("new.json");
    let mut writer = binary_writer(file.to_str().expect("a UTF-8 path"));
    drop(writer.stdin.take());
    wait_with_limit(&mut writer, FINISH).expect("the writer exits");
    let mode = fs::metadata(&file).expect("created").permissions().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "mode {mode:o}");

    let mut writer = binary_writer("-");
    let mut input = writer.stdin.take().expect("its stdin");
    input
        .write_all(b"{\"to\":\"stdout\"}\nhalf")
        .expect("write");
    drop(input);
    let output = writer.wait_with_output().expect("the writer's output");
    assert!(output.status.success());
    assert_eq!(output.stdout, b"{\"to\":\"stdout\"}\n");
}

#[test]
fn a_writer_that_cannot_open_its_file_says_so_and_fails() {
    let output = Command::new(blackhole_bin())
        .args(["--event-log-writer", "/nonexistent-dir/events.json"])
        .stdin(Stdio::null())
        .output()
        .expect("run the writer");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("event_log /nonexistent-dir/events.json"),
        "{stderr}"
    );
}

#[test]
fn two_writers_appending_to_one_file_keep_every_line_whole() {
    let dir = TempDir::new();
    let file = dir.path().join("events.json");
    let program = Path::new(blackhole_bin());
    let mut lp = Loop::new();
    let mut second = Loop::new();
    let mut a = lp.start(WriterCommand::writer_mode(program, &file));
    let mut b = second.start(WriterCommand::writer_mode(program, &file));
    // Lines longer than a pipe page, so that a line is never one atomic pipe write.
    let long = |who: char, i: usize| format!("{who}{i}:{}", who.to_string().repeat(6000));
    // Both pipes and buffers filled first (about 1.2 MB each), so that both writers have
    // much to write at the same time.
    let count = 200;
    for i in 0..count {
        a.push(long('a', i).as_bytes());
        b.push(long('b', i).as_bytes());
    }
    let until = Instant::now() + FINISH;
    while read_lines(&file).len() < 2 * count && Instant::now() < until {
        lp.turn(&mut a, Duration::from_millis(5));
        second.turn(&mut b, Duration::from_millis(5));
    }
    assert_eq!(a.finish(Instant::now() + FINISH), 0);
    assert_eq!(b.finish(Instant::now() + FINISH), 0);
    let got = read_lines(&file);
    assert_eq!(got.len(), 2 * count);
    for who in ['a', 'b'] {
        let mine: Vec<&String> = got.iter().filter(|l| l.starts_with(who)).collect();
        let expected: Vec<String> = (0..count).map(|i| long(who, i)).collect();
        assert!(
            mine.iter().zip(&expected).all(|(g, e)| *g == e) && mine.len() == count,
            "{who}'s lines cut, mixed or out of order"
        );
    }
}

#[test]
fn reopen_while_the_pipe_holds_half_a_line_loses_only_that_line() {
    let dir = TempDir::new();
    let file = dir.path().join("events.json");
    let rotated = dir.path().join("events.json.1");
    let lp = Loop::new();
    // The real writer, once it has slept: until then lines wait in the pipe, and the pipe
    // (whatever its size, a whole number of pages) ends with the head of a line. The file
    // is opened before the sleep, so that the rename takes it away from later writers.
    let late_writer = |file: &Path| WriterCommand {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            "exec 3>>\"$1\"; sleep 0.3; exec \"$0\" --event-log-writer /dev/fd/3".into(),
            blackhole_bin().into(),
            file.as_os_str().to_owned(),
        ],
    };
    let mut log = lp.start(late_writer(&file));
    let big = |i: usize| format!("{i:06}{}", "y".repeat(100_000 - 6));
    let count = 15;
    for i in 0..count {
        log.push(big(i).as_bytes());
    }
    // The end of the loop's turn.
    log.end_turn();
    let until = Instant::now() + FINISH;
    while !file.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    fs::rename(&file, &rotated).expect("rotate");
    log.reopen();
    let dropped = log.finish(Instant::now() + FINISH);
    let old = read_lines(&rotated);
    let new = read_lines(&file);
    assert_eq!(dropped, 1, "the line cut in two, and only it");
    assert_eq!(old.len() + new.len() + 1, count);
    let whole: Vec<String> = (0..count).map(big).collect();
    assert!(old.iter().zip(&whole).all(|(g, e)| g == e), "old file");
    assert!(
        new.iter().zip(&whole[old.len() + 1..]).all(|(g, e)| g == e),
        "new file: {:?}",
        new.iter().map(|l| &l[..6.min(l.len())]).collect::<Vec<_>>()
    );
}
