"""Damage after the fact, as a store meets it when copied, synced half-way or kept on a
failing disk: every case is named by `skill verify` (exit 1) and by every reading command as
one line with exit 2, and no wrong number (zeros, NaN, shifted rows) is ever produced.
`--repair` marks exactly the damaged takes pending and the next extract redoes them."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from skill.cache.store import TokenStore
from skill.pipeline.extract import run_extract
from tests.extract_helpers import (
    assert_same_stores,
    extract_args,
    extract_config,
    flat,
    invoke_cli,
    make_dataset,
)

TAKES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("corrupt") / "data", takes=TAKES)


@pytest.fixture(scope="module")
def stores(dataset, tmp_path_factory) -> dict[str, Path]:
    """The same extraction in the write layout (one chunk per take) and packed, and
    `other`: a store of the same geometry holding the same takes in the reverse order (the
    store a chunk or column is copied from)."""
    base = tmp_path_factory.mktemp("corrupt-stores")
    out = {}
    for layout_name, pack in (("write", False), ("packed", True)):
        path = base / f"{layout_name}.zarr"
        run_extract(extract_config(dataset, path, pack=pack))
        out[layout_name] = path
    reversed_manifest = dataset.parent / "reversed.jsonl"  # video paths are relative to it
    reversed_manifest.write_text("".join(reversed(dataset.read_text().splitlines(True))))
    run_extract(extract_config(reversed_manifest, base / "other.zarr", pack=False))
    out["other"] = base / "other.zarr"
    return out


@pytest.fixture(scope="module")
def run_folder(stores, tmp_path_factory) -> Path:
    """A run fitted on the sound packed store (what `skill predict` is given)."""
    out = tmp_path_factory.mktemp("corrupt-runs")
    code, output = invoke_cli("fit", str(stores["packed"]), "--head", "mean", "--epochs", "1",
                              "--out", str(out), "--no-plots", "--name", "run")  # fmt: skip
    assert code == 0, output
    return out / "run"


def token_file(store: Path, row: int, view: int) -> Path:
    return store / "tokens" / "c" / str(row) / str(view) / "0" / "0" / "0"


def flip_a_byte(path: Path, at: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[min(at, len(data) - 1)] ^= 0xFF
    path.write_bytes(bytes(data))


def write_nan(path: Path, at: int = 8) -> None:
    """NaN stored by a faulty writer, with a valid checksum: the values are refused."""
    from skill.cache.checksum import crc32c

    data = bytearray(path.read_bytes()[:-4])
    data[at : at + 2] = np.uint16(0x7E00).tobytes()
    path.write_bytes(bytes(data) + crc32c(bytes(data)))


def packed_offset(store: Path, row: int, view: int) -> int:
    """Where take `row`, view `view` starts in the first packed token chunk."""
    shape = json.loads((store / "tokens" / "zarr.json").read_text())["shape"]
    return (row * shape[1] + view) * int(np.prod(shape[2:])) * 2


def edit_root_attrs(store: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    change(meta["attributes"])
    (store / "zarr.json").write_text(json.dumps(meta))


def other_store(store: Path) -> Path:
    """The store of the same geometry beside a damaged copy (see the `damaged` fixture)."""
    return store.parent / "other.zarr"


def copy_from(source_store: Path, store: Path, relative: str) -> None:
    """Replace a file or folder of the store by another store's."""
    source, target = source_store / relative, store / relative
    if source.is_dir():
        shutil.rmtree(target)
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def exchange(a: Path, b: Path) -> None:
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def edit_array_meta(store: Path, name: str, change: Callable[[dict], None]) -> None:
    meta = json.loads((store / name / "zarr.json").read_text())
    change(meta)
    (store / name / "zarr.json").write_text(json.dumps(meta))


def set_label(store: Path, row: int, index: int) -> None:
    import zarr

    zarr.open_array(str(store / "label"), mode="r+")[row] = index


def replace_by_folder(path: Path) -> None:
    path.unlink()
    (path / "x").mkdir(parents=True)


def replace_by_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_bytes(b"not a folder")


def take_id(store: Path, row: int) -> str:
    return str(TokenStore.open(store).take_table().ids[row])


@dataclass(frozen=True)
class Case:
    name: str
    layout: str
    damage: Callable[[Path], None]
    verify: str
    """What `skill verify` prints about it (a part of the line)."""
    read: str
    """What reading commands (`fit`, `predict`, `extract`) say (a part of the line)."""
    rows: tuple[int, ...] | None
    """Takes verify names as damaged (None: damage that names no take)."""
    export: str | None = None
    """What `skill export` (which reads every array) says, when it is not `read`."""

    @property
    def export_says(self) -> str:
        return self.export or self.read


