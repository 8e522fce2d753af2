"""Unit tests of DVID labelmap binary formats (app/datatypes/labelmap/codecs.py).

The formats are in /work/shared/spec/labelmap.md section 3; DVID's Go code
(datatype/common/labels/compressed.go, index.go, dvid/serialize.go, labelmap/labelidx.go)
is the tie-breaker. Expected bytes are built by hand from the spec, or come from DVID's own
test data (test_data/fib19-64x64x64-sample1-block.dat.gz, embedded below).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import itertools
import lzma
import struct
import zlib

import compressed_segmentation as cseg
import lz4.block
import numpy as np
import pytest

from app.datatypes.labelmap import codecs as c
from app.datatypes.labelmap.codecs import BadBlock
from app.errors import BadRequest
from app.proto import labelmap_pb2 as pb

# DVID's test_data/fib19-64x64x64-sample1-block.dat.gz: a 64^3 block encoded by DVID's Go
# encoder (gunzipped, then xz + base64 here). It decodes to test_data/fib19-64x64x64-sample1
# .dat.gz, whose uint64 voxels have the SHA-256 below (computed from DVID's file).
FIB19_BLOCK_XZ_B64 = (
    "/Td6WFoAAATm1rRGAgAhARwAAAAQz1jM4FfvDwRdAAQANSIPHtu/OMeVjQ7bZBfSaqOW+fuV4JLdeFzCn5Ik9u5U"
    "zx2TAIHND9TyzHtVM8x1o9obLBk6dmuZB2mG40JTK95xHgDBLMmb5rkYfgDuzHNyPeQGbElSj3yiGdfISJlkRyrE"
    "0mnwtkFjA6Icl5QhZuQhCPyjrxsXfJKREiPIm5m8WvNajFitHaLdHEUQW/H7hwh2XCHuKuqah7itl0D9MFTh4I2B"
    "cgX+65s10vPYZqslqM593AOgvWAeewun8Qy7erG6XDlcrOTJ0LPsw/o0p6uMoz+NipQ/Tym7pK8Y8/i8C4zRbhZ6"
    "bUiaZ6E5Qk2J79e1YTm+QnYqSz/BsmJ8z1F9hEg08BegkFCRBtgiTd0RdUHc9luxh/r6GLdugOUFnmr1rap9J0pe"
    "srLc8c1xN5dtto3Plj6ZrwzxfTm7Zs3a32nqrD/r4+3uH6VAXGSUj4jZOPoCIYOq1SToy6kPbbAYBEB6aclwNEXM"
    "J0vHj6PAJwXXaD+1c/KJdfb+T7wyCm7i7CYiOR+7VsAnVaJY5bsGoIMnveQbRs239Tf5l499JgKmgGO/sroMgFn5"
    "+JlXkL4Jb/5+FWBOjWah5BjdtN20J7c0zlTfXON8Lfj/HwE3dgoRrIl/RTvOwEW5xiHfQrKNXXmA3oTxsSgp02AV"
    "YnvfBQDF8wFPTC37JPSmdIitmDYAkgfR1rvCU+xrl8UbD3XQqlZdtFljG83UfeiEPHaRyN5OyjumPsz6wxC4I5CG"
    "Lwu3iW47/uRG1JoMnE0fOpCeoJZdHbpltwmRHjaCm2n25hAvPQTYoQ3jH54L2x5OII6tqJjWEC5VeZWnbq+obJno"
    "lkVc0h8By0hJiIU7fQWJPNRSJ8f4f48tNHUxsIF76BFQ450y2NWUErC9y8nmR6kB8TrpAVP4wKqchzdiBG3Lq43n"
    "jrtipQlnswuU1NmphKgDwAnrq6Y4iW/CUWiaFYyPAsUW+rtmkGNUp5lAnFOh+Z1NRbSJ51Qe1o0Y3jzJ5P/H8rxd"
    "d/Y1H+ddLWK+FlcD7EgCBNngJhoRkTKo+i2CAhMHlR1ErvETIuAdo8BGt91m4BYL7cifWCLoDM4F48yMmUaOFa32"
    "73qZjsUUmFyjPGB/jaF2ay40deq/JD8DN2TkLIZhKkrYQ32XhWCFEhCQDgnXYHNQM1GtdF/JI/FaBKohZPMS1e8k"
    "GLWkp3duCZM4df8O7np1L25dA9aBSH8HZPRx+d6xrHM7k4t9Xa4uo5FKfnKPwNei9p0Rt0WYyagGWyuKZ6/ZR5+1"
    "O7amIP/nVpwD0iUgyLT4QwU/2k4a8aTk1SpWJR6iP/8fEXfdD5XuEQwyWLDOaRL3HoOGmab7IzMHg0kG53GSXydG"
    "m07rfmV7GWRE4UTKFum8VHqSd8pOxMWvSeCdgpNHCpulwHIJXT7kG94NNhaD/hHaTKtZimhqSAMdtnSp8xyFYjHt"
    "x14UHn0hZRiu0XggnFJqNH68TkGRAPs9g6rGSQY4/c6hjTYyopJLKhav2l87vE/8aFHYcGszkbGEHVT4pJrzXVeb"
    "FBRDRqHpk1GQDH/ZTfC1LxjsmEwJjfprerUumg8BFKffUypXQMKPBU5fBmWhp0YLU0KLzToVBYE4K+S/KJLYtKfL"
    "bI+1tCjvmWwklm9kjp2OlsRe62+oRfX0M/JT9Rpuy6fDNK9DNYERKvxz2ztlBgrk0u2+GTp0vq8rUa0aldtgEXzs"
    "usyWj36i4WUhNHQw3ywZ2TUSqHiHVulBRaoacbLLoVjJOAo9IpE62afmsBnCWi/e2Dd0yhiKmJDxhgj3F5WKm/31"
    "5he12M5t01mnK2JrWKYNshI1BPHHp3As35o4XWstnPCHmjMhMmNSWqbnPK4Xi3sPLck1IfhA4GB8MbRtoeshva5V"
    "3mh6+9FJVnehYUt0YFdzcrlkABqeCOCz+syWMBB+4Yda8XejTaX1T6LFQzwG73j5ej0o50084A4jD67fyx8UV8Mg"
    "Jr2zaUxPGrf98Mhup7ZLtGmmQVlDd8KqOEKyVGEth5/uOlezRaomyXnqvhUQ+peLMoZlfQQWqu0pqN7r3IpsuQEB"
    "BotQqkTFjr5OixwKRtS5UawVoQz77MXzzpxCree7a5/oR5rPE2eFrnn0aOO9SphkAzGA6mNcYHw1AGcMdK+E+spQ"
    "V2QKAqtKroEUAV7SJh3NyumtjNoZTPkTH7KkkmPTSMlG6hWs/yphg5n3OxlJbNHAT5Gx8BRpwX38FQs57lLvpNwR"
    "+k+LDUxaAR97P4ku7qgewwrkQN1Y5biAGNVhStJzgjV9OOxXD34Ta7bHmhqz8//F8SryuLBfD/FK+7erQ0BSRAmv"
    "8DFOUId4a6/lBjtlv5qqhSvJuDjSG25rLAzhKLfMuOql/bD8DQwU0/qzFBNcTe96Ckrl27HHnBvtSCVTncSUhHDv"
    "qY77MOkiOf048KU7maJMqrDoPBto3zPpQMpn/oNRhmOGt6w3rrh3LOrDksIdD8UoBzcglxxYmCOcgJ2I6TZ9USKs"
    "ccPW352ACfsMgMCaef0gfVTVz/8jQeuiasYgGlSVQPSGqv4efUFOUDSBGx2L8SLBaRh9w5y36NZO0tYAtrzIUjek"
    "GHcmU9zTgSrELsJ1tuClzE3L/GFvvx8DlZVf++TPwV8ZVhOqqV7kjVFiDPrbf7sRiKrE7DMgLjA9W/G918RFUyie"
    "HBzJBleSClOF/L5lT9V6m2YKQwcxtPxNfSMDz64AGv/jNFbLBY/HeXVkt2d7UwF7Oaf16ER46SRM62uyK/GIdtnn"
    "2Pjp5mbKWa8iRRw2ZfPEZ+C3FyCinSDWd8336i5hM8sPqxTKkRJZqqdSs++zA8oPc+oYJTH+k5DUHF3nFWUVjdRb"
    "ry9GTNKP4lTKI7mLm4h0AKwZWPGGyXyr0W77Me4EKpo1AoAEl6WigHy1z82THKV9P4C6PozB9uOVxMU5Wockph+d"
    "AaAp9Bgdl8yrKa4JZCRDv+Sb0yfXh3BjVcaTBj1m9hQAnE7Se7o6Cfuu7aSc+HT9d0TFdo+edLJG8YHhgehFDYma"
    "t2Q4QcUqVPoENMQr/5ZDvb9ytpyUaXWeG3JR1uSttlg1cgDTPWdC3wPrvxDhrwW1id1ZwuUwVhqJMUamN1tmtc0Q"
    "BNFdTGqvqKFmgP1Ik7+zUjv81ZVuTlOfgAE7t7ZEp37NgJfI2WjP8oTXPI/rSUzu0uqn0ZNBEoQyl9XflZHX6GCR"
    "FTj+Y4rLcnWVxS1OPUrMl1ktSEN46wDD75/+AezApNpLsqX8SgA7V4n5RBJGsqGMart6LG6LBQqXFoxB3Uu+1Cn+"
    "qOEz//2k/IC7eIm/gkJIABJFiKY9fTeHtak1L+pJlhKnyQaAxzpE3b4nFQXw2PSR1LQYS40y5ifI7vdvfPXGqxw0"
    "CR7y1Ba5eMFzIAmWxFr1sQEti96zqMrbrKvVdcYSV63T7Le6g66FihfXbAeTBoh0qdFu8o99B13qDWf6iFrZimcj"
    "LiUmY9Miu3X2SVpLIVyqqiylwtMRpRSLzUXHdz1A4n3tIKeZeIhRf+wETGgZu8yOwJQviqQGNqNfLKrwpE9njvRU"
    "ZYZ7O5JWeBBRHkCsT5sarj8sqbtpRvcvo63z1rd9+AT/8WPF4C1055HatJrgDHVLW1zUzbZ0iwidUQWOwE2ZzWDq"
    "BXGs+fSHEnWkQGkxS9sv6/FZJDnYGL5D88sTTX+WsJXy0O8FEr4AZEd49fohAy9RmNfdoYNhJrLohquLiZWKY5to"
    "p5z+iuYTj5+daJ9atcJFn233Nb1SRD6lBna1QPVns5whXsAzljBk8ejmV76JfdEgvNQRXNIHD9FOduZ6ZWGiONMf"
    "E79yepvWcFXXk396tJFtOHFNQqP3C619ttbRYCRJL1jaGa9ijfXH3KJ+ydyOb2LhgOHQao0CKd6dHcdQ/tMNaOFM"
    "9l8Wmjt/NKkWlhyM8GAQGyrmEXA2ECuSOIQHLgv2Ycnt51I0nqr9z62S3RDmtoJ16vtt4yFz8BLsBpJ6BM+v5rCm"
    "IpqJXM/yAgVgsNeRkSgQ1+70X3nArgpQqD8AQb7oDHOwoor0Ehn91aaIF4TfBm80mf16eU7EN7KkyuKS7RpSTcM7"
    "iWFDy9Psf4l4YwwuZLPr8akCJMnG6yp5nNkFy4ziZEGXBk+pwaQ+hnBC04QjtBjW9QqKb/NmFbl23QukYn2STIzD"
    "JFr3Tdk5FYK8kFzEMlyJG6Wg/6OsvXkdnzozcTYtsMsw9HBS0LtfUbHKMXC6m+lcIg/5w26HTT1jqQzxKrDMVg4x"
    "MAT2QseD9sd2A5e9+5CyJa6hyzRSxzq3f+50nDDnLLtA2aRkeYSupvttc7moQH2dnE2ly0Xe/6GCsEsazsGfrG+H"
    "U02hYfcwzVChqbm55RA0b4HDJDjzBDupEPStfNDUMrBnc10uSNAyhwXXoQR9AFyH4L5DEW+TPRty5WeBmstsHdia"
    "VUr1OHGWkrsMD9Rg5rTPV42g/aUUSj0QFy9QZZRIGBDpOcywXk5WvXb6fv/oUMY736K1sXA30OygNQKwgImfC1xz"
    "JaLOTs8vm9/Ub6qjEoAG1C9MSUzXvy7MHekHZK/73BSZQ/5zkxkfzEmec4yB1Z2J4vTZuWTRe2Y5dBkU0YQHMq4P"
    "ZNP1H1RNMQqpdVups2ZCSg7K6FTW04fC2+B/H09kZ0Gj2VDIqZDx8ODJcJzjQeOzNcE9UIGB3PqglS1Yewtyv0oU"
    "aPMbjvHSsX+MWhR+7x32EBCYJfwCfSPy+txoWvEZRu8acuO1/y3Rdz+wqeAS1K0Rz5CqyHpxO5d+XkuJSJB0W2Nt"
    "L7r7lKPGGu/s0MtOXXdXrUdoYNvKaFhNyw6KKQupSydIGPEYLY7bGv2+xaZAEkMLAt47ywsBduCs8VOCOV8fIA45"
    "ytLoeEEc143Bn0P73wf9jMN7uU3zFqfn5OZaDZohcUQfwE97gydUjLse/vfJns+Wq3kw+kTLZKcqmbbNUyHsrP8Q"
    "33BRV1Zq9GFdkB02Ej6KYYJZ2oRfeUyBOVXmyzcU0vKMDx5PUuFfUUdGQUNeglmmZ8EYMkR0v1ZoU9j/CzSOnyjv"
    "6Eaz9oj4SAdmYMAxtq6ux/lh4XcwPvC9XokwTcP7Iti00saRRXf4Bu99FIHjpgwACyHAU+9P7sMAAaAe8K8BAGvR"
    "wEixxGf7AgAAAAAEWVo="
)
FIB19_VOXELS_SHA256 = "112f124dbf2c5256389d1481e41e6d436e201c0a7fcff0ea3e0880f809373304"


def fib19_block() -> bytes:
    return lzma.decompress(base64.b64decode("".join(FIB19_BLOCK_XZ_B64)))


# --------------------------------------------------------------------------- references


def ref_decode_block(data: bytes) -> np.ndarray:
    """Literal, per-voxel reading of spec 3.1 (slow; for small blocks only)."""
    gx, gy, gz, n = struct.unpack_from("<4I", data, 0)
    labels = struct.unpack_from(f"<{n}Q", data, 16)
    out = np.zeros((gz * 8, gy * 8, gx * 8), dtype=np.uint64)
    if n == 1:
        out[...] = labels[0]
        return out
    nsb = gx * gy * gz
    pos = 16 + 8 * n
    ns = struct.unpack_from(f"<{nsb}H", data, pos)
    pos += 2 * nsb
    idx = struct.unpack_from(f"<{sum(ns)}I", data, pos)
    pos += 4 * sum(ns)
    bits_str = "".join(format(byte, "08b") for byte in data[pos:])  # MSB-first bit stream
    off = 0
    bitoff = 0
    for sb in range(nsb):
        sz, rem = divmod(sb, gx * gy)
        sy, sx = divmod(rem, gx)
        b = (ns[sb] - 1).bit_length() if ns[sb] > 1 else 0
        for k in range(512):
            z, y, x = k // 64, (k // 8) % 8, k % 8
            if ns[sb] == 0:
                val = 0
            elif ns[sb] == 1:
                val = labels[idx[off]]
            else:
                v = int(bits_str[bitoff + k * b : bitoff + (k + 1) * b], 2)
                val = labels[idx[off + v]]
            out[sz * 8 + z, sy * 8 + y, sx * 8 + x] = val
        off += ns[sb]
        if b:
            bitoff += 512 * b
    assert bitoff == len(bits_str)
    return out


def ref_decode_binary_blocks(data: bytes):
    """Port of DVID's ReceiveBinaryBlocks / BinaryBlock.Read (labels/compressed.go)."""
    gx, gy, gz, label = struct.unpack_from("<3IQ", data, 0)
    pos = 20
    nx, ny, nz = gx * 8, gy * 8, gz * 8
    blocks = []
    while pos < len(data):
        x0, y0, z0, flag = struct.unpack_from("<3iB", data, pos)
        pos += 13
        vox = np.zeros((nz, ny, nx), dtype=bool)
        if flag == 1:
            vox[...] = True
        elif flag == 2:
            for sz in range(gz):
                for sy in range(gy):
                    for sx in range(gx):
                        sflag = data[pos]
                        pos += 1
                        sub = vox[sz * 8 : sz * 8 + 8, sy * 8 : sy * 8 + 8, sx * 8 : sx * 8 + 8]
                        if sflag == 1:
                            sub[...] = True
                        elif sflag == 2:
                            mask = data[pos : pos + 64]
                            pos += 64
                            for k in range(512):
                                sub[k // 64, (k // 8) % 8, k % 8] = bool(
                                    mask[k >> 3] & (1 << (k % 8))
                                )
                        else:
                            assert sflag == 0
        else:
            assert flag == 0
        blocks.append(((x0, y0, z0), flag, vox))
    assert pos == len(data)
    return (gx, gy, gz), label, blocks


