"""The gui demo: a small shipped site (3 pages with assets, 1 page that never settles)."""

from __future__ import annotations

import shutil
from pathlib import Path

from quarry.dags.demos import DemoInput

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data" / "gui"


def build(folder: Path) -> DemoInput:
    """Copy the shipped demo site (3 pages + assets, 1 page that never settles) into `folder`.

    Shows: elements found on real layouts (hidden, transparent, off-screen and
    covered ones left out), positional expressions for the three identical
    "Add to cart" buttons, goal-level actions (sign in with the form's fields
    step by step, add each mug to the cart, search, go to a linked page or
    section), trajectories explored from each page and replayed (open the
    shop, search it; fill in and submit the sign-in form), a blocked request
    to the cloud metadata address, and `render_timeout` (and a
    `start_failed` trajectory) for the page whose script never yields.
    """
    site = Path(folder) / "gui-site"
    if site.exists():
        shutil.rmtree(site)
    shutil.copytree(DEMO_DATA, site)
    sets = ["source=demo_site", "render.timeout_s=5", "render.extract_timeout_s=3", "render.settle=load",
            "render.pages_in_flight=4", "trajectory.enabled=true", "trajectory.max_steps=4",
            "trajectory.seconds_per_site=30", "trajectory.settle_ms=200"]
    return DemoInput([str(site)], sets)
