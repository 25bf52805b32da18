//! The test data a share's VUs read: each data set of the run parsed once
//! per node, shared read-only by every VU, with one draw cursor per set
//! (see [`crate::core::data`] for which rows a draw gets).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::core::data::{Cursor, DataSpec, Draw, Rows};
use crate::core::segment::ExecutionSegment;

/// The data sets of one share.
#[derive(Debug, Default)]
pub struct DataSets {
    sets: Vec<DataSet>,
    /// A draw of a `stop` set found this node's rows gone: no iteration
    /// starts on this node after that one.
    ran_out: AtomicBool,
}

#[derive(Debug)]
struct DataSet {
    name: String,
    rows: Rows,
    cursor: Mutex<Cursor>,
}

/// What a draw got, for the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drawn {
    /// This row.
    Row(u64),
    /// This node's rows of the set ran out.
    RanOut,
    /// The run has no such set.
    NoSet,
}

impl DataSets {
    /// Parses the files of `specs` (in the same order) for a node whose
    /// share is `segment`. The files come from a peer: the error names the
    /// set and what is wrong with it.
    pub fn load(
        specs: &[DataSpec],
        files: &[Arc<Vec<u8>>],
        segment: ExecutionSegment,
    ) -> Result<DataSets, String> {
        if specs.len() != files.len() {
            return Err(format!(
                "the run names {} data sets and {} files came",
                specs.len(),
                files.len()
            ));
        }
        let mut sets = Vec::with_capacity(specs.len());
        for (spec, file) in specs.iter().zip(files) {
            let rows = Rows::parse(spec.format, file)
                .map_err(|e| format!("data set {} ({}): {e}", spec.name, spec.format))?;
            if rows.len() != spec.rows {
                return Err(format!(
                    "data set {} has {} rows here and {} in the run's spec",
                    spec.name,
                    rows.len(),
                    spec.rows
                ));
            }
            let cursor = Mutex::new(Cursor::new(spec, rows.len(), segment));
            sets.push(DataSet {
                name: spec.name.clone(),
                rows,
                cursor,
            });
        }
        Ok(DataSets {
            sets,
            ran_out: AtomicBool::new(false),
        })
    }

    fn set(&self, name: &str) -> Option<&DataSet> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// How many rows the set `name` has.
    pub fn len(&self, name: &str) -> Option<u64> {
        self.set(name).map(|s| s.rows.len())
    }

    /// Row `index` of the set `name`, as JSON: `None` without such a set,
    /// `Some(None)` without such a row.
    pub fn row(&self, name: &str, index: u64) -> Option<Option<&[u8]>> {
        self.set(name).map(|s| s.rows.get(index))
    }

    /// Draws the next row of the set `name`.
    pub fn draw(&self, name: &str) -> Drawn {
        let Some(set) = self.set(name) else {
            return Drawn::NoSet;
        };
        let drawn = match set.cursor.lock() {
            Ok(mut cursor) => cursor.draw(),
            Err(poisoned) => poisoned.into_inner().draw(),
        };
        match drawn {
            Draw::Row(i) => Drawn::Row(i),
            Draw::Exhausted => {
                self.ran_out.store(true, Ordering::Relaxed);
                Drawn::RanOut
            }
        }
    }

    /// Whether a draw found this node's rows of a `stop` set gone.
    pub fn ran_out(&self) -> bool {
        self.ran_out.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::data::{DataFormat, DataMode, Exhausted};

    #[test]
    fn a_share_reads_rows_by_index_and_draws_its_own_until_they_run_out() {
        let csv = Arc::new(b"user\nann\nbob\ncy\ndee\n".to_vec());
        let spec = DataSpec {
            name: "users".into(),
            sha256: "0".repeat(64),
            format: DataFormat::Csv,
            rows: 4,
            mode: DataMode::Unique,
            exhausted: Exhausted::Stop,
        };
        let halves = ExecutionSegment::split(&[1, 1]);
        let sets = DataSets::load(
            std::slice::from_ref(&spec),
            std::slice::from_ref(&csv),
            halves[0],
        )
        .unwrap();
        assert_eq!(sets.len("users"), Some(4));
        assert_eq!(sets.len("nope"), None);
        assert_eq!(sets.row("users", 1), Some(Some(&br#"{"user":"bob"}"#[..])));
        assert_eq!(sets.row("users", 4), Some(None));
        assert_eq!(sets.draw("nope"), Drawn::NoSet);
        let mut drawn = Vec::new();
        while let Drawn::Row(i) = sets.draw("users") {
            drawn.push(i);
        }
        assert_eq!(drawn.len(), 2, "{drawn:?}");
        assert!(sets.ran_out());
        let wrong = DataSpec { rows: 5, ..spec };
        let e = DataSets::load(&[wrong], &[csv], halves[0]).unwrap_err();
        assert!(e.contains("4 rows here and 5"), "{e}");
    }
}
