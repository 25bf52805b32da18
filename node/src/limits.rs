//! Operating-system limits that bite at many VUs: open files, local ports,
//! memory mappings and memory.
//!
//! Every VU holds its own connection, so a node running 20,000 VUs needs
//! more than 20,000 file descriptors and, against one target address, as
//! many local ports. Linux starts most processes with a soft open-file limit
//! of 1,024, far below what a load generator needs, so the node raises it as
//! far as it may when it starts (the soft limit up to the hard one; as root,
//! the hard one up to the kernel's `fs.nr_open`), as Go's runtime and most
//! servers do. What it cannot raise, it reports: each share of a run is
//! checked against the limits before its VUs start, so a run too big for
//! the host says so in a log line that names the fix, rather than failing
//! mid-run with "too many open files". The third limit is the kernel's
//! `vm.max_map_count` (65,530 by default): every VU takes about 7 memory
//! mappings, so about 9,300 VUs fill it. The last is memory: a VU of a
//! small scenario holds about 40 KiB, so 100,000 VUs want about 4.6 GiB
//! with the node's own, checked against the host's available memory and
//! the node's cgroup, whichever is lower; past it the kernel's out-of-memory
//! killer would end the node mid-run. The node does not change kernel
//! settings itself; it says which one to raise.

use std::io;

use crate::engine::module::{ADDRESS_SPACE, MemoryLayout};

/// Descriptors a node keeps for itself beyond one per VU: the mesh, the
/// API, the data directory, the runtime.
const RESERVED_FDS: u64 = 256;

/// The kernel's ceiling for a hard open-file limit.
const NR_OPEN: &str = "/proc/sys/fs/nr_open";

/// The range of local ports for outgoing connections.
const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The most memory mappings a process may have.
const MAX_MAP_COUNT: &str = "/proc/sys/vm/max_map_count";

/// Memory mappings one VU takes: its fiber stack and guard, its linear
/// memory, the copy-on-write image of its data, and small maps of its
/// instance (measured: about 7 per VU in `/proc/PID/smaps` at 3,000 VUs).
pub const MAPS_PER_VU: u64 = 8;

/// Mappings a node takes besides its VUs.
const RESERVED_MAPS: u64 = 2_000;

/// Memory a VU of a small scenario holds while it sleeps with its
/// connection open: about 30 KiB resident and 8.5 KiB of page tables
/// measured for the hello scenario (docs/benchmarks.md, "100,000 VUs"),
/// rounded up, with room for the kernel's side of the socket; a scenario
/// that keeps more data holds more.
pub const MEMORY_PER_VU: u64 = 48 << 10;

/// Memory a node takes besides its VUs: the runtime, the compiled module,
/// the recorder, the mesh.
const RESERVED_MEMORY: u64 = 64 << 20;

/// What the kernel says is available without swapping.
const MEMINFO: &str = "/proc/meminfo";

/// The open-file limit before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit now.
    pub hard: u64,
}

fn get_nofile() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        Ok(limit)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_nofile(limit: libc::rlimit) -> io::Result<()> {
    // SAFETY: setrlimit reads one rlimit through a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises this process's open-file limit as far as it may: the hard limit
/// up to `fs.nr_open` where the process is allowed to (root), then the soft
/// limit up to the hard one.
///
/// # Errors
///
/// Reading the limit failed; a refused raise is not an error (the limits
/// stay as they were and [`check_vus`] reports them).
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let start = get_nofile()?;
    let ceiling = std::fs::read_to_string(NR_OPEN)
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    if let Some(ceiling) = ceiling
        && start.rlim_max != libc::RLIM_INFINITY
        && start.rlim_max < ceiling
    {
        // Refused without privilege: the hard limit then stays.
        let _ = set_nofile(libc::rlimit {
            rlim_cur: start.rlim_cur,
            rlim_max: ceiling,
        });
    }
    let now = get_nofile()?;
    if now.rlim_cur < now.rlim_max {
        let _ = set_nofile(libc::rlimit {
            rlim_cur: now.rlim_max,
            rlim_max: now.rlim_max,
        });
    }
    let end = get_nofile()?;
    Ok(OpenFiles {
        before: start.rlim_cur,
        soft: end.rlim_cur,
        hard: end.rlim_max,
    })
}

/// The local ports for outgoing connections, from `ip_local_port_range`.
fn local_ports() -> Option<u64> {
    let text = std::fs::read_to_string(PORT_RANGE).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
    let (low, high) = (parts.next()??, parts.next()??);
    (high >= low).then(|| high - low + 1)
}

/// The kernel's limit on memory mappings per process, when readable.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string(MAX_MAP_COUNT)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The `vm.max_map_count` that `vus` VUs need.
pub fn maps_needed(vus: u64) -> u64 {
    vus.saturating_mul(MAPS_PER_VU)
        .saturating_add(RESERVED_MAPS)
}

