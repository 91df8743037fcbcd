"""``skill adapt``: SkillFormer's LoRA fine-tuning of the backbone together with a head, on
frames decoded once.

- ``config.py``: ``AdaptConfig`` (the CLI is derived from it) and the SkillFormer presets
- ``frames.py``: the frame store, every (take, view)'s sampled clips decoded once (Zarr)
- ``train.py``: the end-to-end training loop, its epoch checkpoints and its outputs
  (``DIR/adapter/``, a PEFT folder ``skill extract --adapter`` loads; ``DIR/run/``, a run
  folder ``skill predict`` accepts)
"""
