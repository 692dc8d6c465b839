# Shared by scripts/demo.sh and scripts/test.sh: system packages, then the virtual environment.
# Sourced, not run. Installs Debian packages through apt when missing (run as root or with sudo).

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
            sudo="sudo"
        else
            echo "Please install these Debian packages first: apt-get install ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "Installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

c_build_tools() {  # a C compiler and headers, for what is built from source (evdev)
    apt_install gcc linux-libc-dev
    "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || apt_install python3-dev
}

make_venv() {  # make_venv EXTRAS (e.g. "" or "[dev]")
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1))." >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV" 2>/dev/null || {
            apt_install python3-venv
            rm -rf "$VENV"
            "$PYTHON" -m venv "$VENV"
        }
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT$1"
}

AXE_DIR="$ROOT/.cache/axe"  # git ignores .cache/: installed here, never committed
axe_install() {  # axe-core for the accessibility checks, exactly as pinned in tests/npm/
    local pinned="$ROOT/tests/npm"
    if [ -f "$AXE_DIR/node_modules/axe-core/axe.min.js" ] \
        && cmp -s "$pinned/package.json" "$AXE_DIR/package.json" \
        && cmp -s "$pinned/package-lock.json" "$AXE_DIR/package-lock.json"; then
        return 0
    fi
    command -v npm >/dev/null || apt_install npm
    echo "Installing axe-core (the version and integrity hash in tests/npm/package-lock.json)"
    rm -rf "$AXE_DIR"
    mkdir -p "$AXE_DIR"
    cp "$pinned/package.json" "$pinned/package-lock.json" "$AXE_DIR/"
    # npm ci installs what the lock file says or fails: no other version, no other hash, and
    # no package's install scripts run.
    (cd "$AXE_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
}
