"""Gradient analyses of the pre-trained rate RNNs on the first 30° trial (docs/feedback_control.md).

    python experiments/motor_analysis.py --nets runs/motor

Prints: static controller alignment; cos(control input, −∂L_t/∂r_t) against a random W_fb of the
same norm; local and global alignment of RFLO with online BPTT (loop detached) in the three
RFLO conditions; the Jacobian norm ‖∂x_t/∂x_{t−1}‖ with control on and off; and the alignment of
RFLO's update with the damped Newton direction (CG on Hessian-vector products) at a few steps.
All on the 8 rotated centre-out reaches, weights frozen.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from bioplaus import rules
from bioplaus.analysis.feedback_control import (
    control_gradient_alignment,
    feedback_alignment,
    jacobian_norms,
    newton_alignment,
    rule_alignment,
)
from bioplaus.nets.rate_rnn import load_checkpoint
from bioplaus.tasks.motor import centre_out

MOVING = slice(20, 120)


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="runs/motor")
    parser.add_argument("--newton-steps", type=int, nargs="+", default=[40, 70, 100])
    parser.add_argument("--cg-iterations", type=int, default=30)
    args = parser.parse_args()
    net = load_checkpoint(Path(args.nets) / "controller.pt")
    bare = load_checkpoint(Path(args.nets) / "no_controller.pt")
    trials = centre_out().rotated(30.0)
    out: dict = {"feedback_alignment": feedback_alignment(net)}
    random = copy.deepcopy(net)
    with torch.no_grad():
        w = torch.randn(random.W_fb.shape, generator=torch.Generator().manual_seed(1))
        random.W_fb.copy_(w * net.W_fb.norm() / w.norm())
    out["control_vs_activity_gradient"] = {
        name: float(control_gradient_alignment(model, trials, 1.0, gen())[MOVING].nanmean())
        for name, model in (("learned W_fb", net), ("random W_fb, same norm", random))
    }
    conditions = {
        "RFLO+c": (net, rules.get("rflo"), 1.0),
        "RFLO (control off)": (net, rules.get("rflo"), 0.0),
        "RFLO, B=W_outᵀ (no-controller net)": (bare, rules.get("rflo", feedback="W_out"), 0.0),
    }
    out["alignment_with_online_bptt"] = {}
    for name, (model, rule, control) in conditions.items():
        a = rule_alignment(model, rule, trials, control, gen())
        out["alignment_with_online_bptt"][name] = {
            "local (mean over steps 20–119)": float(a["local"][MOVING].nanmean()),
            "global (trial sums)": float(a["global"]),
        }
    out["jacobian_spectral_norm"] = {}
    for control in (1.0, 0.0):
        norms = jacobian_norms(net, trials, control, generator=gen())
        out["jacobian_spectral_norm"][f"control {'on' if control else 'off'}"] = float(norms[:, MOVING].mean())
    out["newton_alignment"] = {}
    for name, (model, rule, control) in conditions.items():
        cosines = newton_alignment(model, rule, trials, args.newton_steps, control,
                                   cg_iterations=args.cg_iterations, generator=gen())  # fmt: skip
        out["newton_alignment"][name] = {str(t): c for t, c in cosines.items()}
    print(json.dumps(out, indent=1, ensure_ascii=False))
    (Path(args.nets) / "analysis.json").write_text(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
