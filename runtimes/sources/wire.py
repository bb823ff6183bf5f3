"""The serial wire formats, fe1 frames and CSV lines: encoding and incremental decoding.

Pure parsing, no I/O and no pyserial, so it is testable byte for byte and reusable on
captured byte logs. The formats are specified in ``firmware-config/protocols/fe1.md``.
Decoders take bytes in whatever chunks the port delivers and return whole frames; the
common path runs in C (``bytes.find``, ``struct``, ``zlib.crc32``, numpy), never a Python
loop per byte or per sample.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass, replace

import numpy as np

from factoryedge.errors import ConfigError

SYNC = b"\xa5\x5a"
VERSION = 1
FLAG_TIMESTAMP = 0x01
FLAG_BURST_START = 0x02
_KNOWN_FLAGS = FLAG_TIMESTAMP | FLAG_BURST_START
SAMPLE_TYPES: dict[str, tuple[int, np.dtype]] = {
    "int16": (1, np.dtype("<i2")),
    "int32": (2, np.dtype("<i4")),
    "float32": (3, np.dtype("<f4")),
}
_DTYPES = {code: dtype for code, dtype in SAMPLE_TYPES.values()}
MAX_CHANNELS = 32
MAX_SAMPLES = 4096
# Bounds how long a corrupted length field can hold back decoding before its CRC fails.
MAX_PAYLOAD = 32768

_HEAD = struct.Struct("<2sBBBBHI")  # sync, version, type, flags, channels, samples, seq
_TS = struct.Struct("<Q")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size
SEQ_MOD = 1 << 32
# A frame whose device timestamp is off from the previous frame's end by more than this is
# not its continuation: half of the previous frame's duration, and never under 1 ms.
BURST_TOLERANCE_FRACTION = 0.5
BURST_TOLERANCE_MIN_US = 1000


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: ``samples`` is (n, channels) in the wire's dtype (float64 for CSV).

    ``dropped_before`` counts frames (fe1, from the sequence gap, wrap-around included) or
    lines (CSV, malformed ones) lost between the previous frame and this one;
    ``restarted`` means the fe1 sequence number jumped backwards (the device restarted).
    ``burst_start`` means the frame begins a new burst of a periodic-snapshot sensor: its
    header carries ``FLAG_BURST_START``, or (decoder given the sample rate) its device
    timestamp leaves a pause after the previous frame. ``clock_jump`` means its device
    timestamp lies before the previous frame's end although the sequence number did not
    restart.
    """

    seq: int
    samples: np.ndarray
    timestamp_us: int | None = None
    dropped_before: int = 0
    restarted: bool = False
    burst_start: bool = False
    clock_jump: bool = False

    @property
    def gap(self) -> bool:
        """Whether this frame must not be joined to the previous one: samples lost, a restart or a new burst."""
        return self.dropped_before > 0 or self.restarted or self.burst_start or self.clock_jump


@dataclass(slots=True)
class DecoderStats:
    """Counters since the decoder was created; both decoders share the fields.

    ``frames_ok`` counts valid fe1 frames, or valid CSV sample lines. ``resyncs`` counts the
    times the decoder lost alignment and had to skip bytes to find the next frame (also at
    start-up when joining a stream mid-frame). ``truncated`` counts incomplete frames given
    up by ``flush()``. ``dropped_frames`` comes from fe1 sequence gaps; ``seq_restarts``
    from backward jumps. ``bursts`` counts fe1 frames that start a burst (``Frame.burst_start``)
    and ``clock_jumps`` frames whose device timestamp went backwards (``Frame.clock_jump``);
    neither is loss nor a resync. For fe1, bytes_in == bytes in frames + bytes_discarded + pending.
    """

    bytes_in: int = 0
    frames_ok: int = 0
    crc_errors: int = 0
    header_errors: int = 0
    truncated: int = 0
    malformed_lines: int = 0
    comment_lines: int = 0
    resyncs: int = 0
    bytes_discarded: int = 0
    dropped_frames: int = 0
    seq_restarts: int = 0
    bursts: int = 0
    clock_jumps: int = 0

    def snapshot(self) -> DecoderStats:
        return replace(self)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def fe1_frame_size(channels: int, samples: int, sample_type: str = "int16", timestamp: bool = False) -> int:
    """Bytes on the wire for one fe1 frame of this shape."""
    return HEADER_SIZE + (_TS.size if timestamp else 0) + channels * samples * SAMPLE_TYPES[sample_type][1].itemsize + _CRC.size


