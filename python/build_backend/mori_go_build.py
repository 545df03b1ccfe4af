"""Builds the sglang-mori-go wheel; standard library only.

Two uses:

* ``python3 python/build_backend/mori_go_build.py --lib build/lib/libmori_go.so
  --out build/dist`` (what scripts/build-wheel.sh runs);
* a PEP 517 in-tree build backend (``python/pyproject.toml``), so that
  ``pip install ./python`` or ``pip wheel ./python`` also work. The library
  is then taken from ``$MORI_GO_WHEEL_LIB``, else ``<repo>/build/lib``.

The wheel holds the package (with ``sglang_mori_go/lib/libmori_go.so``)
and ``sglang_mori_go.pth``, which installs the ``mori`` import shim. Its
platform tag is ``manylinux_<glibc>_<arch>`` when ``readelf`` shows that the
library needs nothing but glibc and libgcc_s (the symbol versions give the
glibc minimum), else ``linux_<arch>``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import platform
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from typing import Dict, Iterable, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)  # python/
REPO = os.path.dirname(PYDIR)
PACKAGE = "sglang_mori_go"
PTH = "sglang_mori_go.pth"
LIB_IN_WHEEL = f"{PACKAGE}/lib/libmori_go.so"

# Libraries a manylinux wheel may need from the system (PEP 599/600 policy).
_SYSTEM_LIBS = {
    "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1",
    "libstdc++.so.6", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libutil.so.1", "libresolv.so.2",
}


def _project() -> Dict[str, object]:
    path = os.path.join(PYDIR, "pyproject.toml")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        import tomllib  # Python 3.11+

        return tomllib.loads(raw.decode())["project"]
    except ImportError:  # pragma: no cover - minimal fallback for older Pythons
        text = raw.decode()
        out: Dict[str, object] = {}
        for key in ("name", "version", "description", "requires-python"):
            m = re.search(rf'^{key}\s*=\s*"([^"]*)"', text, re.M)
            if m:
                out[key] = m.group(1)
        return out


def elf_facts(lib: str) -> Tuple[List[str], Optional[Tuple[int, int]]]:
    """(NEEDED libraries, highest GLIBC_x.y version needed) from readelf."""
    dyn = subprocess.run(["readelf", "-dW", lib], check=True, capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    ver = subprocess.run(["readelf", "-VW", lib], check=True, capture_output=True, text=True).stdout
    glibc = [tuple(int(x) for x in v.split(".")[:2]) for v in re.findall(r"GLIBC_(\d+\.\d+)", ver)]
    return needed, (max(glibc) if glibc else None)  # type: ignore[return-value]


def platform_tag(lib: str) -> str:
    """manylinux_X_Y_arch if the library needs only system libraries, else linux_arch."""
    arch = platform.machine().lower().replace("-", "_")
    if arch == "amd64":
        arch = "x86_64"
    try:
        needed, glibc = elf_facts(lib)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"mori_go_build: readelf unavailable ({e}); tagging linux_{arch}", file=sys.stderr)
        return f"linux_{arch}"
    extra = [n for n in needed if n not in _SYSTEM_LIBS]
    if extra or glibc is None:
        print(f"mori_go_build: library needs {extra or 'no glibc?'}; tagging linux_{arch}", file=sys.stderr)
        return f"linux_{arch}"
    return f"manylinux_{glibc[0]}_{glibc[1]}_{arch}"


def _files() -> Iterable[Tuple[str, str]]:
    """(path in wheel, path on disk) of the package's sources."""
    root = os.path.join(PYDIR, PACKAGE)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "lib"))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo", ".so")):
                continue
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, PYDIR).replace(os.sep, "/"), full
    yield PTH, os.path.join(PYDIR, PTH)


