//! One module per command. Each takes its flags and the [`Context`].

pub mod backup;
pub mod clone;
pub mod demo;
pub mod dev;
pub mod list;
pub mod prune;
pub mod restore;
pub mod status;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

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

/// The off-site copy, for `--remote`: configured, reachable, and the bucket there.
pub fn remote_store(ctx: &Context) -> anyhow::Result<Arc<crate::s3::S3Store>> {
    let Some(settings) = crate::s3::S3Settings::from_sources(&ctx.sources)? else {
        anyhow::bail!(
            "--remote needs BACKUP_S3_BUCKET: set it (and BACKUP_S3_ENDPOINT for a store other than AWS) in the environment or .env"
        );
    };
    let store = crate::s3::S3Store::new(settings)?;
    store.check()?;
    Ok(Arc::new(store))
}
