//! Test data: the files a run ships with its module (`--data NAME=FILE`).
//!
//! A k6 user feeds a test with users, products or tokens from a file. Here a
//! data set travels as its module does: the submitting node keeps the file's
//! bytes under their sha256, the run's spec names the set by that hash
//! ([`DataSpec`]), and every node of the plan fetches the bytes from a peer
//! that holds them and checks the hash. Each node parses a set once into
//! [`Rows`], shared read-only by all its VUs (the memory is paid once per
//! node, as k6's `SharedArray`), and a scenario reads a row by index or
//! draws the next one.
//!
//! # Drawing rows
//!
//! A [`Cursor`] says which row a draw gets:
//!
//! - [`DataMode::Shared`]: every node walks the whole set in order, from
//!   row 0, and starts over at its end. Nodes may use the same rows.
//! - [`DataMode::Unique`]: global row `i` belongs to the node whose
//!   execution segment owns `i`, by the same rule that splits arrivals
//!   ([`ExecutionSegment::owns`]): the segments of a plan tile the load, so
//!   each row is drawn by at most one node of the mesh, with no message
//!   between them. A node walks its own rows in order; when they run out,
//!   [`Exhausted`] says whether its draws fail ([`Exhausted::Stop`]: the
//!   node's share winds down) or start over at its first row
//!   ([`Exhausted::Wrap`]: rows repeat, on that node only).
//!
//! A node that takes over part of a lost node's share draws from its own
//! rows, not from the lost node's: no row is ever drawn on two nodes, and
//! its rows run out sooner.
//!
//! # Formats
//!
//! CSV with a header (each row becomes a JSON object of strings, keyed by
//! the header), a JSON array (each element is a row), or NDJSON (each
//! non-empty line is a row). A row crosses to the guest as JSON.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::module_name::check_name as check_sha256;
use crate::segment::ExecutionSegment;

/// The most data sets one run may ship.
pub const MAX_DATA_SETS: usize = 16;

/// The most bytes of all of a run's data files together.
pub const MAX_DATA_BYTES: usize = 64 << 20;

/// The most rows one data set may have.
pub const MAX_ROWS: u64 = 10_000_000;

/// The most bytes of one row, as JSON.
pub const MAX_ROW_BYTES: usize = 1 << 20;

/// The longest name of a data set.
pub const MAX_NAME_LEN: usize = 64;

/// How a data file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Comma-separated, with a header line.
    Csv,
    /// A JSON array.
    Json,
    /// One JSON value a line.
    Ndjson,
}

impl DataFormat {
    /// The format a file name's extension says, if it says one.
    pub fn of_file_name(name: &str) -> Option<DataFormat> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(DataFormat::Csv),
            "json" => Some(DataFormat::Json),
            "ndjson" | "jsonl" => Some(DataFormat::Ndjson),
            _ => None,
        }
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataFormat::Csv => "csv",
            DataFormat::Json => "json",
            DataFormat::Ndjson => "ndjson",
        })
    }
}

/// Which rows a node draws (`--data-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    /// Every node walks the whole set, over and over.
    #[default]
    Shared,
    /// Each row is drawn on at most one node of the mesh.
    Unique,
}

/// What a node does when its rows of a `unique` set run out
/// (`--data-exhausted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exhausted {
    /// Draws fail, and the node's share winds down: no iteration starts
    /// after the one whose draw failed.
    #[default]
    Stop,
    /// The node starts over at its first row.
    Wrap,
}

/// A data set as the run's spec names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSpec {
    /// What the scenario calls it (`users`).
    pub name: String,
    /// The sha256 of the file's bytes, lower-case hex.
    pub sha256: String,
    /// How the file is written.
    pub format: DataFormat,
    /// How many rows it has (checked against the bytes on every node).
    pub rows: u64,
    /// Which rows a node draws.
    #[serde(default)]
    pub mode: DataMode,
    /// What a node does when its rows run out.
    #[serde(default)]
    pub exhausted: Exhausted,
}

