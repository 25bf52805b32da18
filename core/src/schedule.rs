//! When things happen in a run, as pure functions of the elapsed time.
//!
//! The executors in `engine/` only follow these answers: how many VUs a
//! ramping-vus run wants at time `t`, and when each iteration of an
//! arrival-rate run is due. Every node computes the same global schedule and
//! runs the part its segment owns, so no coordination is needed once a run
//! has started.

use std::time::Duration;

use super::spec::{Executor, Stage};

/// The VU target of a ramp at `elapsed`, across all nodes, before rounding:
/// linear within each stage, the last target after the end.
pub fn ramp_value(start: f64, stages: &[Stage], elapsed: Duration) -> f64 {
    let mut from = start;
    let mut t = elapsed.as_secs_f64();
    for stage in stages {
        let d = stage.duration.as_secs_f64();
        if t < d {
            return from + (stage.target - from) * (t / d);
        }
        t -= d;
        from = stage.target;
    }
    from
}

/// The integral of a ramp over its stages (its area: VU-seconds when the
/// ramp counts VUs), from `start`, linear within each stage.
pub fn ramp_area(start: f64, stages: &[Stage]) -> f64 {
    let mut from = start;
    stages
        .iter()
        .map(|stage| {
            let area = stage.duration.as_secs_f64() * (from + stage.target) / 2.0;
            from = stage.target;
            area
        })
        .sum()
}

/// One piece of an arrival schedule: the rate goes linearly from `from` to
/// `to` iterations per second over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Piece {
    duration: f64,
    from: f64,
    to: f64,
}

/// The due times of an arrival-rate run's iterations, across all nodes.
///
/// Iteration `i` (from 0) is due at the first instant when `i` iterations
/// should have started, the inverse of the integral of the rate. A constant
/// rate `r` gives `i / r`: 200/s for 5 s gives exactly 1000 iterations, the
/// first at 0 and the last at 4.995 s.
#[derive(Debug, Clone)]
pub struct ArrivalSchedule {
    pieces: Vec<Piece>,
    next: u64,
    /// Index into `pieces` of the piece the next iteration falls in.
    piece: usize,
    /// Seconds before, and iterations due before, the start of `piece`.
    piece_start: f64,
    piece_count: f64,
}

impl ArrivalSchedule {
    /// The schedule of an arrival-rate executor; `None` for closed executors.
    pub fn for_executor(executor: &Executor) -> Option<ArrivalSchedule> {
        let pieces = match executor {
            Executor::ConstantArrivalRate { rate, duration, .. } => vec![Piece {
                duration: duration.as_secs_f64(),
                from: rate.per_second(),
                to: rate.per_second(),
            }],
            Executor::RampingArrivalRate {
                start_rate,
                time_unit,
                stages,
                ..
            } => {
                let unit = time_unit.as_secs_f64().max(f64::MIN_POSITIVE);
                let mut from = start_rate / unit;
                stages
                    .iter()
                    .map(|s| {
                        let to = s.target / unit;
                        let piece = Piece {
                            duration: s.duration.as_secs_f64(),
                            from,
                            to,
                        };
                        from = to;
                        piece
                    })
                    .collect()
            }
            _ => return None,
        };
        Some(ArrivalSchedule {
            pieces,
            next: 0,
            piece: 0,
            piece_start: 0.0,
            piece_count: 0.0,
        })
    }

    /// How many iterations the whole schedule starts, across all nodes: the
    /// integral of the rate, rounded up (iteration `i` is due before the
    /// end exactly when `i` is below it).
    pub fn total(&self) -> u64 {
        let area: f64 = self
            .pieces
            .iter()
            .map(|p| p.duration * (p.from + p.to) / 2.0)
            .sum();
        if area.is_finite() && area > 0.0 {
            // Floating-point noise must not add an iteration: 300/s for
            // 10 s is 3000, not 3001.
            (area - 1e-6).ceil().max(0.0) as u64
        } else {
            0
        }
    }

    /// The index and due time of the next iteration, or `None` after the end.
    pub fn next_due(&mut self) -> Option<(u64, Duration)> {
        let target = self.next as f64;
        while let Some(p) = self.pieces.get(self.piece) {
            let in_piece = p.duration * (p.from + p.to) / 2.0;
            let need = target - self.piece_count;
            if need < in_piece {
                let s = Self::solve(p, need);
                if s < p.duration {
                    let i = self.next;
                    self.next += 1;
                    return Some((i, Duration::from_secs_f64(self.piece_start + s)));
                }
            }
            self.piece += 1;
            self.piece_start += p.duration;
            self.piece_count += in_piece;
        }
        None
    }

