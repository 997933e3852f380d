"""The package layout is the architecture: a module imports only from its own layer or the ones below."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "distrec"
# metrics (full ranking, target items) sit below the models because training loops early-stop on them
LAYERS = [
    ("distrec", "distrec.config", "distrec.registry", "distrec.content_id", "distrec.files", "distrec.memory"),
    ("distrec.data",),
    ("distrec.metrics",),
    ("distrec.models",),
    ("distrec.attacks", "distrec.defenses"),
    ("distrec.evaluation",),
    ("distrec.distributed",),
    ("distrec.tasks",),
    ("distrec.study",),
    ("distrec.workflows",),
    ("distrec.cli",),
]


def layer(module: str) -> int:
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > depth:
                best, depth = i, len(p)
    return best


def imports(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distrec"):
            out += [
                (
                    f"{node.module}.{a.name}"
                    if layer(f"{node.module}.{a.name}") is not None and node.module == "distrec"
                    else node.module,
                    node.lineno,
                )
                for a in node.names
            ]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("distrec")]
    return out


MODULES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT.parent)) for p in MODULES])
def test_imports_point_down(path):
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
    own = layer(module)
    upward = [f"line {line}: {name}" for name, line in imports(path) if layer(name) > own]
    assert not upward, f"{module} (layer {own}) imports from higher layers: {upward}"


def test_the_layering_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from distrec.study.engine import execute\n")
    assert [layer(n) for n, _ in imports(bad)] == [8] and layer("distrec.models.base") == 3
