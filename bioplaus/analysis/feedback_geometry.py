"""How close are a rule's feedback matrices to the forward weights? Angle and norm ratio per layer."""

from __future__ import annotations

import math

import torch
from torch import nn

from bioplaus.core import weight_layers


def feedback_geometry(model: nn.Module) -> dict[str, float]:
    r"""Angle between `B` and `W` (degrees) and the norm ratio `‖B‖/‖W‖`, per layer with feedback weights.

    $$
    \angle_\ell = \frac{180}{\pi} \arccos
        \frac{\langle B_\ell, W_\ell \rangle_F}{\lVert B_\ell\rVert_F \lVert W_\ell\rVert_F},
    \qquad r_\ell = \frac{\lVert B_\ell\rVert_F}{\lVert W_\ell\rVert_F}
    $$

    over the whole tensors (BioTorch's two metrics, in bioplaus's convention where `B` has
    `W`'s shape, so 0° is weight transport). A layer counts when a rule configured it with
    feedback weights (feedback alignment, sign symmetry, Kolen-Pollack, weight mirrors); a
    feedback that is drawn at every forward (sign symmetry's `brsf`) is evaluated once, with
    the random state restored afterwards, so logging does not change the run.

    Returns:
        `{"feedback_angle/<layer>": degrees, "feedback_norm_ratio/<layer>": ratio, ...}`; empty
        when no layer has feedback weights.
    """
    out: dict[str, float] = {}
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for name, layer in weight_layers(model):
            feedback = layer.settings.feedback
            if feedback is None:
                continue
            weight = layer.weight.detach()
            matrix = feedback(weight) if callable(feedback) else feedback
            w, b = weight.flatten().double(), matrix.detach().flatten().double()
            norms = float(w.norm()), float(b.norm())
            cosine = float(w @ b) / (norms[0] * norms[1]) if norms[0] and norms[1] else float("nan")
            label = name or "<root>"
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine)))) if math.isfinite(cosine) else cosine
            out[f"feedback_angle/{label}"] = angle
            out[f"feedback_norm_ratio/{label}"] = norms[1] / norms[0] if norms[0] else float("nan")
    return out
