"""The shared base of volume datatypes (imageblk family, labelmap): DVID's volume
settings, one versioned chunk array per scale, per-version extents, the ``Extended`` JSON
neuroglancer reads, and how the volume shows as a neuroglancer precomputed volume."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.dag import Node
from app.datatypes.base import Data
from app.diff import MergeSides, chunk_conflicts, chunk_diff
from app.errors import BadRequest
from app.storage.keyed import VersionedKeys
from app.volumes import images, keys
from app.volumes.arrays import VersionedVolume, VolumeSpec, Voxels, chunk_object, codecs_for
from app.volumes.geometry import Box, Vec, pack, unpack
from app.volumes.ownership import ChunkOwnership
from app.volumes.proxy import ProxyVolume, describe_remote, level_box, parse_proxy

if TYPE_CHECKING:
    from app.services import Services


#: A whole block: its block coordinates (x, y, z) and its ZYX voxels.
Block = tuple[Vec, np.ndarray]


@dataclass(frozen=True)
class Layout:
    """How a volume's voxels show as precomputed: ``type``, ``data_type``, channels and
    chunk encoding."""

    type: str
    data_type: str
    num_channels: int
    encoding: str


def _floats(value: str, name: str) -> list[float]:
    try:
        parts = [float(p) for p in value.split(",")]
    except ValueError:
        raise BadRequest(f"setting {name!r} must be numbers separated by commas") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise BadRequest(f"setting {name!r} must be 1 or 3 positive numbers")
    return parts


def _ints(value: str, name: str, positive: bool = False) -> list[int]:
    try:
        parts = [int(p) for p in value.split(",")]
    except ValueError:
        raise BadRequest(f"setting {name!r} must be integers separated by commas") from None
    if len(parts) == 1 and positive:
        parts *= 3
    if len(parts) != 3 or (positive and any(p <= 0 for p in parts)):
        raise BadRequest(f"setting {name!r} must be 3 {'positive ' if positive else ''}integers")
    return parts


class VolumeData(Data):
    """An instance whose voxels live in versioned chunk arrays, one per scale."""

    #: Voxel type as stored (little-endian).
    dtype: ClassVar[np.dtype]
    #: ``Extended.Values``.
    values: ClassVar[list[dict[str, str]]]
    default_block_size: ClassVar[str] = "32,32,32"
    interpolable: ClassVar[bool] = True
    transactional: ClassVar[bool] = True
    immutable_reads = frozenset(
        {"raw", "isotropic", "subvolblocks", "specificblocks", "blocks", "precomputed", "label"}
    )
    #: The reads of :attr:`immutable_reads` that read nothing but this instance (the
    #: precomputed pyramid reads other instances' levels): kept at open versions too.
    open_kept_reads = immutable_reads - {"precomputed"}
    #: The journal's settled stamp at an open version, once :meth:`prepare_read` saw one.
    settled: str | None = None

    @classmethod
    def routes(cls) -> APIRouter:
        """The shared volume endpoints plus the type's own (:meth:`own_routes`)."""
        from app.volumes.routes import router as shared

        router = APIRouter()  # the routes, not included routers (see InstanceDispatcher.app_for)
        router.routes.extend(shared.routes)
        router.routes.extend(cls.own_routes().routes)
        return router

    @classmethod
    def own_routes(cls) -> APIRouter:
        raise NotImplementedError

    @classmethod
    def parse_volume_settings(cls, config: dict[str, str]) -> dict:
        """BlockSize, VoxelSize, VoxelUnits, MaxDownresLevel and initial extents."""
        block_size = _ints(config.get("blocksize", cls.default_block_size), "BlockSize", True)
        voxel_size = _floats(config.get("voxelsize", "8,8,8"), "VoxelSize")
        units = [u.strip() for u in config.get("voxelunits", "nanometers").split(",")]
        if len(units) == 1:
            units *= 3
        if len(units) != 3:
            raise BadRequest("setting 'VoxelUnits' must be 1 or 3 names")
        try:
            max_level = int(config.get("maxdownreslevel", "0") or 0)
        except ValueError:
            raise BadRequest("setting 'MaxDownresLevel' must be an integer") from None
        if not 0 <= max_level <= 255:
            raise BadRequest("setting 'MaxDownresLevel' must be 0 to 255")
        settings = {
            "BlockSize": block_size,
            "VoxelSize": voxel_size,
            "VoxelUnits": units,
            "Background": 0,
            "MaxDownresLevel": max_level,
        }
        for key in ("MinPoint", "MaxPoint"):
            if key.lower() in config:
                settings[key] = _ints(config[key.lower()], key)
        if "proxy" in config:
            settings["Proxy"] = parse_proxy(config["proxy"])
        return settings

    @classmethod
    def complete_settings(cls, services: Services, settings: dict) -> dict:
        """A proxy instance takes its voxel size, extents and scales from the remote."""
        if "Proxy" not in settings:
            return settings
        proxy = describe_remote(services, settings["Proxy"]["URL"], cls.dtype, cls.typename)
        base = proxy["Levels"][0]
        extent = level_box(proxy, 0)
        return {
            **settings,
            "Proxy": proxy,
            "VoxelSize": base["VoxelSize"],
            "VoxelUnits": [proxy["VoxelUnit"]] * 3,
            "MinPoint": list(extent.offset),
            "MaxPoint": [e - 1 for e in extent.end],
            "MaxDownresLevel": len(proxy["Levels"]) - 1,
        }

    @property
    def proxy(self) -> dict[str, Any] | None:
        """The remote this instance reads (``URL``, ``Levels``...), if it is a proxy."""
        return self.settings.get("Proxy")

    # --- storage -------------------------------------------------------------------------

    @property
    def block_size(self) -> Vec:
        bx, by, bz = self.settings["BlockSize"]
        return int(bx), int(by), int(bz)

    @property
    def max_level(self) -> int:
        """``MaxDownresLevel``: the lowest scale the instance keeps."""
        return int(self.settings.get("MaxDownresLevel", 0) or 0)

    def spec(self) -> VolumeSpec:
        return VolumeSpec(
            self.dtype,
            self.block_size,
            self.settings["Background"],
            codecs_for(self.instance.compression),
        )

    def volume(self, scale: int = 0) -> Voxels:
        """The voxels at ``scale`` as seen from the bound version: the instance's chunk
        array, or for a proxy the remote's level ``scale``."""
        if self.proxy is not None:
            return self._proxy_volume(self.proxy, scale)
        base = keys.chunk_array(self.root, scale)
        return VersionedVolume(
            self.store, base, self.spec(), self.ownership(scale), self.services.arrays, self.txn
        )

    def ownership(self, scale: int = 0) -> ChunkOwnership:
        """Which version wrote which chunk at ``scale``, as seen from the bound version."""
        base = keys.chunk_array(self.root, scale)
        # A transaction reads what it holds the lock over, not what a stamp read before.
        settled = self.settled if self.txn is None else None
        cache = self.services.bitmap_cache
        return ChunkOwnership(self.store, base, cache, self.at, settled=settled)

    # --- diffs and merge conflicts (app.diff) ----------------------------------------------

    def diff(self, other: Self) -> dict[str, Any] | None:
        """Scale-0 block coordinates whose chunk comes from other versions at ``other``'s
        version (bitmaps only; a proxy's remote never differs between versions)."""
        if self.proxy is not None:
            return None
        ids = chunk_diff(self.ownership(), other.ownership())
        return {"blocks": unpack(ids).tolist()} if ids.size else None

    def merge_conflicts(self, merge: MergeSides) -> dict[str, Any] | None:
        """Scale-0 blocks whose stored chunks differ on two or more sides (``blocks``),
        and those of lower scales (``scales``: scale -> blocks), which conflict on their
        own where the sides wrote different blocks under one lower-scale chunk."""
        if self.proxy is not None:
            return None
        found: dict[str, Any] = {}
        ids = self.conflicting_chunks(merge)
        if ids.size:
            found["blocks"] = unpack(ids).tolist()
        for scale in range(1, self.max_level + 1):
            ids = self.conflicting_chunks(merge, scale)
            if ids.size:
                found.setdefault("scales", {})[str(scale)] = unpack(ids).tolist()
        return found or None

    def conflicting_chunks(self, merge: MergeSides, scale: int = 0) -> np.ndarray:
        """Chunk ids at ``scale`` a merge would conflict on (stored chunk bytes compared)."""
        base = keys.chunk_array(self.root, scale)
        bz, by, bx = reversed(self.block_size)
        oz, oy, ox = self.spec().offsets()
        first = (oz // bz, oy // by, ox // bx)

        def read(node: Node, chunk: int) -> bytes | None:
            x, y, z = (int(v) for v in unpack(np.array([chunk], dtype=np.uint64))[0])
            index = (z + first[0], y + first[1], x + first[2])
            return chunk_object(self.store, base, node.uuid, index)

        return chunk_conflicts(
            [self.at_node(parent).ownership(scale) for parent in merge.parents],
            [self.at_node(node).ownership(scale) for node in merge.bases],
            merge,
            read,
        )

    def _proxy_volume(self, proxy: dict[str, Any], scale: int) -> ProxyVolume:
        levels = len(proxy["Levels"])
        if not 0 <= scale < levels:
            raise BadRequest(f"scale {scale} is outside 0..{levels - 1} of {proxy['URL']}")
        remotes = self.services.remotes
        return ProxyVolume(
            remotes.open(proxy["URL"]),
            scale,
            level_box(proxy, scale),
            self.block_size,
            self.dtype,
            remotes.cache,
            remotes.pool,
        )

    def answers_immutable(self, route: str) -> bool:
        """A proxy's remote is immutable: its reads are fixed at every version. The
        precomputed ``info`` is not: pyramid instances (repo-wide) may still be added."""
        if route == "precomputed/info":
            return False
        if self.proxy is not None:
            return route.split("/", 1)[0] in self.immutable_reads
        return super().answers_immutable(route)

    def require_writable(self) -> None:
        if self.proxy is not None:
            raise BadRequest(
                f"instance {self.name!r} is a read-only proxy of {self.proxy['URL']}: "
                "writes are refused"
            )
        super().require_writable()

    def prepares_reads(self) -> bool:
        return self.proxy is None and self.mutable

    def prepare_read(self) -> None:
        """A proxy has no transactions or synced events to settle. An open version
        without syncs settles its journal and notes its stamp (:meth:`open_answers_key`);
        with syncs, applying their events after the journal was read would make the stamp
        stale, so none is noted."""
        if self.proxy is not None:
            return
        if self.mutable and not self.instance.syncs:
            self.settled = self.journal().recover()
            return
        super().prepare_read()

    def open_answers_key(self, route: str) -> str | None:
        """Reads of :attr:`open_kept_reads` at an open version follow from the instance's
        settings and what its journal published at the version (its settled stamp) over
        locked, unchanging ancestors; so the answer may be kept under those until the
        next write there, on whichever replica it lands."""
        if self.settled is None or route.split("/", 1)[0] not in self.open_kept_reads:
            return None
        settings = orjson.dumps(self.settings, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2b(settings, digest_size=8).hexdigest()
        return f"{self.instance.data_uuid}/{self.version.uuid}/{self.settled}/{digest}"

    def write(self, box: Box, data: np.ndarray) -> None:
        """Write ``data`` (ZYX, shaped like ``box``) at scale 0 and grow the extents: every
        image voxel write goes through here."""
        volume = self.volume()
        volume.write(box, data)
        self.grow_extents(box)
        self.event("mutate-blocks", Scale=0, Blocks=volume.grid.blocks(box).tolist())

    def publish_staged(self, box: Box) -> None:
        """Inside a transaction given a prestaged stage holding the whole scale-0 blocks
        of the block-aligned ``box``: adopt them, and do what :meth:`write` does besides
        encoding."""
        volume = self.volume()
        if not isinstance(volume, VersionedVolume):
            raise TypeError(f"{type(volume).__name__} has no stage to adopt")
        volume.adopt_staged()
        self.grow_extents(box)
        self.event("mutate-blocks", Scale=0, Blocks=volume.grid.blocks(box).tolist())

    def can_stage_body(self) -> bool:
        """Whether :meth:`receive_staged` can stage a body as it arrives: inside a
        transaction, on a versioned chunk array (not a proxy)."""
        return self.txn is not None and self.proxy is None

    async def receive_staged(self, request: Request, box: Box) -> list[Block]:
        """The whole scale-0 blocks of the block-aligned ``box`` from the request body
        (ZYX voxels of :attr:`dtype`, uncompressed), in :meth:`BlockGrid.iter_blocks`
        order and as views into the received body, each already encoded into the
        running transaction's stage: to be adopted with
        :meth:`VersionedVolume.adopt_staged` (:meth:`publish_staged`). A body of another
        length is a 400.

        A large body comes in 64 KiB pieces (a 256³ uint64 body is a third of its
        request's time), z-plane by z-plane: each z-slab of blocks is complete long
        before the body is, so it is written into the stage (tensorstore encodes its
        chunks in parallel) on a worker thread while the next slab arrives. Staging in
        flight finishes before any error is raised, so a refused transaction discards
        a stage that nothing writes to any more."""
        volume = self.volume()
        txn = self.txn
        if txn is None or not isinstance(volume, VersionedVolume):
            raise TypeError("staging a body needs a transaction on a versioned array")
        grid, itemsize = volume.grid, self.dtype.itemsize
        nbytes = box.voxels * itemsize
        (x0, y0, z0), (nx, ny, nz) = box.offset, box.size
        bz = grid.block_size[2]
        slab_bytes = bz * ny * nx * itemsize
        # Not a bytearray: it would be zeroed first, a pass over the whole body (134 MB
        # for 256³ uint64) holding the GIL, which stalls the event loop receiving it. A
        # kept buffer is faster still: its pages are already in place (app/buffers.py).
        buffer = self.services.buffers.take(nbytes)
        view = buffer.data
        voxels = buffer.view(self.dtype).reshape(nz, ny, nx)
        array = await run_in_threadpool(volume.staging_array, txn.stage)

        def stage_slab(k: int) -> None:
            slab = Box((x0, y0, z0 + k * bz), (nx, ny, bz))
            volume.stage_box(array, slab, voxels[k * bz : (k + 1) * bz])

        loop = asyncio.get_running_loop()
        staging: list[asyncio.Future[None]] = []
        received = 0
        try:
            async for piece in request.stream():
                end = received + len(piece)
                if end > nbytes:
                    raise BadRequest(f"body has more than the {nbytes} bytes of {box.size} voxels")
                view[received:end] = piece
                received = end
                while (len(staging) + 1) * slab_bytes <= received:
                    staging.append(loop.run_in_executor(None, stage_slab, len(staging)))
        finally:
            done = await asyncio.gather(*staging, return_exceptions=True)
        if received != nbytes:
            raise BadRequest(
                f"body has {received} bytes but {box.size} {self.dtype.name} voxels need {nbytes}"
            )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        coords = grid.blocks(box)
        volume.prestaged(txn.stage, pack(coords))
        return [
            ((int(x), int(y), int(z)), voxels[grid.block_box((x, y, z)).slices_in(box)])
            for x, y, z in coords.tolist()
        ]

    def _extents_keys(self) -> VersionedKeys:
        return VersionedKeys(
            self.store,
            keys.extents(self.root),
            self.services.index_cache,
            self.services.value_cache,
        )

    def seal(self) -> None:
        self._extents_keys().seal(self.node.uuid)

    # --- extents -------------------------------------------------------------------------

    def extents(self) -> Box | None:
        """The voxel bounding box of everything written at the bound version (at a merge,
        the union of what the parents saw); for a proxy, the remote's scale 0."""
        if self.proxy is not None:
            return level_box(self.proxy, 0)
        view = self.at.view(self._extents_keys())
        boxes = [_parse_extents(record) for record in view.values("extents")]
        settings = self.settings
        if not boxes and "MinPoint" in settings and "MaxPoint" in settings:
            boxes = [_bounds(settings["MinPoint"], settings["MaxPoint"])]
        if not boxes:
            return None
        union = boxes[0]
        for box in boxes[1:]:
            union = union.union(box)
        return union

    def set_extents(self, box: Box) -> None:
        lo = ",".join(str(v) for v in box.offset)
        hi = ",".join(str(e - 1) for e in box.end)
        self._extents_keys().write(self.version.uuid, "extents", f"{lo};{hi}".encode())

    def grow_extents(self, box: Box) -> None:
        current = self.extents()
        grown = box if current is None else current.union(box)
        if grown != current:
            self.set_extents(grown)

    def extended_json(self) -> dict:
        s = self.settings
        extents = self.extents()
        block = s["BlockSize"]
        min_point = list(extents.offset) if extents else None
        max_point = [e - 1 for e in extents.end] if extents else None
        return {
            "Values": self.values,
            "Interpolable": self.interpolable,
            "BlockSize": block,
            "VoxelSize": s["VoxelSize"],
            "VoxelUnits": s["VoxelUnits"],
            "MinPoint": min_point,
            "MaxPoint": max_point,
            "MinIndex": [p // b for p, b in zip(min_point, block, strict=True)]
            if min_point
            else None,
            "MaxIndex": [p // b for p, b in zip(max_point, block, strict=True)]
            if max_point
            else None,
            "Background": s["Background"],
            "GridStore": "",
            "ScaleLevel": 0,
            "MaxDownresLevel": s.get("MaxDownresLevel", 0),
        }

    def extra_json(self) -> dict:
        extended = self.extended_json()
        return {"Extents": {"MinPoint": extended["MinPoint"], "MaxPoint": extended["MaxPoint"]}}

    # --- as an image source (app.datatypes.capabilities.ImageSource) ----------------------

    def image_extents(self) -> tuple[Vec, Vec] | None:
        box = self.extents()
        return None if box is None else (box.offset, box.size)

    def image_voxel_size(self) -> tuple[float, float, float]:
        x, y, z = (float(v) for v in self.settings["VoxelSize"])
        return x, y, z

    def read_uint8(self, offset: Vec, size: Vec) -> np.ndarray:
        if self.dtype != np.uint8:
            raise BadRequest(
                f"instance {self.name!r} holds {self.dtype.name} voxels, not uint8 images"
            )
        return self.volume().read(Box(offset, size))

    # --- as a neuroglancer precomputed volume (app.volumes.precomputed) -------------------

    def precomputed_layout(self) -> Layout:
        """The precomputed ``type``, ``data_type``, channels and chunk encoding."""
        return Layout("image", self.dtype.name, 1, "raw")

    def encode_precomputed(self, voxels: np.ndarray, encoding: str) -> bytes:
        """One precomputed chunk of ZYX ``voxels`` read at :attr:`version`, in ``encoding``
        (that of :meth:`precomputed_layout`)."""
        if encoding == "jpeg":
            return images.jpeg_volume(np.ascontiguousarray(voxels), images.DEFAULT_JPEG_QUALITY)
        return np.ascontiguousarray(voxels, dtype=voxels.dtype.newbyteorder("<")).tobytes()

    def pyramid_source(self, level: int) -> tuple[VolumeData, int] | None:
        """Which instance and chunk-array scale hold ``level`` of the precomputed pyramid
        (None: no such level). Here only level 0: the instance itself; a proxy serves
        every level of its remote."""
        if self.proxy is not None:
            return (self, level) if level <= self.max_level else None
        return (self, 0) if level == 0 else None

    def pyramid_missing(self, level: int) -> str:
        """Why ``level`` is not in the pyramid (for the 400 answering a request of it)."""
        return f"levels are s0..s{self.max_level if self.proxy is not None else 0}"


def _bounds(lo: list[int], hi_inclusive: list[int]) -> Box:
    return Box.from_bounds(lo, (h + 1 for h in hi_inclusive))


def _parse_extents(record: bytes) -> Box:
    """``x0,y0,z0;x1,y1,z1`` (inclusive) as stored by :meth:`VolumeData.set_extents`."""
    lo, hi = ([int(v) for v in part.split(",")] for part in record.decode().split(";"))
    return _bounds(lo, hi)
