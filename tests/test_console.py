"""The web console (issue 19) in Debian's headless chromium, driven by playwright.

One ``dvid-cloud serve`` process and one browser serve the whole module (the auth test runs
a second server with auth on). The data is written before the server starts: a repo
``alpha`` whose DAG has three levels, a branch and a merge, with a ``grayscale`` uint8blk,
a ``segmentation`` labelmap and a keyvalue ``kv``; an empty ``beta``; and ``big``, 1,000
versions built straight through the catalog (through the API it takes a minute). Every
test opens its own page.

Skipped only when chromium (or the Python packages) are missing outside CI; with ``CI``
set a missing chromium fails (as tests/test_neuroglancer.py).
"""

from __future__ import annotations

import io
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.dag import MASTER, Node
from app.repo import new_repo, new_uuid
from app.server import create_app
from app.services import Services
from app.settings import Settings
from tests import live_http as live
from tests.neuroglancer_support import (
    CHROMIUM_ARGS,
    ServerLog,
    dvid_server,
    free_port,
    wait_for,
)
from tests.test_neuroglancer import requirements

SECRET = "console-test-secret-of-at-least-32-bytes"
LOCKED_RGB = (0x1F, 0x4F, 0xD8)  # console.css: .node.locked
OPEN_RGB = (0x1F, 0xB8, 0x4F)  # .node.open
BIG = 1000


@dataclass
class Alpha:
    """The UUIDs of repo alpha: a -> b (master), a -> c (branch side), b + c -> d."""

    a: str
    b: str
    c: str
    d: str


@dataclass
class Site:
    url: str
    log: ServerLog
    alpha: Alpha
    beta: str
    big: str
    browser: Any


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, (response.request.url, response.text)
    return response.json() if response.content else None


def build_alpha(c: TestClient) -> Alpha:
    a = ok(c.post("/api/repos", json={"alias": "alpha", "description": "the first repo"}))["root"]
    for typename, name in (("uint8blk", "grayscale"), ("labelmap", "segmentation")):
        body = {
            "typename": typename,
            "dataname": name,
            "BlockSize": "64,64,64",
            "VoxelSize": "8,8,8",
        }
        ok(c.post(f"/api/repo/{a}/instance", json=body))
    ok(c.post(f"/api/repo/{a}/instance", json={"typename": "keyvalue", "dataname": "kv"}))
    gray = np.fromfunction(lambda z, y, x: (x * 2) % 256, (64, 64, 64)).astype(np.uint8)
    ok(c.post(f"/api/node/{a}/grayscale/raw/0_1_2/64_64_64/0_0_0", content=gray.tobytes()))
    labels = np.full((64, 64, 64), 7, "<u8")
    ok(c.post(f"/api/node/{a}/segmentation/raw/0_1_2/64_64_64/0_0_0", content=labels.tobytes()))
    ok(c.post(f"/api/node/{a}/note", json={"note": "the root note"}))
    ok(c.post(f"/api/node/{a}/log", json={"log": ["first log line"]}))
    ok(c.post(f"/api/node/{a}/commit", json={"note": "root commit"}))
    b = ok(c.post(f"/api/node/{a}/newversion", json={}))["child"]
    ok(c.post(f"/api/node/{b}/kv/key/k1", content=b"one"))
    ok(c.post(f"/api/node/{b}/kv/key/k2", content=b"two"))
    ok(c.post(f"/api/node/{b}/grayscale/raw/0_1_2/64_64_64/64_0_0", content=gray.tobytes()))
    ok(c.post(f"/api/node/{b}/commit", json={"note": "b"}))
    side = ok(c.post(f"/api/node/{a}/branch", json={"branch": "side"}))["child"]
    ok(c.post(f"/api/node/{side}/kv/key/k3", content=b"three"))
    ok(c.post(f"/api/node/{side}/commit", json={"note": "c"}))
    body = {"mergeType": "conflict-free", "parents": [b, side], "note": "merged"}
    d = ok(c.post(f"/api/repo/{a}/merge", json=body))["child"]
    return Alpha(a, b, side, d)


