//! The event log's lines: one JSON object per finished message and per closed connection,
//! each a single line ending in `\n`, appended to the caller's buffer.
//!
//! What a client sent (names, addresses) is shown as lossy UTF-8: the line stays valid JSON
//! whatever bytes arrived. A message's recipients are shown up to [`MAX_RECIPIENTS`], with
//! their full count beside them.

use std::fmt::Write as _;

use core::net::IpAddr;
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use crate::smtp::observer::Ending;
use crate::smtp::switches::Switches;

/// Recipients a message line names; its `recipient_count` counts them all.
pub const MAX_RECIPIENTS: usize = 100;

/// Where a connection was accepted, and how it is addressed in every line about it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// When the line is written, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// The connection's number (the one `-d` logs).
    pub connection: u64,
    /// The worker's number; 0 without workers.
    pub worker: u32,
    /// The listener's address text (`127.0.0.1:2525`).
    pub listener: &'a str,
    /// The client's address (the PROXY header's, behind a proxy).
    pub client: IpAddr,
    /// The TLS version (`TLSv1_3`), `None` in the clear.
    pub tls: Option<&'a str>,
}

/// A message that got its final reply. `R` is however the caller keeps a recipient.
#[derive(Debug, Clone, Copy)]
pub struct MessageEvent<'a, R: AsRef<[u8]>> {
    pub origin: Origin<'a>,
    pub helo: Option<&'a [u8]>,
    pub auth_user: Option<&'a [u8]>,
    pub mail_from: &'a [u8],
    /// The first recipients kept (only the first [`MAX_RECIPIENTS`] are shown).
    pub recipients: &'a [R],
    /// All the message's recipients, kept or not.
    pub recipient_count: u64,
    /// Octets of message data.
    pub size: u64,
    pub switches: Switches,
    /// The rule whose answer or cut ended it.
    pub rule: Option<&'a str>,
    pub code: u16,
    /// The delay the mode, a switch or a rule asked for, if any.
    pub delay_asked_ms: Option<u64>,
    /// How long the final reply was really held back.
    pub delay_given_ms: Option<u64>,
    /// From the end of the DATA command (or first BDAT) to the final reply.
    pub duration_ms: u64,
}

/// Why a connection ended, as its line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Quit,
    Timeout,
    /// The client went away (or the socket failed) without QUIT.
    Reset,
    UnknownCommands,
    /// A rule disconnected it.
    Rule,
    /// The server stopped.
    Stop,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Quit => "quit",
            Ended::Timeout => "timeout",
            Ended::Reset => "reset",
            Ended::UnknownCommands => "unknown_commands",
            Ended::Rule => "rule",
            Ended::Stop => "stop",
        }
    }
}

impl From<Ending> for Ended {
    fn from(ending: Ending) -> Self {
        match ending {
            Ending::Quit => Ended::Quit,
            Ending::Timeout => Ended::Timeout,
            Ending::UnknownCommands => Ended::UnknownCommands,
            Ending::Rule => Ended::Rule,
        }
    }
}

/// A closed connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionEvent<'a> {
    pub origin: Origin<'a>,
    pub helo: Option<&'a [u8]>,
    /// Messages given a final reply.
    pub messages: u64,
    /// Octets of message data over all of them.
    pub bytes: u64,
    pub ended: Ended,
    /// From accept to close.
    pub duration_ms: u64,
}

/// Bytes a client sent, shown as a JSON string.
struct Lossy<'a>(&'a [u8]);

impl Serialize for Lossy<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&String::from_utf8_lossy(self.0))
    }
}

/// The first [`MAX_RECIPIENTS`] recipients, as a JSON array of strings.
struct Recipients<'a, R>(&'a [R]);

