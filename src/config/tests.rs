//! The configuration's tests: both formats, every option's values and limits, the listener
//! syntax, the one-line errors, and the agreement between the option table, `RawOptions` and
//! the shipped `blackhole.toml`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::greylist_table::{
    MAX_GREYLIST_DELAY_SECS, MAX_GREYLIST_ENTRIES, MAX_GREYLIST_EXPIRE_SECS,
    MAX_GREYLIST_PASS_FOR_SECS, RawGreylist, greylist_keys,
};
use super::options::OPTIONS;
use super::rule_table::{
    MAX_RULE_CLIENTS, MAX_RULE_COUNT, MAX_RULE_NAME, MAX_RULES, MAX_THROTTLE, RawRule, rule_keys,
};
use super::toml_file::{RawOptions, is_option};
use super::values::{
    MAX_LISTENERS, MAX_MAX_CONNECTIONS, MAX_MAX_MESSAGE_SIZE, MAX_TIMEOUT_SECS, MAX_WORKERS,
};
use super::*;
use crate::smtp::policy::MAX_DELAY_SECS;
use crate::smtp::rules::{Disconnect, Glob, MAX_GLOB, MAX_RULE_DELAY_SECS, Probability, Stage};

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((a, port))
}

fn v6(s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(s.parse().unwrap()), port)
}

fn addr_of(entry: &str) -> SocketAddr {
    parse_listener(entry, false)
        .unwrap_or_else(|e| panic!("{entry}: {e}"))
        .addr
}

fn toml(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("test.toml"))
}

fn legacy(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("blackhole.conf"))
}

/// The error for `text` read as the file `origin`: one line, naming the file and `option`.
fn option_error_in(origin: &str, text: &str, option: &str) -> ConfigError {
    match parse(text, Path::new(origin)) {
        Ok(config) => panic!("{text:?} was accepted: {config:?}"),
        Err(err) => {
            assert_eq!(err.option.as_deref(), Some(option), "{text:?}: {err}");
            let shown = err.to_string();
            assert!(!shown.contains('\n'), "{shown}");
            let start = format!("{origin}: option `{option}`: ");
            assert!(shown.starts_with(&start), "{shown}");
            err
        }
    }
}

/// [`option_error_in`] a TOML file.
fn option_error(text: &str, option: &str) -> ConfigError {
    option_error_in("test.toml", text, option)
}

/// [`option_error_in`] a file in the original's format.
fn legacy_option_error(text: &str, option: &str) -> ConfigError {
    option_error_in("blackhole.conf", text, option)
}

fn range(min_secs: u32, max_secs: u32) -> DelayRange {
    DelayRange::new(min_secs, max_secs).unwrap()
}

#[test]
fn address_forms() {
    assert_eq!(addr_of(":25"), v4([0, 0, 0, 0], 25));
    assert_eq!(addr_of("0.0.0.0:25"), v4([0, 0, 0, 0], 25));
    assert_eq!(addr_of(":::25"), v6("::", 25));
    assert_eq!(addr_of("127.0.0.1:25"), v4([127, 0, 0, 1], 25));
    assert_eq!(addr_of("[::1]:25"), v6("::1", 25));
    assert_eq!(addr_of("[::]:2525"), v6("::", 2525));
    assert_eq!(addr_of("::1:25"), v6("::1", 25));
    assert_eq!(addr_of("fe80::1:2525"), v6("fe80::1", 2525));
    assert_eq!(addr_of("localhost:587"), v4([127, 0, 0, 1], 587));
    assert_eq!(addr_of("127.0.0.1:0"), v4([127, 0, 0, 1], 0));
    assert_eq!(addr_of(":65535"), v4([0, 0, 0, 0], 65535));
    assert_eq!(addr_of("  10.1.2.3:25  "), v4([10, 1, 2, 3], 25));
}

#[test]
fn bad_addresses() {
    for entry in [
        "",
        "   ",
        "25",
        "127.0.0.1",
        ":65536",
        ":-1",
        ":+25",
        ":",
        "127.0.0.1:",
        "[::1]25",
        "[::1]",
        "[127.0.0.1]:25",
        "example.com:25",
        "1.2.3:25",
        "256.0.0.1:25",
    ] {
        assert!(parse_listener(entry, false).is_err(), "{entry:?} accepted");
    }
}

#[test]
fn listener_keeps_text_and_tls() {
    let spec = parse_listener("  :465 mode=bounce ", true).unwrap();
    assert_eq!(spec.text, ":465 mode=bounce");
    assert!(spec.tls);
    assert!(spec.has_flags());
    let plain = parse_listener(":25", false).unwrap();
    assert!(!plain.tls);
    assert!(!plain.has_flags());
}

#[test]
fn flags() {
    let spec = parse_listener(":25 mode=bounce", false).unwrap();
    assert_eq!((spec.mode, spec.delay), (Some(Mode::Bounce), None));
    let spec = parse_listener(":25 delay=5", false).unwrap();
    assert_eq!((spec.mode, spec.delay), (None, Some(range(5, 5))));
    assert!(spec.has_flags());
    let spec = parse_listener(":25 delay=1-5 mode=RANDOM", false).unwrap();
    assert_eq!(
        (spec.mode, spec.delay),
        (Some(Mode::Random), Some(range(1, 5)))
    );
    let spec = parse_listener("[::1]:25   mode=accept\tdelay=0-60", false).unwrap();
    assert_eq!(
        (spec.mode, spec.delay),
        (Some(Mode::Accept), Some(range(0, 60)))
    );
    let spec = parse_listener(":25 delay=7-7", false).unwrap();
    assert_eq!(spec.delay, Some(range(7, 7)));
}

#[test]
fn the_lmtp_flag_is_a_word_of_its_own() {
    let spec = parse_listener("127.0.0.1:2424 lmtp", false).unwrap();
    assert!(spec.lmtp);
    assert!(!spec.has_flags(), "lmtp leaves the switch headers on");
    let spec = parse_listener(":2424 mode=bounce LMTP delay=1", false).unwrap();
    assert_eq!(
        (spec.lmtp, spec.mode, spec.delay),
        (true, Some(Mode::Bounce), Some(range(1, 1)))
    );
    assert!(!parse_listener(":25", false).unwrap().lmtp);
    let config = toml("listen = [\"127.0.0.1:2525\", \"127.0.0.1:2424 lmtp\"]").unwrap();
    let lmtp: Vec<bool> = config.listeners.iter().map(|l| l.lmtp).collect();
    assert_eq!(lmtp, [false, true]);
    let config = legacy("listen = 127.0.0.1:2424 lmtp, :2525").unwrap();
    assert!(config.listeners[0].lmtp && !config.listeners[1].lmtp);
}

#[test]
fn chunking_is_off_unless_asked() {
    assert!(!toml("").unwrap().chunking);
    assert!(toml("chunking = true").unwrap().chunking);
    assert!(legacy("chunking = true").unwrap().chunking);
    assert!(!toml("chunking = \"false\"").unwrap().chunking);
    let err = option_error("chunking = 1", "chunking");
    assert!(err.message.contains("true or false"), "{err}");
}

#[test]
fn bad_flags() {
    for entry in [
        ":25 mode=bogus",
        ":25 mode=",
        ":25 delay=61",
        ":25 delay=5-61",
        ":25 delay=10-5",
        ":25 delay=a",
        ":25 delay=-5",
        ":25 delay=",
        ":25 delay=1-2-3",
        ":25 delay=99999999999",
        ":25 speed=1",
        ":25 mode",
        ":25 mode=bounce mode=accept",
        ":25 delay=1 delay=2",
        ":25, :26",
        ":25 lmtp lmtp",
        ":25 lmtp=yes",
        ":25 smtp",
    ] {
        assert!(parse_listener(entry, false).is_err(), "{entry:?} accepted");
    }
    let err = parse_listener(":25 speed=1", false).unwrap_err();
    assert!(err.contains("speed") && err.contains("mode="), "{err}");
    let err = parse_listener(":25 delay=10-5", false).unwrap_err();
    assert!(err.contains("5-10"), "{err}");
}

#[test]
fn mode_from_str() {
    assert_eq!("accept".parse::<Mode>(), Ok(Mode::Accept));
    assert_eq!("Bounce".parse::<Mode>(), Ok(Mode::Bounce));
    assert_eq!("RANDOM".parse::<Mode>(), Ok(Mode::Random));
    assert!("".parse::<Mode>().is_err());
    assert!("accepted".parse::<Mode>().is_err());
    assert_eq!(Mode::Bounce.to_string(), "bounce");
}

