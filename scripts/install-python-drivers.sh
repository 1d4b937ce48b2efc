#!/usr/bin/env bash
# Installs the Python drivers of the client suite (tests/tests/drivers_python.rs) from PyPI into
# a virtualenv of their own: psycopg2, psycopg 3, asyncpg, SQLAlchemy 2 and Django, at the
# versions pinned in tests/drivers/python/requirements.txt.
#
# The virtualenv is at $PGREPL_PYTHON_VENV, default /opt/pgrepl-venv (the suite looks there
# too): outside the work tree, so `cargo clean` and every worktree share it. A stamp inside it
# holds the requirements it was built from; while they match, this exits at once.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${PGREPL_PYTHON_VENV:-/opt/pgrepl-venv}"
requirements=tests/drivers/python/requirements.txt
stamp="$venv/pgrepl-requirements.txt"

if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi

# A Python 3 that can make virtualenvs: the one on PATH, else Debian's (install-deps.sh installs
# python3-venv when neither can).
python=
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c 'import venv, ensurepip' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "install-python-drivers: no Python 3 with venv: install python3-venv" >&2
  exit 1
fi

echo "install-python-drivers: building $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --only-binary=:all: -r "$requirements"
cp "$requirements" "$stamp"
