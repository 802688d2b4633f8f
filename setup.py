"""The compiled part of the package: the import's fast path for plain lines
(datasette_forensics/_plainlines.c). Everything else is in pyproject.toml.

The extension is optional: without a C compiler and Python's headers the package
installs without it and the import runs its pure-Python path (slower, same rows).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "datasette_forensics._plainlines",
            sources=["datasette_forensics/_plainlines.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
