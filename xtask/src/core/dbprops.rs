//! The database itself: owner, privileges, connection limit, comment,
//! settings (`ALTER DATABASE ... SET`, `ALTER ROLE ... IN DATABASE ... SET`)
//! and locale. pg_dump writes these only with `--create`, and a dump made
//! with it would create the database under its old name; so a backup records
//! them in `.meta` instead, and a restore gives them to the database it swaps
//! in, in the same transaction as the swap. Pure: properties in, SQL out,
//! every name and value quoted here.

use serde::{Deserialize, Serialize};

use crate::core::dump::quote_ident;

/// What a database is, apart from its content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DatabaseProps {
    pub(crate) owner: String,
    /// -1: no limit.
    pub(crate) connection_limit: i32,
    /// `None`: the default privileges (the owner all, PUBLIC may connect and make temporary tables).
    pub(crate) acl: Option<Vec<Grant>>,
    pub(crate) comment: Option<String>,
    /// `ALTER DATABASE ... SET` (no role) and `ALTER ROLE ... IN DATABASE ... SET`.
    pub(crate) settings: Vec<RoleSetting>,
    #[serde(flatten)]
    pub(crate) locale: Locale,
}

/// One privilege on the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    /// A role, or `PUBLIC`.
    pub(crate) grantee: String,
    /// `CONNECT`, `CREATE` or `TEMPORARY`.
    pub(crate) privilege: String,
    pub(crate) grantable: bool,
}

/// `name=value` settings, for every role (`role: None`) or one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RoleSetting {
    pub(crate) role: Option<String>,
    pub(crate) config: Vec<String>,
}

/// How the database sorts and classifies text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Locale {
    pub(crate) encoding: String,
    pub(crate) collate: String,
    pub(crate) ctype: String,
    /// `libc`, `icu` or `builtin` (PostgreSQL 15 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) locale_provider: Option<String>,
    /// The ICU or builtin locale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provider_locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) icu_rules: Option<String>,
}

/// A string literal (standard_conforming_strings is on everywhere we send SQL).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Settings whose value is a list of names, stored already quoted (`"$user", public`).
const LIST_SETTINGS: [&str; 6] = [
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
    "unix_socket_directories",
];

/// `name = value` for `SET`: the name's parts quoted, the value a literal,
/// or for a list setting each element re-quoted (never the text as it came).
fn set_clause(entry: &str) -> Option<String> {
    let (name, value) = entry.split_once('=')?;
    let name_sql = name
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".");
    if !LIST_SETTINGS.contains(&name) {
        return Some(format!("{name_sql} = {}", quote_literal(value)));
    }
    let mut items = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let (item, used) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut item = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if quoted[i + 1..].starts_with('"') {
                        item.push('"');
                        chars.next();
                    } else {
                        end = Some(i + 2);
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
            (item, end?)
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].trim().to_string(), end)
        };
        items.push(quote_literal(&item));
        rest = rest[used..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(format!("{name_sql} = {}", items.join(", ")))
}

/// What the restore leaves out (`--no-owner`, `--no-acl`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Skip {
    pub(crate) owner: bool,
    pub(crate) acl: bool,
}

