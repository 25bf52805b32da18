//! Request bodies and credentials a browser would make: HTML forms
//! (`application/x-www-form-urlencoded` and `multipart/form-data`) and the
//! `Basic` scheme's base64, written here so that a scenario needs no crate
//! for them. `Request::form`, `Request::multipart` and
//! `Request::basic_auth` use them; they call no host function, so they
//! build (and are tested) on any target.

/// A `multipart/form-data` body under construction: text fields and
/// files, in order, as a browser sends a form with an `<input type=file>`.
///
/// ```ignore
/// let form = Multipart::new()
///     .field("title", "holiday")
///     .file("photo", "beach.jpg", "image/jpeg", jpeg_bytes);
/// let res = Request::post(&format!("{base}/upload")).multipart(form).send();
/// ```
#[derive(Debug, Clone, Default)]
pub struct Multipart {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
struct Part {
    name: String,
    /// The file name and content type of a file; `None` for a field.
    file: Option<(String, String)>,
    content: Vec<u8>,
}

impl Multipart {
    /// An empty form.
    pub fn new() -> Self {
        Multipart::default()
    }

    /// Adds a text field.
    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.parts.push(Part {
            name: name.to_owned(),
            file: None,
            content: value.as_bytes().to_vec(),
        });
        self
    }

    /// Adds a file: its field name, file name, content type (for example
    /// `application/octet-stream`) and bytes.
    pub fn file(
        mut self,
        name: &str,
        file_name: &str,
        content_type: &str,
        content: impl Into<Vec<u8>>,
    ) -> Self {
        self.parts.push(Part {
            name: name.to_owned(),
            file: Some((file_name.to_owned(), content_type.to_owned())),
            content: content.into(),
        });
        self
    }

    /// The `content-type` header's value (with the boundary) and the body.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let boundary = self.boundary();
        let mut body = Vec::new();
        for part in &self.parts {
            body.extend_from_slice(b"--");
            body.extend_from_slice(boundary.as_bytes());
            body.extend_from_slice(b"\r\ncontent-disposition: form-data; name=\"");
            body.extend_from_slice(quoted(&part.name).as_bytes());
            body.push(b'"');
            if let Some((file_name, content_type)) = &part.file {
                body.extend_from_slice(b"; filename=\"");
                body.extend_from_slice(quoted(file_name).as_bytes());
                body.extend_from_slice(b"\"\r\ncontent-type: ");
                body.extend_from_slice(one_line(content_type).as_bytes());
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(&part.content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"--\r\n");
        (format!("multipart/form-data; boundary={boundary}"), body)
    }

    /// A boundary that occurs in no part: a hash of the parts, made
    /// longer until it fits (deterministic, so runs repeat).
    fn boundary(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in &self.parts {
            for &b in part.name.as_bytes().iter().chain(&part.content) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let mut boundary = format!("fusi-{hash:016x}");
        while self.parts.iter().any(|p| {
            p.content
                .windows(boundary.len())
                .any(|w| w == boundary.as_bytes())
        }) {
            hash = hash.wrapping_mul(0x0100_0000_01b3).wrapping_add(1);
            boundary.push_str(&format!("{:x}", hash & 0xffff));
        }
        boundary
    }
}

/// A name inside a quoted header parameter, escaped as the HTML standard
/// says: `"` as `%22`, CR as `%0D`, LF as `%0A`.
fn quoted(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A header value without line breaks, which would end the part's headers.
fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// `application/x-www-form-urlencoded`: each key and value percent-encoded
/// (a space as `+`), joined as `k=v&k=v`.
pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        encode_component(k, &mut out);
        out.push('=');
        encode_component(v, &mut out);
    }
    out
}

fn encode_component(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), as the `Basic` scheme wants.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_percent_encoded_with_plus_for_space() {
        assert_eq!(
            form_urlencoded(&[("user", "alice smith"), ("pass", "a&b=c/é"), ("", "")]),
            "user=alice+smith&pass=a%26b%3Dc%2F%C3%A9&="
        );
        assert_eq!(form_urlencoded(&[]), "");
        assert_eq!(form_urlencoded(&[("k*-._", "~")]), "k*-._=%7E");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn multipart_bodies_frame_fields_and_files() {
        let form = Multipart::new().field("title", "holiday").file(
            "photo",
            "a\"b.bin",
            "application/octet-stream",
            vec![0u8, 1, 2],
        );
        let (content_type, body) = form.encode();
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap_or_default()
            .to_owned();
        assert!(!boundary.is_empty());
        let mut expected = format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n\
             --{boundary}\r\ncontent-disposition: form-data; name=\"photo\"; filename=\"a%22b.bin\"\r\n\
             content-type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        expected.extend([0, 1, 2]);
        expected.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
        assert_eq!(body, expected);
    }
}
