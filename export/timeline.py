"""Training timelines: the model exported at steps of one training run, for `inspect heads
--timeline DIR` and the browser's step bar.

    python -m export.train ... --timeline log          # writes OUT/timeline/ while it trains
    python -m export.timeline check DIR [--checkpoint RUN/checkpoint.pt]
    python -m export.timeline fixture --out testdata/timeline/tiny   (`make fixtures`)

The folder (schema "attnscope.timeline/1"; the Go package timeline reads it):

    DIR/tokenizer.json          the run's tokenizer, one copy for every step
    DIR/metrics.csv             one row per step: step,tokens,train_loss,eval_loss,icl, then
                                lr,elapsed_s,induction_max,prev_token_max (empty cell: unknown)
    DIR/timeline.json           {"schema", "model", "steps": [{"step", "tokens", "dir"}, ...]},
                                steps ascending
    DIR/step-NNNNNN/model.onnx  export_onnx's model, as the final export writes it (float32;
                                with --timeline-fp16 cast by export.forms.to_float16)
    DIR/step-NNNNNN/config.json the final export's config.json fields, for this step

A step folder opens as a model folder whose tokenizer.json is one level up.

Schedules (--timeline): none; log (steps 0, 1, 2, 5, 10, 20, 50, ... and the last);
every:N (0, N, 2N, ... and the last); or an explicit list such as 0,10,100.
"""
import argparse
import csv
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import torch

from export.onnx_export import _write_json, export_onnx, model_info

SCHEMA = "attnscope.timeline/1"
OPSET = 17
INPUTS = ["input_ids"]
METRICS_HEADER = ["step", "tokens", "train_loss", "eval_loss", "icl",
                  "lr", "elapsed_s", "induction_max", "prev_token_max"]
REQUIRED = METRICS_HEADER[:5]
FP16_LOGITS_TOL = 2e-2  # export.forms.FP16_TOLERANCE's


def step_dir(step):
    return f"step-{step:06d}"


def parse_schedule(spec):
    """Checks a --timeline value; returns it normalised ("none", "log", "every:N" or a sorted
    comma list). Raises ValueError with a sentence saying what is accepted."""
    spec = (spec or "none").strip()
    if spec in ("none", "log"):
        return spec
    if spec.startswith("every:"):
        n = spec[len("every:"):]
        if n.isdigit() and int(n) > 0:
            return f"every:{int(n)}"
    elif spec and all(p.strip().isdigit() for p in spec.split(",")):
        return ",".join(str(s) for s in sorted({int(p) for p in spec.split(",")}))
    raise ValueError(f"--timeline {spec!r}: use none, log, every:N (N > 0) or a list of "
                     "steps such as 0,10,100")


def schedule_steps(spec, total_steps):
    """The sorted steps (0 .. total_steps) at which a timeline snapshot is written."""
    spec = parse_schedule(spec)
    if spec == "none":
        return []
    if spec == "log":
        steps, k = {0, total_steps}, 1
        while k <= total_steps:
            steps.update(m * k for m in (1, 2, 5) if m * k <= total_steps)
            k *= 10
    elif spec.startswith("every:"):
        n = int(spec.split(":")[1])
        steps = set(range(0, total_steps + 1, n)) | {total_steps}
    else:
        steps = {int(s) for s in spec.split(",")}
        if max(steps) > total_steps:
            raise ValueError(f"--timeline step {max(steps)} is past --steps {total_steps}")
    return sorted(steps)


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


