"""fe1 frames: exact round trips, resync through garbage and corruption, sequence gaps."""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import factoryedge.firmware_config
from factoryedge.errors import ConfigError
from factoryedge.runtimes.sources.wire import (
    HEADER_SIZE,
    SAMPLE_TYPES,
    SEQ_MOD,
    SYNC,
    Fe1Decoder,
    Frame,
    encode_fe1_frame,
    fe1_frame_size,
)
from tests.support.fuzz import examples

TYPE_OF = {dtype.str: name for name, (_, dtype) in SAMPLE_TYPES.items()}


def random_samples(rng: np.random.Generator, n: int, ch: int, sample_type: str) -> np.ndarray:
    dtype = SAMPLE_TYPES[sample_type][1]
    if dtype.kind == "f":
        return (rng.standard_normal((n, ch)) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (n, ch), endpoint=True, dtype=np.int64).astype(dtype)


def reencode(frame: Frame) -> bytes:
    """The frame's exact wire bytes: equal iff seq, timestamp, burst flag, dtype, shape and values are."""
    return encode_fe1_frame(frame.samples, frame.seq, TYPE_OF[frame.samples.dtype.str], frame.timestamp_us,
                            frame.burst_start)


def decode_all(data: bytes, chunk: int | None = None) -> tuple[list[Frame], Fe1Decoder]:
    dec = Fe1Decoder()
    frames: list[Frame] = []
    step = chunk or max(1, len(data))
    for k in range(0, len(data), step):
        frames += dec.feed(data[k : k + step])
    frames += dec.flush()
    return frames, dec


@pytest.mark.parametrize("sample_type", list(SAMPLE_TYPES))
@pytest.mark.parametrize("timestamp_us", [None, 0, 2**64 - 1])
def test_round_trip_each_sample_type(sample_type, timestamp_us):
    rng = np.random.default_rng(1)
    samples = random_samples(rng, 256, 3, sample_type)
    data = encode_fe1_frame(samples, 12345, sample_type, timestamp_us)
    assert len(data) == fe1_frame_size(3, 256, sample_type, timestamp_us is not None)
    (frame,), dec = decode_all(data)
    assert frame.seq == 12345 and frame.timestamp_us == timestamp_us
    assert frame.samples.dtype == SAMPLE_TYPES[sample_type][1] and frame.samples.shape == (256, 3)
    assert np.array_equal(frame.samples, samples)
    assert frame.samples.flags.writeable and not frame.gap
    assert dec.stats.frames_ok == 1 and dec.stats.bytes_discarded == 0 and dec.stats.resyncs == 0


def test_byte_at_a_time_equals_one_chunk():
    rng = np.random.default_rng(2)
    data = b"".join(encode_fe1_frame(random_samples(rng, 5, 2, "int16"), s) for s in range(20))
    bulk, _ = decode_all(data)
    trickle, dec = decode_all(data, chunk=1)
    assert [reencode(f) for f in trickle] == [reencode(f) for f in bulk] and len(bulk) == 20
    assert dec.stats.frames_ok == 20 and dec.pending == 0


def test_protocol_doc_example_frames_match_the_encoder():
    doc = Path(factoryedge.firmware_config.__path__[0], "protocols", "fe1.md").read_text(encoding="utf-8")
    samples = np.array([[100, -200, 1000], [101, -199, 998]])
    blocks = re.findall(r"```\n((?:[0-9a-f]{2}[ \n])+)```", doc)
    wire = [bytes.fromhex(b) for b in blocks]
    assert encode_fe1_frame(samples, 7, "int16", 1_000_000) in wire
    assert encode_fe1_frame(samples, 7, "int16") in wire
    assert encode_fe1_frame(samples, 8, "int16", 1_000_000, burst_start=True) in wire
    assert f"{zlib.crc32(b'123456789'):08X}" in doc


