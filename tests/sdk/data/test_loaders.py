"""Generic recording files: each format read from a real file, and each way a file can be wrong."""
import json

import numpy as np
import pytest
import scipy.io
from scipy.io import wavfile

from factoryedge.data.loaders import SUFFIXES, load_recording, save_npz
from factoryedge.data.recording import Recording
from factoryedge.data.simulator import simulate_bearing
from factoryedge.errors import DataError


def write(path, text):
    path.write_text(text)
    return path


# --- CSV ---------------------------------------------------------------------------------------

def test_csv_with_header_drops_the_time_column_and_names_channels(tmp_path):
    p = write(tmp_path / "run.csv", "time,ax,ay\n0.0,1.5,-2\n0.001,2.5,3e-1\n0.002,-1,0\n")
    rec = load_recording(p, sample_rate=1000)
    assert rec.channels == ("ax", "ay") and rec.sample_rate == 1000.0
    np.testing.assert_array_equal(rec.signal, [[1.5, -2.0], [2.5, 0.3], [-1.0, 0.0]])
    assert rec.source == str(p) and rec.label == "unknown"


def test_csv_without_header_gets_default_names_or_the_given_ones(tmp_path):
    p = write(tmp_path / "raw.csv", "0.1\n0.2\n-0.3\n")
    assert load_recording(p, sample_rate=10).channels == ("ch0",)
    rec = load_recording(p, sample_rate=10, channels=["DE"], label="normal")
    assert rec.channels == ("DE",) and rec.label == "normal"
    np.testing.assert_array_equal(rec.signal[:, 0], [0.1, 0.2, -0.3])


def test_csv_semicolon_header_and_channel_selection(tmp_path):
    p = write(tmp_path / "excel.csv", "\ufefft;x;y;z\n0;1;2;3\n1;4;5;6\n")
    rec = load_recording(p, sample_rate=2, channels=("z", "x"))
    assert rec.channels == ("z", "x")
    np.testing.assert_array_equal(rec.signal, [[3, 1], [6, 4]])
    with pytest.raises(DataError, match=r"no channel\(s\) \['w'\]") as e:
        load_recording(p, sample_rate=2, channels=("w",))
    assert "['x', 'y', 'z']" in str(e.value)


def test_csv_needs_a_sample_rate_and_says_how_to_give_it(tmp_path):
    p = write(tmp_path / "norate.csv", "1\n2\n")
    with pytest.raises(DataError) as e:
        load_recording(p)
    msg = str(e.value)
    assert "norate.csv" in msg and "sample_rate=" in msg and "--sample-rate" in msg


def test_csv_non_numeric_cell_names_file_line_and_column(tmp_path):
    p = write(tmp_path / "bad.csv", "time,ax,ay\n0,1,2\n1,3,abc\n")
    with pytest.raises(DataError) as e:
        load_recording(p, sample_rate=1)
    msg = str(e.value)
    assert "bad.csv" in msg and "line 3" in msg and "'ay'" in msg and "'abc'" in msg


def test_csv_ragged_row_and_non_finite_value_are_located(tmp_path):
    with pytest.raises(DataError, match=r"ragged\.csv' line 2: 1 cell\(s\), expected 2"):
        load_recording(write(tmp_path / "ragged.csv", "1,2\n3\n"), sample_rate=1)
    with pytest.raises(DataError, match=r"nan\.csv' line 3, column 1: 'nan' is not a finite number"):
        load_recording(write(tmp_path / "nan.csv", "1\n2\nnan\n"), sample_rate=1)


def test_empty_csv_and_header_only_csv(tmp_path):
    with pytest.raises(DataError, match=r"empty\.csv' is empty"):
        load_recording(write(tmp_path / "empty.csv", "\n\n"), sample_rate=1)
    with pytest.raises(DataError, match=r"head\.csv' has a header \['a', 'b'\] but no data rows"):
        load_recording(write(tmp_path / "head.csv", "a,b\n"), sample_rate=1)
    with pytest.raises(DataError, match="only a time column"):
        load_recording(write(tmp_path / "timeonly.csv", "time\n0\n1\n"), sample_rate=1)


