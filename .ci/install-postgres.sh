#!/usr/bin/env bash
# Installs Debian's PostgreSQL server package when it is missing (idempotent: a no-op once installed).
# Nothing is started here: the tests start a private server of their own on 127.0.0.1 (tests/tuning/conftest.py).
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-postgres: PostgreSQL is not installed and installing it needs root (apt-get install postgresql)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
