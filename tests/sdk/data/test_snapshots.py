"""Snapshot recordings: the .npz and challenge CSV layouts, per-burst windowing, the shared PRONOSTIA set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from factoryedge.data.snapshots import (
    FEMTO_RUNS,
    SnapshotRecording,
    femto_pronostia,
    is_snapshot_source,
    load_snapshots,
    resolve_snapshots,
)
from factoryedge.errors import DataError

FEMTO_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "femto-pronostia"


def _rec(n=4, length=100, ch=2):
    rng = np.random.default_rng(0)
    return SnapshotRecording(rng.standard_normal((n, length, ch)), np.arange(n) * 10.0, 1000.0, ("h", "v")[:ch], "t")


def test_windows_are_cut_per_burst_and_never_span_two():
    rec = _rec()
    # Mark each burst by its index so a window that joined two bursts would show two values.
    marked = SnapshotRecording(np.repeat(np.arange(4.0)[:, None, None], 100, axis=1).repeat(2, axis=2),
                               rec.t_s, 1000.0, ("h", "v"), "m")
    w, burst, starts = marked.windows(32, 16)
    assert len(w) == 4 * 5  # (100 - 32) // 16 + 1 windows per burst
    assert np.all(w.min(axis=(1, 2)) == w.max(axis=(1, 2)))
    assert np.array_equal(w[:, 0, 0], burst)
    assert np.allclose(starts[:5], [0, 0.016, 0.032, 0.048, 0.064]) and np.isclose(starts[5], 10.0)


def test_life_is_first_start_to_last_end():
    assert _rec().life_s == pytest.approx(30.1)


def test_errors_name_the_bad_input():
    with pytest.raises(DataError, match="must increase"):
        SnapshotRecording(np.zeros((3, 10, 1)), [0.0, 10.0, 5.0], 100.0, ("x",), "r")
    with pytest.raises(DataError, match="shorter than the window"):
        _rec(length=20).windows(32, 16)
    with pytest.raises(DataError, match="does not exist"):
        load_snapshots("/nonexistent/run.npz")


def test_npz_layout_round_trip(tmp_path):
    sig = np.random.default_rng(1).standard_normal((5, 64, 2)).astype(np.float16)
    p = tmp_path / "run.npz"
    np.savez(p, signal=sig, t_s=np.arange(5) * 10.0, sample_rate=25600.0, channels=np.array(["horizontal", "vertical"]),
             rpm=1800.0, load_n=4000.0)
    assert is_snapshot_source(p)
    rec = load_snapshots(p, label="b")
    assert rec.bursts.shape == (5, 64, 2) and rec.channels == ("horizontal", "vertical")
    assert rec.meta["rpm"] == 1800.0 and rec.label == "b"
    assert np.array_equal(rec.bursts, sig.astype(np.float32))
    assert resolve_snapshots([f"b={p}"])[0].label == "b"
    np.savez(tmp_path / "plain.npz", signal=np.zeros((10, 1)), sample_rate=1.0)
    assert not is_snapshot_source(tmp_path / "plain.npz")


def test_challenge_csv_folder_with_semicolons_and_midnight(tmp_path):
    stamps = [(23, 59, 50, 0), (0, 0, 0, 500000), (0, 0, 10, 500000)]  # the clock passes midnight
    for i, (h, m, s, us) in enumerate(stamps, start=1):
        rows = [f"{h};{m};{s};{us + j * 39};{0.1 * i};{-0.1 * i}" for j in range(8)]
        (tmp_path / f"acc_{i:05d}.csv").write_text("\n".join(rows) + "\n")
    assert is_snapshot_source(tmp_path)
    rec = load_snapshots(tmp_path)
    assert rec.channels == ("horizontal", "vertical") and rec.sample_rate == 25600.0
    assert np.allclose(rec.t_s, [0.0, 10.5, 20.5])
    assert np.allclose(rec.bursts[2, :, 0], 0.3)


def test_challenge_csv_with_wrong_columns(tmp_path):
    (tmp_path / "acc_00001.csv").write_text("1,2,3,4,5\n")
    with pytest.raises(DataError, match="expected 6"):
        load_snapshots(tmp_path)


@pytest.mark.skipif(not FEMTO_DIR.is_dir(), reason=f"shared PRONOSTIA data not found at {FEMTO_DIR}")
def test_femto_pronostia_runs_match_their_readme():
    runs = femto_pronostia(FEMTO_DIR)
    assert [r.label for r in runs] == list(FEMTO_RUNS)
    assert [r.n_bursts for r in runs] == [2803, 871, 911, 797, 515, 1637]
    assert [round(r.life_s / 3600, 2) for r in runs] == [7.78, 2.42, 2.53, 2.21, 1.43, 4.54]
    assert all(r.bursts.shape[1:] == (2560, 2) and r.sample_rate == 25600.0 for r in runs)
    assert runs[0].meta["t_repaired"] == [2120, 2121]
