"""Installing a package the way pip lays it out: its modules plus a dist-info with entry points.

Tests use it to check that strategies, scenarios, links, datasets and models register from another
package without any change to this project.
"""

from __future__ import annotations

from pathlib import Path


def install_plugin(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]) -> Path:
    """Write ``modules`` (file name -> source) and ``dist``'s dist-info under ``root``; return ``root``,
    the folder to put on ``sys.path`` or ``PYTHONPATH``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / name).write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = []
    for group, names in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in names.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root
