"""The bundled seeds/ built with config.yaml, compared byte for byte with tests/golden/seeds/.

A rendering change shows up here. When it is deliberate, regenerate the golden files and review the diff:
    UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import gzip
import os
import shutil
from datetime import UTC, datetime

from publisher.build import build
from publisher.config import load_config
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "seeds"
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # after every seed article


def test_seeds_render_exactly_as_the_golden_files(tmp_path):
    config = load_config(REPO / "config.yaml", {"output": tmp_path / "feeds", "state": tmp_path / "state"})
    build(config, now=NOW)
    built = {p.relative_to(tmp_path / "feeds").as_posix(): p.read_bytes()
             for p in sorted((tmp_path / "feeds").rglob("*")) if p.is_file()}
    # gzip's bytes depend on the zlib build, so the precompressed copies are checked by what they hold and
    # not stored here.
    compressed = {name: built.pop(name) for name in [name for name in built if name.endswith(".gz")]}
    assert sorted(compressed) == sorted(f"{name}.gz" for name in built)
    for name, data in compressed.items():
        assert gzip.decompress(data) == built[name.removesuffix(".gz")], name
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for name, data in built.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_bytes(data)
    golden = {p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in sorted(GOLDEN.rglob("*")) if p.is_file()}
    assert sorted(built) == sorted(golden)
    for name in golden:
        assert built[name] == golden[name], f"{name} differs from tests/golden/seeds/{name}"
