//! Running Postfix's `smtp-source`, the reference client of the performance targets, the way
//! `/work/shared/bench/throughput.py` runs it: the same options, a time limit, its output
//! kept only to say what went wrong.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::server::SMTP_SOURCE;
use super::smtp::PAYLOAD_BYTES;

/// How long one smtp-source run may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(600);

pub struct SourceRun {
    pub wall: Duration,
    /// Exited 0 (smtp-source stops at the first unexpected reply, so this means every
    /// message got its 250).
    pub ok: bool,
    /// What went wrong, from its exit status and output, when not ok.
    pub problem: String,
}

/// `smtp-source -s SESSIONS -m MESSAGES -l 1024 [-d] 127.0.0.1:PORT`: `persistent` (`-d`)
/// sends message after message on each session's connection, otherwise every message has
/// a connection of its own.
pub fn smtp_source(
    addr: SocketAddr,
    messages: usize,
    sessions: usize,
    persistent: bool,
) -> io::Result<SourceRun> {
    let output_path = std::env::temp_dir().join(format!(
        "blackhole-bench-{}-smtp-source.out",
        std::process::id()
    ));
    let output = fs::File::create(&output_path)?;
    let mut command = Command::new(SMTP_SOURCE);
    command
        .args(["-s", &sessions.to_string(), "-m", &messages.to_string()])
        .args(["-l", &PAYLOAD_BYTES.to_string(), "-M", "bench.local"])
        .args(["-f", "bench@bench.local", "-t", "sink@bench.local"]);
    if persistent {
        command.arg("-d");
    }
    command
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    let started = Instant::now();
    let mut child = command.spawn()?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Fine enough against runs of a second or more.
        thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed();
    let text = fs::read_to_string(&output_path).unwrap_or_default();
    let _ = fs::remove_file(&output_path);
    let ok = status.is_some_and(|s| s.success());
    let problem = match status {
        _ if ok => String::new(),
        None => format!("killed after {} s", RUN_LIMIT.as_secs()),
        Some(status) => format!(
            "{status}: {}",
            text.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
        ),
    };
    Ok(SourceRun { wall, ok, problem })
}
