"""The store among other tools: xarray opens it labelled, `skill export` writes HDF5 and
per-video npy, `skill import features` brings a skill export or a video_features folder
back in, and EgoExo4D take uids survive into the take table and `predict --order`."""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from skill.cache.files import staging_name
from skill.cache.store import STATUS_COMPLETE, TokenStore
from skill.pipeline.takes import Take
from skill.tasks import task_record
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS
from tests.extract_helpers import REPO, extract_config, invoke_cli, make_dataset
from tests.token_store import build_token_store, recommit_take_table

QUICK_FIT = ["--head", "mean", "--epochs", "2", "--batch-size", "16", "--hidden", "16",
             "--patience", "0", "--no-plots"]  # fmt: skip
VIEWS = ("ego", "exo1")


# ---- xarray ------------------------------------------------------------------------------
def readme_xarray_snippet() -> str:
    """The README's xarray example, exactly as printed there."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (snippet,) = [block for block in blocks if "xr.open_zarr" in block]
    return snippet


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """A real `skill extract` store (tiny backbone), named as in the README's example."""
    from skill.pipeline.extract import run_extract

    data = tmp_path_factory.mktemp("data")
    manifest = make_dataset(data, takes=12)
    store = tmp_path_factory.mktemp("store") / "egoexo_ts16.zarr"
    summary = run_extract(extract_config(manifest, store))
    assert summary.completed == 12
    return store


@pytest.mark.parametrize("layout", ["packed", "write"])
def test_readme_xarray_example_runs_without_warnings_on_both_layouts(
    extracted, layout, tmp_path, monkeypatch
):
    store = shutil.copytree(extracted, tmp_path / extracted.name)
    if layout == "write":
        TokenStore.open(store, "a").unpack()
    assert set(TokenStore.open(store).layout().values()) == {layout}
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(readme_xarray_snippet(), namespace)
    ds, ego_val = namespace["ds"], namespace["ego_val"]
    skill = TokenStore.open(store)
    records = skill.take_records()
    table, status = records.table, records.status
    assert list(ds.take.values) == table.ids.tolist()
    assert list(ds.view.values) == skill.views
    for column in ("split", "scenario", "participant", "uid"):
        assert column in ds.coords and ds[column].dims == ("take",)
        assert list(ds[column].values) == getattr(table, column).tolist()
    assert list(ds.label.values) == table.target.tolist()
    for name in ("tokens", "valid", "frame_index", "timestamp", "status"):
        assert ds[name].dims[0] == "take"
    want = (table.split == "val") & (status == STATUS_COMPLETE)
    assert want.any()  # the example selects something
    assert list(ego_val.take.values) == table.ids[want].tolist()
    ego = skill.views.index("ego")
    tokens = skill.read_tokens(np.flatnonzero(want), [ego])[:, 0]
    np.testing.assert_array_equal(ego_val.values, tokens)
    assert namespace["names"] == [skill.task["schema"]["labels"][i] for i in table.target[want]]


def test_no_lock_file_inside_the_store(extracted):
    assert not [p.name for p in extracted.iterdir() if "lock" in p.name]
    assert (extracted.parent / f".{extracted.name}.skill.layout.lock").exists()


# ---- format 2 stores ---------------------------------------------------------------------
# ---- export -> import --------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic store with uids, failed, pending and partly masked takes."""
    import zarr

    info = build_token_store(
        tmp_path_factory.mktemp("syn") / "s.zarr", n_participants=12, takes_per_participant=3
    )
    uid = zarr.open_array(str(info.path), path="uid", mode="r+", zarr_format=3)
    uid[:] = np.array([f"uid-{i:03d}" for i in range(uid.shape[0])])
    recommit_take_table(info.path)
    return info


