//! The configuration options as people read about them: one table, [`OPTIONS`],
//! giving each option's name, value syntax, default and documentation, and
//! [`options_documentation`], which renders it for `blackhole --help-config`.
//!
//! The table is also where the parser (`config`) gets the set of known option
//! names and its "unknown option" message, and the tests check it against the
//! parser's fields, the shipped `blackhole.toml` and the documented examples,
//! so the documentation, the parser and the shipped file cannot drift apart.
//!
//! This module must not validate values: what is allowed is decided in
//! `config`, and this table only says it in words.

/// One configuration option, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDoc {
    /// The key in `blackhole.toml`.
    pub name: &'static str,
    /// The value's form, in TOML.
    pub syntax: &'static str,
    /// The default: a TOML value when the option has one the file could
    /// spell, else a few words (`none`, what is looked up instead).
    pub default: &'static str,
    /// Values that are valid and differ from the default (TOML right-hand
    /// sides), shown as `name = example`; the tests parse each one.
    pub examples: &'static [&'static str],
    /// What the option does, what is allowed and what to know: one
    /// paragraph, wrapped when shown.
    pub doc: &'static str,
    /// One value, one table or any number of tables; an example of a table
    /// is its keys.
    pub form: Form,
}

/// How an option is written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `name = value`.
    Value,
    /// One `[name]` table of these keys.
    Table(&'static [KeyDoc]),
    /// Any number of `[[name]]` tables, each of these keys.
    Tables(&'static [KeyDoc]),
}

/// One key of a table option, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    pub name: &'static str,
    /// The value's form, in TOML.
    pub syntax: &'static str,
    /// What it does and what is allowed: one paragraph.
    pub doc: &'static str,
}

impl OptionDoc {
    /// Whether the option is written as `[name]` or `[[name]]` tables.
    pub fn is_table(&self) -> bool {
        self.header().is_some()
    }

    /// A table's keys; none for an option with one value.
    pub fn keys(&self) -> &'static [KeyDoc] {
        match self.form {
            Form::Value => &[],
            Form::Table(keys) | Form::Tables(keys) => keys,
        }
    }

    /// A table's header line, `[name]` or `[[name]]`.
    pub fn header(&self) -> Option<String> {
        match self.form {
            Form::Value => None,
            Form::Table(_) => Some(format!("[{}]", self.name)),
            Form::Tables(_) => Some(format!("[[{}]]", self.name)),
        }
    }

    /// `example` as the file spells it: `name = example`, or for a table
    /// its header and keys.
    pub fn example_toml(&self, example: &str) -> String {
        match self.header() {
            Some(header) if example.is_empty() => header,
            Some(header) => format!("{header}\n{example}"),
            None => format!("{} = {example}", self.name),
        }
    }
}

