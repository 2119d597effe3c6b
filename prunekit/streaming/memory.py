"""How much memory this process can still take: the kernel's MemAvailable, bounded by the headroom
of every memory cgroup above the process (a container's or a Slurm job's limit is invisible in
/proc/meminfo, which describes the whole machine)."""
from __future__ import annotations

from pathlib import Path

UNLIMITED = 1 << 60     # cgroup v1 writes "no limit" as a page-rounded LONG_MAX


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text == "max" or not text.lstrip("-").isdigit() else int(text)


def _stat(path: Path, key: str) -> int:
    """One counter of memory.stat (0 when absent)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def mem_available(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_paths(proc: Path) -> dict[int, str]:
    """This process's memory cgroup per hierarchy version: {1: path} from the v1 line naming the
    memory controller, {2: path} from the v2 line ("0::path")."""
    out = {}
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            out[2] = path
        elif "memory" in controllers.split(","):
            out[1] = path
    return out


def _levels(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and its ancestors up to the mount; a path the mount does not show (a
    container sees the host's path but mounts only its own cgroup) falls back to the mount itself."""
    folder = mount / path.lstrip("/")
    if not folder.is_dir():
        return [mount]
    levels = [folder]
    while folder != mount:
        folder = folder.parent
        levels.append(folder)
    return levels


def _headroom(folder: Path, version: int) -> int | None:
    """Limit minus usage; page cache the kernel would drop first (inactive files) counts as free,
    as it does in MemAvailable. None without a limit."""
    if version == 1:
        limit, usage = _read_int(folder / "memory.limit_in_bytes"), _read_int(folder / "memory.usage_in_bytes")
        inactive = _stat(folder / "memory.stat", "total_inactive_file")
    else:
        limit, usage = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
        inactive = _stat(folder / "memory.stat", "inactive_file")
    if limit is None or usage is None or limit >= UNLIMITED:
        return None
    return max(0, limit - max(0, usage - inactive))


def cgroup_headroom(proc: Path, cgroup_root: Path) -> int | None:
    """The smallest headroom over the memory cgroups above this process, v1 and v2; None if none is limited."""
    mounts = {1: [cgroup_root / "memory"], 2: [cgroup_root, cgroup_root / "unified"]}
    rooms = []
    for version, path in _cgroup_paths(proc).items():
        for mount in mounts[version]:
            if mount.is_dir():
                rooms += [r for r in (_headroom(f, version) for f in _levels(mount, path)) if r is not None]
    return min(rooms) if rooms else None


def available_memory(proc: str | Path = "/proc", cgroup_root: str | Path = "/sys/fs/cgroup") -> int | None:
    """Bytes this process can still allocate: MemAvailable, bounded by the cgroup headroom; None
    where /proc/meminfo is absent (not Linux)."""
    avail = mem_available(Path(proc))
    if avail is None:
        return None
    room = cgroup_headroom(Path(proc), Path(cgroup_root))
    return avail if room is None else min(avail, room)