class Writer:
    """Writes OUT/timeline/ step by step. On resume (resume_step given) the steps already
    written up to resume_step are kept and later ones dropped."""

    def __init__(self, folder, model_name, tokenizer, resume_step=None, fp16=False):
        self.folder, self.model_name, self.fp16 = folder, model_name, fp16
        self.steps, self.rows = [], []
        os.makedirs(folder, exist_ok=True)
        if resume_step is not None and os.path.exists(os.path.join(folder, "timeline.json")):
            with open(os.path.join(folder, "timeline.json")) as f:
                old = json.load(f)["steps"]
            self.steps = [s for s in old if s["step"] <= resume_step]
            for s in old:
                if s["step"] > resume_step:
                    shutil.rmtree(os.path.join(folder, s["dir"]), ignore_errors=True)
            with open(os.path.join(folder, "metrics.csv")) as f:
                self.rows = [[r.get(k, "") for k in METRICS_HEADER] for r in csv.DictReader(f)
                             if int(r["step"]) <= resume_step]
        tokenizer.save(os.path.join(folder, "tokenizer.json"))
        self._write_index()

    def add(self, step, tokens, model, config, metrics):
        """Exports model (any mode; left in the mode it came in, with the torch RNG state
        untouched) to step-NNNNNN/, with config (config.json's fields beyond model_info), and
        appends metrics (a dict over METRICS_HEADER[2:], None = unknown) to metrics.csv."""
        if self.steps and step <= self.steps[-1]["step"]:
            raise ValueError(f"timeline step {step} is not after {self.steps[-1]['step']}")
        name = step_dir(step)
        final = os.path.join(self.folder, name)
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        was_training = model.training
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            cpu_model = model if next(model.parameters()).device.type == "cpu" else \
                _cpu_copy(model)
            proto = export_onnx(cpu_model, os.path.join(tmp, "model.onnx"), OPSET, INPUTS)
            if self.fp16:
                from export.forms import to_float16
                onnx.save(to_float16(proto), os.path.join(tmp, "model.onnx"))
        finally:
            model.train(was_training)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        cfg = {"model": self.model_name, **model_info(model), "opset": OPSET,
               "torch": torch.__version__, **({"dtype": "float16"} if self.fp16 else {}),
               "inputs": INPUTS, "outputs": ["logits"], **config}
        _write_json(os.path.join(tmp, "config.json"), cfg, indent=2)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.steps.append({"step": step, "tokens": tokens, "dir": name})
        m = metrics
        self.rows.append([step, tokens, _fmt(m.get("train_loss"), ".4f"),
                          _fmt(m.get("eval_loss"), ".4f"), _fmt(m.get("icl"), ".4f"),
                          _fmt(m.get("lr"), ".6g"), _fmt(m.get("elapsed_s"), ".1f"),
                          _fmt(m.get("induction_max"), ".4f"),
                          _fmt(m.get("prev_token_max"), ".4f")])
        self._write_metrics()
        self._write_index()

    def _write_index(self):
        _write_json(os.path.join(self.folder, "timeline.json"),
                    {"schema": SCHEMA, "model": self.model_name, "steps": self.steps}, indent=2)

    def _write_metrics(self):
        path = os.path.join(self.folder, "metrics.csv")
        with open(path + ".tmp", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(METRICS_HEADER)
            w.writerows(self.rows)
        os.replace(path + ".tmp", path)


def _cpu_copy(model):
    import copy
    return copy.deepcopy(model).cpu()


def read(folder):
    """(timeline.json's dict, metrics.csv's rows as dicts)."""
    with open(os.path.join(folder, "timeline.json")) as f:
        index = json.load(f)
    with open(os.path.join(folder, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return index, rows


def check(folder, checkpoint=None, n_ids=8, tol=1e-4):
    """Problems with the timeline in folder, one sentence each ([] when it is sound): the
    index's schema and ascending steps, metrics.csv's header and a row per step, one shared
    tokenizer, and every step's model.onnx running in onnxruntime on a few ids with finite
    logits [1, T, vocab]. With checkpoint (a train.py checkpoint.pt), the step it was saved at
    must be in the timeline and its logits within tol of PyTorch's on the checkpoint."""
    problems = []
    idx_path = os.path.join(folder, "timeline.json")
    try:
        with open(idx_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        return [f"{idx_path}: cannot read it ({e})"]
    if not isinstance(index, dict) or index.get("schema") != SCHEMA:
        problems.append(f"{idx_path}: schema is {index.get('schema') if isinstance(index, dict) else None!r}, not {SCHEMA!r}")
        if not isinstance(index, dict):
            return problems
    if not isinstance(index.get("model"), str) or not index.get("model"):
        problems.append(f"{idx_path}: no model name")
    steps = index.get("steps")
    if not isinstance(steps, list) or not steps:
        return problems + [f"{idx_path}: no steps"]
    prev = None
    good = []
    for i, s in enumerate(steps):
        if not (isinstance(s, dict) and isinstance(s.get("step"), int)
                and isinstance(s.get("tokens"), int) and isinstance(s.get("dir"), str)):
            problems.append(f"{idx_path}: steps[{i}] is not {{step: int, tokens: int, dir: str}}")
            continue
        if s["dir"] != step_dir(s["step"]):
            problems.append(f"{idx_path}: step {s['step']} has dir {s['dir']!r}, not {step_dir(s['step'])!r}")
        if prev is not None and s["step"] <= prev["step"]:
            problems.append(f"{idx_path}: step {s['step']} comes after step {prev['step']}; steps must ascend")
        if prev is not None and s["tokens"] < prev["tokens"]:
            problems.append(f"{idx_path}: step {s['step']} has fewer tokens than step {prev['step']}")
        prev = s
        good.append(s)

    tok_path = os.path.join(folder, "tokenizer.json")
    vocab = None
    try:
        from tokenizers import Tokenizer
        vocab = Tokenizer.from_file(tok_path).get_vocab_size()
    except Exception as e:  # noqa: BLE001 — any failure to load is the problem reported
        problems.append(f"{tok_path}: cannot load the shared tokenizer ({e})")

    m_path = os.path.join(folder, "metrics.csv")
    try:
        with open(m_path) as f:
            reader = csv.reader(f)
            header = next(reader, [])
            body = list(reader)
    except OSError as e:
        header, body = None, []
        problems.append(f"{m_path}: cannot read it ({e})")
    if header is not None:
        if header[:len(REQUIRED)] != REQUIRED:
            problems.append(f"{m_path}: header starts {','.join(header[:5])}, not {','.join(REQUIRED)}")
        else:
            metrics, last = {}, None
            for n, row in enumerate(body, 2):
                if len(row) != len(header):
                    problems.append(f"{m_path}: line {n} has {len(row)} cells, not {len(header)}")
                    continue
                try:
                    st, tk = int(row[0]), int(row[1])
                    [float(c) for c in row[2:] if c != ""]
                except ValueError:
                    problems.append(f"{m_path}: line {n} has a cell that is not a number")
                    continue
                if last is not None and st <= last:
                    problems.append(f"{m_path}: line {n} (step {st}) does not ascend")
                last = st
                metrics[st] = tk
            for s in good:
                if s["step"] not in metrics:
                    problems.append(f"{m_path}: no row for step {s['step']}")
                elif metrics[s["step"]] != s["tokens"]:
                    problems.append(f"{m_path}: step {s['step']} has tokens {metrics[s['step']]}, "
                                    f"timeline.json {s['tokens']}")

    ref_step, ref_logits = None, None
    rng = np.random.RandomState(0)
    for s in good:
        d = os.path.join(folder, s["dir"])
        if not os.path.isdir(d):
            problems.append(f"{d}: missing (step {s['step']} of timeline.json)")
            continue
        if os.path.exists(os.path.join(d, "tokenizer.json")):
            problems.append(f"{d}: has its own tokenizer.json; the timeline's is shared at the top")
        try:
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{d}/config.json: cannot read it ({e})")
            continue
        if vocab is not None and cfg.get("vocab_size") != vocab:
            problems.append(f"{d}/config.json: vocab_size {cfg.get('vocab_size')}, tokenizer {vocab}")
        T = min(n_ids, cfg.get("n_positions") or n_ids)
        ids = rng.randint(0, min(cfg.get("vocab_size") or 2, vocab or 1 << 30), size=(1, T))
        try:
            logits = run_onnx(os.path.join(d, "model.onnx"), ids)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{d}/model.onnx: onnxruntime cannot run it ({str(e).splitlines()[0]})")
            continue
        if logits.shape != (1, T, cfg.get("vocab_size")) or not np.isfinite(logits).all():
            problems.append(f"{d}/model.onnx: logits {logits.shape} not [1, {T}, vocab] or not finite")
        if checkpoint is not None and ref_step is None:
            ref_step = _checkpoint_step(checkpoint)
        if ref_step is not None and s["step"] == ref_step:
            ref_logits = (ids, logits, cfg.get("dtype") == "float16")
    if checkpoint is not None:
        if ref_logits is None:
            problems.append(f"{checkpoint}: its step {ref_step} is not a readable step of the timeline")
        else:
            ids, got, half = ref_logits
            want = checkpoint_logits(checkpoint, ids)
            if half:  # float16 weights and arithmetic: ~3 significant digits
                tol = max(tol, FP16_LOGITS_TOL, 4e-3 * float(np.abs(want).max()))
            diff = float(np.abs(got.astype(np.float32) - want).max())
            if diff > tol:
                problems.append(f"step {ref_step}: onnxruntime's logits differ from PyTorch's on "
                                f"{checkpoint} by {diff:.2e} (> {tol:g})")
    return problems


def run_onnx(path, ids):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input_ids": np.asarray(ids, dtype=np.int64)})[0]


def _checkpoint_step(path):
    return torch.load(path, map_location="cpu")["step"]


def checkpoint_logits(path, ids):
    """PyTorch's logits on ids for the model in a train.py checkpoint."""
    from export import train
    ck = torch.load(path, map_location="cpu")
    args = argparse.Namespace(**{**vars(train.parse_args([])), **ck["args"]})
    model = train.make_model(args, ck["model"]["embed.weight"].shape[0])
    model.load_state_dict(ck["model"])
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(ids, dtype=np.int64))).numpy()


# The committed fixture: a word-level 2-layer attention-only model on a generated text.
FIXTURE_WORDS = ("the king queen lord lady good night day sword crown land sea ship fair "
                 "doth hath thou art shall will not love hate sweet").split()
FIXTURE_FLAGS = ["--tokenizer", "word", "--vocab-size", "64", "--layers", "2", "--heads", "2",
                 "--d-model", "32", "--d-head", "16", "--n-ctx", "32", "--batch", "8",
                 "--steps", "600", "--warmup", "10", "--lr", "1e-2", "--eval-every", "100",
                 "--eval-windows", "16", "--final-eval-windows", "64", "--ckpt-every", "600",
                 "--seed", "0", "--threads", "1", "--timeline", "0,10,30,100,300,600",
                 "--quiet"]


FIXTURE_PROMPT = "the king doth love , the king doth love ."


def fixture_text(n_lines=600, seed=0):
    """A seeded text of the words above: lines of stock phrases (something for bigrams and
    previous-token heads to learn), a third of them said twice (something to copy)."""
    rng = np.random.RandomState(seed)
    phrases = [" ".join(rng.choice(FIXTURE_WORDS, size=rng.randint(2, 5))) for _ in range(16)]
    lines = []
    for _ in range(n_lines):
        line = " ".join(phrases[i] for i in rng.randint(0, len(phrases), size=rng.randint(2, 4)))
        lines.append(line + " , " + line + " ." if rng.rand() < 0.3 else line + " .")
    return "\n".join(lines) + "\n"


def make_fixture(out):
    """Trains the fixture model with a timeline and puts the timeline at out (replaced)."""
    from export import train
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        with open(os.path.join(data, "tiny.txt"), "w") as f:
            f.write(fixture_text())
        run = os.path.join(tmp, name_of(out))
        args = train.parse_args(["--data", data, "--out", run, *FIXTURE_FLAGS])
        args.command = "python -m export.timeline fixture"
        train.train(args)
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(os.path.join(run, "timeline"), out)
    for s in read(out)[0]["steps"]:  # the temporary data path, and a prompt in the vocabulary
        path = os.path.join(out, s["dir"], "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["training"]["data"] = ["export.timeline.fixture_text()"]
        cfg["default_prompt"] = FIXTURE_PROMPT
        _write_json(path, cfg, indent=2)
    rows = read(out)[1]  # wall-clock seconds differ from run to run: left unknown
    with open(os.path.join(out, "metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, METRICS_HEADER)
        w.writeheader()
        w.writerows({**r, "elapsed_s": ""} for r in rows)
    problems = check(out)
    if problems:
        raise RuntimeError("the fixture timeline fails its check: " + "; ".join(problems))


def name_of(folder):
    return os.path.basename(os.path.normpath(folder))


def main(argv=None):
    ap = argparse.ArgumentParser(description="Checks or makes training timelines.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a timeline folder")
    c.add_argument("dir")
    c.add_argument("--checkpoint", help="a train.py checkpoint.pt whose step is in the timeline")
    fx = sub.add_parser("fixture", help="write the committed test timeline")
    fx.add_argument("--out", default="testdata/timeline/tiny")
    args = ap.parse_args(argv)
    if args.cmd == "check":
        problems = check(args.dir, args.checkpoint)
        for p in problems:
            print(f"timeline: {p}", file=sys.stderr)
        if problems:
            sys.exit(1)
        with open(os.path.join(args.dir, "timeline.json")) as f:
            n = len(json.load(f)["steps"])
        print(f"timeline: {args.dir}: {n} steps, all sound", file=sys.stderr)
    else:
        make_fixture(args.out)
        print(f"timeline: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
