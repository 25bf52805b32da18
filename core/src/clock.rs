//! Clock offsets between nodes, NTP style, as a pure state machine.
//!
//! A node asks a peer for the time: it notes `t1` when it sends, the peer
//! notes `t2` on receipt and `t3` when it answers, and the node notes `t4` on
//! receipt (each in its own wall clock). Then (RFC 5905 §8)
//!
//! - offset `θ = ((t2 − t1) + (t3 − t4)) / 2`, the peer's clock minus ours;
//! - delay `δ = (t4 − t1) − (t3 − t2)`, the round trip without the peer's work.
//!
//! Whatever the split of `δ` between the two directions, the true offset lies
//! in `θ ± δ/2`: between `θ* − b` and `θ* + f`, where `f` and `b` are the
//! trips out and back. Every sample's interval holds the true offset, so
//! [`ClockFilter`] keeps the recent samples of one peer and answers with the
//! middle of where their intervals overlap. That overlap ends at the
//! shortest trip out and the shortest trip back seen, even when they came in
//! different exchanges, so it is narrower than the sample with the smallest
//! `δ` alone (NTP's clock filter, Cristian's algorithm), which still holds
//! half the difference of its own two trips. Each interval widens with its
//! age at [`DRIFT_NS_PER_S`], and samples older than the window age out, so
//! the estimate follows drift when exchanges are repeated.
//!
//! **Steps.** A wall clock can jump (NTP stepping it, a VM resumed, an
//! operator's `date -s`). Without care the filter would go on preferring an
//! old, short-delay sample taken before the jump for its whole window, and a
//! node would start a run up to an hour off. So a new sample whose interval
//! `θ ± δ/2` does not meet the current estimate's `θ ± bound` (plus
//! [`STEP_MARGIN`]) cannot describe the same pair of clocks: one of them
//! stepped. The filter then drops every older sample and starts again from
//! the new one ([`ClockFilter::steps`] counts it).
//!
//! Time here is numbers passed in: wall-clock nanoseconds for the four
//! timestamps, and a monotonic "now" for ageing. No clock is read.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// The four timestamps of one exchange, in nanoseconds of each side's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Request sent (our clock).
    pub t1: i64,
    /// Request received (the peer's clock).
    pub t2: i64,
    /// Answer sent (the peer's clock).
    pub t3: i64,
    /// Answer received (our clock).
    pub t4: i64,
}

/// What one exchange says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The peer's clock minus ours, ns.
    pub offset_ns: i64,
    /// The round trip, ns (never negative).
    pub delay_ns: i64,
    /// When the sample was taken, on our monotonic clock.
    pub at: Duration,
}

impl Exchange {
    /// The sample of this exchange, taken at `at`; `None` if the timestamps
    /// are impossible (the answer came before the question, or the peer
    /// answered before it was asked), which a broken or hostile peer can send.
    pub fn sample(&self, at: Duration) -> Option<Sample> {
        let Exchange { t1, t2, t3, t4 } = *self;
        let round_trip = t4.checked_sub(t1)?;
        let held = t3.checked_sub(t2)?;
        if round_trip < 0 || held < 0 || held > round_trip {
            return None;
        }
        let offset = (i128::from(t2) - i128::from(t1) + i128::from(t3) - i128::from(t4)) / 2;
        Some(Sample {
            offset_ns: i64::try_from(offset).ok()?,
            delay_ns: round_trip - held,
            at,
        })
    }
}

/// The current estimate of one peer's clock offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// The peer's clock minus ours, ns.
    pub offset_ns: i64,
    /// The true offset is within `offset_ns ± bound_ns`: where the
    /// samples' intervals overlap (see [`ClockFilter::estimate`]).
    pub bound_ns: i64,
    /// The shortest round trip among the samples, ns.
    pub delay_ns: i64,
    /// Samples the estimate was chosen from.
    pub samples: usize,
}

/// How far outside the current estimate's bound a sample must fall to be
/// taken for a clock step rather than noise: more than the drift of two
/// ordinary clocks (100 ppm) over the filter's 60 s window, far less than
/// any step worth the name (NTP steps from 128 ms).
pub const STEP_MARGIN_NS: i64 = 10_000_000;