CASES = [
    Case("token chunk deleted", "write", lambda s: token_file(s, 2, 0).unlink(),
         "view ego: token chunk missing", "token chunks of complete takes are missing", (2,)),
    Case("token chunk of an exo view deleted", "write", lambda s: token_file(s, 4, 3).unlink(),
         "view exo3: token chunk missing", "view exo3", (4,)),
    Case("token chunk truncated", "write",
         lambda s: token_file(s, 1, 1).write_bytes(token_file(s, 1, 1).read_bytes()[:100]),
         "token chunk truncated", "token chunk short", (1,)),
    Case("token chunk emptied", "write", lambda s: token_file(s, 3, 2).write_bytes(b""),
         "token chunk truncated", "token chunk short", (3,)),
    Case("NaN written into tokens", "write", lambda s: write_nan(token_file(s, 0, 1)),
         "token chunk holds NaN or Inf values", "NaN or Inf", (0,)),
    Case("a bit flipped in a token chunk", "write", lambda s: flip_a_byte(token_file(s, 5, 2), 3),
         "token chunk fails its checksum", "fails its checksum", (5,)),
    Case("a bit flipped in a packed token chunk", "packed",
         lambda s: flip_a_byte(s / "tokens" / "c.0.0.0.0.0", 3),
         "token chunk fails its checksum", "fails its checksum", tuple(range(TAKES))),
    Case("packed token chunk deleted", "packed",
         lambda s: (s / "tokens" / "c.0.0.0.0.0").unlink(),
         "token chunk missing", "token chunks of complete takes are missing",
         tuple(range(TAKES))),
    Case("packed token chunk truncated", "packed",
         lambda s: (s / "tokens" / "c.0.0.0.0.0").write_bytes(b"\0" * 64),
         "token chunk truncated", "token chunk short", tuple(range(TAKES))),
    Case("NaN in a packed token chunk", "packed",
         lambda s: write_nan(s / "tokens" / "c.0.0.0.0.0"),
         "NaN or Inf", "NaN or Inf", (0,)),
    Case("NaN in one take of many in a packed token chunk", "packed",
         lambda s: write_nan(s / "tokens" / "c.0.0.0.0.0", packed_offset(s, 4, 2) + 6),
         "view exo2: token chunk holds NaN or Inf values", "NaN or Inf", (4,)),
    Case("status chunk flipped", "write", lambda s: flip_a_byte(s / "status" / "c" / "3", 5),
         "status cannot be read", "status", (3,)),
    Case("valid chunk flipped", "write",
         lambda s: flip_a_byte(s / "valid" / "c" / "1" / "0", 5),
         "valid cannot be read", "valid", (1,)),
    Case("frame_index chunk flipped", "write",
         lambda s: flip_a_byte(s / "frame_index" / "c" / "5" / "0" / "0" / "0", 5),
         "frame_index cannot be read", None, (5,), export="frame_index"),
    Case("take id chunk deleted", "write",
         lambda s: shutil.rmtree(s / "take" / "c"),
         "rows without a take id", "the take table is damaged", None),
    Case("take ids repeated", "packed",
         lambda s: _set_ids(s, ["a", "a", *[f"t{i}" for i in range(TAKES - 2)]]),
         "take ids given twice: a", "the take table is damaged", None),
    Case("geometry.dim edited", "write",
         lambda s: edit_root_attrs(s, lambda a: a["geometry"].update(dim=64)),
         "tokens has shape", "the store's metadata disagree", None),
    Case("n_takes past the rows", "packed",
         lambda s: edit_root_attrs(s, lambda a: a.update(n_takes=TAKES + 14)),
         f"n_takes is {TAKES + 14} but", "the store's metadata disagree", None),
    Case("views attribute edited", "write",
         lambda s: edit_root_attrs(s, lambda a: a.update(views=["ego", "exo1"])),
         "valid has shape", "the store's metadata disagree", None),
    # ---- placement: intact data in the wrong place
    Case("token chunks of two takes exchanged", "write",
         lambda s: exchange(token_file(s, 1, 0), token_file(s, 2, 0)),
         "view ego: token chunk is not the one written here", "is not the one written here",
         (1, 2)),
    Case("a view's token chunk copied over another view of its take", "write",
         lambda s: shutil.copyfile(token_file(s, 3, 2), token_file(s, 3, 1)),
         "view exo1: token chunk is not the one written here", "is not the one written here",
         (3,)),
    Case("a take's token chunk copied from another store", "write",
         lambda s: shutil.copyfile(token_file(other_store(s), 0, 0), token_file(s, 0, 0)),
         "view ego: token chunk is not the one written here", "is not the one written here",
         (0,)),
    Case("packed token chunk copied from another store", "packed",
         lambda s: shutil.copyfile(packed_other(s) / "tokens" / "c.0.0.0.0.0",
                                   s / "tokens" / "c.0.0.0.0.0"),
         "token chunk is not the one written here", "is not the one written here",
         tuple(range(TAKES))),
    Case("packed tokens copied whole from another store", "packed",
         lambda s: copy_from(packed_other(s), s, "tokens"),
         "packed for store", "packed for store", None),
    Case("take column copied from another store", "packed",
         lambda s: copy_from(packed_other(s), s, "take"),
         "the take column is not what was committed", "the take table is damaged", None),
    Case("label column copied from another store", "write",
         lambda s: copy_from(other_store(s), s, "label"),
         "label column or the task's schema", "the take table is damaged", None),
    Case("token_crc chunks of two takes exchanged", "write",
         lambda s: exchange(s / "token_crc" / "c" / "1" / "0", s / "token_crc" / "c" / "3" / "0"),
         "are not the ones written for it", "are not the ones written for it", (1, 3)),
    # ---- metadata that disagrees with the arrays
    Case("labels attribute reordered", "packed",
         lambda s: edit_root_attrs(s, lambda a: a["task"]["schema"]["labels"].reverse()),
         "label column or the task's schema", "the take table is damaged", None),
    Case("views attribute in another order than the view coordinate", "write",
         lambda s: edit_root_attrs(s, lambda a: a["views"].reverse()),
         "is not the view coordinate", "the store's metadata disagree", None),
    Case("a label index past the labels", "write", lambda s: set_label(s, 2, 9),
         "label values outside 0..3", "label values outside 0..3", None),
    Case("n_takes lowered", "packed",
         lambda s: edit_root_attrs(s, lambda a: a.update(n_takes=TAKES - 2)),
         f"n_takes is {TAKES - 2} but {TAKES} rows were committed", "the take table is damaged",
         None),
    Case("n_takes not an integer", "write",
         lambda s: edit_root_attrs(s, lambda a: a.update(n_takes="6")),
         "wrong type or value: n_takes", "wrong type or value: n_takes", None),
    Case("valid chunk of a complete take deleted", "write",
         lambda s: (s / "valid" / "c" / "2" / "0").unlink(),
         "status says complete but no view is valid", "no view is valid", (2,)),
    Case("frame_index chunk of a complete take deleted", "write",
         lambda s: (s / "frame_index" / "c" / "4" / "0" / "0" / "0").unlink(),
         "frame records (frame_index", None, (4,), export="frame records (frame_index"),
    Case("data type of valid edited", "write",
         lambda s: edit_array_meta(s, "valid", lambda m: m.update(data_type="int8")),
         "valid has data type int8, not bool", "the store's metadata disagree", None),
    Case("dimension names of tokens edited", "packed",
         lambda s: edit_array_meta(s, "tokens", lambda m: m.update(dimension_names=None)),
         "tokens has dimensions None", "the store's metadata disagree", None),
    # ---- things standing where chunks belong
    Case("a token chunk replaced by a folder", "write",
         lambda s: replace_by_folder(token_file(s, 2, 1)),
         "a folder where a token chunk file belongs", "a folder where a token chunk", (2,)),
    Case("a take's token folder replaced by a file", "write",
         lambda s: replace_by_file(s / "tokens" / "c" / "3"),
         "is a file where a folder belongs", "is a file where a folder belongs", (3,)),
    Case("a valid chunk replaced by a folder", "write",
         lambda s: replace_by_folder(s / "valid" / "c" / "5" / "0"),
         "a folder stands where the chunk file", "valid", (5,)),
]  # fmt: skip


