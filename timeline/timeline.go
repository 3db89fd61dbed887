// Package timeline reads a training timeline: a folder of models exported at steps of one
// training run, with the tokenizer they share and the run's metrics.
//
// The layout (written by export/timeline.py):
//
//	DIR/
//	  timeline.json         {"schema": "attnscope.timeline/1", "model": NAME,
//	                         "steps": [{"step": N, "tokens": T, "dir": "step-000100"}, …]}
//	  tokenizer.json        the tokenizer of every step
//	  metrics.csv           step,tokens,train_loss,eval_loss,icl (more columns allowed;
//	                        an empty cell is a value not measured)
//	  step-NNNNNN/model.onnx
//	  step-NNNNNN/config.json
//
// Steps are listed in ascending order. Every step of timeline.json has a row of
// metrics.csv with the same step and tokens; metrics.csv may have rows for steps that
// were not exported (a denser loss curve), kept in Timeline.Metrics.
package timeline

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Schema is the value of timeline.json's "schema" this package reads.
const Schema = "attnscope.timeline/1"

// File names in a timeline folder and in its steps' folders.
const (
	IndexFile     = "timeline.json"
	MetricsFile   = "metrics.csv"
	TokenizerFile = "tokenizer.json"
	ModelFile     = "model.onnx"
	ConfigFile    = "config.json"
)

// Timeline is a timeline folder, read and checked by Open.
type Timeline struct {
	// Dir is the folder; Model is timeline.json's model name.
	Dir   string
	Model string
	// Tokenizer is the path of the tokenizer every step uses (DIR/tokenizer.json).
	Tokenizer string
	// Steps are the exported steps, ascending.
	Steps []Step
	// Metrics are every row of metrics.csv, ascending by step (a superset of the steps').
	Metrics []Metrics
	// Columns are metrics.csv's value columns in file order (step and tokens excluded).
	Columns []string
}

// Step is one exported step of the training run.
type Step struct {
	// Step is the optimizer step; Tokens the training tokens seen by then.
	Step, Tokens int64
	// Dir is the step's folder, Model its model.onnx, Config its config.json ("" when
	// the folder has none).
	Dir, Model, Config string
	// Metrics is the step's row of metrics.csv.
	Metrics Metrics
}

// Metrics is one row of metrics.csv. The typed losses and ICL score are NaN where the
// cell is empty or the column absent.
type Metrics struct {
	Step, Tokens int64
	// TrainLoss, EvalLoss and ICL are the train_loss, eval_loss and icl columns.
	TrainLoss, EvalLoss, ICL float64
	// Values holds every value column by name (the three above included), NaN where empty.
	Values map[string]float64
}

// Get is the value of the named column (NaN when empty or absent).
func (m Metrics) Get(column string) float64 {
	if v, ok := m.Values[column]; ok {
		return v
	}
	return math.NaN()
}

// Kind says what is wrong with a timeline folder.
type Kind int

const (
	NotTimeline      Kind = iota // no timeline.json (or DIR is not a folder)
	BadIndex                     // timeline.json is not the JSON it should be
	BadSchema                    // timeline.json's schema is not Schema
	NoSteps                      // timeline.json lists no steps
	BadStep                      // a step entry with a negative value or a bad dir
	NotAscending                 // steps (or their tokens) out of order
	MissingModel                 // a step folder without model.onnx
	MissingTokenizer             // no DIR/tokenizer.json
	MissingMetrics               // no DIR/metrics.csv
	BadMetrics                   // metrics.csv unreadable: header, a cell, row order
	MetricsMismatch              // a step without its metrics row, or with other tokens
)

// Error is what Open returns for a folder that is not a readable timeline: one sentence
// saying what is wrong and what to do.
type Error struct {
	Kind Kind
	// Path is the file or folder at fault.
	Path string
	msg  string
}

func (e *Error) Error() string { return e.msg }

func errorf(kind Kind, path, format string, args ...any) *Error {
	return &Error{Kind: kind, Path: path, msg: fmt.Sprintf(format, args...)}
}

// IsTimeline reports whether dir is a folder with a timeline.json (it need not be valid:
// Open says what is wrong with it).
func IsTimeline(dir string) bool {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return false
	}
	st, err := os.Stat(filepath.Join(dir, IndexFile))
	return err == nil && !st.IsDir()
}

