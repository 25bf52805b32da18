//! fusi-core: the sans-IO core of a fusi node: plain, deterministic logic
//! with no sockets, no tokio and no wall clock.
//!
//! Everything here takes data and the current time as arguments and returns
//! data, so it runs the same under tests, under a simulator and in a node. The
//! engine and the network layer of `fusi-node` only translate between this
//! and the outside world. It is a crate of its own so that nothing here can
//! reach for tokio, libp2p, wasmtime or hyper: it depends on none of them
//! (`fusi-node` re-exports it as `fusi_node::core`).

pub mod allow;
pub mod assign;
pub mod cidr;
pub mod clock;
pub mod data;
pub mod latency;
pub mod leader;
pub mod membership;
pub mod mesh;
pub mod metrics;
pub mod module_name;
pub mod module_spread;
pub mod node;
pub mod printable;
pub mod report;
pub mod rng;
pub mod run_report;
pub mod runs;
pub mod schedule;
pub mod segment;
pub mod shard;
pub mod spec;
pub mod statuses;
pub mod sync;
pub mod threshold;
pub mod wire;
