"""PNG plots written the way every output is: atomically, into a folder made for them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import atomic_output


def save_figure(figure: Any, path: Path) -> Path:
    """Lay out the matplotlib ``figure``, write it to ``path`` as a PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=130)
    plt.close(figure)
    return path
