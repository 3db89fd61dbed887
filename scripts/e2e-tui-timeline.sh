#!/usr/bin/env bash
# End-to-end test of the browser on a training timeline as a person uses it: the real
# binary on testdata/timeline/tiny (6 steps) in tmux at 120×40, keys sent, the screen read
# back with capture-pane. It opens on the last step with the step bar and the sparklines;
# < and > move a step, { and } jump to the step where the head's score changes most; the
# typed prompt stays across steps and x (ablation) follows them; at 60×20 no line is
# wider than the pane; q quits with status 0. Exits non-zero on the first mismatch,
# printing the screen. Needs tmux and bin/inspect.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/inspect}
DIR=${DIR:-testdata/timeline/tiny}
export LC_ALL=C.UTF-8
tmp=$(mktemp -d)
sock="attnscope-e2e-tl-$$"
trap 'tm kill-server 2>/dev/null || true; rm -rf "$tmp"' EXIT

E2E_NAME=e2e-tui-timeline
# shellcheck source=scripts/e2e-lib.sh
source scripts/e2e-lib.sh
# step_bar is the screen's step bar line.
step_bar() { screen | grep -E '^ step [0-9]+/' | head -n 1; }
# fits W H fails when a line of the screen is wider than W or there are more than H.
fits() {
  local widest lines
  widest=$(screen | wc -L)
  [ "$widest" -le "$1" ] || fail "a line is $widest columns wide at $1×$2"
  lines=$(screen | wc -l)
  [ "$lines" -le "$2" ] || fail "$lines lines at $1×$2"
}

[ -f "$DIR/timeline.json" ] || { echo "e2e-tui-timeline: $DIR is missing" >&2; exit 1; }
rm -f "$tmp/exit"
tm new-session -d -s e2e -x 120 -y 40 \
  "env TERM=xterm-256color $BIN $DIR; echo \$? > $tmp/exit; sleep 60"
wait_for "grid view" 60
wait_for " step 600/600 · 153.6 k tokens · eval loss 1.25 · ICL −0.02  [6/6]"
wait_for "<> step"
wait_for "{} jump"
# The head sparkline is computed in the background; the loss and ICL ones are there at once.
wait_for "eval loss █"
wait_for "L0H0 induction ▁" 60  # scores drawn on 0..1: L0H0 stays low
fits 120 40

# < and >: one step back, one forward.
send "<"
wait_for " step 300/600 · 76.8 k tokens · eval loss 1.40 · ICL 0.15  [5/6]"
wait_for "step 300 (5/6): ran"
send ">"
wait_for " step 600/600 ·"

# A typed prompt stays across steps.
send e
wait_for "prompt>"
send C-u
tm send-keys -t e2e -l "the king doth love the king"
send Enter
wait_for "ran 6 tokens"
send "<"
wait_for " step 300/600 ·"
wait_for "6 tokens"
send e
wait_for "prompt> the king doth love the king"
send Escape

# { and }: the step where L1H1's induction changes most, before and after.
send Down
send Right
wait_for "L1H1 · grid view"
send "{"
wait_for "L1H1's induction changes most here"
before=$(step_bar)
[[ "$before" != *"step 300/600"* ]] || fail "{ did not change the step: $before"
send "}"
wait_for "L1H1's induction changes most here"
sleep 0.5
after=$(step_bar)
[ "$after" != "$before" ] || fail "} did not change the step: $after"

# Out of range: > at the last step says so and stays.
for _ in 1 2 3 4 5 6; do send ">"; done
wait_for " step 600/600 ·"
send ">"
wait_for "already at the last step (600)"

# x switches the head off on this step, and the ablation follows the step.
send x
wait_for "L1H1 off: mean loss"
send "<"
wait_for " step 300/600 ·"
wait_for "L1H1 off: mean loss"
send X

# The help lists the timeline keys.
send "?"
wait_for "timeline: previous step"
send Space
wait_for "grid view"

tm resize-window -t e2e -x 60 -y 20
sleep 0.5
wait_for " step 300/600"
fits 60 20
send ">"
wait_for " step 600/600"
fits 60 20

send q
deadline=$((SECONDS + 10))
while [ ! -s "$tmp/exit" ]; do
  [ $SECONDS -lt $deadline ] || fail "q did not quit"
  sleep 0.2
done
[ "$(cat "$tmp/exit")" = 0 ] || fail "exit status $(cat "$tmp/exit")"
echo "e2e-tui-timeline: passed" >&2
