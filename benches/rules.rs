//! What scripted faults cost when they do not fire: server CPU per 1,000 messages with no
//! rule, and with 100 `[[rule]]` tables that match no command (each RCPT tries all 100), from
//! 20 persistent pipelining sessions of blackhole's own load generator. The target: 100
//! rules that do not match cost at most 1.1x none. With `BLACKHOLE_BENCH_BASELINE=PATH` (a
//! build from before rules existed) the same load runs against it too, for "no rule costs
//! nothing": compare its figure with the no-rule one of this build.
//!
//!     cargo bench --bench rules
//!
//! Runs alternate between the configurations, three rounds, and the medians are compared:
//! absolute figures drift on a shared machine, ratios measured in one run do not.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use support::loadgen::{self, Dialogue, Load};
use support::server::{self, Server};
use support::stats::median;

const SESSIONS: usize = 20;
const MESSAGES: usize = 60_000;
const ROUNDS: usize = 3;
const RULES: usize = 100;
const TARGET_RATIO: f64 = 1.1;

/// 100 rules on RCPT whose globs fit no recipient the load sends, each on its own pattern so
/// that every one is tried.
fn idle_rules() -> String {
    (0..RULES)
        .map(|n| {
            format!(
                "[[rule]]\nname = \"never {n}\"\non = \"rcpt\"\nmatch = \"nobody-{n}@*\"\n\
                 reply = \"550 5.1.1 No such user\"\n\n"
            )
        })
        .collect()
}

/// Server CPU seconds per 1,000 messages for one run of the load.
fn cpu_per_thousand(binary: &Path, extra_toml: &str) -> f64 {
    let mut server = Server::blackhole_with(binary, extra_toml).expect("start blackhole");
    let before = server.cpu_seconds();
    let outcome = loadgen::run(&Load {
        addr: server.addr,
        sessions: SESSIONS,
        messages: MESSAGES,
        dialogue: Dialogue::Pipelined,
    });
    let used = server.cpu_seconds() - before;
    server.stop();
    assert_eq!(
        (outcome.delivered, outcome.errors),
        (MESSAGES, 0),
        "every message delivered: {:?}",
        outcome.first_error
    );
    used / MESSAGES as f64 * 1000.0
}

fn main() -> ExitCode {
    let Some(binary) = server::built_blackhole("rules") else {
        return ExitCode::FAILURE;
    };
    let baseline = std::env::var_os("BLACKHOLE_BENCH_BASELINE").map(PathBuf::from);
    let rules = idle_rules();
    let mut configurations: Vec<(String, PathBuf, &str)> = vec![
        ("no rule".into(), binary.clone(), ""),
        (
            format!("{RULES} rules, none matching"),
            binary.clone(),
            &rules,
        ),
    ];
    if let Some(baseline) = &baseline {
        configurations.push(("no rule, baseline build".into(), baseline.clone(), ""));
    }
    let mut figures = vec![Vec::new(); configurations.len()];
    for round in 1..=ROUNDS {
        for (n, (name, binary, extra)) in configurations.iter().enumerate() {
            let figure = cpu_per_thousand(binary, extra);
            println!("   round {round}: {name}: {figure:.4} s per 1,000 messages");
            figures[n].push(figure);
        }
    }
    let medians: Vec<f64> = figures
        .iter()
        .map(|f| median(f).unwrap_or(f64::NAN))
        .collect();
    println!(
        "== Rules that do not fire ({SESSIONS} pipelining sessions, {MESSAGES} messages a run, median of {ROUNDS})"
    );
    for ((name, _, _), m) in configurations.iter().zip(&medians) {
        println!(
            "{name:<32} {m:.4} s CPU per 1,000 messages  ({:.2}x no rule)",
            m / medians[0]
        );
    }
    let ratio = medians[1] / medians[0];
    let pass = ratio <= TARGET_RATIO;
    println!(
        "{} {RULES} rules that do not match: {ratio:.2}x the CPU of none (at most {TARGET_RATIO}x)",
        if pass { "PASS" } else { "FAIL" }
    );
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
