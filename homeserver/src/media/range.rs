//! The `Range` header of a media download (RFC 9110 §14): one `bytes=` range, or none.

/// The part of a file a download asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The whole file (no `Range`, or one this server ignores: several ranges, another unit,
    /// bad syntax — RFC 9110 lets a server answer those with the whole file).
    All,
    /// Bytes `start..=end`, within the file.
    Part { start: u64, end: u64 },
    /// A range starting at or past the end of the file (416).
    Unsatisfiable,
}

/// What `header` asks of a file of `size` bytes.
pub fn parse(header: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `bytes=-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        (false, Some(start), last) if last.is_some() || last_is_empty(last, spec) => {
            if start >= size {
                return Wanted::Unsatisfiable;
            }
            match last {
                Some(end) if end < start => Wanted::All,
                Some(end) => Wanted::Part {
                    start,
                    end: end.min(size - 1),
                },
                None => Wanted::Part {
                    start,
                    end: size - 1,
                },
            }
        }
        _ => Wanted::All,
    }
}

/// Whether the part after `-` is empty (`bytes=a-`), as opposed to malformed.
fn last_is_empty(last: Option<u64>, spec: &str) -> bool {
    last.is_none() && spec.trim().ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::{parse, Wanted};

    #[test]
    fn one_range_is_clamped_to_the_file() {
        assert_eq!(
            parse(Some("bytes=0-9"), 100),
            Wanted::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse(Some("bytes=90-200"), 100),
            Wanted::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse(Some("bytes=50-"), 100),
            Wanted::Part { start: 50, end: 99 }
        );
        assert_eq!(
            parse(Some("bytes=-10"), 100),
            Wanted::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse(Some("bytes=-1000"), 100),
            Wanted::Part { start: 0, end: 99 }
        );
    }

    #[test]
    fn a_range_past_the_end_is_unsatisfiable() {
        assert_eq!(parse(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(parse(Some("bytes=100-200"), 100), Wanted::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }

    #[test]
    fn what_is_not_one_byte_range_gets_the_whole_file() {
        for h in [
            None,
            Some("bytes=0-1,5-6"),
            Some("items=0-1"),
            Some("bytes=a-b"),
            Some("bytes=5-1"),
            Some("bytes="),
            Some("bytes=-"),
            Some("bytes=99999999999999999999999-"),
        ] {
            assert_eq!(parse(h, 100), Wanted::All, "{h:?}");
        }
    }
}
