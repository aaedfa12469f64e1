//! Reading a connection no faster than a rule's `throttle` says, with timers and never a
//! sleep: a twentieth of a second's worth of bytes at a time, then a rest (READABLE dropped,
//! a timer in the wheel) as long as those bytes take at the rate.
//!
//! It must not buffer: what is not read stays in the kernel, where TCP slows the client.

use super::timer::TimerKey;

/// Reads per second a throttled connection is given at most, so a high rate still reads in
/// pieces and a low one reads a byte at a time.
const READS_PER_SECOND: u32 = 20;

#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: u32,
    /// The timer that ends the current rest, while the connection rests.
    pub resting: Option<TimerKey>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u32) -> Self {
        Throttle {
            bytes_per_sec: bytes_per_sec.max(1),
            resting: None,
        }
    }

    /// A new rate, from now on; a rest under way runs its course.
    pub fn set_rate(&mut self, bytes_per_sec: u32) {
        self.bytes_per_sec = bytes_per_sec.max(1);
    }

    /// The most to read at once: a twentieth of a second's worth, at least one byte.
    pub fn chunk(&self) -> usize {
        (self.bytes_per_sec / READS_PER_SECOND).max(1) as usize
    }

    /// How long to rest after reading `bytes`, in ms: as long as they take at the rate,
    /// rounded up, so the rate is never exceeded.
    pub fn rest_after(&self, bytes: usize) -> u64 {
        (bytes as u64 * 1000).div_ceil(u64::from(self.bytes_per_sec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes read over `millis` when every read takes a whole chunk and rests after it.
    fn bytes_in(throttle: &Throttle, millis: u64) -> u64 {
        let (mut at, mut read) = (0, 0);
        while at < millis {
            read += throttle.chunk() as u64;
            at += throttle.rest_after(throttle.chunk());
        }
        read
    }

    #[test]
    fn reads_come_in_twentieths_of_a_second() {
        let t = Throttle::new(1000);
        assert_eq!((t.chunk(), t.rest_after(50)), (50, 50));
        let fast = Throttle::new(10_000_000);
        assert_eq!((fast.chunk(), fast.rest_after(fast.chunk())), (500_000, 50));
    }

    #[test]
    fn a_low_rate_reads_a_byte_at_a_time() {
        let t = Throttle::new(4);
        assert_eq!((t.chunk(), t.rest_after(1)), (1, 250));
        // Zero is no rate: it reads as slowly as there is, a byte a second.
        let zero = Throttle::new(0);
        assert_eq!((zero.chunk(), zero.rest_after(1)), (1, 1000));
    }

    #[test]
    fn rests_round_up_so_the_rate_is_never_exceeded() {
        for rate in [1, 3, 7, 19, 20, 21, 333, 1000, 4096, 65_537, 1_000_003] {
            let t = Throttle::new(rate);
            assert!(
                t.rest_after(t.chunk()) > 0,
                "{rate}: a rest after every read"
            );
            // Over ten seconds, never more than ten seconds' worth (plus the first read,
            // which goes before any rest).
            let read = bytes_in(&t, 10_000);
            assert!(
                read <= u64::from(rate) * 10 + t.chunk() as u64,
                "{rate} B/s read {read} bytes in 10 s"
            );
            assert!(
                read * 10 >= u64::from(rate) * 10 * 9,
                "{rate} B/s read only {read} bytes in 10 s"
            );
        }
    }
}
