#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, check lint, format and types, then run the suite.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v caddy >/dev/null || need+=(caddy)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]} (install them with apt-get as root)" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# openSMILE for the --egemaps tests: research use (audEERING's research-only licence), so it has its own requirements
# file and is not in requirements-dev.txt's chain (docs/dataset.md, "Licences").
python3 -m pip install -q --disable-pip-version-check -r requirements-opensmile.txt
# Lint, format and types first: a finding fails the run (configured in pyproject.toml).
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy server scripts benchmark
exec python3 -m pytest "$@"
