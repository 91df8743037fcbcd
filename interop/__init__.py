"""What speaks another tool's format, one file per format or tool: `skill export` to HDF5 or
per-video npy (`export.py`), `skill import features` from a skill export or per-video features
(`import_features.py`), `skill import skillformer` from a trained SkillFormer folder
(`skillformer.py`), and the EgoExo4D challenge's prediction files and its scorer's arithmetic
(`egoexo4d.py`). The stages keep skill's own formats; what must match someone else's lives
here, so that a change in another tool's layout is made in one file."""
