"""The training timeline (export/timeline.py, train.py --timeline) on tiny runs."""
import csv
import json
import os
import shutil

import pytest
import torch

from export import timeline, train
from export.tests.test_train import tiny_args

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(REPO, "testdata", "timeline", "tiny")


def test_log_schedule():
    assert timeline.schedule_steps("log", 200) == [0, 1, 2, 5, 10, 20, 50, 100, 200]
    assert timeline.schedule_steps("log", 1000) == [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert timeline.schedule_steps("log", 7) == [0, 1, 2, 5, 7]  # always the last step
    assert timeline.schedule_steps("every:30", 100) == [0, 30, 60, 90, 100]
    assert timeline.schedule_steps("100,0,10", 100) == [0, 10, 100]
    assert timeline.schedule_steps("none", 100) == []


@pytest.mark.parametrize("bad", ["every:0", "every:x", "sometimes", "1,,2", "-5"])
def test_bad_schedule_is_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--timeline", bad])
    assert e.value.code == 2
    assert "--timeline" in capsys.readouterr().err
    with pytest.raises(ValueError):
        timeline.schedule_steps("0,500", 100)
    with pytest.raises(SystemExit):
        train.parse_args(["--timeline", "0,500", "--steps", "100"])  # past --steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run without a timeline and one with (every:10 over 30 steps), same seed."""
    base = tmp_path_factory.mktemp("tl")
    plain = tiny_args(base / "plain", steps=30)
    m_plain, _, s_plain = train.train(plain)
    with_tl = tiny_args(base / "tl", "--timeline", "every:10", steps=30)
    m_tl, _, s_tl = train.train(with_tl)
    return {"base": base, "plain": (m_plain, s_plain), "tl": (m_tl, s_tl),
            "dir": base / "tl" / "run" / "timeline", "run": base / "tl" / "run"}


def test_timeline_does_not_change_training(runs):
    (m1, _), (m2, _) = runs["plain"], runs["tl"]
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    strip = lambda p: [{k: v for k, v in r.items() if k != "elapsed_s"}
                       for r in csv.DictReader(open(p))]
    assert strip(runs["base"] / "plain" / "run" / "metrics.csv") == \
        strip(runs["base"] / "tl" / "run" / "metrics.csv")
    assert not (runs["base"] / "plain" / "run" / "timeline").exists()


def test_writer_reader_round_trip(runs):
    d = runs["dir"]
    index, rows = timeline.read(str(d))
    assert index["schema"] == "attnscope.timeline/1" and index["model"] == "run"
    tokens_per_step = 8 * 32  # tiny_args: batch 8, context 32
    assert index["steps"] == [{"step": s, "tokens": s * tokens_per_step, "dir": f"step-{s:06d}"}
                              for s in (0, 10, 20, 30)]
    assert list(rows[0])[:5] == ["step", "tokens", "train_loss", "eval_loss", "icl"]
    assert [(int(r["step"]), int(r["tokens"])) for r in rows] == \
        [(s["step"], s["tokens"]) for s in index["steps"]]
    assert rows[0]["train_loss"] == ""  # nothing trained yet: unknown
    assert all(float(r["eval_loss"]) > 0 for r in rows)
    assert float(rows[-1]["eval_loss"]) < float(rows[0]["eval_loss"])
    # one tokenizer at the top, the same as the run's; none in the steps
    assert (d / "tokenizer.json").read_bytes() == (runs["run"] / "tokenizer.json").read_bytes()
    for s in index["steps"]:
        names = sorted(os.listdir(d / s["dir"]))
        assert names == ["config.json", "model.onnx"], names
        cfg = json.loads((d / s["dir"] / "config.json").read_text())
        assert cfg["training"]["steps"] == s["step"] and cfg["n_layers"] == 2
        assert cfg["tokenizer"]["file"] == "../tokenizer.json"
    assert runs["tl"][1]["timeline_s"] > 0
    assert timeline.check(str(d)) == []


def test_last_step_matches_the_final_weights(runs):
    """check() against the run's final checkpoint: the last step's onnxruntime logits equal
    PyTorch's on those weights."""
    assert timeline.check(str(runs["dir"]), checkpoint=str(runs["run"] / "checkpoint.pt")) == []


def test_resume_continues_the_timeline(tmp_path):
    part = tiny_args(tmp_path, "--timeline", "every:10", "--until", "20", steps=30)
    train.train(part)
    resumed = tiny_args(tmp_path, "--timeline", "every:10", "--resume", steps=30)
    train.train(resumed)
    index, rows = timeline.read(str(tmp_path / "run" / "timeline"))
    assert [s["step"] for s in index["steps"]] == [0, 10, 20, 30]
    assert [int(r["step"]) for r in rows] == [0, 10, 20, 30]


def copy_of(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def rewrite_index(d, fn):
    index = json.loads((d / "timeline.json").read_text())
    fn(index)
    (d / "timeline.json").write_text(json.dumps(index))


def test_check_catches_a_missing_step_folder(runs, tmp_path):
    d = copy_of(runs["dir"], tmp_path)
    shutil.rmtree(d / "step-000020")
    assert any("step-000020: missing" in p for p in timeline.check(str(d)))


def test_check_catches_steps_out_of_order(runs, tmp_path):
    d = copy_of(runs["dir"], tmp_path)
    rewrite_index(d, lambda ix: ix["steps"].reverse())
    assert any("must ascend" in p for p in timeline.check(str(d)))


@pytest.mark.parametrize("breakage,expect", [
    ("schema", "schema"),
    ("metrics_row", "no row for step 30"),
    ("tokenizer_in_step", "own tokenizer.json"),
    ("model", "onnxruntime cannot run it"),
    ("dir_name", "not 'step-000010'"),
])
def test_check_catches_other_breakage(runs, tmp_path, breakage, expect):
    d = copy_of(runs["dir"], tmp_path)
    if breakage == "schema":
        rewrite_index(d, lambda ix: ix.update(schema="attnscope.timeline/0"))
    elif breakage == "metrics_row":
        lines = (d / "metrics.csv").read_text().splitlines()
        (d / "metrics.csv").write_text("\n".join(lines[:-1]) + "\n")
    elif breakage == "tokenizer_in_step":
        shutil.copy(d / "tokenizer.json", d / "step-000010" / "tokenizer.json")
    elif breakage == "model":
        (d / "step-000030" / "model.onnx").write_bytes(b"not onnx")
    elif breakage == "dir_name":
        os.rename(d / "step-000010", d / "s10")
        rewrite_index(d, lambda ix: ix["steps"][1].update(dir="s10"))
    problems = timeline.check(str(d))
    assert any(expect in p for p in problems), problems


def test_check_catches_logits_that_differ_from_the_checkpoint(runs, tmp_path):
    d = copy_of(runs["dir"], tmp_path)
    shutil.rmtree(d / "step-000030")
    shutil.copytree(d / "step-000020", d / "step-000030")  # an older model under the last step
    problems = timeline.check(str(d), checkpoint=str(runs["run"] / "checkpoint.pt"))
    assert any("differ from PyTorch's" in p for p in problems), problems


def test_check_cli_exit_status(runs, tmp_path):
    timeline.main(["check", str(runs["dir"])])
    d = copy_of(runs["dir"], tmp_path)
    shutil.rmtree(d / "step-000010")
    with pytest.raises(SystemExit) as e:
        timeline.main(["check", str(d)])
    assert e.value.code == 1


def test_committed_fixture_is_sound():
    """testdata/timeline/tiny (make fixtures): sound, log-ish spaced, small."""
    index, rows = timeline.read(FIXTURE)
    assert [s["step"] for s in index["steps"]] == [0, 10, 30, 100, 300, 600]
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(FIXTURE) for f in fs)
    assert size < 700 * 1024, size
    assert timeline.check(FIXTURE) == []


def test_writer_leaves_mode_and_rng_alone(tmp_path):
    from tokenizers import Tokenizer, models
    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2}, unk_token="<unk>"))
    model = train.make_model(train.parse_args(["--layers", "1", "--heads", "2", "--d-model",
                                               "16", "--d-head", "8", "--n-ctx", "8"]), 3)
    w = timeline.Writer(str(tmp_path / "tl"), "m", tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.train()
    w.add(0, 0, model, {}, {"eval_loss": 1.0})
    assert model.training
    model.eval()
    w.add(1, 16, model, {}, {})
    assert not model.training
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError):
        w.add(1, 16, model, {}, {})  # not after the last step
    rows = list(csv.reader(open(tmp_path / "tl" / "metrics.csv")))
    assert rows[1][:5] == ["0", "0", "", "1.0000", ""] and rows[2][:5] == ["1", "16", "", "", ""]


