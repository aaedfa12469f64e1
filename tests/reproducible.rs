//! Reproducible randomness, end to end: the real server, several connections at once, their
//! commands interleaved differently from one run to the next. The same seed must give every
//! connection the same replies byte for byte (random mode, bounce codes, message ids, CRAM-MD5
//! challenges, a rule's probability and delay); another seed must not; and a seed the server
//! picked itself is logged and replays its run.

mod common;

use common::{Client, Server, greeted};

/// Connections open at once in one run.
const CONNECTIONS: usize = 4;
/// Messages each connection sends.
const MESSAGES: usize = 6;

/// What one connection was told, in order: every reply whole.
type Transcript = Vec<String>;

/// Opens the connections one after another (so each has the same serial number in every
/// run), then sends one step of every connection's script at a time, visiting the
/// connections in `order`, so that the server sees them interleaved as `order` says.
fn run(server: &Server, order: &[usize]) -> Vec<Transcript> {
    let mut clients: Vec<Client> = (0..CONNECTIONS).map(|_| greeted(server.addr())).collect();
    let mut transcripts = vec![Transcript::new(); CONNECTIONS];
    let mut steps = vec![
        "EHLO client.example.com".to_owned(),
        "AUTH CRAM-MD5".to_owned(),
        "*".to_owned(),
    ];
    for n in 0..MESSAGES {
        steps.push("MAIL FROM:<a@example.com>".to_owned());
        steps.push("RCPT TO:<b@example.net>".to_owned());
        steps.push("RCPT TO:<c@example.net>".to_owned());
        steps.push("DATA".to_owned());
        steps.push(format!("Subject: {n}\r\n\r\nbody\r\n."));
    }
    steps.push("QUIT".to_owned());
    for step in &steps {
        for &c in order {
            transcripts[c].push(clients[c].command(step));
        }
    }
    transcripts
}

/// The final replies of a transcript's messages (each the reply after a `354`): what the
/// seed decides.
fn finals(transcript: &Transcript) -> Vec<&str> {
    transcript
        .windows(2)
        .filter(|pair| pair[0].starts_with("354 "))
        .map(|pair| pair[1].as_str())
        .collect()
}

/// Random mode, and a rule whose probability draws from the same seed: the second recipient
/// of each message refused at random, with a random delay.
const RANDOM: &str = r#"mode = "random"

[[rule]]
on = "rcpt"
match = "c@*"
probability = 0.4
delay = "0-0.05"
reply = "450 4.2.1 Mailbox busy"
"#;

fn random_server(args: &[&str]) -> Server {
    Server::start_with_args(args, RANDOM)
}

#[test]
fn the_same_seed_gives_every_connection_the_same_replies_however_they_interleave() {
    let forward: Vec<usize> = (0..CONNECTIONS).collect();
    let backward: Vec<usize> = forward.iter().rev().copied().collect();
    let first = run(&random_server(&["--seed", "42"]), &forward);
    let again = run(&random_server(&["--seed", "42"]), &backward);
    assert_eq!(first, again, "seed 42, two runs interleaved differently");
    for transcript in &first {
        assert_eq!(finals(transcript).len(), MESSAGES, "{transcript:#?}");
        assert!(
            transcript.iter().any(|r| r.starts_with("334 ")),
            "a CRAM-MD5 challenge: {transcript:#?}"
        );
    }
    // The rule's probability was drawn too: some second recipients refused, some not.
    let busy = first
        .iter()
        .flatten()
        .filter(|r| r.starts_with("450 4.2.1"))
        .count();
    let accepted = first
        .iter()
        .flatten()
        .filter(|r| *r == "250 2.1.5 OK")
        .count();
    assert!(
        busy > 0 && accepted > CONNECTIONS * MESSAGES,
        "{busy} refused, {accepted} accepted"
    );
    // The connections of one run draw apart from each other.
    assert_ne!(first[0], first[1], "two connections, the same draws");

    let other = run(&random_server(&["--seed", "43"]), &forward);
    assert_ne!(first, other, "seeds 42 and 43 gave the same replies");
}

#[test]
fn the_seed_option_is_the_seed_flag() {
    let order: Vec<usize> = (0..CONNECTIONS).collect();
    let flag = run(&random_server(&["--seed", "7"]), &order);
    let option = run(&Server::start(&format!("seed = 7\n{RANDOM}")), &order);
    assert_eq!(flag, option);
    // The flag overrides the option.
    let both = run(
        &Server::start_with_args(&["--seed", "7"], &format!("seed = 8\n{RANDOM}")),
        &order,
    );
    assert_eq!(flag, both);
}

#[test]
fn a_seed_the_server_picked_is_logged_and_replays_its_run() {
    let order: Vec<usize> = (0..CONNECTIONS).collect();
    let server = random_server(&[]);
    let first = run(&server, &order);
    let log = server.stderr_log();
    let seed = log
        .lines()
        .find_map(|line| line.split("replay a run with --seed ").nth(1))
        .unwrap_or_else(|| panic!("no seed in the log:\n{log}"))
        .trim()
        .to_owned();
    let replay = run(&random_server(&["--seed", &seed]), &order);
    assert_eq!(first, replay, "--seed {seed} from the log");
    // A server that picks its own seed picks another one the next time.
    let next = run(&random_server(&[]), &order);
    assert_ne!(first, next, "two starts without a seed drew the same");
}
