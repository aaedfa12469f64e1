//! How a configuration problem is reported: [`ConfigError`], one line naming the file, the
//! rule (for a key of a `[[rule]]` table), the option at fault and what is allowed, and
//! [`Problem`], the same before the file is known.

use std::fmt;
use std::path::Path;

/// A configuration problem, reported on one line and with exit code 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (as given), or a description of where the text came from.
    pub file: String,
    /// The `[[rule]]` at fault, as `rule N` or `rule N ("NAME")`, when one is.
    pub rule: Option<String>,
    /// The option at fault (for a rule, its key), when one is.
    pub option: Option<String>,
    /// What is wrong, what is allowed and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_one_line(f, &self.file)?;
        if let Some(rule) = &self.rule {
            f.write_str(": ")?;
            write_one_line(f, rule)?;
        }
        if let Some(option) = &self.option {
            f.write_str(if self.rule.is_some() { ", " } else { ": " })?;
            f.write_str("option `")?;
            write_one_line(f, option)?;
            f.write_str("`")?;
        }
        f.write_str(": ")?;
        write_one_line(f, &self.message)
    }
}

/// Writes `s` with control characters escaped: messages quote values from
/// the file, and a quoted `"a\nb"` must not split the error over two lines.
fn write_one_line(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

impl std::error::Error for ConfigError {}

/// A problem found before the file name is attached.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) rule: Option<String>,
    pub(super) option: Option<String>,
    pub(super) message: String,
}

impl Problem {
    pub(super) fn general(message: impl Into<String>) -> Self {
        Problem {
            rule: None,
            option: None,
            message: message.into(),
        }
    }

    pub(super) fn option(option: &str, message: impl Into<String>) -> Self {
        Problem {
            rule: None,
            option: Some(option.to_owned()),
            message: message.into(),
        }
    }

    /// The problem as found in `[[rule]]` number `number` (from 1), named `name` when the
    /// file names it.
    pub(super) fn in_rule(self, number: usize, name: Option<&str>) -> Self {
        let rule = match name {
            Some(name) => format!("rule {number} ({name:?})"),
            None => format!("rule {number}"),
        };
        Problem {
            rule: Some(rule),
            ..self
        }
    }

    pub(super) fn in_file(self, origin: &Path) -> ConfigError {
        ConfigError {
            file: origin.display().to_string(),
            rule: self.rule,
            option: self.option,
            message: self.message,
        }
    }

    /// The problem as one phrase, for quoting inside another message.
    pub(super) fn describe(&self) -> String {
        let place = match (&self.rule, &self.option) {
            (Some(rule), Some(option)) => format!("{rule}, option `{option}`: "),
            (Some(rule), None) => format!("{rule}: "),
            (None, Some(option)) => format!("option `{option}`: "),
            (None, None) => String::new(),
        };
        format!("{place}{}", self.message)
    }
}
