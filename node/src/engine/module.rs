//! Loading a scenario: validate the bytes, compile once, check the ABI.
//!
//! A module is compiled once per run into an [`InstancePre`] (imports already
//! resolved), and every VU instantiates from it in microseconds. Everything a
//! user can get wrong about a module is caught here, before any VU starts,
//! with an error that says what is wrong and what to do.
//!
//! The thresholds a module declares (the [`abi::THRESHOLDS_SECTION`] custom
//! section) are read by walking the binary's sections by hand, without
//! compiling it, so a node can check them as soon as the bytes arrive; the
//! walk is bounded by the input and never panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fusi_sdk::abi::{self, MetricKind, exports};
use wasmtime::{Config, Engine, ExternType, InstancePre, Linker, Module, ValType};

use super::host;
use super::vu::VuState;
use crate::core::module_name::sha256_hex;

/// How often the epoch advances: the granularity of iteration timeouts and of
/// the time slices a CPU-bound scenario gets before it must yield.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Where a VU's linear memory lies in the node's address space, chosen
/// for each share by how many VUs it runs.
///
/// wasmtime reserves, by default, 4 GiB of address space for each linear
/// memory and 32 MiB of guard on either side of it. Every 32-bit address a
/// scenario forms then lands inside the reservation, and one past the
/// memory's end faults, so the compiled code checks no bounds. That costs
/// 4.06 GiB of address space a VU, and a process on x86-64 Linux has
/// 128 TiB: about 32,000 VUs, after which a VU fails to start with "mmap
/// failed to reserve ... Cannot allocate memory" (measured: VU 32,232),
/// whatever memory the host has. A share of more than
/// [`MemoryLayout::UNCHECKED_MAX_VUS`] VUs therefore reserves only the
/// memory a VU may have (`--vu-memory-mib`), fixed in place, and its code
/// checks every access against that bound: about 1,700 more guest
/// instructions for each request of the hello scenario, a quarter of its
/// guest's and 5 % of the request's (docs/benchmarks.md, "100,000 VUs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLayout {
    /// 4 GiB reserved a memory; no bounds checks.
    Unchecked,
    /// This many bytes reserved a memory, which never moves or grows past
    /// them; every access checked.
    Bounded(u64),
}

/// wasmtime's guard regions around a linear memory: 32 MiB before it and
/// 32 MiB after it (its defaults, which this module leaves as they are).
const MEMORY_GUARDS: u64 = 64 << 20;

/// What one process may map on x86-64 Linux with 4-level page tables.
pub const ADDRESS_SPACE: u64 = 1 << 47;

impl MemoryLayout {
    /// The most VUs of a share laid out [`MemoryLayout::Unchecked`]: 81 of
    /// the 128 TiB, which leaves room for VUs taken over from a lost node
    /// and for everything else the node maps.
    pub const UNCHECKED_MAX_VUS: u64 = 20_000;

    /// The address space a node keeps for itself beyond its VUs': its
    /// binary, heap, allocator arenas and thread stacks, with room to spare.
    pub const RESERVED_ADDRESS_SPACE: u64 = 8 << 30;

    /// The layout for a share of `vus` VUs that may each have
    /// `memory_limit` bytes of linear memory, in a process that may map
    /// `space` bytes (less than [`ADDRESS_SPACE`] under `ulimit -v`):
    /// unchecked for at most [`Self::UNCHECKED_MAX_VUS`] VUs, when they and
    /// the instance that runs `setup` and `teardown` fit so.
    pub fn for_share(vus: u64, memory_limit: u64, space: u64) -> MemoryLayout {
        let unchecked = MemoryLayout::Unchecked;
        if vus <= Self::UNCHECKED_MAX_VUS && unchecked.address_space(vus.saturating_add(1)) <= space
        {
            unchecked
        } else {
            MemoryLayout::Bounded(memory_limit)
        }
    }

    /// The address space `vus` VUs laid out so reserve, with the node's own.
    pub fn address_space(self, vus: u64) -> u64 {
        vus.saturating_mul(self.address_space_per_vu())
            .saturating_add(Self::RESERVED_ADDRESS_SPACE)
    }

    /// The address space one VU reserves: its memory with its guards, and
    /// its fiber stack.
    pub fn address_space_per_vu(self) -> u64 {
        let memory = match self {
            MemoryLayout::Unchecked => 4 << 30,
            MemoryLayout::Bounded(bytes) => bytes,
        };
        memory
            .saturating_add(MEMORY_GUARDS)
            .saturating_add(super::stack::FIBER_STACK as u64)
    }

