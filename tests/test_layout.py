"""The package layout shows the architecture: dependencies point one way, no import cycles, ``ops/``
needs no BasicSR, and each YAML ``type`` is found in a file named after it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'converse_plugin'

# layer of each top-level part of the package: a module may import only from its own layer or below
LAYERS = {
    'errors': 0, 'compat': 0,
    'ops': 1,
    'registries': 2,
    'archs': 3,
    'io': 4, 'zoo': 4,
    'data': 5, 'metrics': 5, 'models': 5,
    'engine': 6,
    'cli': 7, 'integrations': 7, '__main__': 7,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob('*.py'):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        found['.'.join(parts)] = path
    return found


def _imports(path: Path, module: str) -> set[str]:
    """Every converse_plugin module that ``path`` imports, anywhere in the file (also inside functions)."""
    out = set()
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f'{base}.{a.name}' for a in node.names}
    return {m for m in out if m.startswith('converse_plugin')}


def _part(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


MODULES = _modules()
GRAPH = {m: {i for i in _imports(p, m) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_every_part_has_a_layer():
    assert {_part(m) for m in MODULES if _part(m)} <= set(LAYERS), 'add new top-level parts to LAYERS'


@pytest.mark.parametrize('module', sorted(m for m in MODULES if _part(m)))
def test_imports_point_down(module):
    layer = LAYERS[_part(module)]
    upward = [i for i in GRAPH[module] if _part(i) and LAYERS[_part(i)] > layer]
    assert not upward, f'{module} (layer {layer}) imports from above: {upward}'


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if nxt == 'converse_plugin' or nxt.startswith(node + '.'):
                continue  # a package's own __init__ importing its submodules
            if state.get(nxt) == 1 and not node.startswith(nxt + '.'):
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError('import cycle: ' + ' -> '.join(cycle))
            if not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if not state.get(module):
            visit(module)


def test_ops_imports_no_basicsr_and_nothing_above_it():
    for module, path in MODULES.items():
        if _part(module) != 'ops':
            continue
        text = path.read_text()
        assert not re.search(r'^\s*(from|import)\s+basicsr', text, re.M), f'{module} imports BasicSR'


def _normal(name: str) -> str:
    return re.sub(r'[^a-z0-9]', '', name.lower())


def test_each_yaml_type_is_in_a_file_named_after_it():
    import converse_plugin  # noqa: F401  (registers everything)
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

    stems = {}
    for module, path in MODULES.items():
        stem = re.sub(r'_(arch|dataset|model)$', '', path.stem)
        stems.setdefault(_normal(stem), []).append(path)
    missing = []
    for registry in (ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY):
        for name, obj in registry:
            if not getattr(obj, '__module__', '').startswith('converse_plugin'):
                continue
            files = stems.get(_normal(re.sub(r'(Dataset|Model)$', '', name)), [])
            if not any(name in f.read_text() for f in files):
                missing.append(f'{registry._name}:{name} (defined in {obj.__module__})')
    assert not missing, f'YAML types without a file named after them: {missing}'


ROOT = PACKAGE.parent


def test_readme_is_a_short_users_document():
    """The README stays at most 16 KB (details go to docs/) and starts with the two quick-start commands."""
    text = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert len(text.encode('utf-8')) <= 16 * 1024, 'README.md is over 16 KB: move details to docs/'
    quick = text.split('## Quick start', 1)[1].split('##', 1)[0]
    assert 'make demo' in quick and 'make test' in quick


def test_no_internal_issue_numbers_in_file_names_or_docs():
    """Files and sections are named by what they do, never by an issue number of our tracker."""
    tracked = [p for top in ('benchmarks', 'converse_plugin', 'docs', 'options', 'scripts', 'tests')
               for p in (ROOT / top).rglob('*') if '__pycache__' not in p.parts]
    assert not [p for p in tracked if re.search(r'issue_?\d', p.name, re.IGNORECASE)]
    for doc in [ROOT / 'README.md', *(ROOT / 'docs').glob('*.md')]:
        found = re.findall(r'\b[Ii]ssue #?\d+', doc.read_text(encoding='utf-8'))
        assert not found, f'{doc.name}: {found}'
