//! The event loop's clock: whole milliseconds since start, the unit of the timer wheel, and
//! poll waits that end on time.
//!
//! Two rules keep delayed replies exact to about a millisecond. A deadline is counted from
//! the clock read when it is set, rounded up, so a reply never goes early: the loop's
//! `now` is read once per turn and may be a whole turn old. And a long wait is cut short
//! and waited again, because Linux lets a poll wait end late by 0.1% of its length (0.5%
//! for a niced process, at most 100 ms) to batch its timers: a 2 s delay would otherwise
//! come 2 ms late, and so would every reply due behind it.

use std::time::{Duration, Instant};

/// Waits up to this long are taken whole: the kernel's slack on them is under 80 µs.
const WHOLE_WAIT: Duration = Duration::from_millis(16);

pub struct Clock {
    started: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            started: Instant::now(),
        }
    }

    /// Whole milliseconds since start, rounded down: a deadline `d` has passed once
    /// `now() >= d`.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Microseconds since start: how late a deadline was met.
    pub fn micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The first tick at which `millis` have certainly passed from this very moment.
    pub fn deadline_after(&self, millis: u64) -> u64 {
        let elapsed = self.started.elapsed();
        let whole = elapsed.as_millis() as u64;
        let rounded_up = whole + u64::from(elapsed > Duration::from_millis(whole));
        rounded_up.saturating_add(millis)
    }

    /// How long to poll for, to wake at `deadline`: exactly the time left, less the
    /// kernel's slack on long waits (the loop then waits again for the rest).
    pub fn wait_until(&self, deadline: u64) -> Duration {
        let left = Duration::from_millis(deadline).saturating_sub(self.started.elapsed());
        wait_for(left)
    }
}

/// The part of `left` to wait in one poll so that it cannot end after `left`.
pub fn wait_for(left: Duration) -> Duration {
    if left <= WHOLE_WAIT {
        left
    } else {
        // 1/64 is more than any slack the kernel takes (1/200 at most).
        left - left / 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_waits_are_whole() {
        for ms in [0, 1, 5, 16] {
            let left = Duration::from_millis(ms);
            assert_eq!(wait_for(left), left);
        }
    }

    #[test]
    fn long_waits_stop_short_by_more_than_the_kernel_slack() {
        for ms in [17, 100, 2_000, 60_000, 180_000] {
            let left = Duration::from_millis(ms);
            let wait = wait_for(left);
            // The niced slack, 0.5%, must not carry the wait past `left`...
            assert!(wait + wait / 200 < left, "{ms} ms: waits {wait:?}");
            // ...and the rest is a small part, so a deadline costs few wake-ups.
            assert!(left - wait <= left / 50, "{ms} ms: waits {wait:?}");
        }
    }

    #[test]
    fn a_long_wait_converges_in_a_few_polls() {
        let mut left = Duration::from_secs(180);
        let mut polls = 0;
        while left > Duration::ZERO {
            let wait = wait_for(left);
            polls += 1;
            if wait == left {
                break;
            }
            left -= wait;
        }
        assert!(polls <= 4, "{polls} polls");
    }

    #[test]
    fn deadlines_are_never_early() {
        let clock = Clock::start();
        for _ in 0..1_000 {
            let before = clock.started.elapsed();
            let deadline = clock.deadline_after(3);
            assert!(Duration::from_millis(deadline) >= before + Duration::from_millis(3));
        }
    }

    #[test]
    fn a_deadline_is_at_most_a_tick_past_the_delay() {
        let clock = Clock::start();
        let deadline = clock.deadline_after(10);
        let after = clock.started.elapsed();
        assert!(Duration::from_millis(deadline) <= after + Duration::from_millis(11));
    }
}
