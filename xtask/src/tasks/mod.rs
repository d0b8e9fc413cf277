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

/// The backups a task reads: the backup directory, or with `--remote` the off-site copy.
pub struct Backups {
    pub local: crate::store::LocalStore,
    pub remote: Option<Arc<crate::s3::S3Store>>,
}

impl Backups {
    pub fn new(
        local: crate::store::LocalStore,
        remote: bool,
        ctx: &Context,
    ) -> anyhow::Result<Backups> {
        let remote = if remote {
            Some(remote_store(ctx)?)
        } else {
            None
        };
        Ok(Backups { local, remote })
    }

    /// Where listing, `latest` and the catalog come from.
    pub fn listing(&self) -> &dyn crate::store::Store {
        match &self.remote {
            Some(r) => r.as_ref(),
            None => &self.local,
        }
    }

    pub fn source_of(&self, name: &crate::naming::BackupName) -> verify::Source {
        match &self.remote {
            Some(r) => verify::remote_source_of(r, name),
            None => verify::source_of(&self.local, name),
        }
    }

    /// A path or a file name (local), or a file name in the off-site copy.
    pub fn resolve(&self, arg: &str) -> anyhow::Result<verify::Source> {
        match &self.remote {
            Some(r) => verify::resolve_remote(r, arg),
            None => verify::resolve_file(&self.local, arg),
        }
    }
}