# --- NPY / NPZ ---------------------------------------------------------------------------------

def test_npy_one_and_two_dimensional(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(5, dtype=np.int16))
    rec = load_recording(tmp_path / "a.npy", sample_rate=100.0)
    assert rec.signal.shape == (5, 1) and rec.signal.dtype == np.float64 and rec.signal[4, 0] == 4.0
    np.save(tmp_path / "b.npy", np.ones((50, 3), dtype=np.float32))
    assert load_recording(tmp_path / "b.npy", sample_rate=100.0, channels=("x", "y", "z")).channels == ("x", "y", "z")
    with pytest.raises(DataError, match=r"3 unnamed channel\(s\)"):
        load_recording(tmp_path / "b.npy", sample_rate=100.0, channels=("x", "y"))


def test_npy_errors_name_the_problem(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"c\.npy'.*sample_rate="):
        load_recording(tmp_path / "c.npy")
    np.save(tmp_path / "wide.npy", np.zeros((3, 1000)))
    with pytest.raises(DataError, match=r"wide\.npy'.*\(3, 1000\).*arr\.T"):
        load_recording(tmp_path / "wide.npy", sample_rate=1)
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"text\.npy'.*dtype <U1"):
        load_recording(tmp_path / "text.npy", sample_rate=1)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy"):
        load_recording(tmp_path / "obj.npy", sample_rate=1)
    with pytest.raises(DataError, match=r"-5 is not a positive number of Hz"):
        load_recording(tmp_path / "c.npy", sample_rate=-5)


def test_save_npz_round_trips_everything_a_replay_needs(tmp_path):
    rec = simulate_bearing(0.5, sample_rate=12000, fault="outer_race", fault_onset_s=0.25, n_channels=3, seed=9)
    path = save_npz(rec, tmp_path / "or.npz")
    back = load_recording(path)
    assert np.array_equal(back.signal, rec.signal)  # bit-exact, so data fingerprints match
    assert back.sample_rate == 12000.0 and back.channels == ("x", "y", "z")
    assert back.label == "outer_race" and back.fault_onset_s == 0.25 and back.meta["rpm"] == 1797.0
    assert load_recording(path, label="suspect").label == "suspect"
    assert load_recording(path, channels=("y",)).signal.shape == (6000, 1)
    assert not list(tmp_path.glob("*.part"))
    healthy = save_npz(Recording(np.zeros(4), 10.0, ("a",), "mem"), tmp_path / "h.npz")
    assert load_recording(healthy).fault_onset_s is None
    with pytest.raises(DataError, match=r"out\.bin' must end in \.npz"):
        save_npz(rec, tmp_path / "out.bin")


def test_plain_npz_and_sample_rate_disagreement(tmp_path):
    np.savez(tmp_path / "plain.npz", signal=np.ones((10, 2)), sample_rate=25600)
    rec = load_recording(tmp_path / "plain.npz", sample_rate=25600.0)
    assert rec.channels == ("ch0", "ch1") and rec.sample_rate == 25600.0
    with pytest.raises(DataError) as e:
        load_recording(tmp_path / "plain.npz", sample_rate=12000)
    msg = str(e.value)
    assert "plain.npz" in msg and "25600 Hz" in msg and "12000 Hz" in msg


def test_npz_missing_keys_are_listed(tmp_path):
    np.savez(tmp_path / "nokeys.npz", data=np.ones(3))
    with pytest.raises(DataError) as e:
        load_recording(tmp_path / "nokeys.npz")
    msg = str(e.value)
    assert "nokeys.npz" in msg and "['signal', 'sample_rate']" in msg and "['data']" in msg
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"cannot read NPZ .*junk\.npz"):
        load_recording(tmp_path / "junk.npz")


# --- WAV ---------------------------------------------------------------------------------------

