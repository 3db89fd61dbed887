package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// MergedVespa writes, in a temporary folder, one graph holding Vespa's random encoder and
// decoder (../shared/fixtures/vespa-random-enc-dec), the decoder reading the encoder's
// last_hidden_state, and returns its path: inputs input_ids, attention_mask (the
// encoder's), decoder_input_ids and encoder_attention_mask (float, additive); output
// logits. It skips the test when the shared fixtures are absent.
func MergedVespa(t testing.TB) string {
	t.Helper()
	root := Shared(t, "fixtures")
	decode := func(name string) *pb.ModelProto {
		m, err := onnxgraph.Load(filepath.Join(root, "vespa-random-enc-dec", name))
		if err != nil {
			t.Fatal(err)
		}
		mp, err := m.Decode()
		if err != nil {
			t.Fatal(err)
		}
		return mp
	}
	enc, dec := decode("random_encoder.onnx"), decode("random_decoder.onnx")
	rename := func(n string) string {
		switch n {
		case "", "encoder_attention_mask", "logits":
			return n
		case "input_ids":
			return "decoder_input_ids"
		case "encoder_hidden_states":
			return "last_hidden_state"
		}
		return "dec/" + n
	}
	g := dec.Graph
	for _, n := range g.Node {
		n.Name = proto.String(rename(n.GetName()))
		for i := range n.Input {
			n.Input[i] = rename(n.Input[i])
		}
		for i := range n.Output {
			n.Output[i] = rename(n.Output[i])
		}
	}
	for _, init := range g.Initializer {
		init.Name = proto.String(rename(init.GetName()))
	}
	for _, vs := range [][]*pb.ValueInfoProto{g.ValueInfo, g.Output} {
		for _, v := range vs {
			v.Name = proto.String(rename(v.GetName()))
		}
	}
	eg := enc.Graph
	eg.Node = append(eg.Node, g.Node...)
	eg.Initializer = append(eg.Initializer, g.Initializer...)
	eg.ValueInfo = append(eg.ValueInfo, g.ValueInfo...)
	for _, in := range g.Input {
		if in.GetName() == "encoder_hidden_states" {
			continue
		}
		in.Name = proto.String(rename(in.GetName()))
		eg.Input = append(eg.Input, in)
	}
	eg.Output = g.Output
	return WriteModel(t, enc)
}

// WriteModel encodes mp into model.onnx in a fresh temporary folder and returns its path.
func WriteModel(t testing.TB, mp *pb.ModelProto) string {
	t.Helper()
	data, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ParseModel encodes mp and parses it as a model held in memory, failing the test on any
// error.
func ParseModel(t testing.TB, mp *pb.ModelProto) *onnxgraph.Model {
	t.Helper()
	data, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnxgraph.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
