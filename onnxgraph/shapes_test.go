package onnxgraph_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/onnxgraph"
	pb "github.com/attnscope/attnscope/onnxgraph/onnxpb"
)

// The shape inference that decides ranks and key axes agrees with ONNX's own shape
// inference (Python's onnx.shape_inference) on every committed and shared model: with the
// file's value_info removed, every tensor both infer has the same rank, and the same size
// wherever both know it. The test also requires that attnscope infers the rank of a good
// share of the tensors ONNX does, so that an inference that gives up everywhere fails.
func TestShapeInferenceAgreesWithONNX(t *testing.T) {
	py := testutil.Python(t, "onnx")
	const script = `
import sys, json, onnx
from onnx import shape_inference
out = {}
for path in sys.argv[1:]:
    m = onnx.load(path, load_external_data=False)
    del m.graph.value_info[:]
    shapes = {}
    try:
        inferred = shape_inference.infer_shapes(m)
    except Exception as e:
        out[path] = {"error": str(e)}
        continue
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = v.type.tensor_type
        if not tt.HasField("shape"):
            continue
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
    out[path] = {"shapes": shapes}
print(json.dumps(out))
`
	seeds := fuzzSeeds(t)
	args := []string{"-c", script}
	for _, s := range seeds {
		args = append(args, s.path)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Python's onnx shape inference failed: %v\n%s", err, stderr.Bytes())
	}
	var ref map[string]struct {
		Error  string
		Shapes map[string][]int64
	}
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatal(err)
	}
	total, known := 0, 0
	for _, s := range seeds {
		r := ref[s.path]
		if r.Error != "" || len(r.Shapes) == 0 {
			t.Logf("%s: ONNX infers nothing (%s)", s.name, r.Error)
			continue
		}
		mp := proto.Clone(s.proto).(*pb.ModelProto)
		mp.Graph.ValueInfo = nil
		m := testutil.ParseModel(t, mp)
		shape := onnxgraph.Shapes(m)
		agree := 0
		for name, want := range r.Shapes {
			total++
			got, ok := shape(name)
			if !ok {
				continue
			}
			known++
			agree++
			if len(got) != len(want) {
				t.Errorf("%s: %s has shape %v, ONNX infers %v", s.name, name, got, want)
				continue
			}
			for i := range got {
				if got[i] >= 0 && want[i] > 0 && got[i] != want[i] {
					t.Errorf("%s: %s has shape %v, ONNX infers %v", s.name, name, got, want)
					break
				}
			}
		}
		t.Logf("%s: ranks of %d of the %d tensors ONNX infers", s.name, agree, len(r.Shapes))
	}
	if total == 0 || known*2 < total {
		t.Errorf("attnscope infers the rank of %d of the %d tensors ONNX infers; want at least half", known, total)
	}
}
