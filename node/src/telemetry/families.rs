//! Every metric the node exports, defined once: its name, kind, unit and
//! meaning. Prometheus ([`super::prometheus`]) and OTLP ([`super::otlp`])
//! both write from these, so the two cannot drift apart.
//!
//! A [`Family::name`] is the OTLP name; Prometheus's adds the unit
//! (`_seconds`, `_bytes`) and, on counters, `_total`
//! ([`Family::prometheus_name`]), as a collector's Prometheus exporter
//! does with OTLP metrics.

/// How a metric's values behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only grows (cumulative).
    Counter,
    /// A distribution in [`super::DURATION_BOUNDS_S`] (cumulative).
    Histogram,
}

/// One metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The name, without unit or `_total` suffix.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its unit, in UCUM as OTLP wants it (`s`, `By`, `1`, `{request}`).
    pub unit: &'static str,
    /// What it means, one line.
    pub help: &'static str,
}

impl Family {
    /// The Prometheus name: `_seconds` or `_bytes` for those units, and
    /// `_total` on counters.
    pub fn prometheus_name(&self) -> String {
        let unit = match self.unit {
            "s" => "_seconds",
            "By" => "_bytes",
            _ => "",
        };
        let total = if self.kind == Kind::Counter {
            "_total"
        } else {
            ""
        };
        format!("{}{unit}{total}", self.name)
    }

    /// The Prometheus `TYPE`.
    pub fn prometheus_type(&self) -> &'static str {
        match self.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

const fn family(name: &'static str, kind: Kind, unit: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind,
        unit,
        help,
    }
}

/// This node (always 1), labelled with its peer id, name, region and
/// version; Prometheus only (OTLP says it in the resource).
pub const NODE_INFO: Family = family(
    "fusi_node_info",
    Kind::Gauge,
    "1",
    "This node: its peer id, name, region and version (always 1).",
);
/// When the node started; Prometheus only.
pub const NODE_START_TIME: Family = family(
    "fusi_node_start_time",
    Kind::Gauge,
    "s",
    "When this node started, Unix seconds.",
);
/// Members known.
pub const NODE_MEMBERS: Family = family(
    "fusi_node_members",
    Kind::Gauge,
    "{member}",
    "Members of the mesh this node knows, itself not included.",
);
/// Suspected members.
pub const NODE_SUSPECTS: Family = family(
    "fusi_node_suspect_members",
    Kind::Gauge,
    "{member}",
    "Members that missed their recent heartbeats.",
);
/// Open mesh connections.
pub const NODE_CONNECTED: Family = family(
    "fusi_node_connected_peers",
    Kind::Gauge,
    "{peer}",
    "Peers with an open connection to this node.",
);
/// Mesh bytes sent.
pub const NODE_MESH_SENT: Family = family(
    "fusi_node_mesh_sent",
    Kind::Counter,
    "By",
    "Bytes sent on mesh connections since the node started.",
);
/// Mesh bytes received.
pub const NODE_MESH_RECEIVED: Family = family(
    "fusi_node_mesh_received",
    Kind::Counter,
    "By",
    "Bytes received on mesh connections since the node started.",
);
/// CPU use.
pub const NODE_CPU: Family = family(
    "fusi_node_cpu_used_cores",
    Kind::Gauge,
    "1",
    "CPU use of this host over the last second, in cores (1 = one core busy).",
);
/// Open sockets.
pub const NODE_SOCKETS: Family = family(
    "fusi_node_open_sockets",
    Kind::Gauge,
    "{socket}",
    "Open sockets of this node.",
);
/// This node's VUs.
pub const NODE_VUS: Family = family(
    "fusi_node_vus",
    Kind::Gauge,
    "{vu}",
    "VUs of this node's shares of the runs now running.",
);
/// Runs by phase (label `phase`).
pub const NODE_RUNS: Family = family(
    "fusi_node_runs",
    Kind::Gauge,
    "{run}",
    "Runs this node knows, by phase.",
);
/// A recent run (always 1; labels `run`, `phase`, `executor`).
pub const RUN_INFO: Family = family(
    "fusi_run_info",
    Kind::Gauge,
    "1",
    "A recent run, with its phase and executor (always 1).",
);
/// Whether a run's counts are final (label `run`).
pub const RUN_SETTLED: Family = family(
    "fusi_run_settled",
    Kind::Gauge,
    "1",
    "1 once the run ended and every shard announced is merged here: its counts are final.",
);
/// Requests (labels `run`, `region`).
pub const RUN_REQUESTS: Family = family(
    "fusi_run_http_reqs",
    Kind::Counter,
    "{request}",
    "HTTP requests made by the run's nodes in the region, answered or not.",
);
/// Failed requests.
pub const RUN_FAILED_REQUESTS: Family = family(
    "fusi_run_http_req_failed",
    Kind::Counter,
    "{request}",
    "HTTP requests without an expected response.",
);
/// Iterations.
pub const RUN_ITERATIONS: Family = family(
    "fusi_run_iterations",
    Kind::Counter,
    "{iteration}",
    "Iterations that returned normally.",
);
/// Failed iterations.
pub const RUN_FAILED_ITERATIONS: Family = family(
    "fusi_run_iterations_failed",
    Kind::Counter,
    "{iteration}",
    "Iterations that failed (trap, timeout, ...).",
);
/// VUs of a region.
pub const RUN_VUS: Family = family(
    "fusi_run_vus",
    Kind::Gauge,
    "{vu}",
    "VUs active in the region's latest settled interval of the run.",
);
/// `http_req_duration`.
pub const RUN_DURATION: Family = family(
    "fusi_run_http_req_duration",
    Kind::Histogram,
    "s",
    "http_req_duration: from sending a request to the last byte of its response.",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_carry_the_unit_and_total() {
        assert_eq!(
            NODE_MESH_SENT.prometheus_name(),
            "fusi_node_mesh_sent_bytes_total"
        );
        assert_eq!(
            RUN_DURATION.prometheus_name(),
            "fusi_run_http_req_duration_seconds"
        );
        assert_eq!(RUN_REQUESTS.prometheus_name(), "fusi_run_http_reqs_total");
        assert_eq!(
            NODE_START_TIME.prometheus_name(),
            "fusi_node_start_time_seconds"
        );
        assert_eq!(NODE_MEMBERS.prometheus_name(), "fusi_node_members");
    }
}
