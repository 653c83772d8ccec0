//! One flag: what it is ([`Flag`]), how a change to it is written ([`FlagUpdate`]), the limits
//! both obey, and how it answers for a user ([`Flag::evaluate`]).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::bucket;
use super::eval::{Evaluation, Reason};

/// The most flags a store holds: the store is keyed by what clients send.
pub const MAX_FLAGS: usize = 256;
/// The most users in one allow or deny list.
pub const MAX_LIST: usize = 1_000;
/// The most users in all the lists of all the flags together: the file every worker reloads on
/// a change stays small (about a megabyte at most), whatever the per-flag limits would allow.
pub const MAX_LISTED_USERS: usize = 10_000;
/// The longest flag key, in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// The longest user id or salt, in bytes.
pub const MAX_USER_LEN: usize = 256;
/// The longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 512;

/// A feature flag.
///
/// Evaluated for a user in this order: off → `DISABLED`; in `deny` → off, `TARGETING_MATCH`;
/// in `allow` → on, `TARGETING_MATCH`; `percentage` 100 → on, `DEFAULT`; otherwise on iff the
/// user's bucket under `salt` is below `percentage`, `SPLIT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Flag {
    /// The flag's name, as code asks for it: `[A-Za-z0-9._-]`, 1 to 64 bytes.
    pub key: String,
    /// The kill switch: when false the flag is off for everybody, lists included.
    pub enabled: bool,
    /// The share of users (0–100) the flag is on for, by stable bucket.
    pub percentage: u8,
    /// What the bucket is hashed with. Defaults to the key, so two flags never share buckets;
    /// give two flags one salt to roll them out to the same users on purpose, or change it to
    /// reshuffle who is in.
    pub salt: String,
    /// Users the flag is always on for (while enabled), whatever their bucket.
    pub allow: BTreeSet<String>,
    /// Users the flag is always off for; wins over `allow`.
    pub deny: BTreeSet<String>,
    /// Free text for the humans reading `/flags`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A change to a flag, as `POST /flags/{key}` takes it: every field optional, an absent field
/// keeps its value (or takes its default on a new flag: off, 100%, salt = key, empty lists).
/// Unknown fields are refused, so `{"percent": 10}` is a 400, not a silent no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlagUpdate {
    /// See [`Flag::enabled`].
    pub enabled: Option<bool>,
    /// See [`Flag::percentage`].
    pub percentage: Option<u8>,
    /// See [`Flag::salt`].
    pub salt: Option<String>,
    /// Replaces the allow list.
    pub allow: Option<BTreeSet<String>>,
    /// Replaces the deny list.
    pub deny: Option<BTreeSet<String>>,
    /// See [`Flag::description`].
    pub description: Option<String>,
}

/// Why a flag or a change to one was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub(crate) String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Checks a flag key: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`.
pub fn check_key(key: &str) -> Result<(), Invalid> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(ok_char) {
        return Err(Invalid(format!(
            "flag key {key:?} must be 1 to {MAX_KEY_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-'"
        )));
    }
    Ok(())
}

/// Checks a user id: 1 to 256 bytes.
pub fn check_user(user: &str) -> Result<(), Invalid> {
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(Invalid(format!(
            "a user id must be 1 to {MAX_USER_LEN} bytes, got {} bytes",
            user.len()
        )));
    }
    Ok(())
}

