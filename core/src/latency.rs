//! Emulated latency between regions, for rehearsing geography on one machine.
//!
//! Kernel netem is not available everywhere (it is not on our CI machines), so
//! a testnet asks each node to delay, in user space, every message it receives
//! from a node of another region. The delay is one way and per ordered pair of
//! regions, so a path can be asymmetric, which is exactly what bounds an
//! NTP-style clock estimate:
//!
//! - `fra-nrt=120ms` delays both directions by 120 ms;
//! - `fra>nrt=70ms` delays messages from `fra` to `nrt` only; a later entry
//!   overrides an earlier one, so `fra-nrt=120ms,fra>nrt=70ms` is 70 ms one
//!   way and 120 ms back.
//!
//! Nodes of the same region, and pairs not named, get no delay.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::spec::parse_duration;
use crate::wire::validate_region;

/// The most delay one direction may be given.
pub const MAX_EMULATED_DELAY: Duration = Duration::from_secs(10);

/// One-way delays between ordered pairs of regions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyMap {
    delays: BTreeMap<(String, String), Duration>,
}

impl LatencyMap {
    /// Parses `a-b=D` (both ways) and `a>b=D` (one way) entries, separated
    /// by commas.
    pub fn parse(text: &str) -> Result<LatencyMap, String> {
        let mut delays = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let fix = "write entries like fra-nrt=120ms (both ways) or fra>nrt=70ms (one way), separated by commas";
            let (pair, delay) = entry
                .split_once('=')
                .ok_or_else(|| format!("latency entry {entry:?} has no '='; {fix}"))?;
            let delay =
                parse_duration(delay).map_err(|e| format!("latency entry {entry:?}: {e}"))?;
            if delay > MAX_EMULATED_DELAY {
                return Err(format!(
                    "latency entry {entry:?}: more than {} s is not a network",
                    MAX_EMULATED_DELAY.as_secs()
                ));
            }
            let (from, to, both) = if let Some((a, b)) = pair.split_once('>') {
                (a.trim(), b.trim(), false)
            } else if let Some((a, b)) = pair.split_once('-') {
                (a.trim(), b.trim(), true)
            } else {
                return Err(format!(
                    "latency entry {entry:?} names no pair of regions; {fix}"
                ));
            };
            for region in [from, to] {
                validate_region(region).map_err(|e| format!("latency entry {entry:?}: {e}"))?;
            }
            if from == to {
                return Err(format!(
                    "latency entry {entry:?} pairs a region with itself; nodes of one region get no delay"
                ));
            }
            delays.insert((from.to_owned(), to.to_owned()), delay);
            if both {
                delays.insert((to.to_owned(), from.to_owned()), delay);
            }
        }
        if delays.is_empty() {
            return Err("empty latency map; write for example fra-nrt=120ms".to_owned());
        }
        Ok(LatencyMap { delays })
    }

    /// The delay of a message from region `from` to region `to`.
    pub fn delay(&self, from: &str, to: &str) -> Duration {
        self.delays
            .get(&(from.to_owned(), to.to_owned()))
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_both_ways_and_one_way_overrides() {
        let map = LatencyMap::parse("fra-nrt=120ms, fra>nrt=70ms,fra-ewr=40ms").unwrap();
        assert_eq!(map.delay("fra", "nrt"), Duration::from_millis(70));
        assert_eq!(map.delay("nrt", "fra"), Duration::from_millis(120));
        assert_eq!(map.delay("ewr", "fra"), Duration::from_millis(40));
        assert_eq!(map.delay("fra", "ewr"), Duration::from_millis(40));
        assert_eq!(map.delay("nrt", "ewr"), Duration::ZERO);
        assert_eq!(map.delay("fra", "fra"), Duration::ZERO);
    }

    #[test]
    fn bad_maps_are_refused_with_the_entry_named() {
        for bad in [
            "",
            "fra",
            "fra=10ms",
            "fra-nrt",
            "fra-nrt=fast",
            "fra-fra=10ms",
            "FRA-nrt=10ms",
            "fra-nrt=1h",
            "fra>=10ms",
        ] {
            let err = LatencyMap::parse(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(
            LatencyMap::parse("fra-nrt=fast")
                .unwrap_err()
                .contains("fra-nrt=fast")
        );
    }
}
