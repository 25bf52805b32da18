//! Thresholds: pass/fail criteria over a run's merged metrics, in k6 syntax.
//!
//! A threshold is checked against the run's totals, the same exact merge the
//! report prints, so every node that holds the same shards reaches the same
//! verdict. Thresholds come from users (`--threshold`) and from scenario
//! files, so parsing never panics, bounds its input, and every error names
//! the threshold, what is wrong with it and how to write it instead.
//!
//! # Grammar
//!
//! ```text
//! threshold  = selector ":" condition { flag }
//! selector   = metric [ "{" tag { "," tag } "}" ]
//! tag        = key ":" value                  (value may be quoted)
//! condition  = aggregation op number [ unit ]
//! aggregation= "avg" | "min" | "max" | "med" | "p(" number ")"   trends
//!            | "rate"                                            rates, counters
//!            | "count"                                           counters
//!            | "value" | "min" | "max"                           gauges
//! op         = "<" | "<=" | ">" | ">=" | "==" | "!="
//! unit       = "ms" | "s" | "us" | "µs" | "m"   (trend aggregations; the limit becomes ms)
//!            | "%"                              (`rate`; the limit becomes a fraction)
//! flag       = "abortOnFail" | "delayAbortEval=" duration
//! ```
//!
//! Whitespace between tokens is allowed. For example:
//!
//! ```text
//! http_req_duration: p(95)<200ms
//! http_req_duration{region:fra,name:GET /items/{id}}: p(99.9) <= 1.5s abortOnFail
//! http_req_failed: rate<1%
//! http_reqs: rate>=100                 (requests per second over the run)
//! checks: rate>0.99 abortOnFail delayAbortEval=30s
//! ```
//!
//! A tag value may hold balanced braces (as in `GET /items/{id}`) but no `,`.
//!
//! # Choices
//!
//! - **One condition per threshold.** k6 takes a list of conditions per
//!   metric; here each string holds exactly one, and a metric with several
//!   conditions gets several thresholds (repeat `--threshold`). Then each
//!   verdict, report line and `abortOnFail` belongs to one condition, and a
//!   `,` never has to be told apart from the `,` between tags.
//! - **Units.** A plain limit is in the metric's own unit. A duration unit
//!   converts the limit to milliseconds, the unit of the built-in durations
//!   (and the one custom time trends should use). `%` divides by 100.
//! - **No samples fail.** A threshold whose selector matches no samples fails
//!   with a problem ("no samples of ..."), because a criterion that was never
//!   measured has not been met: a typo in a metric or tag name must not pass
//!   silently. The one exception is `count`, which only counters have, and
//!   whose value with no samples is 0.
//! - **Kinds are checked** at parse time for the built-in metrics (`p(95)` on
//!   `http_reqs` is refused before the run) and at evaluation for custom
//!   ones, where a mismatch fails the threshold with a problem.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fusi_sdk::abi::MetricKind;
use serde::{Deserialize, Serialize};

use super::metrics::{SeriesSet, Value, from_trend_units, names, valid_metric_name};
use super::printable::escape_controls;
use super::spec::{format_duration, parse_duration};

/// The longest threshold text, in bytes.
pub const MAX_THRESHOLD_LEN: usize = 1000;
/// The most tags one selector may name.
pub const MAX_TAGS: usize = 100;
/// The most thresholds one run may have.
pub const MAX_THRESHOLDS: usize = 100;

/// How a threshold reduces a metric's samples to one number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    /// The mean of a trend.
    Avg,
    /// The lowest sample of a trend, or the lowest level of a gauge.
    Min,
    /// The highest sample of a trend, or the highest level of a gauge.
    Max,
    /// The median of a trend.
    Med,
    /// A percentile of a trend, in (0, 100].
    Percentile(f64),
    /// The fraction of non-zero samples of a rate, or a counter's sum per
    /// second of the run.
    Rate,
    /// The sum of a counter.
    Count,
    /// The last level of a gauge.
    Value,
}

impl Aggregation {
    /// Whether this aggregation applies to a metric kind.
    pub fn fits(self, kind: MetricKind) -> bool {
        use Aggregation::*;
        match kind {
            MetricKind::Trend => matches!(self, Avg | Min | Max | Med | Percentile(_)),
            MetricKind::Rate => self == Rate,
            MetricKind::Counter => matches!(self, Count | Rate),
            MetricKind::Gauge => matches!(self, Value | Min | Max),
        }
    }