def build_big(settings: Settings, n: int) -> str:
    """A repo of ``n`` versions, written as one catalog entry: a master line with a
    locked side branch of three versions off every 20th node, merged back two later."""
    svc = Services.from_settings(settings)
    try:
        root = new_uuid()
        repo = new_repo(root, svc.catalog.next_version_id(), "big", "1,000 versions")
        dag = repo.dag
        master = [dag.root]
        branches = 0
        while len(dag.by_uuid) < n:
            parent = master[-1]
            parent.locked = True
            if len(master) % 20 == 0 and len(dag.by_uuid) + 5 <= n:
                branches += 1
                prev = parent
                for _ in range(3):
                    node = Node(
                        new_uuid(),
                        svc.catalog.next_version_id(),
                        branch=f"side{branches}",
                        locked=True,
                        parents=[prev.version_id],
                    )
                    prev.children.append(node.version_id)
                    dag.add(node)
                    prev = node
                mid = Node(
                    new_uuid(),
                    svc.catalog.next_version_id(),
                    locked=True,
                    parents=[parent.version_id],
                )
                parent.children.append(mid.version_id)
                dag.add(mid)
                merge = Node(
                    new_uuid(),
                    svc.catalog.next_version_id(),
                    parents=[mid.version_id, prev.version_id],
                )
                mid.children.append(merge.version_id)
                prev.children.append(merge.version_id)
                dag.add(merge)
                master += [mid, merge]
                continue
            node = Node(new_uuid(), svc.catalog.next_version_id(), parents=[parent.version_id])
            parent.children.append(node.version_id)
            dag.add(node)
            master.append(node)
        master[-1].locked = False
        svc.catalog.create(repo)
        return root
    finally:
        svc.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium, _ = requirements()
    from playwright.sync_api import sync_playwright

    data = tmp_path_factory.mktemp("console") / "data"
    settings = Settings(data_dir=data)
    with TestClient(create_app(settings)) as c:
        alpha = build_alpha(c)
        beta = ok(c.post("/api/repos", json={"alias": "beta", "description": "empty"}))["root"]
    big = build_big(settings, BIG)
    with (
        dvid_server(data, free_port()) as (url, log),
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield Site(url, log, alpha, beta, big, browser)
        finally:
            browser.close()


@pytest.fixture
def page(site: Site) -> Iterator[Any]:
    context = site.browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


def open_console(page: Any, url: str, hash_: str = "") -> None:
    page.goto(f"{url}/{hash_}", timeout=30_000)
    page.wait_for_function("() => document.body.dataset.ready", timeout=15_000)
    assert page.evaluate("document.body.dataset.ready") == "true", page.inner_text("#error")


def click_node(page: Any, uuid: str) -> None:
    page.click(f'#dag .node[data-uuid="{uuid}"]')
    page.wait_for_selector(f'#node-panel[data-uuid="{uuid}"]:not([hidden])')


def test_root_serves_the_console_and_lists_repos(site: Site, page: Any) -> None:
    response = live.get(f"{site.url}/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/console/"
    open_console(page, site.url)
    rows = page.eval_on_selector_all(
        "#repo-table tbody tr",
        "rows => rows.map(r => [r.dataset.root, r.querySelector('.alias').textContent,"
        " r.querySelector('.description').textContent, r.querySelector('.created').textContent,"
        " r.querySelector('.updated').textContent])",
    )
    info = ok(live.get(f"{site.url}/api/repos/info"))
    assert {r[0] for r in rows} == {site.alpha.a, site.beta, site.big}
    for root, alias, description, created, updated in rows:
        assert (alias, description) == (info[root]["Alias"], info[root]["Description"])
        assert (created, updated) == (info[root]["Created"], info[root]["Updated"])
        assert created and updated
    page.click(f'#repo-table tr[data-root="{site.beta}"]')
    page.wait_for_selector("#dag .node")
    assert page.inner_text("#repo-title").startswith("beta")


def centre(page: Any, selector: str) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_dag_with_branch_and_merge(site: Site, page: Any) -> None:
    al = site.alpha
    open_console(page, site.url, f"#repo={al.a}")
    page.wait_for_selector("#dag .node")
    nodes = page.eval_on_selector_all(
        "#dag .node", "cs => cs.map(c => [c.dataset.uuid, c.classList.contains('locked')])"
    )
    assert dict(nodes) == {al.a: True, al.b: True, al.c: True, al.d: False}
    edges = page.eval_on_selector_all(
        "#dag .edge", "ls => ls.map(l => [l.dataset.from, l.dataset.to])"
    )
    assert sorted(map(tuple, edges)) == sorted(
        [(al.a, al.b), (al.a, al.c), (al.b, al.d), (al.c, al.d)]
    )
    labels = page.text_content("#dag")
    assert "master" in labels and "side" in labels

    # Drawn where they belong: three rows, the branch beside master, the merge below both.
    pos = {u: centre(page, f'#dag .node[data-uuid="{u}"]') for u in (al.a, al.b, al.c, al.d)}
    assert pos[al.a][1] < pos[al.b][1] == pos[al.c][1] < pos[al.d][1]
    assert pos[al.b][0] != pos[al.c][0]

    from PIL import Image

    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    for uuid, locked in nodes:
        x, y = (round(v) for v in pos[uuid])
        colour = shot[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0)
        want = LOCKED_RGB if locked else OPEN_RGB
        assert np.abs(colour - want).max() < 30, (uuid, colour, want)
    for parent, child in edges:
        (x0, y0), (x1, y1) = pos[parent], pos[child]
        x, y = round((x0 + x1) / 2), round((y0 + y1) / 2)
        darkest = shot[y - 2 : y + 3, x - 2 : x + 3].sum(axis=2).min()
        assert darkest < 150, (parent, child, darkest)  # the black edge line is there
    # ...and not just anywhere: the gap between b's label and c is white.
    x, y = round(pos[al.b][0] + 0.75 * (pos[al.c][0] - pos[al.b][0])), round(pos[al.b][1])
    assert shot[y, x].min() > 200


def test_node_panel(site: Site, page: Any) -> None:
    al = site.alpha
    open_console(page, site.url, f"#repo={al.a}")
    click_node(page, al.a)
    panel = page.locator("#node-panel")
    assert panel.locator(".note").inner_text() == "root commit"
    assert "first log line" in panel.locator(".log").inner_text()
    assert "locked" in panel.locator(".state").inner_text()
    rows = page.eval_on_selector_all(
        "#node-panel tr.instance",
        "rs => rs.map(r => [r.dataset.name, r.querySelector('.type').textContent,"
        " r.querySelector('.extents').textContent, !!r.querySelector('a.neuroglancer')])",
    )
    assert sorted(map(tuple, rows)) == [
        ("grayscale", "uint8blk", "0,0,0..63,63,63", True),
        ("kv", "keyvalue", "", False),
        ("segmentation", "labelmap", "0,0,0..63,63,63", True),
    ]
    click_node(page, al.b)  # extents are the node's own: b wrote a second block
    extents = panel.locator('tr.instance[data-name="grayscale"] .extents').inner_text()
    assert extents == "0,0,0..127,63,63"


def test_neuroglancer_link_loads_the_layer(site: Site, page: Any) -> None:
    al = site.alpha
    open_console(page, site.url, f"#repo={al.b}")
    click_node(page, al.b)
    href = page.get_attribute('tr.instance[data-name="grayscale"] a.neuroglancer', "href")
    assert href.startswith("/neuroglancer/v/console/#!")
    state = json.loads(urllib.parse.unquote(href.split("#!", 1)[1]))
    layer = state["layers"][0]
    assert layer["source"] == f"dvid://{site.url}/{al.b}/grayscale"
    assert state["dimensions"]["x"] == [8e-9, "m"]
    assert state["position"] == [64, 32, 32]  # the middle of 0..127, 0..63, 0..63
    before = len(site.log.requests())
    page.goto(f"{site.url}{href}", timeout=30_000)
    page.wait_for_function(
        "() => window.viewer !== undefined && window.viewer.isReady()", timeout=30_000
    )
    prefix = f"/api/node/{al.b}/grayscale/"

    def chunks() -> list[dict[str, Any]]:
        return [
            e
            for e in site.log.requests()[before:]
            if e["path"].startswith(prefix)
            and ("/raw/" in e["path"] or "subvolblocks" in e["path"])
        ]

    wait_for(chunks, 15, "grayscale chunk requests from the viewer")
    assert all(e["status"] == 200 for e in chunks()), chunks()


def test_commit_branch_note_tag_from_the_console(site: Site, page: Any) -> None:
    root = ok(live.post(f"{site.url}/api/repos", json={"alias": "gamma"}))["root"]
    open_console(page, site.url, f"#repo={root}")
    click_node(page, root)
    page.fill(".action-commit input", "committed from the console")
    page.click(".action-commit button")
    wait_for(lambda: ok(live.get(f"{site.url}/api/node/{root}/commit"))["Locked"], 10, "the commit")
    assert ok(live.get(f"{site.url}/api/node/{root}/note"))["note"] == (
        "committed from the console"
    )
    # The DAG is redrawn with the node locked, and a locked node offers a branch instead.
    page.wait_for_selector(f'#dag .node.locked[data-uuid="{root}"]')
    page.wait_for_selector(".action-branch")
    page.fill(".action-branch input", "console-branch")
    page.click(".action-branch button")
    page.wait_for_function("() => document.querySelectorAll('#dag .node').length === 2")
    nodes = ok(live.get(f"{site.url}/api/repo/{root}/info"))["DAG"]["Nodes"]
    assert sorted(n["Branch"] for n in nodes.values()) == sorted([MASTER, "console-branch"])
    # The new branch's version is shown, open: give it a note.
    (child,) = (u for u, n in nodes.items() if n["Branch"] == "console-branch")
    page.wait_for_selector(f'#node-panel[data-uuid="{child}"] .action-note')
    page.fill(".action-note input", "noted in the console")
    page.click(".action-note button")
    wait_for(
        lambda: ok(live.get(f"{site.url}/api/node/{child}/note"))["note"] == "noted in the console",
        10,
        "the note",
    )
    # A tag of the committed root: a locked child named by the tag.
    click_node(page, root)
    page.fill(".action-tag input", "console-tag")
    page.click(".action-tag button")
    page.wait_for_function("() => document.querySelectorAll('#dag .node').length === 3")
    assert ok(live.get(f"{site.url}/api/node/console-tag/commit"))["Locked"] is True


def test_diff_view(site: Site, page: Any) -> None:
    al = site.alpha
    open_console(page, site.url, f"#repo={al.a}")
    click_node(page, al.a)
    page.click("button.diff-from")
    click_node(page, al.b)
    page.click("button.diff-to")
    page.wait_for_selector("#diff-panel table.diff")
    rows = page.eval_on_selector_all(
        "#diff-panel tr.changed",
        "rs => rs.map(r => [...r.children].map(td => td.textContent))",
    )
    got = {r[0]: r[1:] for r in rows}
    diff = ok(live.get(f"{site.url}/api/repo/{al.a}/diff/{al.a}/{al.b}"))
    assert set(got) == set(diff["instances"]) == {"kv", "grayscale"}
    # Type, keys added/changed/deleted, blocks, labels, mutations.
    assert got["kv"] == ["keyvalue", "2", "0", "0", "0", "0", "0"]
    assert got["grayscale"] == ["uint8blk", "0", "0", "0", "1", "0", "0"]
    href = page.get_attribute("#diff-panel a.diff-list", "href")
    assert href == f"/api/repo/{al.a}/diff/{al.a}/{al.b}"


def test_thousand_node_dag_is_drawn_whole(site: Site, page: Any) -> None:
    """A 1,000-version DAG is drawn whole. The issue's bound (drawn in under a second) is
    measured in the page with performance.now(), from before the SVG is built to the next
    painted frame (the fetch of the repo's JSON is not drawing), and printed, not
    asserted: tests never assert timings; the figure goes in the closing note."""
    open_console(page, site.url, f"#repo={site.big}")
    page.wait_for_function("() => window.consoleDrawMs !== undefined")
    assert page.eval_on_selector_all("#dag .node", "cs => cs.length") == BIG
    merges = page.eval_on_selector_all("#dag .edge", "ls => ls.length")
    assert merges > BIG - 1  # a tree has BIG - 1 edges; the merges add more
    draw_ms = page.evaluate("window.consoleDrawMs")
    print(
        f"1,000-node DAG: drawn in {draw_ms:.0f} ms, "
        f"page ready {page.evaluate('window.consoleDrawnAt'):.0f} ms after navigation"
    )


def bearer(user: str, repos: dict[str, str]) -> str:
    claims = {"sub": user, "exp": int(time.time()) + 600, "dvid": {"admin": False, "repos": repos}}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_auth_sends_the_token_and_hides_writes(site: Site, tmp_path: Path) -> None:
    """With auth on: the console's files need no token, every API request carries the one the
    user gave, and a reader sees the DAG and the node panel without the write controls that a
    writer of the same repo gets."""
    config = tmp_path / "dvid.toml"
    config.write_text(
        f'[server]\nauth_required = true\nauth_jwt_key = "{SECRET}"\nadmin_token = "adm"\n'
    )
    with dvid_server(tmp_path / "data", free_port(), config) as (url, _):
        created = live.post(f"{url}/api/repos?admintoken=adm", json={"alias": "guarded"})
        root = ok(created)["root"]
        assert live.get(f"{url}/console/").status_code == 200
        assert live.get(f"{url}/api/repos/info").status_code == 401
        reader, writer = bearer("reader", {root: "read"}), bearer("writer", {root: "write"})
        me = ok(live.get(f"{url}/api/server/whoami", headers={"Authorization": f"Bearer {reader}"}))
        assert me == {
            "auth": True,
            "user": "reader",
            "admin": False,
            "everywhere": "none",
            "repos": {root: "read"},
        }
        bad = live.get(f"{url}/api/server/whoami", headers={"Authorization": "Bearer a.b.c"})
        assert bad.status_code == 401

        check_console_as(site.browser, url, root, reader, "reader", may_write=False)
        check_console_as(site.browser, url, root, writer, "writer", may_write=True)


def check_console_as(
    browser: Any, url: str, root: str, token: str, user: str, may_write: bool
) -> None:
    """A fresh browser profile: the console asks for a token, then sends it on every API
    request, and offers write controls on ``root`` only to a writer."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    try:
        page = context.new_page()
        sent: list[str | None] = []
        page.on(
            "request",
            lambda r: (
                sent.append(r.headers.get("authorization"))
                if r.url.startswith(f"{url}/api/")
                else None
            ),
        )
        page.goto(f"{url}/#repo={root}", timeout=30_000)
        page.wait_for_function("() => document.body.dataset.ready", timeout=15_000)
        assert "needs a bearer token" in page.inner_text("#error")
        page.fill("#token", token)
        page.click("#login button")
        page.wait_for_selector(f'#dag .node[data-uuid="{root}"]', timeout=15_000)
        assert page.inner_text("#who") == f"user: {user}"
        click_node(page, root)
        assert page.locator("#node-panel .actions").count() == int(may_write)
        assert page.locator("#node-panel .action-commit").count() == int(may_write)
        # Every API request since the token was given carried it.
        assert f"Bearer {token}" in sent
        assert set(sent[sent.index(f"Bearer {token}") :]) == {f"Bearer {token}"}
    finally:
        context.close()


def test_configured_viewer_replaces_the_packaged_one(tmp_path: Path) -> None:
    """With ``neuroglancer_url`` set the console links there and the server does not serve
    the packaged client; without auth, whoami says everyone may do everything."""
    viewer = "https://viewer.example/"
    with TestClient(create_app(Settings(data_dir=tmp_path, neuroglancer_url=viewer))) as c:
        assert ok(c.get("/console/config.json")) == {"neuroglancer": viewer}
        assert c.get("/neuroglancer/v/console/").status_code == 400
        assert ok(c.get("/api/server/whoami"))["everywhere"] == "admin"
    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        assert ok(c.get("/console/config.json")) == {"neuroglancer": "/neuroglancer/v/console/"}
        assert "neuroglancer" in c.get("/neuroglancer/v/console/").text.lower()
