#!/usr/bin/env bash
# Start Debian's Chromium full-screen in kiosk mode on a shopper kiosk's page, with flags that
# keep a shared touch screen safe (docs/kiosk-box.md). Run by config/systemd/store-kiosk-browser.service
# as the kiosk box's unprivileged kiosk user, inside its graphical session.
#
#   kiosk-browser.sh [--dry-run] [URL]
#
# URL: the kiosk's page; else $KIOSK_URL; else http://STORE-BOX:8080/kiosk/.
# --dry-run: print the command it would run, one line, and change nothing.
# KIOSK_PROFILE_DIR: Chromium's profile folder, wiped at every start but for its cookie jar,
#   which holds the kiosk's pairing (default: $XDG_STATE_HOME/store-kiosk-browser, that is
#   ~/.local/state/store-kiosk-browser).
# KIOSK_CHROMIUM: the browser (default /usr/bin/chromium).
# KIOSK_EXTRA_FLAGS: more Chromium flags, space-separated (e.g. --force-device-scale-factor=1.5
#   for a screen whose text is too small).
set -euo pipefail

die() { echo "kiosk-browser: $*" >&2; exit 2; }

dry_run=0
url="${KIOSK_URL:-http://STORE-BOX:8080/kiosk/}"
url_given=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $arg (only --dry-run)" ;;
        *) [ "$url_given" -eq 0 ] || die "one kiosk page address only, got a second: $arg"
           url="$arg"; url_given=1 ;;
    esac
done
# Only a web address: anything else (file:, javascript:, chrome:, a typo) would open a page
# the kiosk must never show.
[[ "$url" =~ ^https?://[^[:space:]/]+(/[^[:space:]]*)?$ ]] \
    || die "the kiosk page must be an http:// or https:// address, not '$url'"

chromium="${KIOSK_CHROMIUM:-/usr/bin/chromium}"
profile="${KIOSK_PROFILE_DIR:-${XDG_STATE_HOME:-${HOME:-/nonexistent}/.local/state}/store-kiosk-browser}"
# An absolute path of plain characters (it is written into the profile's JSON settings).
[[ "$profile" =~ ^/[A-Za-z0-9._/-]*[A-Za-z0-9_-]$ ]] \
    || die "KIOSK_PROFILE_DIR must be an absolute path of letters, digits and . _ - /, not '$profile'"
marker="$profile/.store-kiosk-profile"

flags=(
    --kiosk                                  # full screen, no address bar, tabs or menus; no way out by F11
    "--user-data-dir=$profile"               # its own profile, never a person's; wiped below at every start
                                             # but for its cookies: not --incognito, which would forget the
                                             # kiosk's pairing at every restart (the shopper's session is the
                                             # edge's, in memory; the pages keep nothing in the browser)
    --no-first-run                           # no welcome or sign-in page on the first start
    --no-default-browser-check               # no "make Chromium your default browser?" bar
    --noerrdialogs                           # no error dialogs a shopper would have to close
    --disable-infobars                       # no information bars over the page
    --hide-crash-restore-bubble              # after a crash: no "restore pages?" bubble, just the page
    --disable-features=Translate,TranslateUI # no "translate this page?" prompt (the kiosk has a language switch)
    --password-store=basic                   # never ask for a desktop keyring (nothing is saved anyway, see Preferences)
    --disable-extensions                     # no extensions, whatever the system has installed
    --disable-component-extensions-with-background-pages  # nor built-in ones running in the background
    --disable-sync                           # no signing in to a Google account, nothing synced
    --disable-background-networking          # no calls home for updates, suggestions or safe-browsing lists
    --disable-component-update               # no downloading of browser components
    --touch-events=enabled                   # touch screen taps are touch events
    --disable-pinch                          # no pinch-zoom: the page's own layout option makes text bigger
    --overscroll-history-navigation=0        # no swipe back to the previous shopper's page
    --ozone-platform-hint=auto               # Wayland when the session is Wayland, else X11
)
if [ -n "${KIOSK_EXTRA_FLAGS:-}" ]; then
    read -r -a extra <<< "$KIOSK_EXTRA_FLAGS"
    flags+=("${extra[@]}")
fi
command=("$chromium" "${flags[@]}" "$url")

if [ "$dry_run" -eq 1 ]; then
    printf '%q ' "${command[@]}" | sed 's/ $//'
    echo
    exit 0
fi

# Chromium as root runs without its sandbox: a page that broke the browser would own the box.
[ "$(id -u)" -ne 0 ] || die "do not run the kiosk browser as root: run it as the kiosk user (docs/kiosk-box.md)"
[ -x "$chromium" ] || die "Chromium is not installed at $chromium (apt-get install chromium)"

# A fresh profile at every start, so nothing of the last shopper (or of a crash) survives a
# restart. Only a folder of this user's that this script made (it holds the marker) is ever
# deleted; never one reached through a symbolic link (another user could have laid it in /tmp).
if [ -L "$profile" ] || { [ -e "$profile" ] && [ ! -O "$profile" ]; }; then
    die "$profile is a link or belongs to another user: not using it (set KIOSK_PROFILE_DIR)"
fi
if [ -e "$profile" ] && [ ! -e "$marker" ] && [ -n "$(ls -A "$profile" 2>/dev/null)" ]; then
    die "$profile is not empty and was not made by this script: not deleting it (set KIOSK_PROFILE_DIR)"
fi
# Only the cookie jar survives: it holds the kiosk credential the pairing gave this browser
# (docs/kiosk.md); the shopper's session cookie is a session cookie, never written to it.
umask 077  # the profile is the kiosk user's alone
jar="$profile/Default/Cookies"
kept=""
if [ -f "$jar" ] && [ ! -L "$jar" ] && [ -O "$jar" ]; then
    mkdir -p "$(dirname "$profile")"
    kept="$(mktemp "$profile.cookies.XXXXXX")"
    mv -f "$jar" "$kept"
fi
rm -rf "$profile"
mkdir -p "$profile/Default" "$profile/Downloads"
touch "$marker"
if [ -n "$kept" ]; then
    mv -f "$kept" "$jar"
fi
# Settings that have no flag: no password manager, no autofill of addresses or cards, no
# translation, and downloads (a kiosk page offers none) saved without a prompt into the profile,
# which the next start wipes.
cat > "$profile/Default/Preferences" <<EOF
{"credentials_enable_service": false,
 "profile": {"password_manager_enabled": false},
 "autofill": {"profile_enabled": false, "credit_card_enabled": false},
 "translate": {"enabled": false},
 "download": {"prompt_for_download": false, "default_directory": "$profile/Downloads"},
 "browser": {"has_seen_welcome_page": true}}
EOF

exec "${command[@]}"