def _metadata(proj: Dict[str, object]) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {proj['name']}",
        f"Version: {proj['version']}",
        f"Summary: {proj.get('description', '')}",
        f"Requires-Python: {proj.get('requires-python', '>=3.9')}",
        "Provides-Extra: numpy",
        'Requires-Dist: numpy; extra == "numpy"',
    ]
    for c in proj.get("classifiers", []) or []:  # type: ignore[union-attr]
        lines.append(f"Classifier: {c}")
    readme = os.path.join(PYDIR, "README.md")
    body = ""
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def build(lib: str, out_dir: str) -> str:
    """Write the wheel into out_dir and return its path."""
    if not os.path.isfile(lib):
        raise SystemExit(f"mori_go_build: {lib} not found; build it with ./build.sh lib")
    proj = _project()
    name = str(proj["name"]).replace("-", "_")
    version = str(proj["version"])
    tag = f"py3-none-{platform_tag(lib)}"
    dist_info = f"{name}-{version}.dist-info"
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):
        if old.startswith(f"{name}-") and old.endswith(".whl"):
            os.remove(os.path.join(out_dir, old))
    path = os.path.join(out_dir, f"{name}-{version}-{tag}.whl")
    record: List[str] = []
    # Fixed timestamps: the same inputs give the same wheel.
    stamp = (2020, 1, 1, 0, 0, 0)

    def add(zf: zipfile.ZipFile, arcname: str, data: bytes, mode: int = 0o644) -> None:
        info = zipfile.ZipInfo(arcname, date_time=stamp)
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, data)
        record.append(_record_line(arcname, data))

    tmp = path + ".part"
    with zipfile.ZipFile(tmp, "w") as zf:
        for arcname, full in _files():
            with open(full, "rb") as f:
                add(zf, arcname, f.read())
        with open(lib, "rb") as f:
            add(zf, LIB_IN_WHEEL, f.read(), 0o755)
        add(zf, f"{dist_info}/METADATA", _metadata(proj).encode())
        wheel = (
            "Wheel-Version: 1.0\nGenerator: mori_go_build 1.0\nRoot-Is-Purelib: false\n" f"Tag: {tag}\n"
        )
        add(zf, f"{dist_info}/WHEEL", wheel.encode())
        add(zf, f"{dist_info}/top_level.txt", f"{PACKAGE}\n".encode())
        record.append(f"{dist_info}/RECORD,,")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=stamp)
        info.external_attr = 0o100644 << 16
        zf.writestr(info, "\n".join(record) + "\n")
    os.replace(tmp, path)
    return path


def _default_lib() -> str:
    return os.environ.get("MORI_GO_WHEEL_LIB") or os.path.join(REPO, "build", "lib", "libmori_go.so")


# -- PEP 517 hooks --------------------------------------------------------------


def get_requires_for_build_wheel(config_settings=None):  # noqa: D103
    return []


def get_requires_for_build_sdist(config_settings=None):  # noqa: D103
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # noqa: D103
    lib = (config_settings or {}).get("lib") or _default_lib()
    return os.path.basename(build(lib, wheel_directory))


def build_sdist(sdist_directory, config_settings=None):  # noqa: D103
    proj = _project()
    name = str(proj["name"]).replace("-", "_")
    base = f"{name}-{proj['version']}"
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz") as tf:
        for rel in ("pyproject.toml", "README.md", PTH, "build_backend"):
            full = os.path.join(PYDIR, rel)
            if os.path.exists(full):
                tf.add(full, f"{base}/{rel}", filter=_no_cache)
        tf.add(os.path.join(PYDIR, PACKAGE), f"{base}/{PACKAGE}", filter=_no_cache)
        pkg_info = _metadata(proj).encode()
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size, ti.mtime = len(pkg_info), int(time.time())
        tf.addfile(ti, io.BytesIO(pkg_info))
    return os.path.basename(path)


def _no_cache(ti: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
    if "__pycache__" in ti.name or ti.name.endswith((".pyc", ".so")):
        return None
    return ti


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", default=_default_lib(), help="libmori_go.so to ship")
    ap.add_argument("--out", default=os.path.join(REPO, "build", "dist"), help="output directory")
    args = ap.parse_args(argv)
    path = build(args.lib, args.out)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
