use super::*;
use crate::metrics::{SeriesKey, new_histogram, trend_units};
use crate::rng::Rng;

fn key(metric: &str, tags: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(
        metric,
        tags.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn parse(text: &str) -> Threshold {
    match Threshold::parse(text) {
        Ok(t) => t,
        Err(e) => panic!("{text:?} should parse: {e}"),
    }
}

fn error(text: &str) -> String {
    match Threshold::parse(text) {
        Ok(t) => panic!("{text:?} should not parse, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

fn tags(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parses_valid_forms() {
    use Aggregation::*;
    use LimitUnit::*;
    let cases: &[(&str, &str, Aggregation, Op, f64, LimitUnit)] = &[
        (
            "http_req_duration: p(95)<200",
            "http_req_duration",
            Percentile(95.0),
            Op::Lt,
            200.0,
            Plain,
        ),
        (
            "http_req_duration:p(95)<200ms",
            "http_req_duration",
            Percentile(95.0),
            Op::Lt,
            200.0,
            Millis,
        ),
        (
            "  http_req_duration :  p( 99.9 ) <= 1.5s  ",
            "http_req_duration",
            Percentile(99.9),
            Op::Le,
            1500.0,
            Millis,
        ),
        (
            "http_req_duration: avg<500us",
            "http_req_duration",
            Avg,
            Op::Lt,
            0.5,
            Millis,
        ),
        (
            "http_req_duration: max < 300 µs",
            "http_req_duration",
            Max,
            Op::Lt,
            0.3,
            Millis,
        ),
        (
            "http_req_waiting: med>=2m",
            "http_req_waiting",
            Med,
            Op::Ge,
            120_000.0,
            Millis,
        ),
        (
            "iteration_duration: min>0.2s",
            "iteration_duration",
            Min,
            Op::Gt,
            200.0,
            Millis,
        ),
        (
            "http_req_failed: rate<0.01",
            "http_req_failed",
            Rate,
            Op::Lt,
            0.01,
            Plain,
        ),
        (
            "http_req_failed: rate<1%",
            "http_req_failed",
            Rate,
            Op::Lt,
            0.01,
            Percent,
        ),
        (
            "checks: rate > 99.5 %",
            "checks",
            Rate,
            Op::Gt,
            0.995,
            Percent,
        ),
        ("checks: rate!=0", "checks", Rate, Op::Ne, 0.0, Plain),
        ("checks: rate===1", "checks", Rate, Op::Eq, 1.0, Plain),
        (
            "http_reqs: count>=100",
            "http_reqs",
            Count,
            Op::Ge,
            100.0,
            Plain,
        ),
        (
            "http_reqs: rate>1e2",
            "http_reqs",
            Rate,
            Op::Gt,
            100.0,
            Plain,
        ),
        ("vus: value==10", "vus", Value, Op::Eq, 10.0, Plain),
        ("vus_max: max<=50", "vus_max", Max, Op::Le, 50.0, Plain),
        (
            "items_created: count>0",
            "items_created",
            Count,
            Op::Gt,
            0.0,
            Plain,
        ),
        ("cache.hit: rate>.5", "cache.hit", Rate, Op::Gt, 0.5, Plain),
        (
            "temperature: value>-12.5",
            "temperature",
            Value,
            Op::Gt,
            -12.5,
            Plain,
        ),
        (
            "my_trend: p(100)<5",
            "my_trend",
            Percentile(100.0),
            Op::Lt,
            5.0,
            Plain,
        ),
        (
            "my_trend: p(0.1)<5",
            "my_trend",
            Percentile(0.1),
            Op::Lt,
            5.0,
            Plain,
        ),
    ];
    for (text, metric, agg, op, limit, unit) in cases {
        let t = parse(text);
        assert_eq!(t.source, text.trim(), "{text}");
        assert_eq!(&t.metric, metric, "{text}");
        assert!(t.tags.is_empty(), "{text}");
        assert_eq!(t.agg, *agg, "{text}");
        assert_eq!(t.op, *op, "{text}");
        assert!((t.limit - limit).abs() < 1e-9, "{text}: {}", t.limit);
        assert_eq!(t.unit, *unit, "{text}");
        assert!(!t.abort_on_fail, "{text}");
        assert_eq!(t.delay_abort_eval, Duration::ZERO, "{text}");
    }
}

#[test]
fn parses_tags() {
    let t = parse("http_req_duration{region:fra}: p(95)<200");
    assert_eq!(t.tags, tags(&[("region", "fra")]));
    let t = parse("http_req_duration { status : 200 , region:fra }: avg<1");
    assert_eq!(
        t.tags,
        tags(&[("region", "fra"), ("status", "200")]),
        "sorted"
    );
    let t = parse("http_req_duration{name:GET /items/{id}}: p(95)<200");
    assert_eq!(t.tags, tags(&[("name", "GET /items/{id}")]));
    let t = parse("http_req_duration{name:\"a b\",url:'x'}: p(95)<200");
    assert_eq!(t.tags, tags(&[("name", "a b"), ("url", "x")]));
    let t = parse("checks{check:created: status is 201}: rate>0.9");
    assert_eq!(t.tags, tags(&[("check", "created: status is 201")]));
    assert!(parse("items{}: count<1").tags.is_empty());
    let many: Vec<String> = (0..MAX_TAGS).map(|i| format!("t{i}:v")).collect();
    assert_eq!(
        parse(&format!("m{{{}}}: count<1", many.join(",")))
            .tags
            .len(),
        MAX_TAGS
    );
}

#[test]
fn parses_flags() {
    let t = parse("checks: rate>0.9 abortOnFail");
    assert!(t.abort_on_fail);
    assert_eq!(t.delay_abort_eval, Duration::ZERO);
    let t = parse("checks: rate>0.9 abortOnFail delayAbortEval=10s");
    assert_eq!(t.delay_abort_eval, Duration::from_secs(10));
    let t = parse("http_req_duration: p(95)<200 ms  delayAbortEval=1m30s abortOnFail");
    assert!(t.abort_on_fail);
    assert_eq!(t.limit, 200.0);
    assert_eq!(t.delay_abort_eval, Duration::from_secs(90));
    let t = parse("http_reqs: count>1 abortOnFail");
    assert_eq!((t.limit, t.unit), (1.0, LimitUnit::Plain));
}

#[test]
fn invalid_thresholds_name_the_problem() {
    let long_tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}:v")).collect();
    let too_many_tags = format!("m{{{}}}: count<1", long_tags.join(","));
    let too_long = format!(
        "http_req_duration: p(95)<200{}",
        " ".repeat(MAX_THRESHOLD_LEN)
    );
    let cases: &[(&str, &str)] = &[
        ("", "it is empty"),
        ("   ", "it is empty"),
        (
            "http_req_duration: p95<200",
            "unknown aggregation `p95`; write p(95)",
        ),
        ("http_req_duration: p99.9<200", "write p(99.9)"),
        ("http_req_duration: P(95)<200", "lower case"),
        ("http_req_duration: mean<200", "write avg"),
        ("http_req_duration: median<200", "write med"),
        (
            "http_req_duration: foo<200",
            "unknown aggregation `foo`; use avg",
        ),
        ("http_req_duration: <200", "no aggregation"),
        ("http_req_duration: p<200", "write p(95)"),
        ("http_req_duration: p(0)<200", "above 0 and at most 100"),
        ("http_req_duration: p(101)<200", "above 0 and at most 100"),
        (
            "http_req_duration: p(abc)<200",
            "not closed, or not a number",
        ),
        ("http_req_duration: p(95<200", "not closed"),
        (
            "http_req_duration p(95)<200",
            "expected `:` after `http_req_duration`",
        ),
        (
            "http req: count<1",
            "expected `:` after `http`, found `req:`",
        ),
        ("http_req_duration", "no condition"),
        (": p(95)<200", "no metric name"),
        ("9lives: count<1", "`9lives` is not a metric name"),
        (
            "http_req_duration: p(95)",
            "expected a comparison after `p(95)`, found the end",
        ),
        ("http_req_duration: p(95)<", "no limit after `p(95)<`"),
        ("http_req_duration: p(95)<abc", "no limit"),
        (
            "http_req_duration: p(95) 200",
            "expected a comparison after `p(95)`",
        ),
        ("http_req_duration: p(95)=200", "write =="),
        ("http_req_duration: p(95)=<200", "write <="),
        ("http_req_duration: p(95)=>200", "write >="),
        ("http_req_duration: p(95)<1.2.3", "`1.2.3` is not a number"),
        ("http_req_duration: p(95)<1e999", "is not a number"),
        ("http_req_duration: p(95)<200x", "unknown unit `x`"),
        ("http_req_duration: p(95)<200 ms ms", "unexpected `ms`"),
        ("http_req_failed: rate<5ms", "duration unit fits only trend"),
        ("http_reqs: count<5s", "duration unit fits only trend"),
        ("http_req_duration: p(95)<5%", "percentage fits only `rate`"),
        (
            "http_reqs: p(95)<200",
            "`http_reqs` is a counter; p(95) needs a trend (use count",
        ),
        (
            "http_req_duration: rate<1",
            "`http_req_duration` is a trend; rate needs",
        ),
        (
            "checks: count>1",
            "`checks` is a rate; count needs a counter",
        ),
        ("vus: avg<1", "`vus` is a gauge"),
        (
            "http_req_duration: p(95)<200, p(99)<500",
            "one condition per threshold; give `p(99)<500`",
        ),
        (
            "http_req_duration: p(95)<200 abortonfail",
            "write abortOnFail",
        ),
        (
            "checks: rate>0.9 abortOnFail delayAbortEval",
            "has no duration",
        ),
        (
            "checks: rate>0.9 abortOnFail delayAbortEval = 5s",
            "has no duration",
        ),
        (
            "checks: rate>0.9 abortOnFail delayAbortEval=soon",
            "delayAbortEval: invalid duration",
        ),
        (
            "checks: rate>0.9 abortOnFail delayAbortEval=30d",
            "delayAbortEval: invalid duration",
        ),
        ("checks: rate>0.9 delayAbortEval=10s", "add abortOnFail"),
        ("checks: rate>0.9 abortOnFail please", "unexpected `please`"),
        ("x{a:1: count<1", "not closed"),
        ("x{a}: count<1", "the tag `a` has no value"),
        ("x{:1}: count<1", "has no name"),
        ("x{a:}: count<1", "the tag `a` has an empty value"),
        ("x{a:1,,b:2}: count<1", "an empty tag"),
        ("x{a:1,}: count<1", "an empty tag"),
        ("x{a:1,a:2}: count<1", "the tag `a` is given twice"),
        ("x{a:1} count<1", "expected `:`"),
        (&too_many_tags, "more than 100 tags"),
        (&too_long, "bytes long; a threshold may be at most 1000"),
    ];
    for (text, want) in cases {
        let msg = error(text);
        assert!(msg.starts_with("threshold `"), "{text:?}: {msg}");
        assert!(
            msg.contains(want),
            "{text:?}: {msg:?} should contain {want:?}"
        );
    }
}

#[test]
fn a_near_miss_of_a_built_in_metric_is_refused_with_the_name_meant() {
    let e = error("http_req_duraton: p(95)<200ms");
    assert!(e.contains("did you mean `http_req_duration`?"), "{e}");
    let e = error("check: rate>0.9");
    assert!(e.contains("did you mean `checks`?"), "{e}");
    // Custom metrics far from every built-in name are left alone.
    assert_eq!(parse("items_created: count>1").metric, "items_created");
    assert_eq!(parse("slow_responses: rate<0.1").metric, "slow_responses");
}

#[test]
fn every_built_in_metric_has_a_kind_and_thresholds_on_websocket_metrics_parse() {
    for name in names::ALL {
        assert!(builtin_kind(name).is_some(), "{name} has no kind");
    }
    assert_eq!(builtin_kind("ws_msgs_sent"), Some(MetricKind::Counter));
    assert_eq!(builtin_kind("ws_connecting"), Some(MetricKind::Trend));
    for text in [
        "ws_connecting: p(95)<500ms",
        "ws_session_duration{name:chat}: max<10s",
        "ws_msgs_received: count>0",
        "ws_sessions: rate>1",
    ] {
        assert_eq!(
            parse(text).metric,
            text.split([':', '{']).next().unwrap_or("")
        );
    }
}

#[test]
fn error_messages_stay_short_and_printable() {
    let text = format!("{}\u{7}: count<1", "a".repeat(500));
    let msg = error(&text);
    assert!(msg.len() < 500, "{msg}");
    assert!(msg.contains('…'));
    let msg = error("x\u{1b}[31m: count<1");
    assert!(!msg.contains('\u{1b}'), "{msg:?}");
}

#[test]
fn parse_all_caps_the_list_and_reports_the_first_error() {
    let good: Vec<String> = (0..MAX_THRESHOLDS)
        .map(|i| format!("http_reqs: count>{i}"))
        .collect();
    assert_eq!(parse_all(&good).map(|v| v.len()), Ok(MAX_THRESHOLDS));
    let mut too_many = good.clone();
    too_many.push("http_reqs: count>0".into());
    match parse_all(&too_many) {
        Err(e) => {
            assert_eq!(e, ThresholdError::TooMany { count: 101 });
            assert!(e.to_string().contains("at most 100"), "{e}");
        }
        Ok(_) => panic!("101 thresholds should be refused"),
    }
    let mixed = vec![
        "checks: rate>0.9".to_owned(),
        "bad".to_owned(),
        "x: y".to_owned(),
    ];
    match parse_all(&mixed) {
        Err(ThresholdError::Invalid { threshold, .. }) => assert_eq!(threshold, "bad"),
        other => panic!("{other:?}"),
    }
    assert_eq!(parse_all(&[]), Ok(vec![]));
    assert_eq!(
        "checks: rate>0.9".parse::<Threshold>(),
        Threshold::parse("checks: rate>0.9")
    );
}

#[test]
fn canonical_text_parses_back() {
    for text in [
        "http_req_duration: p(95)<200ms",
        " http_req_duration{ status:200,region: fra }: p( 99.9 ) <= 1.5 s abortOnFail delayAbortEval=1m30s",
        "http_reqs: rate>=100",
        "vus: value!=0",
        "http_req_duration{name:GET /items/{id}}: avg<0.5us",
        "checks: rate>0.9 abortOnFail",
    ] {
        let t = parse(text);
        let again = parse(&t.to_string());
        assert_eq!(
            Threshold {
                source: t.source.clone(),
                ..again
            },
            t,
            "{text} -> {t}"
        );
    }
    let t = parse(
        " http_req_duration{status:200,region:fra}: p(95) < 0.2s abortOnFail delayAbortEval=10s",
    );
    assert_eq!(t.describe(), "p(95)<200ms");
    assert_eq!(t.selector(), "http_req_duration{region:fra,status:200}");
    assert_eq!(
        t.to_string(),
        "http_req_duration{region:fra,status:200}: p(95)<200ms abortOnFail delayAbortEval=10s"
    );
    let percent = parse("http_req_failed: rate<1%");
    assert_eq!(percent.describe(), "rate<0.01");
    assert_eq!(parse(&percent.to_string()).limit, percent.limit);
    assert_eq!(parse("http_reqs: count>=100").describe(), "count>=100");
}

/// A trend of `samples` (ms) in one series per region.
fn latencies(samples: &[(&str, f64)]) -> SeriesSet {
    let mut s = SeriesSet::new();
    for (region, ms) in samples {
        let k = key(
            names::HTTP_REQ_DURATION,
            &[("region", region), ("status", "200")],
        );
        assert!(s.add(&k, MetricKind::Trend, *ms).is_ok());
    }
    s
}

#[test]
fn trend_aggregations_match_the_histogram_exactly() {
    let samples: Vec<(&str, f64)> = (1..=1000).map(|i| ("fra", i as f64)).collect();
    let set = latencies(&samples);
    let mut h = new_histogram();
    for (_, ms) in &samples {
        let _ = h.record(trend_units(*ms));
    }
    let observed = |text: &str| parse(text).evaluate(&set, 10.0).observed;
    let q = |p: f64| from_trend_units(h.value_at_quantile(p));
    assert_eq!(observed("http_req_duration: p(95)<1"), Some(q(0.95)));
    assert_eq!(observed("http_req_duration: p(99.9)<1"), Some(q(0.999)));
    assert_eq!(observed("http_req_duration: med<1"), Some(q(0.5)));
    assert_eq!(observed("http_req_duration: p(100)<1"), Some(q(1.0)));
    assert_eq!(
        observed("http_req_duration: max<1"),
        Some(from_trend_units(h.max()))
    );
    assert_eq!(
        observed("http_req_duration: min<1"),
        Some(from_trend_units(h.min()))
    );
    assert_eq!(
        observed("http_req_duration: avg<1"),
        Some(h.mean() / 1000.0)
    );
    // The same numbers as the report prints.
    let report = crate::report::percentiles(set.fold(names::HTTP_REQ_DURATION, |_| true).as_ref());
    assert_eq!(observed("http_req_duration: p(95)<1"), Some(report.p95));
    assert_eq!(observed("http_req_duration: p(99.9)<1"), Some(report.p999));
    assert_eq!(observed("http_req_duration: p(50)<1"), Some(report.p50));
    assert_eq!(observed("http_req_duration: avg<1"), Some(report.mean));
    assert_eq!(observed("http_req_duration: max<1"), Some(report.max));
    let p95 = q(0.95);
    assert!((p95 - 950.0).abs() <= 1.0, "{p95}");

    let pass = |text: &str| parse(text).evaluate(&set, 10.0).pass;
    assert!(pass("http_req_duration: p(95)<960"));
    assert!(pass("http_req_duration: p(95)<0.96s"));
    assert!(!pass("http_req_duration: p(95)<940ms"));
    assert!(!pass("http_req_duration: p(95)>960"));
    assert!(pass(&format!("http_req_duration: p(95)=={p95}")));
    assert!(pass(&format!("http_req_duration: p(95)<={p95}")));
    assert!(!pass(&format!("http_req_duration: p(95)!={p95}")));
    assert!(pass("http_req_duration: avg>=500 abortOnFail"));
}

#[test]
fn tags_scope_the_series() {
    let mut samples: Vec<(&str, f64)> = (0..100).map(|i| ("fra", 10.0 + i as f64 / 10.0)).collect();
    samples.extend((0..100).map(|i| ("nrt", 300.0 + i as f64)));
    let mut set = latencies(&samples);
    let k500 = key(
        names::HTTP_REQ_DURATION,
        &[("region", "fra"), ("status", "500")],
    );
    assert!(set.add(&k500, MetricKind::Trend, 5000.0).is_ok());

    let verdict = |text: &str| parse(text).evaluate(&set, 10.0);
    let fra = verdict("http_req_duration{region:fra,status:200}: max<20");
    assert!(fra.pass, "{fra:?}");
    assert!(fra.observed.is_some_and(|v| v < 20.0));
    let nrt = verdict("http_req_duration{region:nrt}: p(50)<200");
    assert!(!nrt.pass);
    assert!(nrt.observed.is_some_and(|v| v >= 300.0), "{nrt:?}");
    let all_fra = verdict("http_req_duration{region:fra}: max<20");
    assert!(
        !all_fra.pass,
        "the status 500 series counts too: {all_fra:?}"
    );
    let errors = verdict("http_req_duration{status:500}: min>=4990");
    assert!(errors.pass, "{errors:?}");
    let all = verdict("http_req_duration: max>=4990");
    assert!(all.pass);
    let none = verdict("http_req_duration{region:ewr}: p(95)<200");
    assert_eq!(none.observed, None);
    assert!(!none.pass);
    assert_eq!(
        none.problem.as_deref(),
        Some("no samples of `http_req_duration{region:ewr}`")
    );
}

#[test]
fn rates_and_counters() {
    let mut set = SeriesSet::new();
    for i in 0..100 {
        let status = if i < 3 { "500" } else { "200" };
        let failed = key(names::HTTP_REQ_FAILED, &[("status", status)]);
        assert!(
            set.add(&failed, MetricKind::Rate, if i < 3 { 1.0 } else { 0.0 })
                .is_ok()
        );
        let reqs = key(names::HTTP_REQS, &[("status", status)]);
        assert!(set.add(&reqs, MetricKind::Counter, 1.0).is_ok());
    }
    let verdict = |text: &str, secs: f64| parse(text).evaluate(&set, secs);

    let failed = verdict("http_req_failed: rate<0.05", 10.0);
    assert!(failed.pass);
    assert!(failed.observed.is_some_and(|r| (r - 0.03).abs() < 1e-12));
    assert!(!verdict("http_req_failed: rate<1%", 10.0).pass);
    assert!(verdict("http_req_failed{status:500}: rate==1", 10.0).pass);
    assert!(verdict("http_req_failed{status:200}: rate==0", 10.0).pass);

    assert_eq!(verdict("http_reqs: count==100", 10.0).observed, Some(100.0));
    assert!(verdict("http_reqs{status:500}: count==3", 10.0).pass);
    let per_second = verdict("http_reqs: rate>=10", 10.0);
    assert_eq!(per_second.observed, Some(10.0));
    assert!(per_second.pass);
    assert!(!verdict("http_reqs: rate>=10", 20.0).pass);
    for secs in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let v = verdict("http_reqs: rate>1", secs);
        assert!(!v.pass && v.observed.is_none(), "{secs}: {v:?}");
        assert!(v.problem.is_some_and(|p| p.contains("no duration")));
    }

    let mut custom = SeriesSet::new();
    assert!(
        custom
            .add(&key("items", &[]), MetricKind::Counter, 5.0)
            .is_ok()
    );
    let v = parse("items: rate<1%").evaluate(&custom, 1.0);
    assert!(!v.pass);
    assert!(
        v.problem
            .is_some_and(|p| p.contains("per second, not a percentage"))
    );
}

#[test]
fn no_samples_fail_except_count() {
    let empty = SeriesSet::new();
    for text in [
        "http_req_duration: p(95)<200",
        "http_req_failed: rate<0.01",
        "checks: rate>0.9",
        "http_reqs: rate>1",
        "vus: value>0",
    ] {
        let v = parse(text).evaluate(&empty, 10.0);
        assert!(!v.pass && v.observed.is_none(), "{text}: {v:?}");
        assert!(
            v.problem.is_some_and(|p| p.starts_with("no samples of")),
            "{text}"
        );
    }
    let zero = parse("http_reqs: count<1").evaluate(&empty, 10.0);
    assert_eq!(
        zero,
        Verdict {
            observed: Some(0.0),
            pass: true,
            problem: None
        }
    );
    assert!(!parse("iterations: count>0").evaluate(&empty, 10.0).pass);

    // A custom metric the scenario never recorded says so, and names the
    // custom metric it most likely meant.
    let never = parse("custom_trend: avg<1").evaluate(&empty, 10.0);
    assert!(!never.pass && never.observed.is_none());
    assert_eq!(
        never.problem.as_deref(),
        Some("the scenario never recorded a metric `custom_trend` (it recorded no custom metric)")
    );
    let mut recorded = SeriesSet::new();
    assert!(
        recorded
            .add(&key("custom_trnd", &[]), MetricKind::Trend, 1.0)
            .is_ok()
    );
    assert_eq!(
        parse("custom_trend: avg<1")
            .evaluate(&recorded, 10.0)
            .problem
            .as_deref(),
        Some("the scenario never recorded a metric `custom_trend`: did you mean `custom_trnd`?")
    );

    // Series that exist but hold nothing.
    let set: SeriesSet = [
        (
            key("checks", &[]),
            crate::metrics::Value::empty(MetricKind::Rate),
        ),
        (
            key("lat", &[]),
            crate::metrics::Value::empty(MetricKind::Trend),
        ),
        (
            key("level", &[]),
            crate::metrics::Value::empty(MetricKind::Gauge),
        ),
    ]
    .into_iter()
    .collect();
    for text in ["checks: rate>0", "lat: p(95)<1", "level: max<1"] {
        let v = parse(text).evaluate(&set, 1.0);
        assert!(!v.pass, "{text}");
        assert!(
            v.problem.is_some_and(|p| p.starts_with("no samples of")),
            "{text}"
        );
    }
}

#[test]
fn custom_kind_mismatches_fail_with_a_problem() {
    let mut set = SeriesSet::new();
    assert!(set.add(&key("foo", &[]), MetricKind::Counter, 1.0).is_ok());
    assert!(set.add(&key("lat", &[]), MetricKind::Trend, 1.0).is_ok());
    assert!(set.add(&key("level", &[]), MetricKind::Gauge, 1.0).is_ok());
    for (text, want) in [
        (
            "foo: p(95)<1",
            "`foo` is a counter; p(95) needs a trend (use count, or rate for per second)",
        ),
        (
            "lat: count<1",
            "`lat` is a trend; count needs a counter (use avg, min, max, med or p(N))",
        ),
        (
            "lat: value<1",
            "`lat` is a trend; value needs a gauge (use avg, min, max, med or p(N))",
        ),
        (
            "level: rate<1",
            "`level` is a gauge; rate needs a rate or a counter (use value, min or max)",
        ),
    ] {
        let v = parse(text).evaluate(&set, 1.0);
        assert!(!v.pass && v.observed.is_none(), "{text}");
        assert_eq!(v.problem.as_deref(), Some(want), "{text}");
    }
}

#[test]
fn gauges() {
    let mut set = SeriesSet::new();
    for v in [3.0, 9.0, 5.0] {
        assert!(set.add(&key(names::VUS, &[]), MetricKind::Gauge, v).is_ok());
    }
    let observed = |text: &str| parse(text).evaluate(&set, 1.0).observed;
    assert_eq!(observed("vus: value>0"), Some(5.0));
    assert_eq!(observed("vus: min>0"), Some(3.0));
    assert_eq!(observed("vus: max>0"), Some(9.0));
}

#[test]
fn evaluate_all_reports_every_threshold() {
    let set = latencies(&[("fra", 100.0)]);
    let list = vec![
        "http_req_duration: p(95)<200ms abortOnFail".to_owned(),
        " checks: rate>0.9 ".to_owned(),
    ];
    let thresholds = parse_all(&list).unwrap_or_default();
    let results = evaluate_all(&thresholds, &set, 1.0);
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0].threshold,
        "http_req_duration: p(95)<200ms abortOnFail"
    );
    assert_eq!(results[0].metric, "http_req_duration");
    assert!(results[0].pass && results[0].abort_on_fail);
    assert!(results[0].observed.is_some_and(|v| (v - 100.0).abs() < 0.1));
    assert_eq!(results[1].threshold, "checks: rate>0.9");
    assert!(!results[1].pass && !results[1].abort_on_fail);
    assert!(results[1].problem.is_some());
    let json = serde_json::to_string(&results).unwrap_or_default();
    let back: Vec<ThresholdResult> = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back, results);
}

#[test]
fn garbage_never_panics() {
    const ALPHABET: &[char] = &[
        'p', '(', ')', '{', '}', ':', ',', '<', '>', '=', '!', '.', '0', '9', '5', 'e', '-', '+',
        '%', 'm', 's', 'u', 'µ', ' ', '\t', '\n', 'a', 'v', 'g', 'r', 't', '"', '\'', 'é', '☃',
        '\u{0}', '_',
    ];
    const SEEDS: &[&str] = &[
        "http_req_duration{region:fra,name:GET /items/{id}}: p(99.9)<=1.5s abortOnFail delayAbortEval=10s",
        "http_req_failed: rate<1%",
        "http_reqs: rate>=100",
        "vus: value==1",
    ];
    let mut set = latencies(&[("fra", 5.0), ("nrt", 50.0)]);
    assert!(set.add(&key("vus", &[]), MetricKind::Gauge, 1.0).is_ok());
    assert!(
        set.add(&key("http_reqs", &[]), MetricKind::Counter, 1.0)
            .is_ok()
    );
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut parsed = 0;
    for round in 0..20_000 {
        let text: String = if round % 2 == 0 {
            let len = rng.below(60) as usize;
            (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
                .collect()
        } else {
            let mut chars: Vec<char> = SEEDS[rng.below(SEEDS.len() as u64) as usize]
                .chars()
                .collect();
            for _ in 0..=rng.below(4) {
                let at = rng.below(chars.len() as u64 + 1) as usize;
                match rng.below(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 if at < chars.len() => {
                        chars[at] = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
                    }
                    _ => chars.insert(at, ALPHABET[rng.below(ALPHABET.len() as u64) as usize]),
                }
            }
            chars.into_iter().collect()
        };
        match Threshold::parse(&text) {
            Ok(t) => {
                parsed += 1;
                let v = t.evaluate(&set, 1.0);
                assert!(v.observed.is_some() || v.problem.is_some(), "{text:?}");
                assert!(!t.to_string().is_empty());
            }
            Err(e) => assert!(e.to_string().starts_with("threshold `"), "{text:?}"),
        }
    }
    assert!(
        parsed > 100,
        "mutations of valid thresholds often stay valid: {parsed}"
    );
}