    /// The kinds this aggregation needs, in words.
    fn needs(self) -> &'static str {
        use Aggregation::*;
        match self {
            Avg | Med | Percentile(_) => "a trend",
            Min | Max => "a trend or a gauge",
            Rate => "a rate or a counter",
            Count => "a counter",
            Value => "a gauge",
        }
    }

    /// Whether its result is in the metric's unit (so a duration unit fits).
    fn takes_duration(self) -> bool {
        use Aggregation::*;
        matches!(self, Avg | Min | Max | Med | Percentile(_))
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregation::Avg => f.write_str("avg"),
            Aggregation::Min => f.write_str("min"),
            Aggregation::Max => f.write_str("max"),
            Aggregation::Med => f.write_str("med"),
            Aggregation::Percentile(p) => write!(f, "p({p})"),
            Aggregation::Rate => f.write_str("rate"),
            Aggregation::Count => f.write_str("count"),
            Aggregation::Value => f.write_str("value"),
        }
    }
}

/// A comparison between the observed value and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Whether `observed OP limit` holds. Never for NaN.
    pub fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
            Op::Eq => observed == limit,
            Op::Ne => !observed.is_nan() && observed != limit,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the limit was written. The limit itself is already converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitUnit {
    /// A plain number, in the metric's own unit.
    Plain,
    /// A duration, converted to milliseconds.
    Millis,
    /// A percentage, converted to a fraction.
    Percent,
}

/// One pass/fail criterion on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The text as given, trimmed.
    pub source: String,
    /// The metric it checks.
    pub metric: String,
    /// Only series with all these tags count; sorted by key, each key once.
    pub tags: Vec<(String, String)>,
    /// How the samples reduce to one number.
    pub agg: Aggregation,
    /// How that number compares with the limit.
    pub op: Op,
    /// The limit, in the metric's unit (ms for durations, a fraction for
    /// rates).
    pub limit: f64,
    /// How the limit was written.
    pub unit: LimitUnit,
    /// Whether a failure should abort the run.
    pub abort_on_fail: bool,
    /// How long into the run a failure does not abort it yet.
    pub delay_abort_eval: Duration,
}

/// A threshold that cannot be used; the message names the problem and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    /// One threshold is malformed.
    #[error("threshold `{threshold}`: {problem}")]
    Invalid {
        /// The threshold's text (shortened if long).
        threshold: String,
        /// What is wrong, and how to write it instead.
        problem: String,
    },
    /// Too many thresholds.
    #[error("{count} thresholds given; a run may have at most {max}, so merge or drop some", max = MAX_THRESHOLDS)]
    TooMany {
        /// How many were given.
        count: usize,
    },
}

/// The outcome of checking one threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The aggregated value; `None` when it could not be computed.
    pub observed: Option<f64>,
    /// Whether the condition holds.
    pub pass: bool,
    /// Why there is no observed value (no samples, a kind mismatch).
    pub problem: Option<String>,
}

/// The outcome of one threshold, as reports carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The threshold's text, as given.
    pub threshold: String,
    /// The metric it checks.
    pub metric: String,
    /// The aggregated value; `None` when it could not be computed.
    pub observed: Option<f64>,
    /// Whether the condition holds.
    pub pass: bool,
    /// Why there is no observed value.
    pub problem: Option<String>,
    /// Whether a failure aborts the run.
    pub abort_on_fail: bool,
}

/// Parses every threshold; the first malformed one is the error.
pub fn parse_all(list: &[String]) -> Result<Vec<Threshold>, ThresholdError> {
    if list.len() > MAX_THRESHOLDS {
        return Err(ThresholdError::TooMany { count: list.len() });
    }
    list.iter().map(|s| Threshold::parse(s)).collect()
}

/// Checks every threshold against a run's totals.
pub fn evaluate_all(
    thresholds: &[Threshold],
    totals: &SeriesSet,
    duration_s: f64,
) -> Vec<ThresholdResult> {
    thresholds
        .iter()
        .map(|t| t.judge(totals, duration_s))
        .collect()
}

