//! Two small file operations both long-running programs need for the
//! files they share in the run and data directories.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Create `dir` (and its parents) with mode 0700, or make an existing one
/// 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Make everything this process creates from now on closed to others
/// (umask 027): slotgate's data and run directories are passable by
/// everyone (each slot's own uid reaches its sandbox and socket through
/// them), so a file in them must never be readable by others by default.
pub fn close_new_files_to_others() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o027));
}

/// Replace `path`'s content whole: a reader sees the old content or the
/// new one, never a part (written to a file beside it, synced, renamed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_0700_even_if_it_existed_and_a_replaced_file_has_the_new_content() {
        let base = std::env::temp_dir().join(format!("slotapi-files-{}", std::process::id()));
        let dir = base.join("a/b");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let f = dir.join("pid");
        write_atomic(&f, b"1\n").unwrap();
        write_atomic(&f, b"22\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "22\n");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
