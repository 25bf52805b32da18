//! # fusi-node
//!
//! The library behind the `fusi-node` binary: a load generator that runs
//! WebAssembly scenarios against HTTP targets and reports exact latency.
//!
//! - [`core`]: sans-IO logic: run specs, execution segments, schedules,
//!   metric series, shards and the report merge.
//! - [`engine`]: wasmtime host, VUs, executors, the HTTP client and the
//!   recorder that seals measurements into shards.
//! - [`local`]: a run on this machine, which is a mesh of one: the same spec,
//!   share, shards and report that a mesh run uses.
//! - [`worker`]: one node's share of a run, from the module to its last
//!   shard; the same on a mesh node and in a local run.
//! - [`net`]: the libp2p edge of a node, driving the mesh core.
//! - [`sim`]: the real cores of many nodes under virtual time, for what no
//!   machine here can start (`fusi-node simulate`).
//! - [`api`]: the local HTTP API the CLI talks to.
//! - [`store`]: what a node keeps in its data directory.
//! - [`telemetry`]: the node's metrics for Prometheus and OpenTelemetry.
//! - [`cli`]: the command line; `main.rs` only calls it.
//! - [`fuzz`]: a fuzz target for every decoder of bytes from outside.

pub mod api;
pub mod cli;
pub mod compare;
pub use fusi_core as core;
pub mod engine;
pub mod fuzz;
pub mod html;
pub mod junit;
pub mod limits;
pub mod local;
pub mod net;
pub mod sim;
pub mod store;
pub mod summary;
pub mod telemetry;
pub mod worker;
