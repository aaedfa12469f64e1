//! The one-line summary of a [`Totals`], logged on SIGUSR1 and at exit: what a person
//! reading the log wants at a glance, not every figure the scrape has.

use std::fmt::Write as _;

use super::exposition::{Labels, OTHER};
use super::tally::Totals;

/// `connections: 3 opened, 1 open, 0 refused, 1 timed out; messages: 5 (250: 4, 550: 1);
/// recipients: 6; bytes: 1234; rules fired: 2 (slow: 2); greylist: 1 deferred, 0 passed;
/// event log dropped: 0`.
pub fn line(totals: &Totals, labels: &Labels) -> String {
    // Writing to a `String` cannot fail: results are dropped on purpose.
    let mut line = String::new();
    let _ = write!(
        line,
        "connections: {} opened, {} open, {} refused, {} timed out; ",
        totals.connections_opened(),
        totals.connections_open,
        totals.connections_refused,
        totals.timeouts,
    );
    let by_code = totals.messages_by_code();
    let mut parts: Vec<String> = by_code
        .iter()
        .map(|(code, n)| format!("{code}: {n}"))
        .collect();
    if totals.messages_other > 0 {
        parts.push(format!("{OTHER}: {}", totals.messages_other));
    }
    let messages = totals.messages_answered();
    let _ = write!(line, "messages: {messages}{}; ", in_brackets(&parts));
    let _ = write!(
        line,
        "recipients: {}; bytes: {}; ",
        totals.recipients, totals.message_bytes
    );
    let (fired, parts) = rule_firings(totals, labels);
    let _ = write!(line, "rules fired: {fired}{}; ", in_brackets(&parts));
    let _ = write!(
        line,
        "greylist: {} deferred, {} passed; event log dropped: {}",
        totals.greylist[0], totals.greylist[1], totals.event_log_dropped
    );
    line
}

fn in_brackets(parts: &[String]) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// All firings, and `name: count` for each rule that fired, by configured name.
fn rule_firings(totals: &Totals, labels: &Labels) -> (u64, Vec<String>) {
    let (named, other) = totals.rules_by_name(labels.rules);
    let mut parts: Vec<String> = named
        .into_iter()
        .filter(|&(_, count)| count > 0)
        .map(|(rule, count)| format!("{rule}: {count}"))
        .collect();
    if other > 0 {
        parts.push(format!("{OTHER}: {other}"));
    }
    let fired = totals.rules.values().sum::<u64>() + totals.rules_other;
    (fired, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tally::Tally;

    #[test]
    fn an_empty_run_says_zero_everywhere() {
        assert_eq!(
            line(&Totals::default(), &Labels::default()),
            "connections: 0 opened, 0 open, 0 refused, 0 timed out; messages: 0; \
             recipients: 0; bytes: 0; rules fired: 0; greylist: 0 deferred, 0 passed; \
             event log dropped: 0"
        );
    }

    #[test]
    fn a_run_is_summed_by_code_and_rule_name() {
        let tally = Tally::default();
        for listener in [0, 1, 0] {
            tally.connection_opened(listener, false);
        }
        tally.connection_closed(1);
        tally.connection_refused();
        tally.connection_timed_out();
        tally.message(0, 250, 1000);
        tally.message(1, 250, 24);
        tally.message(1, 550, 0);
        tally.recipient();
        tally.rule_fired("slow");
        tally.rule_fired("slow");
        tally.rule_fired("gone");
        tally.greylisted(false);
        tally.event_log_dropped(7);
        let rules = ["slow".to_owned(), "idle".to_owned()];
        let labels = Labels {
            listeners: &[],
            rules: &rules,
        };
        assert_eq!(
            line(&Totals::of([&tally]), &labels),
            "connections: 3 opened, 2 open, 1 refused, 1 timed out; \
             messages: 3 (250: 2, 550: 1); recipients: 1; bytes: 1024; \
             rules fired: 3 (slow: 2, other: 1); greylist: 1 deferred, 0 passed; \
             event log dropped: 7"
        );
    }
}
