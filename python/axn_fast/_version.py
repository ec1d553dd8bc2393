"""The package version, written once.

scikit-build-core reads it for the wheel's metadata (pyproject's regex
provider) and CMake passes it to the extension (``axn_fast._core.__version__``);
``tests/test_static.py`` checks that the three agree.
"""
__version__ = "0.1.0"
