//! Loading a scenario: validate the bytes, compile once, check the ABI.
//!
//! A module is compiled once per run into an [`InstancePre`] (imports already
//! resolved), and every VU instantiates from it in microseconds. Everything a
//! user can get wrong about a module is caught here, before any VU starts,
//! with an error that says what is wrong and what to do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fusi_sdk::abi::{self, exports};
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, ExternType, InstancePre, Linker, Module, ValType};

use super::host;
use super::vu::VuState;

/// How often the epoch advances: the granularity of iteration timeouts and of
/// the time slices a CPU-bound scenario gets before it must yield.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

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
        "the module was built for scenario ABI version {0}, but this node speaks version {ours}; rebuild \
         the scenario with a fusi-sdk that matches this node",
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

/// A compiled scenario, ready to instantiate VUs.
pub struct ScenarioModule {
    engine: Engine,
    pre: InstancePre<VuState>,
    sha256: String,
    has_setup: bool,
    has_init: bool,
    has_teardown: bool,
    ticker: Arc<AtomicBool>,
}

impl Drop for ScenarioModule {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
    }
}

/// The sha256 of some bytes, lower-case hex: how modules are named.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ScenarioModule {
    /// Validates and compiles a module. Does not run any of its code.
    pub fn compile(bytes: &[u8]) -> Result<ScenarioModule, LoadError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm);
        }
        let mut config = Config::new();
        config.epoch_interruption(true);
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
        if !has(exports::ITERATION)? {
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
            ticker,
        })
    }

    /// The module's sha256.
    pub fn sha256(&self) -> &str {
        &self.sha256
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
