"""docs/configuration.md lists exactly the settings the code reads, with the defaults the code
gives them, the values docker-compose.yaml sets and the chart values that set them.

What the code reads is found here, never listed by hand:

* Python (``PYTHON_SOURCES``), from its syntax tree: ``os.environ[...]``, ``os.getenv``, and
  ``.get`` / ``.setdefault`` / ``.pop`` / ``in`` on a mapping named ``environ``, ``env`` or
  ``environment``; a call that hands such a mapping and a variable name to a helper
  (``_positive_int(env, "SANDBOX_MAX_KERNELS")``); every string that is a whole
  ``SANDBOX_*``, ``FILE_SERVER_*``, ``NOTEBOOK_*``, ``JUPYTER_GATEWAY_*``, ``EG_*`` or
  ``KERNEL_*`` name (the traitlets' ``env`` tags among them); a prefix completed by the fields
  of its class (``"SANDBOX_RESPONSE_" + field.name.upper()``); the fields of every
  pydantic-settings class, by its ``env_prefix`` and aliases.
* Shell (``SHELL_SOURCES``): ``${NAME:-default}`` and every upper-case variable a script reads
  without assigning it.

``KERNEL_*`` names are what a start request carries: they belong in the table of variables a
client may send, checked against the launchers' rules, not in the settings tables.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import inspect
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from sandbox_gateway import settings as gateway_settings
from sandbox_gateway.launchers import rules

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
CHART = REPO / "charts" / "mini-jupyter-sandbox"
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
PYTHON_SOURCES = (
    "sandbox_gateway",
    "fileserver",
    "controller",
    "client/jupyter_kernel_client",
    "sandbox_notebook",
    "images",
)
SHELL_SOURCES = ("images", "kernels/bootstrap")

# The doc's sections that stand for a compose service, a chart component.
COMPOSE_SECTIONS = {
    "gateway": "Gateway",
    "egress": "Egress",
    "notebook": "Notebook",
    "fileserver": "File server",
}
CHART_SECTIONS = {**COMPOSE_SECTIONS, "controller": "Controller", "kernelspec": "Kernels"}
COMPOSE_FILE_SECTION = "Compose file"
CLIENT_SECTION = "Client"
CHART_VALUES_SECTION = "Chart values"
GATEWAY_DEPLOYMENT_TABLE = "Settings in compose and in the chart"
KERNEL_TABLE = "Variables a client may send"

OWN_NAME = re.compile(
    r"(?:SANDBOX|FILE_SERVER|NOTEBOOK|JUPYTER_GATEWAY|EG|KERNEL)_[A-Z0-9_]*[A-Z0-9]"
)
OWN_PREFIX = re.compile(
    r"(?:SANDBOX|FILE_SERVER|NOTEBOOK|JUPYTER_GATEWAY|EG|KERNEL)_(?:[A-Z0-9]+_)*"
)
PROJECT_NAME = re.compile(r"(?:SANDBOX|FILE_SERVER|NOTEBOOK|JUPYTER_GATEWAY)_[A-Z0-9_]+")
"""Names of the project's own settings: listed only if the code reads them."""
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAPPINGS = frozenset({"environ", "env", "environment"})
CODE = re.compile(r"`([^`]+)`")
UNSET = "—"


# --- what the code reads ------------------------------------------------------------------------


@dataclass
class Reads:
    """Variable name -> where it is read, and the defaults the code spells out for it."""

    where: dict[str, set[str]] = field(default_factory=dict)
    defaults: dict[str, set[str]] = field(default_factory=dict)

    def add(self, name: str | None, where: str, default: str | None = None) -> None:
        if name is None or not VARIABLE.fullmatch(name) or name.upper() != name:
            return
        self.where.setdefault(name, set()).add(where)
        if default:
            self.defaults.setdefault(name, set()).add(default)

    def names(self) -> set[str]:
        return set(self.where)


