#!/usr/bin/env bash
# Screenshot an HTML evaluation report with headless Chromium (Debian package `chromium`) so it
# can be looked at. Not run in CI.
#   benchmarks/screenshot_report.sh REPORT.html OUT.png [WIDTH,HEIGHT]
set -euo pipefail
report=$(realpath "$1"); out=$2; size=${3:-1400,2400}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size="$size" \
  --screenshot="$(realpath -m "$out")" "file://$report" 2>/dev/null
echo "screenshot: $out"
