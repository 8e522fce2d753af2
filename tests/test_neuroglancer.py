"""End to end: the real neuroglancer viewer reads what a real ``dvid-cloud serve`` serves.

Debian's chromium, headless with WebGL2 through SwiftShader, runs the built neuroglancer
client that the PyPI ``neuroglancer`` package ships, driven by playwright for Python (given
the chromium binary; no browser download). The viewer shows a uint8blk ``grayscale`` (left
half dark, right half bright) under a labelmap ``segmentation`` (top half one label, bottom
half another, each given a fixed colour) through neuroglancer's ``dvid://`` datasource.
Once ``viewer.isReady()``, the test checks the server's access log (repo info, grayscale
chunks, labelmap ``googlegzip`` chunks, all 200) and the colours of the screenshot.

A second test adds keyvalue instances ``segmentation_meshes`` and ``segmentation_skeletons``
holding a box mesh (``7.ngmesh``) and an SWC skeleton (``7_swc``) for label 7, and opens a
3d view of that segment: the server must answer both GETs with 200 and the panel must show
the box and the skeleton line in the segment's colour.

Skipped only when chromium (or the Python packages) are missing outside CI; with ``CI``
set a missing chromium fails.
"""

from __future__ import annotations

import io
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests import live_http as live
from tests.neuroglancer_support import (
    BrowserRecord,
    ServerLog,
    chromium_page,
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
BOX = f"{SIZE}_{SIZE}_{SIZE}/0_0_0"  # all of it, for /raw/0_1_2/
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
    uuid = ok(live.post(f"{url}/api/repos", json={"alias": "ng"})).json()["root"]
    common = {"BlockSize": "64,64,64", "VoxelSize": "8,8,8", "VoxelUnits": "nanometers"}
    for typename, name, extra in (
        ("uint8blk", "grayscale", {}),
        ("labelmap", "segmentation", {"MaxDownresLevel": "1"}),
    ):
        body = {"typename": typename, "dataname": name, **common, **extra}
        ok(live.post(f"{url}/api/repo/{uuid}/instance", json=body))
    _, y, x = np.mgrid[0:SIZE, 0:SIZE, 0:SIZE]  # ZYX arrays: x varies fastest
    gray = np.where(x < SIZE // 2, DARK, BRIGHT).astype(np.uint8)
    labels = np.where(y < SIZE // 2, TOP, BOTTOM).astype("<u8")
    for name, data in (("grayscale", gray), ("segmentation", labels)):
        raw = f"{url}/api/node/{uuid}/{name}/raw/0_1_2/{BOX}"
        ok(live.post(raw, content=data.tobytes(), timeout=60))
        assert live.get(raw, timeout=60).content == data.tobytes(), name
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


def wait_until_loaded(
    page: Any,
    record: BrowserRecord,
    log: ServerLog,
    before: int,
    uuid: str,
    arrived: Callable[[list[dict[str, Any]]], bool],
    what: str,
) -> None:
    """Wait for ``viewer.isReady()``, then for ``arrived(access log entries since before)``,
    then until the access log and the browser's responses name the same requests."""

    def context() -> str:
        served = summarize(log.requests()[before:], uuid)
        return f"\nbrowser:\n{record.said()}\nserver:\n{served}"

    try:
        page.wait_for_function(
            "() => window.viewer !== undefined && window.viewer.isReady()",
            timeout=30_000,
            polling=100,
        )
    except Exception as e:
        raise AssertionError(f"viewer never ready: {e}{context()}") from None

    # The access line is written once a response is sent.
    try:
        wait_for(lambda: arrived(log.requests()[before:]), 10, what)
    except AssertionError as e:
        raise AssertionError(f"{e}{context()}") from None

    # Every response the browser got is in the access log and nothing else is (the line is
    # written just after the response is sent, so allow it a moment). CORS preflights, if
    # any, are the browser's own and playwright does not report them.
    def browser_paths() -> set[tuple[str, str]]:
        return {(m, urllib.parse.urlsplit(u).path) for m, u, _ in record.seen}

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


def as_seen(record: BrowserRecord, url: str, uuid: str) -> str:
    return "\n".join(
        f"{status} {method} {u.removeprefix(url).replace(uuid, '<uuid>')}"
        for method, u, status in record.seen
    )


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
        before = log.count_through("GET", f"/api/node/{uuid}/segmentation/raw/0_1_2/{BOX}")
        with chromium_page(pw, chromium, url) as (page, record):
            page.goto(viewer_url(viewer_base, viewer_state(url, uuid)), timeout=30_000)
            wait_until_loaded(
                page,
                record,
                log,
                before,
                uuid,
                lambda entries: bool(
                    chunk_requests(entries, uuid, "grayscale")
                    and chunk_requests(entries, uuid, "segmentation")
                ),
                "chunk requests in the server log",
            )
            panel = page.locator(".neuroglancer-rendered-data-panel").first
            image = np.asarray(Image.open(io.BytesIO(panel.screenshot(timeout=15_000))))
    seen = record.seen

    entries = log.requests()[before:]
    summary = summarize(entries, uuid)
    print(f"\nserver requests while the viewer loaded:\n{summary}")
    print(f"as the browser saw them:\n{as_seen(record, url, uuid)}")
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


# --- meshes and skeletons ------------------------------------------------------------------
#
# neuroglancer's dvid:// datasource adds a "meshes" subsource to a label volume ``<seg>``
# when the repo has an instance ``<seg>_meshes``, and a "skeletons" subsource when it has
# ``<seg>_skeletons`` (any type; it only looks at the names in /api/repos/info). For each
# selected segment it GETs ``<seg>_meshes/key/<id>.ngmesh`` (little-endian uint32 vertex
# count, float32 xyz per vertex in nm, then uint32 triangle indices to the end) and
# ``<seg>_skeletons/key/<id>_swc`` (SWC text). The mesh subsource maps nm to voxels; the
# skeleton subsource has no transform, so SWC coordinates are taken as voxels.

MESH_COLOUR = "#00ff00"
#: The mesh: a closed box in voxels (x0, y0, z0, x1, y1, z1) inside label TOP (y < 64).
MESH_BOX = (32, 8, 32, 96, 56, 96)
#: The skeleton: a chain of points (voxels) in the same body, left of the box.
SKELETON = [(4, 40, 64), (10, 30, 64), (16, 20, 64), (16, 10, 72)]
#: Where the skeleton is drawn, in voxels (x0, y0, x1, y1), clear of the box.
SKELETON_AREA = (0, 4, 22, 46)
#: Below the box, over label BOTTOM, where nothing is drawn (x0, y0, x1, y1) in voxels.
EMPTY_AREA = (32, 72, 96, 120)
PROJECTION_SCALE = 256  # voxels spanned by the 3d panel's height (the view is along z)


def cube_ngmesh(box: tuple[int, ...], voxel_nm: float) -> bytes:
    """An 8-vertex, 12-triangle closed box in neuroglancer's DVID mesh format."""
    x0, y0, z0, x1, y1, z1 = (v * voxel_nm for v in box)
    vertices = np.array(
        [(x, y, z) for z in (z0, z1) for y in (y0, y1) for x in (x0, x1)], dtype="<f4"
    )  # vertex i has x = i & 1, y = i & 2, z = i & 4
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    triangles = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], "<u4")
    return (
        np.uint32(len(vertices)).astype("<u4").tobytes() + vertices.tobytes() + triangles.tobytes()
    )


def swc(points: list[tuple[int, int, int]]) -> str:
    """A chain: point 1 is the root, each later point's parent is the one before."""
    lines = ["# a test skeleton"]
    for i, (x, y, z) in enumerate(points, 1):
        lines.append(f"{i} 0 {x} {y} {z} 1.5 {i - 1 if i > 1 else -1}")
    return "\n".join(lines) + "\n"


def mesh_state(url: str, uuid: str) -> dict[str, Any]:
    centre = SIZE / 2
    return {
        "dimensions": {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [8e-9, "m"]},
        "position": [centre, centre, centre],
        "projectionScale": PROJECTION_SCALE,
        "layout": "3d",
        "showSlices": False,
        "showAxisLines": False,
        "showScaleBar": False,
        "showDefaultAnnotations": False,
        "layers": [
            {
                "type": "segmentation",
                "name": "segmentation",
                "source": f"dvid://{url}/{uuid}/segmentation",
                "segments": [str(TOP)],
                "segmentColors": {str(TOP): MESH_COLOUR},
            },
        ],
        "selectedLayer": {"visible": False},
    }


def key_requests(entries: list[dict[str, Any]], uuid: str, name: str) -> list[dict[str, Any]]:
    prefix = f"/api/node/{uuid}/{name}/"
    return [e for e in entries if e["path"].startswith(prefix)]


def look_3d(image: np.ndarray) -> tuple[bool, str]:
    """Whether the 3d panel shows the box mesh and the skeleton in the segment's colour,
    looking along z at the volume's centre; and what it shows."""
    height, width = image.shape[:2]
    rgb = image[:, :, :3].astype(int)
    green = (rgb[..., 1] > rgb[..., 0] + 60) & (rgb[..., 1] > rgb[..., 2] + 60)
    scale = height / PROJECTION_SCALE  # px per voxel at the centre's depth

    def area(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """The green mask over a rectangle given in voxels (x right, y down)."""
        left, right = (round(width / 2 + (x - SIZE / 2) * scale) for x in (x0, x1))
        top, bottom = (round(height / 2 + (y - SIZE / 2) * scale) for y in (y0, y1))
        return green[top:bottom, left:right]

    x0, y0, _, x1, y1, _ = MESH_BOX
    inset_x, inset_y = (x1 - x0) / 4, (y1 - y0) / 4
    inside = area(x0 + inset_x, y0 + inset_y, x1 - inset_x, y1 - inset_y)
    skeleton, empty = area(*SKELETON_AREA), area(*EMPTY_AREA)
    described = (
        f"{width}x{height}, segment-coloured px: {int(green.sum())} in all, inside the box"
        f" {inside.mean():.0%} of {inside.size}, skeleton area {int(skeleton.sum())} of"
        f" {skeleton.size}, below the box {int(empty.sum())} of {empty.size}"
    )
    assert min(inside.size, skeleton.size, empty.size) > 1000, described
    shown = (
        # The mesh: the box's middle is solid segment colour (shaded), nothing below it.
        inside.mean() > 0.95
        and not empty.any()
        # The skeleton: a line of segment colour left of the box (some 60 px long).
        and 20 < skeleton.sum() < 0.2 * skeleton.size
    )
    return bool(shown), described


@pytest.mark.timeout(120)
def test_neuroglancer_draws_mesh_and_skeleton(tmp_path: Path) -> None:
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
        mesh_path = f"/api/node/{uuid}/segmentation_meshes/key/{TOP}.ngmesh"
        skeleton_path = f"/api/node/{uuid}/segmentation_skeletons/key/{TOP}_swc"
        for path, value in (
            (mesh_path, cube_ngmesh(MESH_BOX, 8.0)),
            (skeleton_path, swc(SKELETON).encode()),
        ):
            name = path.split("/")[4]
            body = {"typename": "keyvalue", "dataname": name}
            ok(live.post(f"{url}/api/repo/{uuid}/instance", json=body))
            ok(live.post(url + path, content=value))
            assert ok(live.get(url + path)).content == value, path
        before = log.count_through("GET", skeleton_path)

        def arrived(entries: list[dict[str, Any]]) -> bool:
            return bool(
                key_requests(entries, uuid, "segmentation_meshes")
                and key_requests(entries, uuid, "segmentation_skeletons")
            )

        with chromium_page(pw, chromium, url) as (page, record):
            page.goto(viewer_url(viewer_base, mesh_state(url, uuid)), timeout=30_000)
            wait_until_loaded(
                page, record, log, before, uuid, arrived, "mesh and skeleton requests"
            )
            panel = page.locator(".neuroglancer-rendered-data-panel").first

            # Ready and loaded; allow a few more frames for the drawing, should it lag.
            shots: list[str] = []

            def drawn() -> str | None:
                image = np.asarray(Image.open(io.BytesIO(panel.screenshot(timeout=15_000))))
                Image.fromarray(image).save(tmp_path / "neuroglancer-3d.png")
                shown, described = look_3d(image)
                shots.append(described)
                return described if shown else None

            try:
                described = wait_for(drawn, 10, "the mesh and skeleton drawn", 0.5)
            except AssertionError as e:
                raise AssertionError(f"{e}: {shots[-1:]}\nbrowser:\n{record.said()}") from None

    entries = log.requests()[before:]
    summary = summarize(entries, uuid)
    print(f"\nserver requests while the viewer loaded:\n{summary}")
    print(f"as the browser saw them:\n{as_seen(record, url, uuid)}")
    print(f"screenshot {described}")
    print(f"elapsed {time.monotonic() - started:.1f} s")

    # The datasource asks for each selected segment's key-values once the repo info names
    # the two instances, and nothing else of theirs: no HEAD, no key listing.
    info = [e for e in entries if e["method"] == "GET" and e["path"] == "/api/repos/info"]
    assert info and all(e["status"] == 200 for e in info), summary
    for name, path in (
        ("segmentation_meshes", mesh_path),
        ("segmentation_skeletons", skeleton_path),
    ):
        logged = {(e["method"], e["path"], e["status"]) for e in key_requests(entries, uuid, name)}
        assert logged == {("GET", path, 200)}, summary
        urls = [u for _, u, _ in record.seen if urllib.parse.urlsplit(u).path == path]
        assert urls and all(u == f"{url}{path}?app=Neuroglancer" for u in urls), urls
    assert not [e for e in entries if e["status"] >= 400], summary
    assert record.seen and all(status == 200 for _, _, status in record.seen), record.seen
