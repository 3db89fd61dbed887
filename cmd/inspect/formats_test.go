package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/npy"
	"github.com/attnscope/attnscope/internal/testutil"
	"github.com/attnscope/attnscope/tableio"
)

// formatsModel is the bundled demo model (2 layers × 8 heads, with a tokenizer, so the
// token columns hold labels that need quoting: "␣w", ",").
var formatsModel = filepath.Join("models", "demo", "model.onnx")

const formatsText = "Hello world, hello \"world\""

// runFormat runs args with --out FILE.ext (ext the format) plus extra, and returns the
// file's bytes; it fails the test on a non-zero exit.
func runFormat(t *testing.T, ext string, args []string, extra ...string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out."+ext)
	a := append(append(append([]string{}, args...), "--out", out, "--device", "cpu"), extra...)
	_, stderr, code := inspect(t, a...)
	if code != 0 {
		t.Fatalf("%v: exit %d: %s", a, code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readTable(t *testing.T, format string, b []byte) *tableio.Table {
	t.Helper()
	var tbl *tableio.Table
	var err error
	switch format {
	case "csv":
		tbl, err = tableio.ReadCSV(bytes.NewReader(b))
	case "npz":
		tbl, err = tableio.ReadNPZ(bytes.NewReader(b), int64(len(b)))
	case "parquet":
		tbl, err = tableio.ReadParquet(b)
	case "json":
		tbl, err = tableFromJSON(b)
	}
	if err != nil {
		t.Fatalf("reading the %s back: %v", format, err)
	}
	return tbl
}

// tableFromJSON reads a JSON array of objects, its keys in the order of the first object
// (which the writer keeps: the CSV's columns), null as NaN.
func tableFromJSON(b []byte) (*tableio.Table, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var rows []map[string]any
	if err := dec.Decode(&rows); err != nil {
		return nil, err
	}
	var names []string
	if i := bytes.IndexByte(b, '{'); i >= 0 {
		obj := b[i : i+bytes.IndexByte(b[i:], '}')+1]
		d := json.NewDecoder(bytes.NewReader(obj))
		d.Token()
		for d.More() {
			k, _ := d.Token()
			names = append(names, k.(string))
			var skip any
			d.Decode(&skip)
		}
	}
	var csvBuf strings.Builder
	csvBuf.WriteString(strings.Join(names, ",") + "\n")
	for _, r := range rows {
		for i, n := range names {
			if i > 0 {
				csvBuf.WriteByte(',')
			}
			switch v := r[n].(type) {
			case nil:
				csvBuf.WriteString("NaN")
			case json.Number:
				csvBuf.WriteString(v.String())
			case string:
				csvBuf.WriteString(csvField(v))
			}
		}
		csvBuf.WriteByte('\n')
	}
	return tableio.ReadCSV(strings.NewReader(csvBuf.String()))
}

// Every table command writes csv, npz, parquet and json with the same columns and values:
// each format read back (npz with our reader, parquet with arrow-go's, json with
// encoding/json) equals the CSV.
func TestFormatsTablesEqualCSV(t *testing.T) {
	testutil.RequireORT(t)
	commands := []struct {
		name string
		args []string
		tol  float64 // CSV prints 8 significant digits; the binary formats keep float64
	}{
		{"heads", []string{"heads", formatsModel, "--text", formatsText, "--probes", "2", "--probe-len", "8"}, 1e-6},
		{"tokens", []string{"tokens", formatsModel, "--text", formatsText}, 1e-6},
		{"ablate", []string{"ablate", formatsModel, "--text", formatsText, "--heads", "L0H0,L1H3", "--effects", "--probes", "2", "--probe-len", "8"}, 1e-6},
	}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			csvTable := readTable(t, "csv", runFormat(t, "csv", c.args))
			if csvTable.Rows() == 0 {
				t.Fatal("the CSV has no rows")
			}
			for _, f := range []string{"npz", "parquet", "json"} {
				got := readTable(t, f, runFormat(t, f, c.args))
				if err := tableio.Compare(got, csvTable, c.tol*10); err != nil {
					t.Errorf("%s differs from the CSV: %v", f, err)
				}
			}
			// --format given with an --out of another extension's name: the flag is refused
			// when the extension names another format, followed when it names none.
			got := readTable(t, "npz", runFormat(t, "bin", c.args, "--format", "npz"))
			if err := tableio.Compare(got, csvTable, c.tol*10); err != nil {
				t.Errorf("--format npz into out.bin: %v", err)
			}
		})
	}
}