def _is_mapping(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in MAPPINGS
    return isinstance(node, ast.Attribute) and node.attr in MAPPINGS


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and type(node.value) in (str, int, float):
        return str(node.value)
    return None


def _class_fields(cls: ast.ClassDef) -> list[str]:
    return [
        stmt.target.id
        for stmt in cls.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
    ]


def _settings_names(cls: ast.ClassDef) -> list[str]:
    """The variables a pydantic-settings class reads: its aliases, else prefix + field name (and
    both with ``validate_by_name``/``populate_by_name``)."""
    prefix, by_name = "", False
    for stmt in cls.body:
        if (
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "model_config" for t in stmt.targets)
            and isinstance(stmt.value, ast.Call)
        ):
            for keyword in stmt.value.keywords:
                value = keyword.value
                if keyword.arg == "env_prefix" and isinstance(value, ast.Constant):
                    prefix = str(value.value)
                if keyword.arg in ("validate_by_name", "populate_by_name"):
                    by_name = isinstance(value, ast.Constant) and value.value is True
    names = []
    for stmt in cls.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        name = stmt.target.id
        if name == "model_config" or name.startswith("_"):
            continue
        aliases: list[str] = []
        if isinstance(stmt.value, ast.Call):
            for keyword in stmt.value.keywords:
                if keyword.arg not in ("alias", "validation_alias"):
                    continue
                if isinstance(keyword.value, ast.Constant):
                    aliases.append(str(keyword.value.value))
                elif isinstance(keyword.value, ast.Call):
                    aliases += [
                        str(a.value) for a in keyword.value.args if isinstance(a, ast.Constant)
                    ]
        names += [alias.upper() for alias in aliases]
        if not aliases or by_name:
            names.append((prefix + name).upper())
    return names


def python_reads(source: str, where: str, reads: Reads) -> None:
    """Add the variables ``source`` reads; a name it builds some other way fails here."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def name_of(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and node.id in constants:
            return str(constants[node.id])
        return None

    def completed(prefix: str, node: ast.AST) -> None:
        owner = parents.get(node)
        while owner is not None and not isinstance(owner, ast.ClassDef):
            owner = parents.get(owner)
        fields = _class_fields(owner) if owner is not None else []
        assert fields, f"{where}: which variables {prefix!r} + ... stands for is unknown"
        for name in fields:
            reads.add(prefix + name.upper(), where)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func, args = node.func, node.args
            if (
                isinstance(func, ast.Attribute)
                and func.attr in ("get", "setdefault", "pop")
                and _is_mapping(func.value)
                and args
            ):
                reads.add(name_of(args[0]), where, _literal(args[1]) if len(args) > 1 else None)
            elif (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            ):
                if args:
                    reads.add(name_of(args[0]), where, _literal(args[1]) if len(args) > 1 else None)
            else:  # a helper given the environment and a name: _number(env, "X", "1", float)
                for i, arg in enumerate(args[:-1]):
                    if _is_mapping(arg) and name_of(args[i + 1]):
                        default = _literal(args[i + 2]) if len(args) > i + 2 else None
                        reads.add(name_of(args[i + 1]), where, default)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if _is_mapping(node.value):
                reads.add(name_of(node.slice), where)
        elif isinstance(node, ast.Compare):
            if any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and any(
                _is_mapping(c) for c in node.comparators
            ):
                reads.add(name_of(node.left), where)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and OWN_NAME.fullmatch(node.value):
                reads.add(node.value, where)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            prefix = name_of(node.left)
            if prefix and OWN_PREFIX.fullmatch(prefix):
                completed(prefix, node)
        elif isinstance(node, ast.JoinedStr) and len(node.values) > 1:
            first, second = node.values[0], node.values[1]
            prefix = name_of(first)
            if prefix and OWN_PREFIX.fullmatch(prefix) and isinstance(second, ast.FormattedValue):
                completed(prefix, node)
        elif isinstance(node, ast.ClassDef):
            bases = [
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
            ]
            if any(base.endswith("BaseSettings") for base in bases):
                for name in _settings_names(node):
                    reads.add(name, where)


SHELL_EXPANSION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-=?+])([^}]*)\}")
SHELL_USE = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)")
SHELL_ASSIGN = re.compile(
    r"(?:^|[\s;(&|])(?:export\s+|local\s+|readonly\s+)?([A-Z_][A-Z0-9_]*)\+?="
    r"|\bfor\s+([A-Z_][A-Z0-9_]*)\s+in\b"
)
SHELL_OWN = frozenset(
    {"SECONDS", "RANDOM", "LINENO", "PWD", "OLDPWD", "IFS", "PPID", "UID", "EUID"}
)


def shell_reads(source: str, where: str, reads: Reads) -> None:
    """Add what a shell script reads from its environment: ``${NAME:-...}`` and the like, and any
    upper-case variable it uses without assigning it."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    assigned = {a or b for a, b in SHELL_ASSIGN.findall(code)}
    for name, operator, word in SHELL_EXPANSION.findall(code):
        default = word if operator in ("-", ":-", "=", ":=") and "$" not in word else None
        reads.add(name, where, default)
    for name in SHELL_USE.findall(code):
        if name not in assigned and name not in SHELL_OWN:
            reads.add(name, where)