// index is timeline.json.
type index struct {
	Schema *string `json:"schema"`
	Model  string  `json:"model"`
	Steps  []struct {
		Step   *int64  `json:"step"`
		Tokens *int64  `json:"tokens"`
		Dir    *string `json:"dir"`
	} `json:"steps"`
}

// Open reads and checks the timeline in dir: timeline.json, every step's model.onnx (its
// existence; the model is not loaded), tokenizer.json and metrics.csv. Any fault is an
// *Error.
func Open(dir string) (*Timeline, error) {
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		return nil, errorf(NotTimeline, dir, "timeline folder %s cannot be read (%v); give a folder written by export/timeline.py", dir, unwrapPath(err))
	case !st.IsDir():
		return nil, errorf(NotTimeline, dir, "%s is a file, not a timeline folder; give the folder that holds timeline.json", dir)
	}
	indexPath := filepath.Join(dir, IndexFile)
	b, err := os.ReadFile(indexPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if inner := filepath.Join(dir, "timeline"); IsTimeline(inner) { // a run or model folder
				return nil, errorf(NotTimeline, indexPath, "%s has no %s, but %s has: give that folder", dir, IndexFile, inner)
			}
			return nil, errorf(NotTimeline, indexPath, "%s has no %s, so it is not a training timeline; give a folder written by export/timeline.py", dir, IndexFile)
		}
		return nil, errorf(NotTimeline, indexPath, "cannot read %s: %v", indexPath, unwrapPath(err))
	}
	var ix index
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&ix); err != nil {
		return nil, errorf(BadIndex, indexPath, "%s is not a timeline index (%v); rewrite it with export/timeline.py", indexPath, err)
	}
	switch {
	case ix.Schema == nil:
		return nil, errorf(BadSchema, indexPath, "%s has no \"schema\"; a timeline index says \"schema\": %q", indexPath, Schema)
	case *ix.Schema != Schema:
		return nil, errorf(BadSchema, indexPath, "%s has schema %q, but this attnscope reads %q; rewrite the timeline with a matching export/timeline.py or update attnscope", indexPath, *ix.Schema, Schema)
	case len(ix.Steps) == 0:
		return nil, errorf(NoSteps, indexPath, "%s lists no steps; a timeline needs at least one exported step", indexPath)
	}
	tl := &Timeline{Dir: dir, Model: ix.Model}
	dirs := map[string]int64{}
	for i, s := range ix.Steps {
		switch {
		case s.Step == nil || s.Tokens == nil || s.Dir == nil:
			return nil, errorf(BadStep, indexPath, "%s: entry %d of \"steps\" lacks \"step\", \"tokens\" or \"dir\"; every entry needs all three", indexPath, i)
		case *s.Step < 0 || *s.Tokens < 0:
			return nil, errorf(BadStep, indexPath, "%s: entry %d of \"steps\" has step %d and tokens %d, but steps and tokens cannot be negative", indexPath, i, *s.Step, *s.Tokens)
		case *s.Dir == "" || filepath.IsAbs(*s.Dir) || !filepath.IsLocal(*s.Dir):
			return nil, errorf(BadStep, indexPath, "%s: step %d's dir %q is not a folder inside the timeline; give a relative name such as \"step-%06d\"", indexPath, *s.Step, *s.Dir, *s.Step)
		}
		if prev, dup := dirs[filepath.Clean(*s.Dir)]; dup {
			return nil, errorf(BadStep, indexPath, "%s: steps %d and %d share the folder %q; each step needs its own", indexPath, prev, *s.Step, *s.Dir)
		}
		dirs[filepath.Clean(*s.Dir)] = *s.Step
		if i > 0 {
			p := tl.Steps[i-1]
			if *s.Step <= p.Step {
				return nil, errorf(NotAscending, indexPath, "%s: step %d comes after step %d; list the steps once each, in ascending order", indexPath, *s.Step, p.Step)
			}
			if *s.Tokens < p.Tokens {
				return nil, errorf(NotAscending, indexPath, "%s: step %d has seen %d tokens, fewer than step %d's %d; tokens cannot decrease over training", indexPath, *s.Step, *s.Tokens, p.Step, p.Tokens)
			}
		}
		stepDir := filepath.Join(dir, *s.Dir)
		step := Step{Step: *s.Step, Tokens: *s.Tokens, Dir: stepDir, Model: filepath.Join(stepDir, ModelFile)}
		if st, err := os.Stat(step.Model); err != nil || st.IsDir() {
			return nil, errorf(MissingModel, step.Model, "step %d's folder %s has no %s; export the step again or remove it from %s", step.Step, stepDir, ModelFile, IndexFile)
		}
		if c := filepath.Join(stepDir, ConfigFile); isFile(c) {
			step.Config = c
		}
		tl.Steps = append(tl.Steps, step)
	}
	tl.Tokenizer = filepath.Join(dir, TokenizerFile)
	if !isFile(tl.Tokenizer) {
		return nil, errorf(MissingTokenizer, tl.Tokenizer, "%s has no %s; a timeline keeps the tokenizer of every step at its top", dir, TokenizerFile)
	}
	if err := tl.readMetrics(); err != nil {
		return nil, err
	}
	return tl, nil
}