/// Every option, in the order the documentation, `blackhole.toml` and the
/// "unknown option" message list them.
pub const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        name: "listen",
        syntax: r#"["[ADDRESS]:PORT [mode=MODE] [delay=N|MIN-MAX] [proxy]", ...]"#,
        default: r#"[":25"]"#,
        examples: &[
            r#"[":25", ":::25"]"#,
            r#"["127.0.0.1:2525", "127.0.0.1:2526 mode=bounce"]"#,
            r#"[":2525 delay=2-5"]"#,
            r#"["127.0.0.1:2525 proxy"]"#,
        ],
        doc: "Where to accept plain SMTP connections; STARTTLS is offered on them \
              when tls_cert and tls_key are set. \":25\" is every IPv4 address, \
              \":::25\" (or \"[::]:25\") every IPv6 address; \"127.0.0.1:25\", \
              \"[::1]:25\" or \"::1:25\" one address (\"localhost:25\" is \
              127.0.0.1). Port 0 picks any free port. The flags fix the final \
              reply for that listener's connections: mode=accept|bounce|random and \
              delay=N or delay=MIN-MAX (seconds, 0 to 60); a listener with flags \
              ignores the X-Blackhole-* switch headers. The flag lmtp makes the \
              listener speak LMTP (RFC 2033): LHLO instead of HELO and EHLO, and \
              one reply per accepted recipient after the data. The flag proxy (\":2525 \
              proxy\") makes each connection open with a PROXY protocol header (v1 or \
              v2, as HAProxy sends with send-proxy or send-proxy-v2) from an address \
              in proxy_trusted, before the greeting (before the TLS handshake on \
              tls_listen) and within timeout; the client address it names is the one \
              rules, greylisting, logs and events see. A missing, bad, oversized or \
              slow header closes the connection without a greeting; a v2 LOCAL \
              header (a health check) is the proxy's own connection. Each socket address may \
              be listed once, across listen and tls_listen, and the two together \
              may have at most 64 entries. Ports below 1024 need \
              root (see user and group) or CAP_NET_BIND_SERVICE (as the shipped \
              systemd unit gives). The original's comma-separated form, listen = \
              :25, :::25 mode=bounce, is read too.",
        form: Form::Value,
    },
    OptionDoc {
        name: "tls_listen",
        syntax: r#"["[ADDRESS]:PORT [mode=MODE] [delay=N|MIN-MAX] [proxy]", ...]"#,
        default: "[]",
        examples: &[r#"[":465"]"#, r#"[":465", ":::465 mode=random"]"#],
        doc: "Where to accept SMTP over TLS from the first byte (SMTPS, usually \
              port 465). Same syntax and flags as listen. Needs tls_cert and \
              tls_key.",
        form: Form::Value,
    },
    OptionDoc {
        name: "tls_cert",
        syntax: r#""PATH""#,
        default: "none",
        examples: &[r#""/etc/ssl/blackhole.crt""#],
        doc: "The TLS certificate chain, a PEM file, the server's certificate \
              first. Set together with tls_key: then plain listeners offer \
              STARTTLS and tls_listen can be used; one without the other is an \
              error. TLS 1.2 and 1.3 are offered. A missing or unreadable file, \
              or a key that does not match the certificate, stops the start \
              (exit 64), also under -t.",
        form: Form::Value,
    },
    OptionDoc {
        name: "tls_key",
        syntax: r#""PATH""#,
        default: "none",
        examples: &[r#""/etc/ssl/blackhole.key""#],
        doc: "The private key of tls_cert, a PEM file (PKCS#8, PKCS#1 or SEC1). \
              Keep it readable by the user blackhole starts as and nobody else.",
        form: Form::Value,
    },
    OptionDoc {
        name: "tls_dhparams",
        syntax: r#""PATH""#,
        default: "none",
        examples: &[r#""/etc/ssl/dhparams.pem""#],
        doc: "Accepted for compatibility with the original, and unused: the TLS \
              library (rustls) negotiates ECDHE key exchange only, which needs no \
              Diffie-Hellman parameters. Setting it logs a warning; the file is \
              not read.",
        form: Form::Value,
    },
    OptionDoc {
        name: "timeout",
        syntax: "SECONDS",
        default: "60",
        examples: &["30", "180"],
        doc: "Seconds a client may go without sending a complete line, in any \
              state (inside DATA, an AUTH exchange or the TLS handshake too), \
              before it gets \"421 Timeout\" and is disconnected. 1 to 180.",
        form: Form::Value,
    },
    OptionDoc {
        name: "delay",
        syntax: r#"N | "MIN-MAX""#,
        default: "none",
        examples: &["5", r#""5-10""#],
        doc: "Seconds to wait after a message's final dot before its final \
              reply: a number N, or a string \"MIN-MAX\" for a delay picked at \
              random from that range for each message. 0 to 60, MIN not above \
              MAX. Without it the reply is sent at once. Other connections never \
              wait for a delay; the delayed connection's pipelined commands do. \
              A listener's delay= flag, then a message's X-Blackhole-Delay header \
              (see dynamic_switch), come before this option.",
        form: Form::Value,
    },
    OptionDoc {
        name: "mode",
        syntax: r#""accept" | "bounce" | "random""#,
        default: r#""accept""#,
        examples: &[r#""bounce""#, r#""random""#],
        doc: "The final reply to each message. accept: \"250 2.0.0 OK: queued as \
              <id>\". bounce: one of ten errors, at random (450, 451, 452, 458, \
              521, 550, 551, 552, 553, 571). random: the accept reply or one of \
              the ten errors, each as likely. Case-insensitive. A listener's \
              mode= flag, then a message's X-Blackhole-Mode header (see \
              dynamic_switch), come before this option.",
        form: Form::Value,
    },
    OptionDoc {
        name: "max_message_size",
        syntax: "BYTES",
        default: "512000",
        examples: &["10485760"],
        doc: "The largest message, in bytes, advertised in the EHLO reply as \
              SIZE. MAIL FROM with a larger SIZE= gets 552 at once; a message \
              that turns out larger gets 552 after its final dot (its bytes are \
              counted as they pass, never stored). 1 to 1073741824 (1 GiB).",
        form: Form::Value,
    },
    OptionDoc {
        name: "dynamic_switch",
        syntax: "true | false",
        default: "true",
        examples: &["false"],
        doc: "Whether a message's headers may choose its fate, for that message \
              only: X-Blackhole-Mode: accept|bounce|random and X-Blackhole-Delay: \
              N or MIN, MAX (seconds; above 60 counts as 60). A malformed switch \
              header is ignored. Listeners with mode= or delay= flags ignore the \
              headers whatever this says.",
        form: Form::Value,
    },
    OptionDoc {
        name: "chunking",
        syntax: "true | false",
        default: "false",
        examples: &["true"],
        doc: "Whether CHUNKING (RFC 3030) is offered in the EHLO (and LHLO) reply \
              and BDAT SIZE [LAST] taken: a message in chunks whose octets follow \
              each BDAT line and are read by count, no dot-stuffing. Each chunk but \
              the last gets \"250 2.0.0 N octets received\"; the last gets the \
              message's final reply (mode, delay, switches, rules at message), as \
              DATA's final dot does. Sizes count against max_message_size (552 \
              after LAST). A chunk is read and thrown away when its transaction \
              was refused (503 without MAIL, 554 without an accepted RCPT). The \
              first BDAT of a transaction is the command rules at data see. Off, \
              EHLO is the original's byte for byte and BDAT an unknown command.",
        form: Form::Value,
    },
    OptionDoc {
        name: "mailname",
        syntax: r#""NAME""#,
        default: "the first line of /etc/mailname, else the host's name",
        examples: &[r#""mx.example.com""#],
        doc: "The name the server gives in its greeting (220 NAME ESMTP), its \
              EHLO reply and its message ids. One word, without spaces.",
        form: Form::Value,
    },
    OptionDoc {
        name: "max_connections",
        syntax: "N",
        default: "the descriptor limit (ulimit -n) less 16 and one per listener",
        examples: &["1000"],
        doc: "Connections served at once by a process (with workers > 1, by each \
              worker). Past it a new client gets \"421 4.3.2 Too many \
              connections\" and is closed at once, so a load test sees an SMTP \
              error it can count rather than a connection that hangs. 1 to \
              1000000. Set above what the descriptor limit allows, descriptors \
              run out first: accepting then pauses (100 ms, doubling to 1 s) \
              while the open connections are served, and new clients wait in the \
              kernel's backlog. Raise the limit with ulimit -n, or \
              LimitNOFILE= in the systemd unit.",
        form: Form::Value,
    },
    OptionDoc {
        name: "seed",
        syntax: "N",
        default: "none (a new seed at every start, logged)",
        examples: &["42"],
        doc: "Seeds every random choice: the random mode's reply, the bounce \
              code, a delay drawn from a range, message ids and CRAM-MD5 \
              challenges. Each connection draws from a generator made from the \
              seed and the connection's serial number in its process, so the \
              same seed and the same sequence of connections and commands give \
              the same replies, byte for byte, however the other connections \
              interleave. Without it a new seed is picked at every start and \
              logged, so that a run can be replayed with --seed. --seed N on the \
              command line overrides it. 0 to 9223372036854775807; takes a \
              restart.",
        form: Form::Value,
    },
    OptionDoc {
        name: "workers",
        syntax: "N",
        default: "1",
        examples: &["4"],
        doc: "Worker processes. 1 is one single-threaded process. N > 1 runs a \
              supervisor with N worker processes; the supervisor binds, per \
              listener, one SO_REUSEPORT socket for each worker, so that the kernel \
              spreads new connections across them, and restarts any worker that dies. 1 to 256; one \
              per CPU core is a good start.",
        form: Form::Value,
    },
    OptionDoc {
        name: "user",
        syntax: r#""NAME""#,
        default: "none (stay the user that started it)",
        examples: &[r#""blackhole""#],
        doc: "The user to become once the listeners are bound, so that port 25 \
              can be bound as root and mail is handled without root. Needs \
              blackhole to be started as root. Supplementary groups are dropped, \
              and the group becomes the group option, else the user's primary \
              group. Leave it unset under the shipped systemd unit, which \
              starts blackhole as the user blackhole with CAP_NET_BIND_SERVICE \
              instead.",
        form: Form::Value,
    },
    OptionDoc {
        name: "group",
        syntax: r#""NAME""#,
        default: "none (the user's primary group with user, else unchanged)",
        examples: &[r#""blackhole""#],
        doc: "The group to become once the listeners are bound (see user); \
              supplementary groups are dropped. Needs blackhole to be started as \
              root.",
        form: Form::Value,
    },
    OptionDoc {
        name: "pidfile",
        syntax: r#""PATH""#,
        default: "none",
        examples: &[r#""/run/blackhole/blackhole.pid""#],
        doc: "A file to write the process id to, once the listeners are bound; \
              it is removed on a clean exit. If the file names a process that is \
              still alive, a second start stops with an error instead (a file \
              left by a process that is gone is replaced). A path that cannot be \
              written stops the start (exit 77). Under the shipped systemd unit \
              use /run/blackhole/blackhole.pid: RuntimeDirectory=blackhole makes \
              that directory writable by the service's user.",
        form: Form::Value,
    },
    OptionDoc {
        name: "metrics_listen",
        syntax: r#""ADDRESS:PORT""#,
        default: "none (no metrics)",
        examples: &[r#""127.0.0.1:9025""#, r#""[::1]:9025""#],
        doc: "Where to serve HTTP for a Prometheus scraper, on the same event loop as the \
              mail: GET /metrics gives the counters and histograms of what the server saw \
              (connections, commands, messages by listener and reply code, bytes, AUTH, \
              rules, greylisting, delays) and the process_* metrics, in the Prometheus text \
              format; GET /healthz answers 200 while serving. With workers > 1 every worker \
              answers with the totals of all of them. The address is written as in listen, \
              without flags, and may not be the address of an SMTP listener. Nothing asks \
              for a password: keep it on a loopback address, as in the example, or behind \
              a firewall. Changing it takes a restart.",
        form: Form::Value,
    },
    OptionDoc {
        name: "event_log",
        syntax: r#""PATH" | "-""#,
        default: "none (no event log)",
        examples: &[r#""/var/log/blackhole/events.json""#, r#""-""#],
        doc: "A file to append one JSON object per line to: one per finished message \
              (time, connection, worker, listener, client, TLS, HELO name, AUTH user, MAIL \
              FROM, recipients, size, switches, rule, reply code, delays, duration) and one \
              per closed connection (messages, bytes, why it ended). \"-\" writes to \
              standard output instead. The file is created (mode 0640) if missing, and \
              written by a child process of its own so that a slow disk never holds up the \
              mail: lines it cannot take in time are dropped and counted (the metric \
              blackhole_event_log_dropped_total), never half-written. \
              With workers > 1 they all append whole lines to the one file. SIGHUP opens \
              the path again, so a log rotator can rename the file and then send SIGHUP.",
        form: Form::Value,
    },
    OptionDoc {
        name: "proxy_trusted",
        syntax: r#"["CIDR", ...]"#,
        default: r#"["127.0.0.0/8", "::1/128"]"#,
        examples: &[r#"["10.0.0.0/8"]"#, r#"["192.0.2.10", "2001:db8::/32"]"#],
        doc: "Who may send a PROXY protocol header, on listeners with the proxy \
              flag: the load balancers' addresses, as blocks (\"10.0.0.0/8\", \
              \"2001:db8::/32\") or single addresses, at most 1024. A connection to \
              such a listener from anywhere else is closed at once, without a \
              greeting, and counted in blackhole_proxy_rejected_total. SIGHUP reads \
              it again.",
        form: Form::Value,
    },
    OptionDoc {
        name: "greylist",
        syntax: "[greylist] table, after the options above",
        default: "none (no greylisting)",
        examples: &[
            "",
            "delay = \"5m\"\nexpire = \"1d\"\npass_for = 86400",
            "reply = \"450 4.7.1 Come back later\"\nmax_entries = 10000",
        ],
        doc: "Greylisting: a recipient is deferred the first time its triplet (client \
              address, MAIL FROM, RCPT TO) is seen, and let through when the client \
              retries once delay has passed, as a mail server's queue does; a retry \
              that comes too early is deferred again. The table turns it on: an empty \
              [greylist] means every default. Durations are whole seconds, or a string \
              with a unit: \"90s\", \"15m\", \"4h\", \"36d\". Any other key is an \
              error. SIGHUP reads the table again, and the triplets already remembered \
              are kept. Greylisting exists only in a TOML file.",
        form: Form::Table(&[
            KeyDoc {
                name: "delay",
                syntax: "SECONDS | \"DURATION\"",
                doc: "How long a client must wait before its retry is let through. 0 \
                      to 1 day; default 60 (seconds).",
            },
            KeyDoc {
                name: "expire",
                syntax: "SECONDS | \"DURATION\"",
                doc: "How long a triplet that has not passed yet is remembered: a retry \
                      after that is a first sight again. 1 second to 30 days, and at \
                      least delay; default \"4h\".",
            },
            KeyDoc {
                name: "pass_for",
                syntax: "SECONDS | \"DURATION\"",
                doc: "How long a triplet that passed is let through without waiting, \
                      counted from its last pass. 1 second to 366 days; default \"36d\".",
            },
            KeyDoc {
                name: "reply",
                syntax: "\"CODE TEXT\"",
                doc: "What a deferred recipient is told: one line, a 4xx code, then a \
                      space and the text. Default \"451 4.7.1 Greylisted, try again \
                      later\".",
            },
            KeyDoc {
                name: "max_entries",
                syntax: "N",
                doc: "The most triplets remembered, a bound on memory: past it the \
                      oldest are forgotten first. 1 to 100000000; default 1000000.",
            },
        ]),
    },
    OptionDoc {
        name: "rule",
        syntax: "[[rule]] tables, after the options above",
        default: "none",
        examples: &[
            "on = \"rcpt\"\nmatch = \"nobody@*\"\nreply = \"550 5.1.1 No such user\"",
            "name = \"slow greeting\"\non = \"connect\"\nlistener = \":25\"\n\
             delay = \"1-30\"\nprobability = 0.1",
            "name = \"cut off\"\non = \"message\"\nclient = [\"10.0.0.0/8\", \"::1\"]\n\
             every = 10\ndisconnect = \"close\"\nafter_bytes = 10000",
        ],
        doc: "Scripted faults and latency. For each command the rules are tried \
              in file order, and the first that matches and fires decides: a rule \
              matches when its stage (on) and every condition it has (match, \
              client, listener) hold, and fires when every chance it has \
              (probability, first, every, rate) allows. It then does all of its \
              effects: reply, delay, disconnect (with after_bytes), throttle; it \
              needs at least one, and reply and disconnect do not go together. \
              Every key but on is optional, and any other key is an error naming \
              the rule. SIGHUP reads the rules again, and their counts (first, \
              every, rate) start afresh. Rules exist only in a TOML file.",
        form: Form::Tables(&[
            KeyDoc {
                name: "name",
                syntax: "\"TEXT\"",
                doc: "The rule's name in logs, events, metrics and error messages; \
                      one line of at most 100 characters, each rule's own. Default: \
                      rule N, N counting the rules from 1 in file order.",
            },
            KeyDoc {
                name: "on",
                syntax: "\"STAGE\"",
                doc: "Required: where the rule applies. connect (the greeting), helo \
                      (HELO, EHLO and LHLO), mail, rcpt, data (the DATA command), \
                      message (the final reply after the message), auth, starttls, \
                      rset, noop, quit, vrfy, expn, or any (every stage).",
            },
            KeyDoc {
                name: "match",
                syntax: "\"GLOB\"",
                doc: "Matches only commands whose subject fits the pattern: * is any \
                      run of characters, ? one character, case-insensitive. The \
                      subject is the address without <> for mail and rcpt, the \
                      domain for helo, the user name for auth and the MAIL FROM \
                      address for message. At most 256 bytes.",
            },
            KeyDoc {
                name: "client",
                syntax: "\"CIDR\" | [\"CIDR\", ...]",
                doc: "Matches only clients in these blocks: \"10.0.0.0/8\", \
                      \"2001:db8::/32\", or one address, \"192.0.2.7\" or \"::1\". An \
                      IPv4 client on an IPv6 listener is its IPv4 address. At most \
                      1024 entries.",
            },
            KeyDoc {
                name: "listener",
                syntax: "\"[ADDRESS]:PORT\"",
                doc: "Matches only connections to this listener: its address as \
                      written in listen or tls_listen, without the flags \
                      (\"127.0.0.1:2525\" is the entry \"127.0.0.1:2525 \
                      mode=bounce\"). An address that is no listener is an error.",
            },
            KeyDoc {
                name: "probability",
                syntax: "P",
                doc: "Fires a match with this chance, from 0 to 1 (0.25 is one in \
                      four), drawn from the seed.",
            },
            KeyDoc {
                name: "first",
                syntax: "N",
                doc: "Fires only the first N matches, then rests: fail N times, then \
                      succeed. 1 to 9223372036854775807.",
            },
            KeyDoc {
                name: "every",
                syntax: "N",
                doc: "Fires only every Nth match: the Nth, the 2Nth, and so on. 1 to \
                      9223372036854775807.",
            },
            KeyDoc {
                name: "rate",
                syntax: "\"N/SECONDS\"",
                doc: "Fires only a client's matches beyond N within any SECONDS: \
                      \"10/60\" lets ten a minute through and fires on the rest. N \
                      from 0, SECONDS from 1 to 86400.",
            },
            KeyDoc {
                name: "reply",
                syntax: "\"CODE TEXT\"",
                doc: "The reply instead of the normal one: one line, a code from 200 \
                      to 599, then a space and the text (an enhanced code is \
                      optional). A 4xx or 5xx to mail, rcpt or data has the usual \
                      consequences for the transaction.",
            },
            KeyDoc {
                name: "delay",
                syntax: "SECONDS | \"MIN-MAX\"",
                doc: "Seconds to wait before the reply, a number or a range drawn \
                      from for each firing; decimals allowed, to the millisecond. 0 \
                      to 600. The idle timeout does not run while the server delays.",
            },
            KeyDoc {
                name: "disconnect",
                syntax: "\"close\" | \"421\"",
                doc: "Ends the connection: close without a reply, or say 421 \
                      (closing connection) first. Not with reply: a disconnect says \
                      its own words.",
            },
            KeyDoc {
                name: "after_bytes",
                syntax: "BYTES",
                doc: "With on = \"message\" and disconnect: disconnect once this many \
                      bytes of the message have arrived, in the middle of DATA. 1 to \
                      1073741824.",
            },
            KeyDoc {
                name: "throttle",
                syntax: "BYTES_PER_SECOND",
                doc: "From then on, read the connection no faster than this. 1 to \
                      1000000000.",
            },
        ]),
    },
];

/// Width of the documentation's lines, indentation included.
const WIDTH: usize = 79;
/// Indentation of everything under an option's name.
const INDENT: &str = "    ";

const INTRODUCTION: &str = "\
blackhole reads its configuration from the file given with -c, else \
./blackhole.toml, else /etc/blackhole.toml, else uses the defaults below. \
The file is TOML; the original blackhole's key = value files are read \
too, unchanged. Every option is optional. An unknown option or a bad value \
stops the start with a message naming the file, the option and, for a \
rule, its number and name (exit 64); \
blackhole -t -c FILE checks a file without serving.

SIGHUP reads the file again: mode, delay, timeout, max_message_size, \
dynamic_switch, max_connections, proxy_trusted and the listeners' mode=, \
delay= and proxy flags apply to messages and connections from then on, and open connections stay. \
Rules are read again too, their counts starting afresh, and so is \
[greylist], keeping the triplets it remembers. \
The event_log file is opened again (after a log rotation, or at a new \
path). The listener addresses, the TLS files, user, group, workers, pidfile, \
seed and metrics_listen take a restart.";

/// The documentation of every option, as plain text: an introduction, then
/// one section per option with its syntax, default, examples and a wrapped
/// paragraph. What `blackhole --help-config` prints.
pub fn options_documentation() -> String {
    let mut out = String::from("blackhole configuration options\n");
    for paragraph in INTRODUCTION.split("\n\n") {
        out.push('\n');
        out.push_str(&wrap(paragraph, "", WIDTH));
    }
    for option in OPTIONS {
        out.push('\n');
        out.push_str(option.name);
        out.push('\n');
        out.push_str(&format!("{INDENT}syntax:   {}\n", option.syntax));
        out.push_str(&format!("{INDENT}default:  {}\n", option.default));
        for example in option.examples {
            for (i, line) in option.example_toml(example).lines().enumerate() {
                let label = if i == 0 { "example:" } else { "" };
                out.push_str(&format!("{INDENT}{label:<10}{line}\n"));
            }
        }
        out.push('\n');
        out.push_str(&wrap(option.doc, INDENT, WIDTH));
        for key in option.keys() {
            out.push('\n');
            out.push_str(&format!("{INDENT}{} = {}\n", key.name, key.syntax));
            out.push_str(&wrap(key.doc, &INDENT.repeat(2), WIDTH));
        }
    }
    out
}

/// `text` wrapped at word boundaries into lines of at most `width`
/// characters, each starting with `indent` and ending with a newline. A
/// word longer than a line gets a line of its own rather than being cut.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let needed = indent.len() + line.chars().count() + 1 + word.chars().count();
        if !line.is_empty() && needed > width {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete() {
        for (i, option) in OPTIONS.iter().enumerate() {
            assert!(
                !option.name.is_empty()
                    && option
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{option:?}"
            );
            assert!(
                !OPTIONS[..i].iter().any(|o| o.name == option.name),
                "{} is in the table twice",
                option.name
            );
            assert!(!option.syntax.is_empty(), "{}: no syntax", option.name);
            assert!(!option.default.is_empty(), "{}: no default", option.name);
            assert!(!option.examples.is_empty(), "{}: no example", option.name);
            assert!(
                option.doc.ends_with('.') && option.doc.len() > 40,
                "{}: the documentation should be a paragraph",
                option.name
            );
            for (j, key) in option.keys().iter().enumerate() {
                assert!(
                    !key.name.is_empty()
                        && key
                            .name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{key:?}"
                );
                assert!(
                    !option.keys()[..j].iter().any(|k| k.name == key.name),
                    "{}.{} is in the table twice",
                    option.name,
                    key.name
                );
                assert!(!key.syntax.is_empty(), "{}: no syntax", key.name);
                assert!(key.doc.ends_with('.'), "{}: not a sentence", key.name);
            }
        }
    }

    /// The words of the paragraph that starts at `lines[at]`.
    fn paragraph<'a>(lines: &[&'a str], at: usize) -> Vec<&'a str> {
        lines[at..]
            .iter()
            .take_while(|line| !line.is_empty())
            .flat_map(|line| line.split_whitespace())
            .collect()
    }

    #[test]
    fn documentation_has_a_section_per_option() {
        let text = options_documentation();
        let lines: Vec<&str> = text.lines().collect();
        for option in OPTIONS {
            let at = lines
                .iter()
                .position(|line| *line == option.name)
                .unwrap_or_else(|| panic!("no section for {}", option.name));
            assert_eq!(lines[at - 1], "", "{}: no blank line before", option.name);
            assert_eq!(
                lines[at + 1],
                format!("    syntax:   {}", option.syntax),
                "{}",
                option.name
            );
            assert_eq!(
                lines[at + 2],
                format!("    default:  {}", option.default),
                "{}",
                option.name
            );
            // Each example, as the file spells it, the first line labelled.
            let mut at = at + 3;
            for example in option.examples {
                for (i, line) in option.example_toml(example).lines().enumerate() {
                    let label = if i == 0 { "example:" } else { "" };
                    assert_eq!(
                        lines[at],
                        format!("    {label:<10}{line}"),
                        "{}",
                        option.name
                    );
                    at += 1;
                }
            }
            // The paragraph, every word of it, follows the examples.
            let expected: Vec<&str> = option.doc.split_whitespace().collect();
            assert_eq!(paragraph(&lines, at + 1), expected, "{}", option.name);
            at += 1 + lines[at + 1..].iter().take_while(|l| !l.is_empty()).count();
            // Then each key of a table, its syntax and its paragraph.
            for key in option.keys() {
                assert_eq!(lines[at], "", "{}: no blank line before", key.name);
                assert_eq!(lines[at + 1], format!("    {} = {}", key.name, key.syntax));
                let expected: Vec<&str> = key.doc.split_whitespace().collect();
                assert_eq!(paragraph(&lines, at + 2), expected, "{}", key.name);
                assert!(lines[at + 2].starts_with("        "), "{}", key.name);
                at += 2 + lines[at + 2..].iter().take_while(|l| !l.is_empty()).count();
            }
        }
        assert!(!text.contains("\n\n\n"), "two blank lines in a row");
        for line in &lines {
            assert!(line.chars().count() <= WIDTH, "too long: {line:?}");
            assert_eq!(line.trim_end(), *line, "trailing space: {line:?}");
        }
        assert!(text.ends_with(".\n"), "{text}");
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("", "  ", 10), "");
        assert_eq!(wrap("a b c", "", 10), "a b c\n");
        assert_eq!(wrap("aaaa bbbb cccc", "", 9), "aaaa bbbb\ncccc\n");
        assert_eq!(wrap("aaaa bbbb cccc", "  ", 11), "  aaaa bbbb\n  cccc\n");
        // A word longer than the width stands on its own line, whole.
        assert_eq!(wrap("a verylongword b", "", 5), "a\nverylongword\nb\n");
        // Runs of spaces and newlines in the source are one space.
        assert_eq!(wrap("a  \n b", "", 10), "a b\n");
    }
}
