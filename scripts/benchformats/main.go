// Command benchformats times the write phase of `inspect dump` alone, per format: it runs
// the model once on -ids (as dump does: onnxruntime on the CPU, every layer exposed, GPT-2
// labels from the model's tokenizer), then writes the dump as csv, npz and parquet through
// internal/outfile (a temporary file, fsync, rename: what --out does) and prints one JSON
// line per format with the bytes written and the seconds from Create to Commit.
// scripts/bench_formats.sh runs it beside the end-to-end `inspect dump` timings.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/attnscope/attnscope/internal/outfile"
	"github.com/attnscope/attnscope/onnxgraph"
	"github.com/attnscope/attnscope/session"
	"github.com/attnscope/attnscope/tableio"
	"github.com/attnscope/attnscope/tokenizer"
)

func main() {
	modelPath := flag.String("model", "", "ONNX model")
	idsFlag := flag.String("ids", "", "comma-separated token ids")
	dir := flag.String("dir", "", "folder to write into")
	formats := flag.String("formats", "npz,parquet,csv", "formats to time, in order")
	flag.Parse()
	if err := run(*modelPath, *idsFlag, *dir, strings.Split(*formats, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "benchformats:", err)
		os.Exit(1)
	}
}

func run(path, idsFlag, dir string, formats []string) error {
	var ids []int64
	for _, s := range strings.Split(idsFlag, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return err
		}
		ids = append(ids, v)
	}
	m, err := onnxgraph.Load(path)
	if err != nil {
		return err
	}
	s, err := session.Open(m, session.Options{Device: "cpu"})
	if err != nil {
		return err
	}
	defer s.Close()
	tok, err := tokenizer.Find(path, "", s.Limits.Vocab)
	if err != nil {
		return err
	}
	res, err := s.Run(ids)
	if err != nil {
		return err
	}
	labels := tok.Labels(res.Tokens)
	a := &tableio.Attention{IDs: res.Tokens, Tokens: labels}
	for l, heads := range res.Attn {
		L := tableio.Layer{Layer: l, Kind: tableio.Self, Maps: heads, QueryIDs: res.Tokens, KeyIDs: res.Tokens,
			QueryTokens: labels, KeyTokens: labels, Causal: true}
		for h := range heads {
			L.Heads = append(L.Heads, h)
		}
		a.Layers = append(a.Layers, L)
	}
	for _, f := range formats {
		out := filepath.Join(dir, "write."+f)
		start := time.Now()
		o, err := outfile.Create(out)
		if err != nil {
			return err
		}
		if err := tableio.WriteAttention(o, tableio.Format(f), a, tableio.Filter{}); err != nil {
			o.Abort()
			return err
		}
		if err := o.Commit(); err != nil {
			return err
		}
		secs := time.Since(start).Seconds()
		st, err := os.Stat(out)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(map[string]any{"format": f, "bytes": st.Size(), "write_s": secs, "T": len(ids)})
		fmt.Println(string(b))
		os.Remove(out)
	}
	return nil
}
