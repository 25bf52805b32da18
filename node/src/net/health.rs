//! This process's load, for heartbeats: CPU use and open sockets, read from
//! `/proc/self` on Linux (elsewhere both read as zero).

use std::time::Instant;

use crate::core::mesh::Health;

/// Linux reports process CPU time in USER_HZ ticks, 100 per second on every
/// architecture it supports.
const TICKS_PER_SECOND: f64 = 100.0;

/// Samples CPU use between two calls.
#[derive(Debug)]
pub struct HealthProbe {
    last: Option<(Instant, u64)>,
}

impl HealthProbe {
    /// A probe whose first sample reports no CPU use.
    pub fn new() -> HealthProbe {
        HealthProbe {
            last: cpu_ticks().map(|t| (Instant::now(), t)),
        }
    }

    /// CPU use since the last sample, and open sockets now.
    pub fn sample(&mut self) -> Health {
        let now = Instant::now();
        let ticks = cpu_ticks();
        let cpu = match (self.last, ticks) {
            (Some((then, before)), Some(after)) => {
                let wall = now.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    (after.saturating_sub(before) as f64 / TICKS_PER_SECOND / wall) as f32
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        if let Some(t) = ticks {
            self.last = Some((now, t));
        }
        Health {
            cpu,
            sockets: open_sockets(),
        }
    }
}

impl Default for HealthProbe {
    fn default() -> Self {
        HealthProbe::new()
    }
}

/// User plus system CPU ticks of this process.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn open_sockets() -> u32 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|target| target.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false)
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_its_own_sockets_and_cpu() {
        let mut probe = HealthProbe::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut spin = 0u64;
        let start = Instant::now();
        while start.elapsed().as_millis() < 200 {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        let health = probe.sample();
        if cfg!(target_os = "linux") {
            // Other tests open and close sockets in parallel: at least ours is seen.
            assert!(health.sockets >= 1, "{health:?}");
            assert!(health.cpu > 0.0, "{health:?} after {spin} spins");
        }
        drop(listener);
    }
}
