//! [`AbTest`]: who sees which variant, who saw it, who converted.
//!
//! Assignment is a pure function of (salt, user): `bucket(salt, user) < split` sees B, everyone
//! else A. Any process computes it alike, so a worker renders the right variant without asking
//! the master, and a user keeps their variant across requests, workers and restarts. Counting is
//! the master's, in one place: it sees every request, so its figures are the cluster's.
//!
//! Users are counted once: an exposure is the first time a user is served a variant, a
//! conversion the first conversion of an exposed user. That is what the z-test needs (each user
//! one independent trial); a user reloading a page ten times is ten requests, one exposure. The
//! users are kept in a map capped at `AB_MAX_USERS`; once full, new users are still served their
//! variant but not counted, and `/ab/status` says how many were left out.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::stats::{ZTest, two_proportion_z};
use crate::config::{self, ConfigError, Source};
use crate::flags::bucket;

/// One of the two variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Variant {
    /// The control: what users get today.
    A,
    /// The challenger.
    B,
}

impl Variant {
    /// `"A"` or `"B"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::A => "A",
            Variant::B => "B",
        }
    }

    fn index(self) -> usize {
        match self {
            Variant::A => 0,
            Variant::B => 1,
        }
    }
}

/// An experiment's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbSettings {
    /// `AB_EXPERIMENT` (default `checkout`): the experiment's name.
    pub name: String,
    /// `AB_SALT` (default `ab:` + the name): what users are bucketed with. Its own salt, so the
    /// experiment's B group is not the users of some flag's rollout.
    pub salt: String,
    /// `AB_SPLIT` (default 50): the percentage of users who see B.
    pub split: u8,
    /// `AB_MAX_USERS` (default 100,000): the most users counted.
    pub max_users: usize,
}

impl Default for AbSettings {
    fn default() -> Self {
        Self {
            name: "checkout".into(),
            salt: "ab:checkout".into(),
            split: 50,
            max_users: 100_000,
        }
    }
}

impl AbSettings {
    /// Reads `AB_EXPERIMENT`, `AB_SALT`, `AB_SPLIT` and `AB_MAX_USERS`.
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let name = config::var(
            src,
            "AB_EXPERIMENT",
            "1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'",
            |s| {
                crate::flags::flag::check_key(s)
                    .ok()
                    .map(|()| s.to_string())
            },
        )?
        .unwrap_or_else(|| "checkout".into());
        let salt = config::var(src, "AB_SALT", "1 to 256 bytes", |s| {
            (s.len() <= 256).then(|| s.to_string())
        })?
        .unwrap_or_else(|| format!("ab:{name}"));
        let split = config::number(src, "AB_SPLIT", 50u8, 1, 99)?;
        let max_users = config::number(src, "AB_MAX_USERS", 100_000usize, 1, 10_000_000)?;
        Ok(Self {
            name,
            salt,
            split,
            max_users,
        })
    }
}

/// One variant's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Requests served with this variant (a user counts at each).
    pub requests: u64,
    /// Distinct users served this variant.
    pub exposures: u64,
    /// Distinct exposed users who converted.
    pub conversions: u64,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    variant: Variant,
    converted: bool,
}

#[derive(Debug, Default)]
struct Tally {
    users: HashMap<String, Seen>,
    counts: [Counts; 2],
    /// New users served but not counted because the map was full.
    not_counted: u64,
}

/// What [`AbTest::convert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converted {
    /// Counted, for this variant.
    Counted(Variant),
    /// The user had converted already; counted once, not again.
    Already(Variant),
    /// The user was never served a variant (or not counted, the map being full): a conversion
    /// without an exposure would bias the rates, so it is not counted.
    NotExposed,
}

/// `/ab/status`'s body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The experiment's name.
    pub experiment: String,
    /// Its salt.
    pub salt: String,
    /// The percentage of users on B.
    pub split_percent: u8,
    /// Each variant, A first.
    pub variants: Vec<VariantStatus>,
    /// B against A; `None` until both have users and some variation.
    pub significance: Option<Significance>,
    /// Users counted (each once).
    pub users: u64,
    /// `AB_MAX_USERS`.
    pub max_users: usize,
    /// New users served while the map was full, so not counted.
    pub not_counted: u64,
}

/// One variant in [`Status`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantStatus {
    /// `"A"` or `"B"`.
    pub variant: Variant,
    /// Its figures.
    #[serde(flatten)]
    pub counts: Counts,
    /// Conversions / exposures, 0 with no exposures.
    pub conversion_rate: f64,
}

/// The z-test's figures in [`Status`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Significance {
    /// Always `"two-proportion z-test (pooled), two-sided"`.
    pub method: &'static str,
    /// B's conversion rate minus A's.
    pub difference: f64,
    /// The test.
    #[serde(flatten)]
    pub test: ZTest,
    /// Whether `pValue < 0.05`.
    pub significant_at_5_percent: bool,
}

