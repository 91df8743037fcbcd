"""`skill extract` on bad input and bad stores: every problem gives a clear message, nothing
already in a store is lost or changed, interrupted runs resume to the same store.

The SIGKILL soak is in test_extract_kill.py; torchrun and concurrent commands in
test_distributed.py.
"""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from skill.cache.files import staging_name
from skill.cache.info import store_summary
from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, STATUS_PENDING, StoreError, TokenStore
from skill.pipeline.extract import run_extract, terminate_as_interrupt
from skill.pipeline.extract_loop import ExtractLoop, interrupts_held
from tests.extract_helpers import (
    MEDIA,
    assert_same_stores,
    cli_command,
    extract_args,
    extract_config,
    file_digests,
    flat,
    hanging_decode,
    invoke_cli,
    make_dataset,
    read_only_mount_problem,
    run_in_read_only_mount,
    snapshot,
    temp_files,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Four synthetic takes (ego + exo1..3)."""
    return make_dataset(tmp_path_factory.mktemp("data"), takes=4)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """One uninterrupted run over the whole dataset."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    summary = run_extract(extract_config(dataset, store))
    assert (summary.completed, summary.failed) == (4, 0)
    return store


def copy_store(store: Path, folder: Path) -> Path:
    target = folder / store.name
    shutil.copytree(store, target)
    return target


def take_ids(manifest: Path) -> list[str]:
    return [json.loads(line)["take"] for line in manifest.read_text().splitlines()]


def test_the_run_record_holds_the_resolved_settings(dataset, reference):
    """Beside the provenance (what makes tokens comparable), the store keeps how its last run
    was made: decoders as the order `auto` stood for, the decode device, workers, batch."""
    from skill.pipeline.decode.registry import DEFAULT_ORDER

    record = TokenStore.open(reference).attrs["extract_run"]
    settings = record["config"]
    cfg = extract_config(dataset, reference)
    assert settings["decoders"] == list(DEFAULT_ORDER) and cfg.decoders == ["auto"]
    assert settings["decode_device"] == "cpu" and settings["frames"] == cfg.frames
    assert settings["manifest"] == str(cfg.manifest) == record["manifest"]
    assert (settings["workers"], settings["batch_size"]) == (cfg.workers, cfg.batch_size)


# ---- resuming -------------------------------------------------------------------------------
def test_a_resumed_run_gives_the_store_of_one_run(dataset, reference, tmp_path):
    store = tmp_path / "s.zarr"
    first = run_extract(extract_config(dataset, store, limit=2))
    assert (first.completed, first.skipped) == (2, 0)
    second = run_extract(extract_config(dataset, store))
    assert (second.completed, second.skipped, second.total) == (2, 2, 4)
    assert_same_stores(store, reference)
    assert store_summary(store)["state"] == "finished"


def test_a_finished_run_packs_the_store_and_an_append_unpacks_it_first(
    dataset, reference, tmp_path
):
    assert store_summary(reference)["layout"] == "packed"
    store = tmp_path / "s.zarr"
    first = run_extract(extract_config(dataset, store, limit=2))
    assert first.relayout == ["packed"] and TokenStore.open(store).is_packed()
    again = run_extract(extract_config(dataset, store, limit=2))  # nothing to write
    assert (again.relayout, again.skipped) == ([], 2)
    second = run_extract(extract_config(dataset, store))
    assert second.relayout == ["unpacked", "packed"]
    assert_same_stores(store, reference)
    unpacked = tmp_path / "u.zarr"
    run_extract(extract_config(dataset, unpacked, pack=False))
    assert set(TokenStore.open(unpacked).layout().values()) == {"write"}
    assert_same_stores(unpacked, reference)


def test_a_store_another_command_wrote_while_the_backbone_loaded_is_opened_again(
    dataset, reference, tmp_path, monkeypatch
):
    """The store is opened once, before the backbone loads. When another command writes it
    in between (here takes 0 and 3, in that order), the run opens it again once it holds the
    writer lock: it appends to what is there, and ends with the store of one run."""
    from skill.pipeline import extract

    lines = dataset.read_text().splitlines()
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join([lines[0], lines[3]]) + "\n")
    store = tmp_path / "s.zarr"
    run_extract(extract_config(dataset, store, limit=1))
    preflight, runs = extract.preflight_store, []

    def another_command_writes_meanwhile(path):
        opened = preflight(path)
        runs.append(path)
        if len(runs) == 1:  # the other command's own preflight is the second
            assert run_extract(extract_config(other, store, root=dataset.parent)).completed == 1
        return opened

    monkeypatch.setattr(extract, "preflight_store", another_command_writes_meanwhile)
    summary = run_extract(extract_config(dataset, store))
    assert len(runs) == 2 and (summary.skipped, summary.completed) == (2, 2)
    assert take_ids(dataset) != list(TokenStore.open(store).take_table().ids)  # other rows
    assert_same_stores(store, reference)


