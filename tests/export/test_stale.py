"""The stale-folder cleaner and the staging names it reads: every kind a killed run can leave
beside an output is found; dead writers' temporaries go, live writers' and resumable runs' stay."""
import logging
import os
import signal
import subprocess
import sys

import pytest

from prunekit.export import staging
from prunekit.export.stale import remove_stale_temporaries
from prunekit.recovery.output import work_dir
from prunekit.streaming import partial_dir


@pytest.fixture
def dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)
    return child.pid


@pytest.fixture
def live_pid():
    child = subprocess.Popen(["sleep", "60"])
    yield child.pid
    child.kill()
    child.wait()


def made_by(pid, make, out, monkeypatch):
    """The folder `make(out)` creates when run by process `pid`, with a file in it."""
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: pid)
        folder = make(out)
    (folder / "model.safetensors").write_bytes(b"\0" * 3000)
    return folder


def test_every_writer_name_parses_back(tmp_path):
    out = tmp_path / "my.model"
    pid = os.getpid()
    for folder, kind, want_pid in [(staging.temporary(out), "tmp", pid), (staging.moved_aside(out), "old", pid),
                                   (staging.recipe_work(out), "recipe", pid), (staging.partial(out), "partial", None),
                                   (staging.recover_work(out), "recover-work", None),
                                   (partial_dir(out), "partial", None), (work_dir(out), "recover-work", None)]:
        assert staging.parse(folder.name) == staging.Staged("my.model", kind, want_pid)
    assert staging.parse(staging.temporary_file(out / "prunekit_report.json").name) == \
        staging.Staged("prunekit_report.json", "tmp", pid)
    # names written before pids were recorded are still recognised, their writer unknown
    assert staging.parse(".out.tmp-k2j_x9ab") == staging.Staged("out", "tmp", None)
    assert staging.parse(".out.recipe-a1b2c3d4") == staging.Staged("out", "recipe", None)
    assert staging.parse(".out.old") == staging.Staged("out", "old", None)
    for other in ("out", ".out", ".out.cache", ".partial", ".out.tmpfoo-1-x", ".git"):
        assert staging.parse(other) is None


@pytest.mark.parametrize("make", [staging.temporary, staging.recipe_work, staging.moved_aside])
def test_dead_writers_folder_is_removed_and_a_live_ones_kept(make, tmp_path, dead_pid, live_pid, monkeypatch, caplog):
    out = tmp_path / "out"
    out.mkdir()     # a moved-aside output is garbage once its replacement is in place
    dead = made_by(dead_pid, make, out, monkeypatch)
    live = made_by(live_pid, make, out, monkeypatch)
    other = made_by(dead_pid, make, tmp_path / "out2", monkeypatch)     # another output's: not this one's
    with caplog.at_level(logging.WARNING, "prunekit"):
        removed = remove_stale_temporaries(out)
    assert removed == [{"path": str(dead), "bytes": 3000}]
    assert not dead.exists() and live.exists() and other.exists()
    assert f"removed {dead} (0.0 MB), left by an interrupted run" in caplog.text


def test_names_from_before_pids_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old_names = [tmp_path / ".out.tmp-k2j_x9ab", tmp_path / ".out.recipe-a1b2c3d4", tmp_path / ".out.old"]
    for p in old_names:
        p.mkdir()
    assert sorted(r["path"] for r in remove_stale_temporaries(out)) == sorted(map(str, old_names))


def test_moved_aside_output_without_its_replacement_is_kept(tmp_path, dead_pid, monkeypatch, caplog):
    out = tmp_path / "out"
    aside = made_by(dead_pid, staging.moved_aside, out, monkeypatch)
    (aside / staging.OLD_ENTRY).mkdir()      # the replace was killed between its two renames
    empty = made_by(dead_pid, staging.moved_aside, out, monkeypatch)     # killed before the first
    (empty / "model.safetensors").unlink()
    with caplog.at_level(logging.WARNING, "prunekit"):
        removed = remove_stale_temporaries(out)
    assert removed == [{"path": str(empty), "bytes": 0}] and aside.is_dir()
    assert "it holds the previous out" in caplog.text and f"mv {aside / 'x'} {out}" in caplog.text


@pytest.mark.parametrize("folder, command", [(staging.partial, "prunekit prune ... --stream"),
                                             (staging.recover_work, "prunekit recover")])
def test_resumable_run_is_kept_with_the_command_that_resumes_it(folder, command, tmp_path, caplog):
    out = tmp_path / "out"
    kept = folder(out)
    kept.mkdir()
    with caplog.at_level(logging.WARNING, "prunekit"):
        assert remove_stale_temporaries(out) == []
    assert kept.is_dir()
    line, = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"kept {kept} ") and f"`{command}" in line and "--resume continues it" in line
    assert f"rm -r {kept}" in line
    caplog.clear()
    with caplog.at_level(logging.WARNING, "prunekit"):
        remove_stale_temporaries(out, own=(staging.parse(kept.name).kind,))   # its own run reports it itself
    assert caplog.records == [] and kept.is_dir()


def test_a_killed_atomic_write_is_found_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    code = ("import os, signal, sys\nfrom prunekit.export.atomic import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n"
            "    (tmp / 'config.json').write_text('{}')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    run = subprocess.run([sys.executable, "-c", code, str(out)])
    assert run.returncode == -signal.SIGKILL
    left, = tmp_path.iterdir()
    assert staging.parse(left.name).kind == "tmp" and not out.exists()
    assert remove_stale_temporaries(out) == [{"path": str(left), "bytes": 2}]
    assert list(tmp_path.iterdir()) == []
