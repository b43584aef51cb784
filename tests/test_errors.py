"""Every error CleanAI raises on purpose is a CleanAIError, so the CLI can print it as one line (exit 2)."""

import ast
import builtins
from pathlib import Path

import cleanai
from cleanai import errors

SRC = Path(cleanai.__file__).parent
# KeyError and IndexError stay the protocols of lookups (history["loss"], dataset[i]); NotImplementedError marks
# an abstract method. Everything else a module raises itself must be one of cleanai.errors.
ALLOWED_BUILTINS = {"KeyError", "IndexError", "NotImplementedError", "StopIteration", "AttributeError"}
BUILTIN_ERRORS = {name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)}


def _raised_builtins(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
            name = node.exc.func.id
            if name in BUILTIN_ERRORS - ALLOWED_BUILTINS:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} raises {name}")
    return found


def test_no_module_raises_a_bare_builtin_error():
    offenders = [hit for path in sorted(SRC.rglob("*.py")) for hit in _raised_builtins(path)]
    assert offenders == []


def test_every_error_kind_is_a_cleanai_error_and_keeps_its_builtin_base():
    kinds = [obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception)]
    assert len(kinds) >= 8 and all(issubclass(kind, errors.CleanAIError) for kind in kinds)
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.InputError, TypeError)