/// The memory a node running `vus` VUs needs, by [`MEMORY_PER_VU`].
pub fn memory_needed(vus: u64) -> u64 {
    vus.saturating_mul(MEMORY_PER_VU)
        .saturating_add(RESERVED_MEMORY)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

/// What a cgroup v2 still lets its processes take: `memory.max` less
/// `memory.current`; `None` without a limit (`max`).
fn cgroup_room(max: &str, current: &str) -> Option<u64> {
    let max = max.trim().parse::<u64>().ok()?;
    let current = current.trim().parse::<u64>().ok()?;
    Some(max.saturating_sub(current))
}

/// This process's cgroup (v2) directory.
fn cgroup_dir() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')))
}

/// The memory this process may still take, and what says so: the lower of
/// the host's available memory and its cgroup's room, when either is
/// readable.
fn memory_room() -> Option<(u64, &'static str)> {
    let host = std::fs::read_to_string(MEMINFO)
        .ok()
        .and_then(|m| mem_available(&m))
        .map(|b| (b, "MemAvailable in /proc/meminfo"));
    let cgroup = cgroup_dir().and_then(|dir| {
        let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
        let current = std::fs::read_to_string(dir.join("memory.current")).ok()?;
        cgroup_room(&max, &current).map(|b| (b, "its cgroup's memory.max"))
    });
    match (host, cgroup) {
        (Some(h), Some(c)) => Some(if c.0 < h.0 { c } else { h }),
        (h, c) => h.or(c),
    }
}

/// Whether an error reads like one of the limits [`check_vus`] warns of
/// (out of files, memory or mappings), so the warnings belong with it.
pub fn may_be_a_limit(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    [
        "too many open files",
        "cannot allocate memory",
        "os error 24",
        "os error 12",
    ]
    .iter()
    .any(|sign| error.contains(sign))
}

/// The address space this process may map, and what says so: the
/// architecture's user space, or `ulimit -v` (`RLIMIT_AS`) when lower.
pub fn address_space() -> (u64, &'static str) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusive pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    if got && limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < ADDRESS_SPACE {
        (limit.rlim_cur, "its `ulimit -v`")
    } else {
        (ADDRESS_SPACE, "a process on x86-64 Linux")
    }
}

