//! Two scenarios side by side in one module, for a run file's
//! `[scenarios.NAME]` tables (k6's `options.scenarios`): an API flow that
//! logs in as the test users of a CSV file, and a WebSocket chat.
//!
//! ```text
//! fusi-node run --config scenarios/shop-mix/run.toml
//! ```
//!
//! `run.toml` runs `api` on a ramping arrival rate (each iteration one user
//! of `users.csv`, drawn in `unique` mode: no user logs in twice in the
//! whole mesh) and `chat` on constant VUs from one second in. Every sample
//! carries the `scenario` tag, so thresholds select one scenario
//! (`http_req_failed{scenario:api}`) and the report breaks down by
//! scenario.
//!
//! `setup` logs in once, as `setup-admin`, and hands the session it got to
//! every VU of both scenarios.

use fusi_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// What `setup` hands to every VU.
#[derive(Serialize, Deserialize)]
struct Setup {
    session: String,
}

fn target() -> String {
    env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
}

fn setup() -> Json<Setup> {
    let base = target();
    Request::post(&format!("{base}/login"))
        .form(&[("user", "setup-admin"), ("password", "admin")])
        .send();
    let session = http::cookie(&base, "session").unwrap_or_default();
    Json(Setup { session })
}

/// `api`: one user per iteration, logged in through the form's redirect,
/// its session cookie checked on the account page, then logged out.
fn api() {
    let base = target();
    check(
        "api: setup data reached the VU",
        setup_json::<Setup>().is_some_and(|s| s.session == "user-setup-admin"),
    );
    let Some(row) = data::next("users") else {
        return;
    };
    let user = row.get("user").unwrap_or_default();
    let password = row.get("password").unwrap_or_default();
    let login = Request::post(&format!("{base}/login"))
        .form(&[("user", user), ("password", password)])
        .send();
    check(
        "api: the login redirects to the account page",
        login.status() == 200 && login.url() == format!("{base}/account"),
    );
    let account = Request::get(&format!("{base}/account")).send();
    check(
        "api: the session cookie names the user",
        account
            .json::<serde_json::Value>()
            .ok()
            .is_some_and(|a| a["user"] == user),
    );
    http::clear_cookies();
}

/// `chat`: joins the room `ROOM`, says two lines and reads until both came
/// back.
fn chat() {
    let room = env("ROOM").unwrap_or_else(|| "lobby".to_owned());
    let ws = match target().strip_prefix("http") {
        Some(rest) => format!("ws{rest}"),
        None => target(),
    };
    let Ok(mut socket) = ws::connect(&format!("{ws}/ws/chat?room={room}")) else {
        check("chat: joined the room", false);
        return;
    };
    check("chat: joined the room", true);
    let me = format!("vu{}-{}:", vu_id(), iteration_number());
    for line in 0..2 {
        let _ = socket.send_text(&format!("{me} line {line}"));
    }
    let mut mine = 0;
    while mine < 2 {
        match socket.recv(Duration::from_secs(5)) {
            Ok(ws::Message::Text(text)) if text.starts_with(&me) => mine += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    check("chat: both lines came back", mine == 2);
    socket.close();
    sleep(Duration::from_millis(200));
}

fusi_sdk::scenario!(setup = setup, exec api = api, exec chat = chat);
