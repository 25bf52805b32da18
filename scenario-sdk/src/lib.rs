//! # fusi-sdk: write fusi load-test scenarios in Rust
//!
//! A scenario is a small crate, built as a `cdylib` for `wasm32-wasip1`, that
//! fusi runs in every virtual user (VU). It defines what one iteration does;
//! the executor given on the command line decides how many VUs run it, how
//! often and for how long.
//!
//! ```ignore
//! use fusi_sdk::prelude::*;
//!
//! fn iteration() {
//!     let res = http::get("http://127.0.0.1:8080/hello");
//!     check("status is 200", res.status() == 200);
//!     sleep(Duration::from_millis(100));
//! }
//!
//! fusi_sdk::scenario!(iteration = iteration);
//! ```
//!
//! The entry points are plain functions named in [`scenario!`]: `iteration`
//! (required), and optionally `setup` (once per run), `init` (once per VU) and
//! `teardown` (once per run). A panic fails the current iteration; the VU
//! goes on.
//!
//! The [`abi`] module is the one definition of what crosses between a
//! scenario and the host; the host uses it too. [`body`] builds form bodies
//! and credentials, which needs no host. Everything else here compiles
//! only for `wasm32`, because it calls host functions that exist only inside
//! fusi.

pub mod abi;
pub mod body;
#[cfg(any(all(target_arch = "wasm32", feature = "allocator"), test))]
mod heap;

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
pub use guest::*;

/// What a `setup` function may return: nothing (`()`), or data that every
/// VU's `iteration` and `teardown` read back with `setup_data` or
/// `setup_json`, on every node (bytes, text, a `serde_json::Value`, or any
/// serializable value wrapped in [`Json`]). At most
/// [`abi::MAX_SETUP_DATA_BYTES`]: setup data travels with the run.
pub trait SetupOutput {
    /// The bytes to hand on, if any.
    fn into_setup_data(self) -> Option<Vec<u8>>;
}

impl SetupOutput for () {
    fn into_setup_data(self) -> Option<Vec<u8>> {
        None
    }
}

impl SetupOutput for Vec<u8> {
    fn into_setup_data(self) -> Option<Vec<u8>> {
        Some(self)
    }
}

impl SetupOutput for String {
    fn into_setup_data(self) -> Option<Vec<u8>> {
        Some(self.into_bytes())
    }
}

impl SetupOutput for serde_json::Value {
    fn into_setup_data(self) -> Option<Vec<u8>> {
        serde_json::to_vec(&self).ok()
    }
}

/// A value `setup` returns as JSON, for `setup_json` to read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> SetupOutput for Json<T> {
    fn into_setup_data(self) -> Option<Vec<u8>> {
        serde_json::to_vec(&self.0).ok()
    }
}

/// Empty off `wasm32`, where no scenario runs: a scenario crate built for
/// the host then fails at [`scenario!`], whose error says how to build it,
/// rather than at this import.
#[cfg(not(target_arch = "wasm32"))]
pub mod prelude {}

/// Declares a scenario's entry points and the ABI version export.
///
/// ```ignore
/// fusi_sdk::scenario!(iteration = my_iteration);
/// fusi_sdk::scenario!(init = per_vu_init, iteration = my_iteration, teardown = done);
/// // Functions for a run file's scenarios (`exec = "browse"`), as k6's `exec`:
/// fusi_sdk::scenario!(setup = login, exec browse = browse_shop, exec chat = chat_room);
/// ```
///
/// Each name is a `fn()` in scope, but `setup` may return data for the
/// VUs (see [`SetupOutput`]). `setup`, `init` and `teardown` are optional.
/// `iteration` is what a run of one scenario calls; `exec NAME = function`
/// exports `function` as `NAME`, for the scenarios of a run file that name
/// it in their `exec` key. A module needs `iteration` or at least one
/// `exec`. Use the macro once per crate.
///
/// A panic in an entry point fails that call; its message (`panicked at
/// src/lib.rs:12:5: ...`) goes to the host, which says it with the failure.
///
/// Scenarios build for `wasm32-wasip1` only: on any other target the macro
/// stops the build with an error that says how to build one.
#[macro_export]
macro_rules! scenario {
    ($($entry:ident $($exec:ident)? = $func:path),+ $(,)?) => {
        #[cfg(not(target_arch = "wasm32"))]
        ::core::compile_error!(
            "fusi scenarios build for WebAssembly: run `fusi-node build .` in the scenario crate, \
             or `cargo build --release --target wasm32-wasip1` (once: `rustup target add wasm32-wasip1`)"
        );
        #[unsafe(export_name = "fusi_abi_version")]
        pub extern "C" fn __fusi_export_abi_version() -> i32 {
            $crate::abi::ABI_VERSION as i32
        }
        $( $crate::scenario!(@entry $entry $($exec)? $func); )+
    };
    (@entry exec $name:ident $func:path) => {
        const _: () = {
            #[unsafe(export_name = ::core::stringify!($name))]
            extern "C" fn __fusi_export_exec() {
                $crate::__install_panic_hook();
                $func()
            }
        };
    };
    (@entry iteration $func:path) => {
        #[unsafe(export_name = "iteration")]
        pub extern "C" fn __fusi_export_iteration() {
            $crate::__install_panic_hook();
            $func()
        }
    };
    (@entry setup $func:path) => {
        #[unsafe(export_name = "setup")]
        pub extern "C" fn __fusi_export_setup() {
            $crate::__install_panic_hook();
            $crate::__setup_returned($func())
        }
    };
    (@entry init $func:path) => {
        #[unsafe(export_name = "init")]
        pub extern "C" fn __fusi_export_init() {
            $crate::__install_panic_hook();
            $func()
        }
    };
    (@entry teardown $func:path) => {
        #[unsafe(export_name = "teardown")]
        pub extern "C" fn __fusi_export_teardown() {
            $crate::__install_panic_hook();
            $func()
        }
    };
}

