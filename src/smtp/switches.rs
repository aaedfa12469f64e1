//! Dynamic switches: the `X-Blackhole-Mode` and `X-Blackhole-Delay` headers with which a
//! message chooses its own fate.
//!
//! Parsing only: which switches apply to a message (listener flags and `dynamic_switch`
//! come first) is the session's business. A switch that does not parse is ignored, never an
//! error: the sender is testing its own software, not ours.

use super::command::trim;
use super::decimal;
use super::policy::{DelayRange, MAX_DELAY_SECS, Mode};

/// The switches a message has set so far; the last valid header of each kind wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    pub mode: Option<Mode>,
    pub delay: Option<DelayRange>,
}

impl Switches {
    /// Looks at one header line (without its CRLF) and keeps the switch it sets, if any.
    pub fn read_header(&mut self, line: &[u8]) {
        // Most header lines are not switches: say so at the first byte.
        if !line.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'x')) {
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"X-Blackhole-Mode") {
            self.mode = parse_mode(value).or(self.mode);
        } else if name.eq_ignore_ascii_case(b"X-Blackhole-Delay") {
            self.delay = parse_delay(value).or(self.delay);
        }
    }
}

fn parse_mode(value: &[u8]) -> Option<Mode> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// `N` or `MIN, MAX` in whole seconds; values above the maximum are cut to it, negative,
/// reversed or non-numeric values are not a delay.
fn parse_delay(value: &[u8]) -> Option<DelayRange> {
    let (min, max) = match value.iter().position(|&b| b == b',') {
        Some(comma) => (
            seconds(trim(&value[..comma]))?,
            seconds(trim(&value[comma + 1..]))?,
        ),
        None => {
            let secs = seconds(value)?;
            (secs, secs)
        }
    };
    DelayRange::new(min, max)
}

/// Any run of digits is a number of seconds, however long: cut it to the maximum.
fn seconds(digits: &[u8]) -> Option<u32> {
    let secs = decimal::saturating(digits)?.min(u64::from(MAX_DELAY_SECS));
    u32::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&[u8]]) -> Switches {
        let mut switches = Switches::default();
        for line in lines {
            switches.read_header(line);
        }
        switches
    }

    fn range(min_secs: u32, max_secs: u32) -> Option<DelayRange> {
        DelayRange::new(min_secs, max_secs)
    }

    #[test]
    fn mode_headers_in_any_case() {
        assert_eq!(
            read(&[b"X-Blackhole-Mode: bounce"]).mode,
            Some(Mode::Bounce)
        );
        assert_eq!(read(&[b"x-blackhole-mode:RANDOM"]).mode, Some(Mode::Random));
        assert_eq!(
            read(&[b"X-BLACKHOLE-MODE :  Accept "]).mode,
            Some(Mode::Accept)
        );
    }

    #[test]
    fn delay_headers() {
        assert_eq!(read(&[b"X-Blackhole-Delay: 5"]).delay, range(5, 5));
        assert_eq!(read(&[b"X-Blackhole-Delay: 1, 2"]).delay, range(1, 2));
        assert_eq!(read(&[b"X-Blackhole-Delay:3,4"]).delay, range(3, 4));
        assert_eq!(read(&[b"X-Blackhole-Delay: 0"]).delay, range(0, 0));
        assert_eq!(read(&[b"X-Blackhole-Delay: 90"]).delay, range(60, 60));
        assert_eq!(
            read(&[b"X-Blackhole-Delay: 10, 999999999999999"]).delay,
            range(10, 60)
        );
    }

    #[test]
    fn malformed_switches_are_ignored() {
        for line in [
            &b"X-Blackhole-Mode bounce"[..],
            b"X-Blackhole-Mode: sideways",
            b"X-Blackhole-Mode: b\xffunce",
            b"X-Blackhole-Delay: -3",
            b"X-Blackhole-Delay: 1:2",
            b"X-Blackhole-Delay: 5, 2",
            b"X-Blackhole-Delay: soon",
            b"X-Blackhole-Delay: 1,",
            b"X-Blackhole-Delay:",
            b"X-Blackhole-Colour: blue",
            b"Subject: X-Blackhole-Mode: bounce",
        ] {
            assert_eq!(
                read(&[line]),
                Switches::default(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn the_last_valid_switch_wins() {
        let switches = read(&[
            b"X-Blackhole-Mode: bounce",
            b"X-Blackhole-Mode: accept",
            b"X-Blackhole-Mode: nonsense",
            b"X-Blackhole-Delay: 1",
            b"X-Blackhole-Delay: 2, 3",
        ]);
        assert_eq!(switches.mode, Some(Mode::Accept));
        assert_eq!(switches.delay, range(2, 3));
    }
}