def packed_other(store: Path) -> Path:
    """The other store, packed (once per test)."""
    packed = store.parent / "other-packed.zarr"
    if not packed.exists():
        shutil.copytree(other_store(store), packed)
        TokenStore.open(packed, "a").pack()
    return packed


def _set_ids(store: Path, ids: list[str]) -> None:
    import zarr

    zarr.open_array(str(store / "take"), mode="r+")[: len(ids)] = np.array(ids)


@pytest.fixture
def damaged(request, stores, tmp_path) -> tuple[Case, Path]:
    case: Case = request.param
    path = tmp_path / "s.zarr"
    shutil.copytree(stores[case.layout], path)
    shutil.copytree(stores["other"], other_store(path))
    case.damage(path)
    return case, path


@pytest.mark.parametrize("damaged", CASES, indirect=True, ids=[c.name for c in CASES])
def test_verify_names_the_damage_and_exits_1(damaged):
    case, path = damaged
    code, output = invoke_cli("verify", str(path))
    assert code == 1, output
    assert case.verify in output
    if case.rows is not None:
        named = {part.split(" view")[0] for part in output.split("damaged: take ")[1:]}
        assert named == {take_id(path, row) for row in case.rows}


READ_CASES = [c for c in CASES if c.read is not None]  # arrays that fit and predict read


