//! `cargo xtask`: the database tooling of this workspace.
//!
//! This binary is not meant to be installed. `.cargo/config.toml` defines the
//! alias `xtask = "run --package xtask --"`, so `cargo xtask db-backup` builds
//! and runs it from any directory of the workspace (the cargo-xtask
//! convention: <https://github.com/matklad/cargo-xtask>). All logic lives in
//! the library next to this file.

fn main() -> std::process::ExitCode {
    xtask::main()
}
