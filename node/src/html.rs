//! The HTML report: one self-contained page that draws the run's report,
//! embedded in it as JSON.
//!
//! A report gets mailed, attached to tickets and opened years later, on
//! machines with no network or behind a proxy that blocks CDNs. So the page
//! carries everything it needs: inline CSS, inline JavaScript that draws the
//! charts as SVG, and no URL of any kind (not even the SVG namespace, which
//! the script reads off an element the parser made). The data is the exact
//! JSON of `--format json`, in a `<script id="fusi-report"
//! type="application/json">` element, so the page is also the data: a
//! script can pull the JSON back out, and the page draws only what the JSON
//! says.
//!
//! The report holds text the user controls (scenario, check, tag, region and
//! node names). Inside the JSON every `<` is written `\u003c`, which JSON
//! reads back as the same character while HTML sees no tag in it, so no
//! `</script>` or `<!--` in a name can end or bend the script element. The
//! script puts data in the page only as text nodes and attribute values,
//! never as markup.
//!
//! The template lives in `report.html` next to this file, to be read and
//! edited as a page; its style and script live in `report.css` and
//! `report.js`, which the node's live dashboard ([`crate::api::dashboard`])
//! serves too, so that a run under way and its final report are drawn by
//! the same code.

use crate::core::run_report::RunReport;

/// The page, with [`CSS_PLACEHOLDER`], [`JS_PLACEHOLDER`] and
/// [`JSON_PLACEHOLDER`] where they go.
const TEMPLATE: &str = include_str!("report.html");

/// The report's style sheet.
pub const REPORT_CSS: &str = include_str!("report.css");

/// The script that draws a report: it defines `fusiReport.draw`.
pub const REPORT_JS: &str = include_str!("report.js");

/// Where [`REPORT_CSS`] goes in [`TEMPLATE`].
const CSS_PLACEHOLDER: &str = "@FUSI_REPORT_CSS@";

/// Where [`REPORT_JS`] goes in [`TEMPLATE`].
const JS_PLACEHOLDER: &str = "@FUSI_REPORT_JS@";

/// Where the report's JSON goes in [`TEMPLATE`]: once, inside the
/// `fusi-report` script element. It is filled in last, so that nothing in
/// the JSON is taken for a placeholder.
const JSON_PLACEHOLDER: &str = "@FUSI_REPORT_JSON@";

