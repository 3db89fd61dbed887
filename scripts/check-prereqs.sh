#!/usr/bin/env bash
# Checks what scripts/setup.sh needs, and says in one sentence each what is missing or too
# old, the version needed and how to get it. scripts/test-setup.sh runs it against fake
# tools to show every sentence.
#
#   check-prereqs.sh before   (run first, before anything is installed)
#     - Linux on x86-64 (the onnxruntime wheel and the tokenizer build are scripted for it);
#     - Go ≥ go.mod's go line (1.26.8). Any Go ≥ 1.21 downloads that version from the Go
#       module proxy by itself unless GOTOOLCHAIN forbids it (GOTOOLCHAIN=local); Debian 12's
#       golang-go (1.19) is too old;
#     - cargo and rustc ≥ 1.78 when the tokenizer library must be built: its Cargo.lock is
#       format 4, which older cargo cannot read (the newest rust-version among the crates it
#       compiles is 1.73, bstr's). Debian 12's cargo package (cargo 1.65, rustc 1.63) is too
#       old; Debian 12's cargo-web (1.96) is new enough, and is installed when there is no
#       cargo at all; rustup's stable is new enough;
#     - an existing /usr/bin/python3 ≥ 3.11 (one that is missing comes with the packages);
#     - apt-get with root or sudo, when Debian packages are missing.
#     Prints on stdout the Debian packages set-up must install; exits 1 after the sentences
#     when something is wrong.
#   check-prereqs.sh after    (once the Debian packages are in)
#     - /usr/bin/python3 ≥ 3.11 with venv and pip; a C compiler for cgo; make; sha256sum;
#       cargo and rustc ≥ 1.78 again when the tokenizer library must be built (cargo-web may
#       just have come).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# Installed by scripts/setup.sh when dpkg says they are missing: PyTorch 1.13 and onnx for
# export/ (Debian's, small, unlike PyPI's CUDA-laden wheel), OpenBLAS so that PyTorch is not
# 50x slower, tmux for the terminal end-to-end test, pip (fetch-onnxruntime.sh downloads the
# wheel with it), gcc and libc6-dev for cgo, make, ca-certificates for the downloads, and git
# (make build stamps bin/inspect with the commit, and go build -buildvcs=true fails in a
# clone without git).
DEBIAN_PACKAGES="python3-torch python3-onnx python3-venv python3-pip libopenblas0-pthread tmux python3-matplotlib gcc libc6-dev make ca-certificates git"
RUST_MIN=1.78
PYTHON_MIN=3.11
PYTHON=${ATTNSCOPE_SYSTEM_PYTHON:-/usr/bin/python3}
TOKENIZERS_MOD=github.com/daulet/tokenizers

problems=0
say() { echo "setup: $*" >&2; problems=$((problems + 1)); }
note() { echo "setup: $*" >&2; }

# version_ge A B: A ≥ B for dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
# first_version: the first dotted number in standard input (go1.22.0 → 1.22.0).
first_version() { grep -o '[0-9][0-9]*\.[0-9][0-9.]*' | head -n1; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

check_platform() {
  local p
  p=$(uname -sm)
  if [ "$p" != "Linux x86_64" ]; then
    say "set-up is scripted for Linux on x86-64 and this is $p: install onnxruntime 1.24.1 and build libtokenizers.a yourself (README, \"Set-up choices\")"
  fi
}

check_go() {
  local want have policy out
  want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)
  if ! command -v go >/dev/null; then
    say "Go $want or newer is needed (go.mod) and there is no go on PATH: install it from https://go.dev/dl, or put any Go ≥ 1.21 on PATH, which downloads $want by itself (Debian 12's golang-go, 1.19, is too old)"
    return
  fi
  # In the module, go switches to go.mod's version when GOTOOLCHAIN allows it (downloading it
  # the first time); outside it, it says what is installed.
  if out=$(go env GOVERSION 2>&1) && version_ge "$(first_version <<<"$out")" "$want"; then
    return
  fi
  have=$(cd / && GOTOOLCHAIN=local go env GOVERSION 2>/dev/null | first_version)
  policy=$(cd / && go env GOTOOLCHAIN 2>/dev/null)
  if [ -z "$have" ] || ! version_ge "$have" 1.21; then
    say "Go ${have:-of unknown version} ($(command -v go)) is too old: go.mod needs Go $want, and a Go older than 1.21 cannot download it by itself; install Go $want or newer from https://go.dev/dl"
  elif [[ $policy != *auto* ]]; then
    local how="go env -w GOTOOLCHAIN=auto"
    [ -n "${GOTOOLCHAIN:-}" ] && how="export GOTOOLCHAIN=auto"
    say "Go $have is older than go.mod's $want and GOTOOLCHAIN=$policy keeps it from downloading $want: run \`$how\` and set-up again (Go then fetches $want from the Go module proxy), or install Go $want from https://go.dev/dl"
  else
    say "Go $have could not switch to go.mod's $want by itself ($(head -n1 <<<"$out")): install Go $want from https://go.dev/dl"
  fi
}