/// What stands in the way of running `vus` VUs laid out as `layout` on
/// this host: one warning per limit that is too low, each naming the limit
/// and how to raise it. Empty when nothing does.
pub fn check_vus(vus: u64, layout: MemoryLayout) -> Vec<String> {
    let mut warnings = Vec::new();
    let (space, source) = address_space();
    if layout.address_space(vus) > space {
        let per_vu = layout.address_space_per_vu();
        warnings.push(format!(
            "{vus} VUs reserve about {} GiB of address space ({} MiB each: the linear memory \
             --vu-memory-mib allows, its guard pages and a fiber stack), but this process may \
             map {} GiB ({source}); VUs beyond about {} fail to start with \"Cannot allocate \
             memory\". Lower --vu-memory-mib, raise `ulimit -v`, or spread the VUs over more nodes",
            layout.address_space(vus) >> 30,
            per_vu >> 20,
            space >> 30,
            space.saturating_sub(MemoryLayout::RESERVED_ADDRESS_SPACE) / per_vu
        ));
    }
    let needed = vus.saturating_add(RESERVED_FDS);
    if let Ok(limit) = get_nofile()
        && limit.rlim_cur != libc::RLIM_INFINITY
        && limit.rlim_cur < needed
    {
        warnings.push(format!(
            "{vus} VUs need about {needed} open files (one connection each), but this \
             process may open only {} (hard limit {}); VUs beyond it fail to connect with \
             \"too many open files\". Raise the limit before starting the node: \
             `ulimit -n {needed}` in its shell, or LimitNOFILE={needed} in its systemd unit",
            limit.rlim_cur, limit.rlim_max
        ));
    }
    if let Some(maps) = max_map_count()
        && maps < maps_needed(vus)
    {
        let needed = maps_needed(vus);
        warnings.push(format!(
            "{vus} VUs need about {needed} memory mappings ({MAPS_PER_VU} each), but \
             vm.max_map_count is {maps}; VUs beyond about {} fail to start with \
             \"Cannot allocate memory\". Raise it as root: `sysctl -w vm.max_map_count={needed}`",
            maps.saturating_sub(RESERVED_MAPS) / MAPS_PER_VU
        ));
    }
    let needed = memory_needed(vus);
    if let Some((room, source)) = memory_room()
        && room < needed
    {
        warnings.push(format!(
            "{vus} VUs need about {} MiB of memory (about {} KiB a VU of a small scenario, \
             more for one that keeps more data, and {} MiB for the node), but this process \
             may take only {} MiB more ({source}); past that the kernel's out-of-memory \
             killer ends the node. Run fewer VUs here (spread them over more nodes) or give \
             the node more memory",
            needed >> 20,
            MEMORY_PER_VU >> 10,
            RESERVED_MEMORY >> 20,
            room >> 20
        ));
    }
    if let Some(ports) = local_ports()
        && vus > ports
    {
        warnings.push(format!(
            "{vus} VUs open {vus} connections, but this host has only {ports} local ports \
             for connections to one target address (net.ipv4.ip_local_port_range); \
             connections beyond that fail. Widen the range (`sysctl -w \
             net.ipv4.ip_local_port_range=\"1024 65535\"`) or spread the VUs over more nodes"
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = get_nofile().expect("getrlimit");
        let raised = raise_open_files().expect("raise");
        assert_eq!(raised.before, before.rlim_cur);
        assert!(raised.soft >= before.rlim_cur);
        assert!(raised.hard >= before.rlim_max);
        assert_eq!(
            raised.soft, raised.hard,
            "the soft limit is raised to the hard one"
        );
    }

    #[test]
    fn a_small_run_fits_and_a_huge_one_is_reported_with_its_fix() {
        let small = check_vus(10, MemoryLayout::Unchecked);
        assert!(small.is_empty(), "{small:?}");
        let warnings = check_vus(u64::MAX / 2, MemoryLayout::Bounded(64 << 20));
        assert!(
            warnings.iter().any(|w| w.contains("local ports")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("vm.max_map_count")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("MiB of memory") && w.contains("more nodes")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("address space") && w.contains("--vu-memory-mib")),
            "{warnings:?}"
        );
        assert!(warnings.iter().all(|w| w.contains("VUs")));
        assert!(
            warnings.iter().all(|w| !w.contains("  ")),
            "one space between words: {warnings:?}"
        );
    }

    #[test]
    fn address_space_is_counted_by_the_layout_a_share_gets() {
        let limit = 64 << 20;
        let layout = |vus: u64| MemoryLayout::for_share(vus, limit, ADDRESS_SPACE);
        assert_eq!(
            layout(MemoryLayout::UNCHECKED_MAX_VUS),
            MemoryLayout::Unchecked
        );
        assert_eq!(
            layout(MemoryLayout::UNCHECKED_MAX_VUS + 1),
            MemoryLayout::Bounded(limit)
        );
        // 4 GiB reserved a VU: 20,000 fit, 40,000 would not (VU 32,232
        // failed to start, measured), so the layout changes before.
        assert!(MemoryLayout::Unchecked.address_space(20_000) <= ADDRESS_SPACE);
        assert!(MemoryLayout::Unchecked.address_space(40_000) > ADDRESS_SPACE);
        for vus in [20_000, 100_000, 1_000_000] {
            assert!(layout(vus).address_space(vus) <= ADDRESS_SPACE, "{vus}");
        }
        // Under `ulimit -v 16G`, even a few VUs get bounded memories.
        let small = 16 << 30;
        assert_eq!(
            MemoryLayout::for_share(10, limit, small),
            MemoryLayout::Bounded(limit)
        );
        assert!(MemoryLayout::Bounded(limit).address_space(10) <= small);
        assert_eq!(
            MemoryLayout::for_share(0, limit, small),
            MemoryLayout::Unchecked,
            "setup's instance alone"
        );
        assert_eq!(
            MemoryLayout::for_share(1, limit, small),
            MemoryLayout::Bounded(limit),
            "a VU and setup's instance: 8 GiB reserved, and 8.1 for them"
        );
        // A VU that may have 4 GiB reserves 4 GiB, whichever the layout.
        let big = MemoryLayout::for_share(100_000, 4 << 30, ADDRESS_SPACE);
        assert!(big.address_space(100_000) > ADDRESS_SPACE);
        let said = check_vus(100_000, big);
        assert!(
            said.iter()
                .any(|w| w.contains("address space") && w.contains("Lower --vu-memory-mib")),
            "{said:?}"
        );
    }

    #[test]
    fn available_memory_is_read_from_meminfo_and_the_cgroup() {
        let meminfo = "MemTotal:       24683784 kB\nMemFree:         1000 kB\n\
                       MemAvailable:   20000000 kB\nBuffers: 1 kB\n";
        assert_eq!(mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(cgroup_room("4294967296\n", "1073741824\n"), Some(3 << 30));
        assert_eq!(cgroup_room("max\n", "1073741824\n"), None);
        assert_eq!(cgroup_room("100", "200"), Some(0));
        // 100,000 VUs: about 4.6 GiB with the node's own.
        assert_eq!(memory_needed(100_000) >> 20, 4751);
    }

    #[test]
    fn only_errors_of_a_limit_get_the_warnings() {
        assert!(may_be_a_limit(
            "VU 9358: cannot instantiate the scenario: Cannot allocate memory (os error 12)"
        ));
        assert!(may_be_a_limit("connect: Too many open files (os error 24)"));
        assert!(!may_be_a_limit("the module is not valid wasm"));
    }
}