@pytest.mark.parametrize(
    "samples, kwargs, message",
    [
        (np.array([[0.5]]), {}, "integer sample values"),
        (np.array([[40000]]), {}, "do not fit int16"),
        (np.zeros((0, 3)), {}, "cannot be an fe1 frame"),
        (np.zeros((4097, 1)), {}, "cannot be an fe1 frame"),
        (np.zeros((4096, 3)), {"sample_type": "int32"}, "payload limit"),
        (np.zeros((1, 1)), {"sample_type": "uint8"}, "valid: int16, int32, float32"),
        (np.zeros((1, 1)), {"seq": SEQ_MOD}, "uint32"),
    ],
)
def test_encoder_rejects_what_the_wire_cannot_carry(samples, kwargs, message):
    args = {"seq": 0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        encode_fe1_frame(samples, **args)


def _with_header(frame: bytes, offset: int, value: int) -> bytes:
    """A frame with one header byte changed and its CRC fixed, so only the header check can refuse it."""
    body = bytearray(frame[:-4])
    body[offset] = value
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("offset, value", [(2, 2), (3, 0), (3, 9), (4, 0x04), (4, 0x80), (5, 0), (5, 33)])
def test_insane_headers_are_refused_even_with_a_valid_crc(offset, value):
    good = encode_fe1_frame(np.ones((4, 2), np.int16), 1)
    frames, dec = decode_all(_with_header(good, offset, value) + good)
    assert [reencode(f) for f in frames] == [good]
    assert dec.stats.header_errors >= 1 and dec.stats.resyncs == 1


def test_sequence_gaps_wrap_and_restart():
    seqs = [SEQ_MOD - 3, SEQ_MOD - 2, 0, 1, 5, 6, 2]  # skips 2**32-1, then 2..4, then jumps back
    data = b"".join(encode_fe1_frame(np.full((2, 1), s % 1000), s) for s in seqs)
    frames, dec = decode_all(data, chunk=7)
    assert [f.seq for f in frames] == seqs
    assert [f.dropped_before for f in frames] == [0, 0, 1, 0, 3, 0, 0]
    assert [f.restarted for f in frames] == [False] * 6 + [True]
    assert dec.stats.dropped_frames == 4 and dec.stats.seq_restarts == 1


def test_reset_forgets_half_a_frame_and_the_sequence():
    frame = encode_fe1_frame(np.ones((8, 3), np.int16), 10)
    dec = Fe1Decoder()
    assert dec.feed(frame[:20]) == [] and dec.pending == 20
    dec.reset()
    (f,) = dec.feed(encode_fe1_frame(np.ones((8, 3), np.int16), 50))
    assert f.seq == 50 and not f.gap and dec.stats.bytes_discarded == 20


def test_a_corrupt_length_field_holds_back_decoding_only_until_its_crc_fails():
    good = [encode_fe1_frame(np.full((4, 1), k, np.int16), k) for k in range(3)]
    bad = bytearray(good[0])
    bad[6:8] = struct.pack("<H", 4000)  # claims 8000 bytes of payload
    dec = Fe1Decoder()
    assert dec.feed(bytes(bad) + good[1] + good[2]) == []
    frames = dec.feed(bytes(8100))  # the claimed length has arrived: the CRC fails, resync finds both
    assert [f.seq for f in frames] == [1, 2] and dec.stats.crc_errors == 1


# -- property: garbage, corruption and any chunking never produce a wrong frame ---------------

garbage = st.one_of(
    st.binary(max_size=24),
    st.builds(lambda tail: SYNC + tail, st.binary(max_size=24)),
    # a plausible header that promises more than follows
    st.builds(
        lambda t, ch, n, seq: SYNC + struct.pack("<BBBBHI", 1, t, 0, ch, n, seq),
        st.sampled_from([1, 2, 3]), st.integers(1, 4), st.integers(1, 400), st.integers(0, SEQ_MOD - 1),
    ),
)

frame_spec = st.fixed_dictionaries(
    {
        "type": st.sampled_from(list(SAMPLE_TYPES)),
        "ch": st.integers(1, 4),
        "n": st.integers(1, 24),
        "ts": st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        "burst": st.booleans(),
        "before": st.one_of(st.just(b""), garbage),
        # what happens inside the frame: nothing, a byte flip, inserted garbage, a truncated copy before it
        "hit": st.sampled_from(["none", "none", "flip", "insert", "echo"]),
        "where": st.floats(0, 1, exclude_max=True),
        "mask": st.integers(1, 255),
        "junk": st.binary(min_size=1, max_size=16),
    }
)


@pytest.mark.fuzz
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(frame_spec, min_size=1, max_size=8), seq0=st.integers(0, SEQ_MOD - 1),
       seed=st.integers(0, 2**32 - 1), tail=garbage)
