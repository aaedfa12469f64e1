//! The loop's account of what its sessions do: the [`Observer`] a session reports through.
//!
//! It counts into this process's [`Tally`] (in memory shared with the other workers), and,
//! while the event log is on, keeps what a connection's event lines need in a [`Record`]
//! of its own (boxed beside the connection, so that without an event log a connection
//! holds nothing more) and writes a message's line at its final reply. What the loop itself
//! sees (connections, TLS, delays, timeouts) it counts directly.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::info;

use crate::report::event::{ConnectionEvent, Ended, MAX_RECIPIENTS, MessageEvent, Origin};
use crate::report::exposition::{self, Labels};
use crate::report::summary;
use crate::report::tally::{Tally, Totals};
use crate::smtp::command::Verb;
use crate::smtp::observer::{AuthResult, Ending, MessageEnd, Observer};
use crate::smtp::switches::Switches;

use super::event_log::EventLog;
use super::process_figures;

/// Where event lines go: the event log, or a buffer in tests.
pub trait LineSink {
    fn push_line(&mut self, line: &[u8]);
}

impl LineSink for EventLog {
    fn push_line(&mut self, line: &[u8]) {
        self.push(line);
    }
}

impl LineSink for Vec<u8> {
    fn push_line(&mut self, line: &[u8]) {
        self.extend_from_slice(line);
    }
}

/// One connection's detail for its event lines, kept only while the event log is on.
/// Names are bounded by the command line's length; recipients by [`MAX_RECIPIENTS`].
#[derive(Debug, Default)]
pub struct Record {
    helo: Option<Vec<u8>>,
    auth_user: Option<Vec<u8>>,
    mail_from: Vec<u8>,
    recipients: Vec<Vec<u8>>,
    recipient_count: u64,
    /// The message whose data ended: its size and switches, and when (loop milliseconds).
    data: Option<(u64, Switches, u64)>,
    messages: u64,
    bytes: u64,
    ended: Option<Ended>,
    /// A reply held back: when the wait began (loop milliseconds) and what it asked for.
    pause: Option<(u64, u64)>,
    /// LMTP: the recipients of the message whose data ended that have had their reply.
    replied: u64,
}

impl Record {
    /// A reply is held back for `asked_ms` from `now`.
    pub fn paused(&mut self, now: u64, asked_ms: u64) {
        self.pause = Some((now, asked_ms));
    }

    /// The held reply has gone (its message's line, if it was one, is written).
    pub fn resumed(&mut self) {
        self.pause = None;
    }

    /// Why the connection ends, unless the session said so already.
    pub fn ends(&mut self, why: Ended) {
        self.ended.get_or_insert(why);
    }

    /// The connection's closing line, appended to `out`.
    pub fn connection_line(&self, origin: Origin, duration_ms: u64, why: Ended, out: &mut Vec<u8>) {
        ConnectionEvent {
            origin,
            helo: self.helo.as_deref(),
            messages: self.messages,
            bytes: self.bytes,
            ended: self.ended.unwrap_or(why),
            duration_ms,
        }
        .append_to(out);
    }

    fn forget_transaction(&mut self) {
        self.mail_from.clear();
        self.recipients.clear();
        self.recipient_count = 0;
        self.data = None;
        self.replied = 0;
    }
}

/// What a message's line needs beside the record: where and when.
pub struct Detail<'a> {
    pub record: &'a mut Record,
    pub lines: &'a mut dyn LineSink,
    /// Its `time_unix_ms` is filled in when a line is written.
    pub origin: Origin<'a>,
    /// The loop's milliseconds now.
    pub now_ms: u64,
}

/// The [`Observer`] a session is handed with each call.
pub struct Witness<'a> {
    tally: &'static Tally,
    listener: usize,
    /// Messages given their final reply by this process: `--stop-after-messages` watches it.
    messages: &'a mut u64,
    detail: Option<Detail<'a>>,
}

impl<'a> Witness<'a> {
    pub fn new(
        tally: &'static Tally,
        listener: usize,
        messages: &'a mut u64,
        detail: Option<Detail<'a>>,
    ) -> Self {
        Witness {
            tally,
            listener,
            messages,
            detail,
        }
    }
}

