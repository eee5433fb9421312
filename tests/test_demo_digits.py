"""`python -m rexjax` (the digits demo) and its PNG writer."""

import struct
import zlib

import numpy as np
import pytest

from rexjax import __main__ as cli
from rexjax._png import image_grid, png_bytes, write_png


def _decode(data: bytes) -> np.ndarray:
    """A minimal PNG reader for what `png_bytes` writes (8-bit, filter 0, one IDAT)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = body
        pos += 12 + length
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and b"IEND" in chunks
    channels = {0: 1, 2: 3}[colour]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, -1)
    assert np.all(raw[:, 0] == 0)
    img = raw[:, 1:].reshape(h, w, channels)
    return img[..., 0] if channels == 1 else img


def test_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(7, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode(png_bytes(grey)), grey)
    np.testing.assert_array_equal(_decode(png_bytes(rgb)), rgb)
    path = write_png(tmp_path / "a.png", grey)
    np.testing.assert_array_equal(_decode(path.read_bytes()), grey)
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(grey.astype(np.float32))


def test_image_grid_layout():
    tiles = np.full((2, 3, 4, 4), -1.0)
    tiles[1, 2] = 1.0
    tiles[0, 1, 0, 0] = np.nan
    g = image_grid(tiles, scale=2, pad=1)
    assert g.shape == (2 * (8 + 1) + 1, 3 * (8 + 1) + 1)
    assert g[0].min() == 255  # padding is white
    assert g[1 + 9, 1 + 18] == 255 and g[1, 1] == 0  # +1 is white, -1 black
    assert g[1, 1 + 9] == 0  # NaN drawn black


def test_digits_demo_small(tmp_path, capsys):
    pytest.importorskip("rexjax.models.pretrained")
    out = tmp_path / "demo.png"
    cli.main(
        [
            "--out",
            str(out),
            "--images",
            "2",
            "--edits",
            "1",
            "--steps",
            "3",
            "--solver",
            "rex-euler,ddim",
        ]
    )
    text = capsys.readouterr().out
    assert "Rex Euler" in text and "DDIM" in text and "round trip" in text
    rows = {
        line.split()[0] + " " + line.split()[1]: line.split()
        for line in text.splitlines()
        if line.startswith(("Rex Euler", "DDIM (naive"))
    }
    rex_rt, rex_gap = float(rows["Rex Euler"][3]), float(rows["Rex Euler"][4].rstrip("!"))
    assert rex_rt < 1e-4  # exact inversion, float32
    assert 0 < rex_gap < 1  # the coupling gap of the Rex pair; DDIM has none
    assert rows["DDIM (naive"][5] == "-"
    img = _decode(out.read_bytes())
    # 2 digits x (source, reconstruction, 1 edit), 16 px tiles at scale 4 with 2 px padding.
    assert img.shape == (2 * (64 + 2) + 2, 3 * (64 + 2) + 2)


def test_cli_dispatch_errors():
    with pytest.raises(SystemExit):
        cli.main(["digits", "--solver", "nonsense"])
    with pytest.raises(SystemExit):
        cli.main(["--t-edit", "0"])