def encode_fe1_frame(
    samples: np.ndarray, seq: int, sample_type: str = "int16", timestamp_us: int | None = None,
    burst_start: bool = False,
) -> bytes:
    """One fe1 frame for (n, channels) samples, as firmware would send it.

    Integer sample types need integer values in range: values are never silently rounded
    or clipped. A 1-D array is one channel. ``burst_start`` sets ``FLAG_BURST_START``: the
    first frame of each burst of a sensor that sends periodic snapshots.
    """
    if sample_type not in SAMPLE_TYPES:
        raise ConfigError(f"sample_type {sample_type!r} is not an fe1 type; valid: {', '.join(SAMPLE_TYPES)}")
    code, dtype = SAMPLE_TYPES[sample_type]
    arr = np.asarray(samples)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or not 1 <= arr.shape[0] <= MAX_SAMPLES or not 1 <= arr.shape[1] <= MAX_CHANNELS:
        raise ConfigError(
            f"samples of shape {arr.shape} cannot be an fe1 frame; "
            f"need (n, channels) with 1 <= n <= {MAX_SAMPLES} and 1 <= channels <= {MAX_CHANNELS}"
        )
    n, ch = arr.shape
    if n * ch * dtype.itemsize > MAX_PAYLOAD:
        raise ConfigError(f"{n} x {ch} {sample_type} samples exceed the fe1 payload limit of {MAX_PAYLOAD} bytes")
    if not 0 <= int(seq) < SEQ_MOD:
        raise ConfigError(f"seq {seq!r} must be a uint32 (0 .. {SEQ_MOD - 1}); wrap it with seq & 0xFFFFFFFF")
    if timestamp_us is not None and not 0 <= int(timestamp_us) < 1 << 64:
        raise ConfigError(f"timestamp_us {timestamp_us!r} must be a uint64 count of microseconds")
    if dtype.kind == "i" and arr.size:
        info = np.iinfo(dtype)
        if arr.dtype.kind not in "iub" and not np.array_equal(arr, np.round(arr)):
            raise ConfigError(f"{sample_type} frames need integer sample values; got {arr.dtype} with fractions")
        if arr.min() < info.min or arr.max() > info.max:
            raise ConfigError(f"sample values {arr.min()} .. {arr.max()} do not fit {sample_type} ({info.min} .. {info.max})")
    flags = (FLAG_TIMESTAMP if timestamp_us is not None else 0) | (FLAG_BURST_START if burst_start else 0)
    body = _HEAD.pack(SYNC, VERSION, code, flags, ch, n, int(seq))
    if timestamp_us is not None:
        body += _TS.pack(int(timestamp_us))
    body += np.ascontiguousarray(arr, dtype=dtype).tobytes()
    return body + _CRC.pack(zlib.crc32(body))


