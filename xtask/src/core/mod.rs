//! The pure core: no I/O, no command line. Settings resolved from their
//! sources, names, metadata, retention, health, metrics, plans, and the
//! dump reader with its consumers.

pub(crate) mod config;
pub(crate) mod dbprops;
pub(crate) mod dump;
pub(crate) mod environments;
pub(crate) mod format;
pub(crate) mod health;
pub(crate) mod human;
pub(crate) mod manifest;
pub(crate) mod meta;
pub(crate) mod metrics;
pub(crate) mod naming;
pub(crate) mod pitr;
pub(crate) mod plan;
pub(crate) mod retention;
pub(crate) mod subset;