def _is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    try:
        first = path.read_bytes()[:64].split(b"\n", 1)[0]
    except OSError:
        return False
    return first.startswith(b"#!") and first.rstrip().endswith((b"sh", b"bash"))


def code_reads() -> Reads:
    """Everything the sources read, scanned afresh."""
    reads = Reads()
    for root in PYTHON_SOURCES:
        for path in sorted((REPO / root).rglob("*.py")):
            python_reads(path.read_text(), str(path.relative_to(REPO)), reads)
    for root in SHELL_SOURCES:
        for path in sorted((REPO / root).rglob("*")):
            if path.is_file() and _is_shell_script(path):
                shell_reads(path.read_text(), str(path.relative_to(REPO)), reads)
    for name in gateway_settings.env_names():
        reads.add(name, "sandbox_gateway/settings.py")
    return reads


def settings_classes() -> dict[str, type]:
    """The pydantic-settings classes, by the section that lists their variables."""
    from controller.settings import ControllerSettings
    from fileserver.settings import Settings

    return {"File server": Settings, "Controller": ControllerSettings}


def settings_env_names(cls: Any) -> dict[str, list[str]]:
    """Field -> the variables pydantic-settings itself reads it from (its environment source's
    own look-up: private, but exact)."""
    from pydantic_settings import EnvSettingsSource

    source = EnvSettingsSource(cls)
    return {
        name: [env.upper() for _, env, _ in source._extract_field_info(info, name)]
        for name, info in cls.model_fields.items()
    }


@functools.cache
def scanned() -> Reads:
    """``code_reads()``, once per run (not to be changed)."""
    return code_reads()


# --- the reference ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    section: str  # the "## " heading
    table: str  # the "### " heading, else the section's
    kind: str  # the first column's header: variable, parameter, value
    names: tuple[str, ...]  # the code spans of the first cell
    cells: Mapping[str, str]  # column header -> cell
    line: str


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def reference_rows(text: str) -> list[Row]:
    rows: list[Row] = []
    section = table = ""
    header: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = table = line[3:].strip()
        elif line.startswith("### "):
            table = line[4:].strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [cell.lower() for cell in cells]
        elif not set(line) <= set("|-: "):
            names = tuple(CODE.findall(cells[0]))
            rows.append(
                Row(section, table, header[0], names, dict(zip(header, cells, strict=False)), line)
            )
    return rows


def variable_rows(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.kind == "variable"]


def is_unset(cell: str) -> bool:
    return cell.startswith(UNSET)


def mentions(cell: str, value: object) -> bool:
    """Whether a default cell states ``value``: its text for a string, any spelling of a number,
    "none"/"empty"/an empty literal for nothing."""
    text = cell.replace("`", "")
    if value is None or value in ("", (), [], {}):
        return text.lower().startswith(("none", "empty", '""', "{}", "[]", "()"))
    if isinstance(value, bool):
        spellings = {str(value), str(value).lower()}
    elif isinstance(value, (int, float)):
        spellings = {str(value), f"{float(value):g}", f"{float(value):.1f}"}
    else:
        spellings = {str(value)}
        with contextlib.suppress(ValueError):
            spellings |= {f"{float(str(value)):g}"}
    return any(re.search(rf"(?<!\w){re.escape(s)}(?!\w)", text) for s in spellings)


DOC_TEXT = DOC.read_text()
ROWS = reference_rows(DOC_TEXT)


# --- compose and the chart ----------------------------------------------------------------------


