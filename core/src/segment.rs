//! Execution segments: how a run's load is cut into exact shares.
//!
//! A segment is a half-open slice `[start, end)` of the unit interval, with
//! rational ends. A node whose segment is `[a, b)` runs
//! `floor(n·b) − floor(n·a)` of any `n` things (VUs, iterations, arrivals), so
//! the shares of segments that tile `[0, 1)` sum to exactly `n` for every `n`:
//! no VU or iteration is lost or doubled by rounding.
//!
//! For an arrival schedule, an endless sequence whose length no node knows
//! in advance, global iteration `i` belongs to the one segment that holds
//! the point `v(i)`, the van der Corput sequence (the bits of `i` mirrored
//! behind the binary point: 0, 1/2, 1/4, 3/4, 1/8, ...; see
//! [`ExecutionSegment::owns`]). The segments of any tiling (a plan's, or a
//! lost node's segment cut into parts) then own every iteration exactly
//! once, whatever their ends, and any prefix of the sequence spreads over
//! them within about `log2(n)` iterations of their fractions, interleaved
//! rather than in blocks. (Owning `i` when `scale(i + 1) > scale(i)` is
//! exact only for some tilings: `floor(n·b) − floor(n·a)` does not always
//! grow with `n`, and with five equal nodes the middle one owned a fifth
//! of the arrivals twice.)

use std::fmt;

use serde::{Deserialize, Serialize};

/// A slice `[start/denominator, end/denominator)` of the whole load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecutionSegment {
    start: u64,
    end: u64,
    denominator: u64,
}

/// A segment whose ends are not `0 <= start <= end <= denominator`, `denominator > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid execution segment {start}/{denominator}..{end}/{denominator}")]
pub struct InvalidSegment {
    start: u64,
    end: u64,
    denominator: u64,
}

impl ExecutionSegment {
    /// The whole load: `[0, 1)`.
    pub const WHOLE: ExecutionSegment = ExecutionSegment {
        start: 0,
        end: 1,
        denominator: 1,
    };

    /// `[start/denominator, end/denominator)`.
    pub fn new(start: u64, end: u64, denominator: u64) -> Result<Self, InvalidSegment> {
        if denominator == 0 || start > end || end > denominator {
            return Err(InvalidSegment {
                start,
                end,
                denominator,
            });
        }
        Ok(ExecutionSegment {
            start,
            end,
            denominator,
        })
    }

    /// Whether the ends are consistent: a segment decoded from a peer is
    /// checked with this before use.
    pub fn is_valid(&self) -> bool {
        Self::new(self.start, self.end, self.denominator).is_ok()
    }

    /// `(start, end)` as fractions of the whole, for display.
    pub fn bounds(&self) -> (f64, f64) {
        let d = self.denominator.max(1) as f64;
        (self.start as f64 / d, self.end as f64 / d)
    }

    /// Whether `next` starts where this one ends (exactly, as rationals).
    pub fn adjoins(&self, next: &ExecutionSegment) -> bool {
        u128::from(self.end) * u128::from(next.denominator)
            == u128::from(next.start) * u128::from(self.denominator)
    }