def test_wav_int16_is_scaled_to_unit_range_and_rate_comes_from_header(tmp_path):
    pcm = np.array([[0, 0], [16384, -16384], [-32768, 32767]], dtype=np.int16)
    wavfile.write(tmp_path / "s.wav", 25600, pcm)
    rec = load_recording(tmp_path / "s.wav")
    assert rec.sample_rate == 25600.0 and rec.channels == ("ch0", "ch1")
    np.testing.assert_array_equal(rec.signal, [[0, 0], [0.5, -0.5], [-1.0, 32767 / 32768]])
    assert load_recording(tmp_path / "s.wav", sample_rate=25600).n_samples == 3


def test_wav_other_sample_formats(tmp_path):
    wavfile.write(tmp_path / "u8.wav", 8000, np.array([128, 255, 0], dtype=np.uint8))
    np.testing.assert_array_equal(load_recording(tmp_path / "u8.wav").signal[:, 0], [0.0, 127 / 128, -1.0])
    wavfile.write(tmp_path / "i32.wav", 8000, np.array([2**30, -(2**31)], dtype=np.int32))
    np.testing.assert_array_equal(load_recording(tmp_path / "i32.wav").signal[:, 0], [0.5, -1.0])
    wavfile.write(tmp_path / "f.wav", 8000, np.array([0.25, -2.0], dtype=np.float32))
    np.testing.assert_array_equal(load_recording(tmp_path / "f.wav").signal[:, 0], [0.25, -2.0])


def test_wav_rate_disagreement_and_corrupt_file(tmp_path):
    wavfile.write(tmp_path / "r.wav", 48000, np.zeros(10, dtype=np.int16))
    with pytest.raises(DataError) as e:
        load_recording(tmp_path / "r.wav", sample_rate=12000)
    assert "r.wav" in str(e.value) and "48000 Hz" in str(e.value) and "12000 Hz" in str(e.value)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DataError, match=r"cannot read WAV .*broken\.wav"):
        load_recording(tmp_path / "broken.wav")


# --- dispatch ----------------------------------------------------------------------------------

def test_unknown_suffix_lists_the_supported_ones(tmp_path):
    p = write(tmp_path / "data.parquet", "x")
    with pytest.raises(DataError) as e:
        load_recording(p, sample_rate=1)
    msg = str(e.value)
    assert "data.parquet" in msg and "'.parquet'" in msg and all(s in msg for s in SUFFIXES)


def test_missing_file_and_directory_name_the_path(tmp_path):
    with pytest.raises(DataError, match=r"missing\.wav' does not exist"):
        load_recording(tmp_path / "missing.wav")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match=r"dir\.csv' is not a file"):
        load_recording(tmp_path / "dir.csv", sample_rate=1)


def test_mat_files_go_to_the_cwru_reader(tmp_path):
    folder = tmp_path / "cwru-48k-copy"
    folder.mkdir()
    de = np.linspace(-1, 1, 400)[:, None]
    # The variable number deliberately differs from the file name, as in real CWRU files.
    scipy.io.savemat(folder / "IR014_0.mat", {"X173_DE_time": de, "X173_FE_time": -de, "X173RPM": np.array([[1797]])})
    rec = load_recording(folder / "IR014_0.mat", channels=("FE", "DE"))
    assert rec.sample_rate == 48000.0  # from the folder name
    assert rec.label == "inner_race" and rec.meta["fault_size_in"] == 0.014 and rec.meta["rpm"] == 1797.0
    np.testing.assert_array_equal(rec.signal, np.hstack([-de, de]))
    assert load_recording(folder / "IR014_0.mat", label="normal").label == "normal"

    scipy.io.savemat(tmp_path / "run.mat", {"X001_DE_time": de})
    with pytest.raises(DataError, match=r"run\.mat'.*sample_rate=12000"):
        load_recording(tmp_path / "run.mat")
    rec = load_recording(tmp_path / "run.mat", sample_rate=12000)
    assert rec.sample_rate == 12000.0 and rec.label == "unknown" and rec.meta["rpm"] is None


def test_meta_survives_as_json(tmp_path):
    rec = Recording(np.zeros((3, 1)), 10.0, ("a",), "mem", meta={"rpm": 1500.0, "note": "bay 4"})
    save_npz(rec, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        assert json.loads(str(z["meta_json"])) == {"rpm": 1500.0, "note": "bay 4"}
