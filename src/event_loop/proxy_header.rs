//! The PROXY protocol header (HAProxy's v1 text and v2 binary forms) that a load balancer
//! sends before anything else on a listener flagged `proxy`: read from the bytes received so
//! far, without I/O, inside this module's bounds. v2 is the `ppp` crate's; the v1 line is
//! read here, since `ppp`'s general text parser took about 1,900 instructions a header
//! (a quarter of a whole connection's work in user space) where this takes a few hundred.
//!
//! The loop reads the header with the connection's first read; whatever follows it (the
//! client's first SMTP bytes, or its TLS ClientHello) is the connection's own input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ppp::v2;

/// A v1 header's bound, set by the protocol: "PROXY TCP6", two full IPv6 addresses, two
/// ports and CRLF.
pub const MAX_V1: usize = 107;
/// The v2 fixed part: the 12-byte signature, version and command, family and protocol,
/// and the length of what follows.
const V2_FIXED: usize = 16;
/// The most a v2 header may carry after its fixed part, addresses and TLVs together. The
/// protocol allows 65535; what load balancers send (addresses, an ALPN, an authority, a
/// unique id, SSL details) fits well within this, and more is refused.
const MAX_V2_PAYLOAD: usize = 512;
/// The most bytes a header may take, whichever its version: what the loop peeks at.
pub const MAX_HEADER: usize = V2_FIXED + MAX_V2_PAYLOAD;

/// What the bytes received so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// A whole header of `length` bytes. `client` is the address it names; `None` where it
    /// names none: a v2 `LOCAL` (the proxy's own health check), a v1 `UNKNOWN`, or a v2
    /// `PROXY` of an unspecified or UNIX family. The connection is then the proxy's own.
    Complete {
        length: usize,
        client: Option<IpAddr>,
    },
    /// Not whole yet: more bytes may make it a header.
    Incomplete,
    /// Not a header, or one beyond the bounds: why, for the debug log.
    Invalid(&'static str),
}

/// Reads the header at the start of `input`, the bytes the client has sent so far.
pub fn read(input: &[u8]) -> Reading {
    let signature = v2::PROTOCOL_PREFIX;
    if input.starts_with(signature) || signature.starts_with(input) {
        read_v2(input)
    } else {
        read_v1(input)
    }
}

/// A v1 line is parsed once it has ended: `ppp` takes some prefixes of a good line (one
/// ending in a space) for bad ones. Until then the bytes must start as a header does.
fn read_v1(input: &[u8]) -> Reading {
    const START: &[u8] = b"PROXY ";
    let Some(end) = memchr::memchr(b'\n', input) else {
        let started = &input[..input.len().min(START.len())];
        return if input.len() >= MAX_V1 {
            Reading::Invalid("a v1 header longer than 107 bytes")
        } else if START.starts_with(started) {
            Reading::Incomplete
        } else {
            Reading::Invalid("not a PROXY header")
        };
    };
    let line = &input[..=end];
    if line.len() > MAX_V1 {
        return Reading::Invalid("a v1 header longer than 107 bytes");
    }
    match v1_client(line) {
        Some(client) => Reading::Complete {
            length: line.len(),
            client,
        },
        None => Reading::Invalid("a malformed v1 header"),
    }
}

/// The client a whole v1 line names (`None` inside: `UNKNOWN`), or `None` if the line is
/// not one: `PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT` and CRLF, single spaces, the
/// addresses of the protocol's family, ports 0 to 65535 without leading zeros; or
/// `PROXY UNKNOWN` and anything up to CRLF. Every connection through a `send-proxy`
/// balancer has one, so a TCP4 line is read in one pass, without splitting it first.
fn v1_client(line: &[u8]) -> Option<Option<IpAddr>> {
    let fields = line.strip_suffix(b"\r\n")?.strip_prefix(b"PROXY ")?;
    if let Some(rest) = fields.strip_prefix(b"TCP4 ") {
        let (source, rest) = ipv4_then_space(rest)?;
        let (_, rest) = ipv4_then_space(rest)?;
        return ports(rest).then_some(Some(IpAddr::V4(source)));
    }
    if let Some(rest) = fields.strip_prefix(b"TCP6 ") {
        let (source, rest) = word(rest)?;
        let (destination, rest) = word(rest)?;
        address::<Ipv6Addr>(destination)?;
        let source = address::<Ipv6Addr>(source)?;
        return ports(rest).then_some(Some(IpAddr::V6(source)));
    }
    (fields == b"UNKNOWN" || fields.starts_with(b"UNKNOWN ")).then_some(None)
}

