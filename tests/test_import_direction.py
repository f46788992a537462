"""Architecture rule: corpus/ is the floor; recall/, decontam/, synth/ import corpus/, never each other."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("corpus", "decontam", "recall", "synth")
ALLOWED = {"corpus": {"corpus"}, "decontam": {"decontam", "corpus"}, "recall": {"recall", "corpus"},
           "synth": {"synth", "corpus"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value).split(".")[0])
    return found & set(PACKAGES)


def test_import_direction() -> None:
    violations = []
    checked = 0
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            checked += 1
            bad = imported_packages(path) - ALLOWED[pkg]
            if bad:
                violations.append(f"{path.relative_to(REPO)} imports {', '.join(sorted(bad))}")
    assert checked > 10
    assert violations == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("import decontam.index\nfrom synth import engines\nx = __import__('recall.model')\n")
    assert imported_packages(p) == {"decontam", "synth", "recall"}
