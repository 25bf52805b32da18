//! Test data: the files the run ships with the scenario
//! (`fusi-node run --data users=users.csv`).
//!
//! Each node keeps one copy of a set, read-only, for all its VUs. A row is
//! JSON: a CSV row is an object of strings keyed by the header, a JSON
//! array's element or an NDJSON line is whatever it holds.
//!
//! ```ignore
//! use fusi_sdk::prelude::*;
//!
//! fn iteration() {
//!     // With --data-mode unique, no other draw in the whole mesh gets this row.
//!     let Some(user) = data::next("users") else { return };
//!     let name = user.get("name").unwrap_or_default();
//!     let res = http::post("http://127.0.0.1:8080/login")
//!         .form(&[("user", name), ("password", user.get("password").unwrap_or_default())])
//!         .send();
//!     check("logged in", res.status() == 200);
//! }
//! ```
//!
//! - [`next`] draws the next row for this node: every row in turn
//!   (`--data-mode shared`, the default), or only rows no other node draws
//!   (`--data-mode unique`: the rows are split among the nodes as the load
//!   is). When a node's rows of a `unique` set run out it returns `None`,
//!   and with `--data-exhausted stop` (the default) no iteration starts on
//!   that node after this one; `--data-exhausted wrap` starts over instead.
//! - [`row`] reads a row by index; [`for_vu`] and [`for_iteration`] pick
//!   one by this VU's id or iteration number, as k6 scripts do with
//!   `data[__VU % data.length]`.

use super::sys;

/// One row of a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    index: u64,
    value: serde_json::Value,
}

impl Row {
    /// Its index in the set, from 0.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// A field of an object row (a CSV column), as text; `None` when the
    /// row has no such field or it is not a string.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.value.get(field)?.as_str()
    }

    /// The whole row.
    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// The row as a value of your own type.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.value)
    }
}

/// How many rows the set `name` has; `None` when the run ships no such
/// set (give it with `--data NAME=FILE`).
pub fn len(name: &str) -> Option<u64> {
    // SAFETY: the name is a live UTF-8 slice; the host only reads it.
    let n = unsafe { sys::data_len(name.as_ptr(), name.len()) };
    u64::try_from(n).ok()
}

/// Row `index` of the set `name`; `None` when there is no such set or row.
pub fn row(name: &str, index: u64) -> Option<Row> {
    let i = i64::try_from(index).ok()?;
    // SAFETY: the name is a live UTF-8 slice; the host only reads it.
    let len = unsafe { sys::data_row(name.as_ptr(), name.len(), i) };
    let len = usize::try_from(len).ok()?;
    let value = serde_json::from_slice(&sys::take_result(len)).ok()?;
    Some(Row { index, value })
}

/// The next row of the set `name` for this node (see the module docs);
/// `None` when the run ships no such set or this node's rows ran out.
pub fn next(name: &str) -> Option<Row> {
    // SAFETY: the name is a live UTF-8 slice; the host only reads it.
    let index = unsafe { sys::data_next(name.as_ptr(), name.len()) };
    row(name, u64::try_from(index).ok()?)
}

/// The row for this VU: row `(vu_id - 1) % len`.
pub fn for_vu(name: &str) -> Option<Row> {
    let n = len(name).filter(|&n| n > 0)?;
    row(name, super::vu_id().saturating_sub(1) % n)
}

/// The row for this VU's iteration: row `iteration_number % len`.
pub fn for_iteration(name: &str) -> Option<Row> {
    let n = len(name).filter(|&n| n > 0)?;
    row(name, super::iteration_number() % n)
}
