"""Store listing, resolution and the LRU cache (with a stand-in loader: no model files needed)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from ailab_serving.model_sources import LocalSource, ModelVersion, parse_layout
from ailab_serving.model_store import (
    LoadedModel,
    ModelNotFoundError,
    ModelStore,
    build_catalog,
    parse_model_ref,
    resolve,
)
from ailab_serving.runtime import RuntimePlan

PLAN = RuntimePlan("cpu", "torch", False, 1, 1, 1, 0.0)


def test_layout() -> None:
    found = parse_layout(
        [
            "yolo.pt",
            "yolo.onnx",
            "animals/1/model.pt",
            "animals/2/best.onnx",
            "single/weights.pt",
            "notes.txt",
            ".hidden/x.pt",
            "too/deep/a/b.pt",
        ]
    )
    assert found == {
        ("yolo", "1"): {"pt": "yolo.pt", "onnx": "yolo.onnx"},
        ("animals", "1"): {"pt": "animals/1/model.pt"},
        ("animals", "2"): {"onnx": "animals/2/best.onnx"},
        ("single", "1"): {"pt": "single/weights.pt"},
    }


def test_local_source_lists_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "3").mkdir(parents=True)
    (tmp_path / "a" / "3" / "m.pt").write_bytes(b"x")
    (tmp_path / "b.onnx").write_bytes(b"x")
    listed = sorted(LocalSource(tmp_path).list(), key=lambda v: v.name)
    assert [(v.name, v.version, sorted(v.files)) for v in listed] == [
        ("a", "3", ["pt"]),
        ("b", "1", ["onnx"]),
    ]
    assert LocalSource(tmp_path / "missing").list() == []


def mv(name: str, version: str, source: str = "local", aliases: tuple[str, ...] = ()) -> ModelVersion:
    return ModelVersion(name, version, source, {"pt": f"{name}/{version}"}, aliases)


def test_catalog_resolution() -> None:
    catalog = build_catalog(
        [
            mv("yolo", "2"),
            mv("yolo", "10"),
            mv("yolo", "9", aliases=("champion",)),
            mv("yolo", "1", source="s3"),  # shadowed: local owns "yolo"
            mv("other", "1", source="mlflow"),
        ]
    )
    assert catalog["yolo"].latest == "10"  # numeric, not lexical
    assert sorted(catalog["yolo"].versions) == ["10", "2", "9"]
    assert resolve(catalog, "yolo", None).version == "10"
    assert resolve(catalog, "yolo", "latest").version == "10"
    assert resolve(catalog, "yolo", "2").version == "2"
    assert resolve(catalog, "yolo", "champion").version == "9"
    assert resolve(catalog, "other", None).source == "mlflow"
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        resolve(catalog, "nope", None)
    with pytest.raises(ModelNotFoundError, match="no version or alias"):
        resolve(catalog, "yolo", "7")


@pytest.mark.parametrize(
    ("ref", "version", "expected"),
    [
        ("yolo", None, ("yolo", None)),
        ("yolo@champion", None, ("yolo", "champion")),
        ("yolo:3", None, ("yolo", "3")),
        ("yolo@champion", "4", ("yolo", "4")),
    ],
)
def test_model_reference_syntax(ref: str, version: str | None, expected: tuple[str, str | None]) -> None:
    assert parse_model_ref(ref, version) == expected


class FakeEngine:
    format = "fake"
    info = None

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class CountingStore(ModelStore):
    """The real cache logic with a loader that only counts and sleeps."""

    def __init__(self, max_loaded: int) -> None:
        super().__init__(
            [],
            PLAN,
            cache_dir=Path("/nonexistent"),
            catalog_ttl_s=60,
            max_loaded=max_loaded,
            gpu_memory_fraction=0.8,
            default_imgsz=64,
            warmup=False,
        )
        self.loads: list[str] = []
        self._lock = threading.Lock()

    def _load(self, version: ModelVersion) -> LoadedModel:
        time.sleep(0.2)
        with self._lock:
            self.loads.append(version.name)
        return LoadedModel(version=version, engine=FakeEngine(), load_seconds=0.2)  # type: ignore[arg-type]


def test_concurrent_first_requests_load_once() -> None:
    async def scenario() -> None:
        store = CountingStore(max_loaded=2)
        models = await asyncio.gather(*(store.get(mv("a", "1")) for _ in range(20)))
        assert store.loads == ["a"]
        assert len({id(m) for m in models}) == 1

    asyncio.run(scenario())


def test_lru_eviction_spares_models_in_use() -> None:
    async def scenario() -> None:
        store = CountingStore(max_loaded=2)
        a = await store.get(mv("a", "1"))
        await store.get(mv("b", "1"))
        async with store.use(mv("a", "1")):  # a is in use and was used last
            await store.get(mv("c", "1"))
        assert sorted(k[0] for k in store.loaded()) == ["a", "c"]  # b, least recently used, went
        async with store.use(mv("c", "1")), store.use(mv("a", "1")):
            await store.get(mv("d", "1"))
            # Both others are in use: the cache overflows rather than pulling a model from under a request.
            assert len(store.loaded()) == 3
        await store.get(mv("e", "1"))
        assert len(store.loaded()) == 2
        assert a.engine.closed  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_idle_models_unload() -> None:
    async def scenario() -> None:
        store = CountingStore(max_loaded=5)
        await store.get(mv("a", "1"))
        await store.get(mv("b", "1"))
        store.loaded()[("a", "1")].last_used -= 100
        assert store.unload_idle(50) == [("a", "1")]
        assert list(store.loaded()) == [("b", "1")]

    asyncio.run(scenario())


def test_failed_load_is_reported_to_every_waiter_and_retried_later() -> None:
    class Broken(CountingStore):
        def _load(self, version: ModelVersion) -> LoadedModel:
            time.sleep(0.05)
            self.loads.append(version.name)
            raise RuntimeError("broken file")

    async def scenario() -> None:
        store = Broken(max_loaded=2)
        results = await asyncio.gather(*(store.get(mv("x", "1")) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert store.loads == ["x"]
        with pytest.raises(RuntimeError):
            await store.get(mv("x", "1"))
        assert store.loads == ["x", "x"]

    asyncio.run(scenario())
