//! The original program's `key = value` format, still read unchanged. Its lines become the
//! table a TOML file would give, so both formats share one validation pass.

use toml::Value;

use super::error::Problem;
use super::toml_file::{self, RawOptions, is_option, table_header, unknown_option};

/// The original's format: `key = value` lines, `#` comments (also after a
/// value), blank lines, quotes removed, an empty value meaning "unset", the
/// last setting of a key winning. Every value is a string; the result goes
/// through the same path as a TOML file. It has no tables: `[[rule]]` and `[greylist]` are TOML only.
pub(super) fn options(text: &str) -> Result<RawOptions, Problem> {
    let mut table = toml::Table::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Problem::general(format!(
                "line {number}: `{line}` is not a setting; write `option = value` \
                 (or put the file in TOML format)"
            )));
        };
        let key = key.trim();
        if !is_option(key) {
            let mut problem = unknown_option(key);
            problem.message = format!("line {number}: {}", problem.message);
            return Err(problem);
        }
        if let Some(header) = table_header(key) {
            return Err(Problem::option(
                key,
                format!(
                    "line {number}: {header} tables exist only in TOML files, and this file \
                     is in the original's `key = value` format: write it in TOML to use them"
                ),
            ));
        }
        // An empty value stays, to unset an earlier one; the table drops it later.
        let value: String = value.chars().filter(|c| *c != '"' && *c != '\'').collect();
        table.insert(key.to_owned(), Value::String(value));
    }
    toml_file::options(table)
}
