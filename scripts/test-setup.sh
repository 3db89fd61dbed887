#!/usr/bin/env bash
# Shows that scripts/check-prereqs.sh names what is missing or too old, with the version
# needed and how to get it, and lists what scripts/setup.sh must install: it runs the check in
# a copy of go.mod and the script, on a PATH of fake tools only (an old Go, Debian's old cargo,
# no cargo, an old Python, no gcc, no root…), and compares each exit status, sentence and
# package list. Under a second; run by `make test` (target test-setup).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

repo=$tmp/repo
mkdir -p "$repo/scripts" "$tmp/home"
cp go.mod "$repo/"
cp scripts/check-prereqs.sh "$repo/scripts/"
want_go=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)
tok_version=$(sed -n 's#^[[:space:]]*github.com/daulet/tokenizers \(v[^ ]*\).*#\1#p' go.mod)

# Only the ordinary tools the check itself uses; everything else is faked per case.
base=$tmp/base
mkdir -p "$base"
for t in bash sh sed awk sort head cat env grep uname dirname; do
  ln -s "$(command -v "$t")" "$base/$t"
done

tool() { # tool DIR NAME SCRIPT-BODY
  mkdir -p "$1"
  printf '#!/bin/sh\n%s\n' "$3" > "$1/$2"
  chmod +x "$1/$2"
}
prints() { tool "$1" "$2" "echo \"$3\""; }

# go: FAKE_GO is the installed version, FAKE_POLICY the GOTOOLCHAIN of its configuration; in
# the module (a go.mod here) it switches to go.mod's version as a real Go ≥ 1.21 would, or
# fails as one does without a network (FAKE_OFFLINE), or stays itself under GOTOOLCHAIN=local.
tool "$tmp/fakego" go '
policy=${GOTOOLCHAIN:-$FAKE_POLICY}
[ "$2" = GOTOOLCHAIN ] && { echo "$policy"; exit 0; }
if [ ! -f go.mod ] || [ "$FAKE_GO" = "'"$want_go"'" ]; then echo "go$FAKE_GO"; exit 0; fi
case $FAKE_GO in 1.19*) echo "go$FAKE_GO"; exit 0 ;; esac
case $policy in
  *auto*) if [ -n "${FAKE_OFFLINE:-}" ]; then echo "go: downloading go'"$want_go"' (linux/amd64): dial tcp: lookup proxy.golang.org: no such host"; exit 1; fi
          echo "go'"$want_go"'" ;;
  *) echo "go$FAKE_GO" ;; # a real go1.22.12 answers so, and fails only at the build
esac'
# dpkg-query: FAKE_INSTALLED lists the installed packages ("all" for every one).
tool "$tmp/debian" dpkg-query 'for p; do :; done
case " $FAKE_INSTALLED " in *" all "*|*" $p "*) echo "install ok installed" ;; *) exit 1 ;; esac'
# apt-cache policy: FAKE_CARGO_WEB is Debian's candidate cargo-web, if any.
tool "$tmp/debian" apt-cache 'echo "cargo-web:"; echo "  Installed: (none)"; echo "  Candidate: ${FAKE_CARGO_WEB:-(none)}"'
tool "$tmp/debian" apt-get 'exit 0'
tool "$tmp/sudo" sudo 'exec "$@"'
tool "$tmp/root" id 'echo 0'
tool "$tmp/user" id 'echo 1000'
tool "$tmp/arm" uname 'echo "Linux aarch64"'
prints "$tmp/rust195" cargo "cargo 1.95.0 (f2d3ce0bd 2026-03-21)"
prints "$tmp/rust195" rustc "rustc 1.95.0 (59807616e 2026-04-14)"
prints "$tmp/debrust" cargo "cargo 1.65.0"
prints "$tmp/debrust" rustc "rustc 1.63.0"
prints "$tmp/mixed" cargo "cargo 1.95.0 (f2d3ce0bd 2026-03-21)"
prints "$tmp/mixed" rustc "rustc 1.63.0"
prints "$tmp/rustup177/bin" cargo "cargo 1.77.2 (e52e36006 2024-03-26)"
prints "$tmp/rustup177/bin" rustc "rustc 1.77.2 (25ef9e3d8 2024-03-27)"
prints "$tmp/c" gcc "gcc 12"
prints "$tmp/c" make "GNU Make 4.3"
prints "$tmp/c" sha256sum "ok"
prints "$tmp/nogcc" make "GNU Make 4.3"
prints "$tmp/nogcc" sha256sum "ok"
# python: answers the version question with FAKE_PY, and imports venv unless FAKE_NOVENV.
tool "$tmp" python3 'case $2 in *version_info*) echo "$FAKE_PY" ;; *) [ -z "${FAKE_NOVENV:-}" ] ;; esac'

