//! The first few failures of each kind, said with their text; the rest
//! only counted.
//!
//! A run against a dead target fails every request, tens of thousands a
//! second: one line each would bury the terminal, and no line at all leaves
//! the user with a count (`refused=136937`) and no address or OS error to
//! act on. So each kind of failure (a request's error kind, an iteration's
//! failure reason) is said [`SHOWN`] times with its full text, and once the
//! share ends, one line says how many more of that kind were not shown.

use std::sync::Mutex;

/// How many failures of one kind are said with their text.
pub const SHOWN: u64 = 3;

/// Counts failures by kind, to say the first [`SHOWN`] of each.
#[derive(Debug, Default)]
pub struct FirstErrors {
    /// Each kind seen, in the order first seen, with how many were seen.
    seen: Mutex<Vec<(&'static str, u64)>>,
}

impl FirstErrors {
    /// Counts one failure of `kind`; true when it is among the first
    /// [`SHOWN`] of that kind, and so to be said.
    pub fn note(&self, kind: &'static str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let n = match seen.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((kind, 1));
                1
            }
        };
        n <= SHOWN
    }

    /// Each kind with failures that were not said, and how many.
    pub fn suppressed(&self) -> Vec<(&'static str, u64)> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(_, n)| *n > SHOWN)
            .map(|(k, n)| (*k, n - SHOWN))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_kind_are_said_and_the_rest_counted() {
        let errors = FirstErrors::default();
        let said: Vec<bool> = (0..5).map(|_| errors.note("refused")).collect();
        assert_eq!(said, [true, true, true, false, false]);
        assert!(errors.note("timeout"));
        assert_eq!(errors.suppressed(), [("refused", 2)]);
    }
}
