//! The report as JUnit XML, for CI systems that show test results
//! (`--out report.xml`).
//!
//! Every CI system reads JUnit, and a load test's verdicts fit it: each
//! threshold is a test case, failed when the threshold failed, with the
//! observed value (in its unit) as the failure's message; each check is a
//! test case, failed when any of its runs failed, with how many; and one
//! case says whether the run delivered its planned load. The suites carry
//! the run's length, so a CI page shows how long the load test took.
//!
//! The report holds text the user controls (threshold, check and node
//! names, the scenario's failure texts): every value is escaped for XML,
//! and characters XML 1.0 cannot hold at all (most control characters) are
//! replaced with U+FFFD, so no name can end an element or break the file.

use std::fmt::Write as _;

use crate::core::run_report::{LoadUnit, RunReport};
use crate::summary::observed_text;

/// The report as a JUnit XML document.
pub fn render(r: &RunReport) -> String {
    let time = format!("{:.3}", r.summary.duration_s.max(0.0));
    let mut suites = Vec::new();
    suites.push(Suite {
        name: "run",
        cases: vec![load_case(r)],
    });
    suites.push(Suite {
        name: "thresholds",
        cases: r
            .thresholds
            .iter()
            .map(|t| {
                let seen = match (&t.problem, t.observed) {
                    (Some(problem), _) => problem.clone(),
                    (None, Some(v)) => {
                        format!("observed {}", observed_text(t, v, &r.summary.custom))
                    }
                    (None, None) => "no value".to_owned(),
                };
                let aborted = r.aborted_by.as_deref() == Some(t.threshold.as_str());
                Case {
                    name: t.threshold.clone(),
                    failure: (!t.pass).then(|| {
                        if aborted {
                            format!("{seen}; it stopped the run (abortOnFail)")
                        } else {
                            seen.clone()
                        }
                    }),
                    output: t.pass.then_some(seen),
                }
            })
            .collect(),
    });
    suites.push(Suite {
        name: "checks",
        cases: r
            .summary
            .checks
            .iter()
            .map(|c| {
                let runs = c.passes + c.fails;
                let said = format!("{} of {runs} passed, {} failed", c.passes, c.fails);
                Case {
                    name: c.name.clone(),
                    failure: (c.fails > 0).then(|| said.clone()),
                    output: (c.fails == 0).then_some(said),
                }
            })
            .collect(),
    });
    let tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(Suite::failures).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{time}\">",
        xml(&format!("fusi {} {}", r.scenario, r.run_id))
    );
    for suite in &suites {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{time}\">",
            suite.name,
            suite.cases.len(),
            suite.failures()
        );
        for case in &suite.cases {
            let _ = write!(
                out,
                "    <testcase classname=\"fusi.{}\" name=\"{}\" time=\"0\"",
                suite.name,
                xml(&case.name)
            );
            match (&case.failure, &case.output) {
                (Some(message), _) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{0}\">{0}</failure>\n    </testcase>",
                        xml(message)
                    );
                }
                (None, Some(output)) => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        xml(output)
                    );
                }
                (None, None) => out.push_str("/>\n"),
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

struct Suite {
    name: &'static str,
    cases: Vec<Case>,
}

impl Suite {
    fn failures(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_some()).count()
    }
}

struct Case {
    name: String,
    /// Why it failed; `None` when it passed.
    failure: Option<String>,
    /// What a passing case observed.
    output: Option<String>,
}

/// Whether the run delivered its planned load and was not cut short.
fn load_case(r: &RunReport) -> Case {
    let load = &r.load;
    let unit = match load.unit {
        LoadUnit::Iterations => "iterations",
        LoadUnit::VuSeconds => "VU-seconds",
    };
    let said = format!(
        "delivered {:.0} of {:.0} {unit} ({:.1} %, --min-delivered {:.1} %); outcome {}",
        load.delivered,
        load.planned,
        load.ratio * 100.0,
        load.min_ratio * 100.0,
        r.outcome
    );
    let lost = &r.completeness.nodes_lost;
    let failure = if r.load_short() {
        Some(if lost.is_empty() {
            said.clone()
        } else {
            format!("{said}; lost with their share: {}", lost.join(", "))
        })
    } else {
        None
    };
    Case {
        name: "planned load delivered".into(),
        output: failure.is_none().then_some(said),
        failure,
    }
}

/// `text` escaped for an XML attribute or element, with the characters
/// XML 1.0 cannot hold replaced by U+FFFD.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::report::{CheckSummary, Report};
    use crate::core::run_report::RunMeta;
    use crate::core::threshold::ThresholdResult;

    fn report() -> RunReport {
        let meta = RunMeta {
            data: Vec::new(),
            scenario: "x.wasm".into(),
            executor: "constant-vus".into(),
            outcome: "complete".into(),
            expected: Vec::new(),
            lost: Vec::new(),
            thresholds: Vec::new(),
            aborted_by: None,
            load: None,
            moves: Vec::new(),
        };
        let mut r = RunReport::build(&Report::new("r1"), &meta);
        r.thresholds = vec![
            ThresholdResult {
                threshold: "http_req_duration: p(95)<200ms".into(),
                metric: "http_req_duration".into(),
                observed: Some(250.0),
                pass: false,
                problem: None,
                abort_on_fail: false,
            },
            ThresholdResult {
                threshold: "http_req_failed: rate<0.01".into(),
                metric: "http_req_failed".into(),
                observed: Some(0.0),
                pass: true,
                problem: None,
                abort_on_fail: false,
            },
        ];
        r.summary.checks = vec![
            CheckSummary {
                name: "status is 200 & <body> \"ok\"".into(),
                passes: 97,
                fails: 3,
            },
            CheckSummary {
                name: "fast\u{1b}[2J".into(),
                passes: 10,
                fails: 0,
            },
        ];
        r
    }

    #[test]
    fn thresholds_and_checks_are_test_cases_that_fail_with_what_was_observed() {
        let xml = render(&report());
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "));
        assert!(xml.contains("tests=\"5\" failures=\"2\""), "{xml}");
        assert!(
            xml.contains(
                "<testcase classname=\"fusi.thresholds\" name=\"http_req_duration: p(95)&lt;200ms\" \
                 time=\"0\">\n      <failure message=\"observed 250.00ms\">observed 250.00ms</failure>"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<system-out>observed 0.00%</system-out>"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "name=\"status is 200 &amp; &lt;body&gt; &quot;ok&quot;\" time=\"0\">\n      \
                 <failure message=\"97 of 100 passed, 3 failed\">"
            ),
            "{xml}"
        );
        // No control character reaches the file.
        assert!(xml.contains("name=\"fast\u{fffd}[2J\""), "{xml}");
        assert!(!xml.contains('\u{1b}'));
        assert!(xml.contains("name=\"planned load delivered\""), "{xml}");
    }

    #[test]
    fn the_document_is_balanced() {
        let xml = render(&report());
        for tag in [
            "testsuites",
            "testsuite",
            "testcase",
            "failure",
            "system-out",
        ] {
            let opened =
                xml.matches(&format!("<{tag} ")).count() + xml.matches(&format!("<{tag}>")).count();
            let closed = xml.matches(&format!("</{tag}>")).count()
                + if tag == "testcase" {
                    xml.matches("/>\n").count()
                } else {
                    0
                };
            assert_eq!(opened, closed, "{tag} in {xml}");
        }
    }
}
