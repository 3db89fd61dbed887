package session_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
)

// coveredFixtures names, for every entry of ../shared/fixtures/MANIFEST.md, the test that
// runs it. An entry missing here fails TestEveryManifestEntryIsTested, so a new fixture
// cannot go untested.
var coveredFixtures = map[string]string{
	"onnx23-4d-qk-softmax":              "TestONNXAttentionFixtures (expected probabilities, fused and expanded)",
	"onnx23-4d-qk-matmul-mode0":         "TestONNXAttentionFixtures",
	"onnx23-3d-causal":                  "TestONNXAttentionFixtures",
	"onnx23-4d-fp16":                    "TestONNXAttentionFixtures (1e-2)",
	"genai-tiny-gpt2-msattn":            "TestSharedFixturesRun; onnxgraph TestMSAttentionRewriteMatchesFusedOperator",
	"gpt2-tokenizer":                    "tokenizer TestGolden, TestVocabMergesMatchesTokenizerJSON",
	"genai-tiny-llama-fp16-mha-extdata": "TestSharedFixturesRun; onnxgraph TestMHAProbabilitiesReproduceItsOutput, TestMissingExternalDataIsNamed",
	"ort-gpt2-past-torch16":             "TestSharedFixturesRun; TestStepDecoderRunsPrompt",
	"ort-bert-toy-torch11":              "TestSharedFixturesRun",
	"ort-attn-past-u8s8-quant":          "TestSharedFixturesRun (weights as inputs: refused, naming them)",
	"ezkl-nanogpt":                      "TestSharedFixturesRun (fixed length 64)",
	"vespa-random-enc-dec":              "TestSharedFixturesRun; TestVespaEncoderDecoderPair",
	"optimum-tiny-distilbert":           "TestSharedFixturesRun (head size 1)",
}

func TestEveryManifestEntryIsTested(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testutil.Shared(t, "fixtures"), "MANIFEST.md"))
	if err != nil {
		t.Fatal(err)
	}
	entries := regexp.MustCompile("(?m)^### `([^`]+)`").FindAllStringSubmatch(string(data), -1)
	if len(entries) == 0 {
		t.Fatal("no entries found in MANIFEST.md")
	}
	for _, e := range entries {
		if _, ok := coveredFixtures[e[1]]; !ok {
			t.Errorf("MANIFEST.md entry %s has no test; add one and list it in coveredFixtures", e[1])
		}
	}
}
