//! The `cargo xtask` binary, built inside the e2e crate so its tests can run
//! the real command line (`CARGO_BIN_EXE_xtask-e2e`): same library, same main.
fn main() -> std::process::ExitCode {
    xtask::main()
}