/// Why a data set, or its file, cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DataError(pub String);

/// Checks a run's data sets: their number, names and hashes.
pub fn check_specs(sets: &[DataSpec]) -> Result<(), DataError> {
    if sets.len() > MAX_DATA_SETS {
        return Err(DataError(format!(
            "{} data sets, more than the {MAX_DATA_SETS} one run may ship",
            sets.len()
        )));
    }
    for (i, set) in sets.iter().enumerate() {
        check_name(&set.name)?;
        if sets[..i].iter().any(|s| s.name == set.name) {
            return Err(DataError(format!(
                "two data sets are named {}: give each --data its own name",
                set.name
            )));
        }
        check_sha256(&set.sha256)
            .map_err(|_| DataError(format!("data set {} has no valid sha256", set.name)))?;
        if set.rows == 0 || set.rows > MAX_ROWS {
            return Err(DataError(format!(
                "data set {} has {} rows: a set needs 1 to {MAX_ROWS}",
                set.name, set.rows
            )));
        }
    }
    Ok(())
}

/// Checks a data set's name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits,
/// `_` or `-`.
pub fn check_name(name: &str) -> Result<(), DataError> {
    if crate::printable::is_plain_name(name, MAX_NAME_LEN) {
        Ok(())
    } else {
        Err(DataError(format!(
            "{:?} is not a data set name: use 1 to {MAX_NAME_LEN} letters, digits, '_' or '-' \
             (--data users=users.csv)",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// A data set's rows, each as JSON, in one buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    bytes: Vec<u8>,
    /// Where each row ends in `bytes`.
    ends: Vec<usize>,
}

impl Rows {
    /// Parses a data file. The error names the line (or element) and what
    /// is wrong with it.
    pub fn parse(format: DataFormat, bytes: &[u8]) -> Result<Rows, DataError> {
        let mut rows = Rows::default();
        match format {
            DataFormat::Csv => rows.parse_csv(bytes)?,
            DataFormat::Json => {
                let values: Vec<serde_json::Value> =
                    serde_json::from_slice(bytes).map_err(|e| {
                        DataError(format!(
                            "it is not a JSON array ({e}); a JSON data file holds one array of rows"
                        ))
                    })?;
                for (i, value) in values.iter().enumerate() {
                    rows.push(value, &format!("element {i}"))?;
                }
            }
            DataFormat::Ndjson => {
                for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let value: serde_json::Value = serde_json::from_slice(line)
                        .map_err(|e| DataError(format!("line {} is not JSON ({e})", i + 1)))?;
                    rows.push(&value, &format!("line {}", i + 1))?;
                }
            }
        }
        if rows.is_empty() {
            return Err(DataError(
                "it holds no rows (a CSV file needs a header line and at least one row)".into(),
            ));
        }
        Ok(rows)
    }

    fn parse_csv(&mut self, bytes: &[u8]) -> Result<(), DataError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(bytes);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| DataError(format!("its header line cannot be read ({e})")))?
            .iter()
            .map(str::to_owned)
            .collect();
        for (i, column) in header.iter().enumerate() {
            if header[..i].contains(column) {
                return Err(DataError(format!(
                    "its header names column {column:?} twice: rows are read by column name"
                )));
            }
        }
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                match e.kind() {
                    csv::ErrorKind::UnequalLengths { len, .. } => DataError(format!(
                        "line {line} has {len} field{}, and the header {}: give every row as many",
                        if *len == 1 { "" } else { "s" },
                        header.len()
                    )),
                    _ => DataError(format!("line {line} cannot be read ({e})")),
                }
            })?;
            let line = record.position().map_or(0, csv::Position::line);
            let object: serde_json::Map<String, serde_json::Value> = header
                .iter()
                .zip(record.iter())
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_owned())))
                .collect();
            self.push(&serde_json::Value::Object(object), &format!("line {line}"))?;
        }
        Ok(())
    }

    fn push(&mut self, value: &serde_json::Value, at: &str) -> Result<(), DataError> {
        if self.ends.len() as u64 >= MAX_ROWS {
            return Err(DataError(format!("it has more than {MAX_ROWS} rows")));
        }
        let start = self.bytes.len();
        serde_json::to_writer(&mut self.bytes, value)
            .map_err(|e| DataError(format!("{at} cannot be kept ({e})")))?;
        if self.bytes.len() - start > MAX_ROW_BYTES {
            return Err(DataError(format!(
                "{at} is {} bytes as JSON, more than the {MAX_ROW_BYTES} a row may have",
                self.bytes.len() - start
            )));
        }
        self.ends.push(self.bytes.len());
        Ok(())
    }

    /// How many rows.
    pub fn len(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Row `i`, as JSON.
    pub fn get(&self, i: u64) -> Option<&[u8]> {
        let i = usize::try_from(i).ok()?;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.bytes.get(start..end)
    }
}

