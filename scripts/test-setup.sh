#!/usr/bin/env bash
# Shows that scripts/check-prereqs.sh names what is missing or too old, with the version
# needed: it runs the check on a PATH of fake tools (an old Go, Debian's old cargo, an old
# Python, no gcc…) and on a complete one, and compares each outcome. Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A folder with only the ordinary tools the check itself uses.
mkdir -p "$tmp/base"
for t in bash sed awk sort head dirname cat env; do
  ln -s "$(command -v "$t")" "$tmp/base/$t"
done

fake() { # fake DIR NAME OUTPUT: a tool that prints OUTPUT
  mkdir -p "$1"
  printf '#!/bin/sh\necho "%s"\n' "$3" > "$1/$2"
  chmod +x "$1/$2"
}
good="$tmp/good"
fake "$good" go "go1.26.8"
fake "$good" cargo "cargo 1.95.0 (f2d3ce0bd 2026-03-21)"
fake "$good" gcc "gcc 12"
fake "$good" make "make 4.3"
fake "$good" sha256sum "ok"
fake "$tmp" python3.11 "3.11"
fake "$tmp" python3.9 "3.9"

fails=0
check() { # check NAME WANT-RC WANT-TEXT PYTHON DIRS...
  local name=$1 want_rc=$2 want=$3 py=$4; shift 4
  local path="" d
  for d in "$@"; do path="$path$d:"; done # the first folder given wins
  path="$path$tmp/base"
  local out rc=0
  out=$(env -i HOME="$tmp/home" PATH="$path" ATTNSCOPE_SYSTEM_PYTHON="$py" bash scripts/check-prereqs.sh 2>&1) || rc=$?
  if [ "$rc" != "$want_rc" ] || ! grep -qF -- "$want" <<<"$out"; then
    echo "test-setup: $name: exit $rc, output:" >&2
    echo "$out" >&2
    echo "test-setup: want exit $want_rc and a line with: $want" >&2
    fails=$((fails + 1))
  fi
}

# A Go that answers `go env GOVERSION` with its version.
mkdir -p "$tmp/oldgo" "$tmp/newgo119"
printf '#!/bin/sh\necho go1.19.8\n' > "$tmp/oldgo/go"; chmod +x "$tmp/oldgo/go"
printf '#!/bin/sh\necho go1.22.0\n' > "$tmp/newgo119/go"; chmod +x "$tmp/newgo119/go"
fake "$tmp/oldcargo" cargo "cargo 0.66.0"
fake "$tmp/cargo177" cargo "cargo 1.77.2 (e52e36006 2024-03-26)"
for t in cargo gcc make sha256sum; do mkdir -p "$tmp/nogo"; ln -sf "$good/$t" "$tmp/nogo/$t"; done
for t in go gcc make sha256sum; do mkdir -p "$tmp/nocargo"; ln -sf "$good/$t" "$tmp/nocargo/$t"; done
for t in go cargo make sha256sum; do mkdir -p "$tmp/nogcc"; ln -sf "$good/$t" "$tmp/nogcc/$t"; done

check "everything present" 0 "" "$tmp/python3.11" "$good"
check "no Go" 1 "Go is not installed; install Go 1.26.8 (or any Go ≥ 1.21" "$tmp/python3.11" "$tmp/nogo"
check "Debian's Go 1.19" 1 "Go 1.19.8 is too old: attnscope needs Go 1.26.8, and Go ≥ 1.21 fetches it by itself" "$tmp/python3.11" "$tmp/oldgo" "$good"
check "Go 1.22 fetches the toolchain" 0 "" "$tmp/python3.11" "$tmp/newgo119" "$good"
check "no cargo" 1 "cargo is not installed; the tokenizer library is built from source with Rust ≥ 1.78" "$tmp/python3.11" "$tmp/nocargo"
check "Debian's cargo 0.66" 1 "cargo 0.66.0 is too old: the tokenizer library's Cargo.lock needs cargo ≥ 1.78" "$tmp/python3.11" "$tmp/oldcargo" "$good"
check "cargo 1.77" 1 "cargo 1.77.2 is too old" "$tmp/python3.11" "$tmp/cargo177" "$good"
check "Python 3.9" 1 "is Python 3.9; the set-up needs Debian's Python ≥ 3.11" "$tmp/python3.9" "$good"
check "no python3" 1 "$tmp/none/python3 is missing" "$tmp/none/python3" "$good"
check "no gcc" 1 "gcc is not installed; the Go build links the tokenizer through cgo" "$tmp/python3.11" "$tmp/nogcc"

if [ "$fails" -ne 0 ]; then
  echo "test-setup: $fails case(s) failed" >&2
  exit 1
fi
echo "test-setup: 10 cases passed" >&2