class Fe1Decoder:
    """Incremental fe1 decoder: ``feed`` bytes in any chunking, get the complete frames.

    A frame is emitted only if its header is sane and its CRC-32 matches, so it never mixes
    bytes of two frames. On any failure the decoder drops one byte and searches for the
    next sync word, so frames right after a corrupted one are still found. A corrupted
    length field holds back decoding until at most ``MAX_PAYLOAD`` more bytes arrive.

    Burst boundaries of a periodic-snapshot sensor: a frame flagged ``FLAG_BURST_START``
    starts a burst. Given ``sample_rate`` (Hz), timestamped frames are also checked against
    the previous frame's end (its timestamp plus its samples / rate): later by more than the
    tolerance (half that frame's duration, at least 1 ms) starts a burst; earlier by more
    than it is a clock jump. Frames right after lost frames or a restart are not checked by
    time (they start a block anyway). Either way ``Frame.gap`` is true, and neither counts
    as loss.
    """

    def __init__(self, sample_rate: float | None = None) -> None:
        if sample_rate is not None and not sample_rate > 0:
            raise ConfigError(f"sample_rate={sample_rate!r} must be a positive number of Hz, or None")
        self.stats = DecoderStats()
        self.sample_rate = sample_rate
        self._us_per_sample = 1e6 / sample_rate if sample_rate else None
        self._buf = bytearray()
        self._last_seq: int | None = None
        self._last_ts: int | None = None
        self._last_n = 0
        self._aligned = True

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget buffered bytes and sequence history (after a reconnect); keep the counters."""
        self._skip(len(self._buf))
        self._buf.clear()
        self._last_seq = self._last_ts = None
        self._aligned = True

    def feed(self, data: bytes) -> list[Frame]:
        if data:
            self.stats.bytes_in += len(data)
            self._buf += data
        return self._parse(final=False)

    def flush(self) -> list[Frame]:
        """Decode what is left as if the stream ended: incomplete frames are given up."""
        frames = self._parse(final=True)
        self._skip(len(self._buf))
        self._buf.clear()
        return frames

    def _skip(self, count: int) -> None:
        if count > 0:
            self.stats.bytes_discarded += count
            if self._aligned:
                self.stats.resyncs += 1
                self._aligned = False

    def _parse(self, final: bool) -> list[Frame]:
        buf, st, frames = self._buf, self.stats, []
        n, pos = len(buf), 0
        with memoryview(buf) as mv:
            while True:
                i = buf.find(SYNC, pos)
                if i < 0:
                    # a trailing 0xA5 may be the first half of the next sync word
                    keep = 1 if not final and n > pos and buf[n - 1] == SYNC[0] else 0
                    self._skip(n - keep - pos)
                    pos = n - keep
                    break
                if i > pos:
                    self._skip(i - pos)
                    pos = i
                if n - i < HEADER_SIZE:
                    if not final:
                        break
                    st.truncated += 1
                    self._skip(1)
                    pos = i + 1
                    continue
                _, version, code, flags, ch, ns, seq = _HEAD.unpack_from(mv, i)
                dtype = _DTYPES.get(code)
                plen = ns * ch * dtype.itemsize if dtype is not None else 0
                if (
                    version != VERSION
                    or dtype is None
                    or flags & ~_KNOWN_FLAGS
                    or not 1 <= ch <= MAX_CHANNELS
                    or not 1 <= ns <= MAX_SAMPLES
                    or plen > MAX_PAYLOAD
                ):
                    st.header_errors += 1
                    self._skip(1)
                    pos = i + 1
                    continue
                has_ts = flags & FLAG_TIMESTAMP
                start = i + HEADER_SIZE + (_TS.size if has_ts else 0)
                end = start + plen
                if n - end < _CRC.size:
                    if not final:
                        break
                    st.truncated += 1
                    self._skip(1)
                    pos = i + 1
                    continue
                if zlib.crc32(mv[i:end]) != _CRC.unpack_from(mv, end)[0]:
                    st.crc_errors += 1
                    self._skip(1)
                    pos = i + 1
                    continue
                ts = _TS.unpack_from(mv, i + HEADER_SIZE)[0] if has_ts else None
                # copy: the buffer is compacted below and reused
                samples = np.frombuffer(mv, dtype, ns * ch, start).reshape(ns, ch).copy()
                frames.append(self._accept(seq, samples, ts, bool(flags & FLAG_BURST_START)))
                pos = end + _CRC.size
        del buf[:pos]
        return frames

    def _accept(self, seq: int, samples: np.ndarray, ts: int | None, burst_start: bool) -> Frame:
        st = self.stats
        st.frames_ok += 1
        self._aligned = True
        dropped, restarted, clock_jump = 0, False, False
        if self._last_seq is not None:
            gap = (seq - self._last_seq - 1) % SEQ_MOD
            # a "gap" of more than half the sequence space is a jump backwards, not loss
            if gap >= SEQ_MOD // 2:
                restarted = True
                st.seq_restarts += 1
            elif gap:
                dropped = gap
                st.dropped_frames += gap
            elif ts is not None and self._last_ts is not None and self._us_per_sample:
                burst_start, clock_jump = self._check_time(ts, burst_start)
        if burst_start:
            st.bursts += 1
        self._last_seq, self._last_ts, self._last_n = seq, ts, len(samples)
        return Frame(seq, samples, ts, dropped, restarted, burst_start, clock_jump)

    def _check_time(self, ts: int, flagged: bool) -> tuple[bool, bool]:
        """(burst_start, clock_jump) for a frame that follows the previous one by sequence number."""
        duration = self._last_n * self._us_per_sample
        # integer subtraction first: timestamps may exceed float64's exact integer range
        off = (ts - self._last_ts) - duration
        tolerance = max(BURST_TOLERANCE_FRACTION * duration, BURST_TOLERANCE_MIN_US)
        if off < -tolerance:
            self.stats.clock_jumps += 1
            return flagged, True
        return flagged or off > tolerance, False


class CsvLineDecoder:
    """Incremental decoder for CSV lines: one line per sample instant, one value per channel.

    ``channels`` None learns the count from the first valid line. Lines starting with ``#``
    are comments; blank lines are ignored; any other line that is not exactly ``channels``
    numbers is malformed: counted, skipped, and reported as ``dropped_before`` on the next
    frame. A partial last line is kept until its newline arrives; one longer than
    ``max_line`` bytes (e.g. binary data on a port set to csv) is discarded as malformed.
    ``skip_first_line`` drops everything up to the first newline, and again after
    ``reset()``: when joining a stream mid-line, the first "line" may be a truncated one
    that still parses ("123,456" seen as "23,456"). ``Frame.seq`` is the sample index of
    the frame's first line, counting malformed lines as lost samples.
    """

    def __init__(self, channels: int | None = None, max_line: int = 4096, skip_first_line: bool = False) -> None:
        if channels is not None and not 1 <= channels <= 1024:
            raise ConfigError(f"channels={channels!r} must be from 1 to 1024")
        self.stats = DecoderStats()
        self.channels = channels
        self.max_line = max_line
        self._skip_first = skip_first_line
        self._skipping = skip_first_line
        self._buf = bytearray()
        self._index = 0
        self._lost = 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self.stats.bytes_discarded += len(self._buf)
        self._buf.clear()
        self._skipping = self._skip_first

    def feed(self, data: bytes) -> list[Frame]:
        st = self.stats
        st.bytes_in += len(data)
        if self._skipping:
            j = data.find(b"\n")
            if j < 0:
                st.bytes_discarded += len(data)
                return []
            st.bytes_discarded += j + 1
            data = data[j + 1 :]
            self._skipping = False
        buf = self._buf
        buf += data
        last = buf.rfind(b"\n")
        frames: list[Frame] = []
        if last >= 0:
            chunk = bytes(buf[: last + 1])
            del buf[: last + 1]
            frames = self._parse(chunk)
        if len(buf) > self.max_line:
            self._malformed(len(buf))
            buf.clear()
            self._skipping = True
        return frames

    def flush(self) -> list[Frame]:
        """Parse an unterminated last line as if its newline had arrived."""
        if not self._buf or self._skipping:
            return []
        chunk = bytes(self._buf) + b"\n"
        self._buf.clear()
        return self._parse(chunk)

    def _malformed(self, nbytes: int) -> None:
        self.stats.malformed_lines += 1
        self.stats.bytes_discarded += nbytes
        self._lost += 1
        self._index += 1

    def _frame(self, values: np.ndarray) -> Frame:
        frame = Frame(self._index, values, None, self._lost)
        self._index += len(values)
        self._lost = 0
        self.stats.frames_ok += len(values)
        return frame

    def _parse(self, chunk: bytes) -> list[Frame]:
        ch = self.channels
        if ch is not None and b"#" not in chunk:
            raw = np.frombuffer(chunk, np.uint8)
            ends = np.flatnonzero(raw == 10)
            commas = np.diff(np.cumsum(raw == 44)[ends], prepend=0)
            if (commas == ch - 1).all():
                try:
                    values = np.array(chunk.replace(b"\n", b",").split(b",")[:-1], dtype=np.float64)
                except ValueError:
                    pass  # some token is not a number: the line-by-line path finds which
                else:
                    return [self._frame(values.reshape(-1, ch))]
        return self._parse_lines(chunk)

    def _parse_lines(self, chunk: bytes) -> list[Frame]:
        frames: list[Frame] = []
        run: list[list[float]] = []
        for line in chunk.split(b"\n")[:-1]:
            text = line.strip()
            if not text:
                continue
            if text[:1] == b"#":
                self.stats.comment_lines += 1
                continue
            try:
                values = [float(v) for v in text.split(b",")]
            except ValueError:
                values = []
            if not values or (self.channels is not None and len(values) != self.channels):
                if run:
                    frames.append(self._frame(np.array(run, dtype=np.float64)))
                    run = []
                self._malformed(len(line) + 1)
                continue
            if self.channels is None:
                self.channels = len(values)
            run.append(values)
        if run:
            frames.append(self._frame(np.array(run, dtype=np.float64)))
        return frames