def completed_view(path: Path) -> dict:
    """The completed takes of a store: take table, validity, tokens, by take id."""
    store = TokenStore.open(path)
    records = store.take_records()
    table, status, valid = records.table, records.status, records.valid
    rows = np.flatnonzero(status == STATUS_COMPLETE)
    tokens = store.read_tokens(rows, np.arange(len(store.views)))
    frame_index, timestamps, padded = store.frame_index(), store.timestamps(), store.padded_frames()
    return {
        str(table.ids[r]): {
            "meta": (
                store.task["schema"]["labels"][table.target[r]] if table.target[r] >= 0 else None,
                str(table.scenario[r]), str(table.participant[r]), str(table.split[r]),
                str(table.uid[r]),
            ),
            "valid": valid[r].tolist(),
            "tokens": tokens[i].view(np.uint16),
            "frames": (frame_index[r], timestamps[r], padded[r]),
        }
        for i, r in enumerate(rows)
    }  # fmt: skip


@pytest.mark.parametrize("fmt", ["hdf5", "npy"])
def test_export_then_import_gives_identical_tokens_and_take_table(synthetic, fmt, tmp_path):
    out = tmp_path / ("export.h5" if fmt == "hdf5" else "export")
    code, output = invoke_cli("export", str(synthetic.path), str(out), "--format", fmt)
    assert code == 0, output
    code, output = invoke_cli("import", "features", str(out), "--store", str(tmp_path / "i.zarr"))
    assert code == 0, output
    want, got = completed_view(synthetic.path), completed_view(tmp_path / "i.zarr")
    assert list(got) == list(want)  # the same takes, in the same order
    assert len(want) < len(synthetic.take_ids)  # pending and failed takes were left out
    for take, expected in want.items():
        assert got[take]["meta"] == expected["meta"]
        assert got[take]["valid"] == expected["valid"]
        np.testing.assert_array_equal(got[take]["tokens"], expected["tokens"], err_msg=take)
        for got_array, want_array in zip(got[take]["frames"], expected["frames"], strict=True):
            np.testing.assert_array_equal(got_array, want_array, err_msg=take)  # frame records
    imported = TokenStore.open(tmp_path / "i.zarr")
    assert imported.provenance["imported"]["kind"] == f"skill export ({fmt})"
    assert len(imported.provenance["imported"]["sha256"]) == 64


@pytest.mark.parametrize(
    "batch_takes",
    [
        pytest.param(1, id="one"),
        pytest.param(5, id="five", marks=pytest.mark.slow),  # between the two the default runs
        pytest.param(None, id="all"),
    ],
)
def test_an_import_writes_takes_in_batches_and_the_same_store(
    synthetic, tmp_path, monkeypatch, batch_takes
):
    # One write_takes per packed token chunk (a call costs a round of writes per array), a
    # batch of WRITE_BATCH_BYTES where a chunk would hold one take (the write layout); a
    # batch that does not divide the takes ends short.
    from skill.cache import layout
    from skill.interop import import_features as module
    from skill.interop.export import ExportConfig, export_store
    from tests.token_store import CLIPS, DIM, TOKENS, VIEWS

    take_bytes = len(VIEWS) * CLIPS * TOKENS * DIM * 2
    if batch_takes is not None:
        monkeypatch.setattr(layout, "PACKED_CHUNK_BYTES", batch_takes * take_bytes + 1)
        monkeypatch.setattr(module, "WRITE_BATCH_BYTES", batch_takes * take_bytes + 1)
    calls = []
    write_takes = TokenStore.write_takes

    def counted(store, start, results):
        calls.append((start, len(results)))
        write_takes(store, start, results)

    monkeypatch.setattr(TokenStore, "write_takes", counted)
    export_store(ExportConfig(store=str(synthetic.path), out=str(tmp_path / "e.h5")))
    store = tmp_path / "i.zarr"
    module.import_features(module.ImportFeaturesConfig(features=tmp_path / "e.h5", store=store))
    want = completed_view(synthetic.path)
    size = batch_takes or len(want)
    assert calls == [(start, min(size, len(want) - start)) for start in range(0, len(want), size)]
    got = completed_view(store)
    assert TokenStore.open(store).layout()["tokens"] == ("write" if batch_takes == 1 else "packed")
    assert list(got) == list(want)
    for take, expected in want.items():
        np.testing.assert_array_equal(got[take]["tokens"], expected["tokens"], err_msg=take)
        for got_array, want_array in zip(got[take]["frames"], expected["frames"], strict=True):
            np.testing.assert_array_equal(got_array, want_array, err_msg=take)


