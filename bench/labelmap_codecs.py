"""Throughput of the labelmap block codecs (app/datatypes/labelmap/codecs.py), in-process.

For 64³ uint64 blocks with about 10, 100 and 1000 labels in spatially coherent regions
(plus two stress cases: i.i.d. noise over 1000 labels, and every voxel distinct), prints
MB/s of raw voxels (2.1 MB per block) for:

* DVID block encode / decode (``encode_block`` / ``decode_block``),
* the ``blocks`` stream payload (block + gzip level 6, Go's default) and its decode,
* neuroglancer compressed_segmentation (``encode_google``),
* a raw LZ4 block of the same voxels (compress / decompress), the baseline,

and the encoded sizes. Operations are timed in interleaved rounds (a, b, c, a, b, c...)
so the load of a shared machine falls on all alike; figures are medians.

    python -m bench.labelmap_codecs [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from app.datatypes.labelmap import codecs

MB = 1e6
EDGE = 64


def coherent_block(nlabels: int, seed: int) -> np.ndarray:
    """Label regions of a coarse random grid with wavy boundaries (~``nlabels`` labels)."""
    rng = np.random.default_rng(seed)
    k = max(1, round(nlabels ** (1 / 3)))
    grid = rng.integers(1, 2**63, size=(k + 1, k + 1, k + 1), dtype=np.uint64)
    z, y, x = np.meshgrid(*(np.arange(EDGE),) * 3, indexing="ij")
    cell = EDGE / k
    gx = ((x + 3 * np.sin(y / 5.0) + 2 * np.cos(z / 7.0)) / cell).clip(0, k).astype(int)
    gy = ((y + 3 * np.sin(z / 6.0)) / cell).clip(0, k).astype(int)
    gz = ((z + 3 * np.cos(x / 4.0)) / cell).clip(0, k).astype(int)
    return grid[gz, gy, gx]


def cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "~10 labels": coherent_block(10, 1),
        "~100 labels": coherent_block(100, 2),
        "~1000 labels": coherent_block(1000, 3),
        "noise 1000": rng.integers(0, 1000, size=(EDGE,) * 3).astype(np.uint64),
        "all distinct": np.arange(EDGE**3, dtype=np.uint64).reshape((EDGE,) * 3),
    }


def timed(ops: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call, interleaving the operations round by round."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            reps = 3
            t0 = time.perf_counter()
            for _ in range(reps):
                op()
            samples[name].append((time.perf_counter() - t0) / reps)
    return {name: statistics.median(v) for name, v in samples.items()}


def operations(
    vol: np.ndarray, block: bytes, payload: bytes, packed: bytes
) -> dict[str, Callable[[], object]]:
    """The timed operations for one block, in table-column order."""
    size = vol.nbytes
    return {
        "enc": lambda: codecs.encode_block(vol),
        "dec": lambda: codecs.decode_block(block),
        "enc+gz": lambda: codecs.encode_block_payload(vol, "blocks"),
        "gz+dec": lambda: codecs.decode_block_payload(payload, "blocks", vol.shape),
        "google": lambda: codecs.encode_google(vol),
        "lz4 c": lambda: codecs.lz4_compress(vol),
        "lz4 d": lambda: codecs.lz4_decompress(packed, size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    header = (
        f"{'case':<14}{'labels':>8}{'sub/blk':>8}{'block B':>10}{'gz B':>9}{'google B':>10}"
        f"{'lz4 B':>9} | MB/s: {'enc':>6}{'dec':>7}{'enc+gz':>8}{'gz+dec':>8}{'google':>8}"
        f"{'lz4 c':>8}{'lz4 d':>8}"
    )
    print(f"64³ uint64 blocks ({EDGE**3 * 8 / MB:.2f} MB raw), medians of {args.rounds} rounds")
    print(header)
    print("-" * len(header))
    for name, vol in cases().items():
        raw = vol.tobytes()
        block = codecs.encode_block(vol)
        payload = codecs.encode_block_payload(vol, "blocks")
        google = codecs.encode_google(vol)
        packed = codecs.lz4_compress(raw)
        assert np.array_equal(codecs.decode_block(block), vol)
        t = timed(operations(vol, block, payload, packed), args.rounds)
        rate = {k: len(raw) / v / MB for k, v in t.items()}
        nlabels = int.from_bytes(block[12:16], "little")
        mean_ns = 1.0
        if nlabels > 1:  # mean labels per sub-block, from the block's Ns array
            ns = np.frombuffer(block, "<u2", count=(EDGE // 8) ** 3, offset=16 + 8 * nlabels)
            mean_ns = float(ns.mean())
        widths = {"enc": 6, "dec": 7}
        print(
            f"{name:<14}{nlabels:>8}{mean_ns:>8.1f}{len(block):>10}{len(payload):>9}"
            f"{len(google):>10}{len(packed):>9} |       "
            + "".join(f"{rate[k]:>{widths.get(k, 8)}.0f}" for k in t)
        )


if __name__ == "__main__":
    main()
