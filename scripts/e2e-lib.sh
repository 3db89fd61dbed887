# Helpers shared by the tmux end-to-end scripts (scripts/e2e-tui*.sh), sourced after they
# set E2E_NAME (the name their messages start with), sock (the tmux server's socket name)
# and, optionally, E2E_SEND_DELAY (seconds after each send; 0.3 by default). The session
# under test is called e2e.
# shellcheck shell=bash

tm() { tmux -L "$sock" "$@"; }
screen() { tm capture-pane -t e2e -p; }
# fail MESSAGE prints it and the screen, and exits 1.
fail() {
  echo "$E2E_NAME: $1" >&2
  echo "----- screen -----" >&2
  screen >&2 || true
  exit 1
}
wait_for() { # wait_for TEXT [SECONDS]
  local deadline=$((SECONDS + ${2:-15}))
  while ! screen | grep -qF -- "$1"; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for: $1"
    sleep 0.2
  done
}
send() { tm send-keys -t e2e "$@"; sleep "${E2E_SEND_DELAY:-0.3}"; }
