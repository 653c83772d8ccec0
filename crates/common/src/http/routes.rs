//! [`MasterRoutes`]: the paths the master answers itself, and the axum `Router` that answers them.
//!
//! Admin and observability routes (`/health`, `/metrics`, stats, `/admin/…`) are the master's because
//! only the master sees the whole cluster; every other path is a worker's. The table is built once
//! by the lesson and read on every request, so matching is a scan of a few strings.
//!
//! Depends on nothing else in the crate.

/// Paths the master answers itself, and the router that answers them.
#[derive(Clone, Default)]
pub struct MasterRoutes {
    exact: Vec<String>,
    prefixes: Vec<String>,
    pub(crate) router: axum::Router,
}

impl MasterRoutes {
    /// `paths` are matched exactly, except those ending in `/` which match as prefixes
    /// (`/admin/` takes `/admin/anything`). `router` must answer all of them.
    pub fn new(paths: &[&str], router: axum::Router) -> Self {
        let (prefixes, exact) = paths
            .iter()
            .map(|p| p.to_string())
            .partition(|p| p.ends_with('/') && p.len() > 1);
        Self {
            exact,
            prefixes,
            router,
        }
    }

    /// Adds another set of routes in front.
    pub fn merge(mut self, other: MasterRoutes) -> Self {
        self.exact.extend(other.exact);
        self.prefixes.extend(other.prefixes);
        self.router = self.router.merge(other.router);
        self
    }

    /// Wraps the router in layers (e.g. security headers), through `f`; the paths stay.
    pub fn layer(mut self, f: impl FnOnce(axum::Router) -> axum::Router) -> Self {
        self.router = f(self.router);
        self
    }

    /// Whether the master answers `path` itself.
    pub(crate) fn owns(&self, path: &str) -> bool {
        self.exact.iter().any(|p| p == path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }
}
