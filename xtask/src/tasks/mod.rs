//! One module per command. Each takes its flags and the [`Context`].

pub mod backup;
pub mod demo;
pub mod dev;
pub mod list;
pub mod prune;
pub mod restore;
pub mod status;
pub mod verify;

use std::path::PathBuf;

use crate::config::{self, Sources};

/// What every task starts from: the workspace root and the configuration sources.
pub struct Context {
    pub root: PathBuf,
    pub sources: Sources,
    pub sh: xshell::Shell,
}

impl Context {
    pub fn load() -> anyhow::Result<Context> {
        let root = config::project_root();
        let sources = Sources::load(&root)?;
        let sh = xshell::Shell::new()?;
        sh.change_dir(&root);
        Ok(Context { root, sources, sh })
    }
}
