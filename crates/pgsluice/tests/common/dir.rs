//! A directory for one test's files.

use std::path::PathBuf;

/// A directory for one test's files under the system temp dir
/// (`pgsluice-<name>-<pid>`, emptied first), removed with everything in it on drop.
pub struct Dir(pub PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    /// A fresh, empty directory for test `name`.
    pub fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("pgsluice-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    /// The path of `file` in the directory, as a string (for configuration files).
    pub fn path(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_owned()
    }

    /// Writes `text` to `name` in the directory; its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}
