#!/usr/bin/env bash
# End-to-end tests of the attention browser's robustness, as a person meets it: the real
# binary in tmux, keys sent, the screen read back with capture-pane. Cases:
#   encdec    an encoder–decoder whose source (2 tokens) and target (5) differ in length:
#             every layer, head view, last query, token view, resizes down to 1×1; q exits 0
#   target    e edits the source ids, tab the target ids; enter re-runs both
#   fifo      --text-file from a FIFO (readable once) opens with its text; q exits 0
#   paste     100 KB pasted into the prompt editor (bracketed paste) shows at once; the
#             refused prompt's reason is in the status line; typing after e never runs keys
#   save      p twice: two PNGs, the second under a fresh name, the status line says where
#   slow      (only with SLOW_MODEL=path/to/model.onnx, a model whose probe takes seconds:
#             make one with `python -m export.bench_model export --out DIR`) q while the
#             probe runs exits 0 without a crash, 5 times; e while a re-run is in flight
#             opens the editor and the typed text is queued, not run as commands
# Exits non-zero on the first mismatch, printing the screen. Needs tmux and BIN
# (default bin/inspect).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${BIN:-bin/inspect}")
ROOT=$PWD
export LC_ALL=C.UTF-8
# The cases that run in a scratch folder find onnxruntime where `make setup` put it.
if [ -z "${ONNXRUNTIME_SHARED_LIBRARY_PATH:-}" ] && [ -f "$ROOT/lib/libonnxruntime.so" ]; then
  export ONNXRUNTIME_SHARED_LIBRARY_PATH=$ROOT/lib/libonnxruntime.so
fi
tmp=$(mktemp -d)
sock="attnscope-e2e-encdec-$$"
writer=
trap 'tm kill-server 2>/dev/null || true; [ -z "$writer" ] || kill "$writer" 2>/dev/null || true; rm -rf "$tmp"' EXIT

E2E_NAME=e2e-tui-encdec
E2E_SEND_DELAY=0.2
# shellcheck source=scripts/e2e-lib.sh
source scripts/e2e-lib.sh
start() { # start DIR ARGS...: the browser at 120×40 in DIR
  local dir=$1; shift
  rm -f "$tmp/exit" "$tmp/stderr"
  tm new-session -d -s e2e -x 120 -y 40 \
    "cd '$dir' && env TERM=xterm-256color $BIN $* 2>$tmp/stderr; echo \$? > $tmp/exit; sleep 60"
}
quit_ok() { # quit_ok: q exits 0 within 20 s, with nothing alarming on stderr
  send q
  local deadline=$((SECONDS + 20))
  while [ ! -s "$tmp/exit" ]; do
    [ $SECONDS -lt $deadline ] || fail "q did not quit"
    sleep 0.1
  done
  [ "$(cat "$tmp/exit")" = 0 ] || fail "exit status $(cat "$tmp/exit")"
  ! grep -qiE 'panic|SIGSEGV|fatal error' "$tmp/stderr" || fail "a crash on stderr"
  tm kill-session -t e2e
}
fits() { # fits W H: no line wider than W, no more than H lines
  local widest lines
  widest=$(screen | wc -L)
  lines=$(screen | wc -l)
  [ "$widest" -le "$1" ] && [ "$lines" -le "$2" ] || fail "a ${widest}-column, ${lines}-line screen at $1×$2"
}

passed=0

echo "e2e-tui-encdec: encdec" >&2
start "$ROOT" testdata/models/encdec --ids 1,2 --target-ids 3,4,5,6,7
wait_for "grid view" 60
wait_for "2 source + 5 target tokens"
for layer in 0 1 2 3 4; do
  wait_for "L${layer}H0 · grid view"
  send Enter
  wait_for "L${layer}H0 · head view"
  send G
  send l
  send l
  send Tab
  wait_for "tokens view"
  send G
  send Escape
  send Down
done
wait_for "L4H0 · grid view"
send Up
send Up
send Up
send Up
wait_for "L0H0 · grid view" # back on the encoder: the source's cursor again
for size in "40 10" "1 1" "60 12" "120 40"; do
  tm resize-window -t e2e -x "${size% *}" -y "${size#* }"
  sleep 0.4
  fits ${size}