// dump's formats: parquet (read by arrow-go) and json equal the CSV row for row, with and
// without the filters; npz holds the dense maps, float32 for float32, and the ids.
func TestFormatsDump(t *testing.T) {
	testutil.RequireORT(t)
	args := []string{"dump", formatsModel, "--text", formatsText}
	csvBytes := runFormat(t, "csv", args)
	csvTable := readTable(t, "csv", csvBytes)
	names := make([]string, len(csvTable.Columns))
	for i, c := range csvTable.Columns {
		names[i] = c.Name
	}
	if got := strings.Join(names, ","); got != "layer,head,query,key,query_token,key_token,weight,query_id,key_id" {
		t.Fatalf("CSV columns %s", got)
	}
	T := 0
	for _, q := range csvTable.Columns[2].Ints {
		T = max(T, int(q)+1)
	}
	if want := 2 * 8 * T * T; csvTable.Rows() != want {
		t.Fatalf("%d rows, want %d", csvTable.Rows(), want)
	}

	t.Run("npz", func(t *testing.T) {
		b := runFormat(t, "npz", args)
		z, err := npy.OpenNPZ(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		var flat []float32
		for l := range 2 {
			a, err := z.Read("attn.L" + strconv.Itoa(l))
			if err != nil {
				t.Fatal(err)
			}
			if a.Descr != "<f4" || len(a.Shape) != 3 || a.Shape[0] != 8 || a.Shape[1] != T || a.Shape[2] != T {
				t.Fatalf("attn.L%d is %s %v, want <f4 [8 %d %d]", l, a.Descr, a.Shape, T, T)
			}
			flat = append(flat, a.Data.([]float32)...)
		}
		want := make([]float32, csvTable.Rows())
		for i, w := range csvTable.Columns[6].Floats {
			want[i] = float32(w)
		}
		if d := testutil.MaxAbsDiff(flat, want); d != 0 {
			t.Errorf("npz weights differ from the CSV's by %g", d)
		}
		ids, _ := z.Read("ids")
		if got := ids.Data.([]int64); len(got) != T || got[0] != csvTable.Columns[7].Ints[0] {
			t.Errorf("ids %v", got)
		}
		// Written back as CSV, the npz is the binary's CSV byte for byte (labels, ids, order).
		back, err := tableio.ReadAttentionNPZ(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		var again bytes.Buffer
		tableio.WriteAttentionCSV(&again, back, tableio.Filter{})
		if again.String() != string(csvBytes) {
			t.Error("the npz written as CSV is not the CSV")
		}
	})

	filters := []struct {
		name  string
		extra []string
		rows  func(n int) bool
	}{
		{"dense", nil, func(n int) bool { return n == 2*8*T*T }},
		{"causal-only", []string{"--causal-only"}, func(n int) bool { return n == 2*8*T*(T+1)/2 }},
		{"top-k", []string{"--top-k", "3"}, func(n int) bool { return n == 2*8*T*3 }}, // masked zeros count: rows are whole
		{"min-weight", []string{"--min-weight", "0.2"}, func(n int) bool { return n > 2*8*T/5 && n < 2*8*T*(T+1)/2 }},
		{"causal top-k", []string{"--causal-only", "--top-k", "3"}, func(n int) bool { return n == 2*8*(1+2+3*(T-2)) }},
		{"all three", []string{"--causal-only", "--top-k", "2", "--min-weight", "0.05"}, func(n int) bool { return n <= 2*8*(1+2*(T-1)) }},
	}
	for _, flt := range filters {
		t.Run(flt.name, func(t *testing.T) {
			want := readTable(t, "csv", runFormat(t, "csv", args, flt.extra...))
			if !flt.rows(want.Rows()) {
				t.Fatalf("%d CSV rows (T = %d)", want.Rows(), T)
			}
			for _, c := range want.Columns[6].Floats {
				if c < 0.2 && flt.name == "min-weight" {
					t.Fatalf("weight %g kept below --min-weight", c)
				}
			}
			got := readTable(t, "parquet", runFormat(t, "parquet", args, flt.extra...))
			if err := tableio.Compare(got, want, 1e-7); err != nil {
				t.Errorf("parquet differs from the CSV: %v", err)
			}
			var doc struct {
				IDs    []int64 `json:"ids"`
				Layers []struct {
					Layer   int           `json:"layer"`
					Heads   []int         `json:"heads"`
					Weights [][][]float64 `json:"weights"`
					Keys    [][][]int     `json:"keys"`
				} `json:"layers"`
			}
			if err := json.Unmarshal(runFormat(t, "json", args, flt.extra...), &doc); err != nil {
				t.Fatal(err)
			}
			r := 0
			for _, L := range doc.Layers {
				for h, rows := range L.Weights {
					for q, row := range rows {
						for i, w := range row {
							k := i
							if L.Keys != nil {
								k = L.Keys[h][q][i]
							}
							if int(want.Columns[0].Ints[r]) != L.Layer || int(want.Columns[1].Ints[r]) != L.Heads[h] ||
								int(want.Columns[2].Ints[r]) != q || int(want.Columns[3].Ints[r]) != k ||
								testutil.Diff(w, want.Columns[6].Floats[r]) > 1e-7 {
								t.Fatalf("json weight %d (L%d H%d q%d k%d %g) is not CSV row %d", r, L.Layer, L.Heads[h], q, k, w, r)
							}
							r++
						}
					}
				}
			}
			if r != want.Rows() {
				t.Errorf("json has %d weights, the CSV %d rows", r, want.Rows())
			}
		})
	}
}

// An encoder–decoder's npz has the target's ids and [heads, target, source]
// cross-attention arrays; --causal-only drops the decoder's masked keys and leaves encoder
// and cross-attention layers whole (testdata/models/encdec: nn.Transformer, 1 encoder and
// 2 decoder layers of 2 heads).
func TestFormatsDumpEncoderDecoder(t *testing.T) {
	testutil.RequireORT(t)
	src, tgt := []int64{3, 14, 15, 42, 9}, []int64{2, 7, 1}
	args := []string{"dump", model("encdec"), "--ids", idsFlag(src), "--target-ids", idsFlag(tgt)}
	b := runFormat(t, "npz", args)
	z, err := npy.OpenNPZ(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	kinds, _ := z.Read("layer_kinds")
	if got := strings.Join(kinds.Data.([]string), ","); got != "encoder,self,cross,self,cross" {
		t.Errorf("layer kinds %s", got)
	}
	ids, _ := z.Read("ids")
	tids, _ := z.Read("target_ids")
	if idsFlag(ids.Data.([]int64)) != idsFlag(src) || idsFlag(tids.Data.([]int64)) != idsFlag(tgt) {
		t.Errorf("ids %v, target_ids %v", ids.Data, tids.Data)
	}
	for l, want := range map[int][]int{0: {2, 5, 5}, 1: {2, 3, 3}, 2: {2, 3, 5}} {
		a, err := z.Read("attn.L" + strconv.Itoa(l))
		if err != nil || !slices.Equal(a.Shape, want) {
			t.Errorf("attn.L%d: shape %v (%v), want %v", l, a.Shape, err, want)
		}
	}
	perLayer := func(tbl *tableio.Table) map[int64]int {
		n := map[int64]int{}
		for _, l := range tbl.Columns[0].Ints {
			n[l]++
		}
		return n
	}
	full := perLayer(readTable(t, "csv", runFormat(t, "csv", args)))
	causal := perLayer(readTable(t, "csv", runFormat(t, "csv", args, "--causal-only")))
	want := map[int64]int{0: 2 * 25, 1: 2 * 6, 2: 2 * 15, 3: 2 * 6, 4: 2 * 15}
	if !maps.Equal(causal, want) || full[1] != 2*9 {
		t.Errorf("--causal-only: rows per layer %v, want %v (without it %v)", causal, want, full)
	}
}

// Wrong formats and combinations get one sentence and exit 2, before the model runs;
// --out never replaces the model, whatever the format.
func TestFormatsBadUsage(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"dump", formatsModel, "--text", "hi", "--format", "xml"}, `dump writes csv, npz, parquet or json; --format "xml" is not one of them`},
		{[]string{"dump", formatsModel, "--text", "hi", "--format", "table"}, `dump writes csv, npz, parquet or json; --format "table"`},
		{[]string{"ablate", formatsModel, "--text", "hi", "--format", "table"}, `ablate writes csv, npz, parquet or json`},
		{[]string{"heads", formatsModel, "--format", "yaml"}, `heads writes csv, npz, parquet, json or table`},
		{[]string{"tokens", formatsModel, "--text", "hi", "--out", filepath.Join(dir, "x.npz"), "--format", "parquet"}, "names an npz file but --format is parquet"},
		{[]string{"heads", formatsModel, "--out", filepath.Join(dir, "x.csv"), "--format", "table"}, "names a csv file but --format is table"},
		{[]string{"dump", formatsModel, "--text", "hi", "--out", filepath.Join(dir, "x.npz"), "--top-k", "3"}, "--top-k shrinks csv, parquet and json dumps; npz holds dense"},
		{[]string{"dump", formatsModel, "--text", "hi", "--format", "npz", "--out", filepath.Join(dir, "x"), "--causal-only"}, "--causal-only shrinks csv, parquet and json dumps"},
		{[]string{"dump", formatsModel, "--text", "hi", "--min-weight", "-1"}, "--min-weight must be a weight of 0 or more"},
		{[]string{"dump", formatsModel, "--text", "hi", "--top-k", "-2"}, "--top-k must be 1 or more"},
		{[]string{"dump", formatsModel, "--text", "hi", "--out", formatsModel, "--format", "npz"}, "would overwrite the model itself"},
		{[]string{"tokens", formatsModel, "--text", "hi", "--out", filepath.Join("models", "demo", "tokenizer.json")}, "tokenizer.json would overwrite"},
	}
	for _, c := range cases {
		_, stderr, code := inspect(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line with %q", c.args, code, stderr, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.npz")); err == nil {
		t.Error("a refused run left its --out behind")
	}
}

