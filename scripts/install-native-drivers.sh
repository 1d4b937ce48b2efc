#!/usr/bin/env bash
# Installs the non-Python PostgreSQL drivers the client suite (tests/tests/drivers_native.rs) runs
# through the proxy, from Debian's packages, when missing: pgjdbc with the JDK, pgx v4 with the Go
# toolchain (built offline from /usr/share/gocode), ruby-pg, PHP's PDO pgsql, Perl's DBD::Pg, and
# node-postgres. Debian's node-pg depends on Debian's nodejs, which apt refuses next to a
# NodeSource nodejs, so its packages are downloaded and unpacked (dpkg -x) into $NODE_DIR, which
# the suite uses as NODE_PATH. node-pg bundles pg-types, pg-protocol, pg-cursor, pgpass ...;
# pgpass needs node-split2 (and xtend); pg-native (node-libpq) and pg-query-stream are not used.
set -euo pipefail

NODE_DIR=/opt/pgrepl-drivers/node_modules
packages=(default-jdk-headless libpostgresql-jdbc-java golang-go golang-github-jackc-pgx-v4-dev
  ruby-pg php-cli php-pgsql libdbd-pg-perl)
node_packages=(node-pg node-split2 node-xtend)

missing=()
for pkg in "${packages[@]}"; do
  case "$pkg" in
    # Any installed JDK 17 will do (javac on the PATH), not only Debian's metapackage.
    default-jdk-headless) command -v javac >/dev/null || missing+=("$pkg") ;;
    *) dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || missing+=("$pkg") ;;
  esac
done
# node-pg is unpacked for the nodejs already installed (NodeSource here); Debian's otherwise.
command -v node >/dev/null || missing+=(nodejs)
node_missing=false
for module in pg pg-cursor split2 xtend; do
  [ -f "$NODE_DIR/$module/package.json" ] || node_missing=true
done

if [ ${#missing[@]} -eq 0 ] && ! $node_missing; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  $node_missing && missing+=("${node_packages[@]}")
  echo "install-native-drivers: missing ${missing[*]}; run as root or install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-native-drivers: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if $node_missing; then
  echo "install-native-drivers: unpacking ${node_packages[*]} into $NODE_DIR"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # apt downloads as its sandbox user, who must own the folder.
  chown _apt "$work" 2>/dev/null || true
  (cd "$work" && apt-get download -qq "${node_packages[@]}")
  for deb in "$work"/*.deb; do
    dpkg -x "$deb" "$work/root"
  done
  mkdir -p "$NODE_DIR"
  cp -a "$work/root/usr/share/nodejs/." "$NODE_DIR/"
fi