impl Flag {
    /// A new flag with the defaults: off, 100% once enabled, salted with its own key.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_string(),
            enabled: false,
            percentage: 100,
            salt: key.to_string(),
            allow: BTreeSet::new(),
            deny: BTreeSet::new(),
            description: String::new(),
        }
    }

    /// This flag with `update` applied, checked; `self` is left as it was if it fails.
    pub fn updated(&self, update: FlagUpdate) -> Result<Flag, Invalid> {
        let mut next = self.clone();
        if let Some(v) = update.enabled {
            next.enabled = v;
        }
        if let Some(v) = update.percentage {
            next.percentage = v;
        }
        if let Some(v) = update.salt {
            next.salt = v;
        }
        if let Some(v) = update.allow {
            next.allow = v;
        }
        if let Some(v) = update.deny {
            next.deny = v;
        }
        if let Some(v) = update.description {
            next.description = v;
        }
        next.check()?;
        Ok(next)
    }

    /// Checks every limit; a flag read from disk is checked the same way as one posted.
    pub fn check(&self) -> Result<(), Invalid> {
        check_key(&self.key)?;
        if self.percentage > 100 {
            return Err(Invalid(format!(
                "percentage must be 0 to 100, got {}",
                self.percentage
            )));
        }
        if self.salt.is_empty() || self.salt.len() > MAX_USER_LEN {
            return Err(Invalid(format!("salt must be 1 to {MAX_USER_LEN} bytes")));
        }
        for (name, list) in [("allow", &self.allow), ("deny", &self.deny)] {
            if list.len() > MAX_LIST {
                return Err(Invalid(format!(
                    "{name} has {} users; at most {MAX_LIST}",
                    list.len()
                )));
            }
            for user in list {
                check_user(user).map_err(|e| Invalid(format!("{name}: {e}")))?;
            }
        }
        if self.description.len() > MAX_DESCRIPTION_LEN {
            return Err(Invalid(format!(
                "description must be at most {MAX_DESCRIPTION_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// The flag's value for `user`, and why.
    pub fn evaluate(&self, user: &str) -> Evaluation {
        let (value, reason) = if !self.enabled {
            (false, Reason::Disabled)
        } else if self.deny.contains(user) {
            (false, Reason::TargetingMatch)
        } else if self.allow.contains(user) {
            (true, Reason::TargetingMatch)
        } else if self.percentage >= 100 {
            (true, Reason::Default)
        } else {
            let in_split = bucket::in_rollout(&self.salt, user, self.percentage);
            (in_split, Reason::Split)
        };
        Evaluation::new(&self.key, value, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(json: serde_json::Value) -> Flag {
        let update: FlagUpdate = serde_json::from_value(json).expect("a valid update");
        Flag::new("f").updated(update).expect("valid")
    }

    #[test]
    fn each_rule_gives_its_reason_in_order() {
        let f = flag(serde_json::json!({
            "enabled": true, "percentage": 0, "allow": ["al", "both"], "deny": ["dee", "both"]
        }));
        let got = |u: &str| {
            let e = f.evaluate(u);
            (e.value, e.reason)
        };
        assert_eq!(got("al"), (true, Reason::TargetingMatch), "allow list");
        assert_eq!(got("dee"), (false, Reason::TargetingMatch), "deny list");
        assert_eq!(got("both"), (false, Reason::TargetingMatch), "deny wins");
        assert_eq!(got("zed"), (false, Reason::Split), "0% split");
        let off = f.updated(FlagUpdate {
            enabled: Some(false),
            ..FlagUpdate::default()
        });
        let off = off.expect("valid");
        assert_eq!(
            off.evaluate("al").reason,
            Reason::Disabled,
            "off beats lists"
        );
        let all = f.updated(FlagUpdate {
            percentage: Some(100),
            ..FlagUpdate::default()
        });
        let e = all.expect("valid").evaluate("zed");
        assert_eq!(
            (e.value, e.reason),
            (true, Reason::Default),
            "100% is no split"
        );
    }

    #[test]
    fn an_update_keeps_what_it_does_not_name() {
        let f = flag(serde_json::json!({ "enabled": true, "percentage": 20, "allow": ["a"] }));
        let g = f
            .updated(FlagUpdate {
                percentage: Some(30),
                ..FlagUpdate::default()
            })
            .expect("valid");
        assert!(g.enabled && g.allow.contains("a") && g.salt == "f" && g.percentage == 30);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let base = Flag::new("f");
        let bad = |u: FlagUpdate| base.updated(u).expect_err("refused").to_string();
        assert!(
            bad(FlagUpdate {
                percentage: Some(101),
                ..FlagUpdate::default()
            })
            .contains("0 to 100")
        );
        let long: BTreeSet<String> = (0..=MAX_LIST).map(|i| i.to_string()).collect();
        assert!(
            bad(FlagUpdate {
                allow: Some(long),
                ..FlagUpdate::default()
            })
            .contains("at most")
        );
        assert!(
            bad(FlagUpdate {
                deny: Some([String::new()].into()),
                ..FlagUpdate::default()
            })
            .contains("deny")
        );
        assert!(check_key("no spaces").is_err() && check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(check_key("new-ui.v2_b").is_ok());
        let typo = serde_json::from_str::<FlagUpdate>(r#"{"percent": 10}"#);
        assert!(
            typo.expect_err("unknown field")
                .to_string()
                .contains("percent")
        );
    }
}