fails=0 cases=0
# check NAME MODE WANT-RC WANT-STDOUT WANT-STDERR VAR=VALUE... -- DIRS...: runs the check with
# the variables and a PATH of DIRS then the base tools; WANT-STDOUT "" means empty, "*" any.
check() {
  local name=$1 mode=$2 want_rc=$3 want_out=$4 want_err=$5; shift 5
  local vars=() path=""
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  for d in "$@"; do path="$path$d:"; done
  path="$path$base"
  local rc=0
  env -i HOME="$tmp/home" PATH="$path" ATTNSCOPE_SYSTEM_PYTHON="$tmp/python3" \
    FAKE_GO="$want_go" FAKE_POLICY=auto FAKE_PY=3.11 FAKE_INSTALLED=all "${vars[@]}" \
    bash "$repo/scripts/check-prereqs.sh" "$mode" >"$tmp/out" 2>"$tmp/err" || rc=$?
  cases=$((cases + 1))
  local ok=1
  [ "$rc" = "$want_rc" ] || ok=0
  if [ "$want_out" != "*" ] && [ "$(cat "$tmp/out")" != "$want_out" ]; then ok=0; fi
  if [ -z "$want_err" ]; then
    [ ! -s "$tmp/err" ] || ok=0
  elif ! grep -qF -- "$want_err" "$tmp/err"; then
    ok=0
  fi
  if [ "$ok" = 0 ]; then
    echo "test-setup: $name: exit $rc, stdout: $(cat "$tmp/out")" >&2
    sed 's/^/  stderr: /' "$tmp/err" >&2
    echo "test-setup: want exit $want_rc, stdout ${want_out:-empty} and stderr with: ${want_err:-nothing}" >&2
    fails=$((fails + 1))
  else
    sed 's/^/  /' "$tmp/err"
  fi
}
all="$tmp/root:$tmp/debian:$tmp/c"
IFS=: read -r -a ok_dirs <<<"$tmp/rust195:$all"
fresh="python3-torch python3-onnx python3-venv python3-pip libopenblas0-pthread tmux python3-matplotlib gcc libc6-dev make ca-certificates git"

echo "== before anything is installed"
check "everything present" before 0 "" "" -- "${ok_dirs[@]}" "$tmp/fakego"
check "a fresh Debian 12" before 0 "$fresh cargo-web" "there is no cargo to build the tokenizer library with: installing Debian's cargo-web" \
  FAKE_INSTALLED= FAKE_CARGO_WEB=1.96.0+dfsg1-1~deb12u2 ATTNSCOPE_SYSTEM_PYTHON="$tmp/none/python3" -- "$tmp/root" "$tmp/debian" "$tmp/fakego"
check "no Go" before 1 "" "Go $want_go or newer is needed (go.mod) and there is no go on PATH: install it from https://go.dev/dl" -- "${ok_dirs[@]}"
check "Debian's Go 1.19" before 1 "" "Go 1.19.8 ($tmp/fakego/go) is too old: go.mod needs Go $want_go, and a Go older than 1.21 cannot download it by itself" \
  FAKE_GO=1.19.8 -- "${ok_dirs[@]}" "$tmp/fakego"
check "Go 1.22 downloads go.mod's Go" before 0 "" "" FAKE_GO=1.22.0 -- "${ok_dirs[@]}" "$tmp/fakego"
check "Go 1.22 configured GOTOOLCHAIN=local" before 1 "" "Go 1.22.0 is older than go.mod's $want_go and GOTOOLCHAIN=local keeps it from downloading $want_go: run \`go env -w GOTOOLCHAIN=auto\`" \
  FAKE_GO=1.22.0 FAKE_POLICY=local -- "${ok_dirs[@]}" "$tmp/fakego"
check "Go 1.22 with GOTOOLCHAIN=local exported" before 1 "" "run \`export GOTOOLCHAIN=auto\` and set-up again" \
  FAKE_GO=1.22.0 GOTOOLCHAIN=local -- "${ok_dirs[@]}" "$tmp/fakego"
check "Go 1.22 offline" before 1 "" "Go 1.22.0 could not switch to go.mod's $want_go by itself (go: downloading go$want_go (linux/amd64): dial tcp" \
  FAKE_GO=1.22.0 FAKE_OFFLINE=1 -- "${ok_dirs[@]}" "$tmp/fakego"
check "Debian's cargo package" before 1 "" "cargo 1.65.0 and rustc 1.63.0 ($tmp/debrust/cargo) are too old: the tokenizer library's Cargo.lock is format 4, which needs cargo and rustc ≥ 1.78; Debian's cargo package is too old: \`apt-get install cargo-web\` replaces it (and rustc) with Rust 1.96.0" \
  FAKE_CARGO_WEB=1.96.0+dfsg1-1~deb12u2 -- "$tmp/debrust" "$tmp/root" "$tmp/debian" "$tmp/c" "$tmp/fakego"