/// A connection as its event lines name it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub id: u64,
    pub listener: usize,
    pub client: IpAddr,
    /// The TLS version, once agreed.
    pub tls: Option<&'static str>,
}

/// What the loop keeps account in: this process's tally, the event log when it is on, and
/// the messages finished here.
pub struct Account {
    pub tally: &'static Tally,
    /// Every serving process's tally, this one's included: what a scrape and a summary show.
    pub tallies: &'static [Tally],
    /// The worker's number (its slot); 0 without workers.
    pub worker: u32,
    /// Each listener's address, by index: the label of its figures and lines.
    pub listeners: Vec<String>,
    pub events: Option<EventLog>,
    /// Lines the event log had dropped when last counted into the tally.
    events_dropped: u64,
    /// Messages given their final reply by this process.
    pub messages: u64,
}

impl Account {
    pub fn new(tallies: &'static [Tally], slot: usize, listeners: Vec<String>) -> Option<Self> {
        Some(Account {
            tally: tallies.get(slot)?,
            tallies,
            worker: u32::try_from(slot).ok()?,
            listeners,
            events: None,
            events_dropped: 0,
            messages: 0,
        })
    }

    /// The observer for one call into `seen`'s session; `record` is its detail, kept while
    /// the event log is on.
    pub fn witness<'a>(
        &'a mut self,
        seen: Seen,
        record: Option<&'a mut Record>,
        now_ms: u64,
    ) -> Witness<'a> {
        let origin = origin(self.worker, &self.listeners, seen);
        let detail = match (record, &mut self.events) {
            (Some(record), Some(log)) => Some(Detail {
                record,
                lines: log,
                origin,
                now_ms,
            }),
            _ => None,
        };
        Witness::new(self.tally, seen.listener, &mut self.messages, detail)
    }

    /// A connection closed after `duration_ms`: its line, when the event log is on and kept
    /// its record.
    pub fn closed(&mut self, seen: Seen, record: Option<&Record>, duration_ms: u64, why: Ended) {
        if let (Some(record), Some(_)) = (record, &self.events) {
            let mut origin = origin(self.worker, &self.listeners, seen);
            origin.time_unix_ms = unix_ms();
            let mut line = Vec::with_capacity(256);
            record.connection_line(origin, duration_ms, why, &mut line);
            if let Some(log) = &mut self.events {
                log.push(&line);
            }
        }
    }

    /// Counts the lines the event log dropped since last asked into the tally.
    pub fn count_dropped_lines(&mut self) {
        if let Some(log) = &self.events {
            let dropped = log.dropped();
            self.tally
                .event_log_dropped(dropped.saturating_sub(self.events_dropped));
            self.events_dropped = dropped;
        }
    }

    /// At exit: the event log's writer gets until `deadline` to write what it was sent.
    pub fn finish_event_log(&mut self, deadline: Instant) {
        self.count_dropped_lines();
        if let Some(log) = self.events.take() {
            let dropped = log.finish(deadline);
            self.tally
                .event_log_dropped(dropped.saturating_sub(self.events_dropped));
            self.events_dropped = 0;
        }
    }

    /// The Prometheus text of every process's tally, with the process figures of every
    /// process that claimed a slot and of `other_pids`.
    pub fn render(&self, rules: &[String], other_pids: &[u32], out: &mut Vec<u8>) {
        let totals = Totals::of(self.tallies);
        let mut pids: Vec<u32> = self
            .tallies
            .iter()
            .map(Tally::pid)
            .filter(|&pid| pid != 0)
            .collect();
        pids.extend_from_slice(other_pids);
        let figures = process_figures::read(&pids);
        let labels = Labels {
            listeners: &self.listeners,
            rules,
        };
        exposition::render(&totals, &labels, figures.as_ref(), out);
    }

    /// Logs the summary of every process's tally.
    pub fn log_summary(&self, rules: &[String]) {
        log_summary(self.tallies, &self.listeners, rules);
    }
}

