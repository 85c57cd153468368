#!/usr/bin/env bash
# The two quick-start commands of README.md:
#   bash dev.sh demo   - set up .venv and run the seed's examples end to end
#   bash dev.sh test   - set up .venv and run ruff, mypy and the whole test suite
# Each creates (or refreshes) the local virtual environment itself; nothing else is needed first.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.cara-installed

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when the dependencies or a C source of the optional accelerators changed.
  if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ setup.py -nt "$STAMP" ] \
      || [ -n "$(find cara -name '*.c' -newer "$STAMP" -print -quit)" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[test,pseud,nats]"
    touch "$STAMP"
  fi
}

case "${1:-}" in
  demo)
    setup
    exec "$VENV/bin/python" examples/demo.py
    ;;
  test)
    setup
    shift
    "$VENV/bin/ruff" check cara tests benchmarks examples
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash dev.sh demo|test [pytest args...]" >&2
    exit 2
    ;;
esac
