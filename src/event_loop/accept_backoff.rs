//! How a listener rests after `accept` fails for want of descriptors or memory: its clients
//! wait in the backlog, the connections already open go on being served, and accepting
//! starts again after a wait that grows with the failures in a row. The SMTP listeners and
//! the metrics listener rest alike.

use std::io;

/// The first rest, in milliseconds; doubled on each further failure in a row up to the most.
const FIRST_MS: u64 = 100;
const MOST_MS: u64 = 1000;

/// One listener's accept failures in a row, and whether it rests now.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    failures: u32,
    resting: bool,
}

impl AcceptBackoff {
    /// Whether the listener waits for its resume timer before accepting again.
    pub fn resting(&self) -> bool {
        self.resting
    }

    /// A connection was accepted: the next failure rests the shortest time again.
    pub fn accepted(&mut self) {
        self.failures = 0;
    }

    /// After an accept error other than `WouldBlock`: `None` to accept again at once (a
    /// signal, or a connection its client abandoned in the backlog), else the milliseconds
    /// to rest, resting until [`AcceptBackoff::resume`].
    pub fn failed(&mut self, error: &io::Error) -> Option<u64> {
        if matches!(
            error.kind(),
            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
        ) {
            return None;
        }
        let wait = (FIRST_MS << self.failures.min(4)).min(MOST_MS);
        self.failures = self.failures.saturating_add(1);
        self.resting = true;
        Some(wait)
    }

    /// The rest is over.
    pub fn resume(&mut self) {
        self.resting = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rests_grow_with_failures_in_a_row_and_start_again_after_an_accept() {
        let mut backoff = AcceptBackoff::default();
        let exhausted = io::Error::from_raw_os_error(24); // EMFILE
        let rests: Vec<_> = (0..7).map(|_| backoff.failed(&exhausted)).collect();
        let expected = [100, 200, 400, 800, 1000, 1000, 1000].map(Some);
        assert_eq!(rests, expected);
        assert!(backoff.resting());
        backoff.resume();
        assert!(!backoff.resting());
        backoff.accepted();
        assert_eq!(backoff.failed(&exhausted), Some(100));
    }

    #[test]
    fn a_passing_error_is_retried_at_once() {
        let mut backoff = AcceptBackoff::default();
        for kind in [io::ErrorKind::Interrupted, io::ErrorKind::ConnectionAborted] {
            assert_eq!(backoff.failed(&io::Error::from(kind)), None);
        }
        assert!(!backoff.resting());
    }
}