/// Declares the scenario's custom metrics: each a `static` to record
/// with, and its name and kind in the module's [`abi::METRICS_SECTION`], so
/// that `fusi-node run` checks thresholds on custom metrics before the run
/// (a typo gets "did you mean" instead of a threshold that never sees a
/// sample).
///
/// ```ignore
/// fusi_sdk::metrics! {
///     counter ITEMS_CREATED = "items_created";
///     rate SLOW = "slow_responses";
///     trend QUEUE_MS = "queue_ms";
/// }
///
/// ITEMS_CREATED.add(1.0);
/// ```
///
/// Kinds are `counter`, `rate` and `trend`. Metrics made with
/// `Counter::new` and the like still work; once a module declares any
/// metric with this macro, thresholds may name only declared ones (and the
/// built-in metrics).
#[macro_export]
macro_rules! metrics {
    ($($kind:ident $name:ident = $metric:literal);+ $(;)?) => {
        $( $crate::metrics!(@static $kind $name $metric); )+
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const TEXT: &str = ::core::concat!($(::core::stringify!($kind), " ", $metric, "\n"),+);
            // `link_section` takes only a literal: this is abi::METRICS_SECTION.
            #[unsafe(link_section = "fusi.metrics")]
            #[used]
            static METRICS: [u8; TEXT.len()] = match TEXT.as_bytes().first_chunk() {
                Some(bytes) => *bytes,
                None => [0; TEXT.len()],
            };
        };
    };
    (@static counter $name:ident $metric:literal) => {
        static $name: $crate::metrics::Counter = $crate::metrics::Counter::new($metric);
    };
    (@static rate $name:ident $metric:literal) => {
        static $name: $crate::metrics::Rate = $crate::metrics::Rate::new($metric);
    };
    (@static trend $name:ident $metric:literal) => {
        static $name: $crate::metrics::Trend = $crate::metrics::Trend::new($metric);
    };
}

/// Declares the scenario's thresholds: pass/fail criteria in k6 syntax that
/// every run of this module checks, next to any given with `--threshold`.
///
/// ```ignore
/// fusi_sdk::thresholds!(
///     "http_req_duration: p(95)<200ms",
///     "http_req_failed: rate<0.01",
///     "checks{check:status is 200}: rate>0.99 abortOnFail",
/// );
/// ```
///
/// Each argument is one threshold (a string literal, without a line break).
/// The macro stores them, one per line, in the module's
/// [`abi::THRESHOLDS_SECTION`] custom section, where `fusi-node run` reads
/// them before it starts or submits the run; nothing runs in the guest. An
/// invalid threshold stops `run` with an error that names it. The macro may
/// be used more than once; the declarations add up.
#[macro_export]
macro_rules! thresholds {
    ($($threshold:literal),+ $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const TEXT: &str = ::core::concat!($($threshold, "\n"),+);
            // `link_section` takes only a literal: this is abi::THRESHOLDS_SECTION.
            #[unsafe(link_section = "fusi.thresholds")]
            #[used]
            static THRESHOLDS: [u8; TEXT.len()] = match TEXT.as_bytes().first_chunk() {
                Some(bytes) => *bytes,
                None => [0; TEXT.len()],
            };
        };
    };
}
