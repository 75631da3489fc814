"""An installed package, as pip lays it out, for tests of the entry-point registries."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_package(root: Path, module: str, source: str, entry_points: dict[str, dict[str, str]]) -> Path:
    """Write ``root/<module>/__init__.py`` (``source``) and its dist-info declaring ``entry_points``
    ({group: {name: "module:attr"}}); put ``root`` on sys.path (or PYTHONPATH) to install it."""
    package = root / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    sections = [
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in names.items())
        for group, names in entry_points.items()
    ]
    (dist / "entry_points.txt").write_text("\n".join(sections))
    return root