def test_hdf5_export_layout(synthetic, tmp_path):
    out = tmp_path / "e.h5"
    assert invoke_cli("export", str(synthetic.path), str(out))[0] == 0
    store = TokenStore.open(synthetic.path)
    with h5py.File(out, "r") as f:
        n = int(f["tokens"].shape[0])
        assert f["tokens"].chunks == (1, *f["tokens"].shape[1:])  # one take per chunk
        assert f["valid"].shape == (n, len(store.views))
        assert f["frame_index"].shape == f["timestamp"].shape == (n, len(store.views), 2, 4)
        assert json.loads(f.attrs["provenance"]) == store.provenance
        assert [v.decode() for v in f["takes/uid"][()]][:1] == ["uid-000"]


def test_npy_export_writes_valid_views_only_and_records_them(synthetic, tmp_path):
    out = tmp_path / "npy"
    assert invoke_cli("export", str(synthetic.path), str(out), "--format", "npy")[0] == 0
    with open(out / "takes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    store = TokenStore.open(synthetic.path)
    records = store.take_records()
    table, valid = records.table, records.valid
    row_of = {t: i for i, t in enumerate(table.ids.tolist())}
    for row in rows:
        for v, view in enumerate(store.views):
            assert bool(row[view]) == bool(valid[row_of[row["take"]], v])
            if row[view]:
                assert np.load(out / row[view]).shape == (2 * 4, 32)  # (K * N, D)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*.npy")}
    assert files == {row[view] for row in rows for view in store.views if row[view]}
    assert all(row[v] in ("", f"{row['take']}/{v}.npy") for row in rows for v in store.views)
    # which frames each token row came from, rows in takes.csv's order
    with np.load(out / "frames.npz") as frames:
        want = [row_of[row["take"]] for row in rows]
        np.testing.assert_array_equal(frames["frame_index"], store.frame_index()[want])
        np.testing.assert_array_equal(frames["timestamp"], store.timestamps()[want])
        np.testing.assert_array_equal(frames["padded_frames"], store.padded_frames()[want])


def test_an_npy_export_with_frame_records_of_another_shape_is_refused(synthetic, tmp_path):
    out = tmp_path / "npy"
    assert invoke_cli("export", str(synthetic.path), str(out), "--format", "npy")[0] == 0
    with np.load(out / "frames.npz") as frames:
        arrays = {key: frames[key] for key in frames.files}
    np.savez(out / "frames.npz", **{**arrays, "frame_index": arrays["frame_index"][1:]})
    code, output = invoke_cli("import", "features", str(out), "--store", str(tmp_path / "i.zarr"))
    assert code == 2 and "frames.npz: frame_index" in output and "do not fit" in output
    assert not (tmp_path / "i.zarr").exists()


def test_export_refuses_a_non_empty_out_and_leaves_nothing_half_written(synthetic, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, output = invoke_cli("export", str(synthetic.path), str(out), "--format", "npy")
    assert code == 2 and "exists and is not empty" in output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


# ---- video_features-style folders --------------------------------------------------------
def write_videos_and_manifest(folder: Path, n_takes: int = 24) -> Path:
    """A skill manifest of `n_takes` takes (ego + exo1 videos, empty files: only names matter
    for importing features) with labels, participants and splits."""
    lines = []
    for t in range(n_takes):
        take = f"take{t:02d}"
        videos = {}
        for view in VIEWS:
            video = folder / "videos" / f"{take}_{view}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            video.write_bytes(b"\x00")
            videos[view] = str(video)
        split = ("train", "train", "val", "test")[t % 4]
        lines.append(json.dumps({"take": take, "videos": videos, "label": LABELS[t % 4],
                                 "participant": f"p{t}", "split": split}))  # fmt: skip
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def video_stems(manifest: Path) -> list[str]:
    """The file stem of every video of a manifest, the name features are matched by."""
    return [Path(video).stem for line in manifest.read_text().splitlines()
            for video in json.loads(line)["videos"].values()]  # fmt: skip


def write_video_features(folder: Path, manifest: Path, dim: int = 16, seed: int = 0) -> Path:
    """`<video stem>_<feature>.npy` files as video_features writes them: (T, D) float32,
    T varying with the video's length, with a class signal, plus the extractor's other
    outputs (its `_fps`, `_timestamps_ms` files) that must be ignored."""
    rng = np.random.default_rng(seed)
    out = folder / "features"
    out.mkdir()
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        label = LABELS.index(record["label"])
        for video in record["videos"].values():
            stem = Path(video).stem
            rows = rng.normal(0, 1, size=(int(rng.integers(20, 40)), dim))
            rows[:, label] += 3.0
            np.save(out / f"{stem}_r21d.npy", rows.astype(np.float32))
            np.save(out / f"{stem}_fps.npy", np.array(30.0))
            np.save(out / f"{stem}_timestamps_ms.npy", np.arange(len(rows)) * 33.3)
    return out


def test_video_features_folder_imports_and_fits(tmp_path):
    manifest = write_videos_and_manifest(tmp_path)
    features = write_video_features(tmp_path, manifest)
    store = tmp_path / "imported.zarr"
    code, output = invoke_cli("import", "features", str(features), "--manifest", str(manifest),
                              "--store", str(store), "--feature", "r21d",
                              "--tokens-per-clip", "4")  # fmt: skip
    assert code == 0, output
    imported = TokenStore.open(store)
    assert (imported.views, imported.clips, imported.tokens, imported.dim) == (
        list(VIEWS),
        1,
        4,
        16,
    )
    assert imported.provenance["imported"]["feature"] == "r21d"
    # each token is the mean of an equal run of the video's rows
    rows = np.load(features / "take00_ego_r21d.npy")
    want = np.stack([p.mean(axis=0) for p in np.array_split(rows, 4)]).astype(np.float16)
    np.testing.assert_array_equal(imported.read_tokens([0], [0])[0, 0, 0], want)
    code, output = invoke_cli("fit", str(store), *QUICK_FIT, "--out", str(tmp_path / "runs"))
    assert code == 0, output
    metrics = json.loads((tmp_path / "runs" / "mean-all-s0" / "metrics.json").read_text())
    assert metrics  # the run was written


def test_feature_type_is_inferred_when_there_is_one(tmp_path):
    manifest = write_videos_and_manifest(tmp_path, n_takes=4)
    features = tmp_path / "f"
    features.mkdir()
    for stem in video_stems(manifest):
        np.save(features / f"{stem}_i3d.npy", np.ones((8, 4), np.float32))
    shutil.rmtree(tmp_path / "videos")  # features were made elsewhere: names are enough
    store = tmp_path / "s.zarr"
    code, output = invoke_cli("import", "features", str(features), "--manifest", str(manifest),
                              "-s", str(store))  # fmt: skip
    assert code == 0, output
    assert TokenStore.open(store).provenance["imported"]["feature"] == "i3d"
    assert TokenStore.open(store).tokens == 8  # no pooling: rows are tokens


def test_per_video_hdf5_imports(tmp_path):
    manifest = write_videos_and_manifest(tmp_path, n_takes=4)
    path = tmp_path / "features.h5"
    with h5py.File(path, "w") as f:
        for stem in video_stems(manifest):
            f[f"{stem}_clip"] = np.full((6, 8), 0.5, np.float32)
    store = tmp_path / "s.zarr"
    code, output = invoke_cli("import", "features", str(path), "--manifest", str(manifest),
                              "-s", str(store), "--clips", "2")  # fmt: skip
    assert code == 0, output
    imported = TokenStore.open(store)
    assert (imported.clips, imported.tokens, imported.dim) == (2, 3, 8)
    assert imported.provenance["imported"]["kind"] == "per-video hdf5"


def corrupt_width(features: Path) -> Path:
    path = features / "take03_exo1_r21d.npy"
    np.save(path, np.ones((30, 17), np.float32))
    return path


def corrupt_missing(features: Path) -> Path:
    path = features / "take02_ego_r21d.npy"
    path.unlink()
    return path


def corrupt_non_finite(features: Path) -> Path:
    path = features / "take01_exo1_r21d.npy"
    rows = np.load(path)
    rows[3, 2] = np.nan
    np.save(path, rows)
    return path


def corrupt_ndim(features: Path) -> Path:
    path = features / "take02_exo1_r21d.npy"
    np.save(path, np.ones((2, 30, 16), np.float32))
    return path


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (corrupt_width, "feature width 17, but"),
        (corrupt_missing, "no features for take take02 view ego"),
        (corrupt_non_finite, "holds NaN or Inf values"),
        (corrupt_ndim, "features must be (T, D), one row per time step; got shape (2, 30, 16)"),
    ],
    ids=["width", "missing", "non-finite", "ndim"],
)
def test_bad_features_give_one_line_naming_the_file(tmp_path, corrupt, problem):
    manifest = write_videos_and_manifest(tmp_path, n_takes=4)
    features = write_video_features(tmp_path, manifest)
    bad = corrupt(features)
    store = tmp_path / "s.zarr"
    code, output = invoke_cli("import", "features", str(features), "--manifest", str(manifest),
                              "-s", str(store), "--feature", "r21d",
                              "--tokens-per-clip", "4")  # fmt: skip
    assert code == 2, output
    assert output.startswith("error: ") and "Traceback" not in output
    assert problem in output
    named = bad.name if corrupt is not corrupt_missing else bad.stem
    assert named in output
    assert not store.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.zarr")]