impl<R: AsRef<[u8]>> Serialize for Recipients<'_, R> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shown = &self.0[..self.0.len().min(MAX_RECIPIENTS)];
        let mut seq = serializer.serialize_seq(Some(shown.len()))?;
        for recipient in shown {
            seq.serialize_element(&Lossy(recipient.as_ref()))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct SwitchesLine {
    mode: Option<&'static str>,
    delay: Option<String>,
}

#[derive(Serialize)]
struct OriginLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    connection: u64,
    worker: u32,
    listener: &'a str,
    client: String,
    tls: Option<&'a str>,
}

impl<'a> OriginLine<'a> {
    fn new(kind: &'static str, origin: &Origin<'a>) -> Self {
        OriginLine {
            kind,
            time: rfc3339_utc(origin.time_unix_ms),
            connection: origin.connection,
            worker: origin.worker,
            listener: origin.listener,
            client: origin.client.to_string(),
            tls: origin.tls,
        }
    }
}

#[derive(Serialize)]
#[serde(bound = "R: AsRef<[u8]>")]
struct MessageLine<'a, R> {
    #[serde(flatten)]
    origin: OriginLine<'a>,
    helo: Option<Lossy<'a>>,
    auth_user: Option<Lossy<'a>>,
    mail_from: Lossy<'a>,
    recipients: Recipients<'a, R>,
    recipient_count: u64,
    size: u64,
    switches: SwitchesLine,
    rule: Option<&'a str>,
    code: u16,
    delay_asked_ms: Option<u64>,
    delay_given_ms: Option<u64>,
    duration_ms: u64,
}

#[derive(Serialize)]
struct ConnectionLine<'a> {
    #[serde(flatten)]
    origin: OriginLine<'a>,
    helo: Option<Lossy<'a>>,
    messages: u64,
    bytes: u64,
    ended: &'static str,
    duration_ms: u64,
}

/// Appends `line` and a newline to `out`, or nothing if it would not serialise (it always
/// does: every key is a string, every value a string, number or array).
fn append_line(line: &impl Serialize, out: &mut Vec<u8>) {
    let start = out.len();
    match serde_json::to_writer(&mut *out, line) {
        Ok(()) => out.push(b'\n'),
        Err(_) => out.truncate(start),
    }
}

impl<R: AsRef<[u8]>> MessageEvent<'_, R> {
    /// Appends this message's line to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let line = MessageLine {
            origin: OriginLine::new("message", &self.origin),
            helo: self.helo.map(Lossy),
            auth_user: self.auth_user.map(Lossy),
            mail_from: Lossy(self.mail_from),
            recipients: Recipients(self.recipients),
            recipient_count: self.recipient_count.max(self.recipients.len() as u64),
            size: self.size,
            switches: SwitchesLine {
                mode: self.switches.mode.map(|mode| mode.as_str()),
                delay: self.switches.delay.map(|delay| delay.to_string()),
            },
            rule: self.rule,
            code: self.code,
            delay_asked_ms: self.delay_asked_ms,
            delay_given_ms: self.delay_given_ms,
            duration_ms: self.duration_ms,
        };
        append_line(&line, out);
    }
}

impl ConnectionEvent<'_> {
    /// Appends this connection's line to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let line = ConnectionLine {
            origin: OriginLine::new("connection", &self.origin),
            helo: self.helo.map(Lossy),
            messages: self.messages,
            bytes: self.bytes,
            ended: self.ended.as_str(),
            duration_ms: self.duration_ms,
        };
        append_line(&line, out);
    }
}

