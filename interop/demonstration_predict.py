"""``skill predict --format egoexo4d-demonstration``: a run of the ``demonstration`` task
applied to one split of a store, written as the benchmark's prediction file (the layout of
`skill.interop.egoexo4d_demonstration`, which writes and reads it)."""

from __future__ import annotations

from pathlib import Path

from skill.errors import ConfigError
from skill.heads.config import PredictConfig
from skill.heads.data import SPLIT_NAMES
from skill.heads.predict import PredictResult, leakage_warnings, predict_takes, write_csv
from skill.interop.egoexo4d_demonstration import SPLITS, write_submission
from skill.tasks.demonstration import decode_events
from skill.tasks.demonstration_metrics import Events

FORMAT = "egoexo4d-demonstration"


def predict_demonstration(cfg: PredictConfig) -> PredictResult:
    """Predict the takes of ``cfg.split`` of ``cfg.store`` with the demonstration run
    ``cfg.run`` and write their decoded events (``demonstration.decode_events``) as the
    split's prediction file ``cfg.out_json`` (and the CSV when ``cfg.out_csv`` is set)."""
    split = SPLIT_NAMES.get(cfg.split or "")
    if split not in SPLITS:
        raise ConfigError(
            f"--format {FORMAT} writes the prediction file of one split: give --split "
            f"{' or '.join(SPLITS)}"
        )
    prediction = predict_takes(cfg)
    result, sel = prediction.result, prediction.sel
    if not getattr(sel.task, "per_clip", False):
        raise ConfigError(
            f"--format {FORMAT}: run {cfg.run} learned task {result.task_name}, not "
            "demonstration; write --format csv"
        )
    result.warnings = leakage_warnings(
        prediction.record, sel, set(result.take_ids), Path(cfg.out_json)
    )
    if cfg.out_csv is not None:
        result.out_csv = Path(cfg.out_csv)
        write_csv(result.out_csv, result, sel)
    events = named_events(decode_events(prediction.take_scores), [str(t) for t in sel.take_ids])
    result.out_json = write_submission(cfg.out_json, events, split)
    result.file_takes = len(sel.take_ids)
    return result


def named_events(events: Events, take_ids: list[str]) -> Events:
    """Decoded events, whose takes are row numbers (``"0"``, ``"1"`` ...), with the takes'
    names."""
    names = [take_ids[int(row)] for row in events.takes]
    return Events.of(names, events.times, events.labels, events.scores)
