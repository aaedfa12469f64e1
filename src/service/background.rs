//! `-b`: running in the background.
//!
//! The command starts a copy of itself as a new session leader and waits until that copy has
//! bound its listeners and written its pidfile, so every start-up error still reaches the
//! person who typed the command, with its exit code. The copy then points its standard
//! streams at /dev/null and serves. Only std and nix's safe calls: no `fork` in a Rust
//! process.

use std::fs::File;
use std::io::Read;
use std::process::{Command, Stdio};

use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, setsid};

/// Set in the environment of the background copy.
const DETACHED: &str = "BLACKHOLE_DETACHED";

/// Whether this process is the background copy.
pub fn is_detached() -> bool {
    std::env::var_os(DETACHED).is_some()
}

/// In the foreground command: starts the background copy with the same arguments and
/// returns its outcome: `Ok(pid)` once it serves, or its exit code and what it said.
pub fn start_background() -> Result<u32, (u8, String)> {
    let program = std::env::current_exe().map_err(|e| {
        (
            70,
            format!("cannot find this program to run it in the background: {e}"),
        )
    })?;
    let mut child = Command::new(program)
        .args(std::env::args_os().skip(1))
        .env(DETACHED, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| (70, format!("cannot start in the background: {e}")))?;
    // The copy closes its end when it is serving (or exits): read until then.
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut said);
    }
    if let Some(before) = said.strip_suffix(READY) {
        eprint!("{before}");
        return Ok(child.id());
    }
    let status = child
        .wait()
        .map_err(|e| (70, format!("lost the background process: {e}")))?;
    let code = status.code().unwrap_or(70).clamp(1, 255) as u8;
    Err((
        code,
        said.trim_end().trim_start_matches("blackhole: ").to_owned(),
    ))
}

/// The last thing the background copy says on the waiting command's pipe.
const READY: &str = "blackhole: serving in the background\n";

/// In the background copy, first thing: leave the command's session and terminal.
pub fn leave_session() {
    let _ = setsid();
}

/// In the background copy, once it serves: standard streams to /dev/null, which also tells
/// the waiting command that all went well.
pub fn release_streams() -> std::io::Result<()> {
    eprint!("{READY}");
    let null = File::options().read(true).write(true).open("/dev/null")?;
    dup2_stdin(&null)?;
    dup2_stdout(&null)?;
    dup2_stderr(&null)?;
    Ok(())
}
