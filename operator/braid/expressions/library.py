"""The CEL library (common-expression-language), without its command line.

``import cel`` runs the package's ``__init__``, which imports its interactive REPL (typer,
prompt_toolkit, pygments) before anything else: 27 MiB and 0.2 s of CPU that every operator
start and every ``braid`` command paid for a tool Braid never runs. So the package is
registered here without running that ``__init__``, and what the ``__init__`` would export
— the compiled module's names, and ``stdlib`` — is put on it: ``import cel`` anywhere after
this gives the same library, minus ``cel.cli``. When something imported ``cel`` first, that
module is used as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _package() -> types.ModuleType:
    loaded = sys.modules.get("cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("the CEL library (common-expression-language) is not installed")
    package = importlib.util.module_from_spec(spec)  # created, its __init__ not run
    sys.modules["cel"] = package
    try:
        compiled = importlib.import_module("cel.cel")
        package.__dict__.update(
            {name: getattr(compiled, name) for name in dir(compiled) if not name.startswith("_")}
        )
        package.stdlib = importlib.import_module("cel.stdlib")  # type: ignore[attr-defined]
    except BaseException:
        sys.modules.pop("cel", None)
        raise
    return package


cel = _package()
