#!/usr/bin/env bash
# Builds build/tokenizers/libtokenizers.a, the static Rust library that the Go binding
# github.com/daulet/tokenizers links, from that module's own source at exactly the version in
# go.mod (the binding checks the version at link time). Needs cargo and crates.io, nothing else.
# Idempotent: skips the build when a library stamped with the same version is present.
set -euo pipefail
cd "$(dirname "$0")/.."

MOD=github.com/daulet/tokenizers
OUT=build/tokenizers
LIB=$OUT/libtokenizers.a
STAMP=$OUT/VERSION

log() { echo "build-tokenizers: $*" >&2; }
write_header() {
  rm -f "$OUT"/libtokenizers-*.h
  printf '/* Written by scripts/build-tokenizers.sh: libtokenizers.a beside this file is built from %s %s. */\n' "$MOD" "$1" > "$HEADER"
}

version=$(go list -m -f '{{.Version}}' "$MOD" 2>/dev/null || true)
if [ -z "$version" ]; then
  log "go.mod does not require $MOD; nothing to build"
  exit 0
fi

# tokenizer/tokenizer.go refuses to compile, naming this script, until the header for the
# version it was written for exists beside the library.
HEADER=$OUT/libtokenizers-$version.h

if [ -f "$LIB" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$version" ]; then
  [ -f "$HEADER" ] || write_header "$version"
  log "$LIB is up to date ($MOD $version)"
  exit 0
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  log "cargo ≥ 1.78 is needed to build $LIB (its Cargo.lock is format 4): install Rust with rustup (https://rustup.rs) or Debian 12's cargo-web, not Debian's cargo package (1.65), and run 'make setup' again"
  exit 1
fi

go mod download "$MOD"
src=$(go list -m -f '{{.Dir}}' "$MOD")
if [ -z "$src" ] || [ ! -f "$src/Cargo.toml" ]; then
  log "cannot find the Rust source of $MOD $version in the Go module cache"
  exit 1
fi

# The module cache is read-only: build in a writable copy. The cargo target directory stays
# between runs, so a rebuild after a version change only recompiles what changed.
work=build/tokenizers-src/$version
rm -rf "$work"
mkdir -p "$work" "$OUT"
rm -f "$STAMP" "$OUT"/libtokenizers-*.h
cp -R "$src/Cargo.toml" "$src/Cargo.lock" "$src/src" "$work/"
[ -d "$src/benches" ] && cp -R "$src/benches" "$work/"
chmod -R u+w "$work"

log "building libtokenizers.a from $MOD $version with cargo (a few minutes on 2 cores)"
start=$(date +%s)
(
  cd "$work"
  export CARGO_TARGET_DIR="$PWD/../target"
  if ! cargo build --release --locked --lib 2>&1 | sed 's/^/  cargo: /' >&2; then
    exit 1
  fi
) || { log "cargo build failed (see the cargo output above)"; exit 1; }
# Check the artefact too: cargo may succeed without writing it (a changed crate type).
built=build/tokenizers-src/target/release/libtokenizers.a
if [ ! -f "$built" ]; then
  log "cargo did not produce $built"
  exit 1
fi
cp "$built" "$LIB.tmp" && mv "$LIB.tmp" "$LIB"
echo "$version" > "$STAMP"
write_header "$version"
log "built $LIB ($MOD $version) in $(( $(date +%s) - start ))s"
