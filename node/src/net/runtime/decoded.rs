//! The shards a node holds of its runs, kept decoded, so that a run's full
//! report is a merge in memory.
//!
//! A full report merges every shard of a run in one canonical order (node,
//! then sequence number), so that every node holding the same shards prints
//! the same bytes. Built from the data dir, most of its time went to reading
//! and decoding the files: 22-30 ms of a 28 ms report of 610 small shards
//! (docs/benchmarks.md, "Where the mesh bench's report goes"). The event
//! loop decodes each shard anyway when it takes it, so it keeps the decoded
//! shard here, in that canonical order, and hands the report builder the
//! whole run as shared pointers.
//!
//! Memory is bounded by [`MAX_DECODED_BYTES`], an estimate of what the
//! decoded shards take. Past it, the runs added to longest ago are let go
//! first. A run let go, or one restored from the data dir and not yet read,
//! builds its report from the data dir, as before: the bytes of the report
//! are the same either way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::core::shard::{SparseShard, SparseValue};

/// The most the decoded shards of every run may take, by [`weight`].
pub(super) const MAX_DECODED_BYTES: usize = 64 << 20;

/// What a decoded shard takes besides its series: its head (four strings,
/// the notes), the map and the shared pointer.
const SHARD_BYTES: usize = 640;

/// What a series takes besides its strings and a trend's counts: its key
/// and value in a map node about two thirds full, the metric's allocation
/// and the tags' vector.
const SERIES_BYTES: usize = 320;

/// What a tag takes besides its text: its two strings in the tags' vector
/// and their allocations.
const TAG_BYTES: usize = 112;

/// An estimate of the memory a decoded shard takes, from the sizes of what
/// it holds and what the allocator adds to each allocation.
fn weight(shard: &SparseShard) -> usize {
    SHARD_BYTES
        + shard
            .series
            .iter()
            .map(|(key, value)| {
                let tags: usize = key
                    .tags
                    .iter()
                    .map(|(k, v)| TAG_BYTES + k.len() + v.len())
                    .sum();
                let counts = match value {
                    SparseValue::Trend(c) => c.capacity() * std::mem::size_of::<(u64, u64)>(),
                    SparseValue::Value(_) => 0,
                };
                SERIES_BYTES + key.metric.len() + tags + counts
            })
            .sum::<usize>()
}

/// The decoded shards of the runs whose every shard this process took.
#[derive(Debug)]
pub(super) struct DecodedShards {
    runs: HashMap<String, Kept>,
    bytes: usize,
    max: usize,
    /// Counts additions, to find the run added to longest ago.
    clock: u64,
}

/// One run's shards.
#[derive(Debug, Default)]
struct Kept {
    /// By node and sequence number: the report's canonical order.
    shards: BTreeMap<(String, u64), Arc<SparseShard>>,
    bytes: usize,
    /// The clock when a shard was last added.
    touched: u64,
}

impl Default for DecodedShards {
    fn default() -> DecodedShards {
        DecodedShards::with_limit(MAX_DECODED_BYTES)
    }
}

impl DecodedShards {
    /// Keeps at most `max` bytes of decoded shards, by [`weight`].
    pub(super) fn with_limit(max: usize) -> DecodedShards {
        DecodedShards {
            runs: HashMap::new(),
            bytes: 0,
            max,
            clock: 0,
        }
    }

    /// Starts keeping the shards of a run this node holds none of: from
    /// here on, every shard it takes of the run goes through [`keep`].
    ///
    /// [`keep`]: DecodedShards::keep
    pub(super) fn begin(&mut self, run: &str) {
        self.clock += 1;
        let touched = self.clock;
        self.runs.entry(run.to_owned()).or_insert_with(|| Kept {
            touched,
            ..Kept::default()
        });
    }

