//! Where a node looks for the mesh: its `--bootstrap` seeds, addresses and
//! host names.
//!
//! An address is dialed as it is, with backoff, until it answers. A host
//! name is what a Kubernetes StatefulSet's headless service or a DNS round
//! robin gives: one record per node, and more records as more nodes start.
//! So a name is resolved to every address it has and each one is dialed,
//! except this node's own, those a member already announces, and those that
//! already let this node in. It is resolved again on the backoff of a dial
//! (1 s doubling to 30 s) for as long as the node runs, not only while it
//! has no member: records of nodes that start later are dialed when they
//! appear, so two groups that formed before they could see each other's
//! records still become one mesh. A DNS question every 30 s costs nothing
//! beside a heartbeat a second.
//!
//! Resolving is I/O: the core asks for it ([`Action::Resolve`]) and is told
//! the answer ([`Bootstraps::on_resolved`]), so the same rules run under
//! the simulator and in tests.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::{Action, Redial};

/// The most addresses of one name a node takes (a headless service of a
/// StatefulSet lists one per pod).
pub const MAX_RESOLVED: usize = 256;

/// The longest host name DNS allows, in bytes.
const MAX_HOST_LEN: usize = 253;

/// Which addresses of a name to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6 (`host:port`, `/dns/`).
    Any,
    /// IPv4 only (`/dns4/`).
    V4,
    /// IPv6 only (`/dns6/`).
    V6,
}

/// A host name to resolve, with the TCP port its nodes listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedName {
    /// The host name, for example `fusi.fusi.svc.cluster.local`.
    pub host: String,
    /// The TCP port of every address.
    pub port: u16,
    /// Which addresses to take.
    pub family: Family,
    /// The peer id every address must answer with (`/p2p/ID`), if given:
    /// only useful when the name has one address.
    pub peer: Option<String>,
}

impl SeedName {
    /// The multiaddr to dial at `ip`, or `None` if `ip` is not of the
    /// name's [`Family`].
    pub fn address(&self, ip: IpAddr) -> Option<String> {
        let mut addr = match (ip, self.family) {
            (IpAddr::V4(ip), Family::Any | Family::V4) => format!("/ip4/{ip}/tcp/{}", self.port),
            (IpAddr::V6(ip), Family::Any | Family::V6) => format!("/ip6/{ip}/tcp/{}", self.port),
            _ => return None,
        };
        if let Some(peer) = &self.peer {
            addr.push_str("/p2p/");
            addr.push_str(peer);
        }
        Some(addr)
    }
}

impl fmt::Display for SeedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            Family::Any => write!(f, "{}:{}", self.host, self.port),
            Family::V4 => write!(f, "/dns4/{}/tcp/{}", self.host, self.port),
            Family::V6 => write!(f, "/dns6/{}/tcp/{}", self.host, self.port),
        }?;
        match &self.peer {
            Some(peer) => write!(f, "/p2p/{peer}"),
            None => Ok(()),
        }
    }
}

/// Whether `host` is a DNS host name: dot-separated labels of 1 to 63
/// letters, digits and `-` (not at either end of a label), at most 253
/// bytes, with a trailing dot allowed, and not all digits and dots (that
/// is an IP address, or a typo of one).
pub fn is_host_name(host: &str) -> bool {
    let bare = host.strip_suffix('.').unwrap_or(host);
    !bare.is_empty()
        && bare.len() <= MAX_HOST_LEN
        && !bare.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// One `--bootstrap` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// A multiaddr with an IP address, dialed as it is.
    Address(String),
    /// A host name, resolved to every address it has, each dialed.
    Name(SeedName),
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seed::Address(addr) => f.write_str(addr),
            Seed::Name(name) => name.fmt(f),
        }
    }
}

/// What is known of a name's addresses.
#[derive(Debug, Clone)]
struct Named {
    name: SeedName,
    /// When to resolve it next.
    redial: Redial,
    /// A question is out; no second one until it is answered.
    resolving: bool,
    /// Addresses of the name whose dial let this node in: not dialed again
    /// while this node has members (at most [`MAX_RESOLVED`], those of the
    /// latest answer).
    reached: BTreeSet<String>,
}

