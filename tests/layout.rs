//! The layout's contracts, read from the source: each room imports only what it may, opens
//! with a `//!` paragraph, and has no function too long to read at once.

use std::fs;
use std::path::{Path, PathBuf};

/// Longest function body, in lines, outside test code.
const MAX_FUNCTION_LINES: usize = 80;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The code of a file without its comments, line by line (string contents are kept: the
/// forbidden names below do not appear in the core's strings).
fn code_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => line[..at].to_owned(),
            None => line.to_owned(),
        })
        .collect()
}

/// Where `room`'s code names one of `forbidden`, as `file:line: name`.
fn forbidden_uses(room: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(&src().join(room)) {
        let text = fs::read_to_string(&file).expect("a source file");
        for (n, line) in code_lines(&text).iter().enumerate() {
            for name in forbidden {
                if line.contains(name) {
                    found.push(format!("{}:{}: {name}", file.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn the_smtp_core_is_pure() {
    let found = forbidden_uses(
        "smtp",
        &[
            "crate::event_loop",
            "crate::config",
            "crate::service",
            "mio::",
            "rustls",
            "socket2",
            "std::net",
            "std::fs",
            "std::time",
            "Instant",
            "SystemTime",
            "toml",
            "serde",
            "nix::",
            "signal_hook",
            "std::thread",
            "std::process",
        ],
    );
    assert!(
        found.is_empty(),
        "the SMTP core must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_event_loop_is_handed_its_settings() {
    let found = forbidden_uses(
        "event_loop",
        &[
            "crate::config",
            "crate::service",
            "toml",
            "serde",
            "std::fs",
            "std::thread",
        ],
    );
    assert!(
        found.is_empty(),
        "the event loop reads no configuration:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_configuration_only_reads_files() {
    let found = forbidden_uses(
        "config",
        &[
            "crate::event_loop",
            "crate::service",
            "mio::",
            "rustls::",
            "socket2",
            "nix::",
        ],
    );
    assert!(
        found.is_empty(),
        "the configuration serves nothing:\n{}",
        found.join("\n")
    );
}

#[test]
fn main_only_hands_over() {
    let main = fs::read_to_string(src().join("main.rs")).expect("main.rs");
    let code = code_lines(&main).join("\n");
    for name in [
        "blackhole::config",
        "blackhole::event_loop",
        "blackhole::smtp",
        "Server::",
    ] {
        assert!(
            !code.contains(name),
            "main.rs uses {name}: hand it to the service"
        );
    }
    assert!(
        code.contains("service::run"),
        "main.rs hands over to service::run"
    );
}

#[test]
fn every_room_says_what_it_owns() {
    for room in ["smtp", "event_loop", "config", "service"] {
        let text = fs::read_to_string(src().join(room).join("mod.rs")).expect("a room's mod.rs");
        assert!(
            text.starts_with("//! "),
            "src/{room}/mod.rs opens with a //! paragraph"
        );
        assert!(
            text.contains("must not"),
            "src/{room}/mod.rs says what the room must not do"
        );
    }
    let lib = fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    for room in ["smtp", "event_loop", "config", "service"] {
        assert!(
            lib.contains(&format!("pub mod {room};")),
            "lib.rs names {room}"
        );
    }
}

/// Functions of `text` longer than `limit` lines, as `name (lines)`, before its tests. A
/// function starts at a line whose code begins `fn` or `pub fn` (any visibility) and ends at
/// the first later line that closes a brace at the same indentation.
fn long_functions(text: &str, limit: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.trim() == "#[cfg(test)]")
        .unwrap_or(lines.len());
    let mut found = Vec::new();
    for (start, line) in lines[..end].iter().enumerate() {
        let trimmed = line.trim_start();
        let signature = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "const fn ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        if !signature || trimmed.ends_with(';') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let close = format!("{}}}", " ".repeat(indent));
        let Some(length) = lines[start + 1..end]
            .iter()
            .position(|l| l.starts_with(&close) && l.len() - l.trim_start().len() == indent)
        else {
            continue;
        };
        if length > limit {
            let name = trimmed.split('(').next().unwrap_or(trimmed);
            found.push(format!("{name} ({length} lines)"));
        }
    }
    found
}

#[test]
fn no_function_is_too_long_to_read() {
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        if file.ends_with("tests.rs") || file.ends_with("fuzz.rs") {
            continue;
        }
        let text = fs::read_to_string(&file).expect("a source file");
        for long in long_functions(&text, MAX_FUNCTION_LINES) {
            found.push(format!("{}: {long}", file.display()));
        }
    }
    assert!(found.is_empty(), "split these:\n{}", found.join("\n"));
}

#[test]
fn the_length_check_sees_a_long_function() {
    let body = "    let x = 1;\n".repeat(MAX_FUNCTION_LINES + 1);
    let text = format!("pub fn long() {{\n{body}}}\n\nfn short() {{\n}}\n");
    assert_eq!(
        long_functions(&text, MAX_FUNCTION_LINES),
        ["pub fn long (81 lines)"]
    );
    let tests = format!("#[cfg(test)]\nmod tests {{\n{text}}}\n");
    assert!(long_functions(&tests, MAX_FUNCTION_LINES).is_empty());
}
