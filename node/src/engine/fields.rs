//! A response's header fields, kept as they came.
//!
//! A response's fields are read a few times each: the client looks up its
//! framing (`content-length`, `transfer-encoding`) and `connection`, a
//! redirect its `location`, a session its `set-cookie`s, and the guest
//! gets them all once. An `http::HeaderMap` makes each name a
//! `HeaderName` (a lookup among the standard names, or a copy), each value
//! a `HeaderValue` (a check of every byte), and hashes every name into a
//! table it allocates: about 2,000 instructions a response of three
//! fields, where the whole request costs some 27,000.
//!
//! [`Fields`] keeps the head's bytes (one copy, one allocation) and where
//! each name and value lie in it. Names match without regard to case, as
//! HTTP's do; the guest gets them in lower case, as it did from a
//! `HeaderMap`. A head is checked for UTF-8 once, as a whole, and kept as
//! text when it is (nearly every head is ASCII): its names and values are
//! then slices of that text, with no check of their own.

use std::borrow::Cow;

use http::HeaderMap;

/// Where one field's name and value lie in the head.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// A response's header fields, in the order they came (repeated names
/// kept).
#[derive(Debug, Clone, Default)]
pub struct Fields {
    head: Head,
    spans: Vec<Span>,
}

/// A copy of the head.
#[derive(Debug, Clone)]
enum Head {
    /// UTF-8, as nearly every head is.
    Text(Box<str>),
    /// Not UTF-8: some value has bytes past ASCII that are not.
    Bytes(Box<[u8]>),
}

impl Default for Head {
    fn default() -> Head {
        Head::Text(Box::default())
    }
}

impl Head {
    fn of(bytes: &[u8]) -> Head {
        match std::str::from_utf8(bytes) {
            Ok(text) => Head::Text(Box::from(text)),
            Err(_) => Head::Bytes(Box::from(bytes)),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Head::Text(text) => text.as_bytes(),
            Head::Bytes(bytes) => bytes,
        }
    }
}

impl Fields {
    /// Fields from a copy of `head` and the `(name, value)` slices of it
    /// that a parser found; `None` if a slice is not within `head`, or a
    /// name is not ASCII.
    pub fn within<'a>(
        head: &'a [u8],
        found: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Option<Fields> {
        let base = head.as_ptr() as usize;
        let at = |part: &[u8]| -> Option<(u32, u32)> {
            let start = (part.as_ptr() as usize).checked_sub(base)?;
            let end = start.checked_add(part.len())?;
            (end <= head.len()).then_some(())?;
            Some((u32::try_from(start).ok()?, u32::try_from(end).ok()?))
        };
        let mut spans = Vec::with_capacity(found.len());
        for (name, value) in found {
            if !name.is_ascii() {
                return None;
            }
            // An empty value may point anywhere.
            let value = if value.is_empty() {
                Some((0, 0))
            } else {
                at(value)
            };
            spans.push(Span {
                name: at(name)?,
                value: value?,
            });
        }
        Some(Fields {
            head: Head::of(head),
            spans,
        })
    }

    /// The fields of an HTTP/2 response, copied out of its map.
    pub fn from_map(map: &HeaderMap) -> Fields {
        let mut head = Vec::new();
        let mut spans = Vec::with_capacity(map.len());
        let put = |bytes: &[u8], head: &mut Vec<u8>| {
            let start = u32::try_from(head.len()).unwrap_or(u32::MAX);
            head.extend_from_slice(bytes);
            (start, u32::try_from(head.len()).unwrap_or(u32::MAX))
        };
        for (name, value) in map {
            let name = put(name.as_str().as_bytes(), &mut head);
            let value = put(value.as_bytes(), &mut head);
            spans.push(Span { name, value });
        }
        Fields {
            head: Head::of(&head),
            spans,
        }
    }

    /// Fields from pairs (tests and tools).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Fields {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                map.append(name, value);
            }
        }
        Fields::from_map(&map)
    }

    fn part(&self, (start, end): (u32, u32)) -> &[u8] {
        self.head
            .bytes()
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// A part as text: a slice of the head when it is text (a name or a
    /// value ends at ASCII, so at a character's boundary), else the part's
    /// bytes with what is not UTF-8 replaced.
    fn text(&self, (start, end): (u32, u32)) -> Cow<'_, str> {
        match &self.head {
            Head::Text(text) => Cow::Borrowed(text.get(start as usize..end as usize).unwrap_or("")),
            Head::Bytes(_) => String::from_utf8_lossy(self.part((start, end))),
        }
    }

    /// Every field: its name as it came (ASCII), and its value as text
    /// (bytes that are not UTF-8 replaced).
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        self.spans
            .iter()
            .map(|span| (self.text(span.name), self.text(span.value)))
    }

    /// The values of every field called `name` (any case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans
            .iter()
            .filter(move |span| self.part(span.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|span| self.part(span.value))
    }

    /// The value of the first field called `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.spans
            .iter()
            .find(|span| self.part(span.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|span| self.part(span.value))
    }

    /// Whether a field is called `name` (any case).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_in_any_case_and_repeats_keep_their_order() {
        let raw = b"Content-Length: 5\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Empty: \r\n";
        // The slices a parser would give, of `raw`.
        let found = [
            (&raw[0..14], &raw[16..17]),
            (&raw[19..29], &raw[31..34]),
            (&raw[36..46], &raw[48..51]),
            (&raw[53..60], &raw[0..0]),
        ];
        let f = Fields::within(raw, found.into_iter()).expect("within the head");
        assert_eq!(f.len(), 4);
        assert_eq!(f.get("content-length"), Some(&b"5"[..]));
        assert_eq!(f.get("CONTENT-LENGTH"), Some(&b"5"[..]));
        let cookies: Vec<&[u8]> = f.get_all("set-cookie").collect();
        assert_eq!(cookies, vec![&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(f.get("x-empty"), Some(&b""[..]));
        assert!(!f.contains("location"));
        let names: Vec<String> = f.iter().map(|(n, _)| n.into_owned()).collect();
        assert_eq!(
            names,
            ["Content-Length", "Set-Cookie", "set-cookie", "X-Empty"]
        );
    }

    #[test]
    fn a_slice_outside_the_head_is_refused() {
        let raw = b"A: 1\r\n";
        let other = b"B: 2\r\n";
        let found = [(&raw[0..1], &other[3..4])];
        assert!(Fields::within(raw, found.into_iter()).is_none());
    }

    #[test]
    fn a_value_that_is_not_utf8_reads_with_its_bytes_replaced() {
        let raw = b"X-A: caf\xe9\r\nX-B: ok\r\n";
        let found = [(&raw[0..3], &raw[5..9]), (&raw[11..14], &raw[16..18])];
        let f = Fields::within(raw, found.into_iter()).expect("within the head");
        assert_eq!(f.get("x-a"), Some(&b"caf\xe9"[..]));
        let values: Vec<String> = f.iter().map(|(_, v)| v.into_owned()).collect();
        assert_eq!(values, ["caf\u{fffd}", "ok"]);
    }

    #[test]
    fn a_map_and_pairs_give_the_same_fields() {
        let f = Fields::from_pairs([("location", "/b"), ("x-a", "1"), ("x-a", "2")]);
        assert_eq!(f.get("Location"), Some(&b"/b"[..]));
        assert_eq!(f.get_all("x-a").count(), 2);
        assert!(Fields::default().is_empty());
    }
}