/// Where and whose `seen` is, for its lines; the time is filled in when one is written.
fn origin(worker: u32, listeners: &[String], seen: Seen) -> Origin<'_> {
    Origin {
        time_unix_ms: 0,
        connection: seen.id,
        worker,
        listener: listeners.get(seen.listener).map_or("other", String::as_str),
        client: seen.client,
        tls: seen.tls,
    }
}

/// Logs the one-line summary of `tallies`.
pub fn log_summary(tallies: &[Tally], listeners: &[String], rules: &[String]) {
    let labels = Labels { listeners, rules };
    info!("summary: {}", summary::line(&Totals::of(tallies), &labels));
}

/// Milliseconds since the Unix epoch, for event lines.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The line of a message given reply `code`: for all its recipients, or (LMTP) for the one
/// at `recipient` in RCPT order.
fn write_message_line(detail: &mut Detail, code: u16, rule: Option<&str>, recipient: Option<u64>) {
    let record = &mut *detail.record;
    let now = detail.now_ms;
    let (delay_asked_ms, delay_given_ms) = match record.pause {
        Some((since, asked)) => (Some(asked), Some(now.saturating_sub(since))),
        None => (None, None),
    };
    let (size, switches, ended_at) = record.data.unwrap_or((0, Switches::default(), now));
    let mut origin = detail.origin;
    origin.time_unix_ms = unix_ms();
    let (recipients, recipient_count) = match recipient {
        None => (&record.recipients[..], record.recipient_count),
        // Past the first MAX_RECIPIENTS, its address was not kept.
        Some(n) => {
            let kept = usize::try_from(n).map_or(&[][..], |n| {
                record.recipients.get(n..=n).unwrap_or_default()
            });
            (kept, 1)
        }
    };
    let mut line = Vec::with_capacity(512);
    MessageEvent {
        origin,
        helo: record.helo.as_deref(),
        auth_user: record.auth_user.as_deref(),
        mail_from: &record.mail_from,
        recipients,
        recipient_count,
        size,
        switches,
        rule,
        code,
        delay_asked_ms,
        delay_given_ms,
        duration_ms: now.saturating_sub(ended_at),
    }
    .append_to(&mut line);
    detail.lines.push_line(&line);
}

