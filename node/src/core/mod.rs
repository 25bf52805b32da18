//! The sans-IO core: plain, deterministic logic with no sockets, no tokio and
//! no wall clock.
//!
//! Everything here takes data and the current time as arguments and returns
//! data, so it runs the same under tests, under a simulator and in a node. The
//! engine and (later) the network layer only translate between this and the
//! outside world.

pub mod allow;
pub mod assign;
pub mod clock;
pub mod latency;
pub mod leader;
pub mod membership;
pub mod mesh;
pub mod metrics;
pub mod module_name;
pub mod printable;
pub mod report;
pub mod run_report;
pub mod runs;
pub mod schedule;
pub mod segment;
pub mod shard;
pub mod spec;
pub mod statuses;
pub mod sync;
#[cfg(test)]
pub(crate) mod testutil;
pub mod threshold;
pub mod wire;
