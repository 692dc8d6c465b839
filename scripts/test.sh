#!/usr/bin/env bash
# Install what the tests need (Mosquitto, Chromium, axe-core, the dev extras) and run the whole
# suite.
# Extra arguments go to pytest (e.g. -k presence; -n 0 runs the tests one after another).
# The tests run in one worker per CPU (pytest-xdist; TEST_WORKERS overrides the number): each
# test has its own broker, ports, data dirs and processes, and each worker its own
# PostgreSQL cluster and browser.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
apt_install mosquitto chromium postgresql faketime nginx-light xkb-data x11proto-dev
c_build_tools
axe_install
make_venv "[dev]"
cd "$ROOT"
"$VENV/bin/ruff" check store_contract edge pos_bridge cloud_sync kiosk_ui store_demo tests bench
"$VENV/bin/lint-imports" --no-cache
exec "$VENV/bin/python" -m pytest -n "${TEST_WORKERS:-auto}" "$@"