impl Threshold {
    /// The threshold checked against a run's totals, as a report shows it.
    pub fn judge(&self, totals: &SeriesSet, duration_s: f64) -> ThresholdResult {
        let v = self.evaluate(totals, duration_s);
        ThresholdResult {
            threshold: self.source.clone(),
            metric: self.metric.clone(),
            observed: v.observed,
            pass: v.pass,
            problem: v.problem,
            abort_on_fail: self.abort_on_fail,
        }
    }
}

/// The name among `names` that `name` is most likely a typo of: at most
/// two edits away (one for short names), and not `name` itself.
pub fn closest<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let most = if name.chars().count() < 6 { 1 } else { 2 };
    names
        .filter(|n| *n != name)
        .map(|n| (edit_distance(name, n), n))
        .filter(|(d, _)| *d <= most)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The kind of a built-in metric.
pub fn builtin_kind(metric: &str) -> Option<MetricKind> {
    use names::*;
    Some(match metric {
        HTTP_REQS | ERRORS | DATA_SENT | DATA_RECEIVED | ITERATIONS | ITERATIONS_FAILED
        | DROPPED_ITERATIONS | DATA_ROWS_USED | DATA_EXHAUSTED | WS_SESSIONS | WS_MSGS_SENT
        | WS_MSGS_RECEIVED | CONNECTIONS_PACED => MetricKind::Counter,
        HTTP_REQ_DURATION
        | HTTP_REQ_BLOCKED
        | HTTP_REQ_CONNECTING
        | HTTP_REQ_TLS_HANDSHAKING
        | HTTP_REQ_SENDING
        | HTTP_REQ_WAITING
        | HTTP_REQ_RECEIVING
        | ITERATION_DURATION
        | GROUP_DURATION
        | WS_CONNECTING
        | WS_SESSION_DURATION => MetricKind::Trend,
        HTTP_REQ_FAILED | CHECKS => MetricKind::Rate,
        VUS | VUS_MAX | NODE_CPU => MetricKind::Gauge,
        _ => return None,
    })
}

fn kind_name(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Trend => "trend",
        MetricKind::Rate => "rate",
        MetricKind::Gauge => "gauge",
    }
}

/// The quantile of a percentile, as the nearest double to the decimal
/// fraction: `99.9 / 100.0` is 0.9990000000000001, which on 1000 samples picks
/// the 1000th instead of the 999th (and would disagree with the report's
/// p99.9). Percentiles are read to a millionth of a percent.
fn quantile(percentile: f64) -> f64 {
    (percentile * 1e6).round() / 1e8
}

/// Why an aggregation does not apply to a metric.
fn mismatch(metric: &str, kind: MetricKind, agg: Aggregation) -> String {
    format!(
        "`{metric}` is a {}; {agg} needs {} (use {})",
        kind_name(kind),
        agg.needs(),
        aggregations_of(kind)
    )
}

fn aggregations_of(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "count, or rate for per second",
        MetricKind::Trend => "avg, min, max, med or p(N)",
        MetricKind::Rate => "rate",
        MetricKind::Gauge => "value, min or max",
    }
}

const EXAMPLE: &str = "for example `http_req_duration: p(95)<200ms`";

/// The threshold text for an error message: control characters escaped, and
/// cut short if long.
fn shorten(text: &str) -> String {
    const KEEP: usize = 100;
    let mut out = escape_controls(text.chars().take(KEEP));
    if text.chars().nth(KEEP).is_some() {
        out.push('…');
    }
    out
}

/// A position in the text being parsed.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    /// Skips whitespace; true if there was some.
    fn skip_ws(&mut self) -> bool {
        !self.take_while(char::is_whitespace).is_empty()
    }

    fn eat(&mut self, prefix: &str) -> bool {
        let found = self.rest().starts_with(prefix);
        if found {
            self.pos += prefix.len();
        }
        found
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }
}

/// The next token for "found ..." in an error message.
fn found(rest: &str) -> String {
    match rest.split_whitespace().next() {
        Some(word) => format!("found `{}`", shorten(word)),
        None => "found the end".to_owned(),
    }
}

