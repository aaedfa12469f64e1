//! What a listener's sessions are told to do: the final reply's mode, the delay before it,
//! and the rest of a [`Policy`].
//!
//! These are the core's own types: the configuration builds them, the session decides with
//! them. A value that breaks their rules (a delay over [`MAX_DELAY_SECS`], MIN above MAX)
//! cannot be built.

use std::fmt;
use std::str::FromStr;

use super::reply;

/// Longest delay, in seconds, before the final reply to a message: a delay
/// holds a connection open, so it is capped against denial of service.
pub const MAX_DELAY_SECS: u32 = 60;

/// What the final reply to a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Accept,
    Bounce,
    Random,
}

impl Mode {
    /// The name used in config files and switch headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Accept => "accept",
            Mode::Bounce => "bounce",
            Mode::Random => "random",
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("accept") {
            Ok(Mode::Accept)
        } else if s.eq_ignore_ascii_case("bounce") {
            Ok(Mode::Bounce)
        } else if s.eq_ignore_ascii_case("random") {
            Ok(Mode::Random)
        } else {
            Err(format!("`{s}` is not a mode: use accept, bounce or random"))
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delay in whole seconds, fixed or picked per message from `min..=max`. The fields are
/// private so that `min <= max <= MAX_DELAY_SECS` holds for every value there is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayRange {
    min_secs: u32,
    max_secs: u32,
}

impl DelayRange {
    /// `min..=max` seconds, or `None` if MIN is above MAX or MAX above [`MAX_DELAY_SECS`].
    pub fn new(min_secs: u32, max_secs: u32) -> Option<Self> {
        (min_secs <= max_secs && max_secs <= MAX_DELAY_SECS)
            .then_some(DelayRange { min_secs, max_secs })
    }

    /// Exactly `secs` seconds, or `None` above [`MAX_DELAY_SECS`].
    pub fn fixed(secs: u32) -> Option<Self> {
        Self::new(secs, secs)
    }

    pub fn min_secs(self) -> u32 {
        self.min_secs
    }

    pub fn max_secs(self) -> u32 {
        self.max_secs
    }
}

impl fmt::Display for DelayRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min_secs == self.max_secs {
            write!(f, "{}", self.min_secs)
        } else {
            write!(f, "{}-{}", self.min_secs, self.max_secs)
        }
    }
}

/// What one listener's sessions are told to do: the config with the listener's flags applied.
/// Its fields are read-only once built, because the greeting and EHLO replies are made from
/// them in [`Policy::new`]: a size or STARTTLS changed afterwards would be advertised wrong.
#[derive(Debug, Clone)]
pub struct Policy {
    fqdn: String,
    mode: Mode,
    delay: Option<DelayRange>,
    /// Whether `X-Blackhole-*` headers may override `mode` and `delay`.
    dynamic_switch: bool,
    max_message_size: u64,
    /// Whether STARTTLS is on offer (a certificate is configured).
    starttls: bool,
    /// Whether BDAT is taken and CHUNKING offered (RFC 3030).
    chunking: bool,
    /// Whether the listener speaks LMTP (RFC 2033): LHLO, and a reply per recipient.
    lmtp: bool,
    greeting: Vec<u8>,
    ehlo: Vec<u8>,
    /// The EHLO reply inside TLS: STARTTLS is not offered again.
    ehlo_in_tls: Vec<u8>,
}

impl Policy {
    pub fn new(
        fqdn: String,
        mode: Mode,
        delay: Option<DelayRange>,
        dynamic_switch: bool,
        max_message_size: u64,
        starttls: bool,
    ) -> Self {
        let mut greeting = Vec::new();
        reply::greeting(&mut greeting, &fqdn);
        let ehlo = reply::ehlo(&fqdn, max_message_size, starttls, false);
        let ehlo_in_tls = reply::ehlo(&fqdn, max_message_size, false, false);
        Policy {
            fqdn,
            mode,
            delay,
            dynamic_switch,
            max_message_size,
            starttls,
            chunking: false,
            lmtp: false,
            greeting,
            ehlo,
            ehlo_in_tls,
        }
    }

    /// This policy with BDAT taken and CHUNKING offered, or not.
    pub fn with_chunking(mut self, chunking: bool) -> Self {
        self.chunking = chunking;
        let size = self.max_message_size;
        self.ehlo = reply::ehlo(&self.fqdn, size, self.starttls, chunking);
        self.ehlo_in_tls = reply::ehlo(&self.fqdn, size, false, chunking);
        self
    }

    /// This policy speaking LMTP, or SMTP.
    pub fn with_lmtp(mut self, lmtp: bool) -> Self {
        self.lmtp = lmtp;
        self
    }

    /// The mail name, as the greeting, EHLO and message ids say it.
    pub fn fqdn(&self) -> &str {
        &self.fqdn
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn delay(&self) -> Option<DelayRange> {
        self.delay
    }

    /// Whether `X-Blackhole-*` headers may override the mode and the delay.
    pub fn dynamic_switch(&self) -> bool {
        self.dynamic_switch
    }

    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// Whether STARTTLS is on offer (a certificate is configured).
    pub fn starttls(&self) -> bool {
        self.starttls
    }

    /// Whether BDAT is taken and CHUNKING offered.
    pub fn chunking(&self) -> bool {
        self.chunking
    }

    /// Whether the listener speaks LMTP.
    pub fn lmtp(&self) -> bool {
        self.lmtp
    }

    pub fn greeting(&self) -> &[u8] {
        &self.greeting
    }

    /// The EHLO reply, with STARTTLS offered unless the connection is already encrypted.
    pub fn ehlo(&self, tls: bool) -> &[u8] {
        if tls { &self.ehlo_in_tls } else { &self.ehlo }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_ranges_keep_their_rule() {
        assert_eq!(
            DelayRange::new(0, MAX_DELAY_SECS).map(|d| d.max_secs()),
            Some(60)
        );
        assert_eq!(DelayRange::new(5, 4), None);
        assert_eq!(DelayRange::new(0, MAX_DELAY_SECS + 1), None);
        assert_eq!(DelayRange::fixed(MAX_DELAY_SECS + 1), None);
        let fixed = DelayRange::fixed(7).unwrap();
        assert_eq!((fixed.min_secs(), fixed.max_secs()), (7, 7));
        assert_eq!(fixed.to_string(), "7");
        assert_eq!(DelayRange::new(1, 3).unwrap().to_string(), "1-3");
    }
}
