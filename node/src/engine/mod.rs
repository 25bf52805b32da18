//! The engine: everything that touches wasmtime, hyper and the clock.
//!
//! - [`module`]: validate and compile a scenario, check its ABI.
//! - [`host`]: the host functions a scenario imports.
//! - [`vu`]: one virtual user: a Store, an instance, its connections.
//! - [`http`]: the per-VU HTTP client.
//! - [`backstop`]: one timer for a VU's many deadlines.
//! - [`boxed`]: boxes whose values are made in them, not copied in.
//! - [`courier`]: a VU's requests, polled on its task rather than its fiber.
//! - [`fields`]: a response's header fields, kept as they came.
//! - [`cookies`]: the per-VU cookie jar the client keeps.
//! - [`cpu`]: how busy the node's CPUs were, each interval.
//! - [`data`]: the run's test data, parsed once per node, and its draws.
//! - [`redirects`]: which answers are redirects and what the next hop is.
//! - [`ws`]: the per-VU WebSocket client.
//! - [`output`]: a scenario's stdout and stderr, escaped, prefixed and rate-limited.
//! - [`executor`]: turn a share of a run into iterations over time.
//! - [`gate`]: fence a share whose node was frozen, so it sends no load
//!   that was handed on.
//! - [`recorder`]: collect samples and seal them into per-interval shards.
//! - [`stack`]: a sleeping VU gives back the deep pages of its fiber stack.
//! - [`timer`]: a timer finer than tokio's 1 ms, for arrivals.
//! - [`woken`]: a future its task polls only once it woke.

pub mod backstop;
pub(crate) mod boxed;
pub mod cookies;
pub mod courier;
pub mod cpu;
pub mod data;
pub mod executor;
pub mod fields;
pub mod first_errors;
pub mod gate;
pub(crate) mod h1;
pub mod host;
pub mod http;
pub mod module;
pub mod output;
pub mod recorder;
pub mod redirects;
pub(crate) mod stack;
pub mod timer;
pub mod vu;
pub(crate) mod woken;
pub mod ws;
