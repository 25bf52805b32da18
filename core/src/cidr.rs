//! Address ranges in CIDR notation (`10.1.0.0/16`, `::1/128`): one
//! definition for a node's `--allow-target` list and the testnet's knobs
//! that depend on who asks (each region of a local testnet has its own
//! loopback range).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A range of IPv4 or IPv6 addresses, such as `127.0.2.0/24`.
///
/// The address is kept with its host bits cleared, so `127.0.2.9/24` and
/// `127.0.2.0/24` are the same range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a range was refused; the text says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid address range {text:?}: {why}; write an address or a range such as 10.0.0.0/8 or fd00::/8"
)]
pub struct CidrError {
    text: String,
    why: String,
}

/// The most prefix bits of an address of `addr`'s family.
fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl Cidr {
    /// The range of addresses that share the first `prefix` bits of `addr`.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError {
                text: format!("{addr}/{prefix}"),
                why: format!("the prefix length {prefix} is above {max}"),
            });
        }
        Ok(Cidr::masked(addr, prefix))
    }

    /// The range with `prefix` leading bits of `addr` (clamped to the
    /// address's length).
    pub fn masked(addr: IpAddr, prefix: u8) -> Cidr {
        let prefix = prefix.min(max_prefix(addr));
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4((v4.to_bits() & mask_v4(prefix)).into()),
            IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & mask_v6(prefix)).into()),
        };
        Cidr { network, prefix }
    }

    /// The first address of the range.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// How many leading bits the addresses of the range share.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address
    /// (`::ffff:127.0.2.1`, as a dual-stack socket reports an IPv4 peer)
    /// counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (ip, self.network) {
            (IpAddr::V4(a), IpAddr::V4(n)) => a.to_bits() & mask_v4(self.prefix) == n.to_bits(),
            (IpAddr::V6(a), IpAddr::V6(n)) => a.to_bits() & mask_v6(self.prefix) == n.to_bits(),
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    match u32::from(prefix.min(32)) {
        0 => 0,
        bits => u32::MAX << (32 - bits),
    }
}

fn mask_v6(prefix: u8) -> u128 {
    match u32::from(prefix.min(128)) {
        0 => 0,
        bits => u128::MAX << (128 - bits),
    }
}

/// Parses `ADDRESS/PREFIX`, or a bare address (the range of that one
/// address); an IPv6 address may be in brackets.
impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let text = s.trim();
        let err = |why: String| CidrError {
            text: text.to_owned(),
            why,
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let bare = addr.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = bare
            .parse()
            .map_err(|_| err(format!("{bare:?} is not an IP address")))?;
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                err(format!(
                    "the prefix length {p:?} is not a number from 0 to {max}"
                ))
            })?,
        };
        Ok(Cidr::masked(addr, prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse()
            .unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<Cidr>() {
            Ok(c) => panic!("`{s}` should be refused, got {c}"),
            Err(e) => e.to_string(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ranges_parse_with_their_host_bits_cleared() {
        let c = cidr("127.0.2.0/24");
        assert_eq!((c.network(), c.prefix()), (ip("127.0.2.0"), 24));
        assert_eq!(c.to_string(), "127.0.2.0/24");
        assert_eq!(cidr("127.0.2.9/24"), c);
        assert_eq!(cidr(" 127.0.2.9 ").to_string(), "127.0.2.9/32");
        assert_eq!(cidr("10.1.2.3/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("10.255.2.3/9").to_string(), "10.128.0.0/9");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("[fd00::1]/8").to_string(), "fd00::/8");
        assert_eq!(cidr("fd12:3456::9/32").to_string(), "fd12:3456::/32");
    }

    #[test]
    fn a_range_holds_its_addresses_only() {
        let c = cidr("127.0.2.0/24");
        for inside in ["127.0.2.0", "127.0.2.1", "127.0.2.255", "::ffff:127.0.2.7"] {
            assert!(c.contains(ip(inside)), "{inside}");
        }
        for outside in ["127.0.1.255", "127.0.3.0", "127.0.0.1", "::1"] {
            assert!(!c.contains(ip(outside)), "{outside}");
        }
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        let one = cidr("127.0.2.1");
        assert!(one.contains(ip("127.0.2.1")) && !one.contains(ip("127.0.2.2")));
        let v6 = cidr("fd00::/8");
        assert!(v6.contains(ip("fd12::5")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn a_bad_range_says_what_is_wrong_and_what_to_write() {
        for (bad, needle) in [
            ("127.0.2.0/33", "not a number from 0 to 32"),
            ("::1/129", "not a number from 0 to 128"),
            ("127.0.2.0/x", "\"x\" is not a number"),
            ("127.0.2.0/-1", "from 0 to 32"),
            ("127.0.2/24", "\"127.0.2\" is not an IP address"),
            ("", "is not an IP address"),
        ] {
            let e = err(bad);
            assert!(
                e.contains(needle) && e.contains("such as 10.0.0.0/8"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            Cidr::new(ip("10.0.0.0"), 33).map_err(|e| e.to_string()),
            Err(
                "invalid address range \"10.0.0.0/33\": the prefix length 33 is above 32; \
                 write an address or a range such as 10.0.0.0/8 or fd00::/8"
                    .to_owned()
            )
        );
    }
}
