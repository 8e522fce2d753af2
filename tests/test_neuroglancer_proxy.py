"""End to end: the real neuroglancer viewer shows a uint8blk proxy instance whose voxels a
real ``dvid-cloud serve`` reads from a (fake) BOSS server.

The point is the whole path a user takes: a server configured by a TOML file
(``[proxy.boss]`` endpoint and token), a ``uint8blk`` instance created with
``proxy = boss://...``, and neuroglancer's ``dvid://`` datasource asking it for JPEG
chunks, which the server must cut out of BOSS. The fake BOSS (tests/fakes/boss.py)
holds a 128³ uint8 channel, left half dark and right half bright, and requires the
token. Once ``viewer.isReady()``, the test checks that the server answered the chunk
GETs with 200 and never leaked the token into its log, that the fake answered every
cutout with 200 and was asked at most once per chunk, and that the screenshot is dark
on the left and bright on the right.

Browser set-up and the skip rules are those of tests/test_neuroglancer.py: skipped only
when chromium (or the Python packages) are missing outside CI; with ``CI`` set a missing
chromium fails.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import live_http as live
from tests.fakes.boss import FakeBoss, FakeChannel
from tests.neuroglancer_support import (
    chromium_page,
    dvid_server,
    free_port,
    neuroglancer_static,
    viewer_url,
)
from tests.test_neuroglancer import (
    as_seen,
    chunk_requests,
    mean_rgb,
    ok,
    requirements,
    summarize,
    wait_until_loaded,
)

SIZE = 128  # the channel is SIZE³ voxels: 8 instance blocks of 64³
DARK, BRIGHT = 50, 200  # x < 64 and x >= 64
TOKEN = "ng-proxy-test-token"
CHANNEL = ("ngcol", "ngexp", "em")
ZOOM = 0.5  # voxels per screen pixel: the 128 voxels span 256 px around the centre
OFFSET = 60  # px from the panel centre to the left and right samples (30 voxels)


def boss_channel() -> FakeChannel:
    """The remote: 8 nm isotropic voxels (so neuroglancer's view is square), one level,
    storage cuboids smaller than the instance's blocks so each block spans several."""
    _, _, x = np.mgrid[0:SIZE, 0:SIZE, 0:SIZE]  # ZYX: x varies fastest
    data = np.where(x < SIZE // 2, DARK, BRIGHT).astype(np.uint8)
    return FakeChannel(data, voxel_size=(8.0, 8.0, 8.0), cuboid_size=(64, 64, 16))


def write_config(folder: Path, boss: FakeBoss) -> Path:
    """The server's TOML file in ``folder``: where BOSS is and its token, with short
    timeouts so that a hang fails the test quickly rather than at its own timeout."""
    path = folder / "dvid.toml"
    path.write_text(
        f"[proxy]\ntimeout = 10\nattempts = 2\n\n"
        f'[proxy.boss]\nendpoint = "{boss.url}"\ntoken = "{TOKEN}"\n'
    )
    return path


def make_proxy(url: str) -> str:
    """A repo with ``em`` proxying the fake's channel; its uuid."""
    uuid = ok(live.post(f"{url}/api/repos", json={"alias": "ng-proxy"})).json()["root"]
    body = {
        "typename": "uint8blk",
        "dataname": "em",
        "proxy": "boss://{}/{}/{}".format(*CHANNEL),
        "BlockSize": "64,64,64",
    }
    ok(live.post(f"{url}/api/repo/{uuid}/instance", json=body))
    return str(uuid)


def viewer_state(url: str, uuid: str) -> dict[str, Any]:
    centre = SIZE / 2
    return {
        "dimensions": {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [8e-9, "m"]},
        "position": [centre, centre, centre + 0.5],
        "crossSectionScale": ZOOM,
        "layout": "xy",
        "showAxisLines": False,
        "showScaleBar": False,
        "showDefaultAnnotations": False,
        "layers": [{"type": "image", "name": "em", "source": f"dvid://{url}/{uuid}/em"}],
        "selectedLayer": {"visible": False},
    }


@pytest.mark.timeout(120)
def test_neuroglancer_renders_boss_proxy(tmp_path: Path) -> None:
    chromium, client = requirements()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    with (
        FakeBoss({CHANNEL: boss_channel()}, token=TOKEN) as boss,
        dvid_server(tmp_path / "data", free_port(), write_config(tmp_path, boss)) as (url, log),
        neuroglancer_static(client) as viewer_base,
        sync_playwright() as pw,
    ):
        uuid = make_proxy(url)
        before = log.count_through("POST", f"/api/repo/{uuid}/instance")
        cutouts_before = boss.count("cutout")
        with chromium_page(pw, chromium, url) as (page, record):
            page.goto(viewer_url(viewer_base, viewer_state(url, uuid)), timeout=30_000)
            wait_until_loaded(
                page,
                record,
                log,
                before,
                uuid,
                lambda entries: bool(chunk_requests(entries, uuid, "em")),
                "em chunk requests in the server log",
            )
            panel = page.locator(".neuroglancer-rendered-data-panel").first
            image = np.asarray(Image.open(io.BytesIO(panel.screenshot(timeout=15_000))))
        cutouts = [r for r in boss.requests if r.kind == "cutout"]

    entries = log.requests()[before:]
    summary = summarize(entries, uuid)
    print(f"\nserver requests while the viewer loaded:\n{summary}")
    print(f"as the browser saw them:\n{as_seen(record, url, uuid)}")
    print(f"BOSS cutouts: {len(cutouts)}, e.g. {[r.path for r in cutouts[:3]]}")
    print(f"elapsed {time.monotonic() - started:.1f} s")

    # --- the server's log ---
    info = [e for e in entries if e["method"] == "GET" and e["path"] == "/api/repos/info"]
    assert info and all(e["status"] == 200 for e in info), summary
    gray = chunk_requests(entries, uuid, "em")
    assert gray and all(e["status"] == 200 for e in gray), summary
    assert all(e["path"].endswith("/jpeg") for e in gray), summary
    assert all(f"/{uuid}/em/raw/0_1_2/64_64_64/" in e["path"] for e in gray), summary
    assert not [e for e in entries if e["status"] >= 400], summary
    assert record.seen and all(status == 200 for _, _, status in record.seen), record.seen
    assert TOKEN not in log.text()

    # --- the remote: creation read only metadata; the chunks were cut out of BOSS, each
    # block at most once (repeats come from the server's cache), none refused ---
    assert cutouts_before == 0
    assert cutouts and all(r.status == 200 for r in cutouts), cutouts
    assert len(cutouts) <= len(gray), (len(cutouts), summary)
    assert all(r.path.startswith("/v1/cutout/{}/{}/{}/0/".format(*CHANNEL)) for r in cutouts)

    # --- the screenshot ---
    height, width = image.shape[:2]
    cx, cy = width // 2, height // 2
    samples = {
        f"{side}/{half}": mean_rgb(image, cx + dx * OFFSET, cy + dy * OFFSET)
        for side, dx in (("left", -1), ("right", 1))
        for half, dy in (("top", -1), ("bottom", 1))
    }
    described = {name: rgb.round().tolist() for name, rgb in samples.items()}
    Image.fromarray(image).save(tmp_path / "neuroglancer-proxy.png")
    print(f"screenshot {width}x{height}, mean RGB by quadrant: {described}")
    for half in ("top", "bottom"):
        left, right = samples[f"left/{half}"], samples[f"right/{half}"]
        # Gray, as the data: no channel far from the others.
        assert np.ptp(left) < 20 and np.ptp(right) < 20, described
        # DARK (50) on the left, BRIGHT (200) on the right, give or take JPEG and display.
        assert left.mean() < 100 and right.mean() > 150, described