    /// Keeps a shard of a run begun and not let go (others are not kept),
    /// then lets runs go, the one added to longest ago first, until the
    /// shards fit.
    pub(super) fn keep(&mut self, mut shard: SparseShard) {
        let Some(kept) = self.runs.get_mut(&shard.head.run_id) else {
            return;
        };
        // Decoding leaves a third of a trend's counts unused, on average.
        for value in shard.series.values_mut() {
            if let SparseValue::Trend(counts) = value {
                counts.shrink_to_fit();
            }
        }
        let shard = Arc::new(shard);
        self.clock += 1;
        kept.touched = self.clock;
        let added = weight(&shard);
        let key = (shard.head.node.clone(), shard.head.seq);
        if let Some(old) = kept.shards.insert(key, shard) {
            let old = weight(&old);
            kept.bytes -= old;
            self.bytes -= old;
        }
        kept.bytes += added;
        self.bytes += added;
        while self.bytes > self.max {
            let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, k)| k.touched)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            self.forget(&oldest);
        }
    }

    /// Lets a run's shards go: its report reads the data dir.
    pub(super) fn forget(&mut self, run: &str) {
        if let Some(kept) = self.runs.remove(run) {
            self.bytes -= kept.bytes;
        }
    }

    /// Every shard of a run, in the report's canonical order, if this node
    /// kept them all.
    pub(super) fn all_of(&self, run: &str) -> Option<Vec<Arc<SparseShard>>> {
        self.runs
            .get(run)
            .map(|kept| kept.shards.values().cloned().collect())
    }

    /// What the shards kept take, by [`weight`].
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metrics::{SeriesKey, SeriesSet, Value, new_histogram};
    use crate::core::shard::Shard;

    fn shard(run: &str, node: &str, seq: u64) -> SparseShard {
        let mut h = new_histogram();
        for v in 1..=50 {
            let _ = h.record(v * 1000);
        }
        let mut series = SeriesSet::new();
        let _ = series.merge(&SeriesKey::new("http_req_duration", []), &Value::Trend(h));
        let s = Shard {
            notes: Vec::new(),
            run_id: run.into(),
            node: node.into(),
            name: node.into(),
            region: "fra".into(),
            seq,
            start_ms: seq * 1000,
            end_ms: (seq + 1) * 1000,
            last: false,
            series,
        };
        let mut s = SparseShard::decode(&s.encode()).unwrap_or_else(|e| panic!("{e}"));
        // As kept, so that its weight is the one counted.
        for value in s.series.values_mut() {
            if let SparseValue::Trend(counts) = value {
                counts.shrink_to_fit();
            }
        }
        s
    }

    #[test]
    fn shards_come_out_in_the_canonical_order_of_runs_begun() {
        let mut kept = DecodedShards::default();
        kept.begin("r1");
        for (node, seq) in [("n2", 1), ("n1", 3), ("n2", 0), ("n1", 1), ("n1", 3)] {
            kept.keep(shard("r1", node, seq));
        }
        // A run not begun (restored from the data dir, say) is not kept.
        kept.keep(shard("r2", "n1", 0));
        let order: Vec<_> = kept
            .all_of("r1")
            .unwrap_or_default()
            .iter()
            .map(|s| (s.head.node.clone(), s.head.seq))
            .collect();
        assert_eq!(
            order,
            [("n1", 1), ("n1", 3), ("n2", 0), ("n2", 1)].map(|(n, s)| (n.to_owned(), s))
        );
        assert!(kept.all_of("r2").is_none());
        let one = weight(&shard("r1", "n1", 0));
        assert_eq!(kept.bytes(), 4 * one, "a shard taken twice counts once");
        kept.forget("r1");
        assert!(kept.all_of("r1").is_none());
        assert_eq!(kept.bytes(), 0);
    }

    #[test]
    fn past_the_limit_the_run_added_to_longest_ago_goes_first() {
        let one = weight(&shard("r1", "n1", 0));
        let mut kept = DecodedShards::with_limit(5 * one);
        kept.begin("r1");
        kept.begin("r2");
        kept.keep(shard("r1", "n1", 0));
        kept.keep(shard("r2", "n1", 0));
        kept.keep(shard("r1", "n1", 1));
        kept.keep(shard("r2", "n1", 1));
        kept.keep(shard("r1", "n1", 2));
        assert!(kept.all_of("r1").is_some() && kept.all_of("r2").is_some());
        // The sixth does not fit: r2 was added to before r1's last.
        kept.keep(shard("r1", "n1", 3));
        assert!(kept.all_of("r2").is_none());
        assert_eq!(kept.all_of("r1").map(|s| s.len()), Some(4));
        // A run that alone outgrows the limit is let go too; later shards
        // of it are not kept, so its report reads the data dir.
        for seq in 4..6 {
            kept.keep(shard("r1", "n1", seq));
        }
        assert!(kept.all_of("r1").is_none());
        kept.keep(shard("r1", "n1", 7));
        assert!(kept.all_of("r1").is_none());
        assert_eq!(kept.bytes(), 0);
    }
}
