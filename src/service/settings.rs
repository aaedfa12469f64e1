//! From a [`Config`] to the loop's [`Settings`]: at start, and again on every SIGHUP.
//!
//! The decisions are pure functions of their arguments, so they are tested without files or
//! processes: a listener's flags over the global options ([`policy_for`]), what a reload
//! applies and what it only reports ([`reloaded`]), the connection limit
//! ([`connection_limit`]). Only [`reloader`] reads the file again and [`descriptor_limit`]
//! reads /proc.

use std::path::PathBuf;
use std::sync::Arc;

use log::{error, warn};

use crate::config::{self, Config, ListenerSpec};
use crate::event_loop::process_figures;
use crate::event_loop::server::{ListenerSettings, Reload, Settings};
use crate::smtp::policy::Policy;
use crate::smtp::rules::RuleBook;

/// What one listener's sessions are told to do: its flags over the config. `tls`: a
/// certificate is loaded, so plain listeners offer STARTTLS.
pub fn policy_for(config: &Config, spec: &ListenerSpec, fqdn: &str, tls: bool) -> Policy {
    Policy::new(
        fqdn.to_owned(),
        spec.mode.unwrap_or(config.mode),
        spec.delay.or(config.delay),
        config.dynamic_switch && !spec.has_flags(),
        config.max_message_size,
        tls && !spec.tls,
    )
    .with_chunking(config.chunking)
    .with_lmtp(spec.lmtp)
}

/// The loop's settings for `config`, with `descriptors` the soft limit on open files (if
/// known).
pub fn settings_for(config: &Config, tls: bool, descriptors: Option<u64>) -> Settings {
    let fqdn = config.mail_name();
    Settings {
        listeners: config
            .listeners
            .iter()
            .map(|spec| ListenerSettings {
                policy: policy_for(config, spec, &fqdn, tls),
                proxy: spec.proxy,
            })
            .collect(),
        timeout_secs: config.timeout_secs,
        max_connections: connection_limit(
            config.max_connections,
            descriptors,
            config.listeners.len(),
        ),
        rules: Arc::new(RuleBook::new(config.rules.clone())),
        greylist: config.greylist.clone(),
        event_log: config.event_log.clone(),
        proxy_trusted: config.proxy_trusted.clone(),
    }
}

/// SIGHUP: read the configuration again. Mode, delay, timeout, size, switches, listener
/// flags, mail name and the connection limit apply at once; what needs a restart is logged.
pub fn reloader(conf: Option<PathBuf>, running: Config, tls: bool) -> Reload {
    Box::new(move || {
        let new = match config::load(conf.as_deref()) {
            Ok(new) => new,
            Err(e) => {
                error!("reload: {e}; keeping the running configuration");
                return None;
            }
        };
        let (applied, restart) = reloaded(&running, new);
        if !restart.is_empty() {
            warn!(
                "reload: {} changed; that takes a restart, the rest applies now",
                restart.join(", ")
            );
        }
        Some(settings_for(&applied, tls, descriptor_limit()))
    })
}

/// What a reload from `running` to `new` applies now, and the options that changed but take
/// a restart. The listeners stay the running ones; each takes the flags `new` gives its
/// address, or keeps its own if `new` no longer has it.
pub fn reloaded(running: &Config, mut new: Config) -> (Config, Vec<&'static str>) {
    let restart = restart_needed(running, &new);
    new.listeners = running
        .listeners
        .iter()
        .map(|old| {
            new.listeners
                .iter()
                .find(|l| l.addr == old.addr && l.tls == old.tls)
                .unwrap_or(old)
                .clone()
        })
        .collect();
    (new, restart)
}

/// The options that changed between `running` and `new` and take a restart to apply.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    [
        (
            "listen/tls_listen",
            !same_addresses(&running.listeners, &new.listeners),
        ),
        ("tls_cert", running.tls_cert != new.tls_cert),
        ("tls_key", running.tls_key != new.tls_key),
        ("user", running.user != new.user),
        ("group", running.group != new.group),
        ("workers", running.workers != new.workers),
        ("pidfile", running.pidfile != new.pidfile),
        ("seed", running.seed != new.seed),
        (
            "metrics_listen",
            running.metrics_listen != new.metrics_listen,
        ),
    ]
    .into_iter()
    .filter_map(|(option, changed)| changed.then_some(option))
    .collect()
}

fn same_addresses(a: &[ListenerSpec], b: &[ListenerSpec]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.addr == y.addr && x.tls == y.tls)
}

/// Descriptors a process needs besides its connections: standard streams, the poll
/// instance, the signal pipe, a few for files, plus one per listener.
const RESERVED_DESCRIPTORS: u64 = 16;

/// Connections served at once when neither `max_connections` nor the descriptor limit says.
const FALLBACK_CONNECTIONS: usize = 1024;