    fn configure(self, config: &mut Config) {
        if let MemoryLayout::Bounded(bytes) = self {
            config.memory_reservation(bytes);
            config.memory_may_move(false);
            config.memory_reservation_for_growth(0);
        }
    }
}

/// Why a module cannot run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly.
    #[error(
        "not a WebAssembly module (the file does not start with \\0asm); build the scenario with \
         `fusi-node build DIR` or `cargo build --release --target wasm32-wasip1` and pass the .wasm file"
    )]
    NotWasm,
    /// wasmtime rejected it.
    #[error("the module does not compile: {0}")]
    Compile(String),
    /// No `iteration` export.
    #[error(
        "the module exports no `iteration` function; a scenario must define one, for example with \
         `fusi_sdk::scenario!(iteration = my_iteration)`"
    )]
    NoIteration,
    /// No export of the function a scenario's `exec` names.
    #[error(
        "scenario {scenario:?} runs `{exec}`, which the module does not export (it exports: {known}); \
         export it, for example with `fusi_sdk::scenario!(exec {exec} = my_function)`, or fix the \
         scenario's `exec`"
    )]
    NoExec {
        /// The scenario.
        scenario: String,
        /// The function it names.
        exec: String,
        /// The functions the module exports that an iteration may call.
        known: String,
    },
    /// An entry point with the wrong signature.
    #[error("the export `{0}` must be a function with no parameters and no results")]
    BadEntryPoint(String),
    /// An ABI version export of the wrong type.
    #[error(
        "the export `{}` must be a function with no parameters that returns an i32",
        exports::ABI_VERSION
    )]
    BadAbiVersion,
    /// No ABI version export.
    #[error(
        "the module exports no `{}` function, so it was not built with the fusi SDK (or declares no ABI \
         version); use `fusi_sdk::scenario!`, or see docs/scenario-abi.md",
        exports::ABI_VERSION
    )]
    NoAbiVersion,
    /// An ABI this node does not speak.
    #[error(
        "the module was built for scenario ABI version {0}, but this node speaks versions {oldest} to {ours}; \
         rebuild the scenario with a fusi-sdk that matches this node",
        oldest = abi::OLDEST_ABI_VERSION,
        ours = abi::ABI_VERSION
    )]
    AbiMismatch(i64),
    /// An import this node does not provide.
    #[error("{0}")]
    Import(String),
    /// Running the module's own checks failed.
    #[error("the module failed while starting: {0}")]
    Start(String),
}

/// Why a module's declared thresholds cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclaredThresholdsError {
    /// The bytes are not a WebAssembly module.
    #[error(
        "not a WebAssembly module (the file does not start with \\0asm); pass the .wasm file that \
         `fusi-node build DIR` or `cargo build --release --target wasm32-wasip1` wrote"
    )]
    NotWasm,
    /// The section structure is broken.
    #[error("the module is malformed at byte {offset}: {what}; rebuild the scenario")]
    Malformed {
        /// Where the problem is.
        offset: usize,
        /// What is wrong there.
        what: &'static str,
    },
    /// The thresholds are not UTF-8 text.
    #[error(
        "the module's `{}` section is not UTF-8 text; declare thresholds with `fusi_sdk::thresholds!`",
        abi::THRESHOLDS_SECTION
    )]
    NotUtf8,
    /// More threshold text than allowed.
    #[error(
        "the module declares more than {} bytes of thresholds; keep them short, or give some with --threshold",
        abi::MAX_THRESHOLDS_BYTES
    )]
    TooLarge,
    /// More thresholds than allowed.
    #[error(
        "the module declares {0} thresholds; at most {max} are allowed",
        max = abi::MAX_DECLARED_THRESHOLDS
    )]
    TooMany(usize),
    /// The declared metrics are unusable.
    #[error(
        "the module's `{section}` section is unusable: {0}; declare metrics with `fusi_sdk::metrics!`",
        section = abi::METRICS_SECTION
    )]
    Metrics(String),
}

