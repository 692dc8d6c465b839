#!/usr/bin/env bash
# Bring up a demo store on this machine: broker, edge and simulated devices. Ctrl-C stops it.
# Extra arguments go to `edge demo` (e.g. --http-port 8090).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
apt_install mosquitto nginx-light
c_build_tools
axe_install
make_venv "[edge,hub,scanner]"
cd "$ROOT"
exec "$VENV/bin/edge" demo "$@"
