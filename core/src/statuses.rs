//! Expected statuses: which HTTP statuses a run counts as success.
//!
//! As in k6, a request fails (`http_req_failed`, and the `errors` counter's
//! `status_4xx` and `status_5xx`) when no response arrived or its status is
//! not expected; by default 200 to 399 are. A run sets its own with
//! `--expected-statuses 200-299,404` (it travels with the run's spec to every
//! node), and a scenario may set its VU's with the SDK's
//! `http::set_expected_statuses`. The text is a comma-separated list of
//! statuses and inclusive ranges; it arrives from users and from peers, so
//! parsing bounds it and every error says how to write it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most ranges one set may hold.
pub const MAX_RANGES: usize = 64;

/// The lowest and highest status a set may name.
const STATUS_RANGE: std::ops::RangeInclusive<u16> = 100..=599;

/// A set of HTTP statuses, as inclusive ranges in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExpectedStatuses {
    ranges: Vec<(u16, u16)>,
}

impl Default for ExpectedStatuses {
    /// 200 to 399, as k6.
    fn default() -> ExpectedStatuses {
        ExpectedStatuses {
            ranges: vec![(200, 399)],
        }
    }
}

impl ExpectedStatuses {
    /// Whether `status` is expected. 0 (no response) never is.
    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    /// Whether this is the default, 200 to 399.
    pub fn is_default(&self) -> bool {
        *self == ExpectedStatuses::default()
    }
}

/// Why a list of statuses is unusable; the message says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected statuses {text:?}: {problem}; write statuses and ranges from 100 to 599, for example 200-399,404"
)]
pub struct StatusesError {
    text: String,
    problem: String,
}

impl FromStr for ExpectedStatuses {
    type Err = StatusesError;

    fn from_str(text: &str) -> Result<ExpectedStatuses, StatusesError> {
        let shown: String = text.chars().take(100).collect();
        let fail = |problem: String| StatusesError {
            text: shown.clone(),
            problem,
        };
        let status = |s: &str| {
            let n: u16 = s
                .trim()
                .parse()
                .map_err(|_| fail(format!("`{}` is not a status", s.trim())))?;
            if STATUS_RANGE.contains(&n) {
                Ok(n)
            } else {
                Err(fail(format!("{n} is not an HTTP status")))
            }
        };
        let parts: Vec<&str> = text.split(',').collect();
        if parts.len() > MAX_RANGES {
            return Err(fail(format!(
                "it has {} parts; at most {MAX_RANGES}",
                parts.len()
            )));
        }
        let mut ranges = Vec::with_capacity(parts.len());
        for part in parts {
            if part.trim().is_empty() {
                return Err(fail("it has an empty part".into()));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (status(lo)?, status(hi)?),
                None => {
                    let n = status(part)?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(fail(format!("the range {lo}-{hi} runs backwards")));
            }
            ranges.push((lo, hi));
        }
        Ok(ExpectedStatuses { ranges })
    }
}

impl fmt::Display for ExpectedStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl TryFrom<String> for ExpectedStatuses {
    type Error = StatusesError;

    fn try_from(text: String) -> Result<ExpectedStatuses, StatusesError> {
        text.parse()
    }
}

impl From<ExpectedStatuses> for String {
    fn from(statuses: ExpectedStatuses) -> String {
        statuses.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_k6s() {
        let d = ExpectedStatuses::default();
        assert!(d.contains(200) && d.contains(302) && d.contains(399));
        assert!(!d.contains(0) && !d.contains(404) && !d.contains(500));
        assert_eq!(d.to_string(), "200-399");
    }

    #[test]
    fn lists_parse_and_print_back() {
        let s: ExpectedStatuses = "200-299, 404,418".parse().expect("valid");
        assert!(s.contains(204) && s.contains(404) && s.contains(418));
        assert!(!s.contains(302) && !s.contains(405));
        assert_eq!(s.to_string(), "200-299,404,418");
        assert!(!s.is_default());
    }

    #[test]
    fn bad_lists_name_the_problem() {
        for (text, problem) in [
            ("", "empty part"),
            ("200-", "`` is not a status"),
            ("2xx", "`2xx` is not a status"),
            ("99", "99 is not an HTTP status"),
            ("300-200", "runs backwards"),
            ("200,,404", "empty part"),
        ] {
            let e = text
                .parse::<ExpectedStatuses>()
                .expect_err(text)
                .to_string();
            assert!(e.contains(problem), "{text}: {e}");
            assert!(e.contains("for example 200-399,404"), "{e}");
        }
        let long = vec!["200"; MAX_RANGES + 1].join(",");
        assert!(long.parse::<ExpectedStatuses>().is_err());
    }

    #[test]
    fn it_travels_as_its_text() {
        let s: ExpectedStatuses = "200-299,404".parse().expect("valid");
        let json = serde_json::to_string(&s).expect("encodes");
        assert_eq!(json, "\"200-299,404\"");
        let back: ExpectedStatuses = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, s);
        assert!(serde_json::from_str::<ExpectedStatuses>("\"600\"").is_err());
    }
}
