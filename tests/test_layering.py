"""The structure ARCHITECTURE.md promises: each room imports only what its "may import" cell
lists, the cache imports no torch, heads never see a backbone or a decoder, and no two
modules import each other (directly or around a circle), lazy imports inside functions
included. A room may be a folder inside another (`pipeline/decode/`): its own row rules its
modules, and a cell may name one module of another room (`pipeline/sampling.py`). The rules
are read from ARCHITECTURE.md itself, so the page and the code agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "skill"
ROOM_ROW = re.compile(r"^\|\s*`(?P<room>[^`]+)`\s*\|(?P<cells>.*)\|\s*$")


def rooms() -> dict[str, dict[str, set[str]]]:
    """ARCHITECTURE.md's folder table: room -> {"may": skill rooms it may import,
    "never": third-party modules it must not import}."""
    table = {}
    page = (REPO / "ARCHITECTURE.md").read_text()
    section = page.split("\n## Rooms\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        match = ROOM_ROW.match(line)
        if not match:
            continue
        cells = [cell.strip() for cell in match["cells"].split("|")]
        may, never = cells[-2], cells[-1]
        table[match["room"].rstrip("/")] = {
            "may": set(re.findall(r"`([^`]+)`", may)) if "everything" not in may else {"*"},
            "never": set(re.findall(r"`([^`]+)`", never)),
        }
    return table


def modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> file."""
    found = {}
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO)
        if relative.parts[0] in ("tests", "bench", "build") or relative.parts[0].startswith("."):
            continue
        parts = [PACKAGE, *relative.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def room_of(module: str) -> str:
    """`skill.pipeline.extract` -> `pipeline`; a top-level module is its own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_path(module: str) -> str:
    """`skill.pipeline.decode.pool` -> `pipeline/decode/pool`."""
    return "/".join(module.split(".")[1:]) or module


def listed_room(module: str, table: dict) -> str | None:
    """The most specific row of the table whose folder holds `module` (`pipeline/decode` for
    `skill.pipeline.decode.pool`), or the row of a top-level module (`cli.py`); None if none."""
    path = module_path(module)
    folders = [room for room in table if path == room or path.startswith(room + "/")]
    if folders:
        return max(folders, key=len)
    return f"{path}.py" if f"{path}.py" in table else None


def names_module(entry: str, module: str) -> bool:
    """Whether a may-import entry (`cache/`, `errors.py`, `pipeline/sampling.py`) covers
    `module`."""
    path, entry = module_path(module), entry.rstrip("/")
    if entry.endswith(".py"):
        return path == entry.removesuffix(".py")
    return path == entry or path.startswith(entry + "/")


def room_file(room: str) -> str:
    return room if (REPO / room).is_dir() else f"{room}.py"


def test_architecture_lists_every_room():
    listed = rooms()
    present = {room_of(m) for m in modules() if m != PACKAGE}
    missing = {room for room in present if room_file(room) not in listed and room not in listed}
    assert not missing, f"ARCHITECTURE.md's folder table lacks {sorted(missing)}"


def test_the_rooms_of_the_issue_have_rows_of_their_own():
    # Decoding, tasks and interop are rooms with rules of their own, not parts of another's.
    table = rooms()
    for module in ("skill.pipeline.decode.pool", "skill.tasks.registry", "skill.interop.export"):
        assert listed_room(module, table) == module_path(module).rsplit("/", 1)[0], module


@pytest.mark.parametrize("module", sorted(modules()))
def test_each_module_imports_only_what_its_room_may(module):
    table = rooms()
    room = listed_room(module, table)
    if room is None:
        pytest.skip(f"{module}: its room is checked by test_architecture_lists_every_room")
    mods = modules()
    rule, known = table[room], {room_of(m) for m in mods} | {PACKAGE}
    wrong = []
    for name in imports_of(mods[module]):
        top = name.split(".")[0]
        if top in rule["never"] or name in rule["never"]:
            wrong.append(f"{name} (never imported here)")
        if top != PACKAGE or "*" in rule["may"] or room_of(name) not in known:
            continue
        while name not in mods and "." in name:  # skill.errors.ConfigError -> skill.errors
            name = name.rsplit(".", 1)[0]
        home = listed_room(name, table) if name != PACKAGE else PACKAGE
        inside = home == room or (home or "").startswith(room.removesuffix(".py") + "/")
        if not inside and not any(names_module(entry, name) for entry in rule["may"]):
            wrong.append(f"{name} (not in `{room}`'s may-import list)")
    assert not wrong, f"{module} imports {wrong}"


def test_no_import_cycles_between_modules():
    mods = modules()
    graph = {
        module: {
            target
            for name in imports_of(path)
            for target in (name, name.rsplit(".", 1)[0])
            if target in mods and target != module and not module.startswith(target + ".")
        }
        for module, path in mods.items()
    }
    # A package's __init__ that imports its own modules to register them is not a cycle.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not (t.startswith(module + "."))}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