/// The thresholds a module declares in its [`abi::THRESHOLDS_SECTION`]
/// custom sections: their text in order, split into lines, trimmed, blank
/// lines dropped. A module with none declares none. The thresholds are not
/// parsed here (see [`crate::core::threshold::parse_all`]).
pub fn declared_thresholds(wasm: &[u8]) -> Result<Vec<String>, DeclaredThresholdsError> {
    let text = custom_sections(wasm, abi::THRESHOLDS_SECTION, abi::MAX_THRESHOLDS_BYTES)?
        .ok_or(DeclaredThresholdsError::TooLarge)?;
    let text = String::from_utf8(text).map_err(|_| DeclaredThresholdsError::NotUtf8)?;
    let list: Vec<String> = text
        .split('\n')
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if list.len() > abi::MAX_DECLARED_THRESHOLDS {
        return Err(DeclaredThresholdsError::TooMany(list.len()));
    }
    Ok(list)
}

/// The custom metrics a module declares in its [`abi::METRICS_SECTION`]
/// sections (`fusi_sdk::metrics!`): one `KIND NAME` a line, kind
/// `counter`, `rate`, `trend` or `gauge`, sorted by name. A module that
/// declares none gives an empty list: its metrics are then known only
/// once recorded.
pub fn declared_metrics(wasm: &[u8]) -> Result<Vec<(MetricKind, String)>, DeclaredThresholdsError> {
    let bad = |problem: String| DeclaredThresholdsError::Metrics(problem);
    let text = custom_sections(wasm, abi::METRICS_SECTION, abi::MAX_THRESHOLDS_BYTES)?
        .ok_or_else(|| bad(format!("over {} bytes", abi::MAX_THRESHOLDS_BYTES)))?;
    let text = String::from_utf8(text).map_err(|_| bad("not UTF-8 text".into()))?;
    let mut list = Vec::new();
    for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
        let (kind, name) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("{line:?} is not `KIND NAME`")))?;
        let kind = match kind {
            "counter" => MetricKind::Counter,
            "rate" => MetricKind::Rate,
            "trend" => MetricKind::Trend,
            "gauge" => MetricKind::Gauge,
            other => return Err(bad(format!("{other:?} is not a metric kind"))),
        };
        let name = name.trim();
        if !crate::core::metrics::valid_metric_name(name) {
            return Err(bad(format!("{name:?} is not a metric name")));
        }
        list.push((kind, name.to_owned()));
    }
    list.sort_by(|a, b| a.1.cmp(&b.1));
    list.dedup();
    Ok(list)
}

/// The payloads of the custom sections called `name`, in order, one after
/// the other; `None` when they hold more than `max` bytes.
fn custom_sections(
    wasm: &[u8],
    name: &str,
    max: usize,
) -> Result<Option<Vec<u8>>, DeclaredThresholdsError> {
    let malformed = |offset, what| DeclaredThresholdsError::Malformed { offset, what };
    if !wasm.starts_with(b"\0asm") {
        return Err(DeclaredThresholdsError::NotWasm);
    }
    match wasm.get(4..8) {
        Some([1, 0, 0, 0]) => {}
        Some(_) => {
            return Err(malformed(
                4,
                "not a version 1 core module (a component, or a newer format)",
            ));
        }
        None => return Err(malformed(wasm.len(), "the header is cut short")),
    }
    let mut text = Vec::new();
    let mut pos = 8;
    while let Some(&id) = wasm.get(pos) {
        let (size, start) = read_u32(wasm, pos + 1, wasm.len())?;
        let end = start
            .checked_add(size as usize)
            .filter(|&end| end <= wasm.len())
            .ok_or_else(|| malformed(start, "a section runs past the end of the module"))?;
        if id == 0 {
            let (name_len, name_start) = read_u32(wasm, start, end)?;
            let name_end = name_start
                .checked_add(name_len as usize)
                .filter(|&e| e <= end)
                .ok_or_else(|| {
                    malformed(name_start, "a custom section's name runs past the section")
                })?;
            if wasm.get(name_start..name_end) == Some(name.as_bytes()) {
                let payload = wasm.get(name_end..end).unwrap_or_default();
                if text.len() + payload.len() > max {
                    return Ok(None);
                }
                text.extend_from_slice(payload);
            }
        }
        pos = end;
    }
    Ok(Some(text))
}