/// How fast two clocks are taken to drift apart at most, in ns per second
/// (15 ppm, NTP's φ): a sample's interval widens by this much for every
/// second of its age.
pub const DRIFT_NS_PER_S: i64 = 15_000;

/// How far two clocks may have drifted apart in `age`, ns.
fn drift_of(age: Duration) -> i128 {
    i128::try_from(age.as_nanos())
        .unwrap_or(i128::MAX)
        .saturating_mul(i128::from(DRIFT_NS_PER_S))
        / 1_000_000_000
}

/// Recent samples of one peer, and what they say together.
#[derive(Debug, Clone)]
pub struct ClockFilter {
    samples: VecDeque<Sample>,
    /// The peer's own estimate of this node's clock, turned round: the
    /// peer's clock minus ours, its bound, and when it came.
    told: Option<(i64, i64, Duration)>,
    capacity: usize,
    max_age: Duration,
    steps: u64,
}

impl ClockFilter {
    /// Keeps at most `capacity` samples, none older than `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> ClockFilter {
        ClockFilter {
            samples: VecDeque::with_capacity(capacity.max(1)),
            told: None,
            capacity: capacity.max(1),
            max_age,
            steps: 0,
        }
    }

    /// Adds a sample; the oldest one goes when the filter is full. A sample
    /// that contradicts the current estimate (a clock stepped, see the
    /// module's documentation) replaces every sample held; `true` then.
    pub fn add(&mut self, sample: Sample) -> bool {
        let stepped = self.estimate(sample.at).is_some_and(|e| {
            let gap = i128::from(sample.offset_ns) - i128::from(e.offset_ns);
            let allowed = i128::from(e.bound_ns)
                + i128::from(sample.delay_ns / 2 + 1)
                + i128::from(STEP_MARGIN_NS);
            gap.abs() > allowed
        });
        if stepped {
            self.clear();
            self.steps += 1;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        stepped
    }

    /// Drops every sample: the clock of one side stepped, so none of them
    /// describes the two clocks any more.
    pub fn clear(&mut self) {
        self.samples.clear();
        self.told = None;
    }

    /// Takes what the peer estimates of this node's clock, received at
    /// `at`: `offset_ns ± bound_ns`, our clock minus the peer's. The peer's
    /// samples are exchanges it started, so they add trips each way that
    /// this node never timed: the estimate narrows to where the two
    /// overlap. The latest is kept; it never stands alone (see
    /// [`ClockFilter::estimate`]). A negative bound is impossible and is
    /// ignored.
    pub fn told(&mut self, offset_ns: i64, bound_ns: i64, at: Duration) {
        if bound_ns >= 0 {
            self.told = Some((offset_ns.saturating_neg(), bound_ns, at));
        }
    }

    /// How many clock steps the filter has seen.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Samples held (fresh or not).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The estimate from the samples not older than the window at `now`,
    /// or `None` without any.
    ///
    /// Each sample says the offset lies in `θ ± (δ/2 + φ·age)`: its round
    /// trip's half, widened by [`DRIFT_NS_PER_S`] for every second since it
    /// was taken, as the two clocks may have drifted apart since (NTP's
    /// dispersion). All of them hold at once, so the estimate is the
    /// middle of where they overlap, and its bound half that overlap. That
    /// is never wider than the best sample alone, and often far narrower:
    /// the overlap is bounded by the shortest trip out and the shortest
    /// trip back among the samples, wherever each came from, where the
    /// single sample with the shortest round trip still holds half the
    /// difference of its two directions. If the samples do not overlap
    /// (a clock drifted or slewed faster than φ), the one with the
    /// narrowest interval alone is taken.
    ///
    /// What the peer [told](ClockFilter::told) of its own estimate narrows
    /// this one further where the two overlap. Where they do not (a stale
    /// estimate of the peer's from before a clock step, a peer that lies),
    /// it is left out: this node's own samples always decide.
    pub fn estimate(&self, now: Duration) -> Option<Estimate> {
        let fresh = self
            .samples
            .iter()
            .filter(|s| now.saturating_sub(s.at) <= self.max_age);
        let interval = |s: &Sample| {
            let radius = (i128::from(s.delay_ns) + 1) / 2 + drift_of(now.saturating_sub(s.at));
            let mid = i128::from(s.offset_ns);
            (mid - radius, mid + radius)
        };
        let mut count = 0;
        let mut delay_ns = i64::MAX;
        let mut overlap = (i128::MIN, i128::MAX);
        let mut narrowest: Option<(i128, i128)> = None;
        for s in fresh {
            count += 1;
            delay_ns = delay_ns.min(s.delay_ns);
            let (lo, hi) = interval(s);
            overlap = (overlap.0.max(lo), overlap.1.min(hi));
            if narrowest.is_none_or(|(l, h)| hi - lo < h - l) {
                narrowest = Some((lo, hi));
            }
        }
        let narrowest = narrowest?;
        let (mut lo, mut hi) = if overlap.0 <= overlap.1 {
            overlap
        } else {
            narrowest
        };
        if let Some((offset, bound, at)) = self.told {
            let age = now.saturating_sub(at);
            if age <= self.max_age {
                let radius = i128::from(bound) + drift_of(age);
                let (l, h) = (i128::from(offset) - radius, i128::from(offset) + radius);
                if l <= hi && lo <= h {
                    (lo, hi) = (lo.max(l), hi.min(h));
                }
            }
        }
        let half = (hi - lo + 1) / 2;
        Some(Estimate {
            offset_ns: i64::try_from(lo + (hi - lo) / 2).ok()?,
            bound_ns: i64::try_from(half).ok()?,
            delay_ns,
            samples: count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// One exchange with a peer whose clock is `offset` ahead, `forward` and
    /// `back` one-way delays and `held` processing time, sent at true time `t`.
    fn exchange(t: i64, offset: i64, forward: i64, back: i64, held: i64) -> Exchange {
        let t1 = t;
        let t2 = t + forward + offset;
        let t3 = t2 + held;
        let t4 = t3 - offset + back;
        Exchange { t1, t2, t3, t4 }
    }

    #[test]
    fn symmetric_paths_give_the_exact_offset() {
        let s = exchange(1_000, 5_000_000, 30_000, 30_000, 7_000)
            .sample(Duration::ZERO)
            .expect("valid");
        assert_eq!(s.offset_ns, 5_000_000);
        assert_eq!(s.delay_ns, 60_000);
    }

    #[test]
    fn asymmetry_widens_the_bound_as_the_arithmetic_predicts() {
        // 70 ms one way, 10 ms back: θ = (70 − 10) / 2 = 30 ms off, δ/2 = 40 ms.
        let s = exchange(0, 0, 70_000_000, 10_000_000, 0)
            .sample(Duration::ZERO)
            .expect("valid");
        assert_eq!(s.offset_ns, 30_000_000);
        assert_eq!(s.delay_ns, 80_000_000);
        let mut f = ClockFilter::new(8, Duration::from_secs(60));
        f.add(s);
        let e = f.estimate(Duration::ZERO).expect("one sample");
        assert_eq!(e.bound_ns, 40_000_000);
        assert!(
            e.offset_ns.abs() <= e.bound_ns,
            "the true offset (0) is inside the bound"
        );
    }

    #[test]
    fn the_true_offset_is_always_inside_the_bound() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let offset = rng.below(2_000_000_000) as i64 - 1_000_000_000;
            let mut f = ClockFilter::new(32, Duration::from_secs(30));
            for i in 0..40u64 {
                // 30-90 ms base each way plus up to 50 ms of queueing, asymmetric.
                let forward =
                    30_000_000 + rng.below(60_000_000) as i64 + rng.below(50_000_000) as i64;
                let back = 30_000_000 + rng.below(60_000_000) as i64;
                let held = rng.below(1_000_000) as i64;
                let t = 1_700_000_000_000_000_000 + i as i64 * 1_000_000_000;
                let s = exchange(t, offset, forward, back, held)
                    .sample(Duration::from_secs(i))
                    .expect("valid");
                f.add(s);
                let e = f.estimate(Duration::from_secs(i)).expect("samples");
                assert!(
                    (e.offset_ns - offset).abs() <= e.bound_ns,
                    "offset {offset}: estimate {} ± {}",
                    e.offset_ns,
                    e.bound_ns
                );
            }
        }
    }

    #[test]
    fn the_overlap_of_the_samples_beats_the_best_one_alone() {
        // 1 ms ahead; the shortest trip out (2 µs) and the shortest back
        // (3 µs) come in different exchanges, 1 ms apart.
        let mut f = ClockFilter::new(8, Duration::from_secs(60));
        for (i, (fwd, back)) in [(2, 20), (20, 3), (50, 40)].into_iter().enumerate() {
            f.add(
                exchange(0, 1_000_000, fwd * 1000, back * 1000, 0)
                    .sample(Duration::from_millis(i as u64))
                    .expect("valid"),
            );
        }
        let e = f.estimate(Duration::from_millis(2)).expect("samples");
        // The sample with the shortest round trip (22 µs) alone says
        // 1 ms − 9 µs ± 11 µs; the overlap says 1 ms − 0.5 µs ± 2.5 µs.
        assert!((e.offset_ns - 1_000_000).abs() <= 1_000, "{e:?}");
        assert!(e.bound_ns <= 2_600, "{e:?}");
        assert!((e.offset_ns - 1_000_000).abs() <= e.bound_ns, "{e:?}");
        assert_eq!((e.delay_ns, e.samples), (22_000, 3));
    }

    #[test]
    fn an_interval_widens_with_its_age_and_samples_that_do_not_overlap_leave_the_narrowest() {
        let mut f = ClockFilter::new(8, Duration::from_secs(60));
        f.add(
            exchange(0, 0, 50_000, 50_000, 0)
                .sample(Duration::ZERO)
                .expect("valid"),
        );
        // 10 s later: 50 µs of half round trip and 150 µs of drift (15 ppm).
        let e = f.estimate(Duration::from_secs(10)).expect("one sample");
        assert_eq!((e.offset_ns, e.bound_ns), (0, 200_000));
        // The peer's clock moved 2 ms, more than drift explains but less
        // than a step: the two intervals do not overlap, and the newer,
        // narrower one is taken alone.
        let stepped = f.add(
            exchange(0, 2_000_000, 50_000, 50_000, 0)
                .sample(Duration::from_secs(10))
                .expect("valid"),
        );
        assert!(!stepped);
        let e = f.estimate(Duration::from_secs(10)).expect("samples");
        assert_eq!((e.offset_ns, e.bound_ns, e.samples), (2_000_000, 50_000, 2));
    }

    #[test]
    fn what_the_peer_told_narrows_the_estimate_only_where_it_overlaps_and_never_alone() {
        let mut f = ClockFilter::new(8, Duration::from_secs(60));
        f.told(-1_000_000, 10, Duration::ZERO);
        assert!(
            f.estimate(Duration::ZERO).is_none(),
            "what a peer tells never stands alone"
        );
        // The peer is 1 ms ahead; our one exchange took 60 µs out, 20 back:
        // 1.02 ms ± 40 µs.
        f.add(
            exchange(0, 1_000_000, 60_000, 20_000, 0)
                .sample(Duration::ZERO)
                .expect("valid"),
        );
        // The peer timed its own exchanges: our clock is 1 ms behind its,
        // ± 5 µs. Turned round, 1 ms ± 5 µs, inside ours.
        f.told(-1_000_000, 5_000, Duration::ZERO);
        let e = f.estimate(Duration::ZERO).expect("samples");
        assert_eq!((e.offset_ns, e.bound_ns, e.samples), (1_000_000, 5_000, 1));
        // A telling that misses our own interval (a stale one, a lie) is
        // left out, and a bound below zero is not taken at all.
        f.told(-3_000_000, 5_000, Duration::ZERO);
        let e = f.estimate(Duration::ZERO).expect("samples");
        assert_eq!((e.offset_ns, e.bound_ns), (1_020_000, 40_000));
        f.told(-1_000_000, -1, Duration::ZERO);
        assert_eq!(
            f.estimate(Duration::ZERO).expect("samples").bound_ns,
            40_000
        );
        // A step drops what the peer told with the samples.
        f.told(-1_000_000, 5_000, Duration::ZERO);
        assert!(
            f.add(
                exchange(0, 900_000_000, 60_000, 20_000, 0)
                    .sample(Duration::from_secs(1))
                    .expect("valid")
            )
        );
        let e = f.estimate(Duration::from_secs(1)).expect("samples");
        assert_eq!((e.offset_ns, e.bound_ns), (900_020_000, 40_000));
    }

    #[test]
    fn old_samples_age_out_so_drift_is_followed() {
        let mut f = ClockFilter::new(64, Duration::from_secs(10));
        // A great sample, then the peer's clock drifts by 1 ms; later samples
        // are noisier but newer.
        f.add(
            exchange(0, 0, 1_000, 1_000, 0)
                .sample(Duration::from_secs(0))
                .expect("valid"),
        );
        for i in 1..=20u64 {
            f.add(
                exchange(0, 1_000_000, 50_000, 50_000, 0)
                    .sample(Duration::from_secs(i))
                    .expect("valid"),
            );
        }
        let e = f.estimate(Duration::from_secs(20)).expect("samples");
        assert_eq!(e.offset_ns, 1_000_000, "the stale sample no longer counts");
        assert_eq!(e.samples, 11);
        assert!(
            f.estimate(Duration::from_secs(100)).is_none(),
            "everything aged out"
        );
    }

    #[test]
    fn a_clock_step_either_way_drops_the_old_samples_at_once() {
        for step in [
            1_000_000_000i64,
            -1_000_000_000,
            90_000_000_000,
            3_600_000_000_000,
            -3_600_000_000_000,
        ] {
            let mut f = ClockFilter::new(32, Duration::from_secs(60));
            // Eight excellent samples before the step: 20 µs round trips.
            for i in 0..8u64 {
                let stepped = f.add(
                    exchange(0, 5_000_000, 10_000, 10_000, 0)
                        .sample(Duration::from_secs(i))
                        .expect("valid"),
                );
                assert!(!stepped);
            }
            // One worse sample after the peer's clock stepped: it wins,
            // though its delay is 50 times larger.
            let stepped = f.add(
                exchange(0, 5_000_000 + step, 500_000, 500_000, 0)
                    .sample(Duration::from_secs(8))
                    .expect("valid"),
            );
            assert!(stepped, "step {step}");
            let e = f.estimate(Duration::from_secs(8)).expect("one sample");
            assert_eq!(
                (e.offset_ns, e.samples),
                (5_000_000 + step, 1),
                "step {step}"
            );
            assert_eq!(f.steps(), 1);
        }
    }

    #[test]
    fn noise_and_drift_within_the_margin_are_not_steps() {
        let mut rng = Rng(42);
        let mut f = ClockFilter::new(32, Duration::from_secs(60));
        for i in 0..200u64 {
            // 100 ppm of drift, 0.1-5 ms round trips with asymmetric queueing.
            let offset = 1_000_000 + (i as i64) * 100_000;
            let forward = 50_000 + rng.below(4_000_000) as i64;
            let back = 50_000 + rng.below(1_000_000) as i64;
            f.add(
                exchange(0, offset, forward, back, 0)
                    .sample(Duration::from_secs(i))
                    .expect("valid"),
            );
        }
        assert_eq!(f.steps(), 0);
    }

    #[test]
    fn impossible_timestamps_are_refused() {
        let at = Duration::ZERO;
        assert!(
            Exchange {
                t1: 10,
                t2: 5,
                t3: 4,
                t4: 20
            }
            .sample(at)
            .is_none(),
            "answered before asked"
        );
        assert!(
            Exchange {
                t1: 10,
                t2: 0,
                t3: 100,
                t4: 20
            }
            .sample(at)
            .is_none(),
            "held longer than the round trip"
        );
        assert!(
            Exchange {
                t1: 10,
                t2: 0,
                t3: 0,
                t4: 5
            }
            .sample(at)
            .is_none(),
            "received before sent"
        );
        assert!(
            Exchange {
                t1: i64::MIN,
                t2: 0,
                t3: 0,
                t4: i64::MAX
            }
            .sample(at)
            .is_none(),
            "overflow"
        );
        assert!(
            Exchange {
                t1: -5,
                t2: i64::MAX,
                t3: i64::MAX,
                t4: 5
            }
            .sample(at)
            .is_some()
        );
    }
}
