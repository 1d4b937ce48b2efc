#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need from Debian's packages, when missing:
# the PostgreSQL server and clients (initdb, pg_ctl, pg_basebackup, psql, pgbench), PgBouncer (for
# the benchmark), openssl (the TLS test makes a self-signed certificate), debootstrap (the
# local PostgreSQL image the Docker tests use: scripts/build-pg-image.sh) and Prometheus (for
# promtool, which checks deploy/'s alert rules and scrape configuration; its service is not
# started), python3-venv, and iproute2 and nftables (the partition suite's network namespaces
# and firewalls: tests/src/netns.rs); then the Python drivers of the client suite, from PyPI.
set -euo pipefail

missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v openssl >/dev/null || missing+=(openssl)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v promtool >/dev/null || missing+=(prometheus)
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
# The Python driver suite's virtualenv (scripts/install-python-drivers.sh).
python3 -c 'import venv, ensurepip' 2>/dev/null ||
  /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The client suite's drivers: from PyPI (tests/tests/drivers_python.rs) and from Debian
# (tests/tests/drivers_native.rs).
"$(dirname "$0")/install-python-drivers.sh"
"$(dirname "$0")/install-native-drivers.sh"

# PostgreSQL's own regression suite for the installed server (tests/tests/regress.rs).
"$(dirname "$0")/install-regress.sh" >/dev/null