def ref_decode_google(data: bytes, shape) -> np.ndarray:
    """Neuroglancer compressed_segmentation read literally (uint64, one channel, 8^3)."""
    nz, ny, nx = shape
    words = np.frombuffer(data, dtype="<u4")
    assert words[0] == 1  # channel offset: data starts right after
    ch = words[1:]
    gx, gy, gz = nx // 8, ny // 8, nz // 8
    out = np.zeros(shape, dtype=np.uint64)
    for bz in range(gz):
        for by in range(gy):
            for bx in range(gx):
                i = (bz * gy + by) * gx + bx
                table_off = int(ch[2 * i]) & 0xFFFFFF
                bits = int(ch[2 * i]) >> 24
                values_off = int(ch[2 * i + 1])
                for k in range(512):
                    v = 0
                    if bits:
                        bitpos = k * bits
                        v = (int(ch[values_off + bitpos // 32]) >> (bitpos % 32)) & (
                            (1 << bits) - 1
                        )
                    lab = int(ch[table_off + 2 * v]) | (int(ch[table_off + 2 * v + 1]) << 32)
                    out[bz * 8 + k // 64, by * 8 + (k // 8) % 8, bx * 8 + k % 8] = lab
    return out


def pack_msb(values, bits: int) -> bytes:
    """Hand packing: concatenate ``bits``-bit big-endian strings, pad to a byte."""
    s = "".join(format(v, f"0{bits}b") for v in values)
    s += "0" * (-len(s) % 8)
    return int(s, 2).to_bytes(len(s) // 8, "big")


def coherent_block(shape, nlabels: int, seed: int) -> np.ndarray:
    """Blocky label regions with wavy boundaries, roughly ``nlabels`` distinct labels."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    k = max(1, round(nlabels ** (1 / 3)))
    grid = rng.integers(1, 2**63, size=(k + 1, k + 1, k + 1), dtype=np.uint64)
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    cell = nx / k
    gx = ((x + 3 * np.sin(y / 5.0) + 2 * np.cos(z / 7.0)) / cell).clip(0, k).astype(int)
    gy = ((y + 3 * np.sin(z / 6.0)) / cell).clip(0, k).astype(int)
    gz = ((z + 3 * np.cos(x / 4.0)) / cell).clip(0, k).astype(int)
    return grid[gz, gy, gx]


def sb_view(vol: np.ndarray, sz: int, sy: int, sx: int) -> np.ndarray:
    return vol[sz * 8 : sz * 8 + 8, sy * 8 : sy * 8 + 8, sx * 8 : sx * 8 + 8]


def roundtrip(vol: np.ndarray) -> bytes:
    data = c.encode_block(vol)
    out = c.decode_block(data, vol.shape)
    assert out.dtype == np.uint64 and out.shape == vol.shape
    np.testing.assert_array_equal(out, vol)
    return data


# --------------------------------------------------------------------------- 3.1 blocks


def test_solid_block_known_bytes() -> None:
    vol = np.full((64, 64, 64), 0x0123456789ABCDEF, dtype=np.uint64)
    data = c.encode_block(vol)
    # gx=gy=gz=8, N=1, label little-endian
    assert data == bytes.fromhex("08000000080000000800000001000000efcdab8967452301")
    assert len(data) == 24
    np.testing.assert_array_equal(c.decode_block(data, (64, 64, 64)), vol)
    assert c.block_labels(data).tolist() == [0x0123456789ABCDEF]


@pytest.mark.parametrize("label", [0, 1, 2**64 - 1])
def test_uniform_blocks_are_solid(label: int) -> None:
    vol = np.full((32, 16, 8), label, dtype=np.uint64)
    data = roundtrip(vol)
    assert data == struct.pack("<4IQ", 1, 2, 4, 1, label)


def test_two_label_block_known_bytes() -> None:
    # 8 x 8 x 16 (x, y, z): two sub-blocks along z. Sub-block 0 is all 5; in sub-block 1
    # voxels with x < 4 are 9, the rest 5.
    vol = np.full((16, 8, 8), 5, dtype=np.uint64)
    vol[8:, :, :4] = 9
    expected = (
        bytes.fromhex("01000000010000000200000002000000")  # gx gy gz N
        + bytes.fromhex("05000000000000000900000000000000")  # table: first appearance
        + bytes.fromhex("01000200")  # Ns
        + bytes.fromhex("000000000100000000000000")  # sb0 -> [5]; sb1 -> [9, 5]
        + bytes([0b00001111]) * 64  # 1 bit/voxel, MSB first: x0..3 -> 0 (9), x4..7 -> 1 (5)
    )
    data = c.encode_block(vol)
    assert data == expected
    np.testing.assert_array_equal(c.decode_block(expected, (16, 8, 8)), vol)
    np.testing.assert_array_equal(ref_decode_block(expected), vol)


def test_three_bit_values_straddle_bytes() -> None:
    k = np.arange(512)
    vol = (100 + k % 5).astype(np.uint64).reshape(8, 8, 8)
    data = c.encode_block(vol)
    values = data[16 + 8 * 5 + 2 + 4 * 5 :]
    # 000 001 010 011 100 000 001 010 ... -> 00000101 00111000 00001010
    assert values[:3] == bytes([0x05, 0x38, 0x0A])
    assert values == pack_msb(k % 5, 3)
    assert len(values) == 512 * 3 // 8
    assert c.block_labels(data).tolist() == [100, 101, 102, 103, 104]
    np.testing.assert_array_equal(ref_decode_block(data), vol)


def test_512_labels_in_a_sub_block_use_9_bits() -> None:
    vol = np.full((16, 16, 16), 7, dtype=np.uint64)
    sub = sb_view(vol, 1, 0, 1)  # sub-block number 1*2*2 + 0*2 + 1 = 5
    sub[...] = (np.arange(512, dtype=np.uint64) + 1000).reshape(8, 8, 8)
    data = roundtrip(vol)
    n = 513
    ns = struct.unpack_from("<8H", data, 16 + 8 * n)
    assert ns == (1, 1, 1, 1, 1, 512, 1, 1)
    values = data[16 + 8 * n + 16 + 4 * (7 + 512) :]
    assert len(values) == 512 * 9 // 8
    # local indices 0, 1, 2, 3 at 9 bits: 000000000 000000001 000000010 000000011
    assert values[:4] == bytes([0x00, 0x00, 0x40, 0x40])
    assert values == pack_msb(range(512), 9)
    np.testing.assert_array_equal(ref_decode_block(data), vol)


@pytest.mark.parametrize("ns", [2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512])
def test_every_bit_width(ns: int) -> None:
    rng = np.random.default_rng(ns)
    vol = np.zeros((16, 16, 8), dtype=np.uint64)
    local = np.concatenate([np.arange(ns), rng.integers(0, ns, 512 - ns)])
    rng.shuffle(local)
    palette = rng.choice(2**40, size=ns, replace=False).astype(np.uint64)
    sb_view(vol, 1, 1, 0)[...] = palette[local].reshape(8, 8, 8)
    data = roundtrip(vol)
    bits = (ns - 1).bit_length()
    assert len(data) == 16 + 8 * (ns + (0 not in palette)) + 2 * 4 + 4 * (3 + ns) + 64 * bits
    np.testing.assert_array_equal(ref_decode_block(data), vol)


def test_first_appearance_order_at_both_levels() -> None:
    vol = np.zeros((8, 8, 16), dtype=np.uint64)
    vol[...] = 30
    vol[0, 0, 0] = 20  # sub-block 0 starts with 20, then 30
    vol[7, 7, 7] = 10
    vol[:, :, 8:] = 40  # sub-block 1: 40, then 10, then 30
    vol[0, 0, 9] = 10
    vol[7, 7, 15] = 30
    data = c.encode_block(vol)
    assert c.block_labels(data).tolist() == [20, 30, 10, 40]
    nsb_pos = 16 + 8 * 4
    assert struct.unpack_from("<2H", data, nsb_pos) == (3, 3)
    assert struct.unpack_from("<6I", data, nsb_pos + 4) == (0, 1, 2, 3, 2, 1)


def test_label_zero_and_extreme_labels() -> None:
    rng = np.random.default_rng(5)
    vol = rng.choice(np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64), size=(16, 16, 16))
    data = roundtrip(vol)
    assert sorted(c.block_labels(data).tolist()) == [0, 1, 2**63, 2**64 - 1]
    np.testing.assert_array_equal(ref_decode_block(data), vol)


@pytest.mark.parametrize(
    "shape", [(8, 8, 8), (8, 16, 24), (24, 8, 16), (64, 64, 64), (32, 64, 128)]
)
@pytest.mark.parametrize("nlabels", [2, 10, 100, 1000])
def test_roundtrip_coherent(shape, nlabels: int) -> None:
    vol = coherent_block(shape, nlabels, seed=nlabels + shape[2])
    roundtrip(vol)


@pytest.mark.parametrize("seed", range(6))
def test_roundtrip_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.choice([8, 16, 24, 32], 3))
    k = int(rng.choice([2, 3, 7, 50, 600, 10**6]))
    vol = rng.integers(0, k, size=shape).astype(np.uint64)
    if seed % 2:
        vol[rng.random(shape) < 0.7] = 0  # mostly background
    data = roundtrip(vol)
    if np.prod(shape) <= 16**3:
        np.testing.assert_array_equal(ref_decode_block(data), vol)


def test_all_distinct_labels_64() -> None:
    vol = np.arange(64**3, dtype=np.uint64).reshape(64, 64, 64)  # DVID's own stress test
    data = roundtrip(vol)
    assert c.block_labels(data).size == 64**3
    assert len(data) == 16 + 8 * 64**3 + 2 * 512 + 4 * 64**3 + 512 * 64 * 9


def test_block_accepts_other_integer_dtypes_and_views() -> None:
    base = coherent_block((32, 32, 32), 20, seed=3)
    small = (base % 1000).astype(np.uint16)
    np.testing.assert_array_equal(c.decode_block(c.encode_block(small)), small)
    view = base[::-1, :, ::2][:, :, :8]  # strided, non-contiguous
    np.testing.assert_array_equal(c.decode_block(c.encode_block(view)), view)
    with pytest.raises(ValueError):
        c.encode_block(np.full((8, 8, 8), -1, dtype=np.int64))
    with pytest.raises(TypeError):
        c.encode_block(np.zeros((8, 8, 8), dtype=np.float32))


@pytest.mark.parametrize("shape", [(8, 8, 12), (0, 8, 8), (8, 8), (2048, 8, 8)])
def test_encode_rejects_bad_shapes(shape) -> None:
    with pytest.raises(ValueError):
        c.encode_block(np.zeros(shape, dtype=np.uint64))


def test_dvid_encoded_block_vector() -> None:
    data = fib19_block()
    assert struct.unpack_from("<4I", data) == (8, 8, 8, 18)
    vol = c.decode_block(data, (64, 64, 64))
    assert hashlib.sha256(vol.astype("<u8").tobytes()).hexdigest() == FIB19_VOXELS_SHA256
    # Our encoder reproduces DVID's bytes exactly for this block (DVID's block-table order
    # is Go map order in general; here it happens to be first-appearance order).
    assert c.encode_block(vol) == data
    assert c.block_labels(data).size == 18
    assert set(c.block_labels(data).tolist()) == set(np.unique(vol).tolist())


def test_decode_accepts_any_valid_encoding() -> None:
    # Duplicate table entries, unused entries, label 0 entries and a non-first-appearance
    # local order are all legal (e.g. after DVID relabels in place).
    table = [7, 7, 0, 99]
    ns = [2, 0]
    idx = [3, 1]  # sub-block 0: local 0 -> 99, local 1 -> 7
    local = np.arange(512) % 2
    data = (
        struct.pack("<4I", 1, 1, 2, len(table))
        + struct.pack("<4Q", *table)
        + struct.pack("<2H", *ns)
        + struct.pack("<2I", *idx)
        + pack_msb(local, 1)
    )
    vol = c.decode_block(data, (16, 8, 8))
    expect = np.zeros((16, 8, 8), dtype=np.uint64)  # Ns=0 sub-block reads as 0
    expect[:8] = np.where(local == 0, 99, 7).reshape(8, 8, 8)
    np.testing.assert_array_equal(vol, expect)
    np.testing.assert_array_equal(ref_decode_block(data), expect)


# --------------------------------------------------------------------------- malformed blocks


def small_multi_width_block() -> bytes:
    vol = np.zeros((16, 16, 16), dtype=np.uint64)
    vol[:8, :8, :8] = 4  # solid sub-block
    sb_view(vol, 0, 0, 1)[...] = (np.arange(512) % 2).reshape(8, 8, 8) + 10  # 1 bit
    sb_view(vol, 0, 1, 0)[...] = (np.arange(512) % 5).reshape(8, 8, 8) + 20  # 3 bits
    sb_view(vol, 1, 1, 1)[...] = np.arange(512).reshape(8, 8, 8) + 1000  # 9 bits
    return c.encode_block(vol)


@pytest.mark.parametrize("which", ["small", "fib19", "solid"])
def test_every_truncation_raises_badblock(which: str) -> None:
    data = {
        "small": small_multi_width_block,
        "fib19": fib19_block,
        "solid": lambda: c.encode_block(np.ones((16, 16, 16), dtype=np.uint64)),
    }[which]()
    c.decode_block(data)
    for n in range(len(data)):
        with pytest.raises(BadBlock):
            c.decode_block(data[:n])
    for n in range(16 + 8):
        with pytest.raises(BadBlock):
            c.block_labels(data[:n])


def test_badblock_is_valueerror_and_badrequest() -> None:
    with pytest.raises(ValueError):
        c.decode_block(b"")
    with pytest.raises(BadRequest) as info:
        c.decode_block(b"\x00" * 10)
    assert info.value.status == 400
    assert "short" in str(info.value)


def _block(gx, gy, gz, table, ns=None, idx=None, values=b"") -> bytes:
    out = struct.pack("<4I", gx, gy, gz, len(table)) + struct.pack(f"<{len(table)}Q", *table)
    if ns is not None:
        out += struct.pack(f"<{len(ns)}H", *ns) + struct.pack(f"<{len(idx)}I", *idx) + values
    return out


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("<4I", 1, 1, 1, 0) + b"\x00" * 8, "0 labels"),
        (_block(0, 1, 1, [5]), "sub-blocks"),
        (_block(129, 1, 1, [5]), "sub-blocks"),
        (_block(1, 1, 1, [5]) + b"\x00", "24 bytes"),  # solid with trailing data
        (struct.pack("<4I", 1, 1, 1, 3) + b"\x00" * 16, "label table"),
        (_block(1, 1, 1, [1, 2], [513], [0] * 513, b"\x00" * (64 * 10)), "more than 512"),
        (_block(1, 1, 1, [1, 2], [2], [0, 2], b"\x00" * 64), "out of range"),
        (_block(1, 1, 1, [1, 2, 3], [3], [0, 1, 2], b"\xff" * 128), "only 3 labels"),
        (_block(1, 1, 1, [1, 2], [2], [0, 1], b"\x0f" * 64 + b"\x00"), "trailing"),
        (_block(1, 1, 1, [1, 2], [2], [0, 1], b"\x0f" * 63), "truncated in voxel values"),
        (_block(1, 1, 2, [1, 2]) + b"\x02\x00\x01", "truncated in sub-block label counts"),
        (_block(1, 1, 1, [1, 2], [2], [0]), "truncated in sub-block indices"),
    ],
)
def test_malformed_blocks(data: bytes, message: str) -> None:
    with pytest.raises(BadBlock, match=message):
        c.decode_block(data)


def test_shape_mismatch() -> None:
    data = c.encode_block(np.zeros((16, 8, 24), dtype=np.uint64))
    assert c.block_shape(data) == (16, 8, 24)
    c.decode_block(data, (16, 8, 24))
    with pytest.raises(BadBlock, match="expected"):
        c.decode_block(data, (24, 8, 16))


def test_random_corruption_never_escapes_badblock() -> None:
    rng = np.random.default_rng(11)
    good = small_multi_width_block()
    for _ in range(600):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        with contextlib.suppress(BadBlock):
            c.decode_block(bytes(data))


# --------------------------------------------------------------------------- table-only access


def test_block_labels_and_relabel() -> None:
    vol = coherent_block((32, 32, 32), 30, seed=8)
    data = c.encode_block(vol)
    table = c.block_labels(data)
    assert table.tolist() == list(dict.fromkeys(c._to_subblocks(vol).ravel().tolist()))
    mapping = {int(table[0]): 1, int(table[1]): 1, int(table[2]): 0}
    out = c.relabel_block(data, mapping)
    assert len(out) == len(data)
    n = table.size
    assert out[:16] == data[:16] and out[16 + 8 * n :] == data[16 + 8 * n :]
    expect = vol.copy()
    for k, v in mapping.items():
        expect[vol == k] = v
    np.testing.assert_array_equal(c.decode_block(out), expect)
    # callable form, vectorized over the table
    out2 = c.relabel_block(data, lambda t: t // np.uint64(2))
    np.testing.assert_array_equal(c.decode_block(out2), vol // np.uint64(2))
    # a solid block stays solid
    solid = c.encode_block(np.full((8, 8, 8), 3, dtype=np.uint64))
    assert c.relabel_block(solid, {3: 4}) == struct.pack("<4IQ", 1, 1, 1, 1, 4)
    with pytest.raises(BadBlock):
        c.relabel_block(data[:30], {})


# --------------------------------------------------------------------------- 3.2 stream & payloads


def test_block_stream_roundtrip_and_bytes() -> None:
    records = [((1, -2, 3), b"abc"), ((-(2**31), 2**31 - 1, 0), b"\x00" * 5)]
    data = c.write_block_stream(records)
    assert data[:19] == struct.pack("<iiiI", 1, -2, 3, 3) + b"abc"
    assert c.read_block_stream(data) == records
    assert c.read_block_stream(b"") == []
    boundaries = {0, 19, len(data)}
    for n in range(len(data)):
        if n in boundaries:
            assert len(c.read_block_stream(data[:n])) == [0, 1][n == 19]
        else:
            with pytest.raises(BadBlock):
                c.read_block_stream(data[:n])
    with pytest.raises(BadBlock, match="zero length"):
        c.read_block_stream(struct.pack("<iiiI", 0, 0, 0, 0))
    with pytest.raises(ValueError):
        c.write_block_stream([((0, 0, 0), b"")])
    with pytest.raises(ValueError):
        c.write_block_stream([((2**31, 0, 0), b"x")])


@pytest.mark.parametrize("compression", ["blocks", "uncompressed", "lz4", "gzip"])
def test_payload_forms(compression: str) -> None:
    vol = coherent_block((64, 64, 64), 50, seed=2)
    payload = c.encode_block_payload(vol, compression)
    raw = vol.astype("<u8").tobytes()
    if compression == "blocks":
        assert gzip.decompress(payload) == c.encode_block(vol)
    elif compression == "uncompressed":
        assert payload == raw
    elif compression == "lz4":
        assert payload == lz4.block.compress(raw, store_size=False)
        assert lz4.block.decompress(payload, uncompressed_size=len(raw)) == raw
    else:
        assert gzip.decompress(payload) == raw
    np.testing.assert_array_equal(c.decode_block_payload(payload, compression, vol.shape), vol)
    stream = c.write_block_stream([((0, 0, 0), payload), ((1, 0, 0), payload)])
    recs = c.read_block_stream(stream)
    assert [r[0] for r in recs] == [(0, 0, 0), (1, 0, 0)]
    np.testing.assert_array_equal(c.decode_block_payload(recs[1][1], compression, vol.shape), vol)
    # wrong shape / corrupt payloads
    with pytest.raises(BadBlock):
        c.decode_block_payload(payload, compression, (32, 64, 64))
    with pytest.raises(BadBlock):
        c.decode_block_payload(payload[: len(payload) // 2], compression, vol.shape)


def test_payload_rejects_unknown_format() -> None:
    with pytest.raises(ValueError):
        c.encode_block_payload(np.zeros((8, 8, 8), np.uint64), "snappy")
    with pytest.raises(ValueError):
        c.decode_block_payload(b"x", "snappy", (8, 8, 8))


def test_lz4_and_gzip_helpers() -> None:
    raw = np.arange(4096, dtype=np.uint64).tobytes()
    packed = c.lz4_compress(raw)
    assert c.lz4_decompress(packed, len(raw)) == raw
    for size in (len(raw) - 8, len(raw) + 8):
        with pytest.raises(BadBlock):
            c.lz4_decompress(packed, size)
    with pytest.raises(BadBlock):
        c.lz4_decompress(b"\xff\xff\xff", 100)
    gz = c.gzip_compress(raw)
    assert gzip.decompress(gz) == raw and c.gzip_decompress(gz) == raw
    assert c.gzip_decompress(gz + c.gzip_compress(b"tail")) == raw + b"tail"  # multi-member
    for bad in (b"", gz[:-1], gz[:10], b"not gzip at all", gz + b"junk"):
        with pytest.raises(BadBlock):
            c.gzip_decompress(bad)
    with pytest.raises(BadBlock, match="beyond"):
        c.gzip_decompress(gz, max_size=len(raw) - 1)
    assert c.gzip_decompress(gz, max_size=len(raw)) == raw


# --------------------------------------------------------------------------- 3.3 google


def test_google_roundtrip_and_fortran_pitfall() -> None:
    rng = np.random.default_rng(4)
    vol = rng.integers(0, 6, size=(16, 8, 24)).astype(np.uint64)  # z, y, x all different
    vol[:8, :, :8] = 2**64 - 1  # one single-label encoding block
    data = c.encode_google(vol)
    assert struct.unpack_from("<I", data)[0] == 1
    xyz = cseg.decompress(data, (24, 8, 16), np.uint64, block_size=(8, 8, 8), order="F")
    np.testing.assert_array_equal(np.asarray(xyz).T, vol)
    np.testing.assert_array_equal(c.decode_google(data, vol.shape), vol)
    np.testing.assert_array_equal(ref_decode_google(data, vol.shape), vol)
    # The pitfall: handing the package the [z,y,x] array (or an F-ordered array with the
    # default order='C') silently encodes other voxels.
    naive = cseg.compress(vol, block_size=(8, 8, 8))
    assert naive != data
    assert not np.array_equal(ref_decode_google(bytes(naive), vol.shape), vol)
    wrong = cseg.compress(np.asfortranarray(vol.T), block_size=(8, 8, 8))
    assert not np.array_equal(ref_decode_google(bytes(wrong), vol.shape), vol)
    # Strided / non-contiguous input must still encode the right voxels.
    big = rng.integers(0, 4, size=(32, 16, 48)).astype(np.uint64)
    view = big[::2, :8, 1::2]
    np.testing.assert_array_equal(ref_decode_google(c.encode_google(view), view.shape), view)
    gz = c.encode_googlegzip(vol)
    assert gzip.decompress(gz) == data


def test_google_decoder_rejects_malformed_input() -> None:
    # compressed_segmentation.decompress itself can segfault on bad bytes; ours must not.
    vol = coherent_block((16, 16, 16), 30, seed=7)
    data = c.encode_google(vol)
    np.testing.assert_array_equal(c.decode_google(data, vol.shape), vol)
    for n in range(len(data)):
        if n % 4 == 0 and n > 0:
            # a word-aligned prefix may still hold every referenced word
            with contextlib.suppress(BadBlock):
                np.testing.assert_array_equal(c.decode_google(data[:n], vol.shape), vol)
        else:
            with pytest.raises(BadBlock):
                c.decode_google(data[:n], vol.shape)
    rng = np.random.default_rng(3)
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(0, 4 + 8 * 8))] = int(rng.integers(0, 256))  # headers
        with contextlib.suppress(BadBlock):
            c.decode_google(bytes(bad), vol.shape)
    with pytest.raises(BadBlock):
        c.decode_google(b"\x02\x00\x00\x00" + data[4:], vol.shape)


@pytest.mark.parametrize("shape", [(8, 8, 12), (4, 8, 8), (0, 8, 8)])
def test_google_requires_multiples_of_8(shape) -> None:
    with pytest.raises(ValueError):
        c.encode_google(np.zeros(shape, dtype=np.uint64))


def test_read_only_inputs() -> None:
    vol = coherent_block((16, 16, 16), 10, seed=1)
    ro = np.frombuffer(vol.tobytes(), dtype=np.uint64).reshape(vol.shape)
    assert not ro.flags.writeable
    np.testing.assert_array_equal(c.decode_block(c.encode_block(ro)), vol)
    np.testing.assert_array_equal(c.decode_google(c.encode_google(ro), vol.shape), vol)
    many = np.frombuffer(np.arange(16**3, dtype=np.uint64).tobytes(), dtype=np.uint64)
    many = many.reshape(16, 16, 16)
    np.testing.assert_array_equal(c.decode_block(c.encode_block(many)), many)
    mask = np.frombuffer((vol == vol[0, 0, 0]).tobytes(), dtype=bool).reshape(vol.shape)
    runs = c.rles_from_mask(mask, (0, 0, 0))
    np.testing.assert_array_equal(c.rles_to_mask(runs, (0, 0, 0), vol.shape), mask)
    _, _, blocks = ref_decode_binary_blocks(
        c.encode_binary_blocks(1, [((0, 0, 0), mask)], vol.shape)
    )
    np.testing.assert_array_equal(blocks[0][2], mask)


def test_google_many_labels() -> None:
    vol = coherent_block((64, 64, 64), 1000, seed=6)
    np.testing.assert_array_equal(c.decode_google(c.encode_google(vol), vol.shape), vol)


# --------------------------------------------------------------------------- 3.4 sparse volumes


def runs_to_voxels(runs: np.ndarray) -> set[tuple[int, int, int]]:
    return {(int(x) + i, int(y), int(z)) for x, y, z, n in runs for i in range(int(n))}


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.95, 1.0])
def test_rles_from_random_masks(density: float) -> None:
    rng = np.random.default_rng(int(density * 100))
    mask = rng.random((12, 9, 17)) < density
    origin = (-5, 100, -(2**20))
    runs = c.rles_from_mask(mask, origin)
    assert runs.dtype == np.int32 and runs.shape[1] == 4
    zz, yy, xx = np.nonzero(mask)
    expect = {
        (int(x) + origin[0], int(y) + origin[1], int(z) + origin[2])
        for z, y, x in zip(zz, yy, xx, strict=True)
    }
    assert runs_to_voxels(runs) == expect
    assert runs[:, 3].sum() == mask.sum()
    # sorted by z, y, x and maximal (no two runs touch along x)
    keys = [(z, y, x) for x, y, z, _ in runs.tolist()]
    assert keys == sorted(keys)
    for a, b in itertools.pairwise(runs):
        assert not (a[1] == b[1] and a[2] == b[2] and a[0] + a[3] >= b[0])
    np.testing.assert_array_equal(c.rles_to_mask(runs, origin, mask.shape), mask)
    legacy = c.encode_rles(runs)
    assert legacy[:12] == bytes([0, 3, 0, 0, 0, 0, 0, 0]) + struct.pack("<I", len(runs))
    assert legacy[12:] == c.encode_srles(runs)
    np.testing.assert_array_equal(c.decode_rles(legacy), runs)
    np.testing.assert_array_equal(c.decode_srles(c.encode_srles(runs)), runs)


def test_rle_known_bytes_and_errors() -> None:
    mask = np.zeros((1, 2, 8), dtype=bool)
    mask[0, 0, 2:5] = True
    mask[0, 1, 7] = True
    runs = c.rles_from_mask(mask, (10, 20, 30))
    assert runs.tolist() == [[12, 20, 30, 3], [17, 21, 30, 1]]
    assert c.encode_rles(runs) == (
        bytes.fromhex("000300000000000002000000") + struct.pack("<8i", 12, 20, 30, 3, 17, 21, 30, 1)
    )
    assert c.encode_rles(np.zeros((0, 4), np.int32)) == bytes.fromhex("000300000000000000000000")
    good = c.encode_rles(runs)
    for n in range(len(good)):
        with pytest.raises(BadBlock):
            c.decode_rles(good[:n])
    with pytest.raises(BadBlock, match=r"header says \d+ runs"):
        c.decode_rles(good + b"\x00")
    with pytest.raises(BadBlock, match="not binary"):
        c.decode_rles(b"\x01" + good[1:])
    with pytest.raises(BadBlock, match="negative"):
        c.decode_rles(c.encode_rles(np.array([[0, 0, 0, -1]])))
    with pytest.raises(BadBlock):
        c.decode_srles(b"\x00" * 15)
    # header bytes 1..7 are ignored on input, as DVID does
    np.testing.assert_array_equal(
        c.decode_rles(b"\x00\x09\x09\x09\x05\x00\x00\x00" + good[8:]), runs
    )


def test_rles_to_mask_clips_and_tolerates_overlap() -> None:
    runs = np.array([[-3, 0, 0, 5], [1, 0, 0, 2], [6, 1, 0, 10], [0, 5, 0, 3], [0, 0, 9, 3]])
    mask = c.rles_to_mask(runs, (0, 0, 0), (1, 2, 8))
    expect = np.zeros((1, 2, 8), dtype=bool)
    expect[0, 0, 0:3] = True
    expect[0, 1, 6:8] = True
    np.testing.assert_array_equal(mask, expect)


def test_binary_blocks_format() -> None:
    rng = np.random.default_rng(9)
    shape = (16, 16, 16)
    mixed = np.zeros(shape, dtype=bool)
    mixed[:8, :8, :8] = True  # sub-block 0 all foreground
    sb_view(mixed, 0, 0, 1)[...] = rng.random((8, 8, 8)) < 0.5  # sub-block 1 mixed
    sb_view(mixed, 1, 1, 1)[0, 0, 0] = True  # sub-block 7: only voxel k=0
    full = np.ones(shape, dtype=bool)
    empty = np.zeros(shape, dtype=bool)
    blocks = [((16, 0, 0), mixed), ((0, 0, 16), full), ((0, 0, 0), empty)]
    data = c.encode_binary_blocks(77, blocks, shape)
    assert data[:20] == struct.pack("<3IQ", 2, 2, 2, 77)
    dims, label, decoded = ref_decode_binary_blocks(data)
    assert dims == (2, 2, 2) and label == 77
    # sorted by z, then y, then x of the block offset
    assert [(o, f) for o, f, _ in decoded] == [((0, 0, 0), 0), ((16, 0, 0), 2), ((0, 0, 16), 1)]
    np.testing.assert_array_equal(decoded[0][2], empty)
    np.testing.assert_array_equal(decoded[1][2], mixed)
    np.testing.assert_array_equal(decoded[2][2], full)
    # byte layout of the mixed block: header, sflags 1, 2+mask, 0 x5, 2+mask
    pos = 20 + 13  # after header and the empty block
    assert data[pos : pos + 13] == struct.pack("<3iB", 16, 0, 0, 2)
    pos += 13
    assert data[pos] == 1 and data[pos + 1] == 2
    mask1 = data[pos + 2 : pos + 66]
    bits = sb_view(mixed, 0, 0, 1).reshape(-1)
    assert mask1 == bytes(sum(int(bits[8 * i + j]) << j for j in range(8)) for i in range(64))
    pos += 66
    assert data[pos : pos + 5] == b"\x00" * 5
    assert data[pos + 5] == 2 and data[pos + 6 : pos + 70] == b"\x01" + b"\x00" * 63
    assert data[pos + 70 : pos + 83] == struct.pack("<3iB", 0, 0, 16, 1)
    assert len(data) == pos + 83
    assert c.encode_binary_blocks(77, [], shape) == b""
    with pytest.raises(ValueError):
        c.encode_binary_blocks(1, [((0, 0, 0), np.zeros((8, 8, 8), bool))], shape)
    with pytest.raises(ValueError):  # (z, y, x) mask against an (x, y, z) block size
        c.encode_binary_blocks(1, [((0, 0, 0), np.zeros((8, 16, 24), bool))], (8, 16, 24))


def test_binary_blocks_many_random() -> None:
    rng = np.random.default_rng(10)
    shape = (8, 16, 24)  # z, y, x
    blocks = []
    for i in range(70):  # more than one internal batch
        m = rng.random(shape) < rng.choice([0.0, 0.01, 0.5, 1.0])
        blocks.append(((int(rng.integers(-5, 5)) * 24, i * 16, int(rng.integers(0, 3)) * 8), m))
    data = c.encode_binary_blocks(5, blocks, (24, 16, 8))  # block size is x, y, z
    dims, _, decoded = ref_decode_binary_blocks(data)
    assert dims == (3, 2, 1)
    want = sorted(blocks, key=lambda b: (b[0][2], b[0][1], b[0][0]))
    assert [o for o, _, _ in decoded] == [o for o, _ in want]
    for (_, _, vox), (_, m) in zip(decoded, want, strict=True):
        np.testing.assert_array_equal(vox, m)


def test_coarse_runs() -> None:
    coords = np.array(
        [[3, 0, 0], [1, 0, 0], [2, 0, 0], [2, 0, 0], [5, 0, 0], [0, 1, 0], [-1, 1, 0], [0, 0, -1]]
    )
    data = c.encode_coarse(coords)
    assert data == (
        bytes.fromhex("000300000000000004000000")
        + struct.pack("<4i", 0, 0, -1, 1)
        + struct.pack("<4i", 1, 0, 0, 3)
        + struct.pack("<4i", 5, 0, 0, 1)
        + struct.pack("<4i", -1, 1, 0, 2)
    )
    np.testing.assert_array_equal(
        c.decode_rles(data), [[0, 0, -1, 1], [1, 0, 0, 3], [5, 0, 0, 1], [-1, 1, 0, 2]]
    )
    assert c.encode_coarse(np.zeros((0, 3), int)) == bytes.fromhex("000300000000000000000000")


def test_coarse_multi() -> None:
    data = c.encode_coarse_multi({9: np.array([[0, 0, 0], [1, 0, 0]]), 2: np.array([[4, 5, 6]])})
    assert data == (
        struct.pack("<Qi", 2, 1)
        + struct.pack("<4i", 4, 5, 6, 1)
        + struct.pack("<Qi", 9, 1)
        + struct.pack("<4i", 0, 0, 0, 2)
    )
    assert c.encode_coarse_multi({}) == b""


# --------------------------------------------------------------------------- 3.5 label index


def test_block_key_bit_layout() -> None:
    key = c.encode_block_key(-1, 2, -3)
    assert key == (1 | 1 << 20) | (2 << 21) | ((3 | 1 << 20) << 42)
    assert key >> 20 & 1 == 1 and key >> 41 & 1 == 0 and key >> 62 & 1 == 1 and key >> 63 == 0
    assert c.decode_block_key(key) == (-1, 2, -3)
    assert c.encode_block_key(0, 0, 0) == 0
    m = 2**20 - 1
    assert c.encode_block_key(-m, -m, -m) == 2**63 - 1
    assert c.encode_block_key(m, 0, 0) == m
    assert c.encode_block_key(0, 0, 1) == 1 << 42
    assert c.decode_block_key(c.encode_block_key(10, 24837, 890)) == (10, 24837, 890)  # DVID test
    assert c.decode_block_key(1 << 63 | 5) == (5, 0, 0)  # bit 63 ignored
    assert c.decode_block_key(1 << 20) == (0, 0, 0)  # "negative zero"
    for bad in ((2**20, 0, 0), (0, -(2**20), 0)):
        with pytest.raises(ValueError):
            c.encode_block_key(*bad)
    with pytest.raises(ValueError):
        c.encode_block_keys(np.array([[0, 0, 2**20]]))


def test_block_keys_vectorized() -> None:
    rng = np.random.default_rng(12)
    coords = rng.integers(-(2**20) + 1, 2**20, size=(500, 3))
    coords[:5] = [[0, 0, 0], [-1, -1, -1], [1, -1, 0], [2**20 - 1, -(2**20) + 1, 0], [0, 0, -7]]
    keys = c.encode_block_keys(coords)
    assert keys.dtype == np.uint64
    assert keys.tolist() == [c.encode_block_key(*p) for p in coords.tolist()]
    back = c.decode_block_keys(keys)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, coords)
    assert [tuple(p) for p in back.tolist()] == [c.decode_block_key(int(k)) for k in keys]


def test_proto_wire_format() -> None:
    idx = pb.LabelIndex(label=5)
    idx.blocks[3].counts[7] = 9
    # hand-assembled: field 1 map entry {1: 3, 2: SVCount{1: {1: 7, 2: 9}}}, field 2 = 5
    assert idx.SerializeToString() == bytes.fromhex("0a0a080312060a04080710091005")
    full = pb.LabelIndex(
        label=2**64 - 1, last_mutid=3, last_mod_time="t", last_mod_user="u", last_mod_app="a"
    )
    full.blocks[c.encode_block_key(-1, 2, 3)].counts[11] = 2**32 - 1
    full.blocks[c.encode_block_key(-1, 2, 3)].surface_mutid = 4
    again = pb.LabelIndex.FromString(full.SerializeToString())
    assert again == full
    ops = pb.MappingOps(mappings=[pb.MappingOp(mutid=1, mapped=2, original=[3, 4])])
    assert ops.SerializeToString() == bytes.fromhex("0a08080110021a020304")
    assert pb.LabelIndices(indices=[full, idx]).indices[1].label == 5


def test_index_envelope() -> None:
    idx = pb.LabelIndex(label=42, last_mutid=7)
    rng = np.random.default_rng(13)
    for p in rng.integers(-100, 100, size=(300, 3)).tolist():
        idx.blocks[c.encode_block_key(*p)].counts[int(rng.integers(1, 10))] = 5
    ser = idx.SerializeToString()
    env = c.compress_index(ser)
    assert env[0] == 0x80
    assert struct.unpack_from("<I", env, 1)[0] == len(ser)
    assert lz4.block.decompress(env[5:], uncompressed_size=len(ser)) == ser
    assert c.decompress_index(env) == ser
    assert pb.LabelIndex.FromString(c.decompress_index(env)) == idx
    assert c.compress_index(b"") == b"" and c.decompress_index(b"") == b""
    # DVID's other accepted envelopes: CRC32 variant, legacy size 0, uncompressed
    crc = bytes([0x88]) + struct.pack("<I", zlib.crc32(env[1:])) + env[1:]
    assert c.decompress_index(crc) == ser
    with pytest.raises(BadBlock, match="checksum"):
        c.decompress_index(crc[:-1] + bytes([crc[-1] ^ 1]))
    assert c.decompress_index(b"\x80" + b"\x00" * 4 + ser) == ser
    assert c.decompress_index(b"\x00" + ser) == ser
    for bad in (b"\x40" + env[1:], env[:3], env[:-1], env[:5] + b"\xff" * 10):
        with pytest.raises(BadBlock):
            c.decompress_index(bad)