/// The text before the first space, and what follows that space.
fn word(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = text.iter().position(|&b| b == b' ')?;
    Some((&text[..space], &text[space + 1..]))
}

fn address<A: FromStr>(text: &[u8]) -> Option<A> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A dotted quad as `Ipv4Addr`'s own parser takes it (four decimal octets, no leading
/// zero), then a space: the address and what follows the space.
fn ipv4_then_space(text: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let mut octets = [0u8; 4];
    let mut rest = text;
    for (index, octet) in octets.iter_mut().enumerate() {
        let (value, after) = decimal(rest, 255)?;
        let (&end, after) = after.split_first()?;
        if end != if index == 3 { b' ' } else { b'.' } {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
        rest = after;
    }
    Some((Ipv4Addr::from(octets), rest))
}

/// `SPORT DPORT` and nothing after.
fn ports(text: &[u8]) -> bool {
    let Some((_, rest)) = decimal(text, 65535) else {
        return false;
    };
    match rest.split_first() {
        Some((b' ', rest)) => matches!(decimal(rest, 65535), Some((_, []))),
        _ => false,
    }
}

/// The number at the start of `text` as v1 writes numbers (decimal, no leading zero, at
/// most `max`), and what follows it.
fn decimal(text: &[u8], max: u64) -> Option<(u64, &[u8])> {
    let (digits, rest) = text.split_at(text.iter().take_while(|b| b.is_ascii_digit()).count());
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    let value = crate::smtp::decimal::saturating(digits)?;
    (value <= max).then_some((value, rest))
}

/// A v2 header, refused as soon as its fixed part declares more than the bound.
fn read_v2(input: &[u8]) -> Reading {
    if declared_v2_length(input).is_some_and(|payload| payload > MAX_V2_PAYLOAD) {
        return Reading::Invalid("a v2 header longer than 528 bytes");
    }
    match v2::Header::try_from(input) {
        Ok(header) => whole_v2(&header),
        Err(e) if ppp::PartialResult::is_incomplete(&e) => Reading::Incomplete,
        Err(_) => Reading::Invalid("a malformed v2 header"),
    }
}

/// A v2 header's payload length, as its fixed part declares it, once that has come.
fn declared_v2_length(input: &[u8]) -> Option<usize> {
    let fixed = input.get(..V2_FIXED)?;
    fixed
        .starts_with(v2::PROTOCOL_PREFIX)
        .then(|| usize::from(u16::from_be_bytes([fixed[14], fixed[15]])))
}

/// A whole v2 header: its TLVs must be well formed, though none is used.
fn whole_v2(header: &v2::Header) -> Reading {
    if header.tlvs().any(|tlv| tlv.is_err()) {
        return Reading::Invalid("a v2 header with malformed TLVs");
    }
    let client = match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some(IpAddr::V4(a.source_address)),
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some(IpAddr::V6(a.source_address)),
        (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
    };
    Reading::Complete {
        length: header.len(),
        client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    /// A v2 header: command (`0x20` LOCAL, `0x21` PROXY), family and protocol, then the
    /// payload (addresses, then TLVs).
    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut header = SIGNATURE.to_vec();
        header.push(command);
        header.push(family);
        let length = u16::try_from(payload.len()).expect("a payload that fits");
        header.extend_from_slice(&length.to_be_bytes());
        header.extend_from_slice(payload);
        header
    }

    fn v4_addresses(source: [u8; 4], destination: [u8; 4]) -> Vec<u8> {
        let mut payload = source.to_vec();
        payload.extend_from_slice(&destination);
        payload.extend_from_slice(&40000u16.to_be_bytes());
        payload.extend_from_slice(&25u16.to_be_bytes());
        payload
    }

    /// Every way the header can arrive split in two: each prefix is incomplete, and the
    /// whole (with `after`, the client's first bytes, behind it) gives `expected`, its
    /// length leaving `after` untouched.
    fn check_split_everywhere(header: &[u8], expected: Option<IpAddr>) {
        for cut in 0..header.len() {
            assert_eq!(
                read(&header[..cut]),
                Reading::Incomplete,
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(header)
            );
        }
        let after = b"EHLO client.example\r\n";
        let mut input = header.to_vec();
        input.extend_from_slice(after);
        let whole = Reading::Complete {
            length: header.len(),
            client: expected,
        };
        assert_eq!(read(header), whole);
        assert_eq!(
            read(&input),
            whole,
            "bytes after the header are not its own"
        );
    }

    #[test]
    fn v1_tcp4_split_at_every_byte() {
        check_split_everywhere(
            b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n",
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
        );
    }

    #[test]
    fn v1_tcp6_split_at_every_byte() {
        check_split_everywhere(
            b"PROXY TCP6 2001:db8::7 ::1 40000 25\r\n",
            Some("2001:db8::7".parse().expect("an address")),
        );
        // The longest a v1 header can be is within the bound.
        let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                        ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), MAX_V1 - 3);
        check_split_everywhere(longest, Some(IpAddr::V6(Ipv6Addr::from(u128::MAX))));
    }

    #[test]
    fn v1_unknown_names_no_client() {
        check_split_everywhere(b"PROXY UNKNOWN\r\n", None);
        check_split_everywhere(b"PROXY UNKNOWN ::1 ::2 1 2\r\n", None);
    }

    #[test]
    fn v2_proxy_ipv4_split_at_every_byte() {
        let header = v2(0x21, 0x11, &v4_addresses([127, 0, 0, 5], [127, 0, 0, 1]));
        check_split_everywhere(&header, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))));
    }

    #[test]
    fn v2_proxy_ipv6_split_at_every_byte() {
        let source: Ipv6Addr = "2001:db8::5".parse().expect("an address");
        let mut payload = source.octets().to_vec();
        payload.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        payload.extend_from_slice(&[0x9c, 0x40, 0, 25]);
        check_split_everywhere(&v2(0x21, 0x21, &payload), Some(IpAddr::V6(source)));
    }

    #[test]
    fn v2_local_is_the_proxys_own_connection() {
        // HAProxy's health check: LOCAL, family unspecified, no addresses.
        check_split_everywhere(&v2(0x20, 0x00, &[]), None);
        // LOCAL may still carry addresses: they are not a client's.
        let header = v2(0x20, 0x11, &v4_addresses([10, 0, 0, 1], [10, 0, 0, 2]));
        check_split_everywhere(&header, None);
    }

    #[test]
    fn v2_tlvs_are_skipped_and_checked() {
        let mut payload = v4_addresses([192, 0, 2, 1], [127, 0, 0, 1]);
        // ALPN "smtp", then a NOOP of two bytes.
        payload.extend_from_slice(&[0x01, 0, 4]);
        payload.extend_from_slice(b"smtp");
        payload.extend_from_slice(&[0x04, 0, 2, 0, 0]);
        let header = v2(0x21, 0x11, &payload);
        check_split_everywhere(&header, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        // A TLV that claims more than the header holds.
        let mut broken = v4_addresses([192, 0, 2, 1], [127, 0, 0, 1]);
        broken.extend_from_slice(&[0x01, 0, 9, b's']);
        assert!(matches!(
            read(&v2(0x21, 0x11, &broken)),
            Reading::Invalid(_)
        ));
    }

    #[test]
    fn a_v2_header_at_the_bound_is_read_and_past_it_refused() {
        let mut payload = v4_addresses([192, 0, 2, 1], [127, 0, 0, 1]);
        // A NOOP TLV filling the rest: its type, its length, its bytes.
        let noop = u16::try_from(MAX_V2_PAYLOAD - payload.len() - 3).expect("it fits");
        payload.push(0x04);
        payload.extend_from_slice(&noop.to_be_bytes());
        payload.resize(MAX_V2_PAYLOAD, 0);
        let header = v2(0x21, 0x11, &payload);
        assert_eq!(header.len(), MAX_HEADER);
        assert_eq!(
            read(&header),
            Reading::Complete {
                length: MAX_HEADER,
                client: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            }
        );
        // One more byte, in the NOOP.
        payload.push(0);
        payload[14] = payload[14].wrapping_add(1);
        let over = v2(0x21, 0x11, &payload);
        // Refused as soon as its length is known, before its payload comes.
        assert!(matches!(read(&over[..16]), Reading::Invalid(_)));
        assert!(matches!(read(&over), Reading::Invalid(_)));
        // The largest the protocol allows is refused too.
        let mut largest = over[..14].to_vec();
        largest.extend_from_slice(&[0xff, 0xff]);
        assert!(matches!(read(&largest), Reading::Invalid(_)));
    }

    #[test]
    fn a_v1_line_without_its_end_is_refused_at_the_bound() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(MAX_V1 - 1, b'1');
        assert_eq!(read(&long), Reading::Incomplete);
        long.push(b'1');
        assert!(matches!(read(&long), Reading::Invalid(_)));
        // A line ended with CRLF past the bound.
        let mut past = b"PROXY UNKNOWN ".to_vec();
        past.resize(MAX_V1, b'x');
        past.extend_from_slice(b"\r\n");
        assert!(matches!(read(&past), Reading::Invalid(_)));
    }

    #[test]
    fn garbage_is_refused() {
        for input in [
            &b"EHLO client.example\r\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00\x01",
            b"PROXY TCP4 203.0.113.9\r\n",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\n",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\rX\r\n",
            b"PROXY TCP4 ::1 ::1 40000 25\r\n",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 040000 25\r\n",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 70000 25\r\n",
            b"PROXY UDP4 203.0.113.9 127.0.0.1 40000 25\r\n",
            b"proxy TCP4 203.0.113.9 127.0.0.1 40000 25\r\n",
            b"PROXY TCP4 203.0.113.\xff 127.0.0.1 40000 25\r\n",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 040 25\r\n",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 65536 25\r\n",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 \r\n",
            b"PROXY TCP4 203.0.113.9  127.0.0.1 40000 25\r\n",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25 \r\n",
            b"PROXY TCP4 203.0.113.9 ::1 40000 25\r\n",
            b"PROXY TCP6 203.0.113.9 ::1 40000 25\r\n",
            b"PROXY TCP6 2001:db8::7 127.0.0.1 40000 25\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 40000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1 25x\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2 3\r\n",
            b"PROXY TCP4 10.0.0.1.5 10.0.0.2 1 2\r\n",
            b"PROXY TCP6 ::1 ::1 1 2 3\r\n",
            b"PROXY TCP6 ::1 ::1 1\r\n",
            b"PROXY TCP6 ::1\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY \r\n",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\x0c",
        ] {
            assert!(
                matches!(read(input), Reading::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Refused at its first byte, not after a timeout.
        assert!(matches!(read(b"E"), Reading::Invalid(_)));
        assert!(matches!(read(b"PROXY\t"), Reading::Invalid(_)));
        // Version 1 in binary form, an unknown command, an unknown family.
        for (command, family) in [(0x11, 0x11), (0x22, 0x11), (0x21, 0x41)] {
            let header = v2(command, family, &v4_addresses([1, 2, 3, 4], [5, 6, 7, 8]));
            assert!(
                matches!(read(&header), Reading::Invalid(_)),
                "{command:#x} {family:#x}"
            );
        }
        // An IPv4 family whose length is too short for its addresses.
        assert!(matches!(
            read(&v2(0x21, 0x11, &[1, 2, 3, 4])),
            Reading::Invalid(_)
        ));
    }

    #[test]
    fn ports_at_their_bounds_are_read() {
        for (line, client) in [
            (&b"PROXY TCP4 10.0.0.1 10.0.0.2 0 65535\r\n"[..], "10.0.0.1"),
            (
                b"PROXY TCP6 ::ffff:10.0.0.1 ::1 65535 0\r\n",
                "::ffff:10.0.0.1",
            ),
        ] {
            assert_eq!(
                read(line),
                Reading::Complete {
                    length: line.len(),
                    client: Some(client.parse().expect("an address")),
                }
            );
        }
    }

    #[test]
    fn no_input_makes_it_panic() {
        // Random bytes, and random bytes after a v1 (TCP4, TCP6) or v2 start.
        let mut rng = oorandom::Rand64::new(7);
        for n in 0..200_000 {
            let len = rng.rand_range(0..130) as usize;
            let mut input: Vec<u8> = match n % 4 {
                0 => b"PROXY TCP4 ".to_vec(),
                1 => SIGNATURE.to_vec(),
                2 => b"PROXY TCP6 ".to_vec(),
                _ => Vec::new(),
            };
            input.extend((0..len).map(|_| {
                let pick = rng.rand_range(0..16);
                match pick {
                    0 => b' ',
                    1 => b'\r',
                    2 => b'\n',
                    3..=8 => b"0123456789.:abcdef"[rng.rand_range(0..18) as usize],
                    _ => rng.rand_range(0..256) as u8,
                }
            }));
            let _ = read(&input);
        }
    }

    #[test]
    fn dotted_quads_are_read_as_the_standard_parser_reads_them() {
        let mut rng = oorandom::Rand64::new(11);
        let pieces: [&[u8]; 10] = [
            b"0", b"1", b"01", b"255", b"256", b"999", b"1000", b"", b".", b"x",
        ];
        for _ in 0..100_000 {
            let mut text = Vec::new();
            for i in 0..rng.rand_range(1..6) {
                if i > 0 {
                    text.push(b'.');
                }
                text.extend_from_slice(pieces[rng.rand_range(0..10) as usize]);
            }
            let standard = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.parse::<Ipv4Addr>().ok());
            text.extend_from_slice(b" after");
            assert_eq!(
                ipv4_then_space(&text),
                standard.map(|address| (address, &b"after"[..])),
                "{:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }
}