def test_rows_that_differ_without_pooling_name_the_file(tmp_path):
    manifest = write_videos_and_manifest(tmp_path, n_takes=4)
    features = write_video_features(tmp_path, manifest)  # T varies from video to video
    code, output = invoke_cli("import", "features", str(features), "--manifest", str(manifest),
                              "-s", str(tmp_path / "s.zarr"), "--feature", "r21d")  # fmt: skip
    assert code == 2, output
    assert re.search(r"take\d\d_\w+_r21d\.npy: \d+ rows, but .* has \d+: pass --tokens", output)


# ---- predict across imported and extracted stores ----------------------------------------
def test_predict_refuses_an_extracted_run_on_foreign_features_but_takes_its_own_export(
    synthetic, tmp_path
):
    runs = tmp_path / "runs"
    code, output = invoke_cli("fit", str(synthetic.path), *QUICK_FIT, "--out", str(runs))
    assert code == 0, output
    run = runs / "mean-all-s0"
    export = tmp_path / "e.h5"
    assert invoke_cli("export", str(synthetic.path), str(export))[0] == 0
    back = tmp_path / "back.zarr"
    assert invoke_cli("import", "features", str(export), "-s", str(back))[0] == 0
    code, output = invoke_cli("predict", str(back), "--run", str(run), "--out",
                              str(tmp_path / "p.csv"))  # fmt: skip
    assert code == 0, output  # the same tokens: the export's provenance came along
    foreign = tmp_path / "foreign.zarr"
    manifest = write_videos_and_manifest(tmp_path, n_takes=4)
    features = tmp_path / "f"
    features.mkdir()
    for stem in video_stems(manifest):
        np.save(features / f"{stem}_x.npy", np.ones((4, 32), np.float32))
    assert invoke_cli("import", "features", str(features), "--manifest", str(manifest),
                      "-s", str(foreign))[0] == 0  # fmt: skip
    code, output = invoke_cli("predict", str(foreign), "--run", str(run), "--out",
                              str(tmp_path / "q.csv"))  # fmt: skip
    assert code == 2, output
    assert "was not extracted like the store run" in output and "imported" in output