#[test]
fn defaults() {
    let config = Config::default();
    assert_eq!(config.source, None);
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].addr, v4([0, 0, 0, 0], 25));
    assert!(!config.listeners[0].tls && !config.listeners[0].has_flags());
    assert_eq!(config.timeout_secs, 60);
    assert_eq!(config.delay, None);
    assert_eq!(config.mode, Mode::Accept);
    assert_eq!(config.max_message_size, 512_000);
    assert!(config.dynamic_switch);
    assert_eq!(config.workers, 1);
    assert_eq!(config.greylist, None);
    assert_eq!(
        (&config.tls_cert, &config.tls_key, &config.tls_dhparams),
        (&None, &None, &None)
    );
    assert_eq!(
        (
            &config.user,
            &config.group,
            &config.pidfile,
            &config.mailname
        ),
        (&None, &None, &None, &None)
    );

    // An empty file (or comments only) means every default.
    for text in ["", "# nothing here\n\n"] {
        let mut parsed = toml(text).unwrap();
        assert_eq!(parsed.source.as_deref(), Some(Path::new("test.toml")));
        parsed.source = None;
        assert_eq!(parsed, config);
    }
}

/// Every option set to something other than its default.
const FULL_TOML: &str = r#"
listen = [":25", ":::25 mode=bounce", "127.0.0.1:587 delay=1-5"]
tls_listen = ["[::1]:465 mode=random delay=3"]
tls_cert = "/etc/ssl/blackhole.crt"
tls_key = "/etc/ssl/blackhole.key"
tls_dhparams = "/etc/ssl/dhparams.pem"
user = "nobody"
group = "nogroup"
pidfile = "/run/blackhole.pid"
timeout = 180
delay = "2-4"
mode = "Random"
max_message_size = 1073741824
dynamic_switch = false
workers = 256
max_connections = 5000
mailname = "mx.example.com"
metrics_listen = "127.0.0.1:9025"
event_log = "/var/log/blackhole/events.json"
"#;

#[test]
fn full_toml_file() {
    let config = toml(FULL_TOML).unwrap();
    let addrs: Vec<_> = config.listeners.iter().map(|l| (l.addr, l.tls)).collect();
    assert_eq!(
        addrs,
        [
            (v4([0, 0, 0, 0], 25), false),
            (v6("::", 25), false),
            (v4([127, 0, 0, 1], 587), false),
            (v6("::1", 465), true),
        ]
    );
    assert_eq!(config.listeners[1].mode, Some(Mode::Bounce));
    assert_eq!(config.listeners[2].delay, Some(range(1, 5)));
    assert_eq!(config.listeners[3].mode, Some(Mode::Random));
    assert_eq!(config.listeners[3].delay, Some(range(3, 3)));
    assert_eq!(
        config.tls_cert.as_deref(),
        Some(Path::new("/etc/ssl/blackhole.crt"))
    );
    assert_eq!(
        config.tls_key.as_deref(),
        Some(Path::new("/etc/ssl/blackhole.key"))
    );
    assert_eq!(
        config.tls_dhparams.as_deref(),
        Some(Path::new("/etc/ssl/dhparams.pem"))
    );
    assert_eq!(config.user.as_deref(), Some("nobody"));
    assert_eq!(config.group.as_deref(), Some("nogroup"));
    assert_eq!(
        config.pidfile.as_deref(),
        Some(Path::new("/run/blackhole.pid"))
    );
    assert_eq!(config.timeout_secs, 180);
    assert_eq!(config.delay, Some(range(2, 4)));
    assert_eq!(config.mode, Mode::Random);
    assert_eq!(config.max_message_size, 1_073_741_824);
    assert!(!config.dynamic_switch);
    assert_eq!(config.workers, 256);
    assert_eq!(config.max_connections, Some(5000));
    assert_eq!(config.mailname.as_deref(), Some("mx.example.com"));
    assert_eq!(config.mail_name(), "mx.example.com");
    assert_eq!(config.metrics_listen, Some(v4([127, 0, 0, 1], 9025)));
    assert_eq!(
        config.event_log.as_deref(),
        Some(Path::new("/var/log/blackhole/events.json"))
    );
}

#[test]
fn delay_forms() {
    assert_eq!(toml("delay = 0").unwrap().delay, Some(range(0, 0)));
    assert_eq!(toml("delay = 60").unwrap().delay, Some(range(60, 60)));
    assert_eq!(toml("delay = \"7\"").unwrap().delay, Some(range(7, 7)));
    assert_eq!(toml("delay = \"5-10\"").unwrap().delay, Some(range(5, 10)));
    assert_eq!(toml("delay = \"\"").unwrap().delay, None);
}

#[test]
fn bad_option_values() {
    let cases = [
        ("timeout = 0", "timeout"),
        ("timeout = 181", "timeout"),
        ("timeout = -1", "timeout"),
        ("timeout = \"soon\"", "timeout"),
        ("timeout = 1.5", "timeout"),
        ("timeout = true", "timeout"),
        ("delay = 61", "delay"),
        ("delay = -1", "delay"),
        ("delay = \"10-5\"", "delay"),
        ("delay = \"5-61\"", "delay"),
        ("delay = \"soon\"", "delay"),
        ("delay = [1, 2]", "delay"),
        ("mode = \"bogus\"", "mode"),
        ("mode = 1", "mode"),
        ("max_message_size = 0", "max_message_size"),
        ("max_message_size = 1073741825", "max_message_size"),
        ("max_message_size = -5", "max_message_size"),
        ("max_message_size = \"big\"", "max_message_size"),
        ("dynamic_switch = \"yes\"", "dynamic_switch"),
        ("dynamic_switch = 1", "dynamic_switch"),
        ("workers = 0", "workers"),
        ("workers = 257", "workers"),
        ("workers = \"many\"", "workers"),
        ("mailname = \"mail example\"", "mailname"),
        ("mailname = \"a\\r\\nb\"", "mailname"),
        ("mailname = 5", "mailname"),
        ("user = 1000", "user"),
        ("group = false", "group"),
        ("pidfile = 3", "pidfile"),
        ("tls_cert = 3", "tls_cert"),
        ("tls_key = []", "tls_key"),
        ("tls_dhparams = 1", "tls_dhparams"),
        ("listen = \":99999\"", "listen"),
        ("listen = [\":25 mode=x\"]", "listen"),
        ("listen = [25]", "listen"),
        ("listen = 25", "listen"),
        ("listen = [\"\"]", "listen"),
        ("tls_listen = [\"foo\"]", "tls_listen"),
        ("listen = []\ntls_listen = []", "listen"),
        ("listen = []", "listen"),
    ];
    for (text, option) in cases {
        option_error(text, option);
    }
    let err = option_error("timeout = 500", "timeout");
    assert!(err.message.contains("1 to 180"), "{err}");
    let err = option_error("workers = 0", "workers");
    assert!(err.message.contains("1 to 256"), "{err}");
    let err = option_error("mode = \"bogus\"", "mode");
    assert!(err.message.contains("accept, bounce or random"), "{err}");
    let err = option_error("dynamic_switch = \"yes\"", "dynamic_switch");
    assert!(err.message.contains("true or false"), "{err}");
    let err = option_error("delay = 61", "delay");
    assert!(err.message.contains("60"), "{err}");
    let err = option_error("listen = []", "listen");
    assert!(err.message.contains("nothing to listen on"), "{err}");
}

#[test]
fn tls_listen_needs_cert_and_key() {
    let err = option_error("tls_listen = [\":465\"]\ntls_key = \"k.pem\"", "tls_cert");
    assert!(err.message.contains("tls_listen"), "{err}");
    option_error("tls_listen = [\":465\"]\ntls_cert = \"c.pem\"", "tls_key");
    option_error("tls_listen = [\":465\"]", "tls_cert");
    // Half a certificate is an error even without tls_listen (STARTTLS).
    option_error("tls_cert = \"c.pem\"", "tls_key");
    option_error("tls_key = \"k.pem\"", "tls_cert");
    // Both without tls_listen: STARTTLS on the plain listeners.
    let config = toml("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"").unwrap();
    assert!(config.listeners.iter().all(|l| !l.tls));
    // tls_listen alone, with listen emptied, is enough to listen on.
    let config =
        toml("listen = []\ntls_listen = [\":465\"]\ntls_cert = \"c\"\ntls_key = \"k\"").unwrap();
    assert_eq!(config.listeners.len(), 1);
    assert!(config.listeners[0].tls);
    // Leaving listen out keeps its default next to tls_listen.
    let config = toml("tls_listen = [\":465\"]\ntls_cert = \"c\"\ntls_key = \"k\"").unwrap();
    let texts: Vec<_> = config.listeners.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, [":25", ":465"]);
}

#[test]
fn unknown_option_names_it() {
    let err = option_error("listen = [\":25\"]\nlisten_on = \":25\"", "listen_on");
    assert!(err.message.contains("mailname"), "{err}");
    assert!(err.message.contains("max_message_size"), "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with("test.toml: option `listen_on`: unknown option"),
        "{shown}"
    );
    option_error("[server]\nlisten = [\":25\"]", "server");

    // Not TOML (an unquoted string), so read as the original's format.
    let err = legacy_option_error("timeout = 30\nspeed = 9\nmode = bounce\n", "speed");
    assert!(err.message.contains("line 2"), "{err}");
    assert!(err.message.contains("dynamic_switch"), "{err}");
}

