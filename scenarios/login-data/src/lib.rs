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
//!
//! `setup` logs in once, as `setup-admin`, and returns the session it got:
//! on a mesh it runs once for the whole run, on the node the run was
//! submitted to, and every VU on every node reads what it returned with
//! `setup_json`.

use fusi_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// What `setup` hands to every VU.
#[derive(Serialize, Deserialize)]
struct Setup {
    session: String,
}

fn base() -> String {
    env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
}

fn setup() -> Json<Setup> {
    let base = base();
    Request::post(&format!("{base}/login"))
        .form(&[("user", "setup-admin"), ("password", "admin")])
        .send();
    let session = http::cookie(&base, "session").unwrap_or_default();
    Json(Setup { session })
}

fn iteration() {
    let base = base();
    check(
        "setup data reached the VU",
        setup_json::<Setup>().is_some_and(|s| s.session == "user-setup-admin"),
    );
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

fusi_sdk::scenario!(setup = setup, iteration = iteration);