/// Reads an unsigned LEB128 `u32` at `pos`, not reading at or past `limit`.
/// Returns the value and the position after it.
fn read_u32(
    bytes: &[u8],
    mut pos: usize,
    limit: usize,
) -> Result<(u32, usize), DeclaredThresholdsError> {
    let malformed = |offset, what| DeclaredThresholdsError::Malformed { offset, what };
    let mut value = 0u32;
    for shift in [0, 7, 14, 21, 28] {
        let byte = match bytes.get(pos) {
            Some(&b) if pos < limit => b,
            _ => return Err(malformed(pos, "a number is cut short")),
        };
        pos += 1;
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            if shift == 28 && byte > 0x0f {
                return Err(malformed(pos - 1, "a number is too large"));
            }
            return Ok((value, pos));
        }
    }
    Err(malformed(pos, "a number is longer than 5 bytes"))
}

/// A compiled scenario, ready to instantiate VUs.
pub struct ScenarioModule {
    engine: Engine,
    pre: InstancePre<VuState>,
    sha256: String,
    has_setup: bool,
    has_init: bool,
    has_teardown: bool,
    /// The functions an iteration may call (`iteration`, and those a
    /// scenario's `exec` names).
    entries: std::collections::BTreeSet<String>,
    ticker: Arc<AtomicBool>,
}

impl Drop for ScenarioModule {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
    }
}