def test_fp16_timeline_is_half_the_size_and_checks(runs, tmp_path):
    args = tiny_args(tmp_path, "--timeline", "0,30", "--timeline-fp16", steps=30)
    m, _, _ = train.train(args)
    d = tmp_path / "run" / "timeline"
    ck = str(tmp_path / "run" / "checkpoint.pt")
    assert timeline.check(str(d), checkpoint=ck) == []
    cfg = json.loads((d / "step-000030" / "config.json").read_text())
    assert cfg["dtype"] == "float16"
    half = (d / "step-000030" / "model.onnx").stat().st_size
    full = (runs["dir"] / "step-000030" / "model.onnx").stat().st_size
    assert half < 0.6 * full, (half, full)
    for k, v in m.state_dict().items():  # the same training as without a timeline
        assert torch.equal(v, runs["plain"][0].state_dict()[k]), k


def test_timeline_from_checkpoints(tmp_path):
    """Checkpoints of one run kept at two steps become a sound timeline whose steps hold
    their weights; a checkpoint of another run, a repeated step or a used folder is refused."""
    kept = []
    for until in (10, 20):
        extra = ["--until", str(until)] + (["--resume"] if until > 10 else [])
        train.train(tiny_args(tmp_path, *extra, steps=20))
        kept.append(tmp_path / f"ckpt-{until}.pt")
        shutil.copy(tmp_path / "run" / "checkpoint.pt", kept[-1])
    shutil.copy(tmp_path / "run" / "tokenizer.json", tmp_path / "tokenizer.json")
    out = tmp_path / "tl"
    assert train.timeline_from_checkpoints(str(out), [str(kept[1]), str(kept[0])]) == [10, 20]
    assert timeline.check(str(out)) == []
    index, rows = timeline.read(str(out))
    assert [s["step"] for s in index["steps"]] == [10, 20]
    assert [r["train_loss"] for r in rows] == ["", ""]  # not in a checkpoint
    import onnx
    from onnx import numpy_helper
    for step, ck in ((10, kept[0]), (20, kept[1])):
        weights = torch.load(ck, map_location="cpu")["model"]
        m = onnx.load(str(out / f"step-{step:06d}" / "model.onnx"))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        w = weights["embed.weight"].numpy()
        assert any(v.shape == w.shape and (v == w).all() for v in inits.values()), step
    with pytest.raises(ValueError, match="not empty"):
        train.timeline_from_checkpoints(str(out), [str(kept[0])])
    with pytest.raises(ValueError, match="same step"):
        train.timeline_from_checkpoints(str(tmp_path / "t2"), [str(kept[0]), str(kept[0])])
    other = tmp_path / "other"
    train.train(tiny_args(other, "--d-model", "16", steps=20))
    with pytest.raises(ValueError, match="d_model"):
        train.timeline_from_checkpoints(str(tmp_path / "t3"), [str(kept[0]), str(other / "run" / "checkpoint.pt")])
