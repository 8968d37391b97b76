"""The compiled book cores (C, CPython API), each beside the pure-Python module it speeds up.

Every extension is optional: where it does not compile (no C compiler, no zlib headers) the
install still succeeds and the pure-Python implementation runs (the same behaviour, slower);
`astra serve` logs which one each venue uses, and CI sets ASTRA_REQUIRE_NATIVE=1 so a build
that silently fell back fails a test. Project metadata is in pyproject.toml.
"""

from pathlib import Path

from setuptools import Extension, setup


def _native(name: str, source: str, libraries: tuple[str, ...] = ()) -> Extension:
    return Extension(
        name,
        [source],
        libraries=list(libraries),
        extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        optional=True,
    )


_EXTENSIONS = [
    _native("astra.venues._levels", "src/astra/venues/_levels.c"),
    _native("astra.venues.okx._okxbook", "src/astra/venues/okx/_okxbook.c", ("z",)),
    _native("astra.venues.kraken._krakenbook", "src/astra/venues/kraken/_krakenbook.c"),
    _native("astra.venues.htx._htxbook", "src/astra/venues/htx/_htxbook.c", ("z",)),
]

# A source that is absent (the Docker image installs the dependencies from a stub tree first)
# is no extension to build.
setup(ext_modules=[ext for ext in _EXTENSIONS if Path(ext.sources[0]).exists()])
