"""Mask-augmented datasets: build them from videos with the pipeline, import COCO/RefCOCO, export COCO.

Everything here is importable without loading ``datasets``, ``ray`` or torch; the heavy libraries load
when a function needs them. Typical use::

    from segvlm.data import BuildConfig, build_dataset, with_decoded_masks
    summary = build_dataset(["clips/"], "out/cars", BuildConfig(query="red car"), preset="cpu-fast")
    ds = with_decoded_masks(summary.load())
"""

from __future__ import annotations

from segvlm.lazy import lazy_getattr

_EXPORTS = {
    "BuildConfig": "segvlm.data.builder",
    "BuildMismatchError": "segvlm.data.builder",
    "BuildSummary": "segvlm.data.builder",
    "build_dataset": "segvlm.data.builder",
    "load_built": "segvlm.data.builder",
    "Region": "segvlm.data.schema",
    "Row": "segvlm.data.schema",
    "features": "segvlm.data.schema",
    "SCHEMA_VERSION": "segvlm.data.schema",
    "with_decoded_masks": "segvlm.data.transforms",
    "PresetLabeler": "segvlm.data.labelers",
    "Labeler": "segvlm.data.labelers",
    "load_labeler": "segvlm.data.labelers",
    "RayOptions": "segvlm.data.ray_job",
    "rows_from_coco": "segvlm.data.importers",
    "rows_from_refcoco": "segvlm.data.importers",
    "rows_from_segmentation_result": "segvlm.data.importers",
    "rows_from_saved_result": "segvlm.data.importers",
    "write_rows": "segvlm.data.importers",
    "to_coco": "segvlm.data.export",
    "push_to_hub": "segvlm.data.hub",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
