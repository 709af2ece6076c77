"""pytest plugin: run astropy reproject's own test suite on tessera.

Loaded with ``-p tessera_reproject_plugin`` by run_suite.py, from a copy of
Debian's reproject package tree.  Before collection it replaces reproject's
public functions, everywhere the tests can reach them (package and module
attributes, and the ``from ... import`` copies in test modules once they are
imported), with thin wrappers around tessera's functions.  Each wrapper marks
the running test as "substituted", so the driver can tell the tests that
exercise tessera from those that only test reproject's internals.

With ``--tessera-native`` nothing is replaced (the baseline run), but calls of
reproject's own public functions are still recorded the same way, so the two
runs classify tests alike.

record_results records the results (loaded with -p record_results); this plugin adds
to each record the substituted functions the test called.
"""

import functools
import importlib
import pkgutil
import types

import record_results

# reproject's public functions and the names tessera gives them.
PUBLIC = {
    "reproject_interp": "reproject_interp",
    "reproject_adaptive": "reproject_adaptive",
    "reproject_exact": "reproject_exact",
    "reproject_and_coadd": "reproject_and_coadd",
    "find_optimal_celestial_wcs": "find_optimal_celestial_wcs",
    "reproject_from_healpix": "reproject_from_healpix",
}

# reproject's computational cores: with tessera substituted no test should
# reach them through a public function (a reference the patching missed).
CORES = [
    ("reproject.interpolation.core", "_reproject_full"),
    ("reproject.adaptive.core", "_reproject_adaptive_2d"),
    ("reproject.spherical_intersect.core", "_reproject_slice"),
    ("reproject.utils", "reproject_blocked"),
    ("reproject.healpix.core", "healpix_to_image"),
    ("reproject.healpix.high_level", "healpix_to_image"),   # its own copy, which the original calls
]

# State of the test that is running: the substituted functions it called,
# and reproject's cores it reached.
_called = set()
_cores = set()
_originals = {}    # id(original function) -> (name, original)
_wrappers = {}     # name -> wrapper


def pytest_addoption(parser):
    group = parser.getgroup("tessera")
    group.addoption("--tessera-native", action="store_true", default=False,
                    help="do not substitute: record calls of reproject's own functions")


def _record(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _called.add(name)
        return fn(*args, **kwargs)

    wrapper.__tessera_substitute__ = name
    return wrapper


def _exact_celestial(tessera):
    """reproject.spherical_intersect.core._reproject_celestial, on tessera.

    reproject's tests call this internal entry point of reproject_exact
    directly (against Montage's numbers, flipped WCSs, serial vs parallel);
    it is reproject_exact without input parsing, so it is substituted too."""

    def _reproject_celestial(array, wcs_in, wcs_out, shape_out, parallel=True,
                             return_footprint=True):
        return tessera.reproject_exact((array, wcs_in), wcs_out, shape_out=shape_out,
                                       parallel=parallel, return_footprint=return_footprint)

    return _reproject_celestial


def _reproject_modules():
    import reproject

    mods = [reproject]
    for info in pkgutil.walk_packages(reproject.__path__, "reproject."):
        if ".tests" in info.name or info.name.endswith("conftest"):
            continue
        try:
            mods.append(importlib.import_module(info.name))
        except ImportError:
            pass   # optional dependencies (e.g. the HEALPix extras)
    return mods


def _patch_namespace(ns):
    """Replace, in a module's dict (or a _ClassNS), every reference to one
    of the originals by its wrapper."""
    for key, value in list(ns.items()):
        if isinstance(value, types.FunctionType) and id(value) in _originals:
            ns[key] = _wrappers[_originals[id(value)][0]]


def pytest_configure(config):
    native = config.getoption("--tessera-native")

    import reproject.mosaicking
    import reproject.spherical_intersect.core as exact_core

    originals = {name: getattr(reproject, name, None) or getattr(reproject.mosaicking, name)
                 for name in PUBLIC}
    originals["_reproject_celestial"] = exact_core._reproject_celestial
    if native:
        targets = dict(originals)
    else:
        import tessera

        targets = {name: getattr(tessera, tname) for name, tname in PUBLIC.items()}
        targets["_reproject_celestial"] = _exact_celestial(tessera)
    for name, fn in originals.items():
        _originals[id(fn)] = (name, fn)
        _wrappers[name] = _record(name, targets[name])
    for mod in _reproject_modules():
        _patch_namespace(vars(mod))
    if not native:
        for modname, fname in CORES:
            mod = importlib.import_module(modname)
            setattr(mod, fname, _record_core(modname + "." + fname, getattr(mod, fname)))


def _record_core(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _cores.add(name)
        return fn(*args, **kwargs)
    return wrapper


def pytest_collection_modifyitems(session, config, items):
    # Test modules are imported by now; patch their own copies too (a
    # module imported before pytest_configure, or a class body that kept a
    # reference, would otherwise call the original).
    seen = set()
    for item in items:
        mod = getattr(item, "module", None)
        if mod is not None and id(mod) not in seen:
            seen.add(id(mod))
            _patch_namespace(vars(mod))
            for value in list(vars(mod).values()):
                if isinstance(value, type) and value.__module__ == mod.__name__:
                    _patch_namespace(_ClassNS(value))


class _ClassNS:
    """A class's attributes seen as a mutable mapping for _patch_namespace."""

    def __init__(self, cls):
        self.cls = cls

    def items(self):
        return list(vars(self.cls).items())

    def __setitem__(self, key, value):
        setattr(self.cls, key, value)


def _start(item):
    _called.clear()
    _cores.clear()


def _extra(item):
    return {"substituted": sorted(_called), "reproject_cores": sorted(_cores)}


record_results.START.append(_start)
record_results.EXTRA.append(_extra)