#[test]
fn duplicate_listeners() {
    let err = option_error("listen = [\":25\", \"0.0.0.0:25\"]", "listen");
    assert!(
        err.message.contains(":25") && err.message.contains("0.0.0.0:25"),
        "{err}"
    );
    option_error("listen = [\":::25\", \"[::]:25\"]", "listen");
    option_error(
        "listen = [\":25\"]\ntls_listen = [\":25\"]\ntls_cert = \"c\"\ntls_key = \"k\"",
        "tls_listen",
    );
    // IPv4 and IPv6 wildcards are different sockets; so are two ports.
    let config = toml("listen = [\":25\", \":::25\", \":587\", \"127.0.0.1:25\"]").unwrap();
    assert_eq!(config.listeners.len(), 4);
    // Port 0 gets a fresh port each time: tests bind several.
    let config = toml("listen = [\"127.0.0.1:0\", \"127.0.0.1:0 mode=bounce\"]").unwrap();
    assert_eq!(config.listeners.len(), 2);
}

#[test]
fn legacy_file_equivalent_to_toml() {
    // FULL_TOML in the original's format.
    let old = "\
# The original's configuration file
listen = :25, :::25 mode=bounce, 127.0.0.1:587 delay=1-5   # IPv4 and IPv6
tls_listen=[::1]:465 mode=random delay=3
tls_cert = /etc/ssl/blackhole.crt
tls_key=/etc/ssl/blackhole.key
tls_dhparams = \"/etc/ssl/dhparams.pem\"

user = nobody
group = 'nogroup'
pidfile = /run/blackhole.pid
timeout = 180
delay = 2-4
mode = RANDOM
max_message_size = 1073741824
dynamic_switch = False
workers = 256
max_connections = 5000
mailname = mx.example.com
metrics_listen = 127.0.0.1:9025
event_log = /var/log/blackhole/events.json
";
    let mut from_old = legacy(old).unwrap();
    let mut from_new = toml(FULL_TOML).unwrap();
    assert_eq!(
        from_old.source.as_deref(),
        Some(Path::new("blackhole.conf"))
    );
    from_old.source = None;
    from_new.source = None;
    assert_eq!(from_old, from_new);
    assert_eq!(from_old.listeners.len(), 4);
    assert_eq!(from_old.mode, Mode::Random);
    assert!(!from_old.dynamic_switch);

    // The same file named .toml is read the same way.
    let mut as_toml_name = toml(old).unwrap();
    as_toml_name.source = None;
    assert_eq!(as_toml_name, from_new);
}

#[test]
fn legacy_empty_values_are_unset() {
    let config = legacy(
        "listen =\ntls_listen=\ntls_cert=\ntls_key=\ntls_dhparams =\nuser=\ngroup=\n\
         pidfile=\ntimeout=\ndelay=\nmode=\nmax_message_size=\ndynamic_switch=\n\
         workers=\nmailname=\n",
    )
    .unwrap();
    let expected = Config {
        source: config.source.clone(),
        ..Config::default()
    };
    assert_eq!(config, expected);

    // A later empty value unsets an earlier one; the last setting wins.
    let config = legacy("tls_key = k.pem\ntls_key =\nmode = bounce\nmode = random\n").unwrap();
    assert_eq!(config.tls_key, None);
    assert_eq!(config.mode, Mode::Random);
}

#[test]
fn blank_strings_are_unset() {
    // Either format: an empty value means the option is not set.
    for option in OPTIONS {
        for blank in ["\"\"", "\"   \"", "\" \\t \""] {
            let text = format!("{} = {blank}", option.name);
            let mut config = toml(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
            config.source = None;
            assert_eq!(config, Config::default(), "{text:?}");
        }
    }
}

#[test]
fn string_values_are_trimmed() {
    let config = toml(
        "timeout = \" 30 \"\nworkers = \"2 \"\nmax_message_size = \" 1000\"\n\
         dynamic_switch = \" false \"\nmode = \" bounce \"\ndelay = \" 1-2 \"\n\
         mailname = \" mx.example.com \"\nuser = \" nobody \"\npidfile = \" /run/b.pid \"\n\
         listen = \" :25 , :26 mode=random \"",
    )
    .unwrap();
    assert_eq!(
        (config.timeout_secs, config.workers, config.max_message_size),
        (30, 2, 1000)
    );
    assert!(!config.dynamic_switch);
    assert_eq!(config.mode, Mode::Bounce);
    assert_eq!(config.delay, Some(range(1, 2)));
    assert_eq!(config.mailname.as_deref(), Some("mx.example.com"));
    assert_eq!(config.user.as_deref(), Some("nobody"));
    assert_eq!(config.pidfile.as_deref(), Some(Path::new("/run/b.pid")));
    let texts: Vec<_> = config.listeners.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, [":25", ":26 mode=random"]);
}

#[test]
fn legacy_values_are_checked() {
    for (text, option) in [
        ("timeout = 181", "timeout"),
        ("delay = 61", "delay"),
        ("mode = sideways", "mode"),
        ("dynamic_switch = yes", "dynamic_switch"),
        ("workers = 0", "workers"),
        ("max_message_size = lots", "max_message_size"),
        ("listen = :25, 0.0.0.0:25", "listen"),
        ("listen = :25 mode=nope", "listen"),
        ("listen = :25,", "listen"),
        ("tls_listen = :465", "tls_cert"),
    ] {
        legacy_option_error(text, option);
    }
}

#[test]
fn legacy_line_without_equals() {
    let err = legacy("timeout = 30\n\n  # fine\nlisten :25\n").unwrap_err();
    assert_eq!(err.option, None);
    assert!(err.message.contains("line 4"), "{err}");
    assert!(err.message.contains("listen :25"), "{err}");
    assert_eq!(err.file, "blackhole.conf");
}

#[test]
fn neither_format() {
    // A .toml file gets the TOML error, with its position.
    let text = "listen = [\":25\"\nmode = \"accept\"\n";
    let err = toml(text).unwrap_err();
    assert_eq!(err.option, None);
    assert!(err.message.contains("not valid TOML at line"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    // Anything else gets the legacy error.
    let err = legacy("this is not a config\n").unwrap_err();
    assert!(err.message.contains("line 1"), "{err}");
    assert!(!err.message.contains("TOML at"), "{err}");
}

#[test]
fn display_is_one_line() {
    let err = ConfigError {
        file: "/etc/blackhole.toml".to_owned(),
        rule: None,
        option: Some("timeout".to_owned()),
        message: "bad".to_owned(),
    };
    assert_eq!(
        err.to_string(),
        "/etc/blackhole.toml: option `timeout`: bad"
    );
    let err = ConfigError {
        option: None,
        ..err
    };
    assert_eq!(err.to_string(), "/etc/blackhole.toml: bad");
    let err = ConfigError {
        message: "`a\r\nb` is bad".to_owned(),
        ..err
    };
    assert_eq!(err.to_string(), "/etc/blackhole.toml: `a\\r\\nb` is bad");
}

fn scratch_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blackhole-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn load_reads_the_named_file() {
    let path = scratch_file("load.toml", "listen = [\"127.0.0.1:0\"]\nworkers = 2\n");
    let config = load(Some(&path)).unwrap();
    assert_eq!(config.source.as_deref(), Some(path.as_path()));
    assert_eq!(config.workers, 2);

    let missing = path.with_file_name("missing.toml");
    let err = load(Some(&missing)).unwrap_err();
    assert_eq!(err.file, missing.display().to_string());
    assert!(err.message.contains("cannot read"), "{err}");
}

#[test]
fn mail_name_sources() {
    let blank = scratch_file("mailname-blank", "\n   \n");
    let named = scratch_file("mailname", "\n  mx.example.org \nother\n");
    let host = scratch_file("hostname", "box\n");
    let spaced = scratch_file("mailname-spaced", "two words\n");
    let missing = blank.with_file_name("absent");
    assert_eq!(mail_name_from(&[&named, &host]), "mx.example.org");
    assert_eq!(mail_name_from(&[&missing, &blank, &host]), "box");
    assert_eq!(mail_name_from(&[&spaced, &host]), "box");
    assert_eq!(mail_name_from(&[&missing]), "localhost");
    // Without the option it is whatever the host says, never empty.
    let name = Config::default().mail_name();
    assert!(is_host_name_like(&name), "{name:?}");
}

/// The field names serde knows `T` by: the list its derived
/// `Deserialize` hands to `deserialize_struct`.
fn serde_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    use std::cell::Cell;

    struct FieldsOf<'a>(&'a Cell<&'static [&'static str]>);

    impl<'de> serde::Deserializer<'de> for FieldsOf<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let fields = Cell::new(&[][..]);
    let _ = T::deserialize(FieldsOf(&fields));
    fields.get()
}

#[test]
fn raw_options_are_the_table() {
    let names: Vec<&str> = OPTIONS.iter().map(|option| option.name).collect();
    assert_eq!(serde_fields::<RawOptions>(), names.as_slice());
    // A rule's keys: `name`, read first, then the rest.
    let keys: Vec<&str> = rule_keys().iter().map(|key| key.name).collect();
    assert_eq!(keys[0], "name");
    assert_eq!(serde_fields::<RawRule>(), &keys[1..]);
    let keys: Vec<&str> = greylist_keys().iter().map(|key| key.name).collect();
    assert_eq!(serde_fields::<RawGreylist>(), keys.as_slice());
}