impl DatabaseProps {
    /// The statements that give database `db` these properties; each one line.
    pub(crate) fn sql(&self, db: &str, skip: Skip) -> Vec<String> {
        let d = quote_ident(db);
        let mut out = Vec::new();
        if !skip.owner && !self.owner.is_empty() {
            out.push(format!(
                "ALTER DATABASE {d} OWNER TO {};",
                quote_ident(&self.owner)
            ));
        }
        out.push(format!(
            "ALTER DATABASE {d} WITH CONNECTION LIMIT {};",
            self.connection_limit
        ));
        out.push(format!(
            "COMMENT ON DATABASE {d} IS {};",
            self.comment.as_deref().map_or("NULL".into(), quote_literal)
        ));
        if let (Some(acl), false) = (&self.acl, skip.acl) {
            out.push(format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC;"));
            if !skip.owner && !self.owner.is_empty() {
                out.push(format!(
                    "REVOKE ALL ON DATABASE {d} FROM {};",
                    quote_ident(&self.owner)
                ));
            }
            for g in acl {
                let grantee = if g.grantee == "PUBLIC" {
                    "PUBLIC".to_string()
                } else {
                    quote_ident(&g.grantee)
                };
                out.push(format!(
                    "GRANT {} ON DATABASE {d} TO {grantee}{};",
                    match g.privilege.as_str() {
                        "CREATE" => "CREATE",
                        "CONNECT" => "CONNECT",
                        _ => "TEMPORARY",
                    },
                    if g.grantable {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                ));
            }
        }
        for s in &self.settings {
            if s.role.is_some() && skip.owner {
                continue; // a role's settings need the role
            }
            for entry in &s.config {
                let Some(clause) = set_clause(entry) else {
                    continue;
                };
                out.push(match &s.role {
                    None => format!("ALTER DATABASE {d} SET {clause};"),
                    Some(role) => format!(
                        "ALTER ROLE {} IN DATABASE {d} SET {clause};",
                        quote_ident(role)
                    ),
                });
            }
        }
        out
    }

    /// Roles these properties name.
    pub(crate) fn roles(&self, skip: Skip) -> Vec<&str> {
        let mut roles = Vec::new();
        if !skip.owner && !self.owner.is_empty() {
            roles.push(self.owner.as_str());
        }
        if !skip.acl {
            roles.extend(
                self.acl
                    .iter()
                    .flatten()
                    .map(|g| g.grantee.as_str())
                    .filter(|g| *g != "PUBLIC"),
            );
        }
        if !skip.owner {
            roles.extend(self.settings.iter().filter_map(|s| s.role.as_deref()));
        }
        roles.sort_unstable();
        roles.dedup();
        roles
    }
}

impl Locale {
    /// The options of `CREATE DATABASE` that give a new database this locale
    /// on a server of major version `server`; what that server cannot do is
    /// left out and said in the second value.
    pub(crate) fn create_options(&self, server: u32) -> (String, Option<String>) {
        let mut sql = format!(
            " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(&self.encoding),
            quote_literal(&self.collate),
            quote_literal(&self.ctype)
        );
        let provider = self.locale_provider.as_deref().unwrap_or("libc");
        let locale = self.provider_locale.as_deref().unwrap_or_default();
        let missing = match provider {
            "icu" if server >= 15 => {
                sql.push_str(&format!(
                    " LOCALE_PROVIDER icu ICU_LOCALE {}",
                    quote_literal(locale)
                ));
                match &self.icu_rules {
                    Some(rules) if server >= 16 => {
                        sql.push_str(&format!(" ICU_RULES {}", quote_literal(rules)));
                        None
                    }
                    Some(_) => Some("its ICU rules".to_string()),
                    None => None,
                }
            }
            "builtin" if server >= 17 => {
                sql.push_str(&format!(
                    " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                    quote_literal(locale)
                ));
                None
            }
            "libc" => None,
            other => Some(format!("its {other} locale provider")),
        };
        (sql, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> DatabaseProps {
        DatabaseProps {
            owner: "app_owner".into(),
            connection_limit: 7,
            acl: Some(vec![
                Grant {
                    grantee: "PUBLIC".into(),
                    privilege: "TEMPORARY".into(),
                    grantable: false,
                },
                Grant {
                    grantee: "Read Er".into(),
                    privilege: "CONNECT".into(),
                    grantable: true,
                },
            ]),
            comment: Some("the 'shop'".into()),
            settings: vec![
                RoleSetting {
                    role: None,
                    config: vec![
                        "search_path=\"$user\", public, \"Odd \"\"Schema\"".into(),
                        "work_mem=64MB".into(),
                        "app.tenant=x'; DROP DATABASE y; --".into(),
                    ],
                },
                RoleSetting {
                    role: Some("reader".into()),
                    config: vec!["statement_timeout=5s".into()],
                },
            ],
            locale: Locale::default(),
        }
    }

    #[test]
    fn statements_quote_every_name_and_value() {
        let sql = props().sql("shop copy", Skip::default());
        assert_eq!(
            sql,
            [
                "ALTER DATABASE \"shop copy\" OWNER TO app_owner;",
                "ALTER DATABASE \"shop copy\" WITH CONNECTION LIMIT 7;",
                "COMMENT ON DATABASE \"shop copy\" IS 'the ''shop''';",
                "REVOKE ALL ON DATABASE \"shop copy\" FROM PUBLIC;",
                "REVOKE ALL ON DATABASE \"shop copy\" FROM app_owner;",
                "GRANT TEMPORARY ON DATABASE \"shop copy\" TO PUBLIC;",
                "GRANT CONNECT ON DATABASE \"shop copy\" TO \"Read Er\" WITH GRANT OPTION;",
                "ALTER DATABASE \"shop copy\" SET search_path = '$user', 'public', 'Odd \"Schema';",
                "ALTER DATABASE \"shop copy\" SET work_mem = '64MB';",
                "ALTER DATABASE \"shop copy\" SET app.tenant = 'x''; DROP DATABASE y; --';",
                "ALTER ROLE reader IN DATABASE \"shop copy\" SET statement_timeout = '5s';",
            ]
        );
        let without = props().sql(
            "shop",
            Skip {
                owner: true,
                acl: true,
            },
        );
        assert!(
            without
                .iter()
                .all(|s| !s.contains("OWNER") && !s.contains("GRANT") && !s.contains("ROLE"))
        );
    }

    #[test]
    fn locales_by_server_version() {
        let icu = Locale {
            encoding: "UTF8".into(),
            collate: "en_US.UTF-8".into(),
            ctype: "en_US.UTF-8".into(),
            locale_provider: Some("icu".into()),
            provider_locale: Some("und-u-ks-level2".into()),
            icu_rules: Some("&a < b".into()),
        };
        let (sql, missing) = icu.create_options(17);
        assert!(
            sql.ends_with(" LOCALE_PROVIDER icu ICU_LOCALE 'und-u-ks-level2' ICU_RULES '&a < b'"),
            "{sql}"
        );
        assert_eq!(missing, None);
        assert_eq!(icu.create_options(15).1.as_deref(), Some("its ICU rules"));
        let builtin = Locale {
            locale_provider: Some("builtin".into()),
            provider_locale: Some("C.UTF-8".into()),
            ..icu
        };
        assert_eq!(
            builtin.create_options(15).1.as_deref(),
            Some("its builtin locale provider")
        );
    }
}
