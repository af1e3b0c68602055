"""Named method recipes: ``recipe: NAME`` in a connect config fills the ``method`` defaults
before the config's own ``method:`` keys override them (docs/recipes.md).

``cmcr`` is the paper's objective; ``cmcr+`` is what won on selection data that never judges
it (the built-in world at seed 100 and the regime map's generated data at seed 100:
bench/choose_recipe.py): each modality centred on its own mean, and noise calibrated to the
measured text-pseudo residual. Pure data: no imports.
"""

from __future__ import annotations

from typing import Any

DEFAULT_RECIPE = "cmcr"

RECIPES: dict[str, dict[str, Any]] = {
    "cmcr": {},
    # center_modalities: C3 / TextME's mean-centring, the means kept in the model;
    # noise_calibration 1.0: sigma^2 = each space's measured text-pseudo residual (toy CLIP
    # 3.7e-4, toy CLAP 7.8e-5; the paper's 0.004 is 3x real CLIP's paired residual).
    # Chosen on generated data and the toy world (docs/recipes.md), not on real CLIP/CLAP.
    "cmcr+": {"center_modalities": True, "noise_calibration": 1.0},
}

# recipe -> addition -> the method overrides that remove that addition again (for ablations)
RECIPE_ADDITIONS: dict[str, dict[str, dict[str, Any]]] = {
    "cmcr+": {"center_modalities": {"center_modalities": False},
              "noise_calibration": {"noise_calibration": None}},
}
