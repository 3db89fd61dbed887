package main

import (
	"bytes"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/tableio"
)

// readCSV parses a command's CSV output into its header and rows.
func readCircuitsCSV(t *testing.T, out string) ([]string, [][]string) {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) == 0 {
		t.Fatalf("not CSV (%v):\n%s", err, out)
	}
	return recs[0], recs[1:]
}

// inspect circuits writes the contract's columns, one row per head, pair or token pair;
// the numbers themselves are checked against PyTorch in the circuits package.
func TestCircuitsCommand(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		header string
		rows   int
		stderr string
	}{
		{"heads", []string{"circuits", model("attn2l")}, "layer,head,ov_copying,qk_prev_token,qk_self,ov_norm,qk_norm", 8, ""},
		{"composition", []string{"circuits", model("attn2l"), "--composition"}, "from_layer,from_head,to_layer,to_head,q_comp,k_comp,v_comp", 16, ""},
		{"baseline", []string{"circuits", model("attn2l"), "--composition", "--baseline"}, "from_layer,from_head,to_layer,to_head,q_comp,k_comp,v_comp,baseline", 16, ""},
		{"layer-0 head", []string{"circuits", model("attn2l"), "--head", "L0H1", "--top", "5"}, "circuit,rank,source_id,source_token,destination_id,destination_token,output_id,output_token,qk,ov", 10, ""},
		{"layer-1 head", []string{"circuits", model("attn2l"), "--head", "L1H0", "--top", "3"}, "circuit,rank,source_id,source_token,destination_id,destination_token,output_id,output_token,qk,ov", 3, "reads earlier heads"},
		{"bert", []string{"circuits", model("bert")}, "layer,head,ov_copying,qk_prev_token,qk_self,ov_norm,qk_norm", 4, "OV copying unavailable"},
		{"demo", []string{"circuits"}, "layer,head,ov_copying,qk_prev_token,qk_self,ov_norm,qk_norm", 16, "built-in demo"},
		{"hub folder", []string{"circuits", "testdata/hub/tiny"}, "layer,head,ov_copying,qk_prev_token,qk_self,ov_norm,qk_norm", 4, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := inspect(t, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			header, rows := readCircuitsCSV(t, out)
			if got := strings.Join(header, ","); got != tc.header {
				t.Errorf("header %s, want %s", got, tc.header)
			}
			if len(rows) != tc.rows {
				t.Errorf("%d rows, want %d", len(rows), tc.rows)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q: %s", tc.stderr, stderr)
			}
			if tc.name == "baseline" {
				// Random factors score about 1/√d_model (d_model 64 here).
				for _, r := range rows {
					if b, err := strconv.ParseFloat(r[7], 64); err != nil || math.Abs(b-0.125) > 0.01 {
						t.Fatalf("baseline %s, want ≈ 0.125", r[7])
					}
				}
			}
		})
	}
}

func TestCircuitsBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"baseline alone", []string{"circuits", model("attn2l"), "--baseline"}, 2, "--baseline goes with --composition"},
		{"no such layer", []string{"circuits", model("attn2l"), "--head", "L5H0"}, 2, "2 layers"},
		{"no such head", []string{"circuits", model("attn2l"), "--head", "L1H9"}, 2, "4 heads"},
		{"two heads", []string{"circuits", model("attn2l"), "--head", "L1"}, 2, "give one"},
		{"format", []string{"circuits", model("attn2l"), "--format", "xml"}, 2, `--format "xml" is not one of them`},
		{"top", []string{"circuits", model("attn2l"), "--head", "L0H0", "--top", "0"}, 2, "--top 0"},
		{"no attention weights", []string{"circuits", "SHARED:fixtures/onnx23-4d-qk-softmax/model.onnx"}, 1, "weights"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, a := range tc.args {
				if rel, ok := strings.CutPrefix(a, "SHARED:"); ok {
					tc.args[i] = testutil.Shared(t, rel)
				}
			}
			_, stderr, code := inspect(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want exit %d and one line with %q", code, stderr, tc.code, tc.want)
			}
		})
	}
}