/// The report as one HTML page that needs no network to view.
pub fn render(report: &RunReport) -> String {
    let json = String::from_utf8_lossy(&report.to_json()).replace('<', "\\u003c");
    TEMPLATE
        .replacen(CSS_PLACEHOLDER, REPORT_CSS.trim_end(), 1)
        .replacen(JS_PLACEHOLDER, REPORT_JS.trim_end(), 1)
        .replacen(JSON_PLACEHOLDER, json.trim_end(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metrics::{SeriesKey, SeriesSet, names};
    use crate::core::report::Report;
    use crate::core::run_report::{ExpectedNode, RunMeta};
    use crate::core::shard::Shard;
    use fusi_sdk::abi::MetricKind;

    const HOSTILE: &str = "</script><script>alert(1)</script><!--";

    /// Two nodes in two regions, three intervals each; user-controlled
    /// names set to `name`.
    fn report(name: &str) -> RunReport {
        let mut shards = Vec::new();
        for (node, region) in [("a", "fra"), ("b", name)] {
            for seq in 0..3 {
                let mut series = SeriesSet::new();
                let reqs = SeriesKey::new(names::HTTP_REQS, [("status".into(), "200".into())]);
                let dur = SeriesKey::new(names::HTTP_REQ_DURATION, [("tag".into(), name.into())]);
                let check = SeriesKey::new(names::CHECKS, [("check".into(), name.into())]);
                let _ = series.add(&reqs, MetricKind::Counter, 10.0);
                let _ = series.add(&dur, MetricKind::Trend, 3.0 + seq as f64);
                let _ = series.add(&check, MetricKind::Rate, 1.0);
                shards.push(Shard {
                    notes: Vec::new(),
                    run_id: "r1".into(),
                    node: node.into(),
                    name: format!("{name}-{node}"),
                    region: region.into(),
                    seq,
                    start_ms: seq * 1000,
                    end_ms: (seq + 1) * 1000,
                    last: seq == 2,
                    series,
                });
            }
        }
        let meta = RunMeta {
            data: Vec::new(),
            scenario: name.into(),
            executor: "constant-vus".into(),
            outcome: "complete".into(),
            expected: vec![
                ExpectedNode {
                    id: "a".into(),
                    region: "fra".into(),
                    segment: None,
                },
                ExpectedNode {
                    id: "b".into(),
                    region: name.into(),
                    segment: None,
                },
            ],
            lost: vec![],
            aborted_by: None,
            load: None,
            moves: Vec::new(),
            thresholds: vec![format!("http_req_duration{{tag:{name}}}: p(95)<100ms")],
        };
        RunReport::build(&Report::from_shards("r1", shards), &meta)
    }

    /// The text of the `fusi-report` script element, and the page without it.
    fn split(page: &str) -> (&str, String) {
        let open = "<script id=\"fusi-report\" type=\"application/json\">";
        let start = page.find(open).map(|i| i + open.len()).unwrap_or(0);
        let len = page[start..].find("</script>").unwrap_or(0);
        let rest = format!("{}{}", &page[..start], &page[start + len..]);
        (&page[start..start + len], rest)
    }

    #[test]
    fn the_template_has_one_place_for_the_json_the_style_and_the_script() {
        for placeholder in [CSS_PLACEHOLDER, JS_PLACEHOLDER, JSON_PLACEHOLDER] {
            assert_eq!(TEMPLATE.matches(placeholder).count(), 1, "{placeholder}");
            for part in [REPORT_CSS, REPORT_JS] {
                assert!(!part.contains(placeholder), "{placeholder}");
            }
        }
        let (inside, _) = split(TEMPLATE);
        assert_eq!(inside, JSON_PLACEHOLDER);
        // Inlined, neither may end its element early.
        assert!(!REPORT_JS.to_ascii_lowercase().contains("</script"));
        assert!(!REPORT_CSS.to_ascii_lowercase().contains("</style"));
    }

    #[test]
    fn the_json_reads_back_as_the_same_report() {
        let report = report("hello.wasm");
        let page = render(&report);
        let (json, _) = split(&page);
        let back: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let want: serde_json::Value = serde_json::from_slice(&report.to_json()).unwrap_or_default();
        assert!(want.is_object());
        assert_eq!(back, want);
        assert_eq!(report.summary.timeline.len(), 3);
        assert_eq!(report.regions.len(), 2);
    }

    #[test]
    fn the_page_refers_to_no_url() {
        let page = render(&report("https://example.com/hello"));
        let (json, rest) = split(&page);
        assert!(json.contains("https://example.com/hello"));
        for scheme in ["http://", "https://", "//cdn", "url(", "@import"] {
            assert!(!rest.contains(scheme), "the page refers to {scheme}");
        }
        for attr in ["src=", "href="] {
            assert!(!rest.contains(attr), "the page loads something: {attr}");
        }
    }

    #[test]
    fn hostile_names_stay_inside_the_json() {
        let report = report(HOSTILE);
        let page = render(&report);
        let (json, rest) = split(&page);
        assert!(!json.contains('<'), "{json}");
        assert!(!rest.contains("alert(1)"));
        assert_eq!(
            page.matches("</script>").count(),
            2,
            "the JSON's and the code's"
        );
        let back: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(back["scenario"], HOSTILE);
        assert_eq!(back["nodes"][1]["name"], format!("{HOSTILE}-b"));
        assert!(back["regions"].get(HOSTILE).is_some());
    }
}