/// `tls_cert` and `tls_key`, which `tls_listen` needs, except `option`.
fn tls_companions(option: &str) -> String {
    [("tls_cert", "\"c.pem\""), ("tls_key", "\"k.pem\"")]
        .iter()
        .filter(|(name, _)| *name != option)
        .map(|(name, value)| format!("{name} = {value}\n"))
        .collect()
}

#[test]
fn every_option_is_accepted() {
    for option in OPTIONS {
        let base = tls_companions(option.name);
        let without = toml(&tls_companions("")).unwrap();
        for example in option.examples {
            let text = format!("{base}{}\n", option.example_toml(example));
            let with = toml(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
            assert_ne!(with, without, "{text:?} changed nothing");
        }
        // The original's format knows every option too, empty meaning unset, but has no
        // tables.
        let text = format!("{} =\n", option.name);
        if option.is_table() {
            let err = legacy_option_error(&text, option.name);
            assert!(err.message.contains("only in TOML"), "{err}");
        } else {
            assert!(legacy(&text).is_ok(), "{text:?}");
        }
    }
    // Nothing outside the table.
    for key in ["listen_on", "Listen", "server", "tls", "max_connection"] {
        option_error(&format!("{key} = 1"), key);
        legacy_option_error(&format!("{key} = 1"), key);
    }
}

#[test]
fn documented_defaults_are_the_defaults() {
    let mut spelled = 0;
    for option in OPTIONS {
        // A default the file could spell must mean what leaving the
        // option out means; the others are words, not TOML.
        let text = format!("{} = {}", option.name, option.default);
        if text.parse::<toml::Table>().is_ok() {
            let mut config = toml(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
            config.source = None;
            assert_eq!(config, Config::default(), "{text:?}");
            spelled += 1;
        }
    }
    assert_eq!(
        spelled, 9,
        "listen, tls_listen, timeout, mode, size, switch, chunking, workers, proxy_trusted"
    );
}

#[test]
fn documented_limits_are_the_limits() {
    let doc = |name: &str| {
        OPTIONS
            .iter()
            .find(|option| option.name == name)
            .map(|option| option.doc)
            .unwrap()
    };
    let limits = [
        ("timeout", 1, u64::from(MAX_TIMEOUT_SECS)),
        ("delay", 0, u64::from(MAX_DELAY_SECS)),
        ("max_message_size", 1, MAX_MAX_MESSAGE_SIZE),
        ("max_connections", 1, u64::from(MAX_MAX_CONNECTIONS)),
        ("workers", 1, u64::from(MAX_WORKERS)),
    ];
    for (name, min, max) in limits {
        let range = format!("{min} to {max}");
        assert!(doc(name).contains(&range), "{name}: doc should say {range}");
        toml(&format!("{name} = {min}")).unwrap();
        toml(&format!("{name} = {max}")).unwrap();
        option_error(&format!("{name} = {}", max + 1), name);
        if min > 0 {
            option_error(&format!("{name} = {}", min - 1), name);
        }
    }
    assert!(doc("listen").contains(&format!("0 to {MAX_DELAY_SECS}")));
    assert!(doc("mode").contains("bounce") && doc("mode").contains("random"));
}

const SHIPPED: &str = include_str!("../../blackhole.toml");

/// The option a line of the shipped file sets, or would set once
/// uncommented (`name = ...` or `# name = ...`), and whether it is commented.
fn shipped_setting(line: &str) -> Option<(&str, bool)> {
    let (line, commented) = match line.strip_prefix("# ") {
        Some(rest) => (rest, true),
        None => (line, false),
    };
    let (name, _) = line.split_once(" = ")?;
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    plain.then_some((name, commented))
}

/// One setting of the shipped file: a `name = ...` line, or a `[name]` or `[[name]]` header
/// and the key lines under it; either maybe commented out.
#[derive(Debug)]
struct Shipped {
    name: &'static str,
    commented: bool,
    /// Its lines, by index.
    lines: std::ops::Range<usize>,
    /// A table's keys, in order.
    keys: Vec<&'static str>,
}

fn shipped_settings() -> Vec<Shipped> {
    let lines: Vec<&'static str> = SHIPPED.lines().collect();
    let mut settings = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let (line, commented) = match lines[at].strip_prefix("# ") {
            Some(rest) => (rest, true),
            None => (lines[at], false),
        };
        let table = line
            .strip_prefix("[[")
            .and_then(|l| l.strip_suffix("]]"))
            .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')));
        let mut end = at + 1;
        let (name, keys) = if let Some(name) = table {
            let mut keys = Vec::new();
            while let Some((key, _)) = lines
                .get(end)
                .and_then(|line| shipped_setting(line))
                .filter(|(_, c)| *c == commented)
            {
                keys.push(key);
                end += 1;
            }
            (name, keys)
        } else if let Some((name, _)) = shipped_setting(lines[at]) {
            (name, Vec::new())
        } else {
            at += 1;
            continue;
        };
        settings.push(Shipped {
            name,
            commented,
            lines: at..end,
            keys,
        });
        at = end;
    }
    settings
}

#[test]
fn shipped_file_shows_every_option_in_order() {
    let settings = shipped_settings();
    let mut first: Vec<&str> = Vec::new();
    for setting in &settings {
        assert!(
            is_option(setting.name),
            "blackhole.toml sets unknown option {}",
            setting.name
        );
        let option = OPTIONS.iter().find(|o| o.name == setting.name).unwrap();
        assert_eq!(
            option.header().is_some(),
            setting.lines.len() > 1,
            "{} is a table in the file or in the documentation, not both",
            setting.name
        );
        for key in &setting.keys {
            assert!(
                option.keys().iter().any(|k| k.name == *key),
                "blackhole.toml: {} has unknown key {key}",
                setting.name
            );
        }
        if let Some(header) = option.header() {
            let line = SHIPPED.lines().nth(setting.lines.start).unwrap_or("");
            assert!(line.ends_with(&header), "{line:?} should be {header}");
        }
        if !first.contains(&setting.name) {
            first.push(setting.name);
        }
    }
    let table: Vec<&str> = OPTIONS.iter().map(|option| option.name).collect();
    assert_eq!(
        first, table,
        "blackhole.toml should show every option, as `name = `, `# name = `, `# [name]` or \
         `# [[name]]`, in the table's order"
    );
}

#[test]
fn shipped_suggestions_parse() {
    // Uncommenting the suggestions (one per option at a time, the first
    // for the others) still gives a valid file.
    let lines: Vec<&str> = SHIPPED.lines().collect();
    let suggestions: Vec<Shipped> = shipped_settings()
        .into_iter()
        .filter(|setting| setting.commented)
        .collect();
    assert!(suggestions.len() >= 9, "{suggestions:?}");
    for chosen in &suggestions {
        let mut taken: Vec<&str> = Vec::new();
        let uncommented: Vec<&Shipped> = suggestions
            .iter()
            .filter(|s| {
                if s.name == chosen.name {
                    std::ptr::eq(*s, chosen)
                } else if taken.contains(&s.name) {
                    false
                } else {
                    taken.push(s.name);
                    true
                }
            })
            .collect();
        let text: String = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let uncomment = uncommented.iter().any(|s| s.lines.contains(&i));
                let line = if uncomment { &line[2..] } else { line };
                format!("{line}\n")
            })
            .collect();
        let at = chosen.lines.start + 1;
        let config = toml(&text).unwrap_or_else(|err| panic!("line {at}: {err}"));
        assert!(config.tls_cert.is_some() && config.pidfile.is_some());
        let rules = uncommented.iter().filter(|s| s.name == "rule").count();
        assert_eq!(config.rules.len(), rules, "line {at}");
        // The shipped [greylist] spells out the defaults.
        let greylist = uncommented.iter().any(|s| s.name == "greylist");
        let expected = greylist.then(GreylistSettings::default);
        assert_eq!(config.greylist, expected, "line {at}");
    }
}

#[test]
fn shipped_file_parses() {
    let config = parse(SHIPPED, Path::new("blackhole.toml")).unwrap();
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].addr, v4([127, 0, 0, 1], 2525));
    assert!(!config.listeners[0].has_flags());
    let expected = Config {
        source: config.source.clone(),
        listeners: config.listeners.clone(),
        ..Config::default()
    };
    assert_eq!(config, expected);
}

