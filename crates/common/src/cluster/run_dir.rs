//! The private directory that holds the workers' sockets: created 0700 at start, removed when
//! the master ends.

use std::path::{Path, PathBuf};

use crate::error::BoxError;

/// The private directory holding the workers' sockets; removed when dropped.
pub(super) struct RunDir(PathBuf);

impl RunDir {
    /// Where the sockets go.
    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    pub(super) fn create() -> Result<Self, BoxError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!(
            "rcp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        // 0700: only our user may connect to the workers' sockets.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_directory_is_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = RunDir::create().unwrap();
        let path = dir.0.clone();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "only the owner may reach the workers' sockets");
        drop(dir);
        assert!(!path.exists());
    }
}