mv "$tmp/rustup177" "$tmp/home/.cargo" # rustup's, not on PATH: build-tokenizers.sh finds it there
check "rustup's 1.77 in ~/.cargo/bin" before 1 "" "cargo 1.77.2 and rustc 1.77.2 ($tmp/home/.cargo/bin/cargo) are too old: the tokenizer library's Cargo.lock is format 4, which needs cargo and rustc ≥ 1.78; run \`rustup update stable\`" \
  -- "$tmp/root" "$tmp/debian" "$tmp/c" "$tmp/fakego"
mv "$tmp/home/.cargo" "$tmp/rustup177"
check "no cargo, none from Debian" before 1 "" "cargo and rustc ≥ 1.78 are needed to build the tokenizer library (its Cargo.lock is format 4) and there is no cargo on PATH or in ~/.cargo/bin: install Rust with rustup (https://rustup.rs); Debian 12's cargo package (1.65) is too old" \
  -- "$tmp/root" "$tmp/debian" "$tmp/c" "$tmp/fakego"
check "cargo 1.95 with rustc 1.63" before 1 "" "cargo 1.95.0 and rustc 1.63.0 ($tmp/mixed/cargo) are too old" \
  -- "$tmp/mixed" "$tmp/root" "$tmp/debian" "$tmp/c" "$tmp/fakego"
mkdir -p "$repo/build/tokenizers"
: > "$repo/build/tokenizers/libtokenizers.a"
echo "$tok_version" > "$repo/build/tokenizers/VERSION"
check "no cargo, library already built" before 0 "" "" -- "$tmp/root" "$tmp/debian" "$tmp/c" "$tmp/fakego"
rm -r "$repo/build"
check "Python 3.9" before 1 "" "$tmp/python3 is Python 3.9; set-up needs Debian's Python ≥ 3.11" FAKE_PY=3.9 -- "${ok_dirs[@]}" "$tmp/fakego"
check "packages missing, no root or sudo" before 1 "" "these Debian packages are missing and installing them needs root or sudo: as root, run \`apt-get install python3-torch" \
  FAKE_INSTALLED="python3-venv gcc" -- "$tmp/rust195" "$tmp/user" "$tmp/debian" "$tmp/c" "$tmp/fakego"
check "packages missing, sudo" before 0 "python3-torch tmux" "" \
  FAKE_INSTALLED="python3-onnx python3-venv python3-pip libopenblas0-pthread python3-matplotlib gcc libc6-dev make ca-certificates git" \
  -- "$tmp/rust195" "$tmp/user" "$tmp/sudo" "$tmp/debian" "$tmp/c" "$tmp/fakego"
check "no apt-get" before 1 "" "set-up installs Debian packages with apt-get and this system has no apt-get or dpkg-query" -- "$tmp/rust195" "$tmp/root" "$tmp/c" "$tmp/fakego"
check "arm64" before 1 "" "set-up is scripted for Linux on x86-64 and this is Linux aarch64" -- "$tmp/arm" "${ok_dirs[@]}" "$tmp/fakego"

echo "== once the Debian packages are in"
check "everything present" after 0 "" "" -- "${ok_dirs[@]}"
check "no gcc" after 1 "" "gcc is not installed; the Go build links onnxruntime and the tokenizer through cgo: install Debian's gcc and libc6-dev, or set CC" -- "$tmp/root" "$tmp/nogcc"
check "no python3" after 1 "" "$tmp/none/python3 is missing although Debian's python3-venv is installed" ATTNSCOPE_SYSTEM_PYTHON="$tmp/none/python3" -- "${ok_dirs[@]}"
check "cargo-web came without a cargo" after 1 "" "there is still no cargo on PATH after installing Debian's cargo-web" FAKE_CARGO_WEB=1.96.0+dfsg1-1~deb12u2 FAKE_INSTALLED="cargo-web" -- "$tmp/root" "$tmp/debian" "$tmp/c"
check "Debian's cargo after" after 1 "" "cargo 1.65.0 and rustc 1.63.0 ($tmp/debrust/cargo) are too old" -- "$tmp/debrust" "$tmp/root" "$tmp/debian" "$tmp/c"
check "python3 without venv" after 1 "" "$tmp/python3 cannot make virtual environments: install Debian's python3-venv" FAKE_NOVENV=1 -- "${ok_dirs[@]}"

if [ "$fails" -ne 0 ]; then
  echo "test-setup: $fails of $cases cases failed" >&2
  exit 1
fi
echo "test-setup: $cases cases passed" >&2