#[test]
fn seed_values() {
    assert_eq!(toml("").unwrap().seed, None);
    assert_eq!(toml("seed = 0").unwrap().seed, Some(0));
    assert_eq!(toml("seed = 42").unwrap().seed, Some(42));
    assert_eq!(toml("seed = \"42\"").unwrap().seed, Some(42));
    assert_eq!(
        toml("seed = 9223372036854775807").unwrap().seed,
        Some(i64::MAX as u64)
    );
    assert_eq!(legacy("seed = 7").unwrap().seed, Some(7));
    for bad in [
        "seed = -1",
        "seed = \"9223372036854775808\"",
        "seed = \"99999999999999999999999\"",
        "seed = \"0x10\"",
        "seed = 1.5",
        "seed = true",
    ] {
        let error = option_error(bad, "seed");
        assert!(
            error.to_string().contains("0 to 9223372036854775807")
                || error.to_string().contains("expected a whole number"),
            "{bad}: {error}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// [[rule]] tables

/// The error for a TOML file `text`: one line, naming the file, `rule` (as `rule N` or
/// `rule N ("NAME")`) and `option` (when there is one).
fn rule_error(text: &str, rule: &str, option: Option<&str>) -> ConfigError {
    let err = toml(text).expect_err(text);
    assert_eq!(err.rule.as_deref(), Some(rule), "{text:?}: {err}");
    assert_eq!(err.option.as_deref(), option, "{text:?}: {err}");
    let shown = err.to_string();
    assert!(!shown.contains('\n'), "{shown}");
    let start = match option {
        Some(option) => format!("test.toml: {rule}, option `{option}`: "),
        None => format!("test.toml: {rule}: "),
    };
    assert!(shown.starts_with(&start), "{shown}");
    err
}

/// `text` with a first rule that is fine, so that the rule at fault is number 2.
fn second_rule(keys: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:2525\"]\n\
         [[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 No\"\n\
         [[rule]]\nname = \"slow rcpt\"\n{keys}\n"
    )
}

#[test]
fn a_rule_with_every_key() {
    let config = toml(
        r#"
listen = [":25", "127.0.0.1:2525 mode=bounce"]
[[rule]]
name = " cut off "
on = "Message"
match = "*@Example.COM"
client = ["10.0.0.0/8", " ::1 "]
listener = "127.0.0.1:2525"
probability = 0.5
first = 3
every = 2
rate = "10/60"
delay = "0.5-2"
disconnect = "421"
after_bytes = 1000
throttle = 512
"#,
    )
    .unwrap();
    let mut expected = Rule::new("cut off".into(), Stage::Message);
    expected.subject = Some(Glob::new("*@example.com").unwrap());
    expected.clients = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
    expected.listener = Some(1);
    expected.probability = Some(Probability::new(0.5).unwrap());
    expected.first = Some(3);
    expected.every = Some(2);
    expected.rate = Some("10/60".parse().unwrap());
    expected.delay = Some("0.5-2".parse().unwrap());
    expected.disconnect = Some(Disconnect::Reply421);
    expected.after_bytes = Some(1000);
    expected.throttle = Some(512);
    assert_eq!(config.rules, [expected]);

    // The other forms: one client as a string, a reply, an integer probability and delay,
    // a float delay.
    let config = toml(
        "[[rule]]\non = \"rcpt\"\nclient = \"192.0.2.7\"\nprobability = 1\n\
         reply = \"450 4.2.0 Try later\"\ndelay = 2\n\
         [[rule]]\non = \"any\"\ndelay = 0.25\n",
    )
    .unwrap();
    let mut first = Rule::new("rule 1".into(), Stage::Rcpt);
    first.clients = vec!["192.0.2.7".parse().unwrap()];
    first.probability = Some(Probability::new(1.0).unwrap());
    first.reply = Some("450 4.2.0 Try later".parse().unwrap());
    first.delay = Some("2".parse().unwrap());
    let mut second = Rule::new("rule 2".into(), Stage::Any);
    second.delay = Some("0.25".parse().unwrap());
    assert_eq!(config.rules, [first, second]);
}

#[test]
fn rules_keep_file_order_and_default_names() {
    let config = toml(
        "[[rule]]\non = \"mail\"\nthrottle = 100\n\
         [[rule]]\nname = \"two\"\non = \"helo\"\ndisconnect = \"close\"\n\
         [[rule]]\non = \"quit\"\ndelay = 1\n",
    )
    .unwrap();
    let names: Vec<(&str, Stage)> = config
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.on))
        .collect();
    assert_eq!(
        names,
        [
            ("rule 1", Stage::Mail),
            ("two", Stage::Helo),
            ("rule 3", Stage::Quit)
        ]
    );
    // Inline tables are the same tables.
    let inline = toml("rule = [{ on = \"mail\", throttle = 100 }]").unwrap();
    assert_eq!(inline.rules[..], config.rules[..1]);
    // No rule, or an empty list of them: no rules.
    assert!(toml("").unwrap().rules.is_empty());
    assert!(toml("rule = []").unwrap().rules.is_empty());
}

#[test]
fn a_rule_finds_its_listener_by_address() {
    let listeners = "listen = [\":25\", \"127.0.0.1:2525 mode=bounce\", \"[::1]:2525\"]\n\
                     tls_listen = [\":465 delay=1\"]\ntls_cert = \"c\"\ntls_key = \"k\"\n";
    let index = |address: &str| {
        let text =
            format!("{listeners}[[rule]]\non = \"any\"\ndelay = 1\nlistener = \"{address}\"");
        toml(&text)
            .unwrap_or_else(|err| panic!("{text}: {err}"))
            .rules[0]
            .listener
    };
    assert_eq!(index("0.0.0.0:25"), Some(0));
    assert_eq!(index(":25"), Some(0));
    assert_eq!(index("127.0.0.1:2525"), Some(1));
    assert_eq!(index("localhost:2525"), Some(1));
    assert_eq!(index("::1:2525"), Some(2));
    assert_eq!(index("[::1]:2525"), Some(2));
    assert_eq!(index(":465"), Some(3));

    let no_listener = |address: &str| {
        let text =
            format!("{listeners}[[rule]]\non = \"any\"\ndelay = 1\nlistener = \"{address}\"");
        rule_error(&text, "rule 1", Some("listener"))
    };
    let err = no_listener("127.0.0.1:2526");
    for entry in [
        ":25",
        "127.0.0.1:2525 mode=bounce",
        "[::1]:2525",
        ":465 delay=1",
    ] {
        assert!(err.message.contains(&format!("`{entry}`")), "{err}");
    }
    no_listener("127.0.0.2:2525");
    let err = no_listener("127.0.0.1:2525 mode=bounce");
    assert!(err.message.contains("without its flags"), "{err}");
    no_listener("mail.example.com:25");
    // Several listeners on port 0 cannot be told apart.
    let text = "listen = [\"127.0.0.1:0\", \"127.0.0.1:0 mode=bounce\"]\n\
                [[rule]]\non = \"any\"\ndelay = 1\nlistener = \"127.0.0.1:0\"";
    let err = rule_error(text, "rule 1", Some("listener"));
    assert!(err.message.contains("2 listeners"), "{err}");
}