impl Threshold {
    /// Parses one threshold, such as `http_req_duration: p(95)<200ms`.
    pub fn parse(text: &str) -> Result<Threshold, ThresholdError> {
        let source = text.trim();
        let invalid = |problem: String| ThresholdError::Invalid {
            threshold: shorten(source),
            problem,
        };
        if text.len() > MAX_THRESHOLD_LEN {
            return Err(invalid(format!(
                "it is {} bytes long; a threshold may be at most {MAX_THRESHOLD_LEN}",
                text.len()
            )));
        }
        if source.is_empty() {
            return Err(invalid(format!(
                "it is empty; write `metric: aggregation<limit`, {EXAMPLE}"
            )));
        }
        let mut c = Cursor {
            text: source,
            pos: 0,
        };
        let (metric, tags) = parse_selector(&mut c).map_err(invalid)?;
        let kind = builtin_kind(&metric);
        if kind.is_none()
            && let Some(near) = closest(&metric, names::ALL.iter().copied())
        {
            return Err(invalid(format!(
                "there is no built-in metric `{metric}`: did you mean `{near}`? (A custom metric \
                 this close to a built-in name is refused, to catch typos: name it apart.)"
            )));
        }
        let (agg, op, limit, unit) = parse_condition(&mut c, &metric, kind).map_err(invalid)?;
        let (abort_on_fail, delay_abort_eval) = parse_flags(c.rest()).map_err(invalid)?;
        Ok(Threshold {
            source: source.to_owned(),
            metric,
            tags,
            agg,
            op,
            limit,
            unit,
            abort_on_fail,
            delay_abort_eval,
        })
    }

    /// The selector in canonical form: `metric` or `metric{k:v,...}`.
    pub fn selector(&self) -> String {
        if self.tags.is_empty() {
            return self.metric.clone();
        }
        let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{}{{{}}}", self.metric, tags.join(","))
    }

    /// The condition in canonical form, such as `p(95)<200ms` or
    /// `rate<0.01`, for summary lines.
    pub fn describe(&self) -> String {
        let unit = if self.unit == LimitUnit::Millis {
            "ms"
        } else {
            ""
        };
        format!("{}{}{}{unit}", self.agg, self.op, self.limit)
    }

    /// Checks the threshold against a run's totals; `duration_s` is the
    /// run's length in seconds, for `rate` of a counter.
    pub fn evaluate(&self, totals: &SeriesSet, duration_s: f64) -> Verdict {
        let value = totals.fold(&self.metric, |key| {
            self.tags
                .iter()
                .all(|(k, v)| key.tag(k) == Some(v.as_str()))
        });
        if value.is_none() && self.agg != Aggregation::Count && builtin_kind(&self.metric).is_none()
        {
            return Verdict {
                observed: None,
                pass: false,
                problem: Some(self.never_recorded(totals)),
            };
        }
        match self.observe(value.as_ref(), duration_s) {
            Ok(observed) => Verdict {
                observed: Some(observed),
                pass: self.op.holds(observed, self.limit),
                problem: None,
            },
            Err(problem) => Verdict {
                observed: None,
                pass: false,
                problem: Some(problem),
            },
        }
    }