def test_a_pack_cut_short_is_completed_by_the_next_run(dataset, reference, tmp_path):
    from skill.cache import layout

    store = copy_store(reference, tmp_path)
    TokenStore.open(store, "a").unpack()
    # What a run killed while packing leaves: some arrays packed, the others not.
    layout.relayout_array(store, "status", (4,), layout.PACKED_SEPARATOR)
    assert set(TokenStore.open(store).layout().values()) == {"packed", "write"}
    summary = run_extract(extract_config(dataset, store))
    assert (summary.completed, summary.relayout) == (0, ["packed"])
    assert set(TokenStore.open(store).layout().values()) == {"packed"}
    assert_same_stores(store, reference)


def test_ctrl_c_finishes_the_take_being_written_then_stops(
    dataset, reference, tmp_path, monkeypatch
):
    """Ctrl-C arrives as the second take starts its write: that take is completed, the
    command exits 130 with a message, and the next run completes the store."""
    store = tmp_path / "s.zarr"
    real_write = TokenStore.write_take

    def write_then_signal(self, i, result):
        if i == 1:
            signal.raise_signal(signal.SIGINT)  # handled at once, in this thread, mid-write
        real_write(self, i, result)

    monkeypatch.setattr(TokenStore, "write_take", write_then_signal)
    code, output = invoke_cli(*extract_args(dataset, store, "--workers", "0"))
    assert code == 130, output
    assert "interrupted: completed work is kept; run the same command to resume" in output
    status = TokenStore.open(store).status()
    assert status.tolist() == [STATUS_COMPLETE] * 2 + [STATUS_PENDING] * 2
    assert not (store / "tokens" / "c" / "2").exists()  # nothing of the takes not begun
    assert store_summary(store)["state"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    monkeypatch.undo()
    summary = run_extract(extract_config(dataset, store))
    assert (summary.completed, summary.skipped) == (2, 2)
    assert_same_stores(store, reference)


def test_sigterm_is_an_interrupt_held_while_a_take_is_written():
    with terminate_as_interrupt():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"), interrupts_held():
            signal.raise_signal(signal.SIGTERM)
            held = True  # still running: the signal waits for the block to end
        assert held
        with pytest.raises(KeyboardInterrupt, match="SIGINT"), interrupts_held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # a second one: at once
            pytest.fail("the second signal should have raised")
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ---- store problems: refused before anything is written ------------------------------------
def _newer_format(reference: Path, tmp_path: Path) -> Path:
    store = copy_store(reference, tmp_path)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["skill"]["format_version"] = 99
    (store / "zarr.json").write_text(json.dumps(meta))
    return store


def _plain_zarr_group(reference: Path, tmp_path: Path) -> Path:
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3)
    return tmp_path / "plain.zarr"


def _regular_file(reference: Path, tmp_path: Path) -> Path:
    (tmp_path / "tokens.zarr").write_text("not a store")
    return tmp_path / "tokens.zarr"


