#!/usr/bin/env bash
# The README's test command: installs what the suite needs, then runs pytest.
#
# Needs: python3 (>= 3.11) with venv; redis-server, redis-sentinel and Chromium (Debian
# packages, installed here with apt-get when running as root, otherwise named so you can
# install them). Chromium is $CHROMIUM (default /usr/bin/chromium): the same variable the
# browser fixtures (tests/web/conftest.py) use.
#
# Python packages are installed with the constraints file constraints.txt (the versions the
# suite was last run with), so a fresh machine gets what was tested. To move a pin, change
# pyproject.toml and constraints.txt together (constraints.txt is `pip freeze` of a working
# .venv without the project itself).
#
# Environment:
#   DISPATCH_REQUIRE=redis,redis-sentinel,chromium  (or =all; .ci/run sets all) — a missing
#       program fails the run instead of skipping the tests that need it (tests/conftest.py).
#   FUZZ_LONG=1   run the property-based, stateful and fuzz tests longer (about 20x the
#       examples; FUZZ_LONG_FACTOR=N to choose), e.g.
#       FUZZ_LONG=1 bash tests/run.sh tests/core/test_stateful.py tests/fuzz
#   CHROMIUM=/path/to/chromium   another Chromium binary.
# Arguments are passed to pytest (e.g. `bash tests/run.sh tests/core -x`). Skip reasons are
# always listed at the end (-rs), so a skipped test is never silent.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
missing_programs() {
  need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
  [ -x "$CHROMIUM" ] || need+=(chromium)
}
missing_programs
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    missing_programs
    if [ ${#need[@]} -gt 0 ]; then
      echo "still missing after apt-get: ${need[*]} (CHROMIUM=$CHROMIUM)" >&2
      exit 1
    fi
  else
    echo "missing: ${need[*]}. Install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
exec .venv/bin/python -m pytest -rfEs "$@"
