//! Test scenario: calls every host function once per iteration with values
//! the host test knows, so that the SDK and the host can be checked to agree
//! on the ABI. Not an example to copy.

use fusi_sdk::prelude::*;

static PROBE_COUNTER: Counter = Counter::new("probe_counter");
static PROBE_TREND: Trend = Trend::new("probe_trend");
static PROBE_RATE: Rate = Rate::new("probe_rate");

fn proto_is_http1() -> bool {
    env("PROTO").is_none_or(|p| p == "HTTP/1.1")
}

fn setup() {
    check("setup runs as VU 0", vu_id() == 0);
}

fn teardown() {
    check("teardown runs as VU 0", vu_id() == 0);
}

fn init() {
    tag("probe", "yes");
}

fn iteration() {
    let base = env("TARGET").unwrap_or_default();
    check("env TARGET is set", !base.is_empty());
    check("missing env is None", env("FUSI_NO_SUCH_VAR").is_none());
    check(
        "a data set the run does not ship is None",
        data::len("nope").is_none()
            && data::next("nope").is_none()
            && data::row("nope", 0).is_none(),
    );
    check(
        "std::env sees --env",
        std::env::var("TARGET").ok().as_deref() == Some(base.as_str()),
    );
    check("vu id starts at 1", vu_id() >= 1);
    check("iteration number is per VU", iteration_number() < 1000);
    group("outer", || {
        group("inner", || {
            let res = Request::post(&format!("{base}/echo"))
                .header("x-probe", "1")
                .body(vec![b'a'; 5000])
                .tag("name", "probe echo")
                .send();
            check("echo status 200", res.status() == 200);
            let proto = env("PROTO").unwrap_or_else(|| "HTTP/1.1".to_owned());
            check("echo protocol", res.protocol() == proto);
            check("reconnected after close", res.status() == 200);
            let v: serde_json::Value = res.json().unwrap_or_default();
            check("echo saw the body", v["body_len"] == 5000);
            check("echo saw the method", v["method"] == "POST");
            check("header lookup", res.header("Content-Type").is_some());
            check(
                "timings add up",
                res.timings().total_us >= res.timings().duration_us,
            );
        });
    });
    // Larger than the SDK's first response buffer: the first one comes
    // through the result buffer, the second fits the grown buffer.
    for _ in 0..2 {
        let big = http::get(&format!("{base}/bytes/100000"));
        check(
            "a large response arrives whole",
            big.status() == 200 && big.body().len() == 100_000,
        );
    }
    if proto_is_http1() {
        // The server closes this connection after answering; the next
        // iteration's first request must reconnect.
        let closing = Request::get(&format!("{base}/hello"))
            .header("connection", "close")
            .send();
        check("connection: close is answered", closing.status() == 200);
    }
    let bad = http::get("http://127.0.0.1:1/refused");
    check(
        "refused is an error",
        bad.status() == 0 && bad.error().is_some(),
    );
    PROBE_COUNTER.add(2.5);
    PROBE_TREND.add(42.0);
    PROBE_RATE.add(true);
    PROBE_RATE.add(false);
    log(Level::Debug, "probe iteration done");
    sleep(Duration::from_millis(1));
    check("always fails", false);
}

fusi_sdk::scenario!(
    setup = setup,
    init = init,
    iteration = iteration,
    teardown = teardown
);
