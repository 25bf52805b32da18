//! Logs in as the test users of a CSV file, each user once in the whole
//! mesh.
//!
//! ```text
//! fusi-node run login-data.wasm --data users=users.csv --data-mode unique \
//!     --rate 50/s --duration 10s --env TARGET=http://127.0.0.1:8080
//! ```
//!
//! `users.csv` has a header line `user,password` (scenarios/login-data has
//! one with 1,000 users). Each iteration draws the next user of this node
//! with `data::next`: with `--data-mode unique` no other iteration of the
//! run, on any node, gets the same row. It logs in with a form (a 303 to
//! the account page, which sets the session cookie), checks that the
//! account page knows the user, and logs out by clearing the cookie jar.
//! When this node's users run out, the draw returns `None` and the node
//! starts no more iterations (`--data-exhausted stop`).

use fusi_sdk::prelude::*;

fn iteration() {
    let base = env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let Some(row) = data::next("users") else {
        return;
    };
    let user = row.get("user").unwrap_or_default();
    let password = row.get("password").unwrap_or_default();
    let res = Request::post(&format!("{base}/login"))
        .form(&[("user", user), ("password", password)])
        .send();
    check(
        "login: lands on the account page",
        res.status() == 200 && res.url() == format!("{base}/account"),
    );
    check(
        "login: the account page knows the user",
        res.json::<serde_json::Value>()
            .ok()
            .is_some_and(|a| a["user"] == user),
    );
    http::clear_cookies();
}

fusi_sdk::scenario!(iteration = iteration);