done
wait_for "L0H0 · grid view"
quit_ok
passed=$((passed + 1))

echo "e2e-tui-encdec: target" >&2
# The prompt editor edits the source and (tab) the target ids; enter re-runs both.
start "$ROOT" testdata/models/encdec --ids 1,2 --target-ids 3,4,5,6,7
wait_for "grid view" 60
wait_for "2 source + 5 target tokens"
send e
wait_for "source ids> 1,2"
send Tab
wait_for "target ids> 3,4,5,6,7"
send C-u
tm send-keys -t e2e -l "8,9,10"
send Tab
wait_for "source ids> 1,2"
send C-u
tm send-keys -t e2e -l "11,12,13,14"
send Enter
wait_for "4 source + 3 target tokens"
send e
wait_for "source ids> 11,12,13,14"
send Tab
wait_for "target ids> 8,9,10"
send Escape
quit_ok
passed=$((passed + 1))

echo "e2e-tui-encdec: fifo" >&2
mkfifo "$tmp/prompt"
start "$tmp" --text-file "$tmp/prompt"
printf 'Once upon a time there was a fox.' > "$tmp/prompt" &
writer=$!
wait_for "grid view" 60
send Tab
send Tab
wait_for "Once"
quit_ok
passed=$((passed + 1))

echo "e2e-tui-encdec: paste" >&2
python3 -c "print(('the quick brown fox jumps over the lazy dog. ' * 3000)[:100000], end='')" > "$tmp/100k.txt"
tm start-server 2>/dev/null || true
start "$tmp"
wait_for "grid view" 60
tm load-buffer -b big "$tmp/100k.txt"
send e
wait_for "prompt>"
send C-u
t0=$SECONDS
tm paste-buffer -p -b big -t e2e
wait_for "the lazy dog. the quick brown fox jumps over the lazy dog. the quick" 10
[ $((SECONDS - t0)) -le 3 ] || fail "the paste took $((SECONDS - t0)) s to show"
send Home
tm send-keys -t e2e -l "START "
wait_for "prompt> START the quick"
send Enter
wait_for "error: " 30 # the model refuses 62,000 tokens with a sentence; the editor's text stays
send e # the refused prompt comes back for fixing
wait_for "the lazy dog. the quick brown fox jumps over the lazy dog. the quick"
send Home
wait_for "prompt> START the quick"
send C-k
tm send-keys -t e2e -l "the quick fox jumps over the lazy dog? q"
sleep 0.3
wait_for "prompt> the quick fox jumps over the lazy dog? q"
send Enter
wait_for "ran "
quit_ok
passed=$((passed + 1))

echo "e2e-tui-encdec: save" >&2
start "$tmp"
wait_for "grid view" 60
send p
wait_for "saved $tmp/attnscope-built-in-demo-L0H0.png"
send p
wait_for "saved $tmp/attnscope-built-in-demo-L0H0-2.png"
[ -s "$tmp/attnscope-built-in-demo-L0H0.png" ] && [ -s "$tmp/attnscope-built-in-demo-L0H0-2.png" ] || fail "the PNGs are not there"
quit_ok
passed=$((passed + 1))

if [ -n "${SLOW_MODEL:-}" ]; then
  echo "e2e-tui-encdec: slow ($SLOW_MODEL)" >&2
  for i in 1 2 3 4 5; do
    start "$tmp" "$(realpath "$SLOW_MODEL")"
    wait_for "grid view" 120
    sleep "0.$((i * 2))"
    quit_ok
  done
  start "$tmp" "$(realpath "$SLOW_MODEL")"
  wait_for "grid view" 120
  send e
  send C-u
  tm send-keys -t e2e -l "$(python3 -c "print('the quick brown fox ' * 200)")"
  send Enter
  wait_for "running…"
  send e
  wait_for "prompt>"
  send C-u
  tm send-keys -t e2e -l "the quick fox? q"
  send Enter
  wait_for "queued"
  wait_for "ran " 120
  wait_for "ran 5 tokens" 120
  quit_ok
  passed=$((passed + 1))
else
  echo "e2e-tui-encdec: slow skipped (set SLOW_MODEL to a model whose probe takes seconds)" >&2
fi
echo "e2e-tui-encdec: $passed passed, 0 failed" >&2
