"""Finding and importing flow modules named on the command line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ivrkit.errors import FlowDefinitionError, FlowLoadError
from ivrkit.flow import Flow
from ivrkit.validation import relative_path


def flow_files(paths: list[str]) -> list[Path]:
    """Python files under the given files and folders (skipping _private.py and tests)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
        elif path.is_file():
            found.append(path)
        else:
            raise FlowLoadError(f"{relative_path(raw)}: no such file or folder")
    return found


def load_module_flows(path: Path) -> list[type[Flow]]:
    """Import one module and return the Flow classes it defines (in definition order)."""
    resolved = path.resolve()
    package_root = resolved.parent.parent
    if str(package_root) not in sys.path:
        sys.path.insert(0, str(package_root))  # lets flows/x.py import flows.y
    module_name = (
        f"{resolved.parent.name}.{resolved.stem}"
        if (resolved.parent / "__init__.py").exists()
        else f"_ivrkit_flows.{resolved.stem}"
    )
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(resolved):
        spec = importlib.util.spec_from_file_location(module_name, resolved)
        if spec is None or spec.loader is None:
            raise FlowLoadError(f"{relative_path(str(path))}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except FlowDefinitionError:
            sys.modules.pop(module_name, None)
            raise
        except Exception as error:
            sys.modules.pop(module_name, None)
            raise FlowLoadError(
                f"{relative_path(str(path))}: import failed: {type(error).__name__}: {error}"
            ) from error
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Flow)
        and value is not Flow
        and value.__module__ == module.__name__
        and not value.__dict__.get("abstract")
    ]


def load_flows(paths: list[str]) -> list[type[Flow]]:
    """The Flow classes in these files and folders, checked, as ``ivrkit serve`` loads them.

    Raises FlowDefinitionError (a flow is wrong as written) or FlowLoadError (a path or
    import failed); ``create_app(load_flows(["flows/"]))`` is how a test builds the app.
    """
    flows: list[type[Flow]] = []
    for path in flow_files(paths):
        flows += load_module_flows(path)
    if not flows:
        raise FlowLoadError(
            f"no Flow subclasses found in {', '.join(relative_path(p) for p in paths)}"
        )
    return flows
