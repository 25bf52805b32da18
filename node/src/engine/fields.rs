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
//! `HeaderMap`.

use bytes::Bytes;
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
    head: Bytes,
    spans: Vec<Span>,
}

impl Fields {
    /// Fields from `head` and the `(name, value)` slices of it that a
    /// parser found; `None` if a slice is not within `head`, or a name is
    /// not ASCII.
    pub fn within<'a>(
        head: Bytes,
        found: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
        of: &'a [u8],
    ) -> Option<Fields> {
        let base = of.as_ptr() as usize;
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
        Some(Fields { head, spans })
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
            head: Bytes::from(head),
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
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// Every field: its name as it came (ASCII), and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.spans.iter().map(|span| {
            let name = std::str::from_utf8(self.part(span.name)).unwrap_or_default();
            (name, self.part(span.value))
        })
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
        let head = Bytes::copy_from_slice(raw);
        // The slices a parser would give, of `raw`.
        let found = [
            (&raw[0..14], &raw[16..17]),
            (&raw[19..29], &raw[31..34]),
            (&raw[36..46], &raw[48..51]),
            (&raw[53..60], &raw[0..0]),
        ];
        let f = Fields::within(head, found.into_iter(), raw).expect("within the head");
        assert_eq!(f.len(), 4);
        assert_eq!(f.get("content-length"), Some(&b"5"[..]));
        assert_eq!(f.get("CONTENT-LENGTH"), Some(&b"5"[..]));
        let cookies: Vec<&[u8]> = f.get_all("set-cookie").collect();
        assert_eq!(cookies, vec![&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(f.get("x-empty"), Some(&b""[..]));
        assert!(!f.contains("location"));
        let names: Vec<&str> = f.iter().map(|(n, _)| n).collect();
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
        assert!(Fields::within(Bytes::copy_from_slice(raw), found.into_iter(), raw).is_none());
    }

    #[test]
    fn a_map_and_pairs_give_the_same_fields() {
        let f = Fields::from_pairs([("location", "/b"), ("x-a", "1"), ("x-a", "2")]);
        assert_eq!(f.get("Location"), Some(&b"/b"[..]));
        assert_eq!(f.get_all("x-a").count(), 2);
        assert!(Fields::default().is_empty());
    }
}