def _empty_folder(reference: Path, tmp_path: Path) -> Path:
    (tmp_path / "empty.zarr").mkdir()
    return tmp_path / "empty.zarr"


def _missing_parent(reference: Path, tmp_path: Path) -> Path:
    return tmp_path / "no" / "such" / "s.zarr"


@pytest.mark.parametrize(
    ("make_store", "message"),
    [
        (_regular_file, "not a skill store (no zarr.json in a folder)"),
        (_empty_folder, "not a skill store (no zarr.json in a folder)"),
        (_plain_zarr_group, "a Zarr group, but not a skill store"),
        (_newer_format, "store format version 99 is newer than this skill"),
        (_missing_parent, "cannot create the store: folder"),
    ],
    ids=["file", "empty-folder", "zarr-group", "newer-format", "missing-parent"],
)
def test_store_problems_are_refused_and_change_nothing(
    dataset, reference, tmp_path, make_store, message
):
    store = make_store(reference, tmp_path)
    before = file_digests(tmp_path)
    code, output = invoke_cli(*extract_args(dataset, store, "--workers", "0"))
    assert code == 2, output
    assert f"error: {store}: {message}" in output
    assert file_digests(tmp_path) == before


def test_append_with_other_settings_names_every_difference_and_changes_nothing(
    dataset, reference, tmp_path
):
    store = copy_store(reference, tmp_path)
    before = file_digests(store)
    args = extract_args(dataset, store, "--workers", "0", "--tokens", "cls", "--clips", "2")
    code, output = invoke_cli(*args)
    assert code == 2, output
    assert f"{store}: cannot append: the store was extracted with different settings" in output
    for difference in (
        'tokens: store "frame" vs requested "cls"',
        "sampling.clips: store 1 vs requested 2",
        "backbone.token_mode",
    ):
        assert difference in output
    assert file_digests(store) == before


def test_manifest_errors_leave_no_store(dataset, tmp_path):
    lines = dataset.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["label"] = "Grandmaster"
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    store = tmp_path / "s.zarr"
    code, output = invoke_cli(*extract_args(manifest, store, "--root", str(dataset.parent)))
    assert code == 2, output
    assert f"{manifest}:2:" in output and "Grandmaster" in output
    assert not store.exists()


def test_a_second_writer_is_refused_while_one_holds_the_lock(dataset, reference, tmp_path):
    """We chose refusal over cooperation: the second command names the writer and exits 2."""
    store = copy_store(reference, tmp_path)
    before = file_digests(store)
    with TokenStore.open(store, "a").writer_lock():
        code, output = invoke_cli(*extract_args(dataset, store, "--workers", "0"))
        info = store_summary(store)
    assert code == 2, output
    assert f"{store}: another skill extract is writing to this store (pid" in output
    assert info["state"] == "in progress" and info["writer"].startswith("pid")
    assert {k: v for k, v in file_digests(store).items() if k != ".skill.lock"} == {
        k: v for k, v in before.items() if k != ".skill.lock"
    }
    assert store_summary(store)["state"] == "finished"  # the lock died with its holder


# ---- full disk and read-only locations -----------------------------------------------------
def full_disk_when(monkeypatch, condition) -> None:
    """Every zarr file write whose store path satisfies `condition` fails with ENOSPC."""
    import zarr.storage._local as local

    real_put = local._put

    def put(path, value, exclusive=False):
        if condition(Path(path)):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)


def test_a_full_disk_mid_take_names_store_and_take_and_keeps_what_was_done(
    dataset, reference, tmp_path, monkeypatch
):
    store = tmp_path / "s.zarr"
    third = take_ids(dataset)[2]
    # the third take's second view: its first view is on disk, its status is not
    full_disk_when(monkeypatch, lambda p: p.parts[-7:-3] == ("tokens", "c", "2", "1"))
    code, output = invoke_cli(*extract_args(dataset, store, "--workers", "0"))
    assert code == 2, output
    assert f"{store}: could not write take {third} (row 2): the disk is full" in output
    assert "run the same command to resume" in output
    opened = TokenStore.open(store)
    assert opened.status().tolist() == [STATUS_COMPLETE] * 2 + [STATUS_PENDING] * 2
    assert temp_files(store) == []
    monkeypatch.undo()
    run_extract(extract_config(dataset, store))
    assert_same_stores(store, reference)


