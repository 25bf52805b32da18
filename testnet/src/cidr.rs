//! IPv4 address ranges in CIDR notation, for knobs that depend on who asks.
//!
//! A local testnet gives each simulated region its own loopback range
//! (`127.0.R.0/24`), so "requests from region R" is "requests from this
//! range". This small type is all the target needs; it does not pull in a
//! crate for it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use anyhow::{Context as _, bail};

/// A range of IPv4 addresses in CIDR notation, such as `127.0.2.0/24`.
///
/// The address is stored with its host bits cleared, so `127.0.2.9/24` and
/// `127.0.2.0/24` are the same range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The range of addresses that share the first `prefix` bits of `addr`.
    ///
    /// # Errors
    ///
    /// A prefix length above 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> anyhow::Result<Ipv4Cidr> {
        if prefix > 32 {
            bail!(
                "prefix length {prefix} is above 32: an IPv4 range is ADDRESS/0 to ADDRESS/32, \
                 e.g. 127.0.2.0/24"
            );
        }
        Ok(Ipv4Cidr::masked(addr, prefix))
    }

    /// The range with `prefix` (clamped to 32) leading bits of `addr`.
    pub(crate) fn masked(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let prefix = prefix.min(32);
        Ipv4Cidr {
            network: Ipv4Addr::from_bits(addr.to_bits() & mask(prefix)),
            prefix,
        }
    }

    /// The first address of the range.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// How many leading bits the addresses of the range share, `0..=32`.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address
    /// (`::ffff:127.0.2.1`, as a dual-stack socket reports IPv4 clients)
    /// counts as its IPv4 address; other IPv6 addresses are in no range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return false,
            },
        };
        v4.to_bits() & mask(self.prefix) == self.network.to_bits()
    }
}

/// The netmask of a prefix length in `0..=32`.
fn mask(prefix: u8) -> u32 {
    match u32::from(prefix) {
        0 => 0,
        bits => u32::MAX << (32 - bits.min(32)),
    }
}

/// Parses `ADDRESS/PREFIX` (e.g. `127.0.2.0/24`), or a bare address, which
/// is the range of that one address (`/32`).
impl FromStr for Ipv4Cidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Ipv4Cidr> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let hint = "expected an IPv4 range such as 127.0.2.0/24";
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| anyhow::anyhow!("`{addr}` is not an IPv4 address"))
            .with_context(|| format!("invalid address range `{s}`: {hint}"))?;
        let prefix = match prefix {
            None => 32,
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| anyhow::anyhow!("prefix length `{p}` is not a number in 0..=32"))
                .with_context(|| format!("invalid address range `{s}`: {hint}"))?,
        };
        Ipv4Cidr::new(addr, prefix).with_context(|| format!("invalid address range `{s}`"))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        match s.parse() {
            Ok(c) => c,
            Err(e) => panic!("`{s}` should parse: {e:#}"),
        }
    }

    fn err(s: &str) -> String {
        match s.parse::<Ipv4Cidr>() {
            Ok(c) => panic!("`{s}` should be rejected, got {c}"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal address")
    }

    #[test]
    fn parses_and_normalises() {
        let c = cidr("127.0.2.0/24");
        assert_eq!((c.network(), c.prefix()), (Ipv4Addr::new(127, 0, 2, 0), 24));
        assert_eq!(c.to_string(), "127.0.2.0/24");
        assert_eq!(cidr("127.0.2.9/24"), c);
        assert_eq!(cidr(" 127.0.2.9 ").to_string(), "127.0.2.9/32");
        assert_eq!(cidr("10.1.2.3/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("10.1.2.3/32").to_string(), "10.1.2.3/32");
        assert_eq!(cidr("10.255.2.3/9").to_string(), "10.128.0.0/9");
    }

    #[test]
    fn matches_its_range_only() {
        let c = cidr("127.0.2.0/24");
        assert!(c.contains(ip("127.0.2.0")));
        assert!(c.contains(ip("127.0.2.1")));
        assert!(c.contains(ip("127.0.2.255")));
        assert!(!c.contains(ip("127.0.1.255")));
        assert!(!c.contains(ip("127.0.3.0")));
        assert!(!c.contains(ip("127.0.0.1")));
        assert!(c.contains(ip("::ffff:127.0.2.7")));
        assert!(!c.contains(ip("::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        let one = cidr("127.0.2.1");
        assert!(one.contains(ip("127.0.2.1")));
        assert!(!one.contains(ip("127.0.2.2")));
    }

    #[test]
    fn bad_ranges_say_what_to_write() {
        assert!(err("127.0.2.0/33").contains("prefix length 33 is above 32"));
        assert!(err("127.0.2.0/x").contains("127.0.2.0/24"));
        assert!(err("127.0.2.0/-1").contains("0..=32"));
        assert!(err("127.0.2/24").contains("not an IPv4 address"));
        assert!(err("::1/128").contains("not an IPv4 address"));
        assert!(err("").contains("expected an IPv4 range"));
        assert!(err("127.0.2.0/999").contains("0..=32"));
    }
}
