"""End to end: the real neuroglancer viewer reads what a real ``dvid-cloud serve`` serves.

Debian's chromium, headless with WebGL2 through SwiftShader, runs the built neuroglancer
client that the PyPI ``neuroglancer`` package ships, driven by playwright for Python (given
the chromium binary; no browser download). The viewer shows a uint8blk ``grayscale`` (left
half dark, right half bright) under a labelmap ``segmentation`` (top half one label, bottom
half another, each given a fixed colour) through neuroglancer's ``dvid://`` datasource.
Once ``viewer.isReady()``, the test checks the server's access log (repo info, grayscale
chunks, labelmap ``googlegzip`` chunks, all 200) and the colours of the screenshot.

Skipped only when chromium (or the Python packages) are missing outside CI; with ``CI``
set a missing chromium fails.
"""

from __future__ import annotations

import io
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.neuroglancer_support import (
    CHROMIUM_ARGS,
    chromium_path,
    dvid_server,
    free_port,
    in_ci,
    neuroglancer_client_dir,
    neuroglancer_static,
    viewer_url,
    wait_for,
)

SIZE = 128  # the volume is SIZE³ voxels: 8 blocks of 64³
DARK, BRIGHT = 50, 200  # grayscale: x < 64 and x >= 64
TOP, BOTTOM = 7, 2**40 + 5  # labels: y < 64 and y >= 64 (BOTTOM needs all 64 bits)
TOP_COLOUR, BOTTOM_COLOUR = "#ff0000", "#0000ff"
ZOOM = 0.5  # voxels per screen pixel: the 128 voxels span 256 px around the centre
OFFSET = 60  # px from the panel centre to the quadrant samples (30 voxels)
PATCH = 8  # half-width of the sampled square, px


def requirements() -> tuple[str, Path]:
    """Chromium and the client, or skip (fail under CI) saying what is missing."""
    chromium = chromium_path()
    client = neuroglancer_client_dir()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        playwright_ok = False
    else:
        playwright_ok = True
    missing = [
        what
        for what, ok in (
            ("Debian's chromium (apt-get install chromium)", chromium),
            ("the PyPI neuroglancer package (pip install -e '.[test]')", client),
            ("the PyPI playwright package (pip install -e '.[test]')", playwright_ok),
        )
        if not ok
    ]
    if missing:
        reason = "neuroglancer browser test needs " + " and ".join(missing)
        if in_ci() or chromium:
            pytest.fail(reason + " (required under CI)" if in_ci() else reason)
        pytest.skip(reason)
    assert chromium and client
    return chromium, client


def ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, (response.request.url, response.text)
    return response