# ---- EgoExo4D take uids ------------------------------------------------------------------
def write_egoexo_manifest(root: Path, n_takes: int = 16) -> Path:
    """An EgoExo4D annotation file (records with take_uid) over empty video files."""
    records = []
    for t in range(n_takes):
        name = f"iiith_cooking_{t:02d}_1"
        paths = {}
        for view, camera in (("ego", "aria01_214-1"), ("exo1", "cam01")):
            rel = f"takes/{name}/frame_aligned_videos/{camera}.mp4"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"\x00")
            paths[view] = rel
        records.append({
            "take_uid": f"{t:08x}-uid", "take_name": name, "scenario_name": "Cooking",
            "proficiency_score": LABELS[t % 4], "participant_uid": f"p{t}",
            "split": ("train", "train", "val", "test")[t % 4], "video_paths": paths,
        })  # fmt: skip
    (root / "annotations").mkdir()
    manifest = root / "annotations" / "proficiency_demonstrator_train.json"
    manifest.write_text(json.dumps({"annotations": records}, indent=1))
    return manifest


def test_take_uid_reaches_the_take_table(tmp_path):
    from skill.pipeline.extract import take_row
    from skill.pipeline.manifest import read_takes

    manifest = write_egoexo_manifest(tmp_path)
    takes = read_takes(manifest).takes
    assert takes[3].uid == "00000003-uid"
    assert take_row(takes[3]).uid == "00000003-uid"  # what extract registers
    assert take_row(Take("t", {"ego": "/v.mp4"})).uid == ""  # other formats: no uid


