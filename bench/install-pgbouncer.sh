#!/usr/bin/env bash
# Provides a PgBouncer for the benchmarks and prints its path on the last line.
#
# Debian bookworm ships PgBouncer 1.18, which has no max_prepared_statements: in transaction
# pooling, pgbench -M prepared then fails (a prepared statement lives on one server connection,
# the next transaction gets another). 1.21 and later track prepared statements themselves. So
# this builds the PgBouncer of a newer Debian release (PGBOUNCER_SUITE, trixie by default) from
# its Debian source package, everything from Debian's archive:
# - the suite's source index is read with a private apt state inside the cache (the system's
#   sources and lists are left alone), and `apt-get source` unpacks the package with Debian's
#   patches;
# - the build dependencies of the binary alone (libevent, c-ares, OpenSSL) come from the
#   installed release's packages (apt-get install), and only the `pgbouncer` binary is built
#   (./configure && make), into the cache, not installed.
# When that cannot be done (the suite unreachable or without pgbouncer, or the build fails),
# it falls back to the installed release's package (apt-get install pgbouncer) and says so.
#
# Idempotent: a finished build (its stamp names the version) is reused as it is.
# Environment: PGBOUNCER_SUITE=trixie, PGREPL_PGBOUNCER_CACHE=/var/cache/pgrepl-pgbouncer.
set -euo pipefail

suite=${PGBOUNCER_SUITE:-trixie}
cache=${PGREPL_PGBOUNCER_CACHE:-/var/cache/pgrepl-pgbouncer}
package=pgbouncer

say() { echo "[install-pgbouncer] $*" >&2; }

# A built binary of any version: the newest stamp wins.
built() {
    local stamp
    stamp=$(find "$cache" -mindepth 2 -maxdepth 2 -name ready 2>/dev/null | sort -V | tail -n 1)
    [[ -n $stamp ]] && echo "$(dirname "$stamp")/pgbouncer"
}

apt_options=(-o DPkg::Lock::Timeout=300 -o APT::Sandbox::User=root -qq)
export DEBIAN_FRONTEND=noninteractive

# Installs Debian packages that are missing.
install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    say "apt-get install ${missing[*]}"
    apt-get install "${apt_options[@]}" -y --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt-get update "${apt_options[@]}" && apt-get install "${apt_options[@]}" -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

# The installed release's package, when nothing newer could be built.
fall_back() {
    say "$*; using the installed release's pgbouncer package instead" \
        "(no max_prepared_statements before 1.21: pgbench -M prepared fails in transaction pooling)"
    command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]] || install_packages pgbouncer
    if [[ -x /usr/sbin/pgbouncer ]]; then echo /usr/sbin/pgbouncer; else command -v pgbouncer; fi
    exit 0
}

# The Debian archive the configured sources use (deb822 or one-line), not the security one.
debian_mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\/\{0,1\}\)[[:space:]]*$/\1/p' | head -n 1)
    [[ -n $uri ]] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\/debian\/\{0,1\}\)[[:space:]].*/\2/p' | head -n 1)
    echo "${uri:-http://deb.debian.org/debian}"
}

if binary=$(built); then
    echo "$binary"
    exit 0
fi
[[ $EUID -eq 0 ]] || { say "no PgBouncer built yet; run as root (apt-get)"; exit 1; }
started=$(date +%s)

# --- the suite's source index, in a private apt state -----------------------

state=$cache/apt
mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
cat >"$state/debian.sources" <<EOF
Types: deb-src
URIs: $(debian_mirror)
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
private=(-o Dir::Etc::sourcelist="$state/debian.sources" -o Dir::Etc::sourceparts=/nonexistent
    -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache")
say "reading the $suite source index from $(debian_mirror)"
timeout 300 apt-get update "${apt_options[@]}" "${private[@]}" >&2 ||
    fall_back "cannot read Debian $suite's source index"
version=$(apt-cache "${private[@]}" showsrc "$package" 2>/dev/null |
    sed -n 's/^Version: //p' | sort -V | tail -n 1)
[[ -n $version ]] || fall_back "Debian $suite has no source package $package"
upstream=${version%%-*}
say "building PgBouncer $version (Debian $suite) from source"

# --- the build -----------------------------------------------------------------

install_packages dpkg-dev gcc make pkg-config libevent-dev libc-ares-dev libssl-dev
work=$cache/$version.partial
rm -rf "$work"
mkdir -p "$work"
# (set -e does not apply in a command tested with ||, hence the &&s.)
(
    cd "$work" &&
        timeout 300 apt-get source "${apt_options[@]}" "${private[@]}" "$package=$version" >/dev/null &&
        cd "$package-$upstream" &&
        ./configure --with-cares --without-pam --without-systemd >"$work/configure.log" 2>&1 &&
        make -j "$(nproc)" pgbouncer >"$work/make.log" 2>&1
) || { tail -n 20 "$work"/*.log >&2 2>/dev/null || true; fall_back "building PgBouncer $version failed"; }

dest=$cache/$version
rm -rf "$dest"
mkdir -p "$dest"
cp "$work/$package-$upstream/pgbouncer" "$dest/pgbouncer"
# The private index (tens of MB) is needed again only for another version.
rm -rf "$work" "$state"
# PgBouncer runs as postgres (it refuses root).
chmod -R a+rX "$dest"
"$dest/pgbouncer" --version >&2
date -u +%FT%TZ >"$dest/ready"
say "built PgBouncer $version in $(($(date +%s) - started)) s: $dest/pgbouncer"
echo "$dest/pgbouncer"
