"""CWRU bearing data: the reader on synthetic .mat files, then the real data sets when present."""
import collections
import hashlib
import math

import numpy as np
import pytest
import scipy.io

from factoryedge.data import cwru
from factoryedge.data.simulator import SKF_6205
from factoryedge.errors import DataError
from tests.sdk.data.spectra import envelope_spectrum, line_ratio, peak_hz

# --- the reader, on synthetic files (always run) -----------------------------------------------


def savemat(path, number, n=300, rpm=1797, channels=("DE", "FE")):
    rng = np.random.default_rng(int(number))
    data = {f"X{number}_{ch}_time": rng.standard_normal((n, 1)) for ch in channels}
    if rpm is not None:
        data[f"X{number}RPM"] = np.array([[rpm]], dtype=np.uint16)
    scipy.io.savemat(path, data)
    return data


def test_variables_are_found_by_suffix_not_by_file_name(tmp_path):
    data = savemat(tmp_path / "IR014_0.mat", "173")  # the CWRU quirk: 173 inside a file named IR014
    rec = cwru.load_cwru_file(tmp_path / "IR014_0.mat", 48000, channels=("DE", "FE"))
    np.testing.assert_array_equal(rec.signal[:, 0], data["X173_DE_time"].ravel())
    np.testing.assert_array_equal(rec.signal[:, 1], data["X173_FE_time"].ravel())
    assert rec.channels == ("DE", "FE") and rec.sample_rate == 48000.0
    assert rec.label == "inner_race"
    assert rec.meta == {"rpm": 1797.0, "cwru_file": "IR014_0.mat", "cwru_number": "173", "fault_size_in": 0.014}


@pytest.mark.parametrize(
    "name,label,size",
    [
        ("Normal_0_a", "normal", None),
        ("B007_0", "ball", 0.007),
        ("12k_Drive_End_OR021@6_0_234", "outer_race", 0.021),
        ("12k_Drive_End_IR007_0_105", "inner_race", 0.007),
        ("97", "unknown", None),
    ],
)
def test_label_and_fault_size_come_from_the_cwru_name(tmp_path, name, label, size):
    savemat(tmp_path / f"{name}.mat", "100")
    rec = cwru.load_cwru_file(tmp_path / f"{name}.mat", 12000)
    assert (rec.label, rec.meta["fault_size_in"]) == (label, size)
    assert cwru.load_cwru_file(tmp_path / f"{name}.mat", 12000, label="suspect").label == "suspect"


def test_a_stray_second_recording_is_resolved_by_the_rpm_variable(tmp_path):
    # Some CWRU files (e.g. 99.mat) hold a second, unrelated DE vector; its number has no RPM.
    stray = {"X098_DE_time": np.zeros((50, 1)), "X098_FE_time": np.zeros((50, 1))}
    scipy.io.savemat(tmp_path / "99.mat", {**stray, "X099_DE_time": np.ones((80, 1)), "X099RPM": np.array([[1750]])})
    rec = cwru.load_cwru_file(tmp_path / "99.mat", 48000)
    assert rec.n_samples == 80 and rec.meta["cwru_number"] == "099"


def test_reader_errors_name_the_file_and_what_is_there(tmp_path):
    savemat(tmp_path / "B007_0.mat", "118")
    with pytest.raises(DataError) as e:
        cwru.load_cwru_file(tmp_path / "B007_0.mat", 12000, channels=("BA",))
    msg = str(e.value)
    assert "B007_0.mat" in msg and "'_BA_time'" in msg and "['DE', 'FE']" in msg
    with pytest.raises(DataError, match=r"sample rate 0 is not a positive number"):
        cwru.load_cwru_file(tmp_path / "B007_0.mat", 0)
    (tmp_path / "junk.mat").write_bytes(b"MATLAB? no" * 20)
    with pytest.raises(DataError, match=r"cannot read .*junk\.mat"):
        cwru.load_cwru_file(tmp_path / "junk.mat", 12000)
    with pytest.raises(DataError, match=r"gone\.mat' does not exist"):
        cwru.load_cwru_file(tmp_path / "gone.mat", 12000)