/// What a draw got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// This row.
    Row(u64),
    /// This node's rows ran out ([`Exhausted::Stop`]).
    Exhausted,
}

/// Which row the next draw of one data set on one node gets (see the
/// module docs).
#[derive(Debug, Clone)]
pub struct Cursor {
    mode: DataMode,
    exhausted: Exhausted,
    segment: ExecutionSegment,
    rows: u64,
    /// The next global row to consider.
    next: u64,
    /// Draws that wrapped around (rows drawn again on this node).
    wraps: u64,
}

impl Cursor {
    /// A cursor over `rows` rows for a node whose share is `segment`.
    pub fn new(spec: &DataSpec, rows: u64, segment: ExecutionSegment) -> Cursor {
        Cursor {
            mode: spec.mode,
            exhausted: spec.exhausted,
            segment,
            rows,
            next: 0,
            wraps: 0,
        }
    }

    /// How many rows this node may draw before they repeat or run out.
    pub fn own_rows(&self) -> u64 {
        match self.mode {
            DataMode::Shared => self.rows,
            DataMode::Unique => self.segment.owned_among(self.rows),
        }
    }

    /// The next row.
    pub fn draw(&mut self) -> Draw {
        if self.rows == 0 {
            return Draw::Exhausted;
        }
        match self.mode {
            DataMode::Shared => {
                if self.next >= self.rows {
                    self.next = 0;
                    self.wraps += 1;
                }
                self.next += 1;
                Draw::Row(self.next - 1)
            }
            DataMode::Unique => {
                if self.own_rows() == 0 {
                    return Draw::Exhausted;
                }
                loop {
                    while self.next < self.rows && !self.segment.owns(self.next) {
                        self.next += 1;
                    }
                    if self.next < self.rows {
                        self.next += 1;
                        return Draw::Row(self.next - 1);
                    }
                    match self.exhausted {
                        Exhausted::Stop => return Draw::Exhausted,
                        Exhausted::Wrap => {
                            self.next = 0;
                            self.wraps += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: DataMode, exhausted: Exhausted) -> DataSpec {
        DataSpec {
            name: "users".into(),
            sha256: "0".repeat(64),
            format: DataFormat::Csv,
            rows: 0,
            mode,
            exhausted,
        }
    }

    #[test]
    fn csv_json_and_ndjson_become_json_rows_and_bad_files_say_where() {
        let csv = Rows::parse(DataFormat::Csv, b"user,pass\nann,\"a,1\"\nbob,b2\n").unwrap();
        assert_eq!(csv.len(), 2);
        assert_eq!(csv.get(0), Some(&br#"{"pass":"a,1","user":"ann"}"#[..]));
        assert_eq!(csv.get(1), Some(&br#"{"pass":"b2","user":"bob"}"#[..]));
        assert_eq!(csv.get(2), None);
        let json = Rows::parse(DataFormat::Json, br#"[{"id":1},"two",[3]]"#).unwrap();
        assert_eq!(json.get(1), Some(&br#""two""#[..]));
        assert_eq!(json.get(2), Some(&b"[3]"[..]));
        let nd = Rows::parse(DataFormat::Ndjson, b"{\"id\":1}\n\n{\"id\":2}\n").unwrap();
        assert_eq!(nd.len(), 2);
        for (format, bytes, says) in [
            (DataFormat::Csv, &b"a,b\n1,2\n3\n"[..], "line 3"),
            (DataFormat::Csv, b"a,a\n1,2\n", "twice"),
            (DataFormat::Csv, b"a,b\n", "no rows"),
            (DataFormat::Json, b"{\"a\":1}", "JSON array"),
            (DataFormat::Ndjson, b"{}\n{oops\n", "line 2"),
            (DataFormat::Json, b"[]", "no rows"),
        ] {
            let e = Rows::parse(format, bytes).unwrap_err().to_string();
            assert!(e.contains(says), "{format}: {e}");
        }
        assert_eq!(
            DataFormat::of_file_name("x/users.CSV"),
            Some(DataFormat::Csv)
        );
        assert_eq!(
            DataFormat::of_file_name("a.jsonl"),
            Some(DataFormat::Ndjson)
        );
        assert_eq!(DataFormat::of_file_name("a.txt"), None);
    }

    #[test]
    fn unique_rows_are_drawn_once_across_a_plan_and_run_out_or_wrap_per_node() {
        let rows = 1000;
        let tiling = ExecutionSegment::split(&[3, 1, 2, 5, 1]);
        let mut seen = vec![0u32; rows as usize];
        for segment in &tiling {
            let mut cursor = Cursor::new(&spec(DataMode::Unique, Exhausted::Stop), rows, *segment);
            let own = cursor.own_rows();
            let mut drawn = 0;
            while let Draw::Row(i) = cursor.draw() {
                seen[i as usize] += 1;
                drawn += 1;
            }
            assert_eq!(drawn, own);
            assert_eq!(cursor.draw(), Draw::Exhausted);
        }
        assert!(seen.iter().all(|&n| n == 1), "every row drawn exactly once");
        let mut wrap = Cursor::new(&spec(DataMode::Unique, Exhausted::Wrap), 10, tiling[1]);
        let first: Vec<Draw> = (0..wrap.own_rows()).map(|_| wrap.draw()).collect();
        let again: Vec<Draw> = (0..wrap.own_rows()).map(|_| wrap.draw()).collect();
        assert_eq!(first, again);
        assert_eq!(wrap.wraps, 1);
        let mut shared = Cursor::new(&spec(DataMode::Shared, Exhausted::Stop), 3, tiling[0]);
        let drawn: Vec<Draw> = (0..5).map(|_| shared.draw()).collect();
        assert_eq!(
            drawn,
            [0, 1, 2, 0, 1].map(Draw::Row).to_vec(),
            "shared walks every row and starts over"
        );
    }

    #[test]
    fn specs_are_checked_by_name_count_and_rows() {
        let mut ok = spec(DataMode::Unique, Exhausted::Stop);
        ok.rows = 3;
        assert!(check_specs(std::slice::from_ref(&ok)).is_ok());
        for bad in ["", "a b", "../x", &"n".repeat(65)] {
            let mut s = ok.clone();
            s.name = bad.into();
            assert!(check_specs(&[s]).is_err(), "{bad:?}");
        }
        assert!(check_specs(&[ok.clone(), ok.clone()]).is_err());
        let mut zero = ok.clone();
        zero.rows = 0;
        assert!(check_specs(&[zero]).is_err());
        let mut hash = ok;
        hash.sha256 = "xyz".into();
        assert!(check_specs(&[hash]).is_err());
    }
}
