//! Scale by simulation: `fusi-node simulate` runs the sans-IO core of many
//! nodes under virtual time; every round uses another seed. The table
//! gives every figure of its JSON output, median and spread over rounds.

use std::time::Duration;

use anyhow::Context as _;

use super::Setup;
use super::proc::run_ok;
use super::spread_cell;

/// Runs the benchmark.
pub fn run(setup: &Setup) -> anyhow::Result<()> {
    let nodes = setup.nodes.unwrap_or(1_000);
    println!("sim: fusi-node simulate --nodes {nodes}, one seed per round");
    let mut rounds: Vec<Vec<(String, f64)>> = Vec::new();
    for round in 0..setup.rounds {
        let mut cmd = std::process::Command::new(&setup.node_bin);
        cmd.args(["simulate", "--json", "--nodes"])
            .arg(nodes.to_string())
            .arg("--seed")
            .arg((u64::from(round) + 1).to_string());
        let done = run_ok(cmd, Duration::from_secs(1800), "fusi-node simulate")?;
        let json: serde_json::Value =
            serde_json::from_str(&done.stdout).context("fusi-node simulate printed no JSON")?;
        let mut leaves = Vec::new();
        flatten("", &json, &mut leaves);
        eprintln!(
            "round {}: {} s of wall time",
            round + 1,
            super::num(done.took.as_secs_f64(), 1)
        );
        leaves.push(("wall time, s".to_owned(), done.took.as_secs_f64()));
        rounds.push(leaves);
    }
    println!();
    println!("| figure | median (min–max) of {} seeds |", rounds.len());
    println!("|---|---|");
    if let Some(first) = rounds.first() {
        for (name, _) in first {
            let values: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
                .collect();
            println!("| {name} | {} |", spread_cell(&values, 2));
        }
    }
    Ok(())
}

/// Every number in `value`, named by its path (`membership.virtual_s`).
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_owned(), x));
            }
        }
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_named_by_their_path() {
        let json = serde_json::json!({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": [3]});
        let mut out = Vec::new();
        flatten("", &json, &mut out);
        assert_eq!(
            out,
            vec![
                ("a".to_owned(), 1.0),
                ("b.c".to_owned(), 2.5),
                ("e[0]".to_owned(), 3.0)
            ]
        );
    }
}
