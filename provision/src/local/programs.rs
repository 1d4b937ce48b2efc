//! Locating the installed PostgreSQL programs and running the server ones under a user
//! PostgreSQL accepts: `postgres`, `initdb` and `pg_ctl` refuse to run as root, so as root
//! they run as `postgres` through `runuser`, in directories handed over to that user.

use std::ffi::{CString, OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The account server programs run as when we are root (the image's user, too).
const SERVER_USER: &str = "postgres";

/// Where Debian-style packages install one directory per major version.
const PACKAGE_ROOT: &str = "/usr/lib/postgresql";

/// The directory holding initdb, pg_ctl, psql, ...: `$PG_BIN` if set, else the highest
/// `/usr/lib/postgresql/<version>/bin` that has `initdb`.
///
/// `pg_config --bindir` is not used because on Debian it describes the client package, which
/// may not be the server version that is installed.
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!("PG_BIN={} has no initdb", dir.display());
        }
        return Ok(dir);
    }
    let entries = std::fs::read_dir(PACKAGE_ROOT)
        .with_context(|| format!("no PostgreSQL server in {PACKAGE_ROOT}; set PG_BIN"))?;
    entries
        .flatten()
        .filter_map(|e| {
            let version = version_key(e.file_name().to_str()?)?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .with_context(|| format!("no {PACKAGE_ROOT}/<version>/bin with initdb; set PG_BIN"))
}

/// "15" -> [15], "9.6" -> [9, 6]; None for names that are not versions.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// The PostgreSQL programs, and the user server programs must switch to, if any.
#[derive(Debug, Clone)]
pub struct Programs {
    bin: PathBuf,
    /// `postgres`'s uid and gid when we are root; None when we run the servers ourselves.
    server_user: Option<(u32, u32)>,
}

impl Programs {
    pub(super) fn locate() -> Result<Programs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Ok(Programs {
            bin: pg_bin_dir()?,
            server_user: if root { Some(server_user_ids()?) } else { None },
        })
    }

    /// The PostgreSQL bin directory.
    pub(super) fn bin(&self) -> &Path {
        &self.bin
    }

    /// `program` in the bin directory when it is there, else as given (found on `PATH`).
    fn resolve(&self, program: &str) -> OsString {
        let exe = self.bin.join(program);
        if exe.is_file() {
            exe.into_os_string()
        } else {
            program.into()
        }
    }

    /// A command for a client program (psql, pg_isready), which runs as whoever we are.
    pub fn client(&self, program: &str) -> Command {
        Command::new(self.resolve(program))
    }

    /// A command for a server program (initdb, pg_ctl), run as the server user.
    pub(super) fn server(&self, program: &str) -> Command {
        self.as_server_user(self.resolve(program))
    }

    /// A command for any program `exe`, run as the server user.
    pub(super) fn as_server_user(&self, exe: impl AsRef<OsStr>) -> Command {
        if self.server_user.is_none() {
            return Command::new(exe);
        }
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SERVER_USER, "--"]).arg(exe);
        cmd
    }

    /// Makes the server user own the directory `path`, so server programs can write there.
    pub(super) fn hand_over(&self, path: &Path) -> Result<()> {
        match self.server_user {
            Some((uid, gid)) => chown(path, uid, gid),
            None => Ok(()),
        }
    }

    /// Makes the server user, group root, own the file `path`, as the tutorial's
    /// `chown postgres:root` does.
    pub(super) fn hand_over_file(&self, path: &Path) -> Result<()> {
        match self.server_user {
            Some((uid, _)) => chown(path, uid, 0),
            None => Ok(()),
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {} to {SERVER_USER}", path.display()))
}

fn server_user_ids() -> Result<(u32, u32)> {
    let name = CString::new(SERVER_USER)?;
    // SAFETY: name is a valid C string; the returned record is read at once, before any
    // other call could overwrite libc's static buffer.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!("running as root needs a `{SERVER_USER}` user, and there is none");
    }
    // SAFETY: entry is non-null and points to libc's passwd record.
    let entry = unsafe { &*entry };
    Ok((entry.pw_uid, entry.pw_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_key("15"), Some(vec![15]));
        assert_eq!(version_key("9.6"), Some(vec![9, 6]));
        assert_eq!(version_key("common"), None);
        assert!(version_key("16") > version_key("9.6"));
    }
}
