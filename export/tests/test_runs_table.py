import csv
import os

import torch

from export import runs_table


def fake_run(tmp_path, rows, steps=4000, layers=2):
    run = tmp_path / "run"
    run.mkdir()
    text = tmp_path / "texts" / "a.txt"
    text.parent.mkdir()
    text.write_text("hello")
    args = {"data": [str(text.parent)], "layers": layers, "heads": 2, "d_head": 16,
            "vocab_size": 512, "n_ctx": 128, "batch": 32, "lr": 1e-2, "min_lr_frac": 0.5,
            "steps": steps}
    torch.save({"args": args}, run / "checkpoint.pt")
    cols = ["step", "tokens", "elapsed_s", "val_loss", "icl",
            "ind_L0H0", "ind_L0H1", "ind_L1H0", "ind_L1H1", "prev_L0H0", "prev_L0H1"]
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)
    return str(run)


def test_row_reads_the_best_scores_and_says_a_run_stopped(tmp_path):
    run = fake_run(tmp_path, [
        [0, 0, 0, 6.2, 0.1, 0.9, 0.0, 0.01, 0.02, 0.03, 0.04],       # layer 0 "induction" ignored
        [200, 819200, 60, 3.1, -0.2, 0.0, 0.0, 0.45, 0.10, 0.50, 0.20],
        [400, 1638400, 120, 3.0, -0.3, 0.0, 0.0, 0.30, 0.40, 0.10, 0.20],
    ])
    r = runs_table.row("x", run)
    assert "| texts |" in r
    assert "0.450 (L1H0, step 200)" in r
    assert "0.500 (L0H0)" in r
    assert "1.6 M of 16.4 M (stopped at 400 of 4000 steps)" in r
    assert "2.0 min" in r and "| 3.000 | -0.300 |" in r


def test_a_run_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    runs_table.main([str(empty)])
    assert "has no checkpoint.pt yet" in capsys.readouterr().err


def test_a_finished_run_reports_its_final_evaluation(tmp_path):
    run = fake_run(tmp_path, [[0, 0, 0, 6.2, 0.1, 0, 0, 0, 0, 0, 0],
                              [400, 1638400, 120, 3.0, -0.3, 0, 0, 0.2, 0.1, 0.5, 0.2]], steps=400)
    with open(os.path.join(run, "summary.json"), "w") as f:
        f.write('{"steps": 400, "final_val_loss": 2.5, "icl_score": 0.012, "eval_windows": 20000}')
    r = runs_table.row("x", run)
    assert "(finished)" in r and "| 2.500 | +0.012 | 20000 |" in r


def test_best_skips_nan_and_other_layers():
    rows = [{"step": 100, "ind_L1H0": 0.9, "ind_L10H0": 0.99}, {"step": 200, "ind_L1H0": float("nan")},
            {"step": 300, "ind_L1H0": 0.1}]
    assert runs_table.best(rows, "ind_L1") == (0.9, 100, "H0")
