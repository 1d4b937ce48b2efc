//! Locating the PostgreSQL programs and running the server ones under a user
//! PostgreSQL accepts: it refuses to run as root, so as root they run as
//! `postgres` through `runuser`.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The account server programs run as when we are root.
const SERVER_USER: &str = "postgres";

/// Where Debian-style packages install one directory per major version.
const PACKAGE_ROOT: &str = "/usr/lib/postgresql";

/// The directory holding initdb, pg_ctl, psql, ...: `$PG_BIN` if set, else the
/// highest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
///
/// `pg_config --bindir` is not used because on Debian it describes the client
/// package, which may not be the server version that is installed.
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

/// The PostgreSQL programs, and whether server ones must switch user.
#[derive(Debug, Clone)]
pub(crate) struct PgTools {
    bin: PathBuf,
    as_server_user: bool,
}

impl PgTools {
    pub(crate) fn locate() -> Result<PgTools> {
        Ok(PgTools {
            bin: pg_bin_dir()?,
            // SAFETY: geteuid has no preconditions and cannot fail.
            as_server_user: unsafe { libc::geteuid() } == 0,
        })
    }

    /// A command for a server program (initdb, pg_ctl, pg_basebackup).
    ///
    /// It runs in `cwd` because the server user may not be allowed into ours.
    pub(crate) fn server(&self, program: &str, cwd: &Path) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_server_user {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", SERVER_USER, "--"]).arg(exe);
            cmd
        } else {
            Command::new(exe)
        };
        cmd.current_dir(cwd);
        cmd
    }

    /// A command for a client program (psql), which runs as whoever we are.
    pub(crate) fn client(&self, program: &str) -> Command {
        Command::new(self.bin.join(program))
    }

    /// Makes the server user own `path`, so server programs can write there.
    pub(crate) fn hand_over(&self, path: &Path) -> Result<()> {
        if !self.as_server_user {
            return Ok(());
        }
        let (uid, gid) = server_user_ids()?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {} to {SERVER_USER}", path.display()))
    }
}

fn server_user_ids() -> Result<(u32, u32)> {
    let name = CString::new(SERVER_USER)?;
    // SAFETY: name is a valid C string; the returned record is read at once,
    // before any other call could overwrite libc's static buffer.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!("running as root needs a `{SERVER_USER}` user, and there is none");
    }
    // SAFETY: entry is non-null and points to libc's passwd record.
    let entry = unsafe { &*entry };
    Ok((entry.pw_uid, entry.pw_gid))
}
