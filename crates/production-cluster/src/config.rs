//! Where the settings come from: the environment, over an optional TOML file (`CONFIG=path.toml`),
//! over the defaults; and `--print-config`, which shows what came out with its secrets masked.
//!
//! The file holds the same names as the environment, in either case (`PORT = 8000` or
//! `port = 8000`), as strings, numbers or booleans. A name the program never reads is an error
//! naming it, as a bad value is: a typo in a config file must not be quietly ignored.
//!
//! Every variable is read through [`Layered`], which remembers the names asked for: the list of
//! known names is whatever the parsers ask, so it cannot drift from them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use common::config::{ConfigError, ProcessEnv, Source};

/// The variable naming the config file.
pub const CONFIG_VAR: &str = "CONFIG";

/// Where one value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The process environment (wins over the file).
    Env,
    /// The `CONFIG` file.
    File,
}

/// The environment over the file; records every name asked for.
pub struct Layered<E = ProcessEnv> {
    env: E,
    /// The file's settings, by upper-case name.
    file: BTreeMap<String, String>,
    asked: RefCell<BTreeSet<String>>,
}

impl<E: Source> Layered<E> {
    /// `env` alone, or over the TOML file it names in `CONFIG`.
    pub fn load(env: E) -> Result<Self, ConfigError> {
        let file = match env.get(CONFIG_VAR) {
            None => BTreeMap::new(),
            Some(path) => {
                let bad = |why: String| ConfigError {
                    var: CONFIG_VAR.into(),
                    value: path.clone(),
                    expected: why,
                };
                let text = std::fs::read_to_string(path.trim())
                    .map_err(|e| bad(format!("a readable TOML file ({e})")))?;
                parse_file(&text)
                    .map_err(|e| bad(format!("a TOML file of NAME = value lines ({e})")))?
            }
        };
        Ok(Self {
            env,
            file,
            asked: RefCell::default(),
        })
    }

    /// Where `name`'s value comes from, if it is set.
    pub fn origin(&self, name: &str) -> Option<Origin> {
        if self.env.get(name).is_some() {
            Some(Origin::Env)
        } else if self.file.contains_key(name) {
            Some(Origin::File)
        } else {
            None
        }
    }

    /// Every name read so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.borrow().iter().cloned().collect()
    }

    /// Fails on the first name in the file that no parser asked for: call it after parsing.
    pub fn check_unknown(&self) -> Result<(), ConfigError> {
        let asked = self.asked.borrow();
        match self.file.iter().find(|(k, _)| !asked.contains(*k)) {
            None => Ok(()),
            Some((name, value)) => Err(ConfigError {
                var: name.clone(),
                value: value.clone(),
                expected: "a setting this program reads (the config file has no such name; see --print-config)".into(),
            }),
        }
    }
}

impl<E: Source> Source for Layered<E> {
    fn get(&self, name: &str) -> Option<String> {
        self.asked.borrow_mut().insert(name.to_string());
        self.env.get(name).or_else(|| {
            self.file
                .get(name)
                .filter(|v| !v.trim().is_empty())
                .cloned()
        })
    }
}

/// The file's `NAME = value` pairs, names upper-cased; tables and arrays are refused.
fn parse_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(format!("{key} is not a string, number or boolean")),
        };
        out.insert(key.to_ascii_uppercase(), value);
    }
    Ok(out)
}

/// Names whose values are secrets: shown as `****`.
const SECRETS: [&str; 1] = ["ADMIN_TOKEN"];

/// `value` as `--print-config` shows it: secrets masked, and the password of a URL
/// (`redis://:pw@host`, `postgresql://user:pw@host/db`, `?password=pw`) replaced by `****`. A
/// comma-separated list (`DATABASE_REPLICA_URLS`, or a multi-host `DATABASE_URL`) is masked
/// item by item.
pub fn mask(name: &str, value: &str) -> String {
    if SECRETS.contains(&name) {
        return "****".into();
    }
    value.split(',').map(mask_url).collect::<Vec<_>>().join(",")
}

fn mask_url(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        // A user without a password has nothing to hide.
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{user}:****@{host}")
        }
        _ => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_over_the_file_and_names_are_case_blind() {
        let file = parse_file("port = 9000\nWORKERS = 2\nlog_format = \"json\"\n").unwrap();
        let l = Layered {
            env: [("PORT", "7000")],
            file,
            asked: RefCell::default(),
        };
        assert_eq!(l.get("PORT").as_deref(), Some("7000"));
        assert_eq!(l.get("WORKERS").as_deref(), Some("2"));
        assert_eq!(l.origin("WORKERS"), Some(Origin::File));
        assert_eq!(l.origin("PORT"), Some(Origin::Env));
        let err = l.check_unknown().unwrap_err();
        assert_eq!(err.var, "LOG_FORMAT", "never asked for: unknown");
        l.get("LOG_FORMAT");
        assert!(l.check_unknown().is_ok());
    }

    #[test]
    fn tables_and_bad_toml_are_refused() {
        assert!(parse_file("[server]\nport = 1\n").is_err());
        assert!(parse_file("port = [1, 2]\n").is_err());
        assert!(parse_file("port = \n").is_err());
    }

    #[test]
    fn secrets_and_url_passwords_are_masked() {
        assert_eq!(mask("ADMIN_TOKEN", "s3cret"), "****");
        assert_eq!(
            mask("SESSION_STORE", "redis://:pw@127.0.0.1:6379/0"),
            "redis://:****@127.0.0.1:6379/0"
        );
        assert_eq!(
            mask("SESSION_STORE", "redis://app:pw@redis:6379"),
            "redis://app:****@redis:6379"
        );
        assert_eq!(
            mask("SESSION_STORE", "redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(mask("PORT", "8000"), "8000");
        assert_eq!(
            mask("DATABASE_URL", "postgresql://app:pw@db1:5432,db2:5432/app"),
            "postgresql://app:****@db1:5432,db2:5432/app"
        );
        assert_eq!(
            mask(
                "DATABASE_URL",
                "postgresql://app@db1/app?password=pw&sslmode=require"
            ),
            "postgresql://app@db1/app?password=****&sslmode=require"
        );
        assert_eq!(
            mask(
                "DATABASE_REPLICA_URLS",
                "postgres://r:pw1@r1/app,postgres://r:pw2@r2/app"
            ),
            "postgres://r:****@r1/app,postgres://r:****@r2/app"
        );
    }
}