    /// Whether `parts`, in order, tile this segment exactly: the first
    /// starts where it starts, each starts where the one before ends, and
    /// the last ends where it ends (as rationals). A lost node's share is
    /// handed on in such parts.
    pub fn is_tiled_by(&self, parts: &[ExecutionSegment]) -> bool {
        let same = |a: u64, da: u64, b: u64, db: u64| {
            u128::from(a) * u128::from(db) == u128::from(b) * u128::from(da)
        };
        let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
            return false;
        };
        parts.iter().all(ExecutionSegment::is_valid)
            && same(first.start, first.denominator, self.start, self.denominator)
            && same(last.end, last.denominator, self.end, self.denominator)
            && parts.windows(2).all(|w| w[0].adjoins(&w[1]))
    }

    /// `(start, end, denominator)`: the segment is `[start/denominator,
    /// end/denominator)`.
    pub fn parts(&self) -> (u64, u64, u64) {
        (self.start, self.end, self.denominator)
    }

    /// Whether it starts at 0.
    pub fn starts_at_zero(&self) -> bool {
        self.start == 0
    }

    /// Whether it ends at 1.
    pub fn ends_at_one(&self) -> bool {
        self.end == self.denominator
    }

    /// Cuts `[0, 1)` into consecutive segments proportional to `weights`.
    /// Zero weights get empty segments; all-zero weights get nothing.
    pub fn split(weights: &[u64]) -> Vec<ExecutionSegment> {
        let denominator: u64 = weights.iter().sum::<u64>().max(1);
        let mut at = 0;
        weights
            .iter()
            .map(|w| {
                let seg = ExecutionSegment {
                    start: at,
                    end: at + w,
                    denominator,
                };
                at += w;
                seg
            })
            .collect()
    }

    /// Cuts this segment into consecutive sub-segments proportional to
    /// `weights`, with exact rational ends (the denominator grows by the sum
    /// of the weights); `None` if that would overflow. Zero weights get empty
    /// segments; all-zero weights leave this segment to no one.
    pub fn subdivide(&self, weights: &[u64]) -> Option<Vec<ExecutionSegment>> {
        let total = weights
            .iter()
            .try_fold(0u64, |sum, w| sum.checked_add(*w))?
            .max(1);
        let denominator = self.denominator.checked_mul(total)?;
        let base = self.start.checked_mul(total)?;
        let width = self.end - self.start;
        let mut before = 0u64;
        weights
            .iter()
            .map(|w| {
                let start = base.checked_add(width.checked_mul(before)?)?;
                before = before.checked_add(*w)?;
                let end = base.checked_add(width.checked_mul(before)?)?;
                Some(ExecutionSegment {
                    start,
                    end,
                    denominator,
                })
            })
            .collect()
    }

    fn floor_at(&self, numerator: u64, n: u64) -> u64 {
        // n·numerator/denominator with no overflow; the result is at most n.
        ((u128::from(n) * u128::from(numerator)) / u128::from(self.denominator)) as u64
    }

    /// This segment's share of `n` things: `floor(n·end) − floor(n·start)`.
    pub fn scale(&self, n: u64) -> u64 {
        self.floor_at(self.end, n) - self.floor_at(self.start, n)
    }

    /// How many of the first `n` things come before this segment's own:
    /// `floor(n·start)`. With [`scale`](Self::scale) it numbers VUs uniquely.
    pub fn offset(&self, n: u64) -> u64 {
        self.floor_at(self.start, n)
    }

    /// Whether this segment runs global item `i` (from 0) of an arrival
    /// sequence: whether it holds `v(i)`, `i`'s bits mirrored behind the
    /// binary point (see the module docs).
    pub fn owns(&self, i: u64) -> bool {
        // start/d <= m/2^64 < end/d, exactly: m·d against start·2^64.
        let m = u128::from(i.reverse_bits()) * u128::from(self.denominator);
        let at = |x: u64| u128::from(x) << 64;
        at(self.start) <= m && m < at(self.end)
    }

    /// How many of the first `n` items of an arrival sequence this segment
    /// owns ([`owns`](Self::owns)), in 64 steps at most.
    pub fn owned_among(&self, n: u64) -> u64 {
        below(n, u128::from(self.end), u128::from(self.denominator))
            - below(n, u128::from(self.start), u128::from(self.denominator))
    }

    /// The segment's size as a fraction of the whole.
    pub fn fraction(&self) -> f64 {
        (self.end - self.start) as f64 / self.denominator as f64
    }

    /// Whether this is the whole load.
    pub fn is_whole(&self) -> bool {
        self.start == 0 && self.end == self.denominator
    }
}

/// How many `i < n` have `v(i) < p/q` (van der Corput, base 2), for
/// `0 <= p <= q`. The even items are `v(j)/2` for `j < ceil(n/2)`, the odd
/// ones `1/2 + v(j)/2` for `j < floor(n/2)`: below `x < 1/2` only even ones
/// can be, those below `2x`; below `x >= 1/2` all the even ones are, and the
/// odd ones below `2x − 1`.
fn below(mut n: u64, mut p: u128, q: u128) -> u64 {
    let mut count = 0u64;
    while n > 0 && p > 0 {
        if p >= q {
            return count + n;
        }
        let (even, odd) = (n - n / 2, n / 2);
        if 2 * p < q {
            n = even;
            p *= 2;
        } else {
            count += even;
            n = odd;
            p = 2 * p - q;
        }
    }
    count
}

