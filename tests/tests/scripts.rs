//! The project's shell scripts: each parses, and the image build takes its Debian mirror from
//! the machine's apt sources rather than a host written into the script.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `shell -n path`: parse without running.
fn parses(shell: &str, path: &Path) {
    let out = Command::new(shell).arg("-n").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{} does not parse with {shell}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_script_parses() {
    let mut checked = 0;
    for dir in ["scripts", "bench", ".ci"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sh") || path.ends_with(".ci/run") {
                parses("bash", &path);
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "only {checked} scripts found");
    // The entrypoint runs under the image's /bin/sh (dash), not bash.
    parses("sh", &repo().join("docker/postgres-entrypoint.sh"));
}

#[test]
fn the_image_build_reads_its_mirror_from_apt_sources() {
    let script = std::fs::read_to_string(repo().join("scripts/build-pg-image.sh")).unwrap();
    for needle in ["/etc/apt/sources.list", "Signed-By", "VERSION_CODENAME"] {
        assert!(
            script.contains(needle),
            "build-pg-image.sh does not read {needle}"
        );
    }
    assert!(
        !script.contains("http://") && !script.contains("https://"),
        "build-pg-image.sh names a mirror host itself"
    );
}