def test_a_full_disk_while_registering_takes_keeps_the_store_as_it_was(
    dataset, reference, tmp_path, monkeypatch
):
    store = tmp_path / "s.zarr"
    run_extract(extract_config(dataset, store, limit=2))
    before = snapshot(store)
    full_disk_when(monkeypatch, lambda p: True)
    code, output = invoke_cli(*extract_args(dataset, store, "--workers", "0"))
    assert code == 2, output
    assert f"{store}: could not write the take table: the disk is full" in output
    after = snapshot(store)
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def _in_read_only_mount(source: Path, mount: Path, *args: str) -> subprocess.CompletedProcess:
    """`skill <args>` where `mount` is a read-only view of `source`."""
    return run_in_read_only_mount(source, mount, cli_command(*args))


def test_read_only_locations_are_refused_and_the_store_still_reads(dataset, reference, tmp_path):
    problem = read_only_mount_problem(tmp_path)
    if problem:
        pytest.skip(problem)
    source = tmp_path / "source"
    source.mkdir()
    copy_store(reference, source)
    mount = tmp_path / "mount"
    mount.mkdir()
    before = file_digests(source)
    new = _in_read_only_mount(source, mount, *extract_args(dataset, mount / "new.zarr"))
    assert new.returncode == 2, new.stderr
    assert f"{mount / 'new.zarr'}: cannot create the store: {mount} is read-only" in flat(
        new.stderr
    )
    old = _in_read_only_mount(source, mount, *extract_args(dataset, mount / "ref.zarr"))
    assert old.returncode == 2, old.stderr
    assert "the store is read-only here; cannot write to it" in flat(old.stderr)
    info = _in_read_only_mount(source, mount, "info", str(mount / "ref.zarr"), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["completed"] == 4
    assert file_digests(source) == before


# ---- leftovers of killed writes ------------------------------------------------------------
def test_temporary_files_of_killed_writes_are_never_read_and_are_deleted(
    dataset, reference, tmp_path
):
    store = copy_store(reference, tmp_path)
    TokenStore.open(store, "a").unpack()  # writers, and so their leftovers, need this layout
    TokenStore.open(store, "a")._group["status"][3] = np.int8(STATUS_PENDING)
    # What a writer killed between a temp file and its rename leaves: here a "complete"
    # status for the pending take, garbage tokens, and a half-written group metadata.
    complete_status = (store / "status" / "c" / "0").read_bytes()
    planted = {
        store / "status" / "c" / f"3.{uuid.uuid4().hex}.partial": complete_status,
        store / "tokens" / "c" / "0" / "0" / "0" / "0" / f"0.{uuid.uuid4().hex}.partial": b"x",
        store / f"zarr.{uuid.uuid4().hex}.partial": b'{"attributes": {"n_takes": 99}',
    }
    for path, data in planted.items():
        path.write_bytes(data)
    staging = tmp_path / staging_name("ref.zarr", pid=2**22 + 1)  # a killed create: no such pid
    staging.mkdir()
    expected = snapshot(reference)
    expected["status"][3] = STATUS_PENDING
    got = snapshot(store)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    info = store_summary(store)
    assert (info["pending"], info["leftover_temp_files"], info["state"]) == (1, 3, "interrupted")

    summary = run_extract(extract_config(dataset, store))
    assert (summary.removed_temp_files, summary.completed) == (4, 1)
    assert temp_files(store) == [] and not staging.exists()
    assert_same_stores(store, reference)


# ---- bad views ---------------------------------------------------------------------------
def _manifest_with_broken_views(dataset: Path, folder: Path) -> Path:
    """Take 0: ego is garbage; take 1: every view is garbage; takes 2.. untouched."""
    folder.mkdir()
    broken = folder / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    records = [json.loads(line) for line in dataset.read_text().splitlines()[:3]]
    for record in records:
        record["videos"] = {v: str(dataset.parent / p) for v, p in record["videos"].items()}
    records[0]["videos"]["ego"] = str(broken)
    records[1]["videos"] = {view: str(broken) for view in records[1]["videos"]}
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


def test_a_bad_view_is_masked_too_few_good_views_fail_and_retry_replaces_the_record(
    dataset, tmp_path, monkeypatch
):
    manifest = _manifest_with_broken_views(dataset, tmp_path / "bad")
    store = tmp_path / "s.zarr"
    summary = run_extract(extract_config(manifest, store))
    assert (summary.completed, summary.failed, summary.failed_views) == (2, 1, 5)
    opened = TokenStore.open(store)
    assert opened.status().tolist() == [STATUS_COMPLETE, STATUS_FAILED, STATUS_COMPLETE]
    valid, errors = opened.valid(), opened.view_errors()
    assert valid.tolist() == [[False, True, True, True], [False] * 4, [True] * 4]
    assert all(e.startswith("broken.mp4: ") for e in [errors[0, 0], *errors[1]])
    assert errors[2].tolist() == [""] * 4
    assert not opened.read_tokens([0], [0]).any()  # a masked view holds no tokens

    strict = run_extract(extract_config(manifest, tmp_path / "strict.zarr", min_views=4))
    assert (strict.completed, strict.failed) == (1, 2)

    shutil.copy(dataset.parent / "t0002" / "ego.mp4", tmp_path / "bad" / "broken.mp4")  # fixed
    # A retry cut short (full disk half way through the take) withdraws the old "failed"
    # record: the take is pending, never "failed" over a mix of old and new arrays.
    full_disk_when(monkeypatch, lambda p: p.parts[-7:-3] == ("tokens", "c", "1", "2"))
    with pytest.raises(StoreError, match="could not write take"):
        run_extract(extract_config(manifest, store, retry_failed=True))
    assert TokenStore.open(store).status()[1] == STATUS_PENDING
    monkeypatch.undo()
    retried = run_extract(extract_config(manifest, store, retry_failed=True))
    assert (retried.completed, retried.failed, retried.skipped) == (1, 0, 2)
    opened = TokenStore.open(store)
    assert opened.status().tolist() == [STATUS_COMPLETE] * 3
    assert opened.valid()[1].all() and (opened.view_errors()[1] == "").all()
    assert not opened.valid()[0, 0]  # a complete take is never extracted again


# ---- a dataset run over every real media file ----------------------------------------------
def _media_manifest(dataset: Path, folder: Path) -> tuple[Path, list[Path]]:
    """One take per file under ../shared/media (every file, README included) as ego with a
    good exo, and one take with two bad views."""
    files = sorted(p for p in MEDIA.rglob("*") if p.is_file())
    good = dataset.parent / "t0001" / "exo1.mp4"
    records = [
        {"take": f"m{i:02d}", "videos": {"ego": str(f), "exo1": str(good)}, "label": "Novice"}
        for i, f in enumerate(files)
    ]
    bad = [MEDIA / "moviepy__result.webm", MEDIA / "decord__corrupted.mp4"]
    records.append(
        {"take": "allbad", "videos": {"ego": str(bad[0]), "exo1": str(bad[1])}, "label": None}
    )
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest, files


# Extracts the whole media corpus; the default run decodes each file (test_decode).
@pytest.mark.slow
@pytest.mark.skipif(not MEDIA.is_dir(), reason=f"real media corpus not found at {MEDIA}")
def test_every_real_media_file_in_a_dataset_run(dataset, tmp_path):
    """Each view is extracted or failed with a readable reason, nothing crashes; a take keeps
    its good view when the other is bad (min_views 1) and fails when both are bad."""
    manifest, files = _media_manifest(dataset, tmp_path)
    store = tmp_path / "media.zarr"
    summary = run_extract(extract_config(manifest, store, workers=2, timeout_s=120.0))
    opened = TokenStore.open(store)
    ids, status = opened.take_table().ids.tolist(), opened.status()
    valid, errors = opened.valid(), opened.view_errors()
    assert summary.total == len(files) + 1 == len(ids)
    for i, take in enumerate(ids):
        for v, view in enumerate(opened.views):
            reason = str(errors[i, v])
            assert valid[i, v] != bool(reason), f"{take} {view}: valid={valid[i, v]} {reason!r}"
            if reason:
                assert "\n" not in reason and "Traceback" not in reason and len(reason) < 400
    media = {f.name: i for i, f in enumerate(files)}
    assert valid[: len(files), 1].all() and (status[: len(files)] == STATUS_COMPLETE).all()
    assert valid[media["mp4parse__white.mp4"], 0] and valid[media["torchcodec__av1_video.mkv"], 0]
    for name in ("decord__corrupted.mp4", "moviepy__result.webm", "README.md"):
        assert errors[media[name], 0].startswith(f"{name}: ")
    assert status[ids.index("allbad")] == STATUS_FAILED
    assert summary.failed == 1 and summary.failed_views == int((errors != "").sum())


def test_a_backbone_output_with_nan_fails_that_view_and_never_enters_the_store(
    dataset, tmp_path, monkeypatch
):
    real_encode = ExtractLoop._encode
    calls = []

    def encode_with_a_nan(self, clips):
        tokens = real_encode(self, clips)
        if not calls:
            tokens[0, 0, 0] = np.nan  # the first clip of the first batch
        calls.append(len(clips))
        return tokens

    monkeypatch.setattr(ExtractLoop, "_encode", encode_with_a_nan)
    store = tmp_path / "s.zarr"
    summary = run_extract(extract_config(dataset, store))
    opened = TokenStore.open(store)
    errors = opened.view_errors()
    broken = [(t, v) for t in range(opened.n_takes) for v in range(4) if errors[t, v]]
    assert len(broken) == 1 and summary.failed_views == 1
    take, view = broken[0]
    assert errors[take, view].endswith(": the backbone gave NaN or Inf tokens (clip 0)")
    assert not opened.valid()[take, view] and opened.status()[take] == STATUS_COMPLETE
    tokens = opened.read_tokens(np.arange(opened.n_takes), [0, 1, 2, 3])
    assert np.isfinite(tokens).all() and not tokens[take, view].any()


# Waits out a decode timeout; test_decode_pool kills hung workers in the default run.
@pytest.mark.slow
def test_a_hanging_decoder_costs_its_view_only(dataset, tmp_path, monkeypatch):
    """The per-video timeout kills the stuck worker; the take keeps its other views."""
    records = [json.loads(line) for line in dataset.read_text().splitlines()[:2]]
    for record in records:
        record["videos"] = {v: str(dataset.parent / p) for v, p in record["videos"].items()}
    shutil.copy(records[0]["videos"]["ego"], tmp_path / "hang.mp4")
    records[0]["videos"]["ego"] = str(tmp_path / "hang.mp4")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(ExtractLoop, "decode_job", staticmethod(hanging_decode))
    store = tmp_path / "s.zarr"
    summary = run_extract(extract_config(manifest, store, workers=1, timeout_s=8.0))
    opened = TokenStore.open(store)
    assert opened.status().tolist() == [STATUS_COMPLETE, STATUS_COMPLETE]
    assert opened.view_errors()[0].tolist() == ["hang.mp4: timed out after 8 s", "", "", ""]
    assert opened.valid().tolist() == [[False, True, True, True], [True] * 4]
    assert summary.failed_views == 1