#[test]
fn a_bad_rule_is_named_with_its_option() {
    let named = "rule 2 (\"slow rcpt\")";
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("on = \"rctp\"", Some("on"), "connect, helo, mail, rcpt"),
        ("on = 3\ndelay = 1", Some("on"), "expected a string"),
        ("delay = 1", Some("on"), "missing"),
        ("on = \"rcpt\"", None, "no effect"),
        (
            "on = \"rcpt\"\nmatch = \"\"\ndelay = 1",
            Some("match"),
            "empty pattern",
        ),
        (
            "on = \"rcpt\"\nmatch = \"a\\tb\"\ndelay = 1",
            Some("match"),
            "control",
        ),
        (
            "on = \"rcpt\"\nmatch = [\"a\"]\ndelay = 1",
            Some("match"),
            "expected a string",
        ),
        (
            "on = \"rcpt\"\nclient = \"10.0.0.0/33\"\ndelay = 1",
            Some("client"),
            "10.0.0.0/33",
        ),
        (
            "on = \"rcpt\"\nclient = [\"::1\", 7]\ndelay = 1",
            Some("client"),
            "strings",
        ),
        (
            "on = \"rcpt\"\nclient = []\ndelay = 1",
            Some("client"),
            "empty list",
        ),
        (
            "on = \"rcpt\"\nclient = 10\ndelay = 1",
            Some("client"),
            "address block",
        ),
        (
            "on = \"rcpt\"\nlistener = 2525\ndelay = 1",
            Some("listener"),
            "expected a string",
        ),
        (
            "on = \"rcpt\"\nprobability = 1.5\ndelay = 1",
            Some("probability"),
            "0 to 1",
        ),
        (
            "on = \"rcpt\"\nprobability = -0.1\ndelay = 1",
            Some("probability"),
            "0 to 1",
        ),
        (
            "on = \"rcpt\"\nprobability = 2\ndelay = 1",
            Some("probability"),
            "0 to 1",
        ),
        (
            "on = \"rcpt\"\nprobability = nan\ndelay = 1",
            Some("probability"),
            "0 to 1",
        ),
        (
            "on = \"rcpt\"\nprobability = \"0.5\"\ndelay = 1",
            Some("probability"),
            "expected",
        ),
        (
            "on = \"rcpt\"\nfirst = 0\ndelay = 1",
            Some("first"),
            "from 1",
        ),
        (
            "on = \"rcpt\"\nfirst = -2\ndelay = 1",
            Some("first"),
            "negative",
        ),
        (
            "on = \"rcpt\"\nevery = 0\ndelay = 1",
            Some("every"),
            "from 1",
        ),
        (
            "on = \"rcpt\"\nevery = 1.5\ndelay = 1",
            Some("every"),
            "whole number",
        ),
        (
            "on = \"rcpt\"\nrate = \"10\"\ndelay = 1",
            Some("rate"),
            "N/SECONDS",
        ),
        (
            "on = \"rcpt\"\nrate = \"10/0\"\ndelay = 1",
            Some("rate"),
            "N/SECONDS",
        ),
        (
            "on = \"rcpt\"\nrate = 10\ndelay = 1",
            Some("rate"),
            "expected a string",
        ),
        (
            "on = \"rcpt\"\nreply = \"199 odd\"",
            Some("reply"),
            "200 to 599",
        ),
        (
            "on = \"rcpt\"\nreply = \"600 odd\"",
            Some("reply"),
            "200 to 599",
        ),
        (
            "on = \"rcpt\"\nreply = \"550 a\\r\\nb\"",
            Some("reply"),
            "one line",
        ),
        (
            "on = \"rcpt\"\nreply = \"550 a\\nb\"",
            Some("reply"),
            "one line",
        ),
        ("on = \"rcpt\"\nreply = \"No\"", Some("reply"), "200 to 599"),
        (
            "on = \"rcpt\"\nreply = 550",
            Some("reply"),
            "expected a string",
        ),
        (
            "on = \"rcpt\"\ndelay = 700",
            Some("delay"),
            "at most 600 seconds",
        ),
        (
            "on = \"rcpt\"\ndelay = 600.5",
            Some("delay"),
            "at most 600 seconds",
        ),
        (
            "on = \"rcpt\"\ndelay = \"5-700\"",
            Some("delay"),
            "at most 600 seconds",
        ),
        (
            "on = \"rcpt\"\ndelay = \"5-2\"",
            Some("delay"),
            "MIN above MAX",
        ),
        ("on = \"rcpt\"\ndelay = -1", Some("delay"), "not a delay"),
        (
            "on = \"rcpt\"\ndelay = \"soon\"",
            Some("delay"),
            "not a delay",
        ),
        (
            "on = \"rcpt\"\ndelay = true",
            Some("delay"),
            "expected seconds",
        ),
        (
            "on = \"rcpt\"\ndisconnect = \"hangup\"",
            Some("disconnect"),
            "close",
        ),
        (
            "on = \"rcpt\"\ndisconnect = \"close\"\nreply = \"550 No\"",
            Some("reply"),
            "disconnect",
        ),
        (
            "on = \"rcpt\"\ndisconnect = \"close\"\nafter_bytes = 10",
            Some("after_bytes"),
            "message",
        ),
        (
            "on = \"message\"\ndelay = 1\nafter_bytes = 10",
            Some("after_bytes"),
            "disconnect",
        ),
        (
            "on = \"message\"\ndisconnect = \"close\"\nafter_bytes = 0",
            Some("after_bytes"),
            "1 to",
        ),
        (
            "on = \"rcpt\"\nthrottle = 0",
            Some("throttle"),
            "1 to 1000000000",
        ),
        (
            "on = \"rcpt\"\nthrottle = 1000000001",
            Some("throttle"),
            "1 to 1000000000",
        ),
        (
            "on = \"rcpt\"\nreplay = \"550 No\"",
            Some("replay"),
            "unknown key",
        ),
        (
            "on = \"rcpt\"\ndelay = 1\n[rule.extra]\nx = 1",
            Some("extra"),
            "unknown key",
        ),
    ];
    for (keys, option, says) in cases {
        let err = rule_error(&second_rule(keys), named, *option);
        assert!(
            err.message.contains(says),
            "{keys:?}: {err} should say {says:?}"
        );
    }
    let err = rule_error(
        &second_rule("on = \"rcpt\"\ndelay = 700"),
        named,
        Some("delay"),
    );
    assert_eq!(
        err.to_string(),
        "test.toml: rule 2 (\"slow rcpt\"), option `delay`: \
         `700` is too long a delay: at most 600 seconds"
    );
    let err = rule_error(
        &second_rule("on = \"rcpt\"\nreplay = 1"),
        named,
        Some("replay"),
    );
    for key in ["name", "match", "after_bytes", "throttle"] {
        assert!(err.message.contains(key), "{err} should list {key}");
    }
}

#[test]
fn a_rule_without_a_usable_name_is_named_by_number() {
    let text = |name: &str| {
        format!(
            "[[rule]]\non = \"rcpt\"\ndelay = 1\n[[rule]]\nname = {name}\non = \"rcpt\"\ndelay = 1\n"
        )
    };
    for name in ["\"\"", "\"  \"", "\"a\\nb\"", "5"] {
        rule_error(&text(name), "rule 2", Some("name"));
    }
    let long = format!("\"{}\"", "x".repeat(MAX_RULE_NAME + 1));
    rule_error(&text(&long), "rule 2", Some("name"));
    toml(&text(&format!("\"{}\"", "x".repeat(MAX_RULE_NAME)))).unwrap();
    // Without a name, a problem names the rule by its number alone.
    rule_error("[[rule]]\non = \"bogus\"\ndelay = 1", "rule 1", Some("on"));
    // Names tell rules apart in logs and metrics: two rules cannot share one, given or not.
    let err = rule_error(&text("\"rule 1\""), "rule 2 (\"rule 1\")", Some("name"));
    assert!(err.message.contains("rule 1"), "{err}");
    let twice = "[[rule]]\nname = \"a\"\non = \"rcpt\"\ndelay = 1\n\
                 [[rule]]\nname = \"a\"\non = \"mail\"\ndelay = 1\n";
    rule_error(twice, "rule 2 (\"a\")", Some("name"));
}

#[test]
fn rule_must_be_tables() {
    for text in [
        "rule = 5",
        "rule = \"on = rcpt\"",
        "rule = { on = \"rcpt\", delay = 1 }",
    ] {
        let err = option_error(text, "rule");
        assert_eq!(err.rule, None, "{err}");
    }
    rule_error("rule = [5]", "rule 1", Some("rule"));
    let many: String = (0..=MAX_RULES)
        .map(|_| "[[rule]]\non = \"noop\"\ndelay = 1\n")
        .collect();
    let err = option_error(&many, "rule");
    assert!(err.message.contains(&MAX_RULES.to_string()), "{err}");
    let clients: Vec<String> = (0..=MAX_RULE_CLIENTS)
        .map(|i| format!("\"10.0.{}.{}\"", i / 256, i % 256))
        .collect();
    let text = format!(
        "[[rule]]\non = \"rcpt\"\ndelay = 1\nclient = [{}]",
        clients.join(", ")
    );
    rule_error(&text, "rule 1", Some("client"));
    toml(&format!(
        "[[rule]]\non = \"rcpt\"\ndelay = 1\nclient = [{}]",
        clients[1..].join(", ")
    ))
    .unwrap();
}

#[test]
fn documented_rule_limits_are_the_limits() {
    let doc = |name: &str| rule_keys().iter().find(|key| key.name == name).unwrap().doc;
    let rule = |keys: &str| format!("[[rule]]\non = \"message\"\ndisconnect = \"close\"\n{keys}");
    let limits = [
        ("first", 1, MAX_RULE_COUNT),
        ("every", 1, MAX_RULE_COUNT),
        ("after_bytes", 1, MAX_MAX_MESSAGE_SIZE),
        ("throttle", 1, MAX_THROTTLE),
    ];
    for (name, min, max) in limits {
        let range = format!("{min} to {max}");
        assert!(doc(name).contains(&range), "{name}: doc should say {range}");
        toml(&rule(&format!("{name} = {min}"))).unwrap();
        toml(&rule(&format!("{name} = {max}"))).unwrap();
        rule_error(
            &rule(&format!("{name} = {}", min - 1)),
            "rule 1",
            Some(name),
        );
        if max < MAX_RULE_COUNT {
            rule_error(
                &rule(&format!("{name} = {}", max + 1)),
                "rule 1",
                Some(name),
            );
        }
    }
    assert!(doc("delay").contains(&format!("0 to {MAX_RULE_DELAY_SECS}")));
    toml(&rule(&format!("delay = {MAX_RULE_DELAY_SECS}"))).unwrap();
    assert!(doc("probability").contains("0 to 1"));
    assert!(doc("name").contains(&format!("at most {MAX_RULE_NAME} characters")));
    assert!(doc("client").contains(&format!("At most {MAX_RULE_CLIENTS} entries")));
    assert!(doc("match").contains(&format!("At most {MAX_GLOB} bytes")));
    let stages = doc("on");
    for stage in [
        "connect", "helo", "mail", "rcpt", "data", "message", "auth", "starttls", "rset", "noop",
        "quit", "vrfy", "expn", "any",
    ] {
        assert!(stages.contains(stage), "on: doc should name {stage}");
        toml(&format!("[[rule]]\non = \"{stage}\"\ndelay = 1")).unwrap();
    }
}