// The circuits tables go through the same formats as the other table commands: an .npz
// reads back as the CSV's numbers.
func TestCircuitsFormats(t *testing.T) {
	dir := t.TempDir()
	csvOut, stderr, code := inspect(t, "circuits", model("attn2l"), "--composition")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	path := filepath.Join(dir, "comp.npz")
	if _, stderr, code := inspect(t, "circuits", model("attn2l"), "--composition", "--out", path); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := tableio.ReadNPZ(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	header, rows := readCircuitsCSV(t, csvOut)
	if tbl.Rows() != len(rows) || len(tbl.Columns) != len(header) {
		t.Fatalf("npz has %d rows × %d columns, CSV %d × %d", tbl.Rows(), len(tbl.Columns), len(rows), len(header))
	}
	for c, col := range tbl.Columns {
		if col.Name != header[c] {
			t.Fatalf("npz column %d is %s, CSV %s", c, col.Name, header[c])
		}
		for r := range rows {
			want, _ := strconv.ParseFloat(rows[r][c], 64)
			got := float64(0)
			switch col.Kind {
			case tableio.Int:
				got = float64(col.Ints[r])
			case tableio.Float:
				got = col.Floats[r]
			}
			if testutil.Diff(got, want) > 1e-7*math.Max(1, math.Abs(want)) {
				t.Fatalf("row %d %s: npz %v, CSV %v", r, col.Name, got, want)
			}
		}
	}
	// An --out whose extension names a format is written in it, as the other commands do.
	if _, stderr, code := inspect(t, "circuits", model("attn2l"), "--out", filepath.Join(dir, "c.parquet"), "--format", "csv"); code != 2 || !strings.Contains(stderr, "--format is csv") {
		t.Errorf("csv into .parquet: exit %d, %s", code, stderr)
	}
}

func TestCircuitsInputsAndLimits(t *testing.T) {
	dir := t.TempDir()
	corpus := filepath.Join(dir, "corpus.txt")
	// 40,000 two-byte characters with no line break: the encoding pieces must be cut at a
	// character boundary.
	if err := os.WriteFile(corpus, []byte("a"+strings.Repeat("é", 40000)+" the cat sat"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := inspect(t, "circuits", "models/attn1l", "--head", "L0H7", "--top", "3", "--vocab-from", corpus); code != 0 {
		t.Errorf("a long line of UTF-8: exit %d, %s", code, stderr)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"corpus as output", []string{"--head", "L0H7", "--vocab-from", corpus, "--out", corpus}, "would overwrite the --vocab-from"},
		{"top too large", []string{"--head", "L0H7", "--top", "100000000"}, "from 1 to 10000"},
		{"binary corpus", []string{"--head", "L0H7", "--vocab-from", "models/attn1l/model.onnx"}, "not UTF-8 text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := os.ReadFile(corpus)
			_, stderr, code := inspect(t, append([]string{"circuits", "models/attn1l"}, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, %q; want exit 2 and %q", code, stderr, tc.want)
			}
			if after, _ := os.ReadFile(corpus); !bytes.Equal(before, after) {
				t.Error("the corpus was changed")
			}
		})
	}
}

// A split encoder–decoder gives the same circuits whichever decoder file it runs (the
// merged decoder's layers live inside an If: their reads of the encoder still count).
func TestCircuitsSplitMergedEqualsPlain(t *testing.T) {
	for _, args := range [][]string{{"--composition"}, {}} {
		merged, stderr, code := inspect(t, append([]string{"circuits", filepath.Dir(model("split-encdec"))}, args...)...)
		if code != 0 {
			t.Fatalf("merged: exit %d: %s", code, stderr)
		}
		plain, stderr, code := inspect(t, append([]string{"circuits", filepath.Dir(model("split-encdec")), "--file", "decoder_model.onnx"}, args...)...)
		if code != 0 {
			t.Fatalf("plain: exit %d: %s", code, stderr)
		}
		if merged != plain {
			t.Errorf("circuits %v differ between the merged and the plain decoder:\n%s\n---\n%s", args, merged, plain)
		}
		if len(args) > 0 && !strings.Contains(merged, "\n0,0,2,0,") {
			t.Errorf("no encoder → cross-attention pair:\n%s", merged)
		}
	}
}
