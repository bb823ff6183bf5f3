"""CSV lines: comments, CRLF, partial lines, malformed lines counted and never joined."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factoryedge.errors import ConfigError
from factoryedge.runtimes.sources.wire import CsvLineDecoder, Frame
from tests.support.fuzz import examples


def feed_all(dec: CsvLineDecoder, data: bytes, chunk: int) -> list[Frame]:
    frames: list[Frame] = []
    for k in range(0, len(data), chunk):
        frames += dec.feed(data[k : k + chunk])
    return frames


def rows(frames: list[Frame]) -> np.ndarray:
    return np.concatenate([f.samples for f in frames]) if frames else np.empty((0, 0))


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_comments_crlf_and_partial_lines(chunk):
    data = b"# node vib-07 fw 1.4.2\r\n1,2,3\r\n4.5,-6,7e1\n\n#status ok\n8,9,10\n11,12"
    dec = CsvLineDecoder()
    frames = feed_all(dec, data, chunk)
    assert rows(frames).tolist() == [[1, 2, 3], [4.5, -6, 70], [8, 9, 10]]
    assert dec.channels == 3 and dec.pending == 5  # "11,12" waits for its newline
    assert dec.stats.comment_lines == 2 and dec.stats.malformed_lines == 0 and dec.stats.frames_ok == 3
    assert dec.flush() == [] and dec.stats.malformed_lines == 1  # 2 values where 3 are due


def test_flush_parses_an_unterminated_last_line():
    dec = CsvLineDecoder(channels=2)
    assert dec.feed(b"1,2\n3,4") and dec.pending == 3
    (f,) = dec.flush()
    assert f.seq == 1 and f.samples.tolist() == [[3, 4]]


def test_malformed_lines_are_counted_and_split_frames():
    data = b"1,2,3\n4,5,6\nx,1,2\n7,8\n9,10,11\n1,2,3,4\n\xff\xfe,1,1\n12,13,14\n"
    dec = CsvLineDecoder(channels=3)
    frames = dec.feed(data)
    assert [f.seq for f in frames] == [0, 4, 7]  # sample indices; malformed lines count as lost samples
    assert [f.dropped_before for f in frames] == [0, 2, 2] and [f.gap for f in frames] == [False, True, True]
    assert rows(frames).tolist() == [[1, 2, 3], [4, 5, 6], [9, 10, 11], [12, 13, 14]]
    assert dec.stats.malformed_lines == 4 and dec.stats.frames_ok == 4
    assert dec.stats.bytes_discarded == len(b"x,1,2\n7,8\n1,2,3,4\n\xff\xfe,1,1\n")


def test_an_overlong_line_is_discarded_until_the_next_newline():
    dec = CsvLineDecoder(channels=1, max_line=64)
    frames = dec.feed(b"1\n" + bytes(range(11, 250)) * 2) + dec.feed(b"\xa5" * 100 + b"junk\n2\n")
    assert rows(frames).tolist() == [[1], [2]] and frames[1].dropped_before == 1
    assert dec.stats.malformed_lines == 1 and dec.pending == 0


def test_skip_first_line_drops_a_possibly_truncated_line_and_again_after_reset():
    dec = CsvLineDecoder(channels=2, skip_first_line=True)
    assert dec.feed(b"3,456\n7,8\n")[0].samples.tolist() == [[7, 8]]
    dec.feed(b"9,1")
    dec.reset()
    frames = dec.feed(b"0\n10,11\n")  # "0" ends a line cut by the reconnect; it must not become "9,10"
    assert rows(frames).tolist() == [[10, 11]]


def test_channels_must_be_sane():
    with pytest.raises(ConfigError, match="channels=0"):
        CsvLineDecoder(channels=0)


numbers = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 4)))
good_line = st.lists(numbers, min_size=3, max_size=3)
bad_line = st.one_of(
    st.lists(numbers, min_size=1, max_size=6).filter(lambda v: len(v) != 3).map(lambda v: ",".join(map(repr, v)).encode()),
    st.builds(lambda v, k: b",".join([repr(x).encode() for x in v[:k]] + [b"x1"] + [repr(x).encode() for x in v[k + 1:]]),
              good_line, st.integers(0, 2)),
    st.binary(min_size=1, max_size=30).filter(
        lambda b: b"\n" not in b and b"#" not in b[:1] and b.strip() and not b.strip().startswith(b"#")
        and b.count(b",") != 2),
)


@pytest.mark.fuzz
@settings(max_examples=examples(120), deadline=None)
@given(lines=st.lists(st.one_of(good_line.map(lambda v: ("ok", v)), bad_line.map(lambda b: ("bad", b))), max_size=40),
       crlf=st.booleans(), chunk=st.integers(1, 64))
def test_random_good_and_bad_lines(lines, crlf, chunk):
    end = b"\r\n" if crlf else b"\n"
    data = b"".join((",".join(map(repr, v)).encode() if kind == "ok" else v) + end for kind, v in lines)
    dec = CsvLineDecoder(channels=3)
    frames = feed_all(dec, data, chunk) + dec.flush()
    expected = [v for kind, v in lines if kind == "ok"]
    assert rows(frames).reshape(-1, 3).tolist() == [[float(x) for x in v] for v in expected]
    assert dec.stats.malformed_lines == sum(kind == "bad" for kind, _ in lines)
    for f in frames:  # seq is the line index of the frame's first row; dropped_before the bad lines just before
        assert all(lines[f.seq + j] == ("ok", row) for j, row in enumerate(f.samples.tolist()))
        lost = 0
        while f.seq - lost - 1 >= 0 and lines[f.seq - lost - 1][0] == "bad":
            lost += 1
        assert f.dropped_before == lost
