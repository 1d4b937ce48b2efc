#!/usr/bin/env bash
# Prepares PostgreSQL's own regression suite (src/test/regress) for the INSTALLED postgresql-15,
# so that tests/tests/regress.rs can run it against the test servers, directly and through the
# proxy. Prints the suite's directory on its last line.
#
# Everything comes from Debian's package registry, at the installed version:
# - the source package (`apt-get source`, which needs a deb-src entry: one is added beside the
#   configured Debian sources when none is there), for the schedule, the SQL scripts, the expected
#   outputs, the data files and the C sources of the test modules;
# - postgresql-server-dev-15, downloaded and unpacked into the cache only (not installed: its
#   dependencies include a whole clang), for the server's headers that the modules compile with.
# pg_regress itself comes with postgresql-client-15. The modules (regress.so, and autoinc.so and
# refint.so from contrib/spi, which the triggers test loads) are compiled with the headers of the
# installed server, without configuring the source tree, which is what makes this quick.
#
# Idempotent: a finished cache (its stamp names the version) is reused as it is.
set -euo pipefail

cache=${PGREPL_REGRESS_CACHE:-/var/cache/pgrepl-regress}
major=15
package=postgresql-$major

version=$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || true)
if [ -z "$version" ]; then
  echo "install-regress: $package is not installed (run scripts/install-deps.sh)" >&2
  exit 1
fi
upstream=${version%%-*}
suite=$cache/$version/$package-$upstream/src/test/regress
stamp=$cache/$version/ready

if [ -f "$stamp" ]; then
  echo "$suite"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-regress: the regression suite for $package $version is not prepared; run as root" >&2
  exit 1
fi
started=$(date +%s)

# Downloads go into the cache, which apt's unprivileged _apt user need not reach.
apt_options=(-o DPkg::Lock::Timeout=300 -o APT::Sandbox::User=root -qq)
export DEBIAN_FRONTEND=noninteractive

# A deb-src entry for every Debian deb entry, when apt knows no source of the package yet.
has_source() { apt-cache showsrc "$package" 2>/dev/null | grep -c "^Version: $version\$" >/dev/null; }
if ! has_source; then
  deb_src=/etc/apt/sources.list.d/pgrepl-deb-src.sources
  {
    for file in /etc/apt/sources.list.d/*.sources; do
      [ -f "$file" ] && [ "$file" != "$deb_src" ] || continue
      # deb822 stanzas: keep those of type deb that name a Debian archive, as deb-src.
      awk 'BEGIN { RS = ""; ORS = "\n\n" }
           /(^|\n)Types:[^\n]*deb([ \n]|$)/ && /URIs:[^\n]*debian/ {
             sub(/(^|\n)Types:[^\n]*/, "\nTypes: deb-src"); sub(/^\n/, ""); print }' "$file"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$file" ] || continue
      # One-line entries: "deb [options] URI suite components".
      sed -n 's/^deb\(\s.*debian.*\)$/\1/p' "$file" | while read -r rest; do
        set -- $rest
        [ "${1:0:1}" = "[" ] && shift
        printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n' "$1" "$2" "${*:3}"
      done
    done
  } >"$deb_src"
  apt-get update "${apt_options[@]}"
  if ! has_source; then
    echo "install-regress: Debian's archive has no source of $package $version" >&2
    exit 1
  fi
fi

# apt-get source unpacks with dpkg-source (dpkg-dev); the modules compile with gcc.
tools=()
command -v dpkg-source >/dev/null || tools+=(dpkg-dev)
command -v gcc >/dev/null || tools+=(gcc)
if [ ${#tools[@]} -gt 0 ]; then
  apt-get install "${apt_options[@]}" -y --no-install-recommends "${tools[@]}" >/dev/null
fi

work=$cache/$version.partial
rm -rf "$work"
mkdir -p "$work"
cd "$work"
# The source tree, with Debian's patches applied (apt-get source runs dpkg-source -x).
apt-get source "${apt_options[@]}" "$package=$version" >/dev/null
# The server's headers, unpacked only.
apt-get download "${apt_options[@]}" "postgresql-server-dev-$major=$version"
dpkg-deb -x postgresql-server-dev-"$major"_*.deb dev
rm -f ./*.deb ./*.tar.* ./*.dsc

tree=$work/$package-$upstream
include=$work/dev/usr/include/postgresql/$major/server
compile() { # output, sources...
  local output=$1
  shift
  gcc -O2 -fPIC -shared -I"$include" -I"$tree/src/include" \
    -o "$output" "$@"
}
# pg_regress gives the tests --dlpath as PG_LIBDIR: the modules sit beside the suite.
compile "$tree/src/test/regress/regress.so" "$tree/src/test/regress/regress.c"
compile "$tree/src/test/regress/autoinc.so" "$tree/contrib/spi/autoinc.c"
# contrib/spi's Makefile builds refint verbose: the triggers test expects its notices.
compile "$tree/src/test/regress/refint.so" -DREFINT_VERBOSE "$tree/contrib/spi/refint.c"

# The servers run as postgres and read the suite's data files; keep what the runs need.
chmod -R a+rX "$work"
rm -rf "${cache:?}/$version"
mv "$work" "$cache/$version"
date -u +%FT%TZ >"$stamp"
echo "install-regress: prepared the regression suite of $package $version in $(($(date +%s) - started)) s" >&2
echo "$suite"
