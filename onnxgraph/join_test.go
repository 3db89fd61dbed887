package onnxgraph_test

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
)

// Joining optimum's two files gives one graph: the encoder's inputs and the decoder's
// target ids as inputs, the decoder's outputs, every name once (names both files use are
// prefixed on the encoder's side), the encoder's sites first; Save writes it whole.
func TestJoinEncoderDecoder(t *testing.T) {
	dir := filepath.Join(testutil.Root(), "testdata", "models", "split-encdec")
	for _, decoder := range []string{"decoder_model.onnx", "decoder_model_merged.onnx"} {
		t.Run(decoder, func(t *testing.T) {
			enc, err := onnxgraph.Load(filepath.Join(dir, "encoder_model.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			dec, err := onnxgraph.Load(filepath.Join(dir, decoder))
			if err != nil {
				t.Fatal(err)
			}
			m, err := onnxgraph.JoinEncoderDecoder(enc, dec)
			if err != nil {
				t.Fatal(err)
			}
			var ins []string
			for _, in := range onnxgraph.Inputs(m) {
				ins = append(ins, in.Name+":"+in.Role.String())
			}
			want := "input_ids:token ids,attention_mask:attention mask,decoder_input_ids:decoder token ids"
			if decoder == "decoder_model_merged.onnx" {
				want += ",use_cache_branch:use-cache branch"
			}
			if got := strings.Join(ins, ","); got != want {
				t.Errorf("inputs %s, want %s", got, want)
			}
			if got := m.Parts(); !slices.Equal(got, []string{enc.Path, dec.Path}) || m.Path != dec.Path {
				t.Errorf("parts %v, path %s", got, m.Path)
			}
			if files := m.ExternalDataFiles(); len(files) != 0 {
				t.Errorf("the joined model's own files listed as external data: %v", files)
			}
			g := m.Graph()
			if len(g.GetNode()) != len(enc.Graph().GetNode())+len(dec.Graph().GetNode()) {
				t.Errorf("%d nodes, want %d + %d", len(g.GetNode()), len(enc.Graph().GetNode()), len(dec.Graph().GetNode()))
			}
			seen := map[string]bool{}
			for _, n := range g.GetNode() {
				for _, o := range n.GetOutput() {
					if seen[o] {
						t.Fatalf("tensor %s is produced twice", o)
					}
					seen[o] = true
				}
			}
			for _, init := range g.GetInitializer() {
				if seen[init.GetName()] {
					t.Fatalf("initializer %s is defined twice", init.GetName())
				}
				seen[init.GetName()] = true
			}
			att, err := onnxgraph.FindAttention(m)
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, s := range att.Sites {
				k := "self"
				if s.Cross {
					k = "cross"
				}
				kinds = append(kinds, k)
			}
			if got := strings.Join(kinds, ","); got != "self,self,cross,self,cross" || !strings.Contains(att.Sites[0].Node, "encoder") {
				t.Errorf("sites %s, first %s", got, att.Sites[0].Node)
			}
			var buf bytes.Buffer
			if err := onnxgraph.Save(m, att, &buf); err != nil {
				t.Fatal(err)
			}
			saved, err := onnxgraph.Parse(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if buf.Len() < int(enc.Size+dec.Size)/2 || len(saved.ExternalDataFiles()) != 0 {
				t.Errorf("the saved model (%d bytes, external data %v) does not hold the weights", buf.Len(), saved.ExternalDataFiles())
			}
			for l := range att.Sites {
				if !hasOutput(saved, onnxgraph.OutputName(l)) {
					t.Errorf("the saved model has no output %s", onnxgraph.OutputName(l))
				}
			}
		})
	}
}

func hasOutput(m *onnxgraph.Model, name string) bool {
	for _, o := range m.Graph().GetOutput() {
		if o.GetName() == name {
			return true
		}
	}
	return false
}
