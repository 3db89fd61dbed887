#!/usr/bin/env bash
# Checks what scripts/setup.sh needs and cannot install from Debian's packages itself, and
# says in one sentence each what is missing or too old, the version needed and how to get it.
# Exits 1 when anything is missing. Run by scripts/setup.sh first; scripts/test-setup.sh runs
# it against fake tools to show every sentence.
#
#   Go      ≥ 1.21, which fetches the go.mod toolchain (1.26.8) from the Go module proxy by
#           itself; Debian's golang-go (1.19) is too old.
#   cargo   ≥ 1.78: the tokenizer library's Cargo.lock is format 4 (its crates ask for 1.73);
#           Debian's cargo (0.66, Rust 1.65) is too old, rustup's is not.
#   python3 /usr/bin/python3 ≥ 3.11: the virtual environment sits on Debian's Python, whose
#           python3-torch it uses.
#   gcc, make, sha256sum; apt-get with root or sudo when Debian packages are missing.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${ATTNSCOPE_SYSTEM_PYTHON:-/usr/bin/python3}
problems=0
say() { echo "setup: $*" >&2; problems=$((problems + 1)); }

# version_ge A B: A ≥ B for dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

gomod=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)
if ! command -v go >/dev/null; then
  say "Go is not installed; install Go ${gomod} (or any Go ≥ 1.21, which fetches ${gomod} by itself) from https://go.dev/dl and put it on PATH (Debian's golang-go is too old)"
else
  gov=$(go env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*//')
  if [ -z "$gov" ] || ! version_ge "$gov" 1.21; then
    say "Go ${gov:-of unknown version} is too old: attnscope needs Go ${gomod}, and Go ≥ 1.21 fetches it by itself; install a newer Go from https://go.dev/dl"
  fi
fi

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  say "cargo is not installed; the tokenizer library is built from source with Rust ≥ 1.78: install it with rustup (https://rustup.rs), not Debian's cargo, which is too old"
else
  cv=$(cargo --version 2>/dev/null | awk '{print $2}' | sed 's/[^0-9.].*//')
  if [ -z "$cv" ] || ! version_ge "$cv" 1.78; then
    say "cargo ${cv:-of unknown version} is too old: the tokenizer library's Cargo.lock needs cargo ≥ 1.78; run \`rustup update\`, or install Rust with rustup (https://rustup.rs)"
  fi
fi

if [ ! -x "$PYTHON" ]; then
  say "$PYTHON is missing; install Debian's python3 (3.11 or newer), whose python3-torch the set-up uses"
else
  pv=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
  if [ -z "$pv" ] || ! version_ge "$pv" 3.11; then
    say "$PYTHON is Python ${pv:-of unknown version}; the set-up needs Debian's Python ≥ 3.11 (Debian 12 or newer) for its python3-torch"
  fi
fi

for tool in gcc make sha256sum; do
  if ! command -v "$tool" >/dev/null; then
    case $tool in
      gcc) say "gcc is not installed; the Go build links the tokenizer through cgo: install Debian's gcc (apt-get install gcc)" ;;
      make) say "make is not installed; install Debian's make (apt-get install make)" ;;
      sha256sum) say "sha256sum is not installed; install Debian's coreutils" ;;
    esac
  fi
done

[ "$problems" -eq 0 ]
