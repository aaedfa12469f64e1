//! Whole numbers written in ASCII digits, as SMTP parameters, switch headers and config
//! values write them: the one reader every caller shares.

/// `digits` read as a decimal number: `None` unless it is one or more ASCII digits and
/// nothing else (no sign, no space); a number beyond `u64` reads as `u64::MAX`, so a caller
/// comparing against its limit sees it as too large, never as a small number.
pub fn saturating(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_only() {
        assert_eq!(saturating(b"0"), Some(0));
        assert_eq!(saturating(b"007"), Some(7));
        assert_eq!(saturating(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"1.5",
            b"1e3",
            b"0x10",
            "١".as_bytes(),
        ] {
            assert_eq!(saturating(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn too_large_saturates() {
        assert_eq!(saturating(b"18446744073709551616"), Some(u64::MAX));
        assert_eq!(saturating(&[b'9'; 400]), Some(u64::MAX));
    }
}
