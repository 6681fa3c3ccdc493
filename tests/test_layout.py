"""The house rules of docs/decisions.md: imports only run downward, no circles, and no
package imports another's private (`_name`) modules or names.

Every `import` counts, including those inside functions (a lazy import is still a
dependency). Floors, from the ground up:

    base         version, errors, devices,   nothing of ours
                 configs,
                 options (CLI conventions),
                 outputs (--out checks, atomic writes),
                 recipes (settings as data),
                 lazy (the packages' faces)
    data         image I/O, changepair/1     base
    model        MetaUAS, encoder, ckpts     base
    changegen    sources, synthesis          base, data
    inference    maps, prompts, predict      base, model, data
    evaluation   benchmarks, metrics         base, model, data, inference
    trainer      stream, loop, DDP           base, model, data, and one validation room:
                                             trainer/validation.py also uses inference and
                                             evaluation (real folders score as evaluate);
                                             trainer/bench.py also uses changegen (it makes
                                             its own builtin pairs)
    top          cli, demo, bench_all        anything
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "metauas"
BASE = {
    "metauas.version",
    "metauas.errors",
    "metauas.devices",
    "metauas.configs",
    "metauas.options",
    "metauas.outputs",
    "metauas.recipes",
    "metauas.lazy",
}
ALLOWED = {
    "base": set(),
    "data": {"base"},
    "model": {"base"},
    "changegen": {"base", "data"},
    "inference": {"base", "model", "data"},
    "evaluation": {"base", "model", "data", "inference"},
    "trainer": {"base", "model", "data"},
    "top": {"base", "data", "changegen", "model", "inference", "evaluation", "trainer", "top"},
}
# rooms allowed more than their area: the trainer's one validation room, and its benchmark
ROOMS = {
    "metauas.trainer.validation": {"inference", "evaluation"},
    "metauas.trainer.bench": {"changegen"},
}


def area(module: str) -> str:
    if module in BASE:
        return "base"
    if module == "metauas":  # the package's face: `metauas.load` is the API, imported on use
        return "top"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or parts[1] in ALLOWED else "top"


def imports(path: Path, top: Path) -> set[str]:
    """The `metauas` modules a file imports (resolving `from metauas.x import y` to
    `metauas.x.y` when y is a module of ours)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("metauas")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metauas"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if module_path(top, sub) else node.module)
    return found


def module_path(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def graph(root: Path) -> dict[str, set[str]]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return {name: imports(path, root.parent) for name, path in modules.items()}


def violations(root: Path) -> list[str]:
    """Every upward import and every import circle, as readable lines."""
    edges = graph(root)
    found = []
    for module, targets in edges.items():
        allowed = ALLOWED[area(module)] | ROOMS.get(module, set())
        for target in sorted(targets):
            same = area(target) == area(module)
            if not (same or area(target) in allowed or target in allowed):
                found.append(f"{module} imports {target} ({area(module)} may use {sorted(allowed) or 'nothing'})")
    found += [f"import circle: {' -> '.join(c)}" for c in circles(edges)]
    return found


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One path per strongly connected loop, found by depth-first search."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges or nxt == node:
                continue
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def package(module: str) -> str:
    """`metauas.evaluation.report` -> evaluation; a top module is its own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def private_imports(files: list[Path], root: Path) -> list[str]:
    """Every import of a private name (a `_module` on the path, or an imported `_name`)
    that crosses a package boundary (benchmarks/ are a package of their own)."""
    found = []
    for path in files:
        rel = path.relative_to(root).with_suffix("")
        mine = package(".".join(rel.parts)) if rel.parts[0] == "metauas" else rel.parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metauas."):
                targets = [(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [(alias.name, "") for alias in node.names if alias.name.startswith("metauas.")]
            else:
                continue
            for module, name in targets:
                hidden = [p for p in [*module.split(".")[2:], name] if p.startswith("_") and not p.startswith("__")]
                if hidden and package(module) != mine:
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports {hidden[0]} from {module}")
    return found


def test_the_package_keeps_the_house_rules():
    assert violations(ROOT) == []


def test_no_package_imports_private_names_of_another():
    files = sorted(ROOT.rglob("*.py")) + sorted((ROOT.parent / "benchmarks").rglob("*.py"))
    assert private_imports(files, ROOT.parent) == []


def test_the_private_rule_catches_a_crossing(tmp_path):
    for name, code in {
        "metauas/demo.py": "from metauas.evaluation.report import _fmt, table\n",
        "metauas/evaluation/evaluate.py": "from metauas.evaluation.report import _fmt\n",
        "benchmarks/q.py": "import metauas.model._hidden\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)
    found = private_imports(sorted(tmp_path.rglob("*.py")), tmp_path)
    assert found == [
        "benchmarks/q.py:1 imports _hidden from metauas.model._hidden",
        "metauas/demo.py:1 imports _fmt from metauas.evaluation.report",
    ]


def test_the_rules_catch_an_upward_import_and_a_circle(tmp_path):
    pkg = tmp_path / "metauas"
    for folder in ("data", "changegen", "model", "inference", "evaluation", "trainer"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "data" / "format.py").write_text("import metauas.errors\n")
    (pkg / "changegen" / "run.py").write_text("from metauas.data import format\n")
    (pkg / "inference" / "predict.py").write_text("from metauas.changegen.run import x\n")
    (pkg / "model" / "network.py").write_text("def f():\n    from metauas.trainer import train\n")
    (pkg / "trainer" / "train.py").write_text("from metauas.model.network import f\n")
    (pkg / "trainer" / "losses.py").write_text("from metauas.evaluation import metrics\n")
    (pkg / "trainer" / "validation.py").write_text("from metauas.evaluation import metrics\n")
    (pkg / "changegen" / "a.py").write_text("from metauas.changegen import b\n")
    (pkg / "changegen" / "b.py").write_text("from metauas.changegen.a import x\n")
    found = violations(pkg)
    assert any(line.startswith("metauas.model.network imports metauas.trainer.train") for line in found)
    assert any(line.startswith("metauas.inference.predict imports metauas.changegen.run") for line in found)
    assert any(line.startswith("metauas.trainer.losses imports metauas.evaluation") for line in found)
    assert not any(line.startswith("metauas.trainer.validation") for line in found)
    assert any("import circle" in line and "metauas.changegen.a" in line for line in found)
    assert not any(line.startswith(("metauas.data.format", "metauas.changegen.run")) for line in found)