/// `2024-02-29T23:59:59.999Z` for milliseconds since the Unix epoch.
pub fn rfc3339_utc(unix_ms: u64) -> String {
    const MS_PER_DAY: u64 = 86_400_000;
    let (days, ms_of_day) = (unix_ms / MS_PER_DAY, unix_ms % MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (secs, ms) = (ms_of_day / 1000, ms_of_day % 1000);
    let mut text = String::with_capacity(24);
    // Writing to a `String` cannot fail.
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    text
}

/// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`, for
/// days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::policy::{DelayRange, Mode};
    use serde_json::{Value, json};

    fn origin() -> Origin<'static> {
        Origin {
            time_unix_ms: 1_709_251_199_999,
            connection: 7,
            worker: 2,
            listener: "127.0.0.1:2525",
            client: IpAddr::from([192, 0, 2, 1]),
            tls: Some("TLSv1_3"),
        }
    }

    fn parsed(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).expect("JSON is UTF-8");
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_utc(4_107_542_400_001), "2100-03-01T00:00:00.001Z");
        assert_eq!(rfc3339_utc(253_402_300_799_000), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn a_message_line_has_every_field() {
        let recipients: Vec<Vec<u8>> = (0..150).map(|i| format!("r{i}@x").into_bytes()).collect();
        let event = MessageEvent {
            origin: origin(),
            helo: Some(b"client.example"),
            auth_user: None,
            mail_from: b"s\xffender@example.com\"\n",
            recipients: &recipients[..MAX_RECIPIENTS + 20],
            recipient_count: 150,
            size: 1234,
            switches: Switches {
                mode: Some(Mode::Bounce),
                delay: DelayRange::new(1, 5),
            },
            rule: Some("slow"),
            code: 550,
            delay_asked_ms: Some(3000),
            delay_given_ms: Some(3004),
            duration_ms: 3010,
        };
        let mut out = b"before\n".to_vec();
        event.append_to(&mut out);
        let line = &parsed(&out[7..])[0];
        assert_eq!(line["type"], "message");
        assert_eq!(line["time"], "2024-02-29T23:59:59.999Z");
        assert_eq!(line["connection"], 7);
        assert_eq!(line["worker"], 2);
        assert_eq!(line["listener"], "127.0.0.1:2525");
        assert_eq!(line["client"], "192.0.2.1");
        assert_eq!(line["tls"], "TLSv1_3");
        assert_eq!(line["helo"], "client.example");
        assert_eq!(line["auth_user"], Value::Null);
        assert_eq!(line["mail_from"], "s\u{fffd}ender@example.com\"\n");
        assert_eq!(
            line["recipients"].as_array().map(Vec::len),
            Some(MAX_RECIPIENTS)
        );
        assert_eq!(line["recipients"][99], "r99@x");
        assert_eq!(line["recipient_count"], 150);
        assert_eq!(line["size"], 1234);
        assert_eq!(line["switches"], json!({"mode": "bounce", "delay": "1-5"}));
        assert_eq!(line["rule"], "slow");
        assert_eq!(line["code"], 550);
        assert_eq!(line["delay_asked_ms"], 3000);
        assert_eq!(line["delay_given_ms"], 3004);
        assert_eq!(line["duration_ms"], 3010);
        assert!(out.starts_with(b"before\n"), "appended, not replaced");
    }

    #[test]
    fn a_connection_line_says_why_it_ended() {
        let mut out = Vec::new();
        for ended in [Ended::Quit, Ending::UnknownCommands.into()] {
            let event = ConnectionEvent {
                origin: Origin {
                    client: "2001:db8::1".parse().expect("an address"),
                    tls: None,
                    ..origin()
                },
                helo: Some(b"\xc3("),
                messages: 3,
                bytes: 4096,
                ended,
                duration_ms: 12,
            };
            event.append_to(&mut out);
        }
        let lines = parsed(&out);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "connection");
        assert_eq!(lines[0]["client"], "2001:db8::1");
        assert_eq!(lines[0]["tls"], Value::Null);
        assert_eq!(lines[0]["helo"], "\u{fffd}(");
        assert_eq!(lines[0]["messages"], 3);
        assert_eq!(lines[0]["bytes"], 4096);
        assert_eq!(lines[0]["ended"], "quit");
        assert_eq!(lines[1]["ended"], "unknown_commands");
        assert_eq!(lines[0]["duration_ms"], 12);
    }
}