// A selection keeps only the chosen layers and heads in every format; npz names the heads
// it kept (heads.L{n}).
func TestFormatsDumpSelection(t *testing.T) {
	testutil.RequireORT(t)
	args := []string{"dump", formatsModel, "--text", formatsText, "--layer", "1", "--head", "2,5"}
	b := runFormat(t, "npz", args)
	z, err := npy.OpenNPZ(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := z.Read("layers")
	heads, err := z.Read("heads.L1")
	if err != nil || !slices.Equal(layers.Data.([]int64), []int64{1}) || !slices.Equal(heads.Data.([]int64), []int64{2, 5}) {
		t.Fatalf("layers %v, heads.L1 %v (%v)", layers.Data, heads, err)
	}
	a, _ := z.Read("attn.L1")
	if a.Shape[0] != 2 {
		t.Errorf("attn.L1 shape %v, want 2 heads", a.Shape)
	}
	back, err := tableio.ReadAttentionNPZ(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	tableio.WriteAttentionCSV(&again, back, tableio.Filter{})
	if csv := runFormat(t, "csv", args); again.String() != string(csv) {
		t.Error("the selected npz written as CSV is not the CSV of the same selection")
	}
	pq := readTable(t, "parquet", runFormat(t, "parquet", args))
	if err := tableio.Compare(pq, readTable(t, "csv", again.Bytes()), 1e-7); err != nil {
		t.Errorf("parquet of the selection: %v", err)
	}
}

// csvField quotes s as encoding/csv would.
func csvField(s string) string { return string(tableio.AppendCSVField(nil, s)) }
