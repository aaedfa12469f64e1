//! Printing: aligned plain-text tables, and the list of targets with PASS/FAIL.
//!
//! Plain text on stdout so a run can be pasted into a report as it is; progress goes to
//! stderr so that stdout holds only the tables.

use std::fmt::Write as _;
use std::time::Instant;

pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A line printed under the table.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The first column is left-aligned (it names the row), the others right-aligned
    /// (they are figures).
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .fold(self.header.len(), usize::max);
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = format!("== {}\n", self.title);
        for (index, line) in std::iter::once(&self.header).chain(&self.rows).enumerate() {
            let mut text = String::new();
            for (column, (cell, width)) in line.iter().zip(&widths).enumerate() {
                if column == 0 {
                    let _ = write!(text, "{cell:<width$}");
                } else {
                    let _ = write!(text, "  {cell:>width$}");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
            if index == 0 {
                let total = widths.iter().sum::<usize>() + 2 * (columns - 1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "   {note}");
        }
        out
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A figure to compare by hand: no limit is set.
    Info,
    /// Not measured in this run; the row says why.
    Skipped,
}

impl Verdict {
    pub fn from_check(pass: bool) -> Verdict {
        if pass { Verdict::Pass } else { Verdict::Fail }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "-",
            Verdict::Skipped => "SKIP",
        }
    }
}

/// The performance targets, collected as the sections run, printed last.
#[derive(Default)]
pub struct Targets {
    rows: Vec<(String, String, String, Verdict)>,
}

impl Targets {
    pub fn add(
        &mut self,
        target: impl Into<String>,
        measured: impl Into<String>,
        limit: impl Into<String>,
        verdict: Verdict,
    ) {
        self.rows
            .push((target.into(), measured.into(), limit.into(), verdict));
    }

    pub fn failures(&self) -> usize {
        self.rows
            .iter()
            .filter(|row| row.3 == Verdict::Fail)
            .count()
    }

    /// The targets' table, then how many failed and how long the run took since `began`.
    pub fn print_ending(&self, began: Instant) {
        self.table().print();
        println!(
            "{} target(s) FAIL; the run took {:.0} s",
            self.failures(),
            began.elapsed().as_secs_f64()
        );
    }

    pub fn table(&self) -> Table {
        let mut table = Table::new("Targets", &["target", "measured", "limit", "result"]);
        for (target, measured, limit, verdict) in &self.rows {
            table.row(vec![
                target.clone(),
                measured.clone(),
                limit.clone(),
                verdict.label().to_owned(),
            ]);
        }
        table
    }
}

/// `12345` as `12,345`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Seconds as milliseconds with two decimals.
pub fn millis(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1000.0)
}

/// An optional figure, or a dash.
pub fn or_dash(value: Option<f64>, show: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

/// The sections of `all` named on the command line, all of them when none is (cargo adds
/// `--bench`, which is not one).
pub fn sections_from_args(all: &[&'static str]) -> Result<Vec<&'static str>, String> {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if named.is_empty() {
        return Ok(all.to_vec());
    }
    named
        .iter()
        .map(|name| {
            all.iter()
                .find(|s| **s == name.as_str())
                .copied()
                .ok_or_else(|| format!("no section {name:?}; sections: {}", all.join(", ")))
        })
        .collect()
}
