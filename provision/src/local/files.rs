//! Reading and writing a node's files directly: they are on this machine.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;

use super::programs::Programs;

/// The contents of `path`, or `None` if it does not exist.
pub(super) async fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `path` with permission `mode`, owned by the server user (group root) when we are
/// root. Mode and owner are set before the contents, so a secret is never readable by more
/// users than it should be, even when the file existed with a wider mode.
pub(super) async fn write(
    programs: &Programs,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<()> {
    let context = || format!("cannot write {}", path.display());
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .await
        .with_context(context)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .await
        .with_context(context)?;
    programs.hand_over_file(path)?;
    file.write_all(contents).await.with_context(context)?;
    file.flush().await.with_context(context)
}
