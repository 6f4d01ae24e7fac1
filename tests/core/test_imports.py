"""The project's modules import one another without a cycle: the import graph, built from
every import statement of every module (at module level or inside a function), read with
ast, has no strongly connected component larger than one module."""
import pytest
import ast
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def project_modules() -> dict[str, Path]:
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    files += [str(p.relative_to(ROOT)) for p in ROOT.glob("*.py")]   # new, untracked
    mods = {}
    for f in files:
        if f.startswith("tests/") or not (ROOT / f).exists():
            continue
        name = f[:-3].replace("/", ".")
        mods[name.removesuffix(".__init__")] = ROOT / f
    return mods


def imports_of(path: Path, modules) -> set[str]:
    """Project modules that the file imports (a `from package import module` counts as
    importing the module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                "lazy_modules", "lazy", "import_module"):
            names = [a.value for a in node.args if isinstance(a, ast.Constant)
                     and isinstance(a.value, str)]
        out |= {n for n in names if n in modules}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _graph(keep=lambda m: True):
    modules = project_modules()
    return {m: {d for d in imports_of(p, modules) - {m} if keep(d)}
            for m, p in modules.items() if keep(m)}


@pytest.mark.slow
def test_no_import_cycle_among_the_project_modules():
    """The library, the studies and common/ (benchmarks/ below)."""
    assert cycles(_graph(lambda m: not m.startswith("benchmarks"))) == []


@pytest.mark.slow
def test_no_import_cycle_in_the_benchmarks():
    assert cycles(_graph()) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_protocol_imports_nothing_of_the_project():
    modules = project_modules()
    assert imports_of(modules["protocol"], modules) == set()
