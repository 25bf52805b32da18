//! The guest side of the ABI: safe, idiomatic wrappers over the host imports.

#[cfg(feature = "allocator")]
mod alloc;
pub mod data;
pub mod http;
mod sys;
pub mod ws;

use std::time::Duration;

/// What most scenarios need, in one import.
pub mod prelude {
    pub use super::data::{self, Row};
    pub use super::http::{self, Request, Response};
    pub use super::metrics::{Counter, Rate, Trend};
    pub use super::ws;
    pub use super::{
        Level, check, env, group, iteration_number, log, setup_data, setup_json, sleep, tag, untag,
        vu_id,
    };
    pub use crate::Json;
    pub use std::time::Duration;
}

/// Records a check: a named assertion counted in the summary (passed and
/// failed) that does not stop the iteration. Returns `passed`, so it can be
/// used in conditions.
pub fn check(name: &str, passed: bool) -> bool {
    // SAFETY: the pointer and length describe a live &str.
    unsafe { sys::check(name.as_ptr(), name.len(), i32::from(passed)) };
    passed
}

/// Sleeps for `duration`. The VU yields to the host while it waits, so a
/// sleeping VU costs no CPU. Use this, not `std::thread::sleep`.
pub fn sleep(duration: Duration) {
    let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    // SAFETY: a plain integer argument.
    unsafe { sys::sleep_ms(ms) }
}

/// Runs `body` inside a named group. Metrics recorded inside carry a `group`
/// tag (`::outer::inner` for nested groups), and the time the group took is
/// recorded as `group_duration`.
pub fn group<R>(name: &str, body: impl FnOnce() -> R) -> R {
    struct Exit;
    impl Drop for Exit {
        fn drop(&mut self) {
            // SAFETY: no arguments.
            unsafe { sys::group_exit() }
        }
    }
    // SAFETY: the pointer and length describe a live &str.
    unsafe { sys::group_enter(name.as_ptr(), name.len()) };
    let _exit = Exit;
    body()
}

/// Adds a tag to every metric this VU records from now on.
pub fn tag(key: &str, value: &str) {
    // SAFETY: both pointer and length pairs describe live &strs.
    unsafe { sys::tag_set(key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

/// Removes a tag set with [`tag`].
pub fn untag(key: &str) {
    // SAFETY: the pointer and length describe a live &str.
    unsafe { sys::tag_remove(key.as_ptr(), key.len()) }
}

/// This VU's id: from 1, unique within the run (across all nodes).
pub fn vu_id() -> u64 {
    // SAFETY: no arguments.
    unsafe { sys::vu_id() as u64 }
}

/// This VU's iteration number, from 0.
pub fn iteration_number() -> u64 {
    // SAFETY: no arguments.
    unsafe { sys::iteration_number() as u64 }
}

/// A run parameter given with `--env KEY=VALUE`, if it was given. (They are
/// also in the WASI environment, so `std::env::var` sees them too.)
pub fn env(key: &str) -> Option<String> {
    // SAFETY: the pointer and length describe a live &str.
    let len = unsafe { sys::env_get(key.as_ptr(), key.len()) };
    let len = usize::try_from(len).ok()?;
    String::from_utf8(sys::take_result(len)).ok()
}

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something looks wrong.
    Warn = 1,
    /// Progress worth seeing.
    Info = 2,
    /// Detail for debugging a scenario.
    Debug = 3,
}

/// Writes a message to the node's log, tagged with the VU id.
pub fn log(level: Level, message: &str) {
    // SAFETY: the pointer and length describe a live &str.
    unsafe { sys::log(level as i32, message.as_ptr(), message.len()) }
}

/// Makes a panic the reason its call fails, as the host reports it: the
/// message goes to the host (ABI `log` at [`crate::abi::PANIC_LEVEL`]),
/// which says it with the first few failures, instead of to stderr from
/// every VU at every iteration. [`crate::scenario!`] calls this at the
/// start of each entry point; only the first call does anything.
/// What `setup` returned, as bytes: the same on every VU of every node.
/// `None` when the scenario has no `setup` or it returned `()`.
///
/// ```ignore
/// fn setup() -> Json<Session> {
///     let res = http::post("http://127.0.0.1:8080/login").form(&[("user", "admin")]).send();
///     Json(Session { token: res.header("x-token").unwrap_or_default().to_owned() })
/// }
///
/// fn iteration() {
///     let session: Session = setup_json().expect("setup ran");
///     // ...
/// }
/// ```
pub fn setup_data() -> Option<Vec<u8>> {
    // SAFETY: no arguments.
    let len = unsafe { sys::setup_data_get() };
    let len = usize::try_from(len).ok()?;
    Some(sys::take_result(len))
}

/// What `setup` returned, decoded from JSON (as [`crate::Json`] or a
/// `serde_json::Value` encode it); `None` without it or when it does not
/// decode as `T`.
pub fn setup_json<T: serde::de::DeserializeOwned>() -> Option<T> {
    serde_json::from_slice(&setup_data()?).ok()
}

/// Hands what `setup` returned to the host. [`crate::scenario!`] calls it.
#[doc(hidden)]
pub fn __setup_returned<T: crate::SetupOutput>(value: T) {
    if let Some(bytes) = value.into_setup_data() {
        // SAFETY: the bytes are live for the call; the host only reads them.
        unsafe { sys::setup_data_set(bytes.as_ptr(), bytes.len()) }
    }
}

#[doc(hidden)]
pub fn __install_panic_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("Box<dyn Any>");
            let message = match info.location() {
                Some(at) => format!("panicked at {at}: {payload}"),
                None => format!("panicked: {payload}"),
            };
            // SAFETY: the pointer and length describe a live String.
            unsafe { sys::log(crate::abi::PANIC_LEVEL, message.as_ptr(), message.len()) }
        }));
    });
}

/// Custom metrics: declare one as a value and add samples to it.
pub mod metrics {
    use super::sys;
    use crate::abi::MetricKind;

    fn add(kind: MetricKind, name: &str, value: f64) {
        // SAFETY: the pointer and length describe a live &str.
        unsafe { sys::metric_add(kind.code(), name.as_ptr(), name.len(), value) }
    }

    /// A sum, for example items bought. `Counter::new("items").add(3.0)`.
    #[derive(Debug, Clone, Copy)]
    pub struct Counter(pub &'static str);
    impl Counter {
        /// Names a counter.
        pub const fn new(name: &'static str) -> Self {
            Counter(name)
        }
        /// Adds `value` to the sum.
        pub fn add(&self, value: f64) {
            add(MetricKind::Counter, self.0, value)
        }
    }

    /// A distribution, for example a duration in milliseconds; the summary
    /// shows its percentiles (kept with three significant digits).
    #[derive(Debug, Clone, Copy)]
    pub struct Trend(pub &'static str);
    impl Trend {
        /// Names a trend.
        pub const fn new(name: &'static str) -> Self {
            Trend(name)
        }
        /// Adds a sample. Negative values are recorded as 0.
        pub fn add(&self, value: f64) {
            add(MetricKind::Trend, self.0, value)
        }
    }

    /// A fraction of true samples, for example "cache hit".
    #[derive(Debug, Clone, Copy)]
    pub struct Rate(pub &'static str);
    impl Rate {
        /// Names a rate.
        pub const fn new(name: &'static str) -> Self {
            Rate(name)
        }
        /// Adds a sample.
        pub fn add(&self, hit: bool) {
            add(MetricKind::Rate, self.0, if hit { 1.0 } else { 0.0 })
        }
    }
}
