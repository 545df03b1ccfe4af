"""mori-go's stand-in for AMD MORI's ``mori`` package (only ``mori.io`` and
``mori.cpp``), installed by the sglang-mori-go wheel's import shim. See
``sglang_mori_go._hook`` for when it is used instead of a real MORI."""

#: Marks this ``mori`` as mori-go's shim.
__mori_go__ = True

from sglang_mori_go import __version__  # noqa: E402,F401
