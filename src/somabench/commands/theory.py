"""``python -m somabench theory --delta D --theta T --r-act R --eta E --epsilon EPS
--sigma-delta S [--b B]``: SOMA's theory knobs (the formulas: ``somabench.soma.theory``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from somabench.soma.theory import knobs


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m somabench theory",
        description="SOMA's theory knobs: M (Cor. 3, sign-corrected), W_eff (Lemma 1 / Cor. 4), "
                    "|B|_eff (Thm. 2).")
    parser.add_argument("--delta", type=float, required=True, help="failure probability, (0,1)")
    parser.add_argument("--theta", type=float, required=True,
                        help="angle threshold in radians, (0, pi/2]")
    parser.add_argument("--r-act", type=int, required=True, help="active subspace dimension")
    parser.add_argument("--eta", type=float, required=True, help="warm-start error target")
    parser.add_argument("--epsilon", type=float, required=True, help="target improvement")
    parser.add_argument("--sigma-delta", type=float, required=True,
                        help="sub-Gaussian proxy of Delta (per sample)")
    parser.add_argument("--b", type=float, default=1.0,
                        help="sub-exponential scale b of Thm. 2 (main text: 1)")
    args = parser.parse_args(list(argv))
    try:
        values = knobs(args.delta, args.theta, args.r_act, args.eta, args.epsilon,
                       args.sigma_delta, args.b)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"M      = {values['M']}  (Cor. 3: M >= log(delta)/log(1-sin(theta)^(r_act-1)) "
          f"= {values['M_bound']:.4f})")
    print(f"W_eff  = {values['W_eff']}  (Lemma 1 / Cor. 4: 2 log(2/delta)/eta^2 "
          f"= {values['W_eff_bound']:.4f})")
    print(f"|B|_eff = {values['B_eff']}  (Thm. 2: 2 sigma^2/eps^2 log(1/delta) + "
          f"2b/(3 eps) log(1/delta) = {values['B_eff_bound']:.4f})")
    print(f"decision error <= eta + epsilon = {values['decision_error']:.4f} "
          f"with confidence 1 - 2 delta = {values['confidence']:.4f}")
    return 0
