"""Built-in core pieces whose behaviour results depend on: sampling, metrics, checkpoints, errors."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from anchoropt.config import get_default_config
from anchoropt.engine import DatasetBase, Datum, build_evaluator
from anchoropt.engine.builtin.evaluator import macro_f1_score
from anchoropt.engine.checkpoint import load_checkpoint, save_checkpoint
from anchoropt.errors import CheckpointError
from tests.support.engine_runs import REPO, subprocess_env


def _items(n_classes=5, per_class=7):
    return [
        Datum(impath=f"/nowhere/{c}_{i}.jpg", label=c, classname=f"c{c}")
        for i in range(per_class)
        for c in range(n_classes)
    ]


def test_datum_does_not_touch_the_filesystem(recwarn):
    d = Datum(impath="/definitely/missing.jpg", label=3, classname="x")
    assert (d.impath, d.label, d.classname, d.domain) == ("/definitely/missing.jpg", 3, "x", 0)
    assert not recwarn.list


def test_fewshot_sampling_follows_dassls_random_stream():
    items = _items()
    base = DatasetBase(train_x=items, val=items, test=items)
    random.seed(7)
    got = base.generate_fewshot_dataset(items, num_shots=3)
    # Dassl: per label in order of first appearance, random.sample(items_of_label, k) from the global stream.
    random.seed(7)
    want = []
    for label in range(5):
        want += random.sample([x for x in items if x.label == label], 3)
    assert [x.impath for x in got] == [x.impath for x in want]
    random.seed(8)
    other = base.generate_fewshot_dataset(items, num_shots=3)
    assert [x.impath for x in other] != [x.impath for x in got]
    random.seed(7)
    train, val = base.generate_fewshot_dataset(items, items, num_shots=10, repeat=True)
    assert len(train) == len(val) == 50
    assert base.generate_fewshot_dataset(items, num_shots=-1) is items


def test_dataset_base_classnames_and_counts():
    base = DatasetBase(train_x=_items(3, 2), test=_items(3, 1))
    assert base.num_classes == 3 and base.classnames == ["c0", "c1", "c2"] and base.lab2cname[2] == "c2"


def test_macro_f1_matches_precision_recall_definition():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 8, 200))
    f1s = []
    for c in np.unique(y_true):
        tp = float(((y_pred == c) & (y_true == c)).sum())
        p = tp / max((y_pred == c).sum(), 1)
        r = tp / (y_true == c).sum()
        f1s.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    assert macro_f1_score(y_true, y_pred) == pytest.approx(np.mean(f1s), rel=1e-12)


def test_classification_evaluator_values_and_dassl_printout(capsys):
    cfg = get_default_config()
    cfg.TEST.PER_CLASS_RESULT = True
    ev = build_evaluator(cfg, lab2cname={0: "a", 1: "b", 2: "c"})
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [3.0, 0, 0], [0, 0, 3.0]])
    ev.process(logits[:2], torch.tensor([0, 1]))
    ev.process(logits[2:], torch.tensor([1, 2]))
    res = ev.evaluate()
    assert res["accuracy"] == 75.0 and res["error_rate"] == 25.0
    assert res["perclass_accuracy"] == pytest.approx((100 + 50 + 100) / 3)
    out = capsys.readouterr().out
    assert "=> result\n* total: 4\n* correct: 3\n* accuracy: 75.0%\n* error: 25.0%\n* macro_f1:" in out
    assert "* class: 1 (b)\ttotal: 2\tcorrect: 1\tacc: 50.0%" in out


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "epoch": 1, "x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    state = {"state_dict": {"w": torch.ones(2)}, "epoch": 1}
    path = save_checkpoint(state, str(tmp_path))
    before = open(path, "rb").read()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(CheckpointError, match="disk full; the earlier checkpoints in .* are intact"):
        save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "epoch": 1}, str(tmp_path))
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def _python(code, engine):
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=subprocess_env(engine), capture_output=True, text=True, timeout=120
    )


def test_engine_env_var():
    code = "import anchoropt.engine as e; print(e.ENGINE)"
    assert _python(code, "builtin").stdout.strip() == "builtin"
    try:
        import dassl  # noqa: F401
    except ImportError:
        proc = _python(code, "dassl")
        assert proc.returncode != 0 and "ANCHOROPT_ENGINE=dassl but the dassl package cannot be imported" in proc.stderr
    proc = _python(code, "tensorflow")
    assert proc.returncode != 0 and "is not one of" in proc.stderr
