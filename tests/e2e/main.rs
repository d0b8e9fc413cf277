//! End-to-end tests: the real `cargo xtask` binary, real PostgreSQL servers in
//! containers (15 and 17), real pg_dump/psql. Each test starts its own server.

/// Declares one test per server major: `name_pg15` and `name_pg17`, each
/// calling `body(major)`.
macro_rules! per_version {
    ($($name:ident => $body:path),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn pg15() { $body(15) }
                #[test]
                fn pg17() { $body(17) }
            }
        )*
    };
}

/// A hermetic runner of the `cargo xtask` binary built for these tests.
fn xtask() -> e2e::Xtask {
    e2e::Xtask::new(env!("CARGO_BIN_EXE_xtask-e2e"))
}

mod backup;
mod cli;
mod clone;
mod compose;
mod encryption;
mod formats;
mod harness;
mod ops;
mod pitr;
mod prune;
mod recovery;
mod remote;
mod restore;
mod runbook;
mod safety;
mod subset;
