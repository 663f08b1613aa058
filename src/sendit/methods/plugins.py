"""Methods from other packages: a package registers its methods through the entry-point group `sendit.methods`
(docs/methods.md, "Your own method"), so `sendit run --methods NAME` trains them and `sendit predict` loads their
model folders with nothing imported by hand.

The plugins are imported once, when the registry is first read (not when `sendit.methods` is imported), so that
importing a method file stays cheap. A plugin that fails to import does not stop sendit: its other methods and
every command that does not need it work, a one-paragraph warning names the package and the error, and asking for
its method (`--methods NAME`, a model folder trained with it) fails with that paragraph.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

GROUP = "sendit.methods"

# Entry-point name (by convention, the method's name) -> the paragraph saying why it failed to import.
FAILED: dict[str, str] = {}
# Method name -> {"name", "version"} of the distribution that provided it; recorded in its model folders so that a
# machine without the package can say which one to install.
ORIGINS: dict[str, dict[str, str]] = {}
_loaded = False


def load_plugins(methods: dict, register: Callable[[Any], Any]) -> None:
    """Import every `sendit.methods` entry point once. An entry point names a module (importing it registers its
    methods, as sendit's own method files do), a Method class, or a Method object. The registry passes itself in
    (`methods`, read as a plain dict, and its `register`), so that this module imports nothing of sendit."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # before importing: a plugin that reads the registry while it loads must not start this again
    from importlib.metadata import entry_points

    seen: set[str] = set()
    for ep in entry_points(group=GROUP):
        if ep.name in seen:  # the same distribution twice on sys.path: the first one wins, as for imports
            continue
        seen.add(ep.name)
        dist = getattr(ep.dist, "name", None) or "an unknown package"
        before = set(dict.keys(methods))
        try:
            _register_entry_point(ep.load(), methods, register)
        except Exception as e:  # anything a broken plugin raises; it must not stop sendit
            FAILED[ep.name] = (f"the method plugin '{ep.name}' of the package '{dist}' (entry point {ep.value} in "
                               f"the group {GROUP}) failed to import: {type(e).__name__}: {e}. Reinstall or fix "
                               f"'{dist}', or uninstall it (pip uninstall {dist}); sendit's other methods work "
                               f"without it.")
            print(f"sendit: warning: {FAILED[ep.name]}", file=sys.stderr)
            continue
        version = getattr(ep.dist, "version", None) or ""
        for name in set(dict.keys(methods)) - before:
            ORIGINS[name] = {"name": dist, "version": version}


def _register_entry_point(obj: Any, methods: dict, register: Callable[[Any], Any]) -> None:
    import inspect

    if inspect.ismodule(obj):  # the module registered its methods when it was imported
        return
    method = obj() if inspect.isclass(obj) else obj
    if not (hasattr(method, "name") and hasattr(method, "prepare")):
        raise TypeError(f"{obj!r} is neither a module nor a sendit Method (an object with name, prepare, save, "
                        f"load, merge)")
    if dict.get(methods, method.name) is not method:
        register(method)
