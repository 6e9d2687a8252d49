"""The package's layout rules (DESIGN.md section 8), checked on the source: one package per service
over core over infra; a service calls only its own database plus the bus; no import cycle; no private
name across packages; each service reads its environment in one settings module; no function over
80 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "orchestrator"
SERVICES = ("singularity", "genesis", "nexus", "centralcloud", "nats")
# what each layer may import (besides itself)
MAY_IMPORT = {"infra": set(), "core": {"infra"}, **{s: {"core", "infra"} for s in SERVICES},
              "cli": {"infra", "core", *SERVICES}}
# the SQL schemas a layer may name in its SQL text (its own database's, plus the bus's functions)
SCHEMAS = {"singularity": {"core", "outbox", "cdc", "bus", "ops"}, "genesis": {"genesis", "bus"},
           "nexus": {"nexus", "bus"}, "centralcloud": {"centralcloud", "bus"}, "nats": {"nats", "bus"}}
ALL_SCHEMAS = {"core", "outbox", "cdc", "vault", "genesis", "nexus", "centralcloud", "bus", "pgmq", "ops", "cron", "nats"}
# the only modules that read the environment (a settings object each); others get it passed in
ENV_READERS = {"infra/config.py", "infra/settings.py", *(f"{s}/settings.py" for s in SERVICES)}
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
        out[name] = (p, ast.parse(p.read_text(), str(p)))
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(module: str, tree: ast.Module, is_pkg: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import of an orchestrator module, relative ones resolved."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("orchestrator")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_pkg else -1]
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("orchestrator"):
                out.append((name, [a.name for a in node.names], node.lineno))
    return out


MODS = modules()


def resolve(name: str, names: list[str]) -> list[str]:
    """The modules an import reaches: `from pkg import mod` counts as importing pkg.mod."""
    got = [f"{name}.{n}" for n in names if f"{name}.{n}" in MODS]
    return got or [name]


def test_layers_import_only_downwards():
    bad = []
    for mod, (path, tree) in MODS.items():
        me = layer(mod)
        for target, names, line in imports(mod, tree, path.name == "__init__.py"):
            for t in resolve(target, names):
                other = layer(t)
                if other and other != me and other not in MAY_IMPORT.get(me, set()):
                    bad.append(f"{path.relative_to(PKG.parent)}:{line} ({me}) imports {t} ({other})")
    assert not bad, "a layer imports a layer it may not:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = {m: set() for m in MODS}
    for mod, (path, tree) in MODS.items():
        for target, names, _line in imports(mod, tree, path.name == "__init__.py"):
            for t in resolve(target, names):
                if t in MODS and t != mod and not mod.startswith(t + "."):
                    graph[mod].add(t)
    seen, stack, cycles = set(), [], []

    def visit(m: str) -> None:
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(graph[m]):
            visit(n)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_crosses_a_package():
    bad = []
    for mod, (path, tree) in MODS.items():
        for target, names, line in imports(mod, tree, path.name == "__init__.py"):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and layer(target) != layer(mod):
                    bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {target}.{n}")
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        defined |= {t.attr for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Attribute)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and node.attr not in defined):
                bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} uses ._{node.attr[1:]} of another module")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_environment_is_read_only_by_settings_modules():
    bad = []
    for _mod, (path, tree) in MODS.items():
        rel = str(path.relative_to(PKG))
        if rel in ENV_READERS:
            continue
        for node in ast.walk(tree):
            reads = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                     and node.func.attr in ("get", "getenv", "pop")
                     and ast.unparse(node.func.value) in ("os.environ", "os")) \
                or (isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ"
                    and isinstance(node.ctx, ast.Load))
            if reads and not (ast.unparse(node).startswith("os.get") and "getenv" not in ast.unparse(node)):
                bad.append(f"orchestrator/{rel}:{node.lineno} reads {ast.unparse(node)[:60]}")
    assert not bad, "environment read outside the settings modules:\n" + "\n".join(bad)


def test_services_call_only_their_own_database_and_the_bus():
    bad = []
    pattern = re.compile(r"\b(" + "|".join(sorted(ALL_SCHEMAS)) + r")\.([a-z_]+)\s*\(?")
    for mod, (path, tree) in MODS.items():
        me = layer(mod)
        if me not in SCHEMAS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"\bSELECT\b|\bCALL\b", node.value):
                for m in pattern.finditer(node.value):
                    if m.group(1) not in SCHEMAS[me]:
                        bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} ({me}) names {m.group(0)}")
    assert not bad, "SQL naming another database's schema:\n" + "\n".join(bad)


def test_sql_from_services_is_function_calls_not_table_statements():
    bad = []
    table_sql = re.compile(r"^\s*(INSERT\s+INTO|UPDATE\s+\w+\.\w+\s+SET|DELETE\s+FROM|TRUNCATE)\b", re.I | re.M)
    for mod, (path, tree) in MODS.items():
        if layer(mod) not in SCHEMAS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and table_sql.search(node.value):
                bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno}: {node.value.strip()[:70]}")
    assert not bad, "table statements in a service (use a SQL function):\n" + "\n".join(bad)


@pytest.mark.parametrize("limit", [MAX_FUNCTION_LINES])
def test_no_function_is_longer_than_the_limit(limit):
    long = []
    for _mod, (path, tree) in MODS.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    long.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {limit} lines:\n" + "\n".join(long)
