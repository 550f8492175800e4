import importlib

import pytest

# Module paths that earlier READMEs and vocabulary cards showed, and where their names live now.
MOVED = [
    ("vwt.tokenizer", "VisualWordTokenizer", "vwt.tokenize.tokenizer"),
    ("vwt.export", "onnx", "vwt.encoders.export"),
    ("vwt.baselines", "ToMe", "vwt.methods.tome"),
    ("vwt.baselines", "quantize_int8", "vwt.methods.quantize"),
    ("vwt.result", "MethodResult", "vwt.methods.result"),
    ("vwt.data", "sample_images", "vwt.vocab.data"),
    ("vwt.spatial", "split_connected", "vwt.tokenize.spatial"),
]


@pytest.mark.parametrize("old, name, new", MOVED)
def test_an_old_import_path_still_gives_the_same_object_with_a_deprecation_warning(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: import {name} from"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_an_old_import_path_raises_attribute_error_for_a_name_that_never_existed():
    module = importlib.import_module("vwt.tokenizer")
    with pytest.raises(AttributeError):
        module.NoSuchName  # noqa: B018


@pytest.mark.parametrize("package", ["vwt", "vwt.vocab", "vwt.tokenize", "vwt.methods", "vwt.viz", "vwt.bench"])
def test_every_public_name_of_a_package_resolves(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_importing_every_library_module_imports_nothing_of_the_lab():
    """The library (everything but vwt.bench and its command, vwt.cli.bench) never imports vwt.bench."""
    import subprocess
    import sys

    code = """
import pathlib, sys, importlib, warnings
import vwt
warnings.simplefilter("ignore", DeprecationWarning)  # the old paths forward
root = pathlib.Path(vwt.__file__).parent
names = [".".join(("vwt", *f.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
         for f in sorted(root.rglob("*.py"))]
names = [n for n in names if not (n == "vwt.bench" or n.startswith("vwt.bench.") or n == "vwt.cli.bench")]
for name in names:
    importlib.import_module(name)
    for attr in getattr(sys.modules[name], "__all__", ()):  # lazy names resolve too
        getattr(sys.modules[name], attr)
print(len(names), sorted(m for m in sys.modules if m == "vwt.bench" or m.startswith("vwt.bench.")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 40 and out[1:] == ["[]"]  # every module of the library, and no lab module


def test_no_library_module_imports_the_lab_even_inside_a_function():
    import ast
    from pathlib import Path

    import vwt

    root = Path(vwt.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        parts = ("vwt", *path.relative_to(root).with_suffix("").parts)
        name = ".".join(parts).removesuffix(".__init__")
        if name == "vwt.bench" or name.startswith("vwt.bench.") or name == "vwt.cli.bench":
            continue
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                targets = [".".join([*base, *(node.module or "").split(".")]).strip(".")]
                targets += [f"{targets[0]}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{name}:{node.lineno}" for t in targets if t == "vwt.bench" or t.startswith("vwt.bench.")]
    assert offenders == []
