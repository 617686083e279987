//! A small file system for tests of a full disk: a real tmpfs, mounted for
//! one test (root only) and unmounted when dropped. Where mounting is not
//! allowed the test says it skipped, unless `BBC_REQUIRE_MOUNT` is set (CI),
//! where that fails.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. "24m") at `at`.
    pub fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap_or_else(|e| panic!("{}: {e}", at.display()));
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("BBC_REQUIRE_MOUNT").is_none(),
                "cannot mount a tmpfs (BBC_REQUIRE_MOUNT is set)"
            );
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk(at.to_path_buf()))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Fills the disk to the last byte with the file `name`; returns its
    /// path (remove it to give the space back).
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        path
    }

    /// Fills the disk with the file `name` but for about `free` bytes;
    /// returns its path.
    pub fn fill_but(&self, name: &str, free: u64) -> PathBuf {
        let path = self.fill(name);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        f.set_len(len.saturating_sub(free))
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
