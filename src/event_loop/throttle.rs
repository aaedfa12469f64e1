//! Reading a connection no faster than a rule's `throttle` says, with timers and never a
//! sleep: a twentieth of a second's worth of bytes at a time, then a rest (READABLE dropped,
//! a timer in the wheel) as long as those bytes take at the rate.
//!
//! It must not buffer: what is not read stays in the kernel, where TCP slows the client. The
//! rate is the session's ([`crate::smtp::session::Session::throttle`]); a connection keeps
//! nothing for it but whether it rests.

use std::num::NonZeroU32;

/// Reads per second a throttled connection is given at most, so a high rate still reads in
/// pieces and a low one reads a byte at a time.
const READS_PER_SECOND: u32 = 20;

/// The most to read at once at `bytes_per_sec`: a twentieth of a second's worth, at least
/// one byte.
pub fn chunk(bytes_per_sec: NonZeroU32) -> usize {
    (bytes_per_sec.get() / READS_PER_SECOND).max(1) as usize
}

/// How long to rest after reading `bytes`, in ms: as long as they take at `bytes_per_sec`,
/// rounded up, so the rate is never exceeded.
pub fn rest_after(bytes_per_sec: NonZeroU32, bytes: usize) -> u64 {
    (bytes as u64 * 1000).div_ceil(u64::from(bytes_per_sec.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(bytes_per_sec: u32) -> NonZeroU32 {
        NonZeroU32::new(bytes_per_sec).expect("a rate")
    }

    /// Bytes read over `millis` when every read takes a whole chunk and rests after it.
    fn bytes_in(rate: NonZeroU32, millis: u64) -> u64 {
        let (mut at, mut read) = (0, 0);
        while at < millis {
            read += chunk(rate) as u64;
            at += rest_after(rate, chunk(rate));
        }
        read
    }

    #[test]
    fn reads_come_in_twentieths_of_a_second() {
        assert_eq!((chunk(rate(1000)), rest_after(rate(1000), 50)), (50, 50));
        let fast = rate(10_000_000);
        assert_eq!((chunk(fast), rest_after(fast, chunk(fast))), (500_000, 50));
    }

    #[test]
    fn a_low_rate_reads_a_byte_at_a_time() {
        assert_eq!((chunk(rate(4)), rest_after(rate(4), 1)), (1, 250));
        assert_eq!(
            (chunk(NonZeroU32::MIN), rest_after(NonZeroU32::MIN, 1)),
            (1, 1000)
        );
    }

    #[test]
    fn rests_round_up_so_the_rate_is_never_exceeded() {
        for bytes_per_sec in [1, 3, 7, 19, 20, 21, 333, 1000, 4096, 65_537, 1_000_003] {
            let t = rate(bytes_per_sec);
            assert!(
                rest_after(t, chunk(t)) > 0,
                "{bytes_per_sec}: a rest after every read"
            );
            // Over ten seconds, never more than ten seconds' worth (plus the first read,
            // which goes before any rest).
            let read = bytes_in(t, 10_000);
            assert!(
                read <= u64::from(bytes_per_sec) * 10 + chunk(t) as u64,
                "{bytes_per_sec} B/s read {read} bytes in 10 s"
            );
            assert!(
                read * 10 >= u64::from(bytes_per_sec) * 10 * 9,
                "{bytes_per_sec} B/s read only {read} bytes in 10 s"
            );
        }
    }
}
