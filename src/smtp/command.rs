//! Framing of what a client sends: command lines, verbs, and the end of DATA.
//!
//! Everything here works on bytes that may stop anywhere: a caller hands in what has arrived
//! and learns how much of it was used, so a partial line waits for more and pipelined
//! commands cost nothing. Nothing is stored: command lines are borrowed from the input and
//! message bytes are counted and dropped. No replies are chosen here.

/// The longest command line accepted, line end included. Longer lines are answered with an
/// error once their end arrives; their bytes are dropped as they come, so a client can never
/// make the server hold more than this of an unfinished line.
pub const MAX_LINE: usize = 2048;

/// The next thing in a stream of command lines.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line, without its CRLF (or bare LF).
    Complete(&'a [u8]),
    /// The end of a line that was longer than [`MAX_LINE`]; its bytes are gone.
    TooLong,
}

/// Finds the next line in `input`. Returns the bytes used and the line, or `None` when more
/// input is needed. `discarding` carries the state of an over-long line between calls.
pub fn next_line<'a>(input: &'a [u8], discarding: &mut bool) -> (usize, Option<Line<'a>>) {
    if *discarding {
        return match memchr(b'\n', input) {
            Some(end) => {
                *discarding = false;
                (end + 1, Some(Line::TooLong))
            }
            None => (input.len(), None),
        };
    }
    let window = &input[..input.len().min(MAX_LINE)];
    match memchr(b'\n', window) {
        Some(end) => {
            let line = &input[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            (end + 1, Some(Line::Complete(line)))
        }
        None if input.len() >= MAX_LINE => {
            *discarding = true;
            next_line(input, discarding)
        }
        None => (0, None),
    }
}

/// The verbs the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Etrn,
    Help,
    Auth,
    StartTls,
    /// RFC 3030's chunk of message data.
    Bdat,
    /// RFC 2033's greeting, on an LMTP listener.
    Lhlo,
    Unknown,
}

/// Splits a command line into its verb and its argument, the argument trimmed of spaces.
pub fn parse_command(line: &[u8]) -> (Verb, &[u8]) {
    let (word, rest) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &b""[..]),
    };
    const VERBS: [(&[u8], Verb); 16] = [
        (b"MAIL", Verb::Mail),
        (b"RCPT", Verb::Rcpt),
        (b"DATA", Verb::Data),
        (b"EHLO", Verb::Ehlo),
        (b"HELO", Verb::Helo),
        (b"RSET", Verb::Rset),
        (b"NOOP", Verb::Noop),
        (b"QUIT", Verb::Quit),
        (b"AUTH", Verb::Auth),
        (b"VRFY", Verb::Vrfy),
        (b"EXPN", Verb::Expn),
        (b"ETRN", Verb::Etrn),
        (b"HELP", Verb::Help),
        (b"STARTTLS", Verb::StartTls),
        (b"BDAT", Verb::Bdat),
        (b"LHLO", Verb::Lhlo),
    ];
    let verb = VERBS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(word))
        .map_or(Verb::Unknown, |&(_, verb)| verb);
    (verb, trim(rest))
}

/// `bytes` without leading and trailing ASCII white space.
pub fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Splits `bytes` into words separated by runs of spaces or tabs.
pub fn words(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
}