def test_shared_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORYEDGE_DATA", str(tmp_path))
    assert cwru.shared_data_dir() == tmp_path
    monkeypatch.setenv("FACTORYEDGE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as e:
        cwru.shared_data_dir()
    assert "nowhere" in str(e.value) and "FACTORYEDGE_DATA" in str(e.value)


def write_12k_folder(root, rate=12000):
    folder = root / cwru.FOLDER_12K
    folder.mkdir(parents=True)
    rows = ["file,label,fault_type,fault_size_in,or_position,sample_rate_hz,sha256"]
    for name, number, fault, size, pos in (("12k_A_IR007_0_105.mat", "105", "inner_race", "0.007", ""),
                                           ("12k_A_OR021@6_0_234.mat", "234", "outer_race", "0.021", "6:00")):
        savemat(folder / name, number, n=120)
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        rows.append(f"{name},fault,{fault},{size},{pos},{rate},{digest}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_cwru_12k_uses_labels_csv_and_verifies_hashes(tmp_path):
    folder = write_12k_folder(tmp_path, rate=12000)
    recs = cwru.cwru_12k(tmp_path)
    assert [r.label for r in recs] == ["inner_race", "outer_race"]
    assert all(r.sample_rate == 12000.0 for r in recs)
    assert recs[1].meta["or_position"] == "6:00" and recs[1].meta["fault_size_in"] == 0.021
    target = folder / "12k_A_OR021@6_0_234.mat"
    target.write_bytes(target.read_bytes()[:-1] + b"\x01")
    with pytest.raises(DataError) as e:
        cwru.cwru_12k(tmp_path)
    assert "12k_A_OR021@6_0_234.mat" in str(e.value) and "sha256" in str(e.value)


def test_mat_sample_rate_from_labels_csv_must_agree(tmp_path):
    folder = write_12k_folder(tmp_path, rate=12000)
    assert cwru.cwru_sample_rate(folder / "12k_A_IR007_0_105.mat") == 12000.0
    with pytest.raises(DataError, match=r"labels\.csv says 12000 Hz but 48000 Hz was passed"):
        cwru.cwru_sample_rate(folder / "12k_A_IR007_0_105.mat", 48000)


# --- the real data (skipped where /work/shared/data is absent) ----------------------------------

README_48K = {"Normal_0_a.mat": 182953, "B007_0.mat": 244739, "B014_0.mat": 249146,
              "IR007_0.mat": 243938, "IR021_0.mat": 244339}


@pytest.fixture(scope="module")
def data_root():
    try:
        root = cwru.shared_data_dir()
    except DataError as e:
        pytest.skip(f"CWRU data not available: {e}")
    if not (root / cwru.FOLDER_48K).is_dir() or not (root / cwru.FOLDER_12K).is_dir():
        pytest.skip(f"CWRU data not available under {root}")
    return root


@pytest.fixture(scope="module")
def cwru48(data_root):
    return cwru.cwru_48k(data_root)


def test_cwru_48k_labels_rates_and_lengths(cwru48):
    assert collections.Counter(r.label for r in cwru48) == {"normal": 1, "ball": 2, "inner_race": 2}
    assert {r.sample_rate for r in cwru48} == {48000.0}
    assert {r.meta["cwru_file"]: r.n_samples for r in cwru48} == README_48K
    assert all(r.signal.shape[1] == 1 and r.channels == ("DE",) for r in cwru48)
    assert all(1790 <= r.meta["rpm"] <= 1800 for r in cwru48)
    assert sorted(r.meta["fault_size_in"] or 0 for r in cwru48) == [0, 0.007, 0.007, 0.014, 0.021]


def test_cwru_48k_two_channels(data_root):
    recs = cwru.cwru_48k(data_root, channels=("DE", "FE"))
    assert all(r.signal.shape == (r.n_samples, 2) for r in recs)
    assert not np.allclose(recs[0].signal[:, 0], recs[0].signal[:, 1])


def test_cwru_12k_faults_match_labels_csv(data_root):
    recs = cwru.cwru_12k(data_root)
    assert collections.Counter(r.label for r in recs) == {"inner_race": 2, "ball": 2, "outer_race": 2}
    assert {r.sample_rate for r in recs} == {12000.0}
    counts = {"IR007": 121265, "IR021": 122136, "B007": 122571, "B021": 121991, "OR007": 121991, "OR021": 122426}
    assert {k: next(r.n_samples for r in recs if k in r.meta["cwru_file"]) for k in counts} == counts


def test_cwru_12k_normal_is_the_48k_normal_decimated(data_root, cwru48):
    src = next(r for r in cwru48 if r.label == "normal")
    normal = cwru.cwru_12k_normal(data_root)
    assert normal.label == "normal" and normal.sample_rate == 12000.0 and normal.channels == ("DE",)
    assert normal.n_samples == math.ceil(src.n_samples / 4)
    assert normal.meta["derived_from"].endswith("Normal_0_a.mat") and "anti-alias" in normal.meta["caveat"]
    # Decimation drops only the band above 6 kHz; the healthy bearing's energy lies mostly below.
    assert 0.7 * src.signal.std() < normal.signal.std() <= src.signal.std()


def test_real_inner_race_fault_shows_bpfi_in_the_envelope(cwru48):
    rec = next(r for r in cwru48 if r.meta["cwru_file"] == "IR007_0.mat")
    bpfi = SKF_6205.frequencies_hz(rec.meta["rpm"])["BPFI"]
    freqs, mag = envelope_spectrum(rec.signal[:, 0], rec.sample_rate, (2000.0, 5000.0))
    # Real bearings slip: the line sits ~0.2 % below the kinematic value.
    assert peak_hz(freqs, mag, 20, 400) == pytest.approx(bpfi, rel=0.015)
    assert line_ratio(freqs, mag, bpfi, rel_tol=0.015) > 20


def test_real_outer_race_fault_at_12k_shows_bpfo(data_root):
    rec = cwru.load_cwru_file(data_root / cwru.FOLDER_12K / "12k_Drive_End_OR007@6_0_130.mat", 12000)
    bpfo = SKF_6205.frequencies_hz(rec.meta["rpm"])["BPFO"]
    freqs, mag = envelope_spectrum(rec.signal[:, 0], 12000.0, (2000.0, 5000.0))
    assert peak_hz(freqs, mag, 20, 400) == pytest.approx(bpfo, rel=0.015)
