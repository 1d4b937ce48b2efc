//! Files in and out of a container (`docker cp`), which Docker moves as tar archives. Works on
//! stopped containers too, volumes included.

use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bollard::body_full;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::TryStreamExt;

use super::error::optional;
use super::names::SERVER_USER;
use super::DockerRuntime;
use crate::runtime::NodeId;

impl DockerRuntime {
    /// The file at `path` in `container` on `node`'s engine, or `None` when there is none.
    pub(super) async fn download(
        &self,
        node: NodeId,
        container: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let stream = self
            .engine(node)
            .download_from_container(container, Some(options));
        let tar = stream
            .try_fold(Vec::new(), |mut tar, chunk| async move {
                tar.extend_from_slice(&chunk);
                Ok(tar)
            })
            .await;
        let what = || format!("cannot read {path} from container {container}");
        match optional(tar).with_context(what)? {
            Some(tar) => Ok(Some(only_file(&tar).with_context(what)?)),
            None => Ok(None),
        }
    }

    /// Writes `contents` to `path` in `container` on `node`'s engine, owned by the server's
    /// user and group root (the tutorial's `chown postgres:root`), with permission `mode`.
    pub(super) async fn upload(
        &self,
        node: NodeId,
        container: &str,
        path: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<()> {
        let what = || format!("cannot write {path} in container {container}");
        let (dir, name) = split_path(path).with_context(what)?;
        let uid = self.server_uid(node, container).await.with_context(what)?;
        let tar = one_file_tar(name, contents, uid, mode).with_context(what)?;
        let options = UploadToContainerOptionsBuilder::new().path(dir).build();
        self.engine(node)
            .upload_to_container(container, Some(options), body_full(tar.into()))
            .await
            .with_context(what)
    }

    /// The server user's uid in `container`, from its /etc/passwd: readable before the
    /// container first runs, when there is nothing to exec `id` in.
    async fn server_uid(&self, node: NodeId, container: &str) -> Result<u32> {
        let passwd = self
            .download(node, container, "/etc/passwd")
            .await?
            .context("the image has no /etc/passwd")?;
        passwd_uid(&String::from_utf8_lossy(&passwd), SERVER_USER)
            .with_context(|| format!("the image has no user {SERVER_USER}"))
    }
}

/// `/a/b/c` as (`/a/b`, `c`).
fn split_path(path: &str) -> Result<(&str, &str)> {
    let path = Path::new(path);
    match (
        path.parent().and_then(Path::to_str),
        path.file_name().and_then(|n| n.to_str()),
    ) {
        (Some(dir), Some(name)) if !dir.is_empty() => Ok((dir, name)),
        _ => bail!("{} is not an absolute path to a file", path.display()),
    }
}

/// A tar archive of one regular file.
fn one_file_tar(name: &str, contents: &[u8], uid: u32, mode: u32) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_uid(uid.into());
    header.set_gid(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    header.set_mtime(now.as_secs());
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, contents)?;
    builder.into_inner()
}

/// The contents of the one file Docker's archive of a file path holds.
fn only_file(tar: &[u8]) -> Result<Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut entry = archive
        .entries()?
        .next()
        .context("the archive is empty")??;
    if !entry.header().entry_type().is_file() {
        bail!("it is not a regular file");
    }
    let mut contents = Vec::new();
    entry.read_to_end(&mut contents)?;
    Ok(contents)
}

/// The uid /etc/passwd gives `user`.
fn passwd_uid(passwd: &str, user: &str) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_with_its_owner_and_mode() {
        let tar = one_file_tar(".pgpass", b"*:*:*:replication_user:pw\n", 999, 0o600).unwrap();
        assert_eq!(only_file(&tar).unwrap(), b"*:*:*:replication_user:pw\n");
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        let header = entry.header();
        assert_eq!(header.path().unwrap().to_str(), Some(".pgpass"));
        assert_eq!(header.uid().unwrap(), 999);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.mode().unwrap(), 0o600);
    }

    #[test]
    fn an_empty_file_round_trips_and_a_directory_is_refused() {
        let tar = one_file_tar("standby.signal", b"", 999, 0o600).unwrap();
        assert_eq!(only_file(&tar).unwrap(), b"");
        let mut header = tar::Header::new_gnu();
        header.set_path("data").unwrap();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &[][..]).unwrap();
        assert!(only_file(&builder.into_inner().unwrap()).is_err());
    }

    #[test]
    fn paths_split_into_directory_and_name() {
        assert_eq!(
            split_path("/var/lib/postgresql/.pgpass").unwrap(),
            ("/var/lib/postgresql", ".pgpass")
        );
        assert_eq!(
            split_path("/replication_user.sql").unwrap(),
            ("/", "replication_user.sql")
        );
        assert!(split_path("/").is_err());
        assert!(split_path("relative").is_err());
    }

    #[test]
    fn the_uid_comes_from_the_users_line() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres_exporter:x:5:5::/:/bin/false\n\
                      postgres:x:999:999::/var/lib/postgresql:/bin/bash\n";
        assert_eq!(passwd_uid(passwd, "postgres"), Some(999));
        assert_eq!(passwd_uid(passwd, "root"), Some(0));
        assert_eq!(passwd_uid(passwd, "nobody"), None);
    }
}
