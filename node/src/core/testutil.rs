//! Helpers shared by the core's tests.

/// A deterministic xorshift generator: simulations replay exactly. The
/// simulator's, so the tests and `fusi-node simulate` draw alike.
pub use crate::sim::rng::Rng;
