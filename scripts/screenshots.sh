#!/usr/bin/env bash
# Regenerates docs/screenshots: the pictures `dump --png` writes (a head, the grid, SVG, a
# cross-attention map) and the browser at 120×36 in tmux (grid, head view, token view with
# a head switched off), rendered by scripts/ansi2png.py. Needs bin/inspect, tmux and the
# set-up's .venv (Pillow).
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/screenshots
mkdir -p "$out"
P="The king is dead, and the queen will rule the land alone. The king is dead, and the queen will rule the land alone."
bin/inspect dump models/demo --text "$P" --layer 1 --head 5 --png "$out/head-L1H5.png"
bin/inspect dump models/demo --text "$P" --layer 1 --head 5 --png "$out/head-L1H5.svg"
bin/inspect dump models/demo --text "$P" --png "$out/grid.png"
bin/inspect dump testdata/models/encdec --ids 5,9,14,20,31,2,7 --target-ids 3,8,12 --layer 4 --head 0 --png "$out/cross-L4H0.png"
tmp=$(mktemp -d)
sock="attnscope-shots-$$"
tm() { tmux -L "$sock" "$@"; }
trap 'tm kill-server 2>/dev/null || true; rm -rf "$tmp"' EXIT
tm new-session -d -s s -x 120 -y 36 "env TERM=xterm-256color bin/inspect"
sleep 4
tm send-keys -t s Down Right Right Right Right Right; sleep 0.5
tm capture-pane -t s -p -e > "$tmp/grid.ans"
tm send-keys -t s Enter; sleep 0.8
tm capture-pane -t s -p -e > "$tmp/head.ans"
tm send-keys -t s x; sleep 1.5
tm send-keys -t s Tab; sleep 0.8
tm capture-pane -t s -p -e > "$tmp/tokens.ans"
for n in grid head tokens; do .venv/bin/python scripts/ansi2png.py "$tmp/$n.ans" "$out/tui-$n.png"; done
echo "screenshots: written to $out" >&2
