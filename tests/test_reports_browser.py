"""A real report rendered by headless Chromium (Debian's ``chromium``, installed by
./install.sh): the screenshot is not blank, the banner and the charts are drawn.

The browser gets a proxy that goes nowhere, so anything the page tried to fetch would
fail; with the page's Content-Security-Policy that makes the render an offline one.
The PNG is decoded here with zlib and numpy (no Pillow in the project for one test).
"""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib

import numpy as np
import pytest

from report_fixtures import build_run
from reports import svg
from reports.compare import write_comparison
from reports.html import write_report

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1280, 2400


def decode_png(data: bytes) -> np.ndarray:
    """8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) → H×W×C uint8."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6), header
    ch = 3 if colour == 2 else 4
    stride = width * ch
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum per channel
            cur = np.cumsum(line.reshape(width, ch), axis=0).reshape(-1) & 255
        elif kind == 2:  # Up
            cur = (line + prev) & 255
        else:  # Average, Paeth: sequential along the row
            cur_l, line_l, prev_l = [0] * stride, line.tolist(), prev.tolist()
            for x in range(stride):
                a = cur_l[x - ch] if x >= ch else 0
                b = prev_l[x]
                if kind == 3:
                    pred = (a + b) >> 1
                else:
                    c = prev_l[x - ch] if x >= ch else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur_l[x] = (line_l[x] + pred) & 255
            cur = np.array(cur_l, dtype=np.int64)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, ch)[:, :, :3]


def screenshot(html_path, out_png, profile) -> np.ndarray:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (./install.sh installs Debian's chromium as root)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run",
           "--disable-extensions", "--disable-background-networking", "--proxy-server=127.0.0.1:9",
           f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={out_png}",
           html_path.resolve().as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a hung browser: end its whole process group (ours alone)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert out_png.is_file(), log.decode(errors="replace")[-2000:]
    return decode_png(out_png.read_bytes())


def near(img: np.ndarray, hex_colour: str, tol: int = 12) -> np.ndarray:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(img.astype(np.int64) - rgb) <= tol).all(axis=2)


def test_report_renders_with_verdict_and_charts(tmp_path):
    run = build_run(tmp_path / "run", learners=8, duration_s=600, merge_every_s=0.25, failing=True)
    img = screenshot(write_report(run.path), tmp_path / "report.png", tmp_path / "profile")
    assert img.shape == (HEIGHT, WIDTH, 3)
    # not blank: many distinct colours, and not one flat colour
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    assert colours > 200, colours
    assert img.std() > 20
    # the FAIL banner is at the top of the page
    assert near(img[:260], "#c62f36").sum() > 3000
    # the timeline's lanes are drawn: up (green), down (red), paused (amber), partitioned (purple)
    for state, least in (("up", 50_000), ("down", 500), ("paused", 500), ("partitioned", 500), ("rejoining", 20)):
        assert near(img, svg.STATE_COLOURS[state], tol=6).sum() >= least, state
    # line charts are drawn: the useful-token/goodput green and the tokens-computed blue
    assert near(img, svg.PALETTE[2], tol=20).sum() > 800
    assert near(img, svg.PALETTE[0], tol=20).sum() > 800
    # charts region: rows below the headline carry several distinct colours each
    rich_rows = sum(1 for y in range(300, HEIGHT, 10) if len(np.unique(img[y].reshape(-1, 3), axis=0)) >= 6)
    assert rich_rows > 60, rich_rows


def test_comparison_renders(tmp_path):
    dirs = [build_run(tmp_path / m, learners=4, duration_s=60, trainer=m).path for m in ("decoupled", "ddp")]
    img = screenshot(write_comparison(dirs, tmp_path / "cmp.html"), tmp_path / "cmp.png", tmp_path / "profile")
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200
    assert near(img, svg.PALETTE[0], tol=20).sum() > 500 and near(img, svg.PALETTE[1], tol=20).sum() > 500