impl Observer for Witness<'_> {
    fn command(&mut self, verb: Verb) {
        self.tally.command(verb);
    }

    fn greeted(&mut self, name: &[u8]) {
        if let Some(detail) = &mut self.detail {
            detail.record.helo = Some(name.to_vec());
        }
    }

    fn auth_user(&mut self, user: &[u8]) {
        if let Some(detail) = &mut self.detail {
            detail.record.auth_user = Some(user.to_vec());
        }
    }

    fn auth(&mut self, mechanism: &'static str, result: AuthResult) {
        self.tally.auth(mechanism, result);
        // Only an accepted identity is the client's; a session accepts at most one.
        if let Some(detail) = &mut self.detail
            && result != AuthResult::Accepted
        {
            detail.record.auth_user = None;
        }
    }

    fn sender(&mut self, address: &[u8]) {
        if let Some(detail) = &mut self.detail {
            let record = &mut *detail.record;
            record.forget_transaction();
            // Into the buffer the last sender left: a session's messages reuse it.
            record.mail_from.extend_from_slice(address);
        }
    }

    fn recipient(&mut self, address: &[u8]) {
        self.tally.recipient();
        if let Some(detail) = &mut self.detail {
            let record = &mut *detail.record;
            if record.recipients.len() < MAX_RECIPIENTS {
                record.recipients.push(address.to_vec());
            }
            record.recipient_count += 1;
        }
    }

    fn transaction_dropped(&mut self) {
        if let Some(detail) = &mut self.detail {
            detail.record.forget_transaction();
        }
    }

    fn rule_fired(&mut self, rule: &str) {
        self.tally.rule_fired(rule);
    }

    fn greylisted(&mut self, passed: bool) {
        self.tally.greylisted(passed);
    }

    fn data_ended(&mut self, size: u64, switches: &Switches) {
        self.tally.message_data(size);
        if let Some(detail) = &mut self.detail {
            let record = &mut *detail.record;
            record.data = Some((size, *switches, detail.now_ms));
            record.bytes += size;
        }
    }

    /// A message closed on without a word (a rule's cut) had no final reply: its bytes
    /// count, and its connection's line tells why it ended.
    fn message(&mut self, message: &MessageEnd) {
        let Some(code) = message.code else {
            if let Some(detail) = &mut self.detail {
                detail.record.forget_transaction();
            }
            return;
        };
        self.tally.message_answered(self.listener, code);
        *self.messages += 1;
        if let Some(detail) = &mut self.detail {
            let record = &mut *detail.record;
            let recipient = message.per_recipient.then_some(record.replied);
            record.replied += 1;
            let last = !message.per_recipient || record.replied >= record.recipient_count;
            write_message_line(detail, code, message.rule, recipient);
            detail.record.messages += 1;
            if last {
                detail.record.forget_transaction();
            }
        }
    }

    fn ending(&mut self, why: Ending) {
        if let Some(detail) = &mut self.detail {
            detail.record.ends(why.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use serde_json::Value;

    use super::*;
    use crate::report::tally::Totals;
    use crate::smtp::policy::Mode;

    fn leaked_tally() -> &'static Tally {
        Box::leak(Box::default())
    }

    fn origin() -> Origin<'static> {
        Origin {
            time_unix_ms: 0,
            connection: 7,
            worker: 2,
            listener: "127.0.0.1:2525",
            client: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
            tls: Some("TLSv1_3"),
        }
    }

    fn lines(text: &[u8]) -> Vec<Value> {
        text.split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).expect("a JSON line"))
            .collect()
    }

    fn end(code: u16) -> MessageEnd<'static> {
        MessageEnd {
            code: Some(code),
            rule: None,
            per_recipient: false,
        }
    }

    /// A witness with the event log on, writing into `out`, at `now_ms`.
    fn logging<'a>(
        record: &'a mut Record,
        out: &'a mut Vec<u8>,
        messages: &'a mut u64,
        now_ms: u64,
    ) -> Witness<'a> {
        let detail = Detail {
            record,
            lines: out,
            origin: origin(),
            now_ms,
        };
        Witness::new(leaked_tally(), 0, messages, Some(detail))
    }

    #[test]
    fn without_an_event_log_it_only_counts() {
        let tally = leaked_tally();
        let mut messages = 0;
        let mut witness = Witness::new(tally, 1, &mut messages, None);
        witness.command(Verb::Ehlo);
        witness.greeted(b"client.example");
        witness.sender(b"a@example.com");
        witness.recipient(b"b@example.net");
        witness.rule_fired("slow");
        witness.data_ended(1200, &Switches::default());
        witness.message(&end(250));
        witness.data_ended(30, &Switches::default());
        witness.message(&MessageEnd {
            code: None,
            ..end(250)
        });
        witness.greylisted(true);
        let totals = Totals::of([tally]);
        assert_eq!(
            messages, 1,
            "a message closed on without a reply is not finished"
        );
        assert_eq!(totals.recipients, 1);
        assert_eq!(
            totals.message_bytes, 1230,
            "a message cut off counts its bytes"
        );
        assert_eq!(totals.greylist, [0, 1]);
        assert_eq!(totals.messages_by_code().get(&250), Some(&1));
        assert_eq!(totals.messages_by_code().len(), 1, "no reply, no code");
        assert_eq!(totals.commands.iter().sum::<u64>(), 1);
        assert_eq!(totals.rules.len(), 1);
    }

    #[test]
    fn a_message_line_names_its_transaction_and_the_record_moves_on() {
        let (mut record, mut out, mut messages) = (Record::default(), Vec::new(), 0);
        let mut witness = logging(&mut record, &mut out, &mut messages, 5_000);
        witness.greeted(b"client.example");
        witness.auth_user(b"mallory");
        witness.auth("plain", AuthResult::Refused);
        witness.auth_user(b"alice");
        witness.auth("plain", AuthResult::Accepted);
        witness.sender(b"old@example.com");
        witness.transaction_dropped();
        witness.sender(b"a@example.com");
        for i in 0..(MAX_RECIPIENTS + 5) {
            witness.recipient(format!("r{i}@example.net").as_bytes());
        }
        let switches = Switches {
            mode: Some(Mode::Bounce),
            delay: None,
        };
        witness.data_ended(42, &switches);
        witness.message(&MessageEnd {
            rule: Some("slow"),
            ..end(550)
        });
        witness.ending(Ending::Quit);
        let parsed = lines(&out);
        assert_eq!(parsed.len(), 1);
        let line = &parsed[0];
        assert_eq!(line["type"], "message");
        assert_eq!(line["connection"], 7);
        assert_eq!(line["worker"], 2);
        assert_eq!(line["client"], "127.0.0.9");
        assert_eq!(line["tls"], "TLSv1_3");
        assert_eq!(line["helo"], "client.example");
        assert_eq!(line["auth_user"], "alice");
        assert_eq!(line["mail_from"], "a@example.com");
        assert_eq!(line["recipients"].as_array().map(Vec::len), Some(100));
        assert_eq!(line["recipients"][0], "r0@example.net");
        assert_eq!(line["recipient_count"], 105);
        assert_eq!(line["code"], 550);
        assert_eq!(line["size"], 42);
        assert_eq!(line["switches"]["mode"], "bounce");
        assert_eq!(line["rule"], "slow");
        assert_eq!(line["delay_asked_ms"], Value::Null);
        assert_eq!(line["duration_ms"], 0);
        assert!(record.mail_from.is_empty() && record.recipients.is_empty());
        assert_eq!((record.messages, record.bytes), (1, 42));
        let mut closing = Vec::new();
        record.ends(Ended::Reset);
        record.connection_line(origin(), 900, Ended::Stop, &mut closing);
        let closing = lines(&closing);
        assert_eq!(closing[0]["type"], "connection");
        assert_eq!(
            closing[0]["ended"], "quit",
            "the session's reason comes first"
        );
        assert_eq!(closing[0]["messages"], 1);
        assert_eq!(closing[0]["bytes"], 42);
        assert_eq!(closing[0]["duration_ms"], 900);
    }

    #[test]
    fn a_held_reply_gives_its_delay_asked_and_given() {
        let (mut record, mut out, mut messages) = (Record::default(), Vec::new(), 0);
        let mut witness = logging(&mut record, &mut out, &mut messages, 1_000);
        witness.sender(b"a@example.com");
        witness.data_ended(1, &Switches::default());
        record.paused(1_000, 2_000);
        // The held reply goes in a later call: cut short, as by a stop.
        let mut witness = logging(&mut record, &mut out, &mut messages, 2_500);
        witness.message(&end(250));
        let line = &lines(&out)[0];
        assert_eq!(line["delay_asked_ms"], 2_000);
        assert_eq!(line["delay_given_ms"], 1_500);
        assert_eq!(line["duration_ms"], 1_500);
        assert_eq!(messages, 1);
    }

    #[test]
    fn an_lmtp_message_has_a_line_per_recipient_reply() {
        let (mut record, mut out, mut messages) = (Record::default(), Vec::new(), 0);
        let mut witness = logging(&mut record, &mut out, &mut messages, 0);
        witness.sender(b"a@example.com");
        for name in ["b", "c", "d"] {
            witness.recipient(format!("{name}@example.net").as_bytes());
        }
        witness.data_ended(10, &Switches::default());
        for code in [250, 550, 451] {
            witness.message(&MessageEnd {
                per_recipient: true,
                ..end(code)
            });
        }
        let parsed = lines(&out);
        let seen: Vec<(String, u64, u64)> = parsed
            .iter()
            .map(|line| {
                (
                    line["recipients"][0].as_str().unwrap_or("?").to_owned(),
                    line["code"].as_u64().unwrap_or(0),
                    line["recipient_count"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("b@example.net".to_owned(), 250, 1),
                ("c@example.net".to_owned(), 550, 1),
                ("d@example.net".to_owned(), 451, 1),
            ]
        );
        assert!(
            parsed
                .iter()
                .all(|line| line["mail_from"] == "a@example.com")
        );
        assert_eq!(messages, 3);
        assert!(record.recipients.is_empty(), "the transaction is over");
    }
}
