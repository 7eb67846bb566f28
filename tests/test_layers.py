"""The package's shape: layers that import one way, no import cycles, apps on the public API, small modules.

Every import statement counts: module level, inside functions and under
``TYPE_CHECKING`` alike, because each one is a dependency someone can trip
over (an import cycle that only bites on first call is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "flexcache"

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS = (
    ("core", ("flexcache.core",)),
    ("kernels", ("flexcache.kernels",)),
    ("codec", ("flexcache.codec",)),
    ("store", ("flexcache.store",)),
    # What the engine reads of quality: the rules file format and the audits' bookkeeping.
    ("quality-core", ("flexcache.quality.rules", "flexcache.quality.audits")),
    ("engine", ("flexcache.engine",)),
    ("integrations", ("flexcache.integrations",)),
    # The public facade: `import flexcache` and the documented public paths of errors and config.
    ("facade", ("flexcache", "flexcache.errors", "flexcache.config")),
    ("toyworld", ("flexcache.toyworld",)),
    # Scorers and calibration: they run pipelines (the toy world's among them) through the public API.
    ("quality", ("flexcache.quality",)),
    ("demo", ("flexcache.demo",)),
    ("benchmarks", ("flexcache.benchmarks",)),
    ("serving", ("flexcache.serving",)),
    ("cli", ("flexcache.cli", "flexcache.__main__")),
)
# What the apps (toy world, demo, benchmarks, cli) may import from the library: the facade and the
# layer packages' own namespaces, never a module inside a layer, never a name that starts with "_".
PUBLIC_MODULES = frozenset({
    "flexcache", "flexcache.errors", "flexcache.config", "flexcache.core", "flexcache.kernels", "flexcache.codec",
    "flexcache.codec.lossless", "flexcache.store", "flexcache.engine", "flexcache.integrations.diffusers",
    "flexcache.integrations.tiny", "flexcache.quality", "flexcache.quality.rules",
})
APP_LAYERS = ("toyworld", "quality", "demo", "benchmarks", "serving", "cli")
MAX_MODULE_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, best_length = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "flexcache" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_length:
                best, best_length = rank, len(prefix)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer; add it to LAYERS in tests/test_layers.py")
    return best


def imports_of(module: str) -> list[tuple[str, tuple[str, ...], int]]:
    """``(imported flexcache module, names taken from it, line)`` for every import statement in `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "flexcache" or alias.name.startswith("flexcache."):
                    found.append((alias.name, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not (base == "flexcache" or base.startswith("flexcache.")):
                continue
            plain = []
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:  # `from package import submodule`
                    found.append((f"{base}.{alias.name}", (), node.lineno))
                else:
                    plain.append(alias.name)
            if plain:
                found.append((base, tuple(plain), node.lineno))
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_imported_flexcache_module_exists():
    missing = [f"{module}:{line} imports {target}" for module, edges in GRAPH.items()
               for target, _, line in edges if target not in MODULES]
    assert not missing, missing


def test_every_imported_name_exists():
    # Function-level imports run only when called: a moved name must not wait for a user to find it.
    import importlib

    broken = []
    for module, edges in GRAPH.items():
        for target, names, line in edges:
            if target not in MODULES or target == "flexcache.__main__":
                continue
            loaded = importlib.import_module(target)
            broken.extend(f"{module}:{line} imports {target}.{name}" for name in names
                          if name != "*" and not hasattr(loaded, name))
    assert not broken, "\n".join(broken)


def test_layers_import_one_way():
    upward = []
    for module, edges in GRAPH.items():
        for target, _, line in edges:
            if target in MODULES and layer_of(target) > layer_of(module):
                upward.append(f"{module}:{line} ({LAYERS[layer_of(module)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    # Tarjan's strongly connected components over the module graph.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _, _ in GRAPH[node]:
            if target not in MODULES:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            self_import = any(target == node for target, _, _ in GRAPH[node])
            if len(component) > 1 or self_import:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_apps_use_the_public_api_only():
    private = []
    for module, edges in GRAPH.items():
        layer = layer_of(module)
        if LAYERS[layer][0] not in APP_LAYERS:
            continue
        for target, names, line in edges:
            target_layer = layer_of(target)
            if LAYERS[target_layer][0] in APP_LAYERS:  # the apps' own modules
                continue
            if target not in PUBLIC_MODULES:
                private.append(f"{module}:{line} imports {target}, not a public module")
            private.extend(f"{module}:{line} imports the private name {target}.{name}"
                           for name in names if name.startswith("_") and name != "__version__")
    assert not private, "\n".join(private)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines; a module past {MAX_MODULE_LINES} holds two ideas"


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a core module importing the engine is reported."""
    fake = tmp_path / "flexcache" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def late():\n    from flexcache.engine.cache import FlexCache\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path / "flexcache")
    monkeypatch.setitem(MODULES, "flexcache.core.bad", fake / "bad.py")
    edges = imports_of("flexcache.core.bad")
    assert edges == [("flexcache.engine.cache", ("FlexCache",), 2)]
    assert layer_of("flexcache.engine.cache") > layer_of("flexcache.core.bad")
