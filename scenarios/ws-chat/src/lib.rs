//! A chat over WebSocket: each iteration joins a room, says a few lines,
//! reads until its own lines came back (with everyone else's on the way),
//! and leaves.
//!
//! ```text
//! fusi-node run ws_chat.wasm --vus 10 --duration 1m --env TARGET=http://127.0.0.1:8080
//! ```
//!
//! Against `fusi-testnet target`, whose `/ws/chat?room=NAME` sends each
//! message to everyone in the room, the sender included. `ROOM` names the
//! room (`lobby` by default). With `--env BIG=N` an iteration instead asks
//! `/ws/bytes/N` for one message of `N` bytes, and checks that one larger
//! than fusi's limit (1 MiB) fails the socket with an error that says so.

use fusi_sdk::abi::ErrorKind;
use fusi_sdk::prelude::*;

/// Lines each iteration says.
const LINES: usize = 3;
/// The most messages an iteration reads while it waits for its own.
const MAX_READ: usize = 10_000;

/// `TARGET` with `ws://` for `http://` and `wss://` for `https://`.
fn ws_base() -> String {
    let target = env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    match target.strip_prefix("http") {
        Some(rest) => format!("ws{rest}"),
        None => target,
    }
}

fn iteration() {
    if let Some(big) = env("BIG") {
        return oversize(&big);
    }
    let room = env("ROOM").unwrap_or_else(|| "lobby".to_owned());
    let url = format!("{}/ws/chat?room={room}", ws_base());
    let mut socket = match ws::Connect::new(&url).tag("name", "chat").open() {
        Ok(socket) => socket,
        Err(e) => {
            check("joined the room", false);
            log(Level::Warn, &e.to_string());
            return;
        }
    };
    check("joined the room", true);
    let me = format!("vu{}-{}:", vu_id(), iteration_number());
    for line in 0..LINES {
        if let Err(e) = socket.send_text(&format!("{me} line {line}")) {
            log(Level::Warn, &e.to_string());
        }
    }
    let mut mine = 0;
    for _ in 0..MAX_READ {
        match socket.recv(Duration::from_secs(5)) {
            Ok(ws::Message::Text(text)) if text.starts_with(&me) => {
                mine += 1;
                if mine == LINES {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                log(Level::Warn, &e.to_string());
                break;
            }
        }
    }
    check("every line came back", mine == LINES);
    socket.close();
}

/// Asks for one message of `bytes` bytes and checks how it ends.
fn oversize(bytes: &str) {
    let url = format!("{}/ws/bytes/{bytes}", ws_base());
    let Ok(mut socket) = ws::connect(&url) else {
        check("connected for the big message", false);
        return;
    };
    let limit = 1 << 20;
    let n: usize = bytes.parse().unwrap_or(0);
    match socket.recv(Duration::from_secs(5)) {
        Ok(ws::Message::Binary(data)) => check(
            "a message within the limit arrives whole",
            data.len() == n && n <= limit,
        ),
        Err(ws::WsError::Failed { kind, message }) => check(
            "a message over the limit fails the socket and says so",
            n > limit && kind == ErrorKind::Protocol && message.contains("1048576 allowed"),
        ),
        other => {
            log(Level::Warn, &format!("unexpected: {other:?}"));
            check("the big message ends as expected", false)
        }
    };
}

fusi_sdk::scenario!(iteration = iteration);