#[test]
fn a_legacy_file_has_no_rules() {
    let err = legacy_option_error("timeout = 30\nrule = on rcpt\n", "rule");
    assert!(
        err.message.contains("line 2") && err.message.contains("TOML"),
        "{err}"
    );
    assert_eq!(err.rule, None);
}

// ---------------------------------------------------------------------------------------------
// [greylist]

/// The settings of a TOML file with a top-level option and a `[greylist]` table of `keys`.
fn greylist(keys: &str) -> GreylistSettings {
    let text = format!("timeout = 30\n[greylist]\n{keys}\n");
    toml(&text)
        .unwrap_or_else(|err| panic!("{text:?}: {err}"))
        .greylist
        .unwrap_or_else(|| panic!("{text:?}: no greylist"))
}

/// The error for a `[greylist]` table of `keys`: one line, naming the file and
/// `greylist.KEY`.
fn greylist_error(keys: &str, key: &str) -> ConfigError {
    option_error(&format!("[greylist]\n{keys}\n"), &format!("greylist.{key}"))
}

#[test]
fn greylist_is_off_without_its_table_and_all_defaults_with_an_empty_one() {
    assert_eq!(toml("timeout = 30").unwrap().greylist, None);
    let defaults = GreylistSettings::default();
    assert_eq!(greylist(""), defaults);
    assert_eq!(
        toml("greylist = {}").unwrap().greylist,
        Some(defaults.clone())
    );
    // postgrey's: 60 s, 4 h, 36 days.
    assert_eq!(
        (defaults.delay_ms, defaults.expire_ms, defaults.pass_for_ms),
        (60_000, 4 * 3_600_000, 36 * 86_400_000)
    );
    assert_eq!(
        defaults.reply.bytes(),
        b"451 4.7.1 Greylisted, try again later\r\n"
    );
    assert_eq!(defaults.max_entries, 1_000_000);
    // Rules may follow the table, and it leaves the other options alone.
    let config =
        toml("timeout = 30\n[greylist]\ndelay = 5\n[[rule]]\non = \"rcpt\"\ndelay = 1\n").unwrap();
    assert_eq!(config.timeout_secs, 30);
    assert_eq!(config.rules.len(), 1);
    assert_eq!(config.greylist.map(|g| g.delay_ms), Some(5_000));
}

#[test]
fn greylist_durations_in_seconds_or_with_a_unit() {
    let forms = [
        ("90", 90),
        ("\"90\"", 90),
        ("\"90s\"", 90),
        ("\"15m\"", 900),
        ("\" 4h \"", 4 * 3600),
        ("\"1d\"", 86_400),
    ];
    for key in ["delay", "expire", "pass_for"] {
        for (value, secs) in forms {
            // A long delay needs a long enough expire.
            let keys = match key {
                "delay" => format!("delay = {value}\nexpire = \"30d\""),
                _ => format!("{key} = {value}"),
            };
            let settings = greylist(&keys);
            let ms = match key {
                "delay" => settings.delay_ms,
                "expire" => settings.expire_ms,
                _ => settings.pass_for_ms,
            };
            assert_eq!(ms, secs * 1000, "{keys}");
        }
    }
    assert_eq!(greylist("pass_for = \"36d\"").pass_for_ms, 36 * 86_400_000);
    assert_eq!(greylist("delay = 0").delay_ms, 0);
    let settings = greylist("reply = \" 450 4.2.0 Later \"\nmax_entries = 10");
    assert_eq!(settings.reply.bytes(), b"450 4.2.0 Later\r\n");
    assert_eq!(settings.max_entries, 10);
    assert_eq!(greylist("max_entries = \"20\"").max_entries, 20);
}

#[test]
fn bad_greylist_values_are_named_with_their_key() {
    let cases = [
        ("delay = -1", "delay", "is not a duration"),
        ("delay = \"\"", "delay", "is not a duration"),
        ("delay = \"5 m\"", "delay", "is not a duration"),
        ("delay = \"5M\"", "delay", "is not a duration"),
        ("delay = \"5w\"", "delay", "is not a duration"),
        ("delay = \"m\"", "delay", "is not a duration"),
        ("delay = \"1h30m\"", "delay", "is not a duration"),
        ("delay = 1.5", "delay", "expected whole seconds"),
        ("delay = 86401", "delay", "is out of range"),
        ("delay = \"2d\"", "delay", "is out of range"),
        (
            "delay = \"99999999999999999999999d\"",
            "delay",
            "is out of range",
        ),
        ("expire = 0", "expire", "is out of range"),
        ("expire = \"31d\"", "expire", "is out of range"),
        ("expire = [1]", "expire", "expected whole seconds"),
        (
            "delay = 60\nexpire = \"30s\"",
            "expire",
            "not longer than delay",
        ),
        (
            "delay = \"5h\"",
            "expire",
            "\"4h\" by default is not longer",
        ),
        ("pass_for = 0", "pass_for", "is out of range"),
        ("pass_for = \"367d\"", "pass_for", "is out of range"),
        ("pass_for = true", "pass_for", "expected whole seconds"),
        ("reply = \"550 5.7.1 Go away\"", "reply", "give a 4xx reply"),
        ("reply = \"250 OK\"", "reply", "give a 4xx reply"),
        ("reply = \"Greylisted\"", "reply", "reply code"),
        ("reply = \"451 a\\r\\nb\"", "reply", "one line"),
        ("reply = 451", "reply", "expected a string"),
        ("max_entries = 0", "max_entries", "from 1 to 100000000"),
        (
            "max_entries = 100000001",
            "max_entries",
            "from 1 to 100000000",
        ),
        ("max_entries = \"many\"", "max_entries", "is not a number"),
        ("max_time = 5", "max_time", "unknown key"),
        ("[greylist.delay_ms]\nx = 1", "delay_ms", "unknown key"),
    ];
    for (keys, key, words) in cases {
        let err = greylist_error(keys, key);
        assert!(err.message.contains(words), "{keys:?}: {err}");
    }
    let err = greylist_error("delay = \"2d\"", "delay");
    assert_eq!(
        err.to_string(),
        "test.toml: option `greylist.delay`: \"2d\" is out of range: give whole seconds, \
         or a string with a unit: \"90s\", \"15m\", \"4h\", \"36d\"; from \"0s\" to \"1d\""
    );
    let err = greylist_error("colour = 1", "colour");
    assert!(
        err.message
            .contains("delay, expire, pass_for, reply, max_entries"),
        "{err}"
    );
}

