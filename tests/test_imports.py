"""Every module imports, and the CLI's entry point stays free of torch (so --help is instant)."""

import importlib
import pkgutil
import subprocess
import sys

import dfdetect

OPTIONAL = {"onnxruntime", "onnx", "fastapi", "pytorch_grad_cam", "uvicorn"}


def test_every_module_imports():
    failed = {}
    for mod in pkgutil.walk_packages(dfdetect.__path__, "dfdetect."):
        if mod.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(mod.name)
        except ModuleNotFoundError as e:
            if e.name not in OPTIONAL:
                failed[mod.name] = repr(e)
    assert not failed


def test_cli_import_does_not_load_torch():
    code = "import sys, dfdetect.cli, dfdetect.runtime.detector; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
