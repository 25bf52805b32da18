//! The HTML report: one self-contained page, with the run's report embedded
//! as JSON.

use crate::core::run_report::RunReport;

/// The report as one HTML page that needs no network to view.
pub fn render(report: &RunReport) -> String {
    let json = String::from_utf8_lossy(&report.to_json()).replace("</", "<\\/");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>fusi report {}</title></head>\n\
         <body><script id=\"report\" type=\"application/json\">{json}</script></body></html>\n",
        report.run_id
    )
}
