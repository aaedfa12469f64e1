//! The event log writer: what this program is when started as `blackhole
//! --event-log-writer PATH` by the server's event log. It copies the lines on its standard
//! input to PATH, opened for appending (created with mode 0640), or to standard output for
//! `-`, and exits once its standard input closes and everything read is written.
//!
//! It writes whole lines only, each run of them in one `write`, so that several workers
//! appending to one file never interleave within a line; the head of a line cut off by the
//! end of the input is dropped. The signals a server is stopped or reloaded with (which a
//! service manager or a terminal may send to the whole group) do not stop it: it finishes
//! when the server closes its pipe, having written what it was given.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

/// The longest line kept; the server never sends one longer than its own buffer.
const MAX_LINE: usize = 1 << 20;
const READ_CHUNK: usize = 64 * 1024;
const FILE_MODE: u32 = 0o640;

/// Writes the lines of standard input to `path` until it closes.
pub fn run(path: &OsStr) -> ExitCode {
    if let Err(e) = ignore_stop_signals() {
        eprintln!("blackhole: event log writer: cannot set up signals: {e}");
    }
    let path = Path::new(path);
    let result = if path.as_os_str() == "-" {
        copy_lines(io::stdin().lock(), io::stdout().lock())
    } else {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(path)
            .and_then(|file| copy_lines(io::stdin().lock(), file))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blackhole: event_log {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Catches the stop and reload signals and does nothing with them.
fn ignore_stop_signals() -> io::Result<()> {
    let ignored = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM, SIGHUP, SIGUSR1] {
        signal_hook::flag::register(signal, Arc::clone(&ignored))?;
    }
    Ok(())
}

/// Copies the whole lines of `input` to `output` until `input` ends.
fn copy_lines(mut input: impl Read, mut output: impl Write) -> io::Result<()> {
    let mut chunk = vec![0; READ_CHUNK];
    let mut pending: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // Inside a line longer than MAX_LINE, which is dropped up to its end.
    let mut skipping = false;
    loop {
        let mut read = match input.read(&mut chunk) {
            // The end: a line without its newline was cut off, and is dropped.
            Ok(0) => return Ok(()),
            Ok(n) => &chunk[..n],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if skipping {
            let Some(end) = memchr::memchr(b'\n', read) else {
                continue;
            };
            read = &read[end + 1..];
            skipping = false;
        }
        pending.extend_from_slice(read);
        if let Some(last) = memchr::memrchr(b'\n', &pending) {
            output.write_all(&pending[..=last])?;
            output.flush()?;
            pending.drain(..=last);
        }
        if pending.len() > MAX_LINE {
            pending.clear();
            skipping = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copied(input: &[u8]) -> Vec<u8> {
        let mut output = Vec::new();
        copy_lines(input, &mut output).unwrap();
        output
    }

    #[test]
    fn whole_lines_are_copied_and_a_cut_off_one_dropped() {
        assert_eq!(copied(b"a\nbc\n"), b"a\nbc\n");
        assert_eq!(copied(b"a\nbc\nhalf"), b"a\nbc\n");
        assert_eq!(copied(b""), b"");
        assert_eq!(copied(b"no newline"), b"");
    }

    #[test]
    fn a_line_longer_than_the_bound_is_dropped_whole() {
        let mut input = b"before\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + READ_CHUNK * 2));
        input.extend_from_slice(b"\nafter\n");
        assert_eq!(copied(&input), b"before\nafter\n");
    }

    /// Hands out its bytes a few at a time, so lines straddle reads.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Counts the writes it is given, each of which must end a line.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_is_of_whole_lines() {
        let input = b"one\ntwo two\nthree three three\nfour\ncut";
        let mut writes = Writes::default();
        copy_lines(Trickle(input), &mut writes).unwrap();
        assert!(
            writes.0.iter().all(|w| w.ends_with(b"\n")),
            "{:?}",
            writes.0
        );
        assert_eq!(
            writes.0.concat(),
            b"one\ntwo two\nthree three three\nfour\n"
        );
    }
}
