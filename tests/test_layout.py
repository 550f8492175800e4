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
