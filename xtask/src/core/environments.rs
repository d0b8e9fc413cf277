//! Named environments for `db-clone --from NAME`, from the committed,
//! secret-free `xtask/environments.toml`. Pure: text in, where each
//! environment's database is out. Passwords are never in the file: each
//! names the variable that holds it (`password_env`), or libpq's `~/.pgpass`.
//!
//! ```toml
//! [staging]
//! host = "staging-db.internal"
//! port = 5432
//! dbname = "app"
//! user = "readonly"
//! password_env = "STAGING_DB_PASSWORD"
//! sslmode = "require"
//! ```

use std::collections::BTreeMap;

/// One environment's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Environment {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: String,
    pub(crate) user: String,
    /// The variable holding the password (never the password itself).
    pub(crate) password_env: Option<String>,
    pub(crate) sslmode: Option<String>,
}

pub(crate) const FILE: &str = "xtask/environments.toml";

/// Parses the file; errors name the environment and the key.
pub(crate) fn parse(text: &str) -> Result<BTreeMap<String, Environment>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let mut out = BTreeMap::new();
    for (name, value) in table {
        let env = value
            .as_table()
            .ok_or_else(|| format!("[{name}] must be a table"))?;
        let string = |key: &str| -> Result<Option<String>, String> {
            match env.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| format!("[{name}] {key} must be a string")),
            }
        };
        for key in env.keys() {
            if !["host", "port", "dbname", "user", "password_env", "sslmode"]
                .contains(&key.as_str())
            {
                if key == "password" {
                    return Err(format!(
                        "[{name}] has a password: this file is committed; name the variable that holds it with password_env"
                    ));
                }
                return Err(format!(
                    "[{name}] has an unknown key '{key}' (host, port, dbname, user, password_env, sslmode)"
                ));
            }
        }
        let port = match env.get("port") {
            None => 5432,
            Some(p) => p
                .as_integer()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("[{name}] port must be a number from 1 to 65535"))?,
        };
        out.insert(
            name.clone(),
            Environment {
                host: string("host")?.ok_or_else(|| format!("[{name}] needs a host"))?,
                port,
                dbname: string("dbname")?.ok_or_else(|| format!("[{name}] needs a dbname"))?,
                user: string("user")?.ok_or_else(|| format!("[{name}] needs a user"))?,
                password_env: string("password_env")?,
                sslmode: string("sslmode")?,
                name,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_file() {
        let envs = parse(
            "[staging]\nhost = \"db.staging\"\ndbname = \"app\"\nuser = \"ro\"\npassword_env = \"STAGING_PW\"\n\n[qa]\nhost = \"qa\"\nport = 6543\ndbname = \"app\"\nuser = \"u\"\n",
        )
        .unwrap();
        assert_eq!(envs["staging"].port, 5432);
        assert_eq!(envs["staging"].password_env.as_deref(), Some("STAGING_PW"));
        assert_eq!(envs["qa"].port, 6543);
        assert!(
            parse("[p]\nhost=\"h\"\ndbname=\"d\"\nuser=\"u\"\npassword=\"x\"")
                .unwrap_err()
                .contains("name the variable that holds it with password_env")
        );
        assert!(
            parse("[p]\nhost=\"h\"\nuser=\"u\"")
                .unwrap_err()
                .contains("needs a dbname")
        );
    }
}