    /// Why a custom metric has no value: the scenario never recorded it
    /// (with these tags, or at all), with the closest name it did record.
    fn never_recorded(&self, totals: &SeriesSet) -> String {
        let recorded: std::collections::BTreeSet<&str> = totals
            .iter()
            .map(|(key, _)| key.metric.as_str())
            .filter(|name| builtin_kind(name).is_none())
            .collect();
        if recorded.contains(self.metric.as_str()) {
            return format!("no samples of `{}`", self.selector());
        }
        let hint = match closest(&self.metric, recorded.iter().copied()) {
            Some(near) => format!(": did you mean `{near}`?"),
            None if recorded.is_empty() => " (it recorded no custom metric)".to_owned(),
            None => format!(
                " (it recorded {})",
                recorded
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!(
            "the scenario never recorded a metric `{}`{hint}",
            self.metric
        )
    }

    /// The aggregated value, or why there is none.
    fn observe(&self, value: Option<&Value>, duration_s: f64) -> Result<f64, String> {
        let no_samples = || format!("no samples of `{}`", self.selector());
        let Some(value) = value else {
            return match self.agg {
                Aggregation::Count => Ok(0.0),
                _ => Err(no_samples()),
            };
        };
        match (self.agg, value) {
            (agg, Value::Trend(h)) if agg.fits(MetricKind::Trend) => {
                if h.is_empty() {
                    return Err(no_samples());
                }
                let q = |p: f64| from_trend_units(h.value_at_quantile(p));
                Ok(match agg {
                    Aggregation::Avg => h.mean() / 1000.0,
                    Aggregation::Min => from_trend_units(h.min()),
                    Aggregation::Med => q(0.5),
                    Aggregation::Percentile(p) => q(quantile(p)),
                    // Max, the one other aggregation that fits a trend.
                    _ => from_trend_units(h.max()),
                })
            }
            (Aggregation::Rate, Value::Rate { passes, fails }) => {
                let total = passes.saturating_add(*fails);
                if total == 0 {
                    Err(no_samples())
                } else {
                    Ok(*passes as f64 / total as f64)
                }
            }
            (Aggregation::Count, Value::Counter(sum)) => Ok(*sum),
            (Aggregation::Rate, Value::Counter(sum)) => {
                if self.unit == LimitUnit::Percent {
                    Err(format!(
                        "`{}` is a counter, whose rate is per second, not a percentage; write the limit \
                         as a number per second, without the %",
                        self.metric
                    ))
                } else if duration_s.is_finite() && duration_s > 0.0 {
                    Ok(sum / duration_s)
                } else {
                    Err(
                        "the run has no duration yet, so a counter's rate per second is unknown"
                            .into(),
                    )
                }
            }
            (agg, Value::Gauge { min, max, last }) if agg.fits(MetricKind::Gauge) => {
                if !min.is_finite() {
                    return Err(no_samples());
                }
                Ok(match agg {
                    Aggregation::Min => *min,
                    Aggregation::Max => *max,
                    // Value, the one other aggregation that fits a gauge.
                    _ => *last,
                })
            }
            (agg, value) => Err(mismatch(&self.metric, value.kind(), agg)),
        }
    }
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Threshold, ThresholdError> {
        Threshold::parse(s)
    }
}

impl fmt::Display for Threshold {
    /// The canonical text, which parses back to the same threshold (with a
    /// percentage written as a fraction).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.selector(), self.describe())?;
        if self.abort_on_fail {
            f.write_str(" abortOnFail")?;
            if !self.delay_abort_eval.is_zero() {
                write!(
                    f,
                    " delayAbortEval={}",
                    format_duration(self.delay_abort_eval)
                )?;
            }
        }
        Ok(())
    }
}

/// `metric` or `metric{k:v,...}`, then the `:`.
fn parse_selector(c: &mut Cursor<'_>) -> Result<(String, Vec<(String, String)>), String> {
    let metric = c.take_while(|ch| !(ch.is_whitespace() || matches!(ch, '{' | '}' | ':' | ',')));
    if metric.is_empty() {
        return Err(format!(
            "no metric name before the `:`; write `metric: condition`, {EXAMPLE}"
        ));
    }
    if !valid_metric_name(metric) {
        return Err(format!(
            "`{}` is not a metric name: use letters, digits, `_` and `.`, not starting with a digit; \
             tags go in braces, as in `http_req_duration{{status:200}}`",
            shorten(metric)
        ));
    }
    c.skip_ws();
    let tags = if c.eat("{") {
        parse_tags(c)?
    } else {
        Vec::new()
    };
    c.skip_ws();
    if !c.eat(":") {
        return Err(if c.rest().is_empty() {
            format!("no condition; add one after a `:`, as in `{metric}: p(95)<200`")
        } else {
            format!(
                "expected `:` after `{metric}`, {}; write `metric: condition`, {EXAMPLE}",
                found(c.rest())
            )
        });
    }
    Ok((metric.to_owned(), tags))
}

/// The tags after a `{`, up to the `}` that closes it.
fn parse_tags(c: &mut Cursor<'_>) -> Result<Vec<(String, String)>, String> {
    let rest = c.rest();
    let mut depth = 0usize;
    let mut close = None;
    for (i, ch) in rest.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => {
                close = Some(i);
                break;
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    let Some(close) = close else {
        return Err("the tag list is not closed; add a `}` before the `:`".into());
    };
    let body = &rest[..close];
    c.pos += close + 1;
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    if body.split(',').count() > MAX_TAGS {
        return Err(format!(
            "more than {MAX_TAGS} tags; a selector may name at most {MAX_TAGS}"
        ));
    }
    let mut tags: Vec<(String, String)> = Vec::new();
    for part in body.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(
                "an empty tag in the braces; write `{tag:value,tag2:value2}` with no stray `,`"
                    .into(),
            );
        }
        let Some((key, value)) = part.split_once(':') else {
            return Err(format!(
                "the tag `{}` has no value; write `tag:value`",
                shorten(part)
            ));
        };
        let key = key.trim();
        let value = unquote(value.trim());
        if key.is_empty() {
            return Err(format!(
                "the tag `{}` has no name; write `tag:value`",
                shorten(part)
            ));
        }
        if value.is_empty() {
            return Err(format!(
                "the tag `{}` has an empty value; write `{}:value`",
                shorten(key),
                shorten(key)
            ));
        }
        if tags.iter().any(|(k, _)| k == key) {
            return Err(format!(
                "the tag `{}` is given twice; a series has one value per tag",
                shorten(key)
            ));
        }
        tags.push((key.to_owned(), value.to_owned()));
    }
    tags.sort();
    Ok(tags)
}