impl fmt::Display for ExecutionSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}..{}/{}",
            self.start, self.denominator, self.end, self.denominator
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_exactly_for_every_n() {
        let segs = ExecutionSegment::split(&[60, 30, 10, 7, 0, 1]);
        for n in 0..2000u64 {
            let total: u64 = segs.iter().map(|s| s.scale(n)).sum();
            assert_eq!(total, n, "n = {n}");
        }
    }

    #[test]
    fn each_item_has_exactly_one_owner_in_any_tiling_close_to_its_fraction() {
        // Plans of 3 to 9 equal nodes, one of uneven weights, and each with
        // a segment cut into parts (a lost node's share handed on).
        let mut tilings: Vec<Vec<ExecutionSegment>> = (3..10u64)
            .map(|d| ExecutionSegment::split(&vec![1; d as usize]))
            .collect();
        tilings.push(ExecutionSegment::split(&[3, 5, 2, 7]));
        for t in tilings.clone() {
            for k in 0..t.len() {
                let mut cut = t.clone();
                let parts = cut[k].subdivide(&[2, 1, 3]).expect("fits");
                cut.splice(k..=k, parts);
                tilings.push(cut);
            }
        }
        let n = 3000u64;
        for t in &tilings {
            let mut counts = vec![0u64; t.len()];
            for i in 0..n {
                let owners: Vec<usize> = (0..t.len()).filter(|&k| t[k].owns(i)).collect();
                assert_eq!(owners.len(), 1, "item {i} in {t:?}");
                counts[owners[0]] += 1;
            }
            for (seg, count) in t.iter().zip(&counts) {
                assert_eq!(seg.owned_among(n), *count, "{seg}");
                let ideal = seg.fraction() * n as f64;
                assert!(
                    (*count as f64 - ideal).abs() <= 13.0,
                    "{seg} owns {count} of {n}, ideal {ideal}"
                );
            }
        }
    }

    #[test]
    fn ownership_counts_match_for_every_prefix_and_interleave() {
        let thirds = ExecutionSegment::split(&[1, 1, 1]);
        let parts = thirds[1].subdivide(&[1, 1]).expect("fits");
        for n in 0..600u64 {
            for seg in thirds.iter().chain(&parts) {
                let brute = (0..n).filter(|&i| seg.owns(i)).count() as u64;
                assert_eq!(seg.owned_among(n), brute, "{seg}, n = {n}");
            }
        }
        // Every second of 100 arrivals gives each third 30 to 37.
        for second in 0..30u64 {
            for seg in &thirds {
                let c = (second * 100..(second + 1) * 100)
                    .filter(|&i| seg.owns(i))
                    .count();
                assert!((30..=37).contains(&c), "{seg}: {c} in second {second}");
            }
        }
        assert_eq!(ExecutionSegment::WHOLE.owned_among(u64::MAX), u64::MAX);
    }

    #[test]
    fn offsets_number_vus_without_overlap() {
        let segs = ExecutionSegment::split(&[1, 1, 1]);
        let n = 10;
        let mut next = 0;
        for s in &segs {
            assert_eq!(s.offset(n), next);
            next += s.scale(n);
        }
        assert_eq!(next, n);
    }

    #[test]
    fn a_subdivision_tiles_its_segment_and_a_gap_does_not() {
        let seg = ExecutionSegment::split(&[1, 1, 1])[1];
        let parts = seg.subdivide(&[2, 1, 3]).expect("fits");
        assert!(seg.is_tiled_by(&parts));
        let total: u64 = parts.iter().map(|p| p.scale(3000)).sum();
        assert_eq!(total, seg.scale(3000));
        assert!(!seg.is_tiled_by(&parts[..2]), "the last part is missing");
        assert!(!seg.is_tiled_by(&[parts[0], parts[2]]), "a gap");
        assert!(!seg.is_tiled_by(&[]));
        assert!(!ExecutionSegment::WHOLE.is_tiled_by(&parts));
    }

    #[test]
    fn whole_and_invalid() {
        assert!(ExecutionSegment::WHOLE.is_whole());
        assert_eq!(ExecutionSegment::WHOLE.scale(17), 17);
        assert!(ExecutionSegment::new(2, 1, 3).is_err());
        assert!(ExecutionSegment::new(0, 4, 3).is_err());
        assert!(ExecutionSegment::new(0, 0, 0).is_err());
        assert_eq!(
            ExecutionSegment::new(1, 2, 4).map(|s| s.fraction()),
            Ok(0.25)
        );
    }
}