#[test]
fn greylist_must_be_one_table() {
    for text in [
        "greylist = true",
        "greylist = \"on\"",
        "greylist = 60",
        "[[greylist]]\ndelay = 60",
    ] {
        let err = option_error(text, "greylist");
        assert!(
            err.message.contains("a [greylist] table"),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn documented_greylist_limits_are_the_limits() {
    let doc = |name: &str| {
        greylist_keys()
            .iter()
            .find(|key| key.name == name)
            .unwrap()
            .doc
    };
    let limits = [
        ("delay", 0, MAX_GREYLIST_DELAY_SECS, "0 to 1 day"),
        ("expire", 1, MAX_GREYLIST_EXPIRE_SECS, "1 second to 30 days"),
        (
            "pass_for",
            1,
            MAX_GREYLIST_PASS_FOR_SECS,
            "1 second to 366 days",
        ),
    ];
    for (key, min, max, words) in limits {
        assert!(doc(key).contains(words), "{key}: doc should say {words}");
        // With expire at its longest (or no delay), no value is refused for being too long
        // beside the other.
        let other = match key {
            "expire" => "delay = 0\n".to_owned(),
            _ => format!("expire = {MAX_GREYLIST_EXPIRE_SECS}\n"),
        };
        for ok in [min, max] {
            greylist(&format!("{other}{key} = {ok}"));
        }
        greylist_error(&format!("{key} = {}", max + 1), key);
        if min > 0 {
            greylist_error(&format!("delay = 0\n{key} = {}", min - 1), key);
        }
    }
    let entries = format!("1 to {MAX_GREYLIST_ENTRIES}");
    assert!(
        doc("max_entries").contains(&entries),
        "max_entries: {entries}"
    );
    greylist("max_entries = 1");
    greylist(&format!("max_entries = {MAX_GREYLIST_ENTRIES}"));
    greylist_error(
        &format!("max_entries = {}", MAX_GREYLIST_ENTRIES + 1),
        "max_entries",
    );
    // Each default the documentation gives is the default.
    assert!(doc("delay").contains("default 60"));
    assert_eq!(
        greylist("expire = \"4h\"\npass_for = \"36d\""),
        greylist("")
    );
    assert!(
        doc("expire").contains("default \"4h\"") && doc("pass_for").contains("default \"36d\"")
    );
    assert!(doc("reply").contains("Default \"451 4.7.1 Greylisted, try again later\""));
    assert!(doc("max_entries").contains("default 1000000"));
}

#[test]
fn a_legacy_file_has_no_greylist() {
    let err = legacy_option_error("timeout = 30\ngreylist = delay 60\n", "greylist");
    assert!(
        err.message.contains("line 2")
            && err.message.contains("[greylist] tables exist only in TOML"),
        "{err}"
    );
}

#[test]
fn greylist_expire_must_outlast_the_delay() {
    // Equal, no retry could ever pass: a retry passes once delay is over and before expire.
    let error = option_error("[greylist]\ndelay = 60\nexpire = 60", "greylist.expire");
    assert!(
        error.to_string().contains("not longer than delay"),
        "{error}"
    );
    assert!(toml("[greylist]\ndelay = 60\nexpire = 61").is_ok());
}

#[test]
fn metrics_listen_values() {
    assert_eq!(toml("").unwrap().metrics_listen, None);
    assert_eq!(toml("metrics_listen = \"\"").unwrap().metrics_listen, None);
    let cases = [
        ("127.0.0.1:9025", v4([127, 0, 0, 1], 9025)),
        ("[::1]:9025", v6("::1", 9025)),
        (":9025", v4([0, 0, 0, 0], 9025)),
        ("localhost:0", v4([127, 0, 0, 1], 0)),
    ];
    for (entry, addr) in cases {
        let text = format!("metrics_listen = \"{entry}\"");
        assert_eq!(toml(&text).unwrap().metrics_listen, Some(addr), "{text}");
    }
    let legacy = legacy("listen = :2525\nmetrics_listen = 127.0.0.1:9025\n").unwrap();
    assert_eq!(legacy.metrics_listen, Some(v4([127, 0, 0, 1], 9025)));
    // Beside the SMTP listeners: another port, another family, or port 0 on both sides.
    for (listen, metrics) in [
        ("127.0.0.1:2525", "127.0.0.1:2526"),
        ("127.0.0.2:2525", "127.0.0.1:2525"),
        (":::2525", "127.0.0.1:2525"),
        (":2525", "[::1]:2525"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        let text = format!("listen = [\"{listen}\"]\nmetrics_listen = \"{metrics}\"");
        assert!(toml(&text).is_ok(), "{text}");
    }
}

#[test]
fn bad_metrics_listen_values() {
    let cases = [
        ("metrics_listen = 9025", "expected a string"),
        ("metrics_listen = [\"127.0.0.1:9025\"]", "expected a string"),
        ("metrics_listen = \"127.0.0.1\"", "no port"),
        ("metrics_listen = \"127.0.0.1:99999\"", "not a port"),
        ("metrics_listen = \"example.com:9025\"", "not an IP address"),
        (
            "metrics_listen = \"127.0.0.1:9025 mode=bounce\"",
            "not a port",
        ),
        (
            "metrics_listen = \"[127.0.0.1]:9025\"",
            "not an IPv6 address",
        ),
    ];
    for (text, says) in cases {
        let err = option_error(text, "metrics_listen");
        assert!(err.message.contains(says), "{text}: {err}");
        if !says.starts_with("expected") {
            assert!(err.message.contains("e.g. metrics_listen ="), "{err}");
        }
    }
    // Not where an SMTP listener binds, also through a wildcard or the default listener.
    for (listen, metrics) in [
        ("listen = [\"127.0.0.1:2525\"]\n", "127.0.0.1:2525"),
        ("listen = [\":2525\"]\n", "127.0.0.1:2525"),
        ("listen = [\"127.0.0.1:2525\"]\n", ":2525"),
        ("listen = [\"[::1]:2525\"]\n", ":::2525"),
        ("", "127.0.0.1:25"),
    ] {
        let text = format!("{listen}metrics_listen = \"{metrics}\"");
        let err = option_error(&text, "metrics_listen");
        assert!(err.message.contains("SMTP listener"), "{err}");
        assert!(err.message.contains("a port of their own"), "{err}");
    }
    let err = option_error_in(
        "blackhole.conf",
        "listen = :2525\nmetrics_listen = :2525\n",
        "metrics_listen",
    );
    assert!(err.to_string().starts_with("blackhole.conf: "), "{err}");
}

#[test]
fn event_log_values() {
    assert_eq!(toml("").unwrap().event_log, None);
    assert_eq!(toml("event_log = \" \"").unwrap().event_log, None);
    for name in ["-", "events.json", "/var/log/blackhole/events.json", "./-"] {
        let text = format!("event_log = \"{name}\"");
        assert_eq!(
            toml(&text).unwrap().event_log.as_deref(),
            Some(Path::new(name))
        );
    }
    let legacy = legacy("event_log = /tmp/events.json\n").unwrap();
    assert_eq!(
        legacy.event_log.as_deref(),
        Some(Path::new("/tmp/events.json"))
    );
}

#[test]
fn bad_event_log_values() {
    let cases = [
        ("event_log = 1", "expected a string"),
        ("event_log = true", "expected a string"),
        ("event_log = [\"a.json\"]", "expected a string"),
        ("event_log = \"/var/log/\"", "names a directory"),
        ("event_log = \"a\\nb.json\"", "control character"),
        ("event_log = \"a\\u0000b.json\"", "control character"),
    ];
    for (text, says) in cases {
        let err = option_error(text, "event_log");
        assert!(err.message.contains(says), "{text}: {err}");
        if !says.starts_with("expected") {
            assert!(err.message.contains("standard output"), "{err}");
        }
    }
}

/// `count` listener entries on ports from 2000.
fn listener_entries(count: usize, first_port: usize) -> String {
    let entries: Vec<String> = (0..count)
        .map(|i| format!("\"127.0.0.1:{}\"", first_port + i))
        .collect();
    format!("[{}]", entries.join(", "))
}

#[test]
fn listeners_are_bounded() {
    assert_eq!(MAX_LISTENERS, 64);
    let listen = listener_entries(MAX_LISTENERS, 2000);
    let config = toml(&format!("listen = {listen}")).unwrap();
    assert_eq!(config.listeners.len(), MAX_LISTENERS);
    let err = option_error(
        &format!("listen = {}", listener_entries(MAX_LISTENERS + 1, 2000)),
        "listen",
    );
    assert!(err.message.contains("at most 64"), "{err}");
    // Counted across both options, and the one that went past the bound is named.
    let text = format!(
        "{}listen = {}\ntls_listen = {}",
        tls_companions(""),
        listener_entries(MAX_LISTENERS - 1, 2000),
        listener_entries(2, 3000)
    );
    let err = option_error(&text, "tls_listen");
    assert!(err.message.contains("65 listeners"), "{err}");
    let doc = OPTIONS.iter().find(|o| o.name == "listen").unwrap().doc;
    assert!(doc.contains("at most 64 entries"), "{doc}");
}

#[test]
fn the_proxy_flag_is_a_bare_word() {
    let spec = parse_listener("127.0.0.1:2525 proxy", false).unwrap();
    assert!(spec.proxy && !spec.has_flags(), "{spec:?}");
    let spec = parse_listener(":465 mode=bounce PROXY", true).unwrap();
    assert!(spec.proxy && spec.tls && spec.mode == Some(Mode::Bounce));
    assert!(!parse_listener(":25", false).unwrap().proxy);
    let twice = parse_listener(":25 proxy proxy", false).unwrap_err();
    assert!(twice.contains("proxy is given twice"), "{twice}");
    let unknown = parse_listener(":25 proxied", false).unwrap_err();
    assert!(unknown.contains("proxy"), "{unknown}");
    let config = toml("listen = [\"127.0.0.1:2525 proxy\", \"127.0.0.1:2526\"]").unwrap();
    assert!(config.listeners[0].proxy && !config.listeners[1].proxy);
    let config = legacy("listen = 127.0.0.1:2525 proxy, 127.0.0.1:2526").unwrap();
    assert!(config.listeners[0].proxy && !config.listeners[1].proxy);
}

#[test]
fn proxy_trusted_takes_address_blocks() {
    let loopback: Vec<Cidr> = ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(Config::default().proxy_trusted, loopback);
    let config = toml("proxy_trusted = [\"10.0.0.0/8\", \"2001:db8::1\"]").unwrap();
    let trusted = &config.proxy_trusted;
    assert_eq!(trusted.len(), 2);
    assert!(trusted[0].contains("10.9.8.7".parse().unwrap()));
    assert!(!trusted[0].contains("127.0.0.1".parse().unwrap()));
    assert!(trusted[1].contains("2001:db8::1".parse().unwrap()));
    let config = legacy("proxy_trusted = 10.0.0.0/8, 192.0.2.1").unwrap();
    assert_eq!(config.proxy_trusted.len(), 2);
    for bad in [
        "proxy_trusted = []",
        "proxy_trusted = [\"10.0.0.0/33\"]",
        "proxy_trusted = [\"example.com\"]",
        "proxy_trusted = [10]",
        "proxy_trusted = true",
    ] {
        option_error(bad, "proxy_trusted");
    }
    let many: Vec<String> = (0..1025)
        .map(|i| format!("\"10.0.{}.{}\"", i / 256, i % 256))
        .collect();
    option_error(
        &format!("proxy_trusted = [{}]", many.join(", ")),
        "proxy_trusted",
    );
}
