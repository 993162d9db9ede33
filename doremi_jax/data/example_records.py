"""A packed sequence as a serialized ``tf.train.Example``, without TensorFlow.

Prepared shards hold one Example per sequence with its token ids under one int64 feature
(``FEATURE``, ``"text"``): what MaxText's grain input parses with
``tokenize_train_data=false`` (``tf.io.parse_example`` of an int64
``FixedLenSequenceFeature``), so the same files feed our grain input and MaxText. The
protobuf wire format is written and read here with numpy (varints vectorised), since the
train-time input imports no TensorFlow.
"""
from __future__ import annotations

import numpy as np

FEATURE = "text"
_LEN = 2  # wire type: length-delimited


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    low, n = n & 0x7F, n >> 7
    if n:
      out.append(low | 0x80)
    else:
      out.append(low)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _packed_varints(values: np.ndarray) -> bytes:
  """Non-negative integers as concatenated base-128 varints."""
  v = np.asarray(values, np.uint64).reshape(-1)
  nbytes = 1 + sum((v >= np.uint64(1 << (7 * k))).astype(np.int64) for k in range(1, 10))
  width = int(nbytes.max()) if v.size else 1
  shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
  groups = ((v[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
  used = np.arange(width)[None, :] < nbytes[:, None]
  more = np.arange(width)[None, :] < (nbytes[:, None] - 1)
  groups |= (more * 0x80).astype(np.uint8)
  return groups[used].tobytes()


def encode(tokens: np.ndarray, feature: str = FEATURE) -> bytes:
  """``tf.train.Example(features={feature: Int64List(tokens)})``, serialized (packed)."""
  tokens = np.asarray(tokens)
  if tokens.size and tokens.min() < 0:
    raise ValueError("token ids must be >= 0")
  int64_list = _field(1, _packed_varints(tokens)) if tokens.size else b""  # as protobuf
  entry = _field(1, feature.encode()) + _field(2, _field(3, int64_list))
  return _field(1, _field(1, entry))


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  shift = value = 0
  while True:
    byte = buf[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7


def _fields(buf: bytes):
  """(field number, wire type, payload) of a message; payload is bytes for type 2."""
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == _LEN:
      size, pos = _read_varint(buf, pos)
      yield number, wire, buf[pos:pos + size]
      pos += size
    elif wire == 0:
      value, pos = _read_varint(buf, pos)
      yield number, wire, value
    elif wire in (1, 5):
      size = 8 if wire == 1 else 4
      yield number, wire, buf[pos:pos + size]
      pos += size
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")


def _decode_varints(payload: bytes) -> np.ndarray:
  """Packed base-128 varints -> int64, in one pass per byte position (token ids take 1-5
  bytes, so the loop runs at most 4 times over the values, not once per byte)."""
  b = np.frombuffer(payload, np.uint8)
  if not b.size:
    return np.zeros(0, np.int64)
  ends = np.flatnonzero(b < 0x80)
  starts = np.empty_like(ends)
  starts[0], starts[1:] = 0, ends[:-1] + 1
  lengths = ends - starts + 1
  values = (b[starts] & 0x7F).astype(np.int64)
  for k in range(1, int(lengths.max())):
    longer = np.flatnonzero(lengths > k)
    values[longer] |= (b[starts[longer] + k] & 0x7F).astype(np.int64) << (7 * k)
  return values


def decode(record: bytes, feature: str = FEATURE) -> np.ndarray:
  """The int64 list under ``feature`` of a serialized Example, as int32 token ids."""
  for number, _, features in _fields(record):
    if number != 1:
      continue
    for number, _, entry in _fields(features):
      if number != 1:
        continue
      parts = {n: p for n, _, p in _fields(entry)}
      if parts.get(1) != feature.encode():
        continue
      values = []
      for n, wire, p in _fields(parts.get(2, b"")):
        if n != 3:
          raise ValueError(f"Example feature {feature!r} is not an int64 list")
        for n2, wire2, v in _fields(p):
          if n2 == 1:
            values.append(_decode_varints(v) if wire2 == _LEN else np.asarray([v], np.int64))
      return (np.concatenate(values) if values else np.zeros(0, np.int64)).astype(np.int32)
  raise ValueError(f"Example has no feature {feature!r}")


def _our_payload(record: bytes, key: bytes) -> bytes | None:
  """The packed ids of a record laid out as ``encode`` writes it (None if it is not)."""
  pos = 0
  for expected in (b"\x0a", b"\x0a", None, b"\x12", b"\x1a", b"\x0a"):
    if expected is None:  # the map entry's key
      if record[pos:pos + len(key)] != key:
        return None
      pos += len(key)
      continue
    if record[pos:pos + 1] != expected:
      return None
    _, pos = _read_varint(record, pos + 1)
  return record[pos:]


def decode_rows(records, length: int, feature: str = FEATURE) -> np.ndarray:
  """``[len(records), length]`` int32: many records of ``length`` ids decoded at once (one
  vectorised varint pass), as ``decode`` would row by row."""
  key = _field(1, feature.encode())
  payloads = [_our_payload(r, key) for r in records]
  if all(p is not None for p in payloads):
    values = _decode_varints(b"".join(payloads))
    if values.size == len(records) * length:
      return values.astype(np.int32).reshape(len(records), length)
  return np.stack([decode(r, feature) for r in records]).astype(np.int32).reshape(-1, length)

