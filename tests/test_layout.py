"""The package's layout is its architecture (docs/architecture.md): lower rooms never import
higher ones, the core never imports a web framework or Ray, and no module grows past 550 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cmcr"

# room -> floor; a module may import its own floor and the floors below. A room is a subpackage
# or a top-level module (docs/architecture.md draws the same floors).
FLOORS: dict[str, int] = {
    "version": 0, "errors": 0,
    "config_files": 1, "recipes": 1, "config": 1, "runtime": 1,
    "data": 2, "spaces": 3, "method": 4, "extend": 5,
    "embed": 6, "encoders": 6, "distributed": 7, "pipeline": 8,
    "eval": 9, "study": 10, "serve": 10, "world": 11, "cli": 12, "__main__": 12,
}
CORE = ("config", "config_files", "recipes", "runtime", "data", "spaces", "method", "extend")
APPLICATION_PACKAGES = ("starlette", "uvicorn", "fastapi", "ray", "flask")


def room_of(module: str) -> str | None:
    """'cmcr.method.model' -> 'method'; 'cmcr' itself (the lazy public names) -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "cmcr" else None


def module_of(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def upward_imports(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "__init__.py":
            continue  # the public API names every room (lazily)
        own = room_of(module_of(path, package))
        for name in imported(path):
            target = room_of(name)
            if target in FLOORS and own in FLOORS and FLOORS[target] > FLOORS[own]:
                found.append(f"{module_of(path, package)} imports {name}")
    return found


def test_every_room_has_a_floor():
    rooms = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir()
                                                     if (p / "__init__.py").is_file()}
    assert rooms - {"__init__"} <= set(FLOORS), rooms - set(FLOORS)


def test_no_room_imports_a_higher_one():
    assert upward_imports(PACKAGE) == []


def test_the_rule_sees_an_upward_import(tmp_path):
    """spaces/ importing world/ (as spaces/tiny.py once imported the world's tokenizer) fails."""
    (tmp_path / "cmcr" / "spaces").mkdir(parents=True)
    (tmp_path / "cmcr" / "spaces" / "tiny.py").write_text(
        "def build():\n    from cmcr.world.tokenizer import write_bpe_files\n")
    assert upward_imports(tmp_path / "cmcr") == [
        "cmcr.spaces.tiny imports cmcr.world.tokenizer",
        "cmcr.spaces.tiny imports cmcr.world.tokenizer.write_bpe_files"]


@pytest.mark.parametrize("room", CORE)
def test_the_core_never_imports_a_web_framework_or_ray(room):
    paths = [PACKAGE / f"{room}.py"] if (PACKAGE / f"{room}.py").is_file() else \
        sorted((PACKAGE / room).rglob("*.py"))
    for path in paths:
        heavy = [n for n in imported(path) if n.split(".")[0] in APPLICATION_PACKAGES]
        assert heavy == [], (path, heavy)


def test_few_top_level_modules_and_none_too_long():
    assert len(list(PACKAGE.glob("*.py"))) <= 12
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 550}
    assert long == {}


def test_ex_mcr_lives_in_one_package():
    outside = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if "extend" not in p.relative_to(PACKAGE).parts[:1]
               and any(word in p.read_text(encoding="utf-8") for word in
                       ("class ExMcrHead", "def train_extend", "def unify(", "def dense_loss"))]
    assert outside == []


def test_connect_stays_the_public_function_whatever_was_imported_first():
    import subprocess
    import sys

    code = ("import cmcr.world.demo, cmcr.pipeline, cmcr\n"
            "assert callable(cmcr.connect) and cmcr.connect.__module__ == 'cmcr.pipeline'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-1500:]


def test_no_function_over_sixty_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert long == []
