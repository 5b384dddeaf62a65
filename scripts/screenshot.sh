#!/usr/bin/env bash
# README's picture: a short real lab run, its HTML report, and a PNG of the
# report's first screen, made by headless Chromium.
#
#   scripts/screenshot.sh [OUT.png]     # default docs/src/images/report.png
#
# Needs chromium (Debian: apt-get install chromium). The run is the one
# README names:
#   socklab lab --models iterative,thread,epoll,uring --scenarios cost,delay --html FILE
# HEIGHT (pixels, default 1900) is how much of the page the picture shows:
# the findings, where the figures came from, and the cost chart.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/src/images/report.png}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z $browser ]]; then
    echo "screenshot: no chromium found (apt-get install chromium)" >&2
    exit 1
fi
cargo build --release --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/socklab lab --models iterative,thread,epoll,uring \
    --scenarios cost,delay --html "$work/report.html"
mkdir -p "$(dirname "$out")"
# A profile of its own in the temp dir: nothing of the user's is read or
# written, and nothing is fetched (the report is self-contained).
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --no-first-run --hide-scrollbars --user-data-dir="$work/profile" \
    --window-size=1400,"${HEIGHT:-1900}" --screenshot="$PWD/$out" "file://$work/report.html" 2>/dev/null
echo "screenshot: $out"
