"""A reader for the IDX format that MNIST and Fashion-MNIST are distributed in.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the values in
row-major order, big-endian. The magic number is two zero bytes, a type code and the number of
dimensions. Files may be gzip-compressed; the reader looks at the first two bytes to tell.
"""

import gzip
import struct

import numpy as np

# Type code (third byte of the magic number) -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """The bytes given are not a well-formed IDX file."""


def read_idx(path):
    """Returns the array stored in the IDX file at `path` (gzip-compressed or not).

    Raises `IDXError` naming the file and what is wrong when the header is malformed or the
    data does not match the dimensions the header declares.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise IDXError(f"{path}: gzip data is corrupt ({error})") from error
    return parse_idx(raw, name=str(path))


def parse_idx(raw, name="<bytes>"):
    """Returns the array held by the uncompressed IDX bytes `raw`; `name` labels errors."""
    if len(raw) < 4:
        raise IDXError(f"{name}: {len(raw)} bytes is too short for the 4-byte IDX magic number")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise IDXError(
            f"{name}: not an IDX file, the magic number must start with two zero bytes, "
            f"got {raw[:2].hex()}"
        )
    if type_code not in IDX_DTYPES:
        allowed = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise IDXError(f"{name}: IDX type code must be one of {allowed}, got 0x{type_code:02X}")
    if ndim == 0:
        raise IDXError(f"{name}: IDX number of dimensions must be at least 1, got 0")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IDXError(
            f"{name}: header declares {ndim} dimensions, which needs {header_size} bytes, "
            f"but the file has {len(raw)}"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header_size
    if found != expected:
        raise IDXError(
            f"{name}: header declares shape {shape} of {dtype.name}, which is {expected} bytes "
            f"of data, but the file holds {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size)
    return data.reshape(shape).astype(dtype.newbyteorder("="))