// readMetrics reads metrics.csv into tl.Metrics and gives each step its row.
func (tl *Timeline) readMetrics() error {
	path := filepath.Join(tl.Dir, MetricsFile)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errorf(MissingMetrics, path, "%s has no %s; a timeline records step,tokens,train_loss,eval_loss,icl there", tl.Dir, MetricsFile)
		}
		return errorf(MissingMetrics, path, "cannot read %s: %v", path, unwrapPath(err))
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		if err == io.EOF {
			return errorf(BadMetrics, path, "%s is empty; it needs a header line starting step,tokens", path)
		}
		return errorf(BadMetrics, path, "%s is not CSV (%v)", path, err)
	}
	col := map[string]int{}
	for i, name := range header {
		name = strings.TrimSpace(name)
		if _, dup := col[name]; dup || name == "" {
			return errorf(BadMetrics, path, "%s's header names column %q twice or leaves one unnamed; give each column one name", path, name)
		}
		col[name] = i
		if name != "step" && name != "tokens" {
			tl.Columns = append(tl.Columns, name)
		}
	}
	if _, ok := col["step"]; !ok {
		return errorf(BadMetrics, path, "%s has no step column; its header starts step,tokens", path)
	}
	if _, ok := col["tokens"]; !ok {
		return errorf(BadMetrics, path, "%s has no tokens column; its header starts step,tokens", path)
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return errorf(BadMetrics, path, "%s is not CSV (%v); every row needs the header's %d cells", path, err, len(header))
		}
		line, _ := r.FieldPos(0)
		m := Metrics{Values: map[string]float64{}}
		for name, i := range col {
			cell := strings.TrimSpace(rec[i])
			switch name {
			case "step", "tokens":
				v, err := strconv.ParseInt(cell, 10, 64)
				if err != nil || v < 0 {
					return errorf(BadMetrics, path, "%s line %d: %s is %q, not a non-negative integer", path, line, name, cell)
				}
				if name == "step" {
					m.Step = v
				} else {
					m.Tokens = v
				}
			default:
				v := math.NaN()
				if cell != "" {
					if v, err = strconv.ParseFloat(cell, 64); err != nil {
						return errorf(BadMetrics, path, "%s line %d: %s is %q, not a number (leave the cell empty for a value not measured)", path, line, name, cell)
					}
				}
				m.Values[name] = v
			}
		}
		m.TrainLoss, m.EvalLoss, m.ICL = m.Get("train_loss"), m.Get("eval_loss"), m.Get("icl")
		if n := len(tl.Metrics); n > 0 && m.Step <= tl.Metrics[n-1].Step {
			return errorf(BadMetrics, path, "%s line %d: step %d comes after step %d; give one row per step, in ascending order", path, line, m.Step, tl.Metrics[n-1].Step)
		}
		tl.Metrics = append(tl.Metrics, m)
	}
	// Both lists ascend: walk them together.
	j := 0
	for i := range tl.Steps {
		s := &tl.Steps[i]
		for j < len(tl.Metrics) && tl.Metrics[j].Step < s.Step {
			j++
		}
		if j == len(tl.Metrics) || tl.Metrics[j].Step != s.Step {
			return errorf(MetricsMismatch, path, "%s has no row for step %d, which %s lists; the metrics and the exported steps must come from the same run", path, s.Step, IndexFile)
		}
		if m := tl.Metrics[j]; m.Tokens != s.Tokens {
			return errorf(MetricsMismatch, path, "%s says step %d had seen %d tokens, %s says %d; the metrics and the exported steps must come from the same run", path, s.Step, m.Tokens, IndexFile, s.Tokens)
		}
		s.Metrics = tl.Metrics[j]
	}
	return nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// unwrapPath drops a *PathError's repetition of the path.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