@pytest.mark.parametrize("damaged", READ_CASES, indirect=True, ids=[c.name for c in READ_CASES])
def test_every_reading_command_refuses_with_one_line(damaged, tmp_path):
    case, path = damaged
    code, output = invoke_cli("fit", str(path), "--head", "mean", "--epochs", "1",
                              "--out", str(tmp_path / "runs"), "--no-plots")  # fmt: skip
    assert code == 2, output
    assert output.startswith("error: ") and case.read in output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# `fit` meets every damage in the default run; `predict` and `export` open the store through the
# same reader, so the default run gives them one case per kind (-m slow: all).
OTHER_COMMANDS_IN_DEFAULT_RUN = {
    "token chunk deleted",
    "NaN written into tokens",
    "a bit flipped in a packed token chunk",
    "frame_index chunk flipped",  # only `export` reads frame records
    "take ids repeated",
    "geometry.dim edited",
    "token chunks of two takes exchanged",
    "packed tokens copied whole from another store",
    "a token chunk replaced by a folder",
}


def in_default_run(cases: list[Case], names: set[str]) -> list:
    """The cases as parameters, those not in `names` marked slow."""
    return [
        pytest.param(c, id=c.name, marks=() if c.name in names else pytest.mark.slow) for c in cases
    ]


@pytest.mark.parametrize(
    "damaged", in_default_run(READ_CASES, OTHER_COMMANDS_IN_DEFAULT_RUN), indirect=True
)
def test_predict_refuses_with_one_line(damaged, run_folder, tmp_path):
    case, path = damaged
    out = tmp_path / "pred.csv"
    code, output = invoke_cli("predict", str(path), "--run", str(run_folder), "--out", str(out))
    assert code == 2, output
    assert output.startswith("error: ") and case.read in output
    assert not out.exists()


@pytest.mark.parametrize(
    "damaged", in_default_run(CASES, OTHER_COMMANDS_IN_DEFAULT_RUN), indirect=True
)
def test_export_refuses_with_one_line(damaged, tmp_path):
    case, path = damaged
    out = tmp_path / "export.h5"
    code, output = invoke_cli("export", str(path), str(out))
    assert code == 2, output
    assert output.startswith("error: ") and case.export_says in output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "export" in p.name]


# Repairing and extracting again costs half a second a case: the default run repairs one case
# per kind of damage (a chunk gone, a packed chunk, data in the wrong place); -m slow the rest.
REPAIR_IN_DEFAULT_RUN = {
    "token chunk deleted",
    "NaN in one take of many in a packed token chunk",
    "token chunks of two takes exchanged",
}


@pytest.mark.parametrize(
    "damaged",
    in_default_run([c for c in CASES if c.rows is not None], REPAIR_IN_DEFAULT_RUN),
    indirect=True,
)
def test_repair_then_extract_redoes_exactly_the_damaged_takes(damaged, dataset, stores):
    case, path = damaged
    code, output = invoke_cli("verify", str(path), "--repair")
    assert code == 1 and "takes marked pending" in output, output
    code, output = invoke_cli(*extract_args(dataset, path, "--workers", "0"))
    assert code == 0, output
    redone = int(flat(output).split(" takes extracted")[0].rsplit(" ", 1)[-1])
    assert redone == len(case.rows) or case.layout == "packed"
    assert f"{TAKES - redone} already done" in flat(output)
    assert TokenStore.open(path).n_takes == TAKES  # nothing appended again
    assert_same_stores(path, stores[case.layout])
    assert invoke_cli("verify", str(path))[0] == 0


def test_a_random_subset_of_chunk_files_removed_is_named_exactly(stores, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(stores["write"], path)
    rng = random.Random(7)
    files = sorted(p for p in (path / "tokens" / "c").rglob("*") if p.is_file())
    removed = rng.sample(files, 5)
    for file in removed:
        file.unlink()
    code, output = invoke_cli("verify", str(path))
    assert code == 1
    rows = {int(file.relative_to(path / "tokens" / "c").parts[0]) for file in removed}
    named = {part.split(" view")[0] for part in output.split("damaged: take ")[1:]}
    assert named == {take_id(path, row) for row in rows}
    assert output.count("token chunk missing") == len(removed)


def test_extract_refuses_to_resume_a_store_whose_take_table_is_damaged(dataset, stores, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(stores["write"], path)
    shutil.rmtree(path / "take" / "c")
    code, output = invoke_cli(*extract_args(dataset, path, "--workers", "0"))
    assert code == 2 and "the take table is damaged" in output and "skill verify" in output
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["attributes"]["n_takes"] == TAKES


def test_a_sound_store_verifies(stores):
    for path in stores.values():
        code, output = invoke_cli("verify", str(path))
        assert code == 0 and f"ok ({TAKES} takes, {TAKES} complete takes checked)" in output