def make_data(url: str) -> str:
    """A repo with ``grayscale`` and ``segmentation`` holding the known patterns."""
    uuid = ok(httpx.post(f"{url}/api/repos", json={"alias": "ng"})).json()["root"]
    common = {"BlockSize": "64,64,64", "VoxelSize": "8,8,8", "VoxelUnits": "nanometers"}
    for typename, name, extra in (
        ("uint8blk", "grayscale", {}),
        ("labelmap", "segmentation", {"MaxDownresLevel": "1"}),
    ):
        body = {"typename": typename, "dataname": name, **common, **extra}
        ok(httpx.post(f"{url}/api/repo/{uuid}/instance", json=body))
    _, y, x = np.mgrid[0:SIZE, 0:SIZE, 0:SIZE]  # ZYX arrays: x varies fastest
    gray = np.where(x < SIZE // 2, DARK, BRIGHT).astype(np.uint8)
    labels = np.where(y < SIZE // 2, TOP, BOTTOM).astype("<u8")
    box = f"{SIZE}_{SIZE}_{SIZE}/0_0_0"
    for name, data in (("grayscale", gray), ("segmentation", labels)):
        raw = f"{url}/api/node/{uuid}/{name}/raw/0_1_2/{box}"
        ok(httpx.post(raw, content=data.tobytes(), timeout=60))
        assert httpx.get(raw, timeout=60).content == data.tobytes(), name
    return uuid


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
        "layers": [
            {"type": "image", "name": "grayscale", "source": f"dvid://{url}/{uuid}/grayscale"},
            {
                "type": "segmentation",
                "name": "segmentation",
                "source": f"dvid://{url}/{uuid}/segmentation",
                "segments": [str(TOP), str(BOTTOM)],
                "segmentColors": {str(TOP): TOP_COLOUR, str(BOTTOM): BOTTOM_COLOUR},
                "selectedAlpha": 0.5,
            },
        ],
        "selectedLayer": {"visible": False},
    }


def summarize(entries: list[dict[str, Any]], uuid: str) -> str:
    """One line per (method, kind of path, status), with counts: for failure messages."""
    counts: Counter[tuple[str, str, int]] = Counter()
    for e in entries:
        path = e["path"].replace(uuid, "<uuid>")
        if "/raw/0_1_2/" in path:
            path = (
                path.split("/raw/0_1_2/")[0]
                + "/raw/0_1_2/…"
                + ("/jpeg" if path.endswith("/jpeg") else "")
            )
        counts[(e["method"], path, e["status"])] += 1
    return "\n".join(f"{n:4d} {m} {p} -> {s}" for (m, p, s), n in sorted(counts.items()))


def chunk_requests(entries: list[dict[str, Any]], uuid: str, name: str) -> list[dict[str, Any]]:
    prefix = f"/api/node/{uuid}/{name}/"
    return [
        e
        for e in entries
        if e["method"] == "GET"
        and e["path"].startswith(prefix)
        and (
            e["path"][len(prefix) :].startswith("raw/0_1_2/")
            or e["path"][len(prefix) :].startswith("subvolblocks/")
        )
    ]


def mean_rgb(image: np.ndarray, cx: int, cy: int) -> np.ndarray:
    patch = image[cy - PATCH : cy + PATCH + 1, cx - PATCH : cx + PATCH + 1, :3]
    return patch.reshape(-1, 3).astype(float).mean(axis=0)


@pytest.mark.timeout(120)
def test_neuroglancer_renders_grayscale_and_labelmap(tmp_path: Path) -> None:
    chromium, client = requirements()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    port = free_port()
    with (
        dvid_server(tmp_path / "data", port) as (url, log),
        neuroglancer_static(client) as viewer_base,
        sync_playwright() as pw,
    ):
        uuid = make_data(url)
        before = len(log.requests())
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            timeout=30_000,
        )
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            console: list[str] = []
            seen: list[tuple[str, str, int]] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            # What the browser asked the dvid server for, with query strings (the access
            # log has paths only) and the status it saw.
            page.on(
                "response",
                lambda r: (
                    seen.append((r.request.method, r.url, r.status))
                    if r.url.startswith(url)
                    else None
                ),
            )
            page.goto(viewer_url(viewer_base, viewer_state(url, uuid)), timeout=30_000)

            def browser_said() -> str:
                return "\n".join(console[-30:])

            def served() -> str:
                return summarize(log.requests()[before:], uuid)

            try:
                page.wait_for_function(
                    "() => window.viewer !== undefined && window.viewer.isReady()",
                    timeout=30_000,
                    polling=100,
                )
            except Exception as e:
                raise AssertionError(
                    f"viewer never ready: {e}\nbrowser:\n{browser_said()}\nserver:\n{served()}"
                ) from None

            # The access line is written once a response is sent: wait for both kinds.
            def data_arrived() -> bool:
                entries = log.requests()[before:]
                return bool(
                    chunk_requests(entries, uuid, "grayscale")
                    and chunk_requests(entries, uuid, "segmentation")
                )

            try:
                wait_for(data_arrived, 10, "chunk requests in the server log")
            except AssertionError as e:
                raise AssertionError(
                    f"{e}\nbrowser:\n{browser_said()}\nserver:\n{served()}"
                ) from None

            # Every response the browser got is in the access log and nothing else is (the
            # line is written just after the response is sent, so allow it a moment). CORS
            # preflights, if any, are the browser's own and playwright does not report them.
            def browser_paths() -> set[tuple[str, str]]:
                return {(m, urllib.parse.urlsplit(u).path) for m, u, _ in seen}

            def logged_paths() -> set[tuple[str, str]]:
                entries = log.requests()[before:]
                return {(e["method"], e["path"]) for e in entries if e["method"] != "OPTIONS"}

            try:
                wait_for(lambda: browser_paths() == logged_paths(), 10, "log == browser")
            except AssertionError as e:
                raise AssertionError(
                    f"{e}\nbrowser only: {browser_paths() - logged_paths()}"
                    f"\nlog only: {logged_paths() - browser_paths()}"
                ) from None
            panel = page.locator(".neuroglancer-rendered-data-panel").first
            image = np.asarray(Image.open(io.BytesIO(panel.screenshot(timeout=15_000))))
        finally:
            browser.close()

    entries = log.requests()[before:]
    summary = summarize(entries, uuid)
    print(f"\nserver requests while the viewer loaded:\n{summary}")
    asked = "\n".join(
        f"{status} {method} {u.removeprefix(url).replace(uuid, '<uuid>')}"
        for method, u, status in seen
    )
    print(f"as the browser saw them:\n{asked}")
    print(f"elapsed {time.monotonic() - started:.1f} s")

    # --- the server's log ---
    info = [e for e in entries if e["method"] == "GET" and e["path"] == "/api/repos/info"]
    assert info and all(e["status"] == 200 for e in info), summary
    gray = chunk_requests(entries, uuid, "grayscale")
    seg = chunk_requests(entries, uuid, "segmentation")
    assert gray and all(e["status"] == 200 for e in gray), summary
    assert seg and all(e["status"] == 200 for e in seg), summary
    # uint8blk without jpeg storage: JPEG-encoded raw chunks; labelmap: googlegzip chunks
    # of 64³ at scale 0 (and perhaps 1), as the browser asked for them.
    assert all(e["path"].endswith("/jpeg") for e in gray), summary
    assert not [e for e in entries if e["status"] >= 400], summary
    assert seen and all(status == 200 for _, _, status in seen), seen
    seg_urls = [u for _, u, _ in seen if f"/{uuid}/segmentation/raw/0_1_2/64_64_64/" in u]
    assert len(seg_urls) == len(seg), (seg_urls, summary)
    for u in seg_urls:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(u).query)
        assert query["compression"] == ["googlegzip"] and query["scale"][0] in "01", u
    gray_urls = [u for _, u, _ in seen if f"/{uuid}/grayscale/" in u]
    assert len(gray_urls) == len(gray), (gray_urls, summary)
    assert all(f"/{uuid}/grayscale/raw/0_1_2/64_64_64/" in u for u in gray_urls), gray_urls

    # --- the screenshot ---
    height, width = image.shape[:2]
    cx, cy = width // 2, height // 2
    quadrants = {
        (side, half): mean_rgb(image, cx + dx * OFFSET, cy + dy * OFFSET)
        for side, dx in (("left", -1), ("right", 1))
        for half, dy in (("top", -1), ("bottom", 1))
    }
    described = {f"{s}/{h}": rgb.round().tolist() for (s, h), rgb in quadrants.items()}
    Image.fromarray(image).save(tmp_path / "neuroglancer.png")
    print(f"screenshot {width}x{height}, mean RGB by quadrant: {described}")
    for half in ("top", "bottom"):
        # Grayscale: the right half (200) is brighter than the left (50) under either label.
        left, right = quadrants["left", half], quadrants["right", half]
        assert right.sum() > left.sum() + 90, described
    for side in ("left", "right"):
        # Labels: red over the top label, blue over the bottom one.
        top, bottom = quadrants[side, "top"], quadrants[side, "bottom"]
        assert top[0] > top[2] + 60 and bottom[2] > bottom[0] + 60, described
        assert np.abs(top - bottom).max() > 60, described