@functools.cache
def compose_environment() -> dict[str, dict[str, str]]:
    """Service -> the variables compose sets in it (as written, before interpolation)."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    found: dict[str, dict[str, str]] = {}
    for name, service in services.items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        if env:
            found[name] = {key: str(value) for key, value in env.items()}
    return found


COMPOSE_INTERPOLATION = re.compile(
    r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def compose_interpolations() -> dict[str, set[str]]:
    """Variables docker-compose.yaml reads from the environment or .env -> their defaults."""
    found: dict[str, set[str]] = {}
    for line in COMPOSE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        for braced, operator, word, bare in COMPOSE_INTERPOLATION.findall(line):
            defaults = found.setdefault(braced or bare, set())
            if operator in ("-", ":-") and word:
                defaults.add(word)
    return found


def env_example_names() -> set[str]:
    return {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }


def compose_value(value: str) -> str:
    """A compose value as the reference writes it: a required variable's message shortened."""
    return re.sub(r"\$\{(\w+):\?[^}]*\}", r"${\1:?…}", value)


# Values that render every conditional variable of the chart.
CHART_SCENARIOS: list[dict[str, Any]] = [
    {},
    {
        "gateway": {"pool": {"python3": 1}, "sessionClaim": "sessions"},
        "controller": {"publicWebsocketUrl": "wss://sandbox.example.org"},
    },
    {"kernels": {"egress": {"allow": ["pypi.org"]}}},
]
VALUES_REF = re.compile(r"\.Values\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)")


@functools.cache
def chart_environment() -> dict[str, set[str]]:
    """Component -> the variables the chart sets in its container (kernelspec: in the kernelspecs'
    env), over the scenarios that render every conditional one."""
    found: dict[str, set[str]] = {}
    for values in CHART_SCENARIOS:
        with helm_python.Chart.load(CHART) as chart:
            rendered = chart.render(values, name="demo", namespace="sandbox")
        for path, text in rendered.items():
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                if doc.get("kind") == "Deployment":
                    component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
                    for container in doc["spec"]["template"]["spec"]["containers"]:
                        names = {env["name"] for env in container.get("env", [])}
                        found.setdefault(component, set()).update(names)
                elif doc.get("kind") == "ConfigMap":
                    for key, spec in (doc.get("data") or {}).items():
                        if key.endswith("kernel.json"):
                            names = set(yaml.safe_load(spec).get("env", {}))
                            found.setdefault("kernelspec", set()).update(names)
    return found


def template_entries(component: str) -> dict[str, str]:
    """Variable -> the text of its entry in the component's Deployment template: the control
    lines and comments right above ``- name:`` and the lines of its value."""
    path = CHART / "templates" / component / "deployment.yaml"
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    entries: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)- name: ([A-Z_][A-Z0-9_]*)\s*$", line)
        if not match:
            continue
        start = i
        while start > 0 and lines[start - 1].strip().startswith(("#", "{{")):
            start -= 1
        end, indent = i + 1, len(match[1])
        while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > indent:
            end += 1
        entries[match[2]] = "\n".join(lines[start:end])
    return entries


def deployment_names(section: str) -> set[str]:
    """What compose or the chart sets for the component of a section."""
    names: set[str] = set()
    for service, name in COMPOSE_SECTIONS.items():
        if name == section:
            names |= set(compose_environment().get(service, {}))
    for component, name in CHART_SECTIONS.items():
        if name == section:
            names |= chart_environment().get(component, set())
    return names


# --- chart values -------------------------------------------------------------------------------

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def documented_values(text: str) -> list[str]:
    """The paths of values.yaml's ``# --`` keys (helm-docs' convention) that hold no other such
    key: the chart's values.  A list is one value, whatever its items."""
    paths: list[str] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    list_indent: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        indent = len(line) - len(line.lstrip())
        if list_indent is not None:
            if indent > list_indent or (indent == list_indent and stripped.startswith("-")):
                continue
            list_indent = None
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        if stripped.startswith("-"):
            list_indent = indent
            continue
        match = KEY_LINE.match(line)
        if match:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"]))
            if any(c.startswith("# --") for c in comment):
                paths.append(".".join(key for _, key in stack))
        comment = []
    return [p for p in paths if not any(q.startswith(p + ".") for q in paths)]


def values_leaves(node: Any, path: str = "") -> Iterable[str]:
    """Every scalar, list and empty mapping of values.yaml, by path."""
    if isinstance(node, dict) and node:
        for key, child in node.items():
            yield from values_leaves(child, f"{path}.{key}" if path else key)
    else:
        yield path


def value_at(path: str) -> Any:
    node = VALUES
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(path)
        node = node[key]
    return node


VALUES_PATH = re.compile(r"[a-z][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)+")


# --- the generated block ------------------------------------------------------------------------

