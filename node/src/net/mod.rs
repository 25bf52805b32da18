//! The network edge of a node: libp2p, translated to and from the sans-IO
//! [`crate::core::mesh::MeshCore`].
//!
//! Nothing here decides anything. [`runtime`] runs one event loop that takes
//! swarm events, API queries and timer ticks, hands what they mean to the
//! core, and carries out the core's actions (publish, ask, dial). Messages are
//! decoded by [`crate::core::wire`] only.
//!
//! - [`behaviour`]: the libp2p stack and its settings;
//! - [`codec`]: request-response framing with a size bound;
//! - [`meshkey`]: the pre-shared key of a private mesh;
//! - [`health`]: CPU and sockets, for heartbeats;
//! - [`sign`]: signatures of shards and leaders' run messages, made and
//!   checked;
//! - [`runtime`]: the event loop, with the optional latency emulation.

pub mod behaviour;
pub mod codec;
pub mod health;
pub mod meshkey;
pub mod runtime;
pub mod sign;
pub mod traffic;

pub use runtime::{NodeConfig, run};