impl ScenarioModule {
    /// Validates and compiles a module for VUs laid out as `layout`. Does
    /// not run any of its code.
    pub fn compile(bytes: &[u8], layout: MemoryLayout) -> Result<ScenarioModule, LoadError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm);
        }
        let mut config = Config::new();
        config.epoch_interruption(true);
        // wasmtime's defaults, named: a scenario's frames stay within
        // MAX_WASM_STACK of a fiber stack of FIBER_STACK, which is what lets
        // a sleeping VU give back the pages below it (`engine::stack`).
        config.max_wasm_stack(super::stack::MAX_WASM_STACK);
        config.async_stack_size(super::stack::FIBER_STACK);
        layout.configure(&mut config);
        let engine = Engine::new(&config).map_err(|e| LoadError::Compile(e.to_string()))?;
        let module =
            Module::new(&engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;

        let has = |name: &str| -> Result<bool, LoadError> {
            match module.get_export(name) {
                None => Ok(false),
                Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {
                    Ok(true)
                }
                Some(_) => Err(LoadError::BadEntryPoint(name.to_owned())),
            }
        };
        // Every function a scenario's `exec` may name: no parameters, no
        // results, and not an entry point fusi calls itself.
        let lifecycle = [exports::SETUP, exports::INIT, exports::TEARDOWN];
        let mut entries = std::collections::BTreeSet::new();
        for export in module.exports() {
            if let ExternType::Func(f) = export.ty()
                && f.params().len() == 0
                && f.results().len() == 0
                && !lifecycle.contains(&export.name())
            {
                entries.insert(export.name().to_owned());
            }
        }
        has(exports::ITERATION)?;
        if entries.is_empty() {
            return Err(LoadError::NoIteration);
        }
        let has_setup = has(exports::SETUP)?;
        let has_init = has(exports::INIT)?;
        let has_teardown = has(exports::TEARDOWN)?;
        match module.get_export(exports::ABI_VERSION) {
            Some(ExternType::Func(f))
                if f.params().len() == 0
                    && f.results().len() == 1
                    && matches!(f.results().next(), Some(ValType::I32)) => {}
            Some(_) => return Err(LoadError::BadAbiVersion),
            None => return Err(LoadError::NoAbiVersion),
        }
        if !matches!(
            module.get_export(exports::MEMORY),
            Some(ExternType::Memory(_))
        ) {
            return Err(LoadError::Compile(
                "the module exports no memory named `memory`".into(),
            ));
        }

        let mut linker: Linker<VuState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut VuState| &mut s.wasi)
            .map_err(|e| LoadError::Compile(e.to_string()))?;
        host::add_to_linker(&mut linker).map_err(|e| LoadError::Compile(e.to_string()))?;
        // Version 1 modules import `http_request` with two parameters; say so
        // instead of reporting a mismatched import.
        let v1 = module.imports().any(|i| {
            i.module() == abi::IMPORT_MODULE
                && i.name() == abi::imports::HTTP_REQUEST
                && matches!(i.ty(), ExternType::Func(f) if f.params().len() == 2)
        });
        if v1 {
            return Err(LoadError::AbiMismatch(1));
        }
        let pre = linker.instantiate_pre(&module).map_err(|e| {
            let unknown = module
                .imports()
                .find(|i| i.module() == abi::IMPORT_MODULE && !host::IMPORTS.contains(&i.name()))
                .map(|i| format!("{}.{}", i.module(), i.name()));
            match unknown {
                Some(name) => LoadError::Import(format!(
                    "the module imports `{name}`, which this node does not provide: it was built for a newer \
                     scenario ABI than version {}; rebuild it with a matching fusi-sdk",
                    abi::ABI_VERSION
                )),
                None => LoadError::Import(format!(
                    "the module needs imports this node does not provide ({e:#}); scenarios may import only the \
                     `fusi` host functions and WASI preview 1"
                )),
            }
        })?;

        let ticker = Arc::new(AtomicBool::new(false));
        let stop = ticker.clone();
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("fusi-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| LoadError::Compile(format!("cannot start the epoch thread: {e}")))?;

        Ok(ScenarioModule {
            engine,
            pre,
            sha256: sha256_hex(bytes),
            has_setup,
            has_init,
            has_teardown,
            entries,
            ticker,
        })
    }

    /// The module's sha256.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Checks that the module exports the function each of `spec`'s
    /// scenarios runs, before any VU starts.
    pub fn check_exec(&self, spec: &crate::core::spec::RunSpec) -> Result<(), LoadError> {
        for scenario in &spec.scenarios {
            let exec = scenario.exec_name();
            if !self.entries.contains(exec) {
                let known: Vec<&str> = self.entries.iter().map(String::as_str).collect();
                return Err(LoadError::NoExec {
                    scenario: scenario.name.clone(),
                    exec: exec.to_owned(),
                    known: known.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Whether it exports `setup`.
    pub fn has_setup(&self) -> bool {
        self.has_setup
    }

    /// Whether it exports `init`.
    pub fn has_init(&self) -> bool {
        self.has_init
    }

    /// Whether it exports `teardown`.
    pub fn has_teardown(&self) -> bool {
        self.has_teardown
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(super) fn pre(&self) -> &InstancePre<VuState> {
        &self.pre
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn section(id: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(leb(payload.len() as u32));
        out.extend_from_slice(payload);
        out
    }

    fn custom(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = leb(name.len() as u32);
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        section(0, &body)
    }

    fn module(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        for s in sections {
            out.extend_from_slice(s);
        }
        out
    }

    fn thresholds(text: &str) -> Vec<u8> {
        custom(abi::THRESHOLDS_SECTION, text.as_bytes())
    }

    fn malformed(bytes: &[u8]) -> bool {
        matches!(
            declared_thresholds(bytes),
            Err(DeclaredThresholdsError::Malformed { .. })
        )
    }

    #[test]
    fn reads_every_thresholds_section_in_order() {
        let wasm = module(&[
            section(1, &[0x01, 0x60, 0x00, 0x00]),
            thresholds("http_req_duration: p(95)<200ms\n"),
            custom("name", b"ignored\nchecks: rate>0"),
            section(10, &[0x00]),
            thresholds("  http_req_failed: rate<0.01 \r\n\n\n checks: rate>0.9\n"),
        ]);
        assert_eq!(
            declared_thresholds(&wasm),
            Ok(vec![
                "http_req_duration: p(95)<200ms".to_owned(),
                "http_req_failed: rate<0.01".to_owned(),
                "checks: rate>0.9".to_owned(),
            ])
        );
        assert_eq!(declared_thresholds(&module(&[])), Ok(vec![]));
        assert_eq!(
            declared_thresholds(&module(&[custom("other", b"x: count<1")])),
            Ok(vec![])
        );
        assert_eq!(
            declared_thresholds(&module(&[thresholds(" \n\n")])),
            Ok(vec![])
        );
    }

    #[test]
    fn declared_metrics_are_read_sorted_and_checked() {
        let metrics = |text: &str| custom(abi::METRICS_SECTION, text.as_bytes());
        let wasm = module(&[
            metrics("trend queue_ms\n"),
            metrics("counter items\n\nrate slow\n"),
        ]);
        assert_eq!(
            declared_metrics(&wasm),
            Ok(vec![
                (MetricKind::Counter, "items".to_owned()),
                (MetricKind::Trend, "queue_ms".to_owned()),
                (MetricKind::Rate, "slow".to_owned()),
            ])
        );
        assert_eq!(declared_metrics(&module(&[])), Ok(vec![]));
        for (bad, problem) in [
            ("histogram x", "\"histogram\" is not a metric kind"),
            ("counter", "is not `KIND NAME`"),
            ("counter has space", "is not a metric name"),
        ] {
            let e = declared_metrics(&module(&[metrics(bad)]))
                .expect_err(bad)
                .to_string();
            assert!(
                e.contains(problem) && e.contains("fusi_sdk::metrics!"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn padded_leb128_sizes_are_read() {
        // Size 5 written in five bytes, as some linkers pad it.
        let mut wasm = module(&[]);
        wasm.extend_from_slice(&[0, 0x85, 0x80, 0x80, 0x80, 0x00, 4]);
        wasm.extend_from_slice(b"fusi");
        assert_eq!(declared_thresholds(&wasm), Ok(vec![]));
    }

    #[test]
    fn bad_headers_and_numbers_are_errors() {
        assert_eq!(
            declared_thresholds(b"not wasm at all"),
            Err(DeclaredThresholdsError::NotWasm)
        );
        assert_eq!(
            declared_thresholds(b""),
            Err(DeclaredThresholdsError::NotWasm)
        );
        assert!(malformed(b"\0asm\x01\0"));
        assert!(malformed(b"\0asm\x0d\0\x01\0"));
        let mut six_bytes = module(&[]);
        six_bytes.extend_from_slice(&[0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
        assert!(malformed(&six_bytes));
        let mut too_large = module(&[]);
        too_large.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x1f]);
        assert!(malformed(&too_large));
        let mut long_name = module(&[]);
        long_name.extend_from_slice(&[0, 2, 9, b'f']);
        assert!(malformed(&long_name));
        let msg = declared_thresholds(&long_name)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("byte 11") && msg.contains("rebuild"), "{msg}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let wasm = module(&[
            section(1, &[0x01, 0x60, 0x00, 0x00]),
            thresholds("checks: rate>0.9\n"),
        ]);
        for len in 0..wasm.len() {
            let cut = &wasm[..len];
            let got = declared_thresholds(cut);
            // Cutting exactly between sections leaves a valid module.
            if len == 8 || len == 8 + 6 {
                assert_eq!(got, Ok(vec![]), "{len}");
            } else {
                assert!(got.is_err(), "{len}: {got:?}");
            }
        }
        assert_eq!(
            declared_thresholds(&wasm),
            Ok(vec!["checks: rate>0.9".to_owned()])
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = module(&[thresholds("checks: rate>0.9\n"), custom("x", b"yz")]);
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                base.clone()
            } else {
                module(&[])
            };
            let n = (next() % 8) as usize;
            for _ in 0..n {
                let at = (next() as usize) % (bytes.len() + 1);
                let byte = next() as u8;
                if at < bytes.len() && at >= 8 && next() % 2 == 0 {
                    bytes[at] = byte;
                } else {
                    bytes.insert(at.max(8).min(bytes.len()), byte);
                }
            }
            if let Ok(list) = declared_thresholds(&bytes) {
                assert!(list.len() <= abi::MAX_DECLARED_THRESHOLDS);
            }
        }
    }

    #[test]
    fn limits_and_encoding() {
        let hundred: String = (0..100)
            .map(|i| format!("http_reqs: count>{i}\n"))
            .collect();
        assert_eq!(
            declared_thresholds(&module(&[thresholds(&hundred)])).map(|l| l.len()),
            Ok(100)
        );
        let more = format!("{hundred}checks: rate>0\n");
        assert_eq!(
            declared_thresholds(&module(&[thresholds(&more)])),
            Err(DeclaredThresholdsError::TooMany(101))
        );
        let half = "x".repeat(abi::MAX_THRESHOLDS_BYTES / 2);
        assert_eq!(
            declared_thresholds(&module(&[thresholds(&half), thresholds(&half)])).map(|l| l.len()),
            Ok(1)
        );
        assert_eq!(
            declared_thresholds(&module(&[
                thresholds(&half),
                thresholds(&half),
                thresholds("\n")
            ])),
            Err(DeclaredThresholdsError::TooLarge)
        );
        assert_eq!(
            declared_thresholds(&module(&[custom(abi::THRESHOLDS_SECTION, &[0xff, 0xfe])])),
            Err(DeclaredThresholdsError::NotUtf8)
        );
    }
}