#[derive(Debug, Clone)]
enum Entry {
    /// An address: dialed until it connects, then left alone while this
    /// node has members.
    Address {
        addr: String,
        dialing: Option<Redial>,
    },
    Name(Named),
}

/// The `--bootstrap` seeds and when each is dialed or resolved next.
#[derive(Debug, Clone)]
pub(super) struct Bootstraps {
    entries: Vec<Entry>,
    redial_min: Duration,
    redial_max: Duration,
}

impl Bootstraps {
    /// Seeds to start on at `now`, all due at once.
    pub(super) fn new(
        seeds: Vec<Seed>,
        now: Duration,
        redial_min: Duration,
        redial_max: Duration,
    ) -> Bootstraps {
        let entries = seeds
            .into_iter()
            .map(|seed| match seed {
                Seed::Address(addr) => Entry::Address {
                    addr,
                    dialing: Some(Redial::new(now, redial_min)),
                },
                Seed::Name(name) => Entry::Name(Named {
                    name,
                    redial: Redial::new(now, redial_min),
                    resolving: false,
                    reached: BTreeSet::new(),
                }),
            })
            .collect();
        Bootstraps {
            entries,
            redial_min,
            redial_max,
        }
    }

    /// The dials and questions due at `now`. `isolated`: this node has no
    /// connection, so every seed starts over at the shortest backoff.
    pub(super) fn tick(&mut self, now: Duration, isolated: bool, actions: &mut Vec<Action>) {
        for (index, entry) in self.entries.iter_mut().enumerate() {
            match entry {
                Entry::Address { addr, dialing } => {
                    if isolated && dialing.is_none() {
                        *dialing = Some(Redial::new(now, self.redial_min));
                    }
                    if let Some(redial) = dialing
                        && redial.due(now, self.redial_max)
                    {
                        actions.push(Action::DialBootstrap {
                            index,
                            addr: addr.clone(),
                        });
                    }
                }
                Entry::Name(named) => {
                    if isolated && !named.reached.is_empty() {
                        named.reached.clear();
                        named.redial = Redial::new(now, self.redial_min);
                    }
                    if !named.resolving && named.redial.due(now, self.redial_max) {
                        named.resolving = true;
                        actions.push(Action::Resolve {
                            index,
                            name: named.name.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The answer to a [`Action::Resolve`] for the seed at `index` (`None`:
    /// the question failed): the dials of the addresses of the name that
    /// `skip` does not rule out (this node's own, members'), each once, in
    /// the answer's order, of the name's family, at most [`MAX_RESOLVED`].
    /// A failure dials nothing; the name is asked again at its next turn.
    pub(super) fn on_resolved(
        &mut self,
        index: usize,
        answer: Option<&[IpAddr]>,
        skip: impl Fn(&str) -> bool,
    ) -> Vec<Action> {
        let Some(Entry::Name(named)) = self.entries.get_mut(index) else {
            return Vec::new();
        };
        named.resolving = false;
        let Some(ips) = answer else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let addrs: Vec<String> = ips
            .iter()
            .filter_map(|ip| named.name.address(*ip))
            .filter(|addr| seen.insert(addr.clone()))
            .take(MAX_RESOLVED)
            .collect();
        named.reached.retain(|a| seen.contains(a));
        addrs
            .into_iter()
            .filter(|addr| !named.reached.contains(addr) && !skip(addr))
            .map(|addr| Action::DialBootstrap { index, addr })
            .collect()
    }

    /// A dial of `addr` for the seed at `index` connected.
    pub(super) fn on_connected(&mut self, index: usize, addr: &str) {
        match self.entries.get_mut(index) {
            Some(Entry::Address { dialing, .. }) => *dialing = None,
            Some(Entry::Name(named)) if named.reached.len() < MAX_RESOLVED => {
                named.reached.insert(addr.to_owned());
            }
            Some(Entry::Name(_)) | None => {}
        }
    }

    /// When the seed at `index` is dialed or resolved next, if it still is.
    pub(super) fn retry_at(&self, index: usize) -> Option<Duration> {
        match self.entries.get(index)? {
            Entry::Address { dialing, .. } => dialing.as_ref().map(|r| r.next_at),
            Entry::Name(named) => Some(named.redial.next_at),
        }
    }
}