# Sets RUST_PACKAGE to the Debian package to add for Rust (cargo-web) when there is no cargo at all.
RUST_PACKAGE=""
check_rust() {
  local version lib stamp cargo rustc cv rv candidate
  version=$(sed -n "s#^[[:space:]]*\(require[[:space:]]*\)\{0,1\}$TOKENIZERS_MOD \(v[^ ]*\).*#\2#p" go.mod | head -n1)
  lib=build/tokenizers/libtokenizers.a
  stamp=$(cat build/tokenizers/VERSION 2>/dev/null)
  if [ -z "$version" ] || { [ -f "$lib" ] && [ "$stamp" = "$version" ]; }; then
    return # nothing to build (scripts/build-tokenizers.sh skips it too)
  fi
  cargo=$(command -v cargo || true)
  rustc=$(command -v "${RUSTC:-rustc}" || true)
  if [ -z "$cargo" ] && [ -x "$HOME/.cargo/bin/cargo" ]; then # as build-tokenizers.sh does
    cargo=$HOME/.cargo/bin/cargo
    rustc=$HOME/.cargo/bin/rustc
  fi
  candidate=$(apt-cache policy cargo-web 2>/dev/null | sed -n 's/^ *Candidate: *//p' | first_version)
  if [ -n "$candidate" ] && ! version_ge "$candidate" "$RUST_MIN"; then
    candidate=""
  fi
  if [ -z "$cargo" ]; then
    if [ -n "$candidate" ] && ! installed cargo && ! installed rustc; then
      note "there is no cargo to build the tokenizer library with: installing Debian's cargo-web"
      RUST_PACKAGE=cargo-web
      return
    fi
    local debian=""
    [ -n "$candidate" ] && debian=", or Debian's \`apt-get install cargo-web\` ($candidate)"
    say "cargo and rustc ≥ $RUST_MIN are needed to build the tokenizer library (its Cargo.lock is format 4) and there is no cargo on PATH or in ~/.cargo/bin: install Rust with rustup (https://rustup.rs)$debian; Debian 12's cargo package (1.65) is too old"
    return
  fi
  cv=$("$cargo" --version 2>/dev/null | first_version)
  rv=$("${rustc:-rustc}" --version 2>/dev/null | first_version)
  if [ -n "$cv" ] && version_ge "$cv" "$RUST_MIN" && [ -n "$rv" ] && version_ge "$rv" "$RUST_MIN"; then
    return
  fi
  local how
  if [[ $cargo == */.cargo/bin/* ]] || command -v rustup >/dev/null; then
    how="run \`rustup update stable\`"
  elif installed cargo && [ -n "$candidate" ]; then
    how="Debian's cargo package is too old: \`apt-get install cargo-web\` replaces it (and rustc) with Rust $candidate, or install Rust with rustup (https://rustup.rs) and put it first on PATH"
  else
    how="install Rust with rustup (https://rustup.rs) and put it first on PATH"
  fi
  say "cargo ${cv:-?} and rustc ${rv:-?} ($cargo) are too old: the tokenizer library's Cargo.lock is format 4, which needs cargo and rustc ≥ $RUST_MIN; $how"
}

python_version() { "$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

# Prints the Debian packages that dpkg says are missing, and checks that they can be installed.
check_debian() {
  local extra=$1 missing="" p
  for p in $DEBIAN_PACKAGES $extra; do
    installed "$p" || missing="$missing $p"
  done
  [ -n "$missing" ] || return 0
  if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    say "set-up installs Debian packages with apt-get and this system has no apt-get or dpkg-query: use Debian 12 or Ubuntu, or install the equivalents of these yourself:$missing"
    return
  fi
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    say "these Debian packages are missing and installing them needs root or sudo: as root, run \`apt-get install$missing\`, then set-up again"
    return
  fi
  echo "${missing# }"
}

before() {
  local pv
  check_platform
  check_go
  check_rust
  if [ -x "$PYTHON" ]; then
    pv=$(python_version)
    if [ -z "$pv" ] || ! version_ge "$pv" "$PYTHON_MIN"; then
      say "$PYTHON is Python ${pv:-of unknown version}; set-up needs Debian's Python ≥ $PYTHON_MIN, as in Debian 12 or newer, whose python3-torch the virtual environment uses"
    fi
  fi
  check_debian "$RUST_PACKAGE"
}

after() {
  local pv
  check_rust
  if [ -n "$RUST_PACKAGE" ]; then
    say "there is still no cargo on PATH after installing Debian's cargo-web: install Rust ≥ $RUST_MIN with rustup (https://rustup.rs)"
  fi
  if [ ! -x "$PYTHON" ]; then
    say "$PYTHON is missing although Debian's python3-venv is installed: install Debian's python3 ($PYTHON_MIN or newer)"
  else
    pv=$(python_version)
    if [ -z "$pv" ] || ! version_ge "$pv" "$PYTHON_MIN"; then
      say "$PYTHON is Python ${pv:-of unknown version}; set-up needs Debian's Python ≥ $PYTHON_MIN, as in Debian 12 or newer, whose python3-torch the virtual environment uses"
    elif ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
      say "$PYTHON cannot make virtual environments: install Debian's python3-venv"
    fi
  fi
  if ! command -v "${CC:-gcc}" >/dev/null; then
    say "${CC:-gcc} is not installed; the Go build links onnxruntime and the tokenizer through cgo: install Debian's gcc and libc6-dev, or set CC to your C compiler"
  fi
  if ! command -v make >/dev/null; then
    say "make is not installed; install Debian's make"
  fi
  if ! command -v sha256sum >/dev/null; then
    say "sha256sum is not installed; it checks the downloaded onnxruntime library: install Debian's coreutils"
  fi
}

case ${1:-before} in
  before) before ;;
  after) after ;;
  *) echo "usage: check-prereqs.sh [before|after]" >&2; exit 2 ;;
esac
[ "$problems" -eq 0 ]
