"""Each term of J(P) against hand computation on a toy vocabulary (paper Sec. 3.2)."""

from __future__ import annotations

import math

import pytest
import torch

from somabench.soma import losses
from somabench.soma.neighbors import topk_neighbors, unit_rows

R = 1 / math.sqrt(2)
# Toy vocabulary of 4 unit embeddings in R^2: e0=(1,0) e1=(0,1) e2=(r,r) e3=(-1,0).
EMB = torch.tensor([[1.0, 0.0], [0.0, 1.0], [R, R], [-1.0, 0.0]])


def log_probs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


def index(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, cos = topk_neighbors(unit_rows(EMB), k, block_rows=3)
    return ids, cos.double()


def test_neighbours_exclude_self_and_rank_by_cosine() -> None:
    ids, cos = index(2)
    # token 0: cos to 1 = 0, to 2 = r, to 3 = -1 -> N_2(0) = [2, 1]
    assert ids[0].tolist() == [2, 1]
    assert cos[0].tolist() == pytest.approx([R, 0.0], abs=1e-6)
    # token 2: cos to 0 = r, to 1 = r, to 3 = -r
    assert sorted(ids[2].tolist()) == [0, 1]
    for row in range(4):
        assert row not in ids[row].tolist()


def test_s_tau_by_hand() -> None:
    ids, cos = index(1)
    set_ids, set_cos = losses.neighbourhood_sets(torch.tensor([0]), ids, cos)
    assert set_ids.tolist() == [[0, 2]]
    s = losses.s_tau(set_cos, tau=0.5)
    z = math.exp(1 / 0.5) + math.exp(R / 0.5)
    assert s[0].tolist() == pytest.approx([math.exp(2) / z, math.exp(R / 0.5) / z], abs=1e-6)
    with pytest.raises(ValueError):
        losses.s_tau(set_cos, tau=0.0)


def test_eq1_by_hand() -> None:
    ids, cos = index(1)
    y = torch.tensor([0, 1])
    lp = log_probs([0.5, 0.1, 0.3, 0.1], [0.2, 0.4, 0.3, 0.1])
    set_ids, set_cos = losses.neighbourhood_sets(y, ids, cos)
    s = losses.s_tau(set_cos, 0.5)
    got = float(losses.l_sem(lp, set_ids, s))
    # position 0: y=0, N_1(0)={2}; position 1: y=1, N_1(1)={2} (cos r)
    s0 = math.exp(2) / (math.exp(2) + math.exp(2 * R))
    s1 = s0  # same cosines (1, r)
    pos0 = s0 * -math.log(1 - 0.5) + (1 - s0) * -math.log(1 - 0.3)
    pos1 = s1 * -math.log(1 - 0.4) + (1 - s1) * -math.log(1 - 0.3)
    assert got == pytest.approx((pos0 + pos1) / 2, abs=1e-6)


def test_expectation_weight_with_top_m_and_clip_by_hand() -> None:
    unit = EMB.double()
    lp = log_probs([0.5, 0.1, 0.3, 0.1])
    y = torch.tensor([0])
    # top-2 = {0: .5, 2: .3}: e_bar = (.5 + .3r, .3r); cos to e0 = e_bar_x / |e_bar|
    ex, ey = 0.5 + 0.3 * R, 0.3 * R
    cos2 = ex / math.hypot(ex, ey)
    assert float(losses.expected_cosine(lp, unit, y, top_m=2)) == pytest.approx(cos2, abs=1e-6)
    # top-1 = {0}: e_bar is parallel to e0 -> cos 1 (truncation matters)
    assert float(losses.expected_cosine(lp, unit, y, top_m=1)) == pytest.approx(1.0, abs=1e-6)
    # full sum (m = |V|): e_bar = .5 e0 + .1 e1 + .3 e2 + .1 e3 = (.4 + .3r, .1 + .3r)
    fx, fy = 0.4 + 0.3 * R, 0.1 + 0.3 * R
    assert float(losses.expected_cosine(lp, unit, y, top_m=4)) == pytest.approx(
        fx / math.hypot(fx, fy), abs=1e-6)
    w = losses.expectation_weight(torch.tensor([cos2, -0.4, 1.3]), lambda_exp=1.5)
    assert w.tolist() == pytest.approx([1 + 1.5 * cos2, 1.0, 2.5], abs=1e-6)  # clip to [0, 1]


def test_l_sem_exp_multiplies_eq1_terms_by_w() -> None:
    ids, cos = index(1)
    unit = EMB.double()
    y = torch.tensor([0, 3])
    lp = log_probs([0.5, 0.1, 0.3, 0.1], [0.7, 0.1, 0.1, 0.1])
    set_ids, set_cos = losses.neighbourhood_sets(y, ids, cos)
    s = losses.s_tau(set_cos, 0.7)
    terms = losses.unlikelihood_terms(lp, set_ids, s)
    c = losses.expected_cosine(lp, unit, y, top_m=2)
    # position 1: y=3=(-1,0) while mass sits on e0 -> cos < 0 -> w = 1
    assert float(c[1]) < 0
    expected = ((1 + 2.0 * float(c[0])) * float(terms[0]) + 1.0 * float(terms[1])) / 2
    got = losses.l_sem_exp(lp, set_ids, s, unit, y, top_m=2, lambda_exp=2.0)
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_h_tail_by_hand() -> None:
    rows = [[0.25] * 4, [0.5, 0.5, 0.0 + 1e-12, 0.0 + 1e-12], [0.7, 0.1, 0.1, 0.1]]
    lp = log_probs(*rows)

    def entropy(p: list[float]) -> float:
        return -sum(x * math.log(x) for x in p)

    assert float(losses.h_tail(lp, tail_k=2)) == pytest.approx(
        (entropy(rows[1]) + entropy(rows[2])) / 2, abs=1e-6)
    assert float(losses.h_tail(lp, tail_k=10)) == pytest.approx(
        sum(entropy(r) for r in rows) / 3, abs=1e-6)  # T < K: all positions


def test_full_j_by_hand() -> None:
    ids, cos = index(1)
    unit = EMB.double()
    w = losses.MiningWeights(tau=0.5, top_m=2, lambda_exp=1.0, beta=0.1, tail_k=1, lambda_p=0.01)
    turn_a = (log_probs([0.5, 0.1, 0.3, 0.1]), torch.tensor([0]))
    turn_b = (log_probs([0.1, 0.6, 0.2, 0.1], [0.3, 0.12, 0.4, 0.18]), torch.tensor([1, 2]))
    prompt = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    outs = [losses.turn_objective(lp, y, ids, cos, unit, w) for lp, y in (turn_a, turn_b)]
    j = losses.j_objective([o["turn_loss"] for o in outs], prompt, w.lambda_p)

    def by_hand(rows: list[list[float]], ys: list[int]) -> float:
        total = 0.0
        for p, y in zip(rows, ys, strict=True):
            nbr = int(ids[y, 0])
            cy = 1.0
            cn = float(cos[y, 0])
            z = math.exp(cy / 0.5) + math.exp(cn / 0.5)
            term = (math.exp(cy / 0.5) / z) * -math.log(1 - p[y]) + \
                   (math.exp(cn / 0.5) / z) * -math.log(1 - p[nbr])
            top = sorted(range(4), key=lambda v: -p[v])[:2]
            e_bar = [sum(p[v] * float(EMB[v, d]) for v in top) for d in range(2)]
            c = sum(e_bar[d] * float(EMB[y, d]) for d in range(2)) / math.hypot(*e_bar)
            total += (1 + min(max(c, 0.0), 1.0)) * term
        sem = total / len(rows)
        last = rows[-1]
        h = -sum(x * math.log(x) for x in last)
        return sem - 0.1 * h

    expected = (by_hand([[0.5, 0.1, 0.3, 0.1]], [0]) +
                by_hand([[0.1, 0.6, 0.2, 0.1], [0.3, 0.12, 0.4, 0.18]], [1, 2])) / 2 + 0.01 * (1 + 4 + 0.25)
    assert float(j) == pytest.approx(expected, abs=1e-6)


def test_log1m_exp_by_hand_and_gradient_alive_near_one() -> None:
    p_near_one = 1 - 1e-9
    lp = torch.tensor([math.log(0.3), math.log(p_near_one), math.log(0.9)], dtype=torch.float64,
                      requires_grad=True)
    got = losses.log1m_exp(lp)
    assert got.tolist() == pytest.approx([math.log(0.7), math.log(1e-9), math.log(0.1)], rel=1e-6)
    got.sum().backward()  # d/dx log(1 - e^x) = -e^x / (1 - e^x)
    want = [-0.3 / 0.7, -p_near_one / 1e-9, -0.9 / 0.1]
    assert lp.grad is not None and lp.grad.tolist() == pytest.approx(want, rel=1e-5)
    # float32, p rounded to exactly 1 (log p == 0): finite value, gradient not zero (the old
    # (1 - p).clamp_min(1e-6) gave zero gradient for every p > 1 - 1e-6)
    x = torch.zeros(2, requires_grad=True)
    y = losses.log1m_exp(x)
    eps = torch.finfo(torch.float32).eps
    assert y.tolist() == pytest.approx([math.log(eps)] * 2, rel=1e-4)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad < -1e6).all()


def test_unlikelihood_stays_finite_when_p_is_one() -> None:
    lp = torch.tensor([[0.0, -1e9, -1e9, -1e9]], dtype=torch.float64)  # p(0) = 1
    ids, cos = index(1)
    set_ids, set_cos = losses.neighbourhood_sets(torch.tensor([0]), ids, cos)
    value = losses.l_sem(lp, set_ids, losses.s_tau(set_cos, 0.5))
    assert math.isfinite(float(value))
