#!/usr/bin/env bash
# Builds a local PostgreSQL image when it is missing (cached by tag), because no container
# registry can be reached from these machines: `debootstrap --variant=minbase
# --include=postgresql` of this machine's own Debian suite, with the mirror and keyring read from
# the machine's apt sources, imported with `docker import`, with an entrypoint that behaves like
# the official image's (docker/postgres-entrypoint.sh). `docker import` cannot set STOPSIGNAL: give
# containers SIGINT (fast shutdown) as their stop signal when creating them, as the official
# image does.
#
# Usage: scripts/build-pg-image.sh [TAG]   (default pgrepl/postgres:local); prints the tag.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-pgrepl/postgres:local}
# One build at a time: callers running in parallel (test suites) wait for it, then find the
# image built.
exec 9>"${TMPDIR:-/tmp}/pgrepl-build-pg-image.lock"
flock 9
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "build-pg-image: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
}

# The suite, mirror and keyring this machine itself uses (deb822 or one-line format).
. /etc/os-release
suite=$VERSION_CODENAME
sources=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
mirror=$(awk -v s="$suite" '
    /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) found = uri }
    /^Signed-By:/ && found && !key { key = $2 }
    END { print found }' <<<"$sources")
keyring=$(awk -v s="$suite" '
    /^URIs:/ { uri = $2; hit = 0 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
    /^Signed-By:/ && hit { print $2; exit }' <<<"$sources")
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk -v s="$suite" '$1 == "deb" && $3 == s { print $2; exit }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "build-pg-image: no apt source for suite $suite found" >&2; exit 1; }
keyring=${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}

root=$(mktemp -d "${TMPDIR:-/tmp}/pgrepl-image.XXXXXX")
trap 'rm -rf "$root"' EXIT
echo "build-pg-image: debootstrap $suite from $mirror (keyring $keyring)" >&2
debootstrap --variant=minbase --include=postgresql --keyring="$keyring" \
    "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"

# The package made a cluster of its own in the chroot; the image initialises PGDATA instead.
rm -rf "$root"/var/lib/postgresql/*/main "$root"/etc/postgresql/*/main
bindir=$(dirname "$(ls -d "$root"/usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)")
bindir=${bindir#"$root"}
install -m 0755 docker/postgres-entrypoint.sh "$root/usr/local/bin/docker-entrypoint.sh"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

tar -C "$root" -c . | docker import \
    --change "ENV PATH=$bindir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change 'ENV PGDATA=/var/lib/postgresql/data' \
    --change 'VOLUME /var/lib/postgresql/data' \
    --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    --change 'CMD ["postgres"]' \
    --change 'EXPOSE 5432' \
    - "$tag" >/dev/null
echo "$tag"
