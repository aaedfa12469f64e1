//! The shipped systemd unit, `src/service/blackhole.service`, for `blackhole
//! --print-systemd-unit`, with tests that a careless edit of its key lines is caught.

/// The unit file, as shipped.
pub const UNIT: &str = include_str!("blackhole.service");

#[cfg(test)]
mod tests {
    use super::UNIT as SYSTEMD_UNIT;

    /// `key = value` lines of the `[section]` sections of a unit file, in
    /// order, comments and blank lines left out.
    fn unit_entries(text: &str) -> Vec<(String, String, String)> {
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a unit file line: {line:?}"));
            assert!(!section.is_empty(), "{line:?} is outside any section");
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        entries
    }

    #[test]
    fn systemd_unit_key_lines() {
        let entries = unit_entries(SYSTEMD_UNIT);
        let values = |section: &str, key: &str| -> Vec<&str> {
            entries
                .iter()
                .filter(|(s, k, _)| s == section && k == key)
                .map(|(_, _, v)| v.as_str())
                .collect()
        };
        let one = |section: &str, key: &str| -> &str {
            match values(section, key).as_slice() {
                [value] => value,
                found => panic!("[{section}] {key}= should be set once: {found:?}"),
            }
        };
        assert_eq!(
            one("Service", "ExecStart"),
            "/usr/local/bin/blackhole -c /etc/blackhole.toml"
        );
        assert_eq!(one("Service", "ExecReload"), "/bin/kill -HUP $MAINPID");
        // Foreground: systemd tracks the process it started.
        assert_eq!(one("Service", "Type"), "simple");
        assert_eq!(one("Service", "User"), "blackhole");
        assert_eq!(one("Service", "Group"), "blackhole");
        assert_eq!(
            one("Service", "AmbientCapabilities"),
            "CAP_NET_BIND_SERVICE"
        );
        assert_eq!(
            one("Service", "CapabilityBoundingSet"),
            "CAP_NET_BIND_SERVICE"
        );
        assert_eq!(one("Service", "NoNewPrivileges"), "yes");
        assert_eq!(one("Service", "Restart"), "on-failure");
        assert_eq!(one("Service", "RuntimeDirectory"), "blackhole");
        assert_eq!(one("Service", "LimitNOFILE"), "65536");
        assert_eq!(one("Install", "WantedBy"), "multi-user.target");
        assert!(!one("Unit", "Description").is_empty());
        // Only known sections.
        for (section, key, _) in &entries {
            assert!(
                ["Unit", "Service", "Install"].contains(&section.as_str()),
                "[{section}] {key}"
            );
        }
    }

    #[test]
    fn pidfile_example_is_in_the_units_runtime_directory() {
        let pidfile = crate::config::options::OPTIONS
            .iter()
            .find(|o| o.name == "pidfile")
            .map(|o| o.examples[0].trim_matches('"'))
            .unwrap();
        assert_eq!(
            std::path::Path::new(pidfile).parent(),
            Some(std::path::Path::new("/run/blackhole"))
        );
        assert!(SYSTEMD_UNIT.contains("\nRuntimeDirectory=blackhole\n"));
        let shipped = include_str!("../../blackhole.toml");
        assert!(
            shipped.contains(&format!("# pidfile = \"{pidfile}\"\n")),
            "blackhole.toml should suggest the pidfile the unit can write"
        );
    }
}
