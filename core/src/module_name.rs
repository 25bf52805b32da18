//! How a scenario module is named: the sha256 of its bytes, in lower-case
//! hex. A run names its module so; nodes fetch, store and check it by that
//! name, and names come from peers, so they are checked before they touch
//! a path.
//!
//! This is a leaf: the run protocol (`core::wire`), the module store
//! (`store::modules`) and the engine (`engine::module`) all use it, and it
//! uses none of them.

use sha2::{Digest, Sha256};

/// The largest module a node takes: submitted, fetched or stored.
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// The sha256 of some bytes, lower-case hex: how modules are named.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A module name that is not a sha256 in lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a module name: a module is named by 64 lower-case hex digits of its sha256")]
pub struct BadModuleName(pub String);

/// Checks a module name.
pub fn check_name(sha256: &str) -> Result<(), BadModuleName> {
    let hex = sha256
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if sha256.len() != 64 || !hex {
        return Err(BadModuleName(sha256.chars().take(80).collect()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_the_hex_sha256_and_only_that_is_a_name() {
        let name = sha256_hex(b"");
        assert_eq!(
            name,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(check_name(&name), Ok(()));
        for bad in [
            "",
            &name[..63],
            &name.to_uppercase(),
            "../../etc/passwd",
            &format!("{name}0"),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
