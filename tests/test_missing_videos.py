"""Video files a manifest names but that are not there: `skill extract` lists them all before
decoding (count, the first 20, a list file with every one) and creates no store; with
--skip-missing they become failed views with their reason and the run goes on."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, TokenStore
from skill.pipeline.extract import missing_list_path, run_extract
from skill.pipeline.manifest import MissingVideosError
from tests.extract_helpers import (
    REPO,
    cli_env,
    extract_args,
    extract_config,
    invoke_cli,
    make_dataset,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Twelve synthetic takes (ego + exo1..3): 48 video files."""
    return make_dataset(tmp_path_factory.mktemp("data"), takes=12)


def _records(manifest: Path) -> list[dict]:
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for record in records:  # absolute paths: the manifest can live anywhere
        record["videos"] = {v: str(manifest.parent / p) for v, p in record["videos"].items()}
    return records


def _with_missing(dataset: Path, folder: Path, gone: list[tuple[int, str]]) -> tuple[Path, list]:
    """A copy of the manifest whose (take index, view) videos point to files that do not
    exist; returns it and the missing paths in manifest order."""
    records = _records(dataset)
    missing = []
    for index, view in gone:
        path = str(folder / "gone" / f"{records[index]['take']}-{view}.mp4")
        records[index]["videos"][view] = path
        missing.append(path)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest, missing


def _listed(list_file: Path) -> list[str]:
    header, *rows = list_file.read_text().splitlines()
    assert header.split("\t") == ["take", "view", "path", "problem"]
    return [row.split("\t")[2] for row in rows]


def test_many_missing_files_are_all_listed_and_nothing_is_created(dataset, tmp_path):
    views = ["ego", "exo1", "exo2"]
    gone = [(take, view) for take in range(9) for view in views][:25]  # 25 files, 9 takes
    manifest, missing = _with_missing(dataset, tmp_path / "m", gone)
    store = tmp_path / "s.zarr"
    code, output = invoke_cli(*extract_args(manifest, store))
    assert code == 2, output
    assert "25 video files are missing" in output and "Traceback" not in output
    for path in missing[:20]:
        assert path in output
    for path in missing[20:]:
        assert path not in output  # only the first 20 in the message...
    assert "and 5 more" in output
    list_file = tmp_path / "s.zarr.missing_videos.txt"
    assert str(list_file) in output
    assert _listed(list_file) == missing  # ...every one in the list, in manifest order
    assert "--skip-missing" in output
    assert not store.exists()  # refused before the store is touched


def test_one_missing_file_names_its_line_and_the_list(dataset, tmp_path):
    manifest, missing = _with_missing(dataset, tmp_path / "m", [(3, "exo2")])
    store = tmp_path / "s.zarr"
    with pytest.raises(MissingVideosError) as caught:
        run_extract(extract_config(manifest, store))
    error = caught.value
    take = _records(dataset)[3]["take"]
    assert error.line == 4 and f"take {take} view exo2: video not found" in str(error)
    assert _listed(Path(error.list_file)) == missing
    assert not store.exists()


def test_the_list_goes_to_the_working_folder_when_the_store_folder_is_missing(
    dataset, tmp_path, monkeypatch
):
    manifest, missing = _with_missing(dataset, tmp_path / "m", [(0, "ego"), (5, "exo1")])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    store = tmp_path / "no" / "such" / "folder" / "s.zarr"
    assert missing_list_path(store) == work / "s.zarr.missing_videos.txt"
    with pytest.raises(MissingVideosError, match="2 video files are missing"):
        run_extract(extract_config(manifest, store))
    assert _listed(work / "s.zarr.missing_videos.txt") == missing
    assert not (tmp_path / "no").exists()


def test_skip_missing_records_failed_views_and_goes_on(dataset, tmp_path):
    """Take 0 loses its ego video, take 1 every video (a failed take); `skill info` shows
    each with its reason."""
    gone = [(0, "ego"), *((1, view) for view in ("ego", "exo1", "exo2", "exo3"))]
    manifest, missing = _with_missing(dataset, tmp_path / "m", gone)
    store = tmp_path / "s.zarr"
    code, output = invoke_cli(*extract_args(manifest, store, "--skip-missing", "--limit", "4"))
    assert code == 0, output
    assert "2 takes extracted" not in output and "3 takes extracted, 1 failed" in output
    assert "5 video files missing, recorded as failed views" in output
    opened = TokenStore.open(store)
    assert opened.status().tolist() == [STATUS_COMPLETE, STATUS_FAILED] + [STATUS_COMPLETE] * 2
    valid, errors = opened.valid(), opened.view_errors()
    assert valid.tolist() == [[False, True, True, True], [False] * 4, [True] * 4, [True] * 4]
    assert errors[0, 0] == f"video file missing: {missing[0]}"
    assert errors[1].tolist() == [f"video file missing: {path}" for path in missing[1:]]
    assert not opened.read_tokens([0], [0]).any()  # a masked view holds no tokens
    assert _listed(tmp_path / "s.zarr.missing_videos.txt") == missing

    code, info = invoke_cli("info", str(store))
    assert code == 0, info
    assert "failures (5)" in info and info.count("video file missing:") == 5
    code, as_json = invoke_cli("info", str(store), "--json")
    reasons = {(f["take"], f["view"]): f["reason"] for f in json.loads(as_json)["failures"]}
    takes = [r["take"] for r in _records(dataset)]
    assert reasons == {
        (takes[index], view): f"video file missing: {path}"
        for (index, view), path in zip(gone, missing, strict=True)
    }


def test_a_run_with_nothing_missing_removes_a_stale_list(dataset, tmp_path):
    manifest, _ = _with_missing(dataset, tmp_path / "m", [(0, "ego")])
    store = tmp_path / "s.zarr"
    with pytest.raises(MissingVideosError):
        run_extract(extract_config(manifest, store, limit=2))
    list_file = tmp_path / "s.zarr.missing_videos.txt"
    assert list_file.is_file()
    summary = run_extract(extract_config(dataset, store, limit=2))  # the files are back
    assert (summary.completed, summary.failed, summary.missing_videos) == (2, 0, 0)
    assert not list_file.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_ranks_skip_the_same_missing_files_and_rank_0_lists_them(dataset, tmp_path):
    gone = [(0, "ego"), (4, "exo3"), *((7, view) for view in ("ego", "exo1", "exo2", "exo3"))]
    manifest, missing = _with_missing(dataset, tmp_path / "m", gone)
    reference = tmp_path / "ref.zarr"
    run_extract(extract_config(manifest, reference, skip_missing=True))
    store = tmp_path / "s.zarr"
    args = extract_args(manifest, store, "--workers", "1", "--skip-missing")
    done = _torchrun(args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    a, b = TokenStore.open(store), TokenStore.open(reference)
    by_id = {t: i for i, t in enumerate(b.take_table().ids.tolist())}
    rows = [by_id[t] for t in a.take_table().ids.tolist()]
    assert a.status().tolist() == b.status()[rows].tolist()
    assert a.view_errors().tolist() == b.view_errors()[rows].tolist()
    assert "11 takes extracted, 1 failed" in " ".join(done.stdout.split())
    assert _listed(tmp_path / "s.zarr.missing_videos.txt") == missing

    refused = _torchrun(extract_args(manifest, tmp_path / "t.zarr"))
    assert refused.returncode != 0 and not (tmp_path / "t.zarr").exists()
    assert "6 video files are missing" in " ".join((refused.stdout + refused.stderr).split())


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "skill",
    ]  # fmt: skip
    return subprocess.run(
        torchrun + args, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=400
    )
