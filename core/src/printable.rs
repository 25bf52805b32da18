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