pub use memchr::memchr;

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// How far the DATA scanner is into the line it is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// After a CRLF: a `.` here may start the terminator.
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` CR at the start of a line: LF ends the message.
    DotCr,
    /// Inside a line.
    Text,
    /// CR inside a line: LF ends the line.
    Cr,
}

/// How many bytes of a header line are kept to look for a switch header. The longest valid
/// switch, `X-Blackhole-Delay: 60, 60`, is 25 bytes; longer lines are not switches.
pub const HEADER_CAPTURE: usize = 64;

/// Follows a message after `354` until `<CRLF>.<CRLF>`, counting its bytes and handing each
/// header line (lines before the first empty one) to a callback. Made with
/// [`DataScanner::for_chunks`], it follows BDAT chunks instead: the caller counts where they
/// end, and a `.` line is text like any other.
///
/// Only CR LF `.` CR LF ends the message: a bare LF neither ends a line nor starts one, so
/// `<LF>.<LF>`, `<CR><LF>.<LF>`, `<LF>.<CR><LF>` and `<CR>.<CR>` are message text. Text
/// between CRs is skipped with one vectorised search: a message costs about one step per line.
#[derive(Debug, Clone)]
pub struct DataScanner {
    at: At,
    in_headers: bool,
    /// Length of the header line so far (it may be longer than what is kept).
    header_len: u16,
    header: [u8; HEADER_CAPTURE],
    /// BDAT chunks: no dot ends the message.
    chunked: bool,
    size: u64,
}

impl Default for DataScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl DataScanner {
    pub fn new() -> Self {
        DataScanner {
            at: At::LineStart,
            in_headers: true,
            header_len: 0,
            header: [0; HEADER_CAPTURE],
            chunked: false,
            size: 0,
        }
    }

    /// A scanner for a message sent in BDAT chunks (RFC 3030): octets counted by the
    /// client, no dot-stuffing, no terminator; [`DataScanner::feed`] never ends it.
    pub fn for_chunks() -> Self {
        DataScanner {
            chunked: true,
            ..Self::new()
        }
    }

    /// Bytes of the message so far, the final `.<CRLF>` included once it has arrived.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads message bytes. Returns how many were used and whether the message ended; after
    /// the end, the rest of `input` is not touched. `on_header` gets each whole header line
    /// of at most [`HEADER_CAPTURE`] bytes, without its CRLF.
    pub fn feed(&mut self, input: &[u8], mut on_header: impl FnMut(&[u8])) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            if self.at == At::Text {
                let rest = &input[i..];
                let text = memchr(b'\r', rest).unwrap_or(rest.len());
                self.keep(&rest[..text]);
                i += text;
                if text < rest.len() {
                    i += 1;
                    self.at = At::Cr;
                }
                continue;
            }
            let byte = input[i];
            i += 1;
            self.at = match (self.at, byte) {
                (At::DotCr, b'\n') => {
                    self.size = self.size.saturating_add(i as u64);
                    return (i, true);
                }
                (At::Cr, b'\n') => {
                    if self.in_headers {
                        self.end_header_line(&mut on_header);
                    }
                    At::LineStart
                }
                (At::LineStart, b'.') if !self.chunked => {
                    self.keep(b".");
                    At::Dot
                }
                (At::Dot, b'\r') => At::DotCr,
                // A CR that no LF followed is text; the new one may still end the line.
                (At::Cr | At::DotCr, b'\r') => {
                    self.keep(b"\r");
                    At::Cr
                }
                (At::LineStart, b'\r') => At::Cr,
                (At::Cr | At::DotCr, _) => {
                    self.keep(&[b'\r', byte]);
                    At::Text
                }
                _ => {
                    self.keep(&[byte]);
                    At::Text
                }
            };
        }
        self.size = self.size.saturating_add(i as u64);
        (i, false)
    }

    /// Keeps the start of the current header line.
    fn keep(&mut self, bytes: &[u8]) {
        if !self.in_headers {
            return;
        }
        let len = usize::from(self.header_len);
        if len < HEADER_CAPTURE {
            let n = bytes.len().min(HEADER_CAPTURE - len);
            self.header[len..len + n].copy_from_slice(&bytes[..n]);
        }
        let added = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        self.header_len = self.header_len.saturating_add(added);
    }

    /// A header line has ended; an empty one ends the headers.
    fn end_header_line(&mut self, on_header: &mut impl FnMut(&[u8])) {
        let len = usize::from(self.header_len);
        if len == 0 {
            self.in_headers = false;
        } else if len <= HEADER_CAPTURE {
            on_header(&self.header[..len]);
        }
        self.header_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<Result<Vec<u8>, ()>> {
        let mut out = Vec::new();
        let mut discarding = false;
        let mut rest = input;
        loop {
            let (used, line) = next_line(rest, &mut discarding);
            rest = &rest[used..];
            match line {
                Some(Line::Complete(l)) => out.push(Ok(l.to_vec())),
                Some(Line::TooLong) => out.push(Err(())),
                None => break,
            }
        }
        out
    }

    #[test]
    fn lines_end_at_crlf_or_bare_lf() {
        assert_eq!(
            lines(b"NOOP\r\nQUIT\nHELO x\r\npartial"),
            vec![
                Ok(b"NOOP".to_vec()),
                Ok(b"QUIT".to_vec()),
                Ok(b"HELO x".to_vec())
            ]
        );
    }

    #[test]
    fn a_line_of_max_length_is_whole_and_one_more_is_too_long() {
        let mut fits = vec![b'a'; MAX_LINE - 2];
        fits.extend_from_slice(b"\r\n");
        assert_eq!(lines(&fits), vec![Ok(vec![b'a'; MAX_LINE - 2])]);
        let mut long = vec![b'a'; MAX_LINE - 1];
        long.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(lines(&long), vec![Err(()), Ok(b"NOOP".to_vec())]);
    }

    #[test]
    fn an_over_long_line_is_dropped_as_it_arrives() {
        let mut discarding = false;
        let chunk = vec![b'x'; 10 * MAX_LINE];
        let (used, line) = next_line(&chunk, &mut discarding);
        assert_eq!((used, line), (chunk.len(), None));
        assert!(discarding);
        let (used, line) = next_line(&chunk, &mut discarding);
        assert_eq!((used, line), (chunk.len(), None));
        let (used, line) = next_line(b"xx\r\nNOOP\r\n", &mut discarding);
        assert_eq!((used, line), (4, Some(Line::TooLong)));
        assert!(!discarding);
    }

    #[test]
    fn a_partial_line_uses_nothing() {
        let mut discarding = false;
        assert_eq!(next_line(b"NOO", &mut discarding), (0, None));
        assert_eq!(next_line(b"", &mut discarding), (0, None));
    }

    #[test]
    fn verbs_are_case_insensitive_and_arguments_trimmed() {
        assert_eq!(
            parse_command(b"mAiL FROM:<a@b>  "),
            (Verb::Mail, &b"FROM:<a@b>"[..])
        );
        assert_eq!(parse_command(b"QUIT"), (Verb::Quit, &b""[..]));
        assert_eq!(parse_command(b"starttls"), (Verb::StartTls, &b""[..]));
        assert_eq!(parse_command(b"NOT_IMPLEMENTED"), (Verb::Unknown, &b""[..]));
        assert_eq!(parse_command(b""), (Verb::Unknown, &b""[..]));
        assert_eq!(parse_command(b"\xc3\x28"), (Verb::Unknown, &b""[..]));
    }

    /// Feeds `message` to a scanner in pieces of `step` bytes; returns where it ended (bytes
    /// used in all), the size it counted and the header lines it saw.
    fn scan(message: &[u8], step: usize) -> (Option<usize>, u64, Vec<Vec<u8>>) {
        let mut scanner = DataScanner::new();
        let mut headers = Vec::new();
        let mut offset = 0;
        while offset < message.len() {
            let end = (offset + step).min(message.len());
            let (used, ended) = scanner.feed(&message[offset..end], |h| headers.push(h.to_vec()));
            offset += used;
            if ended {
                return (Some(offset), scanner.size(), headers);
            }
            assert_eq!(offset, end, "a scanner that has not ended uses everything");
        }
        (None, scanner.size(), headers)
    }

    fn scan_every_split(message: &[u8]) -> (Option<usize>, u64, Vec<Vec<u8>>) {
        let whole = scan(message, message.len().max(1));
        for step in 1..message.len() {
            assert_eq!(scan(message, step), whole, "split every {step} bytes");
        }
        whole
    }

    #[test]
    fn only_crlf_dot_crlf_ends_a_message() {
        let message = b"Subject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n";
        let (end, size, headers) = scan_every_split(message);
        assert_eq!(end, Some(message.len() - 6));
        assert_eq!(size, (message.len() - 6) as u64);
        assert_eq!(headers, vec![b"Subject: x".to_vec()]);
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        assert_eq!(scan_every_split(b".\r\n"), (Some(3), 3, vec![]));
    }

    #[test]
    fn smuggled_terminators_are_message_text() {
        for smuggled in [
            &b"body\n.\nNOOP\r\n"[..],
            b"body\r\n.\nNOOP\r\n",
            b"body\n.\r\nNOOP\r\n",
            b"body\r.\rNOOP\r\n",
            b"body\r\n..\r\n",
            b"body\r\n.x\r\n",
        ] {
            let (end, size, _) = scan_every_split(smuggled);
            assert_eq!(
                end,
                None,
                "{:?} ended the message",
                String::from_utf8_lossy(smuggled)
            );
            assert_eq!(size, smuggled.len() as u64);
            let mut then_ended = smuggled.to_vec();
            then_ended.extend_from_slice(b".\r\n");
            if then_ended.ends_with(b"\r\n.\r\n") {
                assert_eq!(scan_every_split(&then_ended).0, Some(then_ended.len()));
            }
        }
    }

    #[test]
    fn header_lines_stop_at_the_first_empty_line() {
        let message = b"X-Blackhole-Mode: bounce\r\nTo: a\r\n\r\nX-Blackhole-Delay: 5\r\n.\r\n";
        let (_, _, headers) = scan_every_split(message);
        assert_eq!(
            headers,
            vec![b"X-Blackhole-Mode: bounce".to_vec(), b"To: a".to_vec()]
        );
    }

    #[test]
    fn long_header_lines_are_not_captured() {
        let mut message = b"Subject: ".to_vec();
        message.extend(std::iter::repeat_n(b'y', 100));
        message.extend_from_slice(b"\r\nX-A: b\r\n\r\n.\r\n");
        let (_, _, headers) = scan_every_split(&message);
        assert_eq!(headers, vec![b"X-A: b".to_vec()]);
    }

    #[test]
    fn a_lone_cr_stays_in_a_header_line() {
        let (_, _, headers) = scan_every_split(b"A: b\rc\r\n\r\n.\r\n");
        assert_eq!(headers, vec![b"A: b\rc".to_vec()]);
    }
}