/// A value without one pair of surrounding quotes, if it has them.
fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// `aggregation op number [unit]`.
fn parse_condition(
    c: &mut Cursor<'_>,
    metric: &str,
    kind: Option<MetricKind>,
) -> Result<(Aggregation, Op, f64, LimitUnit), String> {
    c.skip_ws();
    let agg = parse_aggregation(c)?;
    if let Some(kind) = kind
        && !agg.fits(kind)
    {
        return Err(mismatch(metric, kind, agg));
    }
    c.skip_ws();
    let op = parse_op(c, agg)?;
    c.skip_ws();
    let number =
        c.take_while(|ch| ch.is_ascii_digit() || matches!(ch, '.' | '+' | '-' | 'e' | 'E'));
    if number.is_empty() {
        return Err(format!(
            "no limit after `{agg}{op}`, {}; write a number, as in `{agg}{op}200`",
            found(c.rest())
        ));
    }
    let value: f64 = match number.parse() {
        Ok(v) if f64::is_finite(v) => v,
        _ => {
            return Err(format!(
                "`{}` is not a number; write the limit as in `{agg}{op}200` or `{agg}{op}0.5`",
                shorten(number)
            ));
        }
    };
    let before_unit = c.pos;
    let spaced = c.skip_ws();
    let word = c.take_while(|ch| ch.is_alphabetic() || ch == '%');
    let (scale, unit) = match word {
        "" => (1.0, LimitUnit::Plain),
        "ms" => (1.0, LimitUnit::Millis),
        "s" => (1000.0, LimitUnit::Millis),
        "us" | "µs" | "μs" => (0.001, LimitUnit::Millis),
        "m" => (60_000.0, LimitUnit::Millis),
        "%" => (0.01, LimitUnit::Percent),
        _ if spaced => {
            // Not a unit but the first flag.
            c.pos = before_unit;
            (1.0, LimitUnit::Plain)
        }
        other => {
            return Err(format!(
                "unknown unit `{}`; use ms, s, us or m for durations, % for rates, or no unit for the \
                 metric's own",
                shorten(other)
            ));
        }
    };
    if unit == LimitUnit::Millis && !agg.takes_duration() {
        return Err(format!(
            "a duration unit fits only trend aggregations (avg, min, max, med, p(N)); write {agg}{op}{number} \
             without one"
        ));
    }
    if unit == LimitUnit::Percent && agg != Aggregation::Rate {
        return Err(format!(
            "a percentage fits only `rate`; write {agg}{op}{number} without the %"
        ));
    }
    let limit = value * scale;
    if !limit.is_finite() {
        return Err(format!("the limit `{number}{word}` is out of range"));
    }
    Ok((agg, op, limit, unit))
}

