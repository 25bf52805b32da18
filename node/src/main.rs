//! `fusi-node`: see `fusi-node --help`. All logic lives in the library.

fn main() -> std::process::ExitCode {
    fusi_node::cli::main()
}
