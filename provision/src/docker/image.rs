//! The image both containers run: used as it is when this machine has it, pulled otherwise,
//! with one progress line instead of Docker's stream of per-layer events.

use std::io::{IsTerminal, Write};

use anyhow::{anyhow, Context, Result};
use bollard::models::CreateImageInfo;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use super::error::optional;
use super::DockerRuntime;

impl DockerRuntime {
    /// Makes sure the configured image is on every engine, pulling it where it is not.
    /// Called before step 1, so a missing image is reported before anything is created.
    pub async fn ensure_image(&self) -> Result<()> {
        for engine in &self.engines {
            let place = match self.engines.len() {
                1 => "this machine".to_owned(),
                _ => format!("the Docker engine at {}", engine.location),
            };
            ensure_image_on(&engine.docker, &self.config.image, &place).await?;
        }
        Ok(())
    }
}

/// Makes sure `image` is on the engine `docker` (at `place`, for the message).
async fn ensure_image_on(docker: &Docker, image: &str, place: &str) -> Result<()> {
    let found = optional(docker.inspect_image(image).await)
        .with_context(|| format!("cannot inspect image {image} on {place}"))?;
    if found.is_some() {
        return Ok(());
    }
    pull(docker, image).await.map_err(|e| {
        anyhow!(
            "image {image} is not on {place} and cannot be pulled: {e:#}\n\
             Choose another image with --image ([provision] image); on a machine without a \
             registry, scripts/build-pg-image.sh builds pgrepl/postgres:local"
        )
    })
}

async fn pull(docker: &Docker, image: &str) -> Result<()> {
    let mut options = CreateImageOptionsBuilder::new().from_image(image);
    if !names_tag_or_digest(image) {
        // Without a tag Docker would pull every tag of the repository.
        options = options.tag("latest");
    }
    let mut stream = docker.create_image(Some(options.build()), None, None);
    let mut line = ProgressLine::new(image);
    let mut result = Ok(());
    while let Some(event) = stream.next().await {
        match event {
            Ok(info) => line.show(&info),
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    line.finish();
    result
}

/// Whether the reference ends in `:tag` or `@digest` (a `:` before the last `/` is a
/// registry's port).
fn names_tag_or_digest(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    image.contains('@') || last.contains(':')
}

/// One line on stderr, rewritten in place on a terminal; elsewhere only the pull's overall
/// messages (those without a layer id) are printed, one per line.
struct ProgressLine<'a> {
    image: &'a str,
    terminal: bool,
    drawn: bool,
}

impl<'a> ProgressLine<'a> {
    fn new(image: &'a str) -> Self {
        ProgressLine {
            image,
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn show(&mut self, info: &CreateImageInfo) {
        let text = describe(self.image, info);
        let mut err = std::io::stderr();
        // Progress only: a closed stderr must not fail the pull.
        let _ = if self.terminal {
            self.drawn = true;
            write!(err, "\r\x1b[2K{text}").and_then(|()| err.flush())
        } else if info.id.is_none() {
            writeln!(err, "{text}")
        } else {
            Ok(())
        };
    }

    fn finish(&self) {
        if self.drawn {
            eprintln!();
        }
    }
}

/// `pulling IMAGE: [LAYER] STATUS [CURRENT/TOTAL MB]`.
fn describe(image: &str, info: &CreateImageInfo) -> String {
    let mut text = format!("pulling {image}:");
    if let Some(id) = &info.id {
        text.push_str(&format!(" {id}"));
    }
    text.push_str(&format!(" {}", info.status.as_deref().unwrap_or("")));
    let detail = info.progress_detail.as_ref();
    if let Some((current, total)) = detail.and_then(|d| Some((d.current?, d.total?))) {
        if total > 0 {
            let mb = |bytes: i64| bytes as f64 / 1e6;
            text.push_str(&format!(" {:.1}/{:.1} MB", mb(current), mb(total)));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    #[test]
    fn a_reference_without_tag_gets_latest() {
        assert!(names_tag_or_digest("postgres:16.1"));
        assert!(names_tag_or_digest("pgrepl/postgres:local"));
        assert!(names_tag_or_digest("postgres@sha256:0123"));
        assert!(names_tag_or_digest("registry:5000/pg:16"));
        assert!(!names_tag_or_digest("postgres"));
        assert!(!names_tag_or_digest("registry:5000/pg"));
    }

    #[test]
    fn a_progress_event_is_one_short_line() {
        let info = CreateImageInfo {
            id: Some("a1b2c3".into()),
            status: Some("Downloading".into()),
            progress_detail: Some(ProgressDetail {
                current: Some(1_500_000),
                total: Some(30_000_000),
            }),
            ..Default::default()
        };
        assert_eq!(
            describe("postgres:16.1", &info),
            "pulling postgres:16.1: a1b2c3 Downloading 1.5/30.0 MB"
        );
        let overall = CreateImageInfo {
            status: Some("Pulling from library/postgres".into()),
            ..Default::default()
        };
        assert_eq!(
            describe("postgres:16.1", &overall),
            "pulling postgres:16.1: Pulling from library/postgres"
        );
    }
}
