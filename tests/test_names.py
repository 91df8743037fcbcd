"""Names that become paths: take and view names are checked where a manifest is read, a JSON
record naming a key twice is refused, an npy export writes every file inside its folder under
a name no other take or view shares, and `skill import features` checks a skill export before
it writes anything. Also: an HDF5 export that meets a full disk ends in one line, not a crash.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from skill.cache.files import staging_leftovers
from skill.cache.store import STATUS_COMPLETE, TakeResult, TakeRow, TokenStore
from skill.interop.export import npy_file
from skill.pipeline.manifest import read_takes
from skill.pipeline.takes import NAME_MAX_BYTES, ManifestError
from skill.tasks import task_record
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS
from tests.extract_helpers import invoke_cli
from tests.full_disk import PAGE, on_small_disk, small_disk_problem

CLIPS, TOKENS, DIM, FRAMES = 2, 3, 4, 2


# ---- a store whose take and view names are whatever a test needs ---------------------------
def named_store(path: Path, take_ids: list[str], views: list[str], dim: int = DIM) -> Path:
    """A complete store: take i's view v holds tokens all equal to 10 * i + v + 1 (so every
    file is told apart), every view valid."""
    store = TokenStore.create(
        path, provenance={"backbone": {"name": "names"}}, views=views, task=task_record("classification", {"labels": list(LABELS)}),
        clips=CLIPS, tokens=TOKENS, dim=dim, frames=FRAMES,
    )  # fmt: skip
    rows = [TakeRow(take_id, LABELS[i % 4], "Cooking", f"p{i}", "train")
            for i, take_id in enumerate(take_ids)]  # fmt: skip
    with store.writer_lock():
        for i in store.add_takes(rows):
            tokens = np.stack(
                [np.full((CLIPS, TOKENS, dim), 10 * i + v + 1) for v in range(len(views))]
            )
            frames = np.tile(np.arange(FRAMES), (len(views), CLIPS, 1))
            store.write_take(i, TakeResult(
                tokens=tokens.astype(np.float16), valid=np.ones(len(views), dtype=bool),
                frame_index=frames, timestamp=frames / 30.0,
                padded=np.zeros(len(views), dtype=int), view_error=[""] * len(views),
                status=STATUS_COMPLETE,
            ))  # fmt: skip
    return path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def assert_one_line_error(code: int, output: str, *parts: str) -> None:
    assert code == 2, output
    assert output.startswith("error: ") and "\n" not in output.strip(), output
    for part in parts:
        assert part in output, f"{part!r} not in {output!r}"


# ---- names in manifests --------------------------------------------------------------------
def touch(root: Path, *relative: str) -> None:
    for name in relative:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


def egoexo_paths(take: str) -> dict:
    folder = f"takes/{take}/frame_aligned_videos"
    return {"ego": f"{folder}/aria01_214-1.mp4", "exo1": f"{folder}/cam01.mp4"}


def skill_line(take="t1", videos=None, **more) -> str:
    record = {"take": take, "videos": videos or {"ego": "v/ego.mp4"}, "label": "Novice", **more}
    return json.dumps(record)


def egoexo_doc(*records: dict) -> str:
    return json.dumps({"annotations": list(records)}, indent=2)


def egoexo_record(take="t1", **more) -> dict:
    return {"take_name": take, "proficiency_score": "Novice", "video_paths": egoexo_paths("t1"),
            **more}  # fmt: skip


def skillformer_line(folder: str) -> str:
    base = f"takes/{folder}/frame_aligned_videos"
    paths = [f"{base}/aria01_214-1.mp4", f"{base}/cam01.mp4", None, None, None]
    return json.dumps({"video_paths": paths, "proficiency_level": "Novice"})


@dataclass
class BadName:
    """A manifest with one unfit name, and where and what the error says."""

    id: str
    fmt: str
    text: str
    line: int
    expect: str


LONG = "x" * (NAME_MAX_BYTES + 1)
WIDE = "é" * (NAME_MAX_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
OK = skill_line("ok")
BAD_NAMES = [
    BadName("skill-parent", "skill", f"{OK}\n{skill_line('../../x')}\n", 2,
            "take name '../../x' holds the path separator '/'"),
    BadName("skill-absolute", "skill", skill_line("/etc/x") + "\n", 1,
            "take name '/etc/x' holds the path separator '/'"),
    BadName("skill-backslash", "skill", skill_line("a\\b") + "\n", 1,
            "take name 'a\\\\b' holds the path separator '\\\\'"),
    BadName("skill-dot", "skill", skill_line(".") + "\n", 1, "take name '.' is '.'"),
    BadName("skill-dotdot", "skill", f"{OK}\n\n{skill_line('..')}\n", 3,
            "take name '..' is '..', which names a folder"),
    BadName("skill-nul", "skill", skill_line("a\x00b") + "\n", 1,
            "take name 'a\\x00b' holds the control character '\\x00'"),
    BadName("skill-newline", "skill", skill_line("a\nb") + "\n", 1,
            "take name 'a\\nb' holds the control character '\\n'"),
    BadName("skill-long", "skill", skill_line(LONG) + "\n", 1,
            f"is {NAME_MAX_BYTES + 1} bytes of UTF-8, longer than the {NAME_MAX_BYTES}"),
    BadName("skill-wide", "skill", skill_line(WIDE) + "\n", 1,
            f"is {2 * len(WIDE)} bytes of UTF-8, longer than the {NAME_MAX_BYTES}"),
    BadName("skill-surrogate", "skill", '{"take": "a\\ud800", "videos": {"ego": "v/ego.mp4"}, '
            '"label": null}\n', 1, "is not valid Unicode"),
    BadName("skill-empty", "skill", skill_line("") + "\n", 1,
            "field 'take' must be a non-empty string"),
    BadName("skill-view-separator", "skill", skill_line(videos={"../ego": "v/ego.mp4"}) + "\n",
            1, "take t1: view name '../ego' holds the path separator '/'"),
    BadName("skill-view-dotdot", "skill", skill_line(videos={"..": "v/ego.mp4"}) + "\n", 1,
            "take t1: view name '..' is '..'"),
    BadName("skill-view-control", "skill", skill_line(videos={"e\tgo": "v/ego.mp4"}) + "\n", 1,
            "take t1: view name 'e\\tgo' holds the control character '\\t'"),
    BadName("egoexo-separator", "egoexo4d", egoexo_doc(egoexo_record("t1"),
            egoexo_record("a/b", video_paths=None)), 11,
            "annotations[1]: take name 'a/b' holds the path separator '/'"),
    BadName("egoexo-dotdot", "egoexo4d", egoexo_doc(egoexo_record("..", video_paths=None)), 3,
            "annotations[0]: take name '..' is '..'"),
    BadName("egoexo-long", "egoexo4d", egoexo_doc(egoexo_record(LONG, video_paths=None)), 3,
            f"annotations[0]: take name {LONG[:60]!r}... ({len(LONG)} characters) is "
            f"{len(LONG)} bytes"),
    BadName("egoexo-control-in-path", "egoexo4d",
            egoexo_doc({"proficiency_score": None, "video_paths": egoexo_paths("a\x01b")}), 3,
            "annotations[0]: take name 'a\\x01b' holds the control character '\\x01'"),
    BadName("skillformer-control", "skillformer", skillformer_line("t\x7f2") + "\n", 1,
            "take name 't\\x7f2' holds the control character '\\x7f'"),
    BadName("skillformer-long", "skillformer",
            skillformer_line("t1") + "\n" + skillformer_line(LONG) + "\n", 2,
            f"bytes of UTF-8, longer than the {NAME_MAX_BYTES}"),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_NAMES, ids=[bad.id for bad in BAD_NAMES])
def test_an_unfit_name_in_a_manifest_is_refused_naming_file_line_and_name(tmp_path, bad):
    touch(tmp_path, "v/ego.mp4", *egoexo_paths("t1").values())
    manifest = tmp_path / ("m.json" if bad.fmt == "egoexo4d" else "m.jsonl")
    manifest.write_text(bad.text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, fmt=bad.fmt, missing_videos="keep")
    error = caught.value
    assert (error.path, error.line) == (str(manifest), bad.line), str(error)
    assert str(error).startswith(f"{manifest}:{bad.line}: ")
    assert "\n" not in str(error)
    assert bad.expect in error.problem, error.problem


def test_fit_names_at_the_limit_are_read(tmp_path):
    """The limit is exact: NAME_MAX_BYTES bytes is a name; unusual but fit characters pass."""
    names = ["x" * NAME_MAX_BYTES, "é" * (NAME_MAX_BYTES // 2), "...", " a b ", "a:b%c", "NUL"]
    touch(tmp_path, "v/ego.mp4")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(skill_line(name) + "\n" for name in names), encoding="utf-8")
    assert [take.take_id for take in read_takes(manifest).takes] == names


def test_the_cli_refuses_an_unfit_name_in_one_line_and_writes_nothing(tmp_path):
    touch(tmp_path, "v/ego.mp4")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(f"{OK}\n{skill_line('../../escaped')}\n")
    (tmp_path / "features").mkdir()
    store = tmp_path / "s.zarr"
    code, output = invoke_cli("import", "features", str(tmp_path / "features"),
                              "--manifest", str(manifest), "--store", str(store))  # fmt: skip
    assert_one_line_error(code, output, f"{manifest}:2: take name '../../escaped' holds the path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "m.jsonl", "v"]


# ---- duplicate keys ------------------------------------------------------------------------
@dataclass
class Duplicate:
    id: str
    fmt: str
    text: str
    line: int | None
    expect: str


SF_PATHS = json.loads(skillformer_line("t1"))["video_paths"]
DUPLICATES = [
    Duplicate("skill-view", "skill",
              f'{OK}\n{{"take": "t1", "videos": {{"ego": "v/ego.mp4", "ego": null}}, '
              '"label": "Novice"}\n', 2, "duplicate key 'ego'"),
    Duplicate("skill-label", "skill",
              '{"take": "t1", "videos": {"ego": "v/ego.mp4"}, "label": "Novice", '
              '"label": "Late Expert"}\n', 1, "duplicate key 'label'"),
    Duplicate("skill-extra", "skill",
              '{"take": "t1", "videos": {"ego": "v/ego.mp4"}, "label": null, '
              '"extra": {"k": 1, "k": 2}}\n', 1, "duplicate key 'k'"),
    Duplicate("skillformer-label", "skillformer",
              skillformer_line("t1") + "\n" + json.dumps({"video_paths": SF_PATHS})[:-1]
              + ', "proficiency_level": "Novice", "proficiency_level": "Late Expert"}\n', 2,
              "duplicate key 'proficiency_level'"),
    Duplicate("egoexo-view", "egoexo4d",
              egoexo_doc(egoexo_record("t1")).replace(
                  '"exo1": "takes/t1/frame_aligned_videos/cam01.mp4"',
                  '"exo1": "takes/t1/frame_aligned_videos/cam01.mp4",\n        "ego": null'),
              9, "annotations[0]: duplicate key 'ego'"),
    Duplicate("egoexo-uid", "egoexo4d",
              '{"annotations": {\n  "u1": {"take_name": "t1", "proficiency_score": null},\n'
              '  "u1": {"take_name": "t1", "proficiency_score": "Novice"}\n}}\n', 3,
              'annotations["u1"]: duplicate key \'u1\''),
    Duplicate("egoexo-top-level", "egoexo4d",
              '{"annotations": [],\n "annotations": []}\n', 2, "duplicate key 'annotations'"),
]  # fmt: skip


@pytest.mark.parametrize("dup", DUPLICATES, ids=[dup.id for dup in DUPLICATES])
def test_a_key_named_twice_is_refused_naming_the_line_and_key(tmp_path, dup):
    touch(tmp_path, "v/ego.mp4", *egoexo_paths("t1").values())
    manifest = tmp_path / ("m.json" if dup.fmt == "egoexo4d" else "m.jsonl")
    manifest.write_text(dup.text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, fmt=dup.fmt)
    error = caught.value
    assert (error.path, error.line) == (str(manifest), dup.line), str(error)
    assert dup.expect in error.problem and "names it twice" in error.problem, error.problem
    assert "\n" not in str(error)


def test_the_cli_refuses_a_key_named_twice_with_the_format_detected(tmp_path):
    touch(tmp_path, "v/ego.mp4")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"take": "t1", "take": "t2", "videos": {"ego": "v/ego.mp4"}, '
                        '"label": null}\n')  # fmt: skip
    code, output = invoke_cli("import", "features", str(tmp_path / "v"), "--manifest",
                              str(manifest), "--store", str(tmp_path / "s.zarr"))  # fmt: skip
    assert_one_line_error(code, output, f"{manifest}:1: duplicate key 'take'")
    assert not (tmp_path / "s.zarr").exists()


# ---- npy export: every file inside, under its own name --------------------------------------
UNFIT = ["../../above", "..", ".", "a\\b", "line\nbreak", "ctl\x01"]
FIT = [".hidden", "takes.csv", "TAKES.CSV", "frames.npz", "con", "x%2E", "x.", "x:y", "é",
       "x_b", "x"]  # fmt: skip


def export_npy(store: Path, out: Path) -> None:
    """Export `store` as npy to `out`, checking that every file written lies inside `out`, that
    each (take, view) has a file of its own holding its own tokens, and that the count printed
    is the count written."""
    before = files_under(store.parent)
    code, output = invoke_cli("export", str(store), str(out), "--format", "npy")
    assert code == 0, output
    written = files_under(store.parent) - before
    assert all(out in path.parents for path in written), sorted(map(str, written))
    opened = TokenStore.open(store)
    n_takes, views = opened.n_takes, opened.views
    npy = {p for p in written if p.suffix == ".npy"}
    assert len(npy) == n_takes * len(views)  # none shared, none lost
    assert f"({len(npy)} files)" in output, output
    with open(out / "takes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["take"] for row in rows] == opened.take_table().ids.tolist()
    for i, row in enumerate(rows):
        for v, view in enumerate(views):
            assert row[view] == npy_file(row["take"], view)
            assert np.load(out / row[view]).flat[0] == 10 * i + v + 1, (row["take"], view)


def test_npy_export_keeps_names_no_manifest_lets_through_inside_the_folder(tmp_path):
    """A store made elsewhere may hold any name (an absolute path too): each still gets a file
    of its own inside OUT. Importing such an export back is refused, naming the name."""
    views = ["ego", "..", "a/b"]
    store = named_store(tmp_path / "s.zarr", [*UNFIT, str(tmp_path / "absolute")], views)
    out = tmp_path / "deep" / "out"
    out.parent.mkdir()
    export_npy(store, out)
    code, output = invoke_cli("import", "features", str(out), "--store", str(tmp_path / "i"))
    assert_one_line_error(code, output, "view name '..' is '..'")
    assert not (tmp_path / "i").exists()


def test_npy_export_of_fit_names_that_look_alike_imports_back_to_each_take(tmp_path):
    """Names that once shared a file (take x_b view a, take x view b_a), names of the export's
    own files, hidden, Windows-reserved and escaped-looking names."""
    views = ["a", "b_a", "con", "x:y"]
    store = named_store(tmp_path / "s.zarr", FIT, views)
    export_npy(store, tmp_path / "out")
    code, output = invoke_cli("import", "features", str(tmp_path / "out"), "--store",
                              str(tmp_path / "i.zarr"))  # fmt: skip
    assert code == 0, output
    back = TokenStore.open(tmp_path / "i.zarr")
    assert back.take_table().ids.tolist() == FIT
    tokens = back.read_tokens(np.arange(len(FIT)), np.arange(len(views)))
    want = 10 * np.arange(len(FIT))[:, None] + np.arange(len(views))[None, :] + 1
    np.testing.assert_array_equal(tokens[:, :, 0, 0, 0], want)


def test_npy_export_counts_the_files_it_wrote(tmp_path):
    store = named_store(tmp_path / "s.zarr", ["x_b", "x", "y_b", "y"], ["a", "b_a"])
    out = tmp_path / "out"
    code, output = invoke_cli("export", str(store), str(out), "--format", "npy")
    assert code == 0, output
    assert len(list(out.rglob("*.npy"))) == 8 and "(8 files)" in output, output


def test_a_name_too_long_for_a_file_is_refused_before_anything_is_written(tmp_path):
    percent = "%" * 100  # a fit name: 100 bytes, but "%25" each in a file name
    store = named_store(tmp_path / "s.zarr", ["fine", percent], ["ego"])
    out = tmp_path / "out"
    code, output = invoke_cli("export", str(store), str(out), "--format", "npy")
    assert_one_line_error(code, output, f"{store}: take '{'%' * 60}' cannot name a file",
                          "300 bytes", "export it as hdf5")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["s.zarr"]


def test_an_export_never_overwrites_a_file(tmp_path, monkeypatch):
    """Two names that one file system takes for one (here made so: names folded to lower
    case, as on a file system that ignores case) stop the export; nothing is kept."""
    import skill.interop.export as export

    real = export.file_component
    monkeypatch.setattr(export, "file_component", lambda name, *a: real(name.lower(), *a))
    store = named_store(tmp_path / "s.zarr", ["Take", "other", "take"], ["ego"])
    out = tmp_path / "out"
    code, output = invoke_cli("export", str(store), str(out), "--format", "npy")
    assert_one_line_error(code, output, f"{out}: take 'take' would share the folder 'take' with "
                          "another take", "nothing was kept")  # fmt: skip
    assert not out.exists() and not staging_leftovers(tmp_path, "out")


@pytest.mark.parametrize("absolute", [False, True], ids=["parent", "absolute"])
def test_a_path_that_would_leave_the_export_is_refused_even_unescaped(
    tmp_path, monkeypatch, absolute
):
    """The check behind the escaping: were names written as they are (as skill once did), a
    path outside OUT is still refused and nothing is written anywhere."""
    import skill.interop.export as export

    unescaped = lambda name, suffix="", reserved=(): name + suffix  # noqa: E731
    monkeypatch.setattr(export, "file_component", unescaped)
    take = str(tmp_path / "escaped") if absolute else "../../escaped"
    store = named_store(tmp_path / "s.zarr", ["inside", take], ["ego"])
    before = files_under(tmp_path)
    out = tmp_path / "a" / "out"
    out.parent.mkdir()
    code, output = invoke_cli("export", str(store), str(out), "--format", "npy")
    assert_one_line_error(code, output, f"{out}: {take!r} would be written outside the export")
    assert files_under(tmp_path) == before and list(out.parent.iterdir()) == []


# ---- import features: a skill export is checked before anything is written ------------------
@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """npy and HDF5 exports of a 4-take store (views ego, exo1)."""
    folder = tmp_path_factory.mktemp("exports")
    store = named_store(folder / "s.zarr", ["t0", "t1", "t2", "t3"], ["ego", "exo1"])
    for fmt in ("npy", "hdf5"):
        code, output = invoke_cli("export", str(store), str(folder / fmt), "--format", fmt)
        assert code == 0, output
    return {"npy": folder / "npy", "hdf5": folder / "hdf5"}


def edit_csv(export: Path, edit: Callable[[list[list[str]]], None]) -> None:
    with open(export / "takes.csv", newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    edit(table)
    with open(export / "takes.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(table)


def edit_json(export: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads((export / "skill_export.json").read_text())
    edit(meta)
    (export / "skill_export.json").write_text(json.dumps(meta))


def set_cell(row: int, column: str, value: str):
    def edit(table: list[list[str]]) -> None:
        table[row][table[0].index(column)] = value

    return edit


def as_version_1(export: Path) -> None:
    """Rewrite a v2 npy export as skill wrote v1: `<take>_<view>.npy` side by side."""

    def flatten(table: list[list[str]]) -> None:
        for row in table[1:]:
            for c in range(6, len(row)):
                if row[c]:
                    flat = row[c].replace("/", "_")
                    (export / row[c]).rename(export / flat)
                    row[c] = flat

    edit_csv(export, flatten)
    for folder in [p for p in export.iterdir() if p.is_dir()]:
        folder.rmdir()
    edit_json(export, lambda m: m["skill_export"].update(format_version=1))


@dataclass
class BadExport:
    id: str
    fmt: str
    corrupt: Callable[[Path], None]
    expect: Callable[[Path], str]


def h5_edit(edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            edit(f)

    return corrupt


def h5_set(name: str, index: int, value) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[name][index] = value

    return edit


def h5_attr(key: str, value) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f.attrs[key] = value

    return edit


def h5_geometry_without_dim(f: h5py.File) -> None:
    geometry = json.loads(f.attrs["geometry"])
    del geometry["dim"]
    f.attrs["geometry"] = json.dumps(geometry)


def h5_replace(name: str, data) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        f[name] = data

    return edit


def link_out(export: Path) -> None:
    outside = export.parent / "elsewhere.npy"
    np.save(outside, np.zeros((CLIPS * TOKENS, DIM), dtype=np.float16))
    (export / "t1" / "ego.npy").unlink()
    (export / "t1" / "ego.npy").symlink_to(outside)


def bare_v1_name(table: list[list[str]]) -> None:
    table[2][6] = "t0/ego.npy"  # a path with a separator in a v1 export


def shared_v1_file(table: list[list[str]]) -> None:
    table[3][6] = table[1][6]  # take t2's ego names t0's file


CSV = "takes.csv"
BAD_EXPORTS = [
    BadExport("npy-duplicate-take", "npy", lambda e: edit_csv(e, set_cell(3, "take", "t0")),
              lambda e: f"{e / CSV}:4: take t0 is listed twice"),
    BadExport("npy-empty-take", "npy", lambda e: edit_csv(e, set_cell(2, "take", "")),
              lambda e: f"{e / CSV}:3: take name '' is empty"),
    BadExport("npy-take-with-separator", "npy",
              lambda e: edit_csv(e, set_cell(1, "take", "../t0")),
              lambda e: f"{e / CSV}:2: take name '../t0' holds the path separator '/'"),
    BadExport("npy-unknown-label", "npy", lambda e: edit_csv(e, set_cell(2, "label", "Guru")),
              lambda e: f"{e / CSV}:3: take t1: not a target of the export's task "
                        "classification: unknown label 'Guru'"),
    BadExport("npy-unknown-split", "npy", lambda e: edit_csv(e, set_cell(1, "split", "dev")),
              lambda e: f"{e / CSV}:2: take t0: split 'dev' is not train, val, test or empty"),
    BadExport("npy-absolute-file", "npy",
              lambda e: edit_csv(e, set_cell(2, "ego", str(e / "t0" / "ego.npy"))),
              # the named file is shortened in the message when the temporary folder is long
              lambda e: (f"{e / CSV}:3: take t1 view ego names the file '/",
                         "; the export names it 't1/ego.npy'")),
    BadExport("npy-another-takes-file", "npy",
              lambda e: edit_csv(e, set_cell(2, "exo1", "t0/exo1.npy")),
              lambda e: f"{e / CSV}:3: take t1 view exo1 names the file 't0/exo1.npy'"),
    BadExport("npy-file-above", "npy",
              lambda e: edit_csv(e, set_cell(1, "ego", "../npy/t0/ego.npy")),
              lambda e: f"{e / CSV}:2: take t0 view ego names the file '../npy/t0/ego.npy'"),
    BadExport("npy-file-linked-out", "npy", link_out,
              lambda e: f"{e / CSV}:3: take t1 view ego: {e / 't1' / 'ego.npy'} leads outside"),
    BadExport("npy-file-missing", "npy", lambda e: (e / "t2" / "exo1.npy").unlink(),
              lambda e: f"{e / CSV}:4: take t2 view exo1: {e / 't2' / 'exo1.npy'} is missing"),
    BadExport("npy-header-lacks-view", "npy",
              lambda e: edit_csv(e, lambda t: [row.pop() for row in t]),
              lambda e: f"{e / CSV}:1: the header lacks the column(s) exo1"),
    BadExport("npy-short-row", "npy", lambda e: edit_csv(e, lambda t: t[2].pop()),
              lambda e: f"{e / CSV}:3: 7 fields, the header has 8"),
    BadExport("npy-no-csv", "npy", lambda e: (e / CSV).unlink(),
              lambda e: f"{e / CSV}: missing; an npy export lists its takes there"),
    BadExport("npy-v1-path", "npy", lambda e: (as_version_1(e), edit_csv(e, bare_v1_name)),
              lambda e: f"{e / CSV}:3: take t1 view ego: the file name 't0/ego.npy' holds the "
                        "path separator '/'"),
    BadExport("npy-v1-shared-file", "npy", lambda e: (as_version_1(e), edit_csv(e, shared_v1_file)),
              lambda e: f"{e / CSV}:4: take t2 view ego: the file t0_ego.npy is named on line 2 "
                        "too"),
    BadExport("npy-json-invalid", "npy",
              lambda e: (e / "skill_export.json").write_text('{"views": ["ego",'),
              lambda e: f"{e / 'skill_export.json'}: invalid JSON at line 1"),
    BadExport("npy-json-duplicate-key", "npy",
              lambda e: (e / "skill_export.json").write_text(
                  (e / "skill_export.json").read_text().replace(
                      '"views": [', '"views": ["exo1", "ego"], "views": [')),
              lambda e: f"{e / 'skill_export.json'}: duplicate key 'views'"),
    BadExport("npy-json-not-object", "npy", lambda e: (e / "skill_export.json").write_text("[]"),
              lambda e: f"{e / 'skill_export.json'}: expected a JSON object, got a list"),
    BadExport("npy-views-not-list", "npy", lambda e: edit_json(e, lambda m: m.update(views="ego")),
              lambda e: f"{e / 'skill_export.json'}: field 'views' must be a list, got the "
                        "string 'ego'"),
    BadExport("npy-view-with-separator", "npy",
              lambda e: edit_json(e, lambda m: m.update(views=["ego", "../exo1"])),
              lambda e: f"{e / 'skill_export.json'}: field 'views': view name '../exo1' holds "
                        "the path separator"),
    BadExport("npy-labels-twice", "npy",
              lambda e: edit_json(e, lambda m: m.update(labels=["Novice", "Novice"])),
              lambda e: f"{e / 'skill_export.json'}: field 'labels' names 'Novice' twice"),
    BadExport("npy-geometry-text", "npy",
              lambda e: edit_json(e, lambda m: m["geometry"].update(clips="2")),
              lambda e: f"{e / 'skill_export.json'}: field 'geometry' needs 'clips' as a "
                        "positive integer, got the string '2'"),
    BadExport("npy-no-provenance", "npy", lambda e: edit_json(e, lambda m: m.pop("provenance")),
              lambda e: f"{e / 'skill_export.json'}: no field 'provenance'"),
    BadExport("npy-newer-version", "npy",
              lambda e: edit_json(e, lambda m: m["skill_export"].update(format_version=99)),
              lambda e: f"{e / 'skill_export.json'}: field 'skill_export' has format_version a "
                        "number (99); this skill reads 1, 2 and 3"),
    BadExport("hdf5-duplicate-take", "hdf5", h5_edit(h5_set("takes/id", 2, "t0")),
              lambda e: f"{e}: takes/id[2]: take t0 is listed twice"),
    BadExport("hdf5-empty-take", "hdf5", h5_edit(h5_set("takes/id", 1, "")),
              lambda e: f"{e}: takes/id[1]: take name '' is empty"),
    BadExport("hdf5-unknown-label", "hdf5", h5_edit(h5_set("takes/label", 3, "Guru")),
              lambda e: f"{e}: takes/id[3]: take t3: not a target of the export's task "
                        "classification: unknown label 'Guru'"),
    BadExport("hdf5-views-not-json", "hdf5", h5_edit(h5_attr("views", "ego, exo1")),
              lambda e: f"{e}: attribute 'views': invalid JSON at line 1 column 1"),
    BadExport("hdf5-views-not-text", "hdf5", h5_edit(h5_attr("views", 3)),
              lambda e: f"{e}: attribute 'views' must be JSON text, got int64"),
    BadExport("hdf5-labels-object", "hdf5", h5_edit(h5_attr("labels", "{}")),
              lambda e: f"{e}: attribute 'labels' must be a list, got an object"),
    BadExport("hdf5-geometry-without-dim", "hdf5", h5_edit(h5_geometry_without_dim),
              lambda e: f"{e}: attribute 'geometry' needs 'dim' as a positive integer, got null"),
    BadExport("hdf5-no-valid", "hdf5", h5_edit(lambda f: f.__delitem__("valid")),
              lambda e: f"{e}: no dataset 'valid': not a complete skill export"),
    BadExport("hdf5-valid-of-another-shape", "hdf5",
              h5_edit(h5_replace("valid", np.ones((3, 2), dtype=bool))),
              lambda e: f"{e}: valid has shape (3, 2), its metadata say (n, 2)"),
    BadExport("hdf5-takes-not-a-group", "hdf5", h5_edit(h5_replace("takes", np.zeros(4))),
              lambda e: f"{e}: no dataset 'takes/id'"),
    BadExport("hdf5-view-disagrees", "hdf5",
              h5_edit(h5_replace("view", np.array([b"exo1", b"ego"]))),
              lambda e: f"{e}: dataset 'view' names ['exo1', 'ego'], attribute 'views' "
                        "['ego', 'exo1']"),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_EXPORTS, ids=[bad.id for bad in BAD_EXPORTS])
def test_a_broken_export_is_refused_in_one_line_before_anything_is_written(exports, bad, tmp_path):
    source = exports[bad.fmt]
    export = tmp_path / source.name
    if source.is_dir():
        shutil.copytree(source, export, symlinks=True)
    else:
        shutil.copy(source, export)
    bad.corrupt(export)
    store = tmp_path / "i.zarr"
    code, output = invoke_cli("import", "features", str(export), "--store", str(store))
    expected = bad.expect(export)
    assert_one_line_error(code, output, *(expected if isinstance(expected, tuple) else [expected]))
    left = {p.name for p in tmp_path.iterdir()} - {export.name, "elsewhere.npy"}
    assert left == set(), left  # no store, no staging store, no lock file


def test_an_export_of_format_1_still_imports(exports, tmp_path):
    export = shutil.copytree(exports["npy"], tmp_path / "npy")
    as_version_1(export)
    assert not [p for p in export.iterdir() if p.is_dir()]
    code, output = invoke_cli("import", "features", str(export), "--store", str(tmp_path / "i"))
    assert code == 0, output
    tokens = TokenStore.open(tmp_path / "i").read_tokens(np.arange(4), np.arange(2))
    np.testing.assert_array_equal(tokens[:, :, 0, 0, 0], [[1, 2], [11, 12], [21, 22], [31, 32]])


def test_a_manifest_label_the_export_lacks_is_refused(exports, tmp_path):
    touch(tmp_path, "v/ego.mp4")
    edited = tmp_path / "npy"
    shutil.copytree(exports["npy"], edited)
    two = task_record("classification", {"labels": ["Novice", "Early Expert"]})
    edit_json(edited, lambda m: m.update(labels=two["schema"]["labels"], task=two))
    edit_csv(edited, lambda t: [row.__setitem__(2, "Novice") for row in t[1:]])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(skill_line(f"t{i}", label="Late Expert").replace(
        '"label": "Novice", ', "") + "\n" for i in range(4)))  # fmt: skip
    store = tmp_path / "i.zarr"
    code, output = invoke_cli("import", "features", str(edited), "--manifest", str(manifest),
                              "--store", str(store))  # fmt: skip
    assert_one_line_error(
        code,
        output,
        f"{manifest}: take t0: not a target of the export's "
        "task classification: unknown label 'Late Expert'",
    )
    assert not store.exists()


# ---- HDF5 export on a full disk ------------------------------------------------------------
@pytest.fixture
def disk(tmp_path) -> Path:
    """An empty folder that the plan mounts a small tmpfs on (tests/full_disk.py)."""
    problem = small_disk_problem(tmp_path)
    if problem:
        pytest.skip(problem)
    folder = tmp_path / "disk"
    folder.mkdir()
    return folder


# Three exports to a full disk; the default run fills the disk under a fit (test_write_errors).
@pytest.mark.slow
def test_hdf5_export_on_a_full_disk_ends_in_one_line_and_the_same_command_then_works(
    tmp_path, disk
):
    """HDF5 crashes at exit (SIGSEGV) on a file it cannot flush unless the export closes it
    cleanly. The disk fills at the start, among the tokens, and in the metadata HDF5 writes as
    it closes the file."""
    store = named_store(tmp_path / "s.zarr", [f"t{i}" for i in range(40)], ["ego", "exo1"], 512)
    reference = tmp_path / "reference.h5"
    assert invoke_cli("export", str(store), str(reference))[0] == 0
    size = reference.stat().st_size
    out = disk / "e.h5"
    args = ["export", str(store), str(out)]
    leaves = (0, size // 2, size - 2 * PAGE)
    steps = [
        step
        for leave in leaves
        for step in ({"fill": leave}, {"skill": args}, {"list": True}, {"free": True})
    ]
    steps += [{"skill": args}, {"list": True}]  # fmt: skip
    results = on_small_disk(disk, steps, tmp_path / "kept", size_mb=2)
    for k, leave in enumerate(leaves):
        full, after = results[4 * k + 1], results[4 * k + 2]
        assert full["code"] == 2, (leave, full)
        output = (full["stdout"] + full["stderr"]).strip()
        want = f"error: {out}: could not write the export: the disk is full (No space left on "
        assert output == want + "device); nothing was kept", (leave, output)
        assert after["files"] == {}, leave  # no export, no temporary
    again, after = results[-2:]
    assert again["code"] == 0, again["stderr"]
    assert list(after["files"]) == ["e.h5"]
    assert h5_contents(tmp_path / "kept" / "e.h5").keys() == h5_contents(reference).keys()
    for key, want in h5_contents(reference).items():
        np.testing.assert_array_equal(h5_contents(tmp_path / "kept" / "e.h5")[key], want, key)


def h5_contents(path: Path) -> dict:
    contents = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: contents.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)  # fmt: skip
        contents.update({f"@{key}": f.attrs[key] for key in f.attrs})
    return contents