def test_predict_order_by_uid_writes_take_names(tmp_path):
    manifest = write_egoexo_manifest(tmp_path)
    features = tmp_path / "features"
    for take in json.loads(manifest.read_text())["annotations"]:
        label = LABELS.index(take["proficiency_score"])
        for path in take["video_paths"].values():
            rows = np.zeros((4, 8), np.float32)
            rows[:, label] = 1.0
            target = features / take["take_name"] / f"{Path(path).stem}_omni.npy"
            target.parent.mkdir(parents=True, exist_ok=True)  # <take>/<stem>: stems repeat
            np.save(target, rows)
    store = tmp_path / "s.zarr"
    code, output = invoke_cli("import", "features", str(features), "--manifest", str(manifest),
                              "-s", str(store))  # fmt: skip
    assert code == 0, output
    table = TokenStore.open(store).take_table()
    assert table.uid.tolist() == [f"{t:08x}-uid" for t in range(16)]
    runs = tmp_path / "runs"
    assert invoke_cli("fit", str(store), *QUICK_FIT, "--out", str(runs))[0] == 0
    test_rows = np.flatnonzero(table.split == "test")
    order = tmp_path / "order.txt"
    # the ground truth lists uids, in its own order; one take named by its name
    listed = [str(table.uid[r]) for r in test_rows[::-1]]
    listed[0] = str(table.ids[test_rows[-1]])
    order.write_text("\n".join(listed) + "\n")
    out = tmp_path / "pred.csv"
    code, output = invoke_cli("predict", str(store), "--run", str(runs / "mean-all-s0"),
                              "--format", "egoexo4d", "--out", str(out), "--split", "test",
                              "--order", str(order))  # fmt: skip
    assert code == 0, output
    written = json.loads(out.with_suffix(".json").read_text())["videos"]
    assert written == [str(table.ids[r]) for r in test_rows[::-1]]


def test_what_a_killed_export_or_import_left_is_removed_by_the_next(synthetic, tmp_path):
    dead = 2**22 + 12345  # above Linux's pid_max: no such process
    (tmp_path / staging_name("e.h5", pid=dead)).write_bytes(b"half")
    staging_store = staging_name("i.zarr", pid=dead)
    (tmp_path / staging_store).mkdir()
    for suffix in (".skill.lock", ".skill.layout.lock"):  # its staging store's lock files
        (tmp_path / f".{staging_store}{suffix}").touch()
    assert invoke_cli("export", str(synthetic.path), str(tmp_path / "e.h5"))[0] == 0
    code, output = invoke_cli("import", "features", str(tmp_path / "e.h5"), "-s",
                              str(tmp_path / "i.zarr"))  # fmt: skip
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "e.h5",
        "i.zarr",
    ]
    assert not [p.name for p in tmp_path.iterdir() if staging_store in p.name]


def test_export_of_a_store_without_completed_takes_is_refused(tmp_path):
    TokenStore.create(tmp_path / "s.zarr", provenance={"backbone": {"name": "x"}}, views=["ego"],
                      task=task_record("classification", {"labels": list(LABELS)}), clips=1, tokens=2, dim=4, frames=2)  # fmt: skip
    code, output = invoke_cli("export", str(tmp_path / "s.zarr"), str(tmp_path / "e.h5"))
    assert code == 2 and output.endswith("s.zarr: no completed take to export"), output
    assert not (tmp_path / "e.h5").exists()
