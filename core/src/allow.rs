//! Which hosts a node lets a run target (`fusi-node up --allow-target`).
//!
//! A node makes traffic on command of the mesh, so it checks every run it
//! is asked to take part in against its own list, not the submitter's: the
//! run's declared targets before it prepares (a refusal is shown in the
//! run's status), and every connection its VUs open (so a scenario that
//! sends elsewhere than it declared gets errors, not traffic).
//!
//! An entry is a host name (matched exactly, case-insensitively), an IP
//! address, or a CIDR block (`10.1.0.0/16`, `::1/128`).

use std::net::IpAddr;

use crate::cidr::Cidr;

/// One `--allow-target` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Host(String),
    Net(Cidr),
}

/// The hosts and networks a node's runs may target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Parses `--allow-target` values: host names, IP addresses, CIDRs.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<AllowList, String> {
        let mut entries = Vec::new();
        for value in values {
            let v = value.as_ref().trim();
            if v.is_empty() {
                return Err("--allow-target has an empty entry".into());
            }
            if v.contains("://") {
                return Err(format!(
                    "--allow-target {v:?} is not a host name, an IP address or a CIDR (give hosts without scheme or port)"
                ));
            }
            let address = v.trim_start_matches('[').trim_end_matches(']');
            if v.contains('/') {
                let net: Cidr = v
                    .parse()
                    .map_err(|e| format!("--allow-target {v:?}: {e}"))?;
                entries.push(Entry::Net(net));
            } else if let Ok(ip) = address.parse::<IpAddr>() {
                entries.push(Entry::Net(Cidr::masked(ip, 128)));
            } else if v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                entries.push(Entry::Host(v.to_ascii_lowercase()));
            } else {
                return Err(format!(
                    "--allow-target {v:?} is not a host name, an IP address or a CIDR (give hosts without scheme or port)"
                ));
            }
        }
        Ok(AllowList { entries })
    }

    /// Whether an address is in one of the networks.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Net(net) => net.contains(ip),
            Entry::Host(_) => false,
        })
    }

    /// Whether a host (name or address, without port) is allowed by name,
    /// or as an address in one of the networks.
    pub fn allows_host(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.allows_ip(ip);
        }
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Host(h) if h.eq_ignore_ascii_case(bare)))
    }

    /// Checks a run's declared targets (`host` or `host:port`); the error
    /// names the first one refused.
    pub fn check_targets(&self, targets: &[String]) -> Result<(), String> {
        if targets.is_empty() {
            return Err(
                "the run names no target, and this node only sends to its --allow-target list; \
                 submit it with --target URL"
                    .into(),
            );
        }
        for t in targets {
            if !self.allows_host(host_of(t)) {
                return Err(format!(
                    "target {t} is not in this node's --allow-target list ({self})"
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for AllowList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Host(h) => h.clone(),
                Entry::Net(net) => net.to_string(),
            })
            .collect();
        write!(f, "{}", items.join(", "))
    }
}

/// The host of `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_of(target: &str) -> &str {
    if let Some(rest) = target.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match target.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_addresses_and_networks() {
        let allow = AllowList::parse(&["api.example.com", "127.0.0.0/8", "::1", "10.1.2.3"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(allow.allows_host("API.example.com"));
        assert!(allow.allows_host("127.0.2.9"));
        assert!(allow.allows_host("[::1]"));
        // An IPv4-mapped address is its IPv4 address.
        assert!(allow.allows_host("::ffff:127.0.0.1"));
        assert!(!allow.allows_host("::ffff:192.168.1.1"));
        assert!(allow.allows_host("10.1.2.3"));
        assert!(!allow.allows_host("10.1.2.4"));
        assert!(!allow.allows_host("example.com"));
        assert!(
            allow
                .check_targets(&["127.0.0.1:8080".into(), "api.example.com".into()])
                .is_ok()
        );
        let err = allow
            .check_targets(&["127.0.0.1:8080".into(), "192.168.1.1:80".into()])
            .unwrap_err();
        assert!(
            err.contains("192.168.1.1:80") && err.contains("127.0.0.0/8"),
            "{err}"
        );
        assert!(allow.check_targets(&[]).unwrap_err().contains("--target"));
        assert!(allow.check_targets(&["[::1]:80".into()]).is_ok());
    }

    #[test]
    fn bad_entries_name_the_problem() {
        for (bad, needle) in [
            ("10.0.0.0/33", "prefix length"),
            ("x.y/8", "not an IP address"),
            ("http://a.b", "not a host name"),
            ("", "empty"),
        ] {
            let err = AllowList::parse(&[bad]).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let all = AllowList::parse(&["0.0.0.0/0"]).unwrap_or_default();
        assert!(all.allows_host("8.8.8.8") && !all.allows_host("::1"));
    }
}
