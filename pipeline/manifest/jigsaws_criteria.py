"""Format ``jigsaws-criteria``: JIGSAWS' meta files (jigsaws.py) with the six criteria of the
modified OSATS as scores beside the GRS: seven scores, ``grs`` (declared 6..30) and
``respect_for_tissue``, ``suture_needle_handling``, ``time_and_motion``, ``flow_of_operation``,
``overall_performance``, ``quality_of_final_product`` (each declared 1..5). Never detected (a
meta file is read as ``jigsaws`` unless this format is named). Read only.
"""

from __future__ import annotations

from pathlib import Path

from skill.pipeline.manifest.format import ManifestFormat, Parsed
from skill.pipeline.manifest.jigsaws import meta_schema, read_meta_file
from skill.pipeline.manifest.registry import register_format


def _read_jigsaws_criteria(manifest: str, text: str, base: Path) -> Parsed:
    return read_meta_file(manifest, text, base, criteria=True)


register_format(
    ManifestFormat(
        name="jigsaws-criteria",
        marker="",  # never detected
        detect=lambda sample: False,
        read=_read_jigsaws_criteria,
        write=None,
        schema=meta_schema(criteria=True),
        targets=("label", "scores"),
    )
)