    /// Seconds into a piece at which `need` iterations are due: the root of
    /// `from·s + (to − from)·s²/(2·duration) = need`, in a form that stays
    /// exact when the rate is constant.
    fn solve(p: &Piece, need: f64) -> f64 {
        if need <= 0.0 {
            return 0.0;
        }
        let a = (p.to - p.from) / (2.0 * p.duration);
        let disc = (p.from * p.from + 4.0 * a * need).max(0.0);
        let denom = p.from + disc.sqrt();
        if denom <= 0.0 {
            f64::INFINITY
        } else {
            2.0 * need / denom
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Rate;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn ramp_interpolates_between_stages() {
        let stages = [
            Stage {
                duration: secs(10.0),
                target: 100.0,
            },
            Stage {
                duration: secs(10.0),
                target: 100.0,
            },
            Stage {
                duration: secs(10.0),
                target: 0.0,
            },
        ];
        assert_eq!(ramp_value(0.0, &stages, secs(0.0)), 0.0);
        assert_eq!(ramp_value(0.0, &stages, secs(5.0)), 50.0);
        assert_eq!(ramp_value(0.0, &stages, secs(15.0)), 100.0);
        assert_eq!(ramp_value(0.0, &stages, secs(25.0)), 50.0);
        assert_eq!(ramp_value(0.0, &stages, secs(99.0)), 0.0);
    }

    #[test]
    fn the_total_is_the_number_of_iterations_the_schedule_starts() {
        let ramp = Executor::RampingArrivalRate {
            start_rate: 10.0,
            time_unit: secs(1.0),
            stages: vec![
                Stage {
                    duration: secs(3.0),
                    target: 50.0,
                },
                Stage {
                    duration: secs(2.5),
                    target: 7.0,
                },
            ],
            pre_allocated_vus: 1,
            max_vus: 1,
        };
        let constant = Executor::ConstantArrivalRate {
            rate: Rate {
                iterations: 300.0,
                per: secs(1.0),
            },
            duration: secs(10.0),
            pre_allocated_vus: 1,
            max_vus: 1,
        };
        for ex in [ramp, constant] {
            let mut s = ArrivalSchedule::for_executor(&ex).expect("arrival");
            let total = s.total();
            let mut n = 0;
            while s.next_due().is_some() {
                n += 1;
            }
            assert_eq!(total, n, "{ex:?}");
        }
        assert_eq!(
            ramp_area(
                0.0,
                &[Stage {
                    duration: secs(10.0),
                    target: 100.0
                }]
            ),
            500.0
        );
    }

    #[test]
    fn constant_rate_gives_exact_count_and_spacing() {
        let ex = Executor::ConstantArrivalRate {
            rate: Rate {
                iterations: 200.0,
                per: secs(1.0),
            },
            duration: secs(5.0),
            pre_allocated_vus: 1,
            max_vus: 1,
        };
        let mut s = ArrivalSchedule::for_executor(&ex).expect("open executor");
        let due: Vec<_> = std::iter::from_fn(|| s.next_due()).collect();
        assert_eq!(due.len(), 1000);
        assert_eq!(due[0], (0, Duration::ZERO));
        let (i, t) = due[999];
        assert_eq!(i, 999);
        assert!((t.as_secs_f64() - 4.995).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn ramping_rate_integrates_the_ramp() {
        let ex = Executor::RampingArrivalRate {
            start_rate: 0.0,
            time_unit: secs(1.0),
            stages: vec![
                Stage {
                    duration: secs(10.0),
                    target: 10.0,
                },
                Stage {
                    duration: secs(10.0),
                    target: 10.0,
                },
                Stage {
                    duration: secs(5.0),
                    target: 0.0,
                },
            ],
            pre_allocated_vus: 1,
            max_vus: 1,
        };
        let mut s = ArrivalSchedule::for_executor(&ex).expect("open executor");
        let due: Vec<_> = std::iter::from_fn(|| s.next_due()).collect();
        // 50 during the ramp up, 100 at full rate, 25 during the ramp down.
        assert_eq!(due.len(), 175);
        assert!(
            due.windows(2).all(|w| w[0].1 <= w[1].1),
            "due times are sorted"
        );
        let first_half = due.iter().filter(|(_, t)| *t < secs(5.0)).count();
        assert_eq!(
            first_half, 13,
            "a quarter of the ramp's 50 in its first half, plus the one at 0"
        );
        assert!(due.last().is_some_and(|(_, t)| *t < secs(25.0)));
    }

    #[test]
    fn closed_executors_have_no_arrival_schedule() {
        let ex = Executor::ConstantVus {
            vus: 1,
            duration: secs(1.0),
        };
        assert!(ArrivalSchedule::for_executor(&ex).is_none());
    }
}
