//! The command line and the config check of "what the server saw": `--stop-after-messages`
//! and `--stop-after-seconds` (documented in `--help`; a bad value exits 64 naming the
//! flag), and `metrics_listen` and `event_log` under `-t` and `--help-config`.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{TempDir, run_blackhole};

const PROMPT: Duration = Duration::from_secs(10);

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_stop_values_exit_64_naming_the_flag() {
    let dir = TempDir::new();
    let conf = dir.write("blackhole.toml", "listen = [\"127.0.0.1:0\"]\n");
    let conf = conf.to_str().expect("a UTF-8 path");
    for (flag, value) in [
        ("--stop-after-messages", "0"),
        ("--stop-after-messages", "-1"),
        ("--stop-after-messages", "many"),
        ("--stop-after-messages", "18446744073709551616"),
        ("--stop-after-seconds", "0"),
        ("--stop-after-seconds", "1.5"),
        ("--stop-after-seconds", "31536001"),
    ] {
        let output = run_blackhole(&["-t", "-c", conf, flag, value], PROMPT);
        assert_eq!(output.status.code(), Some(64), "{flag} {value}");
        let message = stderr(&output);
        assert!(message.contains(flag), "{flag} {value}: {message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
    let output = run_blackhole(&["-t", "-c", conf, "--stop-after-seconds"], PROMPT);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("--stop-after-seconds"));
    let output = run_blackhole(
        &[
            "-t",
            "-c",
            conf,
            "--stop-after-messages",
            "18446744073709551615",
            "--stop-after-seconds",
            "31536000",
        ],
        PROMPT,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn help_documents_the_stop_flags() {
    let output = run_blackhole(&["--help"], PROMPT);
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--stop-after-messages N", "--stop-after-seconds S"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    let output = run_blackhole(&["--help-config"], PROMPT);
    let options = String::from_utf8_lossy(&output.stdout);
    for option in ["\nmetrics_listen\n", "\nevent_log\n"] {
        assert!(options.contains(option), "{option:?} missing");
    }
}

#[test]
fn the_config_check_names_the_file_and_option() {
    let dir = TempDir::new();
    let cases = [
        (
            "listen = [\"127.0.0.1:2525\"]\nmetrics_listen = \"127.0.0.1:2525\"\n",
            "metrics_listen",
        ),
        ("metrics_listen = \"9025\"\n", "metrics_listen"),
        ("event_log = \"/var/log/\"\n", "event_log"),
        ("event_log = 7\n", "event_log"),
    ];
    for (text, option) in cases {
        let conf = dir.write("bad.toml", text);
        let conf = conf.to_str().expect("a UTF-8 path");
        let output = run_blackhole(&["-t", "-c", conf], PROMPT);
        assert_eq!(output.status.code(), Some(64), "{text}");
        let message = stderr(&output);
        assert!(
            message.contains(&format!("{conf}: option `{option}`: ")),
            "{text}: {message}"
        );
    }
    let conf = dir.write(
        "good.toml",
        "listen = [\"127.0.0.1:2525\"]\nmetrics_listen = \"127.0.0.1:9025\"\nevent_log = \"-\"\n",
    );
    let output = run_blackhole(&["-t", "-c", conf.to_str().expect("utf-8")], PROMPT);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}
