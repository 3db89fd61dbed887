# attnscope — every workflow is a target here; the README names two of them.
#   make demo   set up, build, and run the tool on the bundled demo model
#   make test   set up, build, and run every test (what .ci/run calls)

SHELL := /bin/bash
GO ?= go
PYTHON := $(CURDIR)/.venv/bin/python

# Tests and the demo use the library that scripts/fetch-onnxruntime.sh put under lib/.
export ONNXRUNTIME_SHARED_LIBRARY_PATH ?= $(CURDIR)/lib/libonnxruntime.so
export ATTNSCOPE_PYTHON := $(PYTHON)

.PHONY: setup build demo test test-go test-python test-e2e test-setup vet bench fuzz generate fixtures clean

setup:
	@bash scripts/setup.sh

# The version `inspect --version` prints: the commit described by git (a tag, or the hash,
# with -dirty for uncommitted changes).
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

build: setup
	$(GO) build -buildvcs=auto -ldflags "-X main.version=$(VERSION)" -o bin/inspect ./cmd/inspect

# The attention browser on the demo model embedded in the binary (q quits).
demo: build
	bin/inspect

vet: setup
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted" >&2; exit 1; fi

test-go: setup
	$(GO) test ./...

test-python: setup
	cd export && $(PYTHON) -m pytest -q

# The real binary in tmux: navigate, edit the prompt, resize, quit (scripts/e2e-tui.sh); an
# encoder–decoder of unequal lengths, a FIFO prompt, a 100 KB paste, PNGs never overwritten
# (scripts/e2e-tui-encdec.sh); a training timeline's steps (scripts/e2e-tui-timeline.sh).
test-e2e: build
	bash scripts/e2e-tui.sh
	bash scripts/e2e-tui-encdec.sh
	bash scripts/e2e-tui-timeline.sh

# The set-up's prerequisite checks against fake old or missing tools.
test-setup:
	bash scripts/test-setup.sh

test: build vet test-setup test-go test-python test-e2e

bench: build
	bash scripts/bench.sh
	bash scripts/bench_analysis.sh
	bash scripts/bench_tui.sh
	bash scripts/bench_ablate.sh

# Every fuzz target for FUZZTIME each (TESTING.md has 10-minute runs).
FUZZTIME ?= 60s
fuzz: setup
	$(GO) test ./onnxgraph -run '^$$' -fuzz '^FuzzPipeline$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 30s
	$(GO) test ./onnxgraph -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 100x
	$(GO) test ./tokenizer -run '^$$' -fuzz '^FuzzEncodeLabel$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tokenizer -run '^$$' -fuzz '^FuzzWithoutPadding$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tui -run '^$$' -fuzz '^FuzzKeyStorm$$' -fuzztime $(FUZZTIME)

# Regenerates onnxgraph/onnx.pb.go from onnxgraph/onnx.proto (needs protoc; see the script).
generate:
	bash scripts/generate-proto.sh

# Regenerates the committed test models under testdata/models with PyTorch.
fixtures: setup
	$(PYTHON) -m export.fixtures --out testdata/models
	$(PYTHON) -m export.forms --out testdata/models
	$(PYTHON) -m export.quantize --src testdata/models/gpt2tiny --out testdata/models/gpt2tiny-int8
	$(PYTHON) -m export.fixtures_fp16_step --out testdata/models
	$(PYTHON) -m export.circuit_forms --out testdata/models
	$(PYTHON) -m export.ablation_refs --out testdata/ablation
	$(PYTHON) -m export.split_encdec --out testdata/models/split-encdec --hub testdata/hub/tiny
	$(PYTHON) -m export.timeline fixture --out testdata/timeline/tiny

clean:
	rm -rf bin build/bench
