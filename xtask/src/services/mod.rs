//! What the tasks stand on: running processes and PostgreSQL's tools
//! ([`process`], [`pg`], [`compose`]), the stores of backups
//! ([`catalog`], [`s3`]), writing and reading backup files ([`codec`],
//! [`publish`]), loading dumps ([`load`]), a live source's one snapshot ([`snapshot`]), notifications ([`hooks`]),
//! files in the backup directory ([`fsutil`]) and signals ([`interrupt`]).

pub(crate) mod catalog;
pub(crate) mod codec;
pub(crate) mod compose;
pub(crate) mod crypto;
pub(crate) mod fsutil;
pub(crate) mod hooks;
pub(crate) mod interrupt;
pub(crate) mod load;
pub(crate) mod pg;
pub(crate) mod pitr;
pub(crate) mod process;
pub(crate) mod publish;
pub(crate) mod s3;
pub(crate) mod snapshot;
