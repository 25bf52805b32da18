//! A multi-step API flow: create an item with a JSON POST, read the id the
//! server gave it, GET it back, and check that it round-tripped.
//!
//! ```text
//! fusi-node run api_flow.wasm --vus 20 --duration 1m --env TARGET=http://127.0.0.1:8080
//! ```
//!
//! Each step is a group, so the summary shows `::create` and `::read`
//! separately, and the GET is tagged `name=GET /items/{id}` so that every id
//! lands in one metric series instead of one per URL.
//!
//! The scenario declares its own thresholds: a run fails unless at least 90%
//! of its checks pass, on top of any `--threshold` given on the command line.

use fusi_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Created {
    id: u64,
    item: serde_json::Value,
}

fusi_sdk::metrics! {
    counter ITEMS_CREATED = "items_created";
}

fn iteration() {
    let base = env("TARGET").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let payload = json!({ "vu": vu_id(), "iteration": iteration_number(), "name": "fusi" });

    let created = group("create", || {
        let res = Request::post(&format!("{base}/items"))
            .json(&payload)
            .send();
        check("created: status is 201", res.status() == 201);
        res.json::<Created>().ok()
    });
    let Some(created) = created else {
        check("created: body has an id", false);
        return;
    };
    ITEMS_CREATED.add(1.0);
    check("created: echoes the item", created.item == payload);

    group("read", || {
        let res = Request::get(&format!("{base}/items/{}", created.id))
            .tag("name", "GET /items/{id}")
            .send();
        check("read: status is 200", res.status() == 200);
        let same = res
            .json::<Created>()
            .map(|got| got.id == created.id && got.item == payload)
            .unwrap_or(false);
        check("read: same item back", same);
    });
    sleep(Duration::from_millis(10));
}

fusi_sdk::scenario!(iteration = iteration);
fusi_sdk::thresholds!("checks: rate>0.9");
