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

# openSMILE for the --egemaps tests: research use (audEERING's research-only licence), so it has its own requirements
# file and is not in requirements-dev.txt's chain (docs/dataset.md, "Licences").
python3 -m pip install -q --disable-pip-version-check -r requirements-dev.txt -r requirements-opensmile.txt
# Lint and format first, types beside the suite (mypy takes a core for about 20 s): a finding fails the run
# (configured in pyproject.toml), and mypy's findings are printed after the suite's.
python3 -m ruff check .
python3 -m ruff format --check .
types_log=$(mktemp)
python3 -m mypy server scripts benchmark >"$types_log" 2>&1 &
types_pid=$!
status=0
# Two workers, a test file to each at a time (a file's server and browser are shared by its cases), the files that
# drive a browser one after another on one of them (tests/conftest.py): much of the suite waits on real time (episodes
# played at 60 Hz, a browser's pages), so one worker left the second core idle. TEST_WORKERS=0: one process.
python3 -m pytest -p no:benchmark -n "${TEST_WORKERS:-2}" --dist loadgroup "$@" || status=$?
if ! wait "$types_pid"; then
  cat "$types_log" >&2
  echo "mypy found problems (above)" >&2
  status=1
fi
rm -f "$types_log"
exit "$status"
