"""The restricted unpickler of annotation pickles: what annotations are made of loads as
`pickle.load` would give it, and anything else is refused by name before it can run."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from skill.pipeline.manifest import read_takes
from skill.pipeline.manifest.safe_pickle import UnsafePickleError, load_pickle


class Malicious:
    """A pickle of it runs a shell command that creates `path` when unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class Reduced:
    """A pickle of it calls `call(*args)` and, with `state`, sets that state (BUILD)."""

    def __init__(self, call, args, state=None):
        self.call, self.args, self.state = call, args, state

    def __reduce__(self):
        return (self.call, self.args) if self.state is None else (self.call, self.args, self.state)


def test_a_pickle_that_would_run_a_command_is_refused_and_never_runs(tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Malicious(control)))  # the payload works: pickle runs it
    assert control.exists()
    target = tmp_path / "pwned"
    data = pickle.dumps({(1, 1): {"final_score": 1.0, "x": Malicious(target)}})
    with pytest.raises(UnsafePickleError, match=rf"x.pkl: refused to unpickle {os.name}.system"):
        load_pickle(data, "x.pkl")
    assert not target.exists()


def test_a_malicious_annotation_file_is_refused_by_read_takes(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    manifest = tmp_path / "final_annotations_dict.pkl"
    manifest.write_bytes(pickle.dumps({(1, 1): Malicious(target)}, protocol=2))
    with pytest.raises(UnsafePickleError) as caught:
        read_takes(manifest, fmt="mtl-aqa", task="regression")
    assert str(caught.value).startswith(f"{manifest}: refused to unpickle ")
    assert "system" in str(caught.value) and "\n" not in str(caught.value)
    assert not target.exists()


@pytest.mark.parametrize(
    "value, named",
    [
        (Reduced(eval, ("1 + 1",)), "builtin__.eval"),  # protocol 2 names builtins __builtin__
        (Reduced(getattr, ("abc", "upper")), "builtin__.getattr"),
        (np.ma.masked_array([1, 2]), "numpy.ma.core._mareconstruct"),
        (np.rec.array([(1,)], dtype=[("a", "i4")]), "numpy.rec"),
        (np.array([1, "a"], dtype=object), "the numpy dtype object"),
        (np.zeros(2, dtype=[("a", "i4")]), "fields"),
        (Reduced(np.dtype, ("V8", False, True), (3, "|", None, None, None, 8, 1, 63)), "flags 63"),
        (Reduced(np.dtype, ("V8", False, True), (3, "|", None, None, None, 800, 1, 0)), "resized"),
        (Path("/etc"), "pathlib"),
    ],
)
def test_what_is_not_plain_data_is_refused_naming_it(value, named: str) -> None:
    with pytest.raises(UnsafePickleError, match="refused to unpickle") as caught:
        load_pickle(pickle.dumps(value, protocol=2), "a.pkl")
    assert named in str(caught.value)


def test_a_persistent_id_and_a_broken_pickle_are_refused() -> None:
    out = io.BytesIO()
    pickler = pickle.Pickler(out)
    pickler.persistent_id = lambda obj: "ext" if obj == "outside" else None
    pickler.dump(["outside"])
    with pytest.raises(UnsafePickleError, match="refused to unpickle a persistent id"):
        load_pickle(out.getvalue(), "a.pkl")
    with pytest.raises(UnsafePickleError, match="a.pkl: not a readable pickle"):
        load_pickle(pickle.dumps({"a": [1, 2, 3]})[:-4], "a.pkl")


PLAIN = {
    (1, 2): {"final_score": 88.0, "difficulty": 3.2, "frames": np.arange(5, dtype=np.int64)},
    ("07", 3): ["407c", np.float64(61.5), np.float32(2.0), np.array([[1.5, 2]], dtype=">f4")],
    "text": ("é", b"\x00\xff", None, True, 2**70, 1.5 + 2j),
    "sets": [{1, 2}, frozenset({"a"})],
    "numpy": [np.array(["ab", "c"]), np.array([1, 2], dtype="M8[D]"), np.int64(4), np.dtype("u2")],
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
}


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_plain_data_and_numpy_arrays_load_as_pickle_gives_them(protocol: int) -> None:
    data = pickle.dumps(PLAIN, protocol=protocol)
    assert same(load_pickle(data, "a.pkl"), pickle.loads(data))
