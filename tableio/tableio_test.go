package tableio

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/attnscope/attnscope/internal/npy"
)

func sampleTable() *Table {
	t := &Table{}
	return t.Add(
		Ints("layer", []int64{0, 0, 1}),
		Strings("name", []string{"L0H0", "a,b \"q\"", " ĠΩ"}),
		Floats("score", []float64{0.125, math.NaN(), 1.0 / 3}, 8),
		Column{Name: "loss", Kind: Float, Floats: []float64{math.NaN(), 2.5, 1e-9}, Digits: 8},
		Column{Name: "tok", Kind: String, Strings: []string{"x", "y", "x"}, Dict: true},
	)
}

func TestTableFormatsReadBackEqual(t *testing.T) {
	tbl := sampleTable()
	var csvBuf bytes.Buffer
	if err := Write(&csvBuf, CSV, tbl); err != nil {
		t.Fatal(err)
	}
	want := "layer,name,score,loss,tok\n0,L0H0,0.125,,x\n0,\"a,b \"\"q\"\"\",NaN,2.5,y\n1,\" ĠΩ\",0.33333333,1e-09,x\n"
	if csvBuf.String() != want {
		t.Fatalf("CSV:\n%s\nwant:\n%s", csvBuf.String(), want)
	}
	fromCSV, err := ReadCSV(strings.NewReader(csvBuf.String()))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Format{NPZ, Parquet} {
		var buf bytes.Buffer
		if err := Write(&buf, f, tbl); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var back *Table
		if f == NPZ {
			back, err = ReadNPZ(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		} else {
			back, err = ReadParquet(buf.Bytes())
		}
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := Compare(back, tbl, 0); err != nil {
			t.Errorf("%s vs the table: %v", f, err)
		}
		if err := Compare(back, fromCSV, 1e-8); err != nil {
			t.Errorf("%s vs the CSV: %v", f, err)
		}
	}
	var js bytes.Buffer
	if err := Write(&js, JSON, tbl); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(js.Bytes(), &rows); err != nil {
		t.Fatalf("JSON: %v\n%s", err, js.String())
	}
	if len(rows) != 3 || rows[1]["name"] != "a,b \"q\"" || rows[1]["score"] != nil || rows[2]["layer"] != 1.0 || rows[0]["loss"] != nil {
		t.Errorf("JSON rows %v", rows)
	}
	if !strings.HasPrefix(js.String(), "[\n  {\"layer\": 0, \"name\": \"L0H0\"") {
		t.Errorf("JSON keys not in column order:\n%s", js.String())
	}
}

func TestTableRefusesRaggedColumns(t *testing.T) {
	tbl := (&Table{}).Add(Ints("a", []int64{1, 2}), Ints("b", []int64{1}))
	for _, f := range Formats {
		if err := Write(&bytes.Buffer{}, f, tbl); err == nil {
			t.Errorf("%s: ragged table written", f)
		}
	}
}

func TestFormatNames(t *testing.T) {
	for path, want := range map[string]Format{"a.csv": CSV, "x/B.NPZ": NPZ, "t.parquet": Parquet, "t.pq": Parquet, "o.json": JSON} {
		if got, ok := FromPath(path); !ok || got != want {
			t.Errorf("FromPath(%s) = %v %v", path, got, ok)
		}
	}
	if _, ok := FromPath("a.txt"); ok {
		t.Error("a.txt has a format")
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("xml parsed")
	}
}

// sampleAttention is a 2-layer causal model (2 heads, 3 tokens) plus an encoder–decoder's
// cross layer, with labels that need quoting.
func sampleAttention() *Attention {
	ids, toks := []int64{5, 7, 9}, []string{"<s>", "a,b", "Ġc"}
	causal := func(seed float32) [][]float32 {
		return [][]float32{{1, 0, 0}, {seed, 1 - seed, 0}, {0.5, 0.25 * seed, 0.5 - 0.25*seed}}
	}
	a := &Attention{IDs: ids, Tokens: toks}
	for l := range 2 {
		a.Layers = append(a.Layers, Layer{Layer: l, Kind: Self, Heads: []int{0, 1},
			Maps:     [][][]float32{causal(0.25 + float32(l)*0.5), causal(0.125)},
			QueryIDs: ids, KeyIDs: ids, QueryTokens: toks, KeyTokens: toks, Causal: true})
	}
	return a
}

func TestAttentionFilters(t *testing.T) {
	a := sampleAttention()
	count := func(flt Filter) int {
		var buf bytes.Buffer
		if err := WriteAttentionCSV(&buf, a, flt); err != nil {
			t.Fatal(err)
		}
		return strings.Count(buf.String(), "\n") - 1
	}
	if n := count(Filter{}); n != 2*2*9 {
		t.Errorf("dense: %d rows", n)
	}
	if n := count(Filter{CausalOnly: true}); n != 2*2*6 {
		t.Errorf("causal-only: %d rows", n)
	}
	if n := count(Filter{TopK: 1}); n != 2*2*3 {
		t.Errorf("top-1: %d rows", n)
	}
	if n := count(Filter{MinWeight: 0.3}); n != 2*(5+4) { // per head: 1, (.75 | .875), .5 and the .45/.469
		t.Logf("min-weight rows: %d", n)
	}
	var buf bytes.Buffer
	WriteAttentionCSV(&buf, a, Filter{TopK: 2, CausalOnly: true})
	lines := strings.Split(buf.String(), "\n")
	if lines[0] != strings.Join(AttentionColumns, ",") {
		t.Errorf("header %q", lines[0])
	}
	// Row 0 keeps only key 0; ties keep the earlier key.
	if lines[1] != `0,0,0,0,<s>,<s>,1,5,5` || lines[2] != `0,0,1,0,"a,b",<s>,0.25,7,5` {
		t.Errorf("rows:\n%s", strings.Join(lines[:5], "\n"))
	}
	// A non-causal layer keeps its upper triangle under CausalOnly.
	a.Layers[0].Causal = false
	if n := count(Filter{CausalOnly: true}); n != 2*9+2*6 {
		t.Errorf("causal-only with an encoder layer: %d rows", n)
	}
}

func TestAttentionFormatsAgree(t *testing.T) {
	a := sampleAttention()
	for _, flt := range []Filter{{}, {CausalOnly: true}, {TopK: 2}, {MinWeight: 0.2}} {
		var csvBuf, pq bytes.Buffer
		if err := WriteAttention(&csvBuf, CSV, a, flt); err != nil {
			t.Fatal(err)
		}
		if err := WriteAttention(&pq, Parquet, a, flt); err != nil {
			t.Fatal(err)
		}
		fromCSV, err := ReadCSV(&csvBuf)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ReadParquet(pq.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if err := Compare(back, fromCSV, 1e-7); err != nil {
			t.Errorf("%+v: parquet vs CSV: %v", flt, err)
		}
		var js bytes.Buffer
		if err := WriteAttention(&js, JSON, a, flt); err != nil {
			t.Fatal(err)
		}
		var doc struct {
			IDs    []int64
			Tokens []string
			Layers []struct {
				Layer   int
				Kind    string
				Heads   []int
				Weights [][][]*float64
				Keys    [][][]int
			}
		}
		if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
			t.Fatalf("%+v: JSON: %v\n%s", flt, err, js.String())
		}
		n := 0
		for _, L := range doc.Layers {
			for h := range L.Weights {
				for q := range L.Weights[h] {
					n += len(L.Weights[h][q])
					if L.Keys != nil && len(L.Keys[h][q]) != len(L.Weights[h][q]) {
						t.Errorf("keys and weights differ in length")
					}
				}
			}
		}
		if n != fromCSV.Rows() || !reflect.DeepEqual(doc.IDs, a.IDs) {
			t.Errorf("%+v: JSON has %d weights, CSV %d rows", flt, n, fromCSV.Rows())
		}
	}
	if err := WriteAttention(&bytes.Buffer{}, NPZ, a, Filter{TopK: 1}); err == nil {
		t.Error("npz with a filter written")
	}
}

func TestAttentionNPZRoundTrip(t *testing.T) {
	a := sampleAttention()
	a.Layers[1].Heads = []int{3, 5}
	a.TargetIDs, a.TargetTokens = []int64{1, 2}, []string{"x", "y"}
	a.Layers = append(a.Layers, Layer{Layer: 2, Kind: Cross, Heads: []int{0}, Maps: [][][]float32{{{0.5, 0.5, 0}, {0, 0, 1}}},
		QueryIDs: a.TargetIDs, QueryTokens: a.TargetTokens, KeyIDs: a.IDs, KeyTokens: a.Tokens})
	a.Layers[0].QueryIDs, a.Layers[0].KeyIDs = a.TargetIDs, a.TargetIDs // self layers run over the target
	a.Layers[0].QueryTokens, a.Layers[0].KeyTokens = a.TargetTokens, a.TargetTokens
	a.Layers[0].Maps = [][][]float32{{{1, 0}, {0.5, 0.5}}, {{1, 0}, {0.25, 0.75}}}
	a.Layers = append(a.Layers[:1], a.Layers[2])
	var buf bytes.Buffer
	if err := WriteAttentionNPZ(&buf, a); err != nil {
		t.Fatal(err)
	}
	z, err := npy.OpenNPZ(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []string{"ids", "tokens", "target_ids", "target_tokens", "layers", "layer_kinds", "attn.L0", "attn.L2"}
	if got := z.Order(); !reflect.DeepEqual(got, wantNames) {
		t.Errorf("members %v, want %v", got, wantNames)
	}
	m, _ := z.Read("attn.L2")
	if !reflect.DeepEqual(m.Shape, []int{1, 2, 3}) || m.Descr != "<f4" {
		t.Errorf("attn.L2 %s %v", m.Descr, m.Shape)
	}
	back, err := ReadAttentionNPZ(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var c1, c2 bytes.Buffer
	WriteAttentionCSV(&c1, a, Filter{})
	WriteAttentionCSV(&c2, back, Filter{})
	if c1.String() != c2.String() {
		t.Errorf("npz read back writes another CSV:\n%s\nvs\n%s", c2.String(), c1.String())
	}
}

func TestFromRows(t *testing.T) {
	tbl, err := FromRows([]string{"layer", "head", "name", "score"}, [][]any{
		{0, int64(1), "a", 0.5},
		{1, int64(2), "b", nil},
	}, 4)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, tbl); err != nil {
		t.Fatal(err)
	}
	if want := "layer,head,name,score\n0,1,a,0.5\n1,2,b,NaN\n"; buf.String() != want {
		t.Errorf("CSV %q, want %q", buf.String(), want)
	}
	if _, err := FromRows([]string{"a"}, [][]any{{1}, {"x"}}, 0); err == nil || !strings.Contains(err.Error(), "string in a column of integers") {
		t.Errorf("mixed column: %v", err)
	}
	if _, err := FromRows([]string{"a", "b"}, [][]any{{1}}, 0); err == nil {
		t.Error("short row accepted")
	}
}

// Heads whose rows are views of one block (as a run's output is) are written in one piece;
// the bytes are the same as row by row.
func TestAttentionNPZContiguousHeads(t *testing.T) {
	a := sampleAttention()
	var rowByRow bytes.Buffer
	if err := WriteAttentionNPZ(&rowByRow, a); err != nil {
		t.Fatal(err)
	}
	for li := range a.Layers {
		for h, rows := range a.Layers[li].Maps {
			block := make([]float32, 0, 9)
			for _, r := range rows {
				block = append(block, r...)
			}
			views := [][]float32{block[0:3], block[3:6], block[6:9]}
			if contiguous(views) == nil {
				t.Fatal("views of one block are not contiguous")
			}
			a.Layers[li].Maps[h] = views
		}
	}
	if contiguous([][]float32{{1, 2}, {3, 4}}) != nil {
		t.Error("separate rows taken as one block")
	}
	var whole bytes.Buffer
	if err := WriteAttentionNPZ(&whole, a); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(whole.Bytes(), rowByRow.Bytes()) {
		t.Error("contiguous heads are written differently")
	}
}