/// `max` (the `max_connections` option), or as many connections as the descriptor limit
/// leaves room for beside `listeners` listening sockets.
pub fn connection_limit(max: Option<u32>, descriptors: Option<u64>, listeners: usize) -> usize {
    let room = descriptors.map(|n| {
        n.saturating_sub(RESERVED_DESCRIPTORS + listeners as u64)
            .max(1)
    });
    match (max, room) {
        (Some(max), Some(room)) if u64::from(max) > room => {
            warn!(
                "max_connections = {max} is more than the descriptor limit ({}) allows: \
                 past {room} connections, new clients wait until one closes; raise it with ulimit -n",
                descriptors.unwrap_or(0)
            );
            max as usize
        }
        (Some(max), _) => max as usize,
        (None, Some(room)) => usize::try_from(room).unwrap_or(usize::MAX),
        (None, None) => FALLBACK_CONNECTIONS,
    }
}

/// The soft limit on open files, from /proc (Linux).
pub fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    // "unlimited" bounds nothing to size by: the fallback limit applies.
    process_figures::max_open_files(&limits).filter(|&n| n != u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::smtp::policy::{DelayRange, Mode};

    fn config(text: &str) -> Config {
        let text = format!("mailname = \"mx.test\"\n{text}");
        config::parse(&text, Path::new("test.toml")).expect("a valid test configuration")
    }

    fn policies(config: &Config, tls: bool) -> Vec<Policy> {
        let listeners = settings_for(config, tls, Some(4096)).listeners;
        listeners.into_iter().map(|l| l.policy).collect()
    }

    const TLS_FILES: &str = "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";

    #[test]
    fn listener_flags_apply_over_the_global_mode_and_delay() {
        let config = config(
            "mode = \"random\"\ndelay = \"1-2\"\n\
             listen = [\"127.0.0.1:2525\", \"127.0.0.1:2526 mode=bounce\", \
             \"127.0.0.1:2527 delay=7\"]\n",
        );
        let p = policies(&config, false);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].mode(), p[0].delay()),
            (Mode::Random, DelayRange::new(1, 2))
        );
        assert_eq!(
            (p[1].mode(), p[1].delay()),
            (Mode::Bounce, DelayRange::new(1, 2))
        );
        assert_eq!(
            (p[2].mode(), p[2].delay()),
            (Mode::Random, DelayRange::fixed(7))
        );
        assert!(p.iter().all(|p| p.fqdn() == "mx.test"));
    }

    #[test]
    fn a_listener_with_flags_ignores_switch_headers() {
        let on = config(
            "listen = [\"127.0.0.1:2525\", \"127.0.0.1:2526 mode=accept\", \
             \"127.0.0.1:2527 delay=0\"]\n",
        );
        let flags: Vec<bool> = policies(&on, false)
            .iter()
            .map(|p| p.dynamic_switch())
            .collect();
        assert_eq!(flags, [true, false, false]);

        let off = config("dynamic_switch = false\nlisten = [\"127.0.0.1:2525\"]\n");
        assert!(!policies(&off, false)[0].dynamic_switch());
    }

    #[test]
    fn starttls_is_offered_on_plain_listeners_when_tls_is_loaded() {
        let config = config(&format!(
            "{TLS_FILES}listen = [\"127.0.0.1:2525\"]\ntls_listen = [\"127.0.0.1:4650\"]\n"
        ));
        let with_tls: Vec<bool> = policies(&config, true)
            .iter()
            .map(|p| p.starttls())
            .collect();
        assert_eq!(with_tls, [true, false]);
        let without: Vec<bool> = policies(&config, false)
            .iter()
            .map(|p| p.starttls())
            .collect();
        assert_eq!(without, [false, false]);
    }

    #[test]
    fn global_options_reach_the_settings() {
        let config = config(
            "timeout = 17\nmax_message_size = 4096\nmax_connections = 9\n\
             listen = [\"127.0.0.1:2525\"]\n",
        );
        let settings = settings_for(&config, false, Some(4096));
        assert_eq!(settings.timeout_secs, 17);
        assert_eq!(settings.max_connections, 9);
        assert_eq!(settings.listeners[0].policy.max_message_size(), 4096);
    }

    #[test]
    fn the_proxy_flags_and_trusted_blocks_reach_the_settings_and_a_reload() {
        let running = config("listen = [\"127.0.0.1:2525 proxy\", \"127.0.0.1:2526\"]\n");
        let proxy = |settings: &Settings| -> Vec<bool> {
            settings.listeners.iter().map(|l| l.proxy).collect()
        };
        let settings = settings_for(&running, false, Some(4096));
        assert_eq!(proxy(&settings), [true, false]);
        assert!(settings.proxy_trusted[0].contains("127.0.0.9".parse().unwrap()));
        let new = config(
            "proxy_trusted = [\"10.0.0.0/8\"]\n\
             listen = [\"127.0.0.1:2525\", \"127.0.0.1:2526 proxy\"]\n",
        );
        let (applied, restart) = reloaded(&running, new);
        assert!(restart.is_empty(), "{restart:?}");
        let settings = settings_for(&applied, false, Some(4096));
        assert_eq!(proxy(&settings), [false, true]);
        assert_eq!(settings.proxy_trusted.len(), 1);
        assert!(!settings.proxy_trusted[0].contains("127.0.0.9".parse().unwrap()));
    }

    #[test]
    fn a_reload_applies_new_flags_to_a_listener_that_stays() {
        let running = config("listen = [\"127.0.0.1:2525\", \"127.0.0.1:2526\"]\n");
        let new = config(
            "mode = \"bounce\"\ntimeout = 5\n\
             listen = [\"127.0.0.1:2525 delay=3\", \"127.0.0.1:2526\"]\n",
        );
        let (applied, restart) = reloaded(&running, new);
        assert!(restart.is_empty(), "{restart:?}");
        assert_eq!(applied.listeners[0].delay, DelayRange::fixed(3));
        assert_eq!(applied.timeout_secs, 5);
        let p = policies(&applied, false);
        assert_eq!(
            (p[0].mode(), p[0].delay()),
            (Mode::Bounce, DelayRange::fixed(3))
        );
        assert!(!p[0].dynamic_switch());
        assert_eq!((p[1].mode(), p[1].delay()), (Mode::Bounce, None));
        assert!(p[1].dynamic_switch());
    }

    #[test]
    fn a_reload_that_adds_a_listener_keeps_the_running_ones() {
        let running = config("listen = [\"127.0.0.1:2525 mode=bounce\"]\n");
        let new = config("listen = [\"127.0.0.1:2525\", \"127.0.0.1:2526\"]\n");
        let (applied, restart) = reloaded(&running, new);
        assert_eq!(restart, ["listen/tls_listen"]);
        assert_eq!(applied.listeners.len(), 1);
        assert_eq!(applied.listeners[0].addr, running.listeners[0].addr);
        // The address is still there, so its new (absent) flags apply.
        assert_eq!(applied.listeners[0].mode, None);
        assert_eq!(policies(&applied, false).len(), 1);
    }

    #[test]
    fn a_reload_that_removes_a_listener_keeps_it_with_its_flags() {
        let running = config("listen = [\"127.0.0.1:2525\", \"127.0.0.1:2526 mode=bounce\"]\n");
        let new = config("listen = [\"127.0.0.1:2525 delay=2\"]\n");
        let (applied, restart) = reloaded(&running, new);
        assert_eq!(restart, ["listen/tls_listen"]);
        assert_eq!(applied.listeners, {
            let mut kept = running.listeners.clone();
            kept[0].delay = DelayRange::fixed(2);
            kept[0].text = "127.0.0.1:2525 delay=2".to_owned();
            kept
        });
    }

    #[test]
    fn an_address_moved_from_plain_to_tls_is_a_restart() {
        let running = config(&format!("{TLS_FILES}listen = [\"127.0.0.1:2525\"]\n"));
        let new = config(&format!(
            "{TLS_FILES}listen = []\ntls_listen = [\"127.0.0.1:2525\"]\n"
        ));
        let (applied, restart) = reloaded(&running, new);
        assert_eq!(restart, ["listen/tls_listen"]);
        assert!(!applied.listeners[0].tls);
    }

    #[test]
    fn each_restart_only_option_is_detected() {
        let base = "listen = [\"127.0.0.1:2525\"]\n";
        let running = config(&format!("{TLS_FILES}{base}"));
        let cases = [
            (
                "tls_cert = \"other.pem\"\ntls_key = \"key.pem\"\n",
                "tls_cert",
            ),
            (
                "tls_cert = \"cert.pem\"\ntls_key = \"other.pem\"\n",
                "tls_key",
            ),
            ("user = \"nobody\"\n", "user"),
            ("group = \"nogroup\"\n", "group"),
            ("workers = 3\n", "workers"),
            ("pidfile = \"/run/blackhole.pid\"\n", "pidfile"),
            ("seed = 7\n", "seed"),
            ("metrics_listen = \"127.0.0.1:9025\"\n", "metrics_listen"),
        ];
        for (change, option) in cases {
            let tls = if option.starts_with("tls_") {
                ""
            } else {
                TLS_FILES
            };
            let new = config(&format!("{tls}{change}{base}"));
            assert_eq!(restart_needed(&running, &new), [option], "{change}");
        }
        let same = config(&format!(
            "{TLS_FILES}mode = \"bounce\"\ntimeout = 9\nmax_connections = 3\n{base}"
        ));
        assert!(restart_needed(&running, &same).is_empty());
    }

    #[test]
    fn the_connection_limit_comes_from_the_descriptor_room() {
        assert_eq!(connection_limit(None, Some(1024), 2), 1024 - 16 - 2);
        // Never zero, however low the limit.
        assert_eq!(connection_limit(None, Some(10), 1), 1);
    }

    #[test]
    fn max_connections_wins_over_the_descriptor_room() {
        assert_eq!(connection_limit(Some(100), Some(1024), 1), 100);
        // Above the room it still holds: new clients wait rather than being refused.
        assert_eq!(connection_limit(Some(5000), Some(1024), 1), 5000);
        assert_eq!(connection_limit(Some(7), None, 1), 7);
    }

    #[test]
    fn without_either_the_limit_falls_back() {
        assert_eq!(connection_limit(None, None, 3), FALLBACK_CONNECTIONS);
    }
}