/// A running A/B test. Share it in an `Arc`.
#[derive(Debug)]
pub struct AbTest {
    settings: AbSettings,
    tally: Mutex<Tally>,
}

impl AbTest {
    /// A test with no users yet.
    pub fn new(settings: AbSettings) -> Self {
        Self {
            settings,
            tally: Mutex::new(Tally::default()),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &AbSettings {
        &self.settings
    }

    /// The variant `user` sees: pure, stable, no counting.
    pub fn assign(&self, user: &str) -> Variant {
        if bucket::in_rollout(&self.settings.salt, user, self.settings.split) {
            Variant::B
        } else {
            Variant::A
        }
    }

    /// `user` is being served: their variant, counted (a request, and an exposure the first
    /// time).
    pub fn expose(&self, user: &str) -> Variant {
        let variant = self.assign(user);
        let mut t = self.lock();
        t.counts[variant.index()].requests += 1;
        if !t.users.contains_key(user) {
            if t.users.len() < self.settings.max_users {
                t.users.insert(
                    user.to_string(),
                    Seen {
                        variant,
                        converted: false,
                    },
                );
                t.counts[variant.index()].exposures += 1;
            } else {
                t.not_counted += 1;
            }
        }
        variant
    }

    /// `user` converted (bought, signed up…): counted once per exposed user.
    pub fn convert(&self, user: &str) -> Converted {
        let mut t = self.lock();
        let Some(seen) = t.users.get_mut(user) else {
            return Converted::NotExposed;
        };
        let variant = seen.variant;
        if seen.converted {
            return Converted::Already(variant);
        }
        seen.converted = true;
        t.counts[variant.index()].conversions += 1;
        Converted::Counted(variant)
    }

    /// The figures so far, with the z-test of B against A.
    pub fn status(&self) -> Status {
        let t = self.lock();
        let [a, b] = t.counts;
        let rate = |c: &Counts| {
            if c.exposures == 0 {
                0.0
            } else {
                c.conversions as f64 / c.exposures as f64
            }
        };
        let significance = two_proportion_z(a.conversions, a.exposures, b.conversions, b.exposures)
            .map(|test| Significance {
                method: "two-proportion z-test (pooled), two-sided",
                difference: rate(&b) - rate(&a),
                test,
                significant_at_5_percent: test.p_value < 0.05,
            });
        Status {
            experiment: self.settings.name.clone(),
            salt: self.settings.salt.clone(),
            split_percent: self.settings.split,
            variants: [(Variant::A, a), (Variant::B, b)]
                .into_iter()
                .map(|(variant, counts)| VariantStatus {
                    variant,
                    counts,
                    conversion_rate: rate(&counts),
                })
                .collect(),
            significance,
            users: t.users.len() as u64,
            max_users: self.settings.max_users,
            not_counted: t.not_counted,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        // Counters only: a panic mid-update cannot leave them unusable, at worst one short.
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(max_users: usize) -> AbTest {
        AbTest::new(AbSettings {
            max_users,
            ..AbSettings::default()
        })
    }

    #[test]
    fn users_are_counted_once_and_conversions_need_an_exposure() {
        let ab = test(100);
        let v = ab.expose("alice");
        ab.expose("alice");
        assert_eq!(ab.convert("bob"), Converted::NotExposed);
        assert_eq!(ab.convert("alice"), Converted::Counted(v));
        assert_eq!(ab.convert("alice"), Converted::Already(v));
        let s = ab.status();
        let c = s.variants[v.index()].counts;
        assert_eq!((c.requests, c.exposures, c.conversions), (2, 1, 1));
        assert_eq!(s.users, 1);
    }

    #[test]
    fn the_split_is_about_half_and_assignment_is_stable() {
        let ab = test(10_000);
        for i in 0..4_000 {
            let user = format!("u{i}");
            let v = ab.expose(&user);
            assert_eq!(ab.assign(&user), v, "{user} keeps their variant");
        }
        let s = ab.status();
        let b = s.variants[1].counts.exposures;
        assert!((1_850..=2_150).contains(&b), "{b} of 4,000 on B");
    }

    #[test]
    fn the_user_map_is_capped_and_says_what_it_left_out() {
        let ab = test(3);
        for u in ["a", "b", "c", "d", "e"] {
            ab.expose(u);
        }
        let s = ab.status();
        assert_eq!((s.users, s.not_counted), (3, 2));
        assert_eq!(ab.convert("e"), Converted::NotExposed);
    }

    #[test]
    fn settings_are_read_and_bad_ones_name_themselves() {
        let s = AbSettings::from_source(&[("AB_EXPERIMENT", "banner")]).expect("valid");
        assert_eq!((s.salt.as_str(), s.split), ("ab:banner", 50));
        for (var, bad) in [
            ("AB_SPLIT", "0"),
            ("AB_SPLIT", "x"),
            ("AB_EXPERIMENT", "a b"),
        ] {
            let err = AbSettings::from_source(&[(var, bad)]).expect_err("refused");
            assert_eq!(err.var, var);
        }
    }
}