/// `avg`, `p(95)`, ...
fn parse_aggregation(c: &mut Cursor<'_>) -> Result<Aggregation, String> {
    const ALL: &str = "avg, min, max, med or p(N) for trends, rate for rates, count or rate for counters, \
                       value, min or max for gauges";
    let word = c.take_while(|ch| ch.is_alphanumeric() || matches!(ch, '_' | '.'));
    let agg = match word {
        "avg" => Aggregation::Avg,
        "min" => Aggregation::Min,
        "max" => Aggregation::Max,
        "med" => Aggregation::Med,
        "rate" => Aggregation::Rate,
        "count" => Aggregation::Count,
        "value" => Aggregation::Value,
        "p" => return parse_percentile(c),
        "" => {
            return Err(format!(
                "no aggregation after the `:`, {}; write one of {ALL}, as in `p(95)<200`",
                found(c.rest())
            ));
        }
        other => {
            let lower = other.to_ascii_lowercase();
            let hint = match lower.as_str() {
                "mean" | "average" => "write avg".to_owned(),
                "median" => "write med".to_owned(),
                "sum" | "total" => "write count".to_owned(),
                "last" => "write value".to_owned(),
                "percentile" => "write p(N), as in p(95)".to_owned(),
                l if l.len() > 1
                    && l.starts_with('p')
                    && l[1..].chars().all(|ch| ch.is_ascii_digit() || ch == '.') =>
                {
                    format!("write p({})", &l[1..])
                }
                "avg" | "min" | "max" | "med" | "rate" | "count" | "value" | "p" => {
                    format!("aggregations are lower case; write {lower}")
                }
                _ => format!("use {ALL}"),
            };
            return Err(format!("unknown aggregation `{}`; {hint}", shorten(other)));
        }
    };
    Ok(agg)
}

/// The `(N)` of `p(N)`.
fn parse_percentile(c: &mut Cursor<'_>) -> Result<Aggregation, String> {
    c.skip_ws();
    if !c.eat("(") {
        return Err("`p` needs a percentile in parentheses; write p(95) or p(99.9)".into());
    }
    c.skip_ws();
    let number = c.take_while(|ch| ch.is_ascii_digit() || ch == '.');
    c.skip_ws();
    if !c.eat(")") {
        return Err(format!(
            "the percentile in `p({number}` is not closed, or not a number; write p(95) or p(99.9)"
        ));
    }
    match number.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(Aggregation::Percentile(p)),
        _ => Err(format!(
            "`p({number})` is not a percentile; N in p(N) must be a number above 0 and at most 100, \
             as in p(95) or p(99.9)"
        )),
    }
}

/// `<`, `<=`, ...
fn parse_op(c: &mut Cursor<'_>, agg: Aggregation) -> Result<Op, String> {
    // Longest first, so that `<=` is not read as `<`.
    for (text, op) in [
        ("===", Op::Eq),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ] {
        if c.eat(text) {
            return Ok(op);
        }
    }
    let hint = if c.rest().starts_with("=<") {
        "write <=".to_owned()
    } else if c.rest().starts_with("=>") {
        "write >=".to_owned()
    } else if c.rest().starts_with('=') {
        "write == to compare for equality".to_owned()
    } else {
        format!("use <, <=, >, >=, == or !=, as in `{agg}<200`")
    };
    Err(format!(
        "expected a comparison after `{agg}`, {}; {hint}",
        found(c.rest())
    ))
}

/// `abortOnFail` and `delayAbortEval=DURATION`, in any order.
fn parse_flags(rest: &str) -> Result<(bool, Duration), String> {
    let rest = rest.trim();
    if let Some(more) = rest.strip_prefix(',') {
        return Err(format!(
            "one condition per threshold; give `{}` as a threshold of its own (repeat --threshold)",
            shorten(more.trim())
        ));
    }
    let mut abort = false;
    let mut delay = None;
    for word in rest.split_whitespace() {
        if word == "abortOnFail" {
            abort = true;
        } else if let Some(value) = word.strip_prefix("delayAbortEval=") {
            let d = parse_duration(value).map_err(|e| format!("delayAbortEval: {e}"))?;
            delay = Some(d);
        } else if word.eq_ignore_ascii_case("abortOnFail") {
            return Err(format!("unknown flag `{word}`; write abortOnFail"));
        } else if word.starts_with("delayAbortEval") {
            return Err(format!(
                "`{}` has no duration; write delayAbortEval=10s (no spaces)",
                shorten(word)
            ));
        } else {
            return Err(format!(
                "unexpected `{}` after the condition; only abortOnFail and delayAbortEval=DURATION may \
                 follow it, and each threshold holds one condition",
                shorten(word)
            ));
        }
    }
    if delay.is_some() && !abort {
        return Err(
            "delayAbortEval only delays abortOnFail; add abortOnFail, or drop delayAbortEval"
                .into(),
        );
    }
    Ok((abort, delay.unwrap_or(Duration::ZERO)))
}

#[cfg(test)]
mod tests;
