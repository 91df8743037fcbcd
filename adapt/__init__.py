"""``skill adapt``: SkillFormer's LoRA fine-tuning of the backbone together with a head, on
frames decoded once, composed of stage one (its decode loop writes the frame store) and
stage two (its epoch loop trains on it).

- ``config.py``: ``AdaptConfig`` (the CLI is derived from it), extract's and fit's settings
  nested with SkillFormer's defaults, and the SkillFormer presets
- ``frames.py``: the frame store, every (take, view)'s sampled clips decoded once (a per-take
  Zarr store, as the token store is)
- ``train.py``: the frame store's batches through the adapted backbone for fit's epoch loop,
  its epoch checkpoints and its outputs (``DIR/adapter/``, a PEFT folder ``skill extract
  --adapter`` loads; ``DIR/run/``, a run folder ``skill predict`` accepts)
"""
