//! What evaluating a flag answers: the value and the reason, in OpenFeature's words.
//!
//! OpenFeature (the CNCF specification for feature-flag clients) names why a flag resolved as it
//! did, so code and dashboards can tell "off because the flag is off" from "off because this user
//! was not picked". We use the reasons of its specification's *Resolution reasons* that apply to a
//! boolean flag with lists and a percentage, plus `ERROR` for a flag that does not exist.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a flag resolved to its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The user is in the flag's allow or deny list.
    TargetingMatch,
    /// The user's stable bucket decided (a percentage rollout below 100%).
    Split,
    /// The flag is on for everyone: no rule singled this user out.
    Default,
    /// The flag is switched off.
    Disabled,
    /// The flag could not be evaluated; [`Evaluation::error_code`] says why.
    Error,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        })
    }
}

/// A flag's value for one user, with the reason (OpenFeature's "evaluation details").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// The flag asked for.
    pub flag_key: String,
    /// Whether the feature is on for this user.
    pub value: bool,
    /// `"on"` or `"off"`: OpenFeature's variant, the value's name.
    pub variant: String,
    /// Why.
    pub reason: Reason,
    /// With [`Reason::Error`]: `FLAG_NOT_FOUND`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl Evaluation {
    /// `value` for `reason`.
    pub fn new(key: &str, value: bool, reason: Reason) -> Self {
        Self {
            flag_key: key.to_string(),
            value,
            variant: if value { "on" } else { "off" }.to_string(),
            reason,
            error_code: None,
        }
    }

    /// The answer for a flag that does not exist: off, `ERROR`, `FLAG_NOT_FOUND`, as OpenFeature
    /// has a client fall back to the default value its caller passed (off, for a feature).
    pub fn not_found(key: &str) -> Self {
        Self {
            error_code: Some("FLAG_NOT_FOUND".to_string()),
            ..Self::new(key, false, Reason::Error)
        }
    }
}
