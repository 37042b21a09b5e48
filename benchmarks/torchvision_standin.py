"""An inert stand-in for torchvision, so that timm's model code imports
where torchvision has no build (it cannot be installed beside this
machine's torch).

timm imports torchvision when timm itself is imported (FrozenBatchNorm2d in
`timm/layers`, transforms and InterpolationMode in `timm/data`), although
the MLP models never call it. `import_timm()` imports timm as it is and, only
when that fails for want of torchvision, installs a finder last on
`sys.meta_path` that answers `torchvision` and its submodules with modules
whose attributes are placeholder classes (calling one raises a RuntimeError
naming the stand-in), then imports timm again. The timm model that runs is
timm's own: `tests/test_benchmark.py` loads its weights into keras_mixer and
matches the logits. The stand-in belongs to the benchmark scripts, never to
the package: `keras-mixer benchmark` times timm only where timm imports as
it is.
"""

import importlib.abc
import importlib.machinery
import sys
import types


class _Placeholder(type):
    """Metaclass of the stand-in's classes: any attribute is another
    placeholder class (distinct and hashable, so timm's import-time dicts
    keyed by `InterpolationMode.BILINEAR` etc. build); calling one raises."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        children = type.__getattribute__(cls, "_children")
        if name not in children:
            children[name] = _placeholder(f"{cls.__qualname__}.{name}",
                                          cls.__module__)
        return children[name]


def _refuse(self, *args, **kwargs):
    raise RuntimeError(
        f"{type(self).__module__}.{type(self).__qualname__}: torchvision is "
        "not installed. benchmarks/torchvision_standin.py installed an inert "
        "stand-in so that timm's model code imports; timm's data pipeline and "
        "torchvision ops do not work. Install torchvision to use them."
    )


def _placeholder(qualname, module):
    return _Placeholder(qualname.rsplit(".", 1)[-1], (),
                        {"__init__": _refuse, "__module__": module,
                         "__qualname__": qualname, "_children": {}})


class _StubModule(types.ModuleType):
    """A stand-in torchvision (sub)module: every public attribute is a
    placeholder class."""

    __keras_mixer_torchvision_stub__ = True

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(name, self.__name__)
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `torchvision` and every `torchvision.*` as a `_StubModule`,
    except the modules that timm imports inside `try: ... except
    ImportError` (those stay missing, so timm takes its no-torchvision
    path). Sits last on `sys.meta_path`, after the real finders."""

    MISSING = ("torchvision.models.feature_extraction",)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision" and not fullname.startswith("torchvision."):
            return None
        if fullname in self.MISSING:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        pass


def is_stub():
    """True when the imported `torchvision` is this stand-in."""
    module = sys.modules.get("torchvision")
    return bool(getattr(module, "__keras_mixer_torchvision_stub__", False))


def import_timm():
    """Imports timm; returns `(timm, stubbed)`, `stubbed` saying whether the
    stand-in had to be installed. It stays installed for the rest of the
    process; other code probing for torchvision then finds it, which
    `is_stub()` reports.

    Raises:
        ImportError: torch or timm is not installed, or timm misses a
            module other than torchvision.
    """
    try:
        import timm

        return timm, is_stub()
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "torchvision":
            raise
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
    # Drop timm's half-imported modules and retry from scratch.
    for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
        del sys.modules[name]
    import timm

    return timm, True
