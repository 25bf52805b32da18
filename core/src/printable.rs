//! Text from outside (a peer, a scenario, a user's flag) made safe to print:
//! control characters are written out (`\u{1b}`, `\n`), so no escape
//! sequence in a name or message reaches a terminal as one.

/// `chars` with every control character escaped.
pub fn escape_controls(chars: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    for c in chars {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `name` is a plain name: 1 to `max_len` ASCII letters, digits,
/// `_` or `-`, safe in a terminal, a file name, a tag value and a URL (the
/// names of data sets and scenarios).
pub fn is_plain_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_written_out() {
        assert_eq!(
            escape_controls("a\x1b[2Jb\nc é".chars()),
            "a\\u{1b}[2Jb\\nc é"
        );
    }
}
