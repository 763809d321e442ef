"""Model names to what ``from_pretrained`` loads: a hub id or folder as given, a ``tiny-random:<kind>`` built.

The ``tiny-random`` preset names models as ``tiny-random:<kind>``. :func:`resolve_model` turns such a name
into a folder: the first time, the kind's builder (in :mod:`segvlm.testing`) creates the model from a small
config, seeds it, and writes it with ``save_pretrained`` (plus its processor); afterwards the folder is
reused. The backends then load it with ``from_pretrained(folder)``, exactly as they load a hub id, so a smoke
test exercises the real loading code. The weights are random: masks and boxes are meaningless.

Production code imports this module, never the builders: :mod:`segvlm.testing` is imported only when a tiny
name is resolved.

Folders live under ``$SEGVLM_CACHE`` (default ``~/.cache/segvlm``), in ``tiny-random/<kind>-<digest>``, the
digest covering the builders' code and the transformers version.
Builds write to a temporary folder and rename it into place, so concurrent workers never see half a model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from segvlm.errors import UnknownBackendError
from segvlm.vlm.families import FAMILIES

PREFIX = "tiny-random:"

#: every tiny kind and the ``"module:function"`` that writes it into a folder; the VLMs' come from their
#: family records (:data:`segvlm.vlm.families.FAMILIES`)
TINY_MODELS: dict[str, str] = {
    "grounding-dino": "segvlm.testing.models:build_grounding_dino",
    "edgetam": "segvlm.testing.models:build_edgetam",
    "sam": "segvlm.testing.models:build_sam",
    "sam2": "segvlm.testing.models:build_sam2",
    "sam2.1-hiera-tiny-arch": "segvlm.testing.models:build_sam2_hiera_tiny_arch",
    "sam3": "segvlm.testing.models:build_sam3",
    "owlv2": "segvlm.testing.models:build_owlv2",
    "clip": "segvlm.testing.models:build_clip",
    **{f.tiny_kind: f.tiny_builder for f in FAMILIES if f.tiny_kind is not None and f.tiny_builder is not None},
}


def cache_dir() -> Path:
    """segvlm's cache folder: ``$SEGVLM_CACHE``, default ``~/.cache/segvlm``."""
    return Path(os.environ.get("SEGVLM_CACHE", Path.home() / ".cache" / "segvlm"))


def is_tiny(model: str) -> bool:
    """True for a ``tiny-random:<kind>`` name."""
    return isinstance(model, str) and model.startswith(PREFIX)


def resolve_model(model: str) -> str:
    """Return ``model`` unchanged, or the local folder of a ``tiny-random:<kind>`` model (built on demand)."""
    if not is_tiny(model):
        return model
    kind = model[len(PREFIX) :]
    if kind not in TINY_MODELS:
        raise UnknownBackendError(f"unknown tiny model {model!r}; known: {[PREFIX + k for k in sorted(TINY_MODELS)]}")
    folder = cache_dir() / "tiny-random" / f"{kind}-{_builders_digest()}"
    if not (folder / ".complete").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=folder.parent))
        try:
            _builder(kind)(staging)
            (staging / ".complete").write_text("ok\n")
            try:
                os.replace(staging, folder)
            except OSError:  # another process finished first; keep theirs
                if not (folder / ".complete").exists():
                    shutil.rmtree(folder, ignore_errors=True)
                    os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return str(folder)


def _builder(kind: str):
    module, _, function = TINY_MODELS[kind].partition(":")
    return getattr(importlib.import_module(module), function)


@functools.cache
def _builders_digest() -> str:
    """A digest of the builders' source and the transformers version: editing a builder (or upgrading
    transformers) gives new folder names, so a cache never serves a model built by older code."""
    import transformers

    digest = hashlib.sha1(transformers.__version__.encode())
    for name in sorted({spec.partition(":")[0] for spec in TINY_MODELS.values()}):
        importlib.import_module(name)
        digest.update(Path(sys.modules[name].__file__).read_bytes())
    return digest.hexdigest()[:10]
