//! The API token: a secret the node and the CLI share, so that only they
//! (and not a web page, nor another user of the host) use the local API.
//!
//! The node makes it at first start and keeps it in its data directory
//! ([`TOKEN_FILE`], mode 0600); the CLI on the same host reads it there, and
//! [`TOKEN_ENV`] carries it to a CLI elsewhere (through `ssh -L`). Every
//! request but the challenge sends it as `Authorization: Bearer HEX`.
//!
//! The challenge proves the node knows the token without sending it: the
//! client sends a fresh random nonce to `GET /v1/hello?nonce=HEX`, and the
//! node answers [`ApiToken::proof`] of it, an HMAC-SHA256 keyed with the
//! token. Only then does the client send the token, a module or `--env`
//! values, so that whatever else listens on the API address learns none of
//! them.

use sha2::{Digest, Sha256};

/// The token's file in the node's data directory.
pub const TOKEN_FILE: &str = "api.token";

/// The environment variable the CLI reads the token from first.
pub const TOKEN_ENV: &str = "FUSI_API_TOKEN";

/// The token's length in bytes (it is written as twice as many hex digits).
pub const TOKEN_BYTES: usize = 32;

/// The nonce's length in bytes that the client sends, and the least the
/// node accepts; the node accepts up to [`MAX_NONCE_BYTES`].
pub const NONCE_BYTES: usize = 16;

/// The longest nonce the node answers, in bytes.
pub const MAX_NONCE_BYTES: usize = 64;

/// What the proof's HMAC covers before the nonce: it keeps a proof from
/// being a MAC of anything else keyed with the token.
const PROOF_CONTEXT: &[u8] = b"fusi-api-proof";

/// A token that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an API token is {} hex digits (0-9, a-f)", TOKEN_BYTES * 2)]
pub struct BadToken;

/// The shared secret. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken([u8; TOKEN_BYTES]);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// A fresh random token.
    pub fn generate() -> ApiToken {
        ApiToken(rand::random())
    }

    /// Reads 64 hex digits; white space around them is ignored (a file
    /// ends with a newline, a pasted variable may too).
    pub fn parse(text: &str) -> Result<ApiToken, BadToken> {
        let bytes = from_hex(text.trim()).ok_or(BadToken)?;
        bytes.try_into().map(ApiToken).map_err(|_| BadToken)
    }

    /// The token as 64 lowercase hex digits: the file's content and the
    /// `Authorization` header's credential.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Whether `credential` (the `Bearer` value of a request) is this
    /// token, compared in time that does not depend on where they differ.
    pub fn matches(&self, credential: &[u8]) -> bool {
        constant_time_eq(self.to_hex().as_bytes(), credential)
    }

    /// The answer to a challenge: HMAC-SHA256 keyed with the token, of
    /// `fusi-api-proof` followed by the nonce.
    pub fn proof(&self, nonce: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, &[PROOF_CONTEXT, nonce])
    }

    /// Whether `proof` (hex, as the node sent it) answers `nonce`,
    /// compared in constant time.
    pub fn is_proof(&self, nonce: &[u8], proof: &str) -> bool {
        constant_time_eq(to_hex(&self.proof(nonce)).as_bytes(), proof.as_bytes())
    }
}

/// HMAC (RFC 2104) with SHA-256, of the concatenation of `parts`.
fn hmac_sha256(key: &[u8; TOKEN_BYTES], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    padded[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(padded.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(padded.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an even number of hex digits (either case); `None` for
/// anything else.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_from_its_hex_and_nothing_else_parses() {
        let token = ApiToken::generate();
        let hex = token.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(ApiToken::parse(&format!("{hex}\n")), Ok(token.clone()));
        assert_eq!(ApiToken::parse(&hex.to_uppercase()), Ok(token.clone()));
        assert_ne!(ApiToken::generate(), token);
        for bad in [
            "",
            "abc",
            &hex[..62],
            &format!("{hex}00"),
            &hex.replace('a', "g"),
        ] {
            if bad != hex {
                assert_eq!(ApiToken::parse(bad), Err(BadToken), "{bad:?}");
            }
        }
        assert!(!format!("{token:?}").contains(&hex[..8]));
    }

    #[test]
    fn only_the_token_itself_matches() {
        let token = ApiToken::generate();
        assert!(token.matches(token.to_hex().as_bytes()));
        assert!(!token.matches(ApiToken::generate().to_hex().as_bytes()));
        assert!(!token.matches(&token.to_hex().as_bytes()[..63]));
        assert!(!token.matches(b""));
    }

    #[test]
    fn the_proof_is_rfc_4231_hmac_sha256_and_binds_token_and_nonce() {
        // RFC 4231 test case 1: HMAC pads a short key with zeros, so its
        // 20-byte key is the same key as these 32 bytes.
        let mut key = [0u8; TOKEN_BYTES];
        key[..20].copy_from_slice(&[0x0b; 20]);
        assert_eq!(
            to_hex(&hmac_sha256(&key, &[b"Hi ", b"There"])),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let token = ApiToken::generate();
        let proof = to_hex(&token.proof(b"nonce-1"));
        assert!(token.is_proof(b"nonce-1", &proof));
        assert!(!token.is_proof(b"nonce-2", &proof));
        assert!(!ApiToken::generate().is_proof(b"nonce-1", &proof));
    }

    #[test]
    fn hex_round_trips_and_refuses_odd_lengths() {
        assert_eq!(from_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(to_hex(&[0, 255, 16]), "00ff10");
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("+1"), None);
    }
}