GENERATED = re.compile(
    r"<!-- generated: (?P<command>[^>]*?) -->\n(?P<block>.*?)<!-- end generated -->", re.DOTALL
)


def test_the_generated_block_is_what_the_generator_prints() -> None:
    match = GENERATED.search(DOC_TEXT)
    assert match, "docs/configuration.md has no generated block"
    assert match["command"] == "python -m sandbox_gateway.settings"
    printed = subprocess.run(
        [sys.executable, "-m", "sandbox_gateway.settings"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == gateway_settings.reference()
    assert match["block"].strip("\n") == printed.strip("\n"), (
        "run `python -m sandbox_gateway.settings` and paste its output between the markers"
    )


def test_the_generator_lists_every_setting_with_its_default() -> None:
    rows = [row for row in ROWS if row.section == "Gateway" and row.table == "Settings"]
    assert {name for row in rows for name in row.names} == set(gateway_settings.env_names())
    for row in rows:
        assert row.cells["default"] and row.cells["meaning"], row.line
        assert "Not set in config" not in row.line, row.line


# --- every setting read is listed, every one listed is read -------------------------------------


def unlisted(reads: Reads, rows: list[Row]) -> list[str]:
    """Variables the code reads that the reference does not list (KERNEL_*: in its table)."""
    listed = {name for row in variable_rows(rows) for name in row.names}
    kernel = {name for row in rows if row.table == KERNEL_TABLE for name in row.names}
    return sorted(
        f"{name} (read in {', '.join(sorted(reads.where[name]))})"
        for name in reads.names()
        if name not in (kernel if name.startswith("KERNEL_") else listed)
    )


def stale(reads: Reads, rows: list[Row]) -> list[str]:
    """Variables listed that nothing reads (or, for Enterprise Gateway's own, that the
    deployment does not set either)."""
    file_names = set(compose_interpolations()) | env_example_names()
    problems = []
    for row in variable_rows(rows):
        for name in row.names:
            if row.section == COMPOSE_FILE_SECTION:
                ok = name in file_names
            elif name in reads.where:
                ok = True
            else:
                own = PROJECT_NAME.fullmatch(name) or name.startswith("KERNEL_")
                ok = not own and name in deployment_names(row.section)
            if not ok:
                problems.append(f"{row.section} / {row.table}: {name}")
    return problems


def test_every_variable_the_code_reads_is_listed() -> None:
    assert unlisted(scanned(), ROWS) == []


def test_every_variable_listed_is_read_or_set_by_the_deployment() -> None:
    assert stale(scanned(), ROWS) == []


def test_the_scan_finds_the_settings_it_must() -> None:
    names = scanned().names()
    # One of each way of reading: traitlets, pydantic-settings with prefix and alias, a prefix
    # and its fields, os.environ, a helper given env, shell with a default and without.
    for name in (
        "SANDBOX_POOL",
        "FILE_SERVER_MAX_UPLOAD_BYTES",
        "SHARED_DATA_DIR",
        "SANDBOX_RESPONSE_MAX_PER_PEER",
        "NOTEBOOK_TOKEN",
        "SANDBOX_MAX_KERNELS",
        "SANDBOX_GC_INTERVAL_SECONDS",
        "EG_RESPONSE_PORT",
        "RESPONSE_ADDRESS",
        "KUBERNETES_SERVICE_PORT",
    ):
        assert name in names, name


PLANTED_PYTHON = {
    'import os\nos.environ.get("SANDBOX_FAKE")\n': {"SANDBOX_FAKE"},
    'import os\nos.getenv("OTHER_FAKE", "1")\n': {"OTHER_FAKE"},
    'import os\nvalue = os.environ["OTHER_FAKE"]\n': {"OTHER_FAKE"},
    'import os\nif "OTHER_FAKE" in os.environ:\n    pass\n': {"OTHER_FAKE"},
    'def f(env):\n    return env.get("OTHER_FAKE", "x")\n': {"OTHER_FAKE"},
    'def f(env):\n    return _number(env, "OTHER_FAKE", "1", float)\n': {"OTHER_FAKE"},
    'import os\nNAME = "OTHER_FAKE"\nos.environ.get(NAME)\n': {"OTHER_FAKE"},
    'MESSAGE = "FILE_SERVER_FAKE"\n': {"FILE_SERVER_FAKE"},
    '"""SANDBOX_NOT_READ is prose."""\nx = f"SANDBOX_NOT_READ must be {1}"\n': set(),
    "class Limits:\n    timeout: float = 5.0\n    max_fakes: int = 1\n\n"
    "    def read(self, environ, name):\n"
    '        return environ.get("SANDBOX_FAKE_" + name.upper())\n': {
        "SANDBOX_FAKE_TIMEOUT",
        "SANDBOX_FAKE_MAX_FAKES",
    },
    "class S(BaseSettings):\n"
    '    model_config = SettingsConfigDict(env_prefix="FAKE_")\n'
    "    knob: int = 1\n"
    '    root: str = Field(default="/", validation_alias=AliasChoices("ROOT_DIR"))\n': {
        "FAKE_KNOB",
        "ROOT_DIR",
    },
}
PLANTED_SHELL = {
    'x="${SANDBOX_FAKE:-1}"\n': {"SANDBOX_FAKE"},
    'echo "$OTHER_FAKE"\n': {"OTHER_FAKE"},
    ': "${OTHER_FAKE:?OTHER_FAKE is required}"\n': {"OTHER_FAKE"},
    'OTHER_FAKE=1\necho "$OTHER_FAKE"\n# $COMMENTED_FAKE\n': set(),
}


@pytest.mark.parametrize("source", PLANTED_PYTHON, ids=range(len(PLANTED_PYTHON)))
def test_the_python_scan_finds_a_planted_read(source: str) -> None:
    reads = Reads()
    python_reads(source, "planted.py", reads)
    assert reads.names() == PLANTED_PYTHON[source]


@pytest.mark.parametrize("source", PLANTED_SHELL, ids=range(len(PLANTED_SHELL)))
def test_the_shell_scan_finds_a_planted_read(source: str) -> None:
    reads = Reads()
    shell_reads(source, "planted.sh", reads)
    assert reads.names() == PLANTED_SHELL[source]


def test_the_checks_notice_a_new_read_and_a_missing_row() -> None:
    # A module that starts reading a variable the reference lacks...
    reads = code_reads()
    path = REPO / "sandbox_gateway" / "metrics.py"
    python_reads(path.read_text() + '\nos.environ.get("SANDBOX_FAKE")\n', "metrics.py", reads)
    before = set(unlisted(scanned(), ROWS))
    assert set(unlisted(reads, ROWS)) - before == {"SANDBOX_FAKE (read in metrics.py)"}
    # ...and a reference that loses a row, or keeps one the code no longer reads.
    row = next(row for row in ROWS if row.names == ("FILE_SERVER_FSYNC",))
    without = reference_rows(DOC_TEXT.replace(row.line + "\n", ""))
    assert set(unlisted(scanned(), without)) - before == {
        "FILE_SERVER_FSYNC (read in fileserver/settings.py)"
    }
    renamed = reference_rows(DOC_TEXT.replace("`FILE_SERVER_FSYNC`", "`FILE_SERVER_GONE`"))
    assert set(stale(scanned(), renamed)) - set(stale(scanned(), ROWS)) == {
        "File server / File server: FILE_SERVER_GONE"
    }


def test_the_pydantic_scan_agrees_with_pydantic_settings() -> None:
    for cls in settings_classes().values():
        tree = ast.parse(Path(inspect.getfile(cls)).read_text())
        node = next(
            n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__
        )
        expected = {env for envs in settings_env_names(cls).values() for env in envs}
        assert set(_settings_names(node)) == expected, cls


# --- KERNEL_* -----------------------------------------------------------------------------------


def test_the_kernel_variables_are_those_the_code_handles() -> None:
    listed = {name for row in ROWS if row.table == KERNEL_TABLE for name in row.names}
    read = {name for name in scanned().names() if name.startswith("KERNEL_")}
    assert sorted(read - listed) == [], "read but not in the table"
    assert sorted(listed - read) == [], "in the table but read nowhere"


def test_the_kernel_variables_reach_the_kernel_as_the_launchers_rule_says() -> None:
    for row in (row for row in ROWS if row.table == KERNEL_TABLE):
        # The launchers' own rule says whether a variable of a start request reaches the kernel.
        reaches = {bool(rules.request_variables({name: "x"})) for name in row.names}
        assert len(reaches) == 1, (
            f"one row mixes variables that reach the kernel and not: {row.line}"
        )
        expected = "yes" if reaches.pop() else "no"
        assert row.cells["reaches the kernel"] == expected, row.line
    listed = {name for row in ROWS if row.table == KERNEL_TABLE for name in row.names}
    assert listed >= rules.LAUNCH_CONTROL_VARS


# --- compose ------------------------------------------------------------------------------------


def test_every_compose_service_with_settings_has_a_section() -> None:
    assert set(compose_environment()) <= set(COMPOSE_SECTIONS)


def test_the_compose_values_are_the_ones_listed() -> None:
    problems = []
    for row in (row for row in variable_rows(ROWS) if "compose" in row.cells):
        service = next((s for s, section in COMPOSE_SECTIONS.items() if section == row.section), "")
        env = compose_environment().get(service, {})
        cell = row.cells["compose"]
        given = [compose_value(env[name]) for name in row.names if name in env]
        if is_unset(cell):
            if given:
                problems.append(f"{row.section}: compose sets {row.names}, the reference says —")
        elif not given or any(CODE.findall(cell)[:1] != [value] for value in given):
            problems.append(
                f"{row.section}: {row.names}: compose has {given}, the reference {cell}"
            )
    for service, env in compose_environment().items():
        section = COMPOSE_SECTIONS.get(service, service)
        listed = {
            name
            for row in ROWS
            if row.section == section and "compose" in row.cells
            for name in row.names
        }
        problems += [
            f"{section}: compose sets {name}, not listed" for name in env if name not in listed
        ]
    assert problems == []


def test_the_compose_file_variables_are_listed_with_their_defaults() -> None:
    listed = {name for row in variable_rows(ROWS) for name in row.names}
    file_rows = [row for row in ROWS if row.section == COMPOSE_FILE_SECTION]
    interpolations = compose_interpolations()
    assert sorted(set(interpolations) - listed) == []
    assert sorted(env_example_names() - listed) == []
    for row in file_rows:
        for name in row.names:
            for default in interpolations.get(name, set()):
                assert mentions(row.cells["default"], default), (name, default)


# --- the chart ----------------------------------------------------------------------------------


def test_every_chart_component_with_settings_has_a_section() -> None:
    assert set(chart_environment()) <= set(CHART_SECTIONS)


def test_the_chart_sets_what_the_reference_says_from_the_values_it_names() -> None:
    problems = []
    for component, names in chart_environment().items():
        section = CHART_SECTIONS[component]
        entries = template_entries(component)
        for name in sorted(names):
            rows = [row for row in ROWS if row.section == section and name in row.names]
            if not rows:
                problems.append(f"{section}: the chart sets {name}, not listed")
            if component != "kernelspec" and name not in entries:
                problems.append(f"{section}: cannot find {name} in the {component} template")
            needed = set(VALUES_REF.findall(entries.get(name, "")))
            for row in (row for row in rows if "chart value" in row.cells):
                cell = row.cells["chart value"]
                if is_unset(cell):
                    problems.append(f"{section}: the chart sets {name}; the reference says —")
                missing = needed - set(CODE.findall(cell))
                if missing:
                    problems.append(f"{section}: {name} comes from {sorted(missing)}: {cell}")
    for row in (row for row in variable_rows(ROWS) if "chart value" in row.cells):
        component = next((c for c, s in CHART_SECTIONS.items() if s == row.section), "")
        if not is_unset(row.cells["chart value"]) and not set(row.names) & chart_environment().get(
            component, set()
        ):
            problems.append(f"{row.section}: the chart does not set {row.names}")
    assert problems == []


def test_every_chart_value_is_listed_once_with_its_default() -> None:
    values = documented_values(VALUES_TEXT)
    listed = [name for row in ROWS if row.section == CHART_VALUES_SECTION for name in row.names]
    assert sorted(set(listed) - set(values)) == [], "listed, but not a value of values.yaml"
    assert sorted(set(values) - set(listed)) == [], "a value of values.yaml that is not listed"
    assert sorted(n for n in set(listed) if listed.count(n) > 1) == []
    # A key without its `# --` comment is not a value of its own: it must lie inside one.
    uncovered = [
        leaf
        for leaf in values_leaves(VALUES)
        if not any(leaf == v or leaf.startswith(v + ".") for v in values)
    ]
    assert uncovered == []
    for row in (row for row in ROWS if row.section == CHART_VALUES_SECTION):
        defaults = CODE.findall(row.cells["default"])
        assert len(defaults) == 1, row.line
        for name in row.names:
            assert yaml.safe_load(defaults[0]) == value_at(name), row.line


def test_every_chart_value_named_exists() -> None:
    top = set(VALUES)
    named = {
        span
        for span in CODE.findall(DOC_TEXT)
        if VALUES_PATH.fullmatch(span) and span.split(".")[0] in top
    }
    assert len(named) > 50
    missing = []
    for path in sorted(named):
        try:
            value_at(path)
        except KeyError:
            missing.append(path)
    assert missing == []


# --- defaults -----------------------------------------------------------------------------------


def test_the_defaults_the_code_spells_out_are_listed() -> None:
    problems = []
    for name, defaults in sorted(scanned().defaults.items()):
        if name.startswith("KERNEL_"):  # request variables: a fallback is not a setting's default
            continue
        cells = [
            row.cells["default"] for row in ROWS if name in row.names and "default" in row.cells
        ]
        for default in sorted(defaults):
            if cells and not any(mentions(cell, default) for cell in cells):
                problems.append(f"{name}: the code's default is {default!r}, the reference {cells}")
    assert problems == []


def test_the_pydantic_settings_are_listed_with_their_defaults() -> None:
    problems = []
    for section, cls in settings_classes().items():
        for name, envs in settings_env_names(cls).items():
            rows = [row for row in ROWS if row.section == section and set(envs) & set(row.names)]
            if len(rows) != 1 or set(rows[0].names) != set(envs):
                problems.append(f"{section}: {envs} should be one row")
                continue
            default = cls.model_fields[name].get_default(call_default_factory=True)
            if isinstance(default, Path):
                default = str(default)
            if not mentions(rows[0].cells["default"], default):
                problems.append(
                    f"{section}: {envs} default {default!r}: {rows[0].cells['default']}"
                )
    assert problems == []


# --- the client ---------------------------------------------------------------------------------

CLIENT_TABLES = {
    "GatewayConfig": ("GatewayConfig",),
    "FileServerConfig": ("FileServerConfig",),
    "Sessions": ("GatewayKernelSession", "AsyncGatewayKernelSession"),
    "AuthenticatedKernelSession": ("AuthenticatedKernelSession",),
    "PrometheusGatewayKernelSession": ("PrometheusGatewayKernelSession",),
    "Pools": ("KernelSessionPool", "AsyncKernelSessionPool"),
}
REQUIRED = inspect.Parameter.empty


def parameters(obj: Any) -> dict[str, Any]:
    """A config's fields or a constructor's named parameters -> default (``REQUIRED``)."""
    if dataclasses.is_dataclass(obj):
        found = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                found[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                found[f.name] = f.default_factory()
            else:
                found[f.name] = REQUIRED
        return found
    return {
        name: p.default
        for name, p in inspect.signature(obj).parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


@pytest.mark.parametrize("table", CLIENT_TABLES)
def test_the_client_parameters_are_listed_with_their_defaults(table: str) -> None:
    import jupyter_kernel_client

    faces = [parameters(getattr(jupyter_kernel_client, name)) for name in CLIENT_TABLES[table]]
    assert all(face == faces[0] for face in faces), f"{CLIENT_TABLES[table]} differ"
    rows = [row for row in ROWS if row.section == CLIENT_SECTION and row.table == table]
    listed = {name: row for row in rows for name in row.names}
    assert list(listed) == list(faces[0]), "the parameters, in their order"
    for name, default in faces[0].items():
        cell = listed[name].cells["default"]
        if default is REQUIRED:
            assert cell == "required", name
        else:
            assert mentions(cell, default), (name, default, cell)


def test_the_client_environment_is_what_the_client_reads() -> None:
    read = {
        name
        for name, where in scanned().where.items()
        if any(w.startswith("client/") for w in where)
    }
    rows = [row for row in ROWS if row.section == CLIENT_SECTION and row.table == "Environment"]
    assert {name for row in rows for name in row.names} == read


def test_every_gateway_setting_has_its_compose_and_chart_row() -> None:
    rows = [row for row in ROWS if row.table == GATEWAY_DEPLOYMENT_TABLE]
    names = [name for row in rows for name in row.names]
    assert sorted(names) == sorted(gateway_settings.env_names())