def test_random_garbage_and_corruption_never_yield_a_wrong_frame(specs, seq0, seed, tail):
    rng = np.random.default_rng(seed)
    stream, encoded, intact = bytearray(), [], []
    must_fail, crc_must_fail = 0, 0  # corrupted frames whose sync word survived / whose payload was hit
    for k, s in enumerate(specs):
        frame = encode_fe1_frame(random_samples(rng, s["n"], s["ch"], s["type"]), (seq0 + k) % SEQ_MOD, s["type"], s["ts"],
                                 s["burst"])
        encoded.append(frame)
        stream += s["before"]
        at = 1 + int(s["where"] * (len(frame) - 1))  # strictly inside the frame
        if s["hit"] == "flip":
            hit = bytearray(frame)
            hit[at] ^= s["mask"]
            stream += hit
            must_fail += at >= 2
            crc_must_fail += at >= HEADER_SIZE + (8 if s["ts"] is not None else 0)
        elif s["hit"] == "insert":
            hit = frame[:at] + s["junk"] + frame[at:]
            stream += hit
            if frame in hit:  # the junk repeats a byte next to it: the frame is still whole, beside junk
                intact.append(frame)
            else:
                must_fail += at >= 2
        else:
            if s["hit"] == "echo":
                stream += frame[:at]  # a frame cut short by a glitch, then sent again whole
            stream += frame
            intact.append(frame)
    stream += tail

    dec = Fe1Decoder()
    frames, pos = [], 0
    while pos < len(stream):
        step = int(rng.integers(1, 300))
        frames += dec.feed(bytes(stream[pos : pos + step]))
        pos += step
    frames += dec.flush()

    got = [reencode(f) for f in frames]
    assert set(got) <= set(encoded)  # never a frame that was not sent, never one mixing two
    assert got == intact  # and every untouched frame, in order
    st_ = dec.stats
    assert st_.bytes_in == len(stream) and dec.pending == 0
    assert st_.bytes_discarded == len(stream) - sum(map(len, got))
    assert (st_.resyncs > 0) == (st_.bytes_discarded > 0)
    assert st_.crc_errors + st_.header_errors + st_.truncated >= must_fail
    assert st_.crc_errors >= crc_must_fail
    gaps = [(b.seq - a.seq - 1) % SEQ_MOD for a, b in zip(frames, frames[1:])]
    assert [f.dropped_before for f in frames[1:]] == gaps  # the sent seqs only ever go forward
    assert st_.dropped_frames == sum(gaps) and st_.seq_restarts == 0
    assert st_.bursts == sum(f.burst_start for f in frames) and st_.clock_jumps == 0  # no rate: no time rule


@pytest.mark.fuzz
@settings(max_examples=examples(80), deadline=None)
@given(seq0=st.one_of(st.integers(SEQ_MOD - 40, SEQ_MOD - 1), st.integers(0, SEQ_MOD - 1)),
       keep=st.lists(st.booleans(), min_size=2, max_size=60), chunk=st.integers(1, 200))
def test_dropped_frames_counts_skipped_sequence_numbers_across_the_wrap(seq0, keep, chunk):
    keep[0] = keep[-1] = True  # loss is only visible between two received frames
    sent = [(seq0 + k) % SEQ_MOD for k, kept in enumerate(keep) if kept]
    data = b"".join(encode_fe1_frame(np.array([[k]], np.int16), s) for k, s in enumerate(sent))
    frames, dec = decode_all(data, chunk)
    assert [f.seq for f in frames] == sent
    assert dec.stats.dropped_frames == keep.count(False)
    assert sum(f.dropped_before for f in frames) == keep.count(False) and dec.stats.seq_restarts == 0
