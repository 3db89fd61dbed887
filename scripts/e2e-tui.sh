#!/usr/bin/env bash
# End-to-end test of the attention browser as a person uses it: the real binary in tmux at
# 120×40 with TERM=xterm-256color, keys sent, the screen read back with capture-pane.
# Navigates the grid, switches a head off and on (x, X), opens a head with a mouse click
# (on its peak), moves the cursor, edits the prompt, opens the help,
# resizes to 60×20 (no line may be wider), quits; then again with NO_COLOR=1; then at 80×24
# with --ids: the key bar, the help's p and q, and e + enter re-running the same ids.
# Exits non-zero on the first mismatch, printing the screen. Needs tmux and bin/inspect.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/inspect}
export LC_ALL=C.UTF-8
tmp=$(mktemp -d)
sock="attnscope-e2e-$$"
trap 'tm kill-server 2>/dev/null || true; rm -rf "$tmp"' EXIT

E2E_NAME=e2e-tui
# shellcheck source=scripts/e2e-lib.sh
source scripts/e2e-lib.sh

# quit_and_check presses q and waits (10 s at most) for the program to exit with status 0.
quit_and_check() {
  send q
  local deadline=$((SECONDS + 10))
  while [ ! -s "$tmp/exit" ]; do
    [ $SECONDS -lt $deadline ] || fail "q did not quit"
    sleep 0.2
  done
  [ "$(cat "$tmp/exit")" = 0 ] || fail "exit status $(cat "$tmp/exit")"
  tm kill-session -t e2e
}

# click_opens_head: a left click on the thumbnail of L1H5 (the demo's grid at 120×40: the
# title, the heads' header, 5 lines a layer; a 4-cell label column, thumbnails 9 cells
# wide and 1 apart) opens that head. The head view opens on its sharpest row with the key
# cursor on that row's peak: the legend's A[q,k] shows, k is the first key the panel's
# "attends most to" lists (with its label), and the panel predicts after query q. The
# click is written as an SGR mouse report (press, release), which tmux passes to the
# program as it would a real mouse's.
click_opens_head() {
  tm send-keys -t e2e -l $'\e[<0;57;9M'
  tm send-keys -t e2e -l $'\e[<0;57;9m'
  sleep 0.3
  wait_for "L1H5 · head view"
  local a q k top label
  a=$(screen | grep -oE 'A\[[0-9]+,[0-9]+\] = [0-9.]+' | head -n 1) || fail "the head view's first frame shows no A[q,k]"
  q=$(sed -E 's/A\[([0-9]+),.*/\1/' <<<"$a")
  k=$(sed -E 's/A\[[0-9]+,([0-9]+)\].*/\1/' <<<"$a")
  top=$(screen | grep -A1 -F 'attends most to' | tail -n 1 | sed 's/.*│//')
  read -r top_k label _ <<<"$top"
  [ "$top_k" = "$k" ] || fail "the key cursor ($a) is not on the row's peak (the panel's first key: $top)"
  [ -n "$label" ] || fail "the peak key $k has no label in the panel: $top"
  screen | grep -qF "next after $q " || fail "the panel is not of query $q"
  screen | grep -qF "▶" || fail "the cursor row is not marked"
}

run_case() { # run_case NAME ENV...
  local name=$1; shift
  echo "e2e-tui: $name" >&2
  rm -f "$tmp/exit"
  tm new-session -d -s e2e -x 120 -y 40 \
    "env TERM=xterm-256color $* $BIN; echo \$? > $tmp/exit; sleep 60"
  wait_for "grid view" 60
  wait_for "L0H0 scores"
  send Right
  send Down
  wait_for "L1H1"
  send x
  wait_for "1 head off"
  wait_for "L1H1 off: mean loss"
  send X
  wait_for "grid view · 2 layers"
  # The circuits panel, from the weights: L1H1 reads layer-0 heads (composition bars).
  send c
  wait_for "L1H1 circuits (weights)"
  wait_for "reads from (random"
  wait_for "OV: attends to"
  send c
  wait_for "L1H1 scores"
  click_opens_head
  send Up
  send Up
  wait_for "next after"
  send Tab
  wait_for "tokens view"
  wait_for "attends to"
  send e
  wait_for "prompt>"
  send C-u
  tm send-keys -t e2e -l "alpha beta gamma delta alpha beta gamma delta"
  send Enter
  wait_for "ran "
  send "?"
  wait_for "keys (any key closes this)"
  send Space
  wait_for "tokens view"
  tm resize-window -t e2e -x 60 -y 20
  sleep 0.5
  wait_for "tokens view"
  local widest
  widest=$(screen | wc -L)
  [ "$widest" -le 60 ] || fail "a line is $widest columns wide at 60×20"
  local lines
  lines=$(screen | wc -l)
  [ "$lines" -le 20 ] || fail "$lines lines at 60×20"
  if [ "$name" = "no colour" ] && tm capture-pane -t e2e -p -e | grep -qE $'\x1b\\[[0-9;]*(3[0-7]|38;|4[0-7]|48;|9[0-7]|10[0-7])[;m]'; then
    fail "colour codes on screen with NO_COLOR=1"
  fi
  quit_and_check
}

# At 80×24, given ids: the key bar keeps "? help" and "q quit" whole, the help shows p and
# q, and e + enter re-runs the same ids (as ids: the token count stays).
ids_case() {
  echo "e2e-tui: 80×24 with --ids" >&2
  rm -f "$tmp/exit"
  tm new-session -d -s e2e -x 80 -y 24 \
    "env TERM=xterm-256color $BIN --ids 5,17,23,5,17,23; echo \$? > $tmp/exit; sleep 60"
  wait_for "grid view" 60
  wait_for "6 tokens"
  local bar
  bar=$(screen | tail -n 1)
  case "$bar" in *"? help"*"q quit"*) ;; *) fail "the key bar at 80×24 lacks ? help / q quit: $bar" ;; esac
  [ "$(screen | wc -L)" -le 80 ] || fail "a line is wider than 80 columns"
  send "?"
  wait_for "keys (any key closes this)"
  screen | grep -qE '(^| )q +quit' || fail "the help at 80×24 does not show q quit"
  screen | grep -qE '(^| )p +save the head' || fail "the help at 80×24 does not show p save"
  send Space
  wait_for "grid view"
  send e
  wait_for "ids> 5,17,23,5,17,23"
  wait_for "editing ids"
  send Enter
  wait_for "ran 6 tokens"
  quit_and_check
}

run_case "256 colours"
run_case "no colour" NO_COLOR=1
ids_case
echo "e2e-tui: 3 passed, 0 failed" >&2
