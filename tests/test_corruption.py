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
    """The same extraction in the write layout (one chunk per take) and packed."""
    base = tmp_path_factory.mktemp("corrupt-stores")
    out = {}
    for layout_name, pack in (("write", False), ("packed", True)):
        path = base / f"{layout_name}.zarr"
        run_extract(extract_config(dataset, path, pack=pack))
        out[layout_name] = path
    return out


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
         "frame_index cannot be read", None, (5,)),
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
]  # fmt: skip


def _set_ids(store: Path, ids: list[str]) -> None:
    import zarr

    zarr.open_array(str(store / "take"), mode="r+")[: len(ids)] = np.array(ids)


@pytest.fixture
def damaged(request, stores, tmp_path) -> tuple[Case, Path]:
    case: Case = request.param
    path = tmp_path / "s.zarr"
    shutil.copytree(stores[case.layout], path)
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
                              "--out-dir", str(tmp_path / "runs"), "--no-plots")  # fmt: skip
    assert code == 2, output
    assert output.startswith("error: ") and case.read in output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    "damaged",
    [c for c in CASES if c.rows is not None],
    indirect=True,
    ids=[c.name for c in CASES if c.rows is not None],
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
