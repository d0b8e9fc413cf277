//! One module per command. Each takes its flags and the [`Context`]; none
//! imports another (the [`crate::tidy`] test checks it): what two tasks
//! share lives in a service.

pub(crate) mod backup;
pub(crate) mod clone;
pub(crate) mod demo;
pub(crate) mod dev;
pub(crate) mod list;
pub(crate) mod pitr;
pub(crate) mod prune;
pub(crate) mod restore;
pub(crate) mod status;
pub(crate) mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::core::config::{Overrides, Settings, Sources, parse_dotenv};
use crate::ui;

/// What every task starts from: the settings, resolved once.
pub(crate) struct Context {
    pub(crate) settings: Settings,
}

impl Context {
    /// The process environment and `root/.env`, resolved with the flags.
    pub(crate) fn load(overrides: &Overrides) -> anyhow::Result<Context> {
        let root = project_root();
        let path = root.join(".env");
        let dotenv = match std::fs::read_to_string(&path) {
            Ok(text) => {
                parse_dotenv(&text).with_context(|| format!("reading {}", path.display()))?
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let sources = Sources {
            env: std::env::vars().collect(),
            dotenv,
        };
        let settings = Settings::resolve(overrides, &sources, &root)?;
        for (name, origin) in &settings.origins {
            ui::detail(format!("{name}: from {origin}"));
        }
        Ok(Context { settings })
    }
}

/// The workspace root: backups and `.env` are relative to it.
///
/// `XTASK_ROOT` sets it explicitly (a deployed binary, the tests).
/// `cargo run` sets `CARGO_MANIFEST_DIR` to `xtask/` at run time; a binary
/// run by hand falls back to the directory it was built in, then to the
/// current directory (a copied binary in a container, say).
fn project_root() -> PathBuf {
    if let Some(root) = std::env::var_os("XTASK_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    let from_manifest = |dir: &str| Path::new(dir).parent().map(Path::to_path_buf);
    if let Some(root) = std::env::var("CARGO_MANIFEST_DIR")
        .ok()
        .and_then(|d| from_manifest(&d))
        && root.join("xtask").is_dir()
    {
        return root;
    }
    if let Some(root) =
        from_manifest(env!("CARGO_MANIFEST_DIR")).filter(|r| r.join("xtask").is_dir())
    {
        return root;
    }
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}
