#!/usr/bin/env bash
# Regenerates onnxgraph/onnxpb/onnx.pb.go from onnxgraph/onnxpb/onnx.proto.
# protoc comes from Debian's protobuf-compiler; protoc-gen-go from the Go module proxy at
# the version of google.golang.org/protobuf in go.mod, so generated code and runtime match.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq protobuf-compiler >/dev/null
fi
version=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
GOBIN="$PWD/build/bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$version"
PATH="$PWD/build/bin:$PATH" protoc --proto_path=onnxgraph/onnxpb \
  --go_out=onnxgraph/onnxpb --go_opt=paths=source_relative onnxgraph/onnxpb/onnx.proto
echo "generate-proto: onnxgraph/onnxpb/onnx.pb.go written with protoc $(protoc --version | cut -d' ' -f2), protoc-gen-go $version" >&2
