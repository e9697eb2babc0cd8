"""Merging formulas against hand-computed tensors, their identities, and config validation."""

import math

import pytest
import torch

from l2s.merge import METHODS, MergeConfig, parse_method
from l2s.merge.methods import activation, svd
from l2s.merge.methods import task_vector as tv

T = torch.tensor


def fn(name):
    return METHODS[name].fn


def test_average_ignores_base():
    assert torch.equal(fn("average")(None, [T([1.0, 2.0]), T([3.0, 6.0])]), T([2.0, 4.0]))


def test_task_arithmetic_hand_computed_and_identities():
    base, m1, m2 = T([1.0, 1.0]), T([2.0, 3.0]), T([0.0, 1.0])
    assert torch.allclose(fn("task_arithmetic")(base, [m1, m2], alpha=0.5), T([1.0, 2.0]))
    g = torch.Generator().manual_seed(0)
    b, m = torch.randn(50, generator=g), torch.randn(50, generator=g)
    assert torch.equal(fn("task_arithmetic")(b, [m], alpha=0.0), b)
    assert torch.allclose(fn("task_arithmetic")(b, [m], alpha=1.0), m, atol=1e-6)


def test_trim_drops_the_k_fraction_of_smallest_magnitudes():
    d = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    kept = tv.trim_delta(d, 0.8)
    assert int((kept != 0).sum()) == 200
    assert kept.abs()[kept != 0].min() > d.abs()[kept == 0].max()
    assert torch.equal(tv.trim_delta(d, 0.0), d)
    assert int((tv.trim_delta(d, 1.0) != 0).sum()) == 0


def test_ties_hand_computed():
    base = torch.zeros(4)
    m1, m2 = T([3.0, -1.0, 0.5, -2.0]), T([-1.0, -2.0, 0.2, 4.0])
    # k=0.5 keeps the 2 largest of each: [3,0,0,-2] and [0,-2,0,4]; signs of the sum [+,-,0,+]
    assert torch.equal(fn("ties")(base, [m1, m2], k=0.5, alpha=1.0), T([3.0, -2.0, 0.0, 4.0]))
    assert torch.equal(fn("ties")(base, [m1, m2], k=0.5, alpha=0.5), T([1.5, -1.0, 0.0, 2.0]))
    # disjoint mean over agreeing non-zero entries: δ = [2,-1] and [4,2] → [(2+4)/2, 2]
    assert torch.equal(fn("ties")(torch.ones(2), [T([3.0, 0.0]), T([5.0, 3.0])], k=0.0, alpha=1.0), T([4.0, 3.0]))


def test_ties_identities():
    g = torch.Generator().manual_seed(2)
    b, m = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    assert torch.allclose(fn("ties")(b, [m], k=0.0, alpha=0.7), fn("task_arithmetic")(b, [m], alpha=0.7))
    assert torch.equal(fn("ties")(b, [m], k=1.0, alpha=1.0), b)
    t = 0.5  # a given (whole-model) threshold replaces the tensor's own: keeps exactly |δ| > t
    out = fn("ties")(torch.zeros(7, 5), [m], k=0.5, alpha=1.0, thresholds=[t])
    assert torch.equal(out, torch.where(m.abs() > t, m, 0.0))


def bits(t):
    return t.contiguous().view(torch.int32)  # bitwise comparison: torch.equal takes -0.0 == 0.0


def ties_literal(base, models, k, alpha, thresholds=None):
    """TIES written literally from its formula with bool masks (the arithmetic version must equal it)."""
    deltas = []
    for i, m in enumerate(models):
        d = m - base
        n_drop = int(k * d.numel())
        t = thresholds[i] if thresholds is not None else (torch.kthvalue(d.abs().reshape(-1), n_drop).values
                                                           if n_drop else None)
        deltas.append(d if t is None or k == 0 else torch.where(d.abs() > t, d, 0.0))
    sign = torch.sign(sum(deltas[1:], deltas[0].clone()))
    num, count = torch.zeros_like(base), torch.zeros_like(base)
    for d in deltas:
        agree = (torch.sign(d) == sign) & (d != 0)
        num += torch.where(agree, d, 0.0)
        count += agree
    return base + alpha * (num / count.clamp_min(1))


def awkward(shape, g):
    """Random tensors full of ties, cancellations and signed zeros, with some continuous values."""
    pool = T([-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0])
    out = pool[torch.randint(len(pool), shape, generator=g)]
    cont = torch.rand(shape, generator=g) < 0.3
    return torch.where(cont, torch.randn(shape, generator=g), out)


@pytest.mark.parametrize("n_models, k, alpha", [(1, 0.5, 1.0), (2, 0.8, 1.0), (3, 0.3, 0.7), (2, 0.0, 0.5),
                                                (2, 1.0, 1.0)])
def test_ties_equals_its_literal_formula_bit_for_bit(n_models, k, alpha):
    g = torch.Generator().manual_seed(n_models)
    base = awkward((600, 500), g)  # 300k entries: the sampled selection path of kth_smallest
    models = [awkward((600, 500), g) for _ in range(n_models)]
    got = fn("ties")(base, models, k=k, alpha=alpha)
    assert torch.equal(bits(got), bits(ties_literal(base, models, k, alpha)))
    given = [0.5] * n_models
    got = fn("ties")(base, models, k=k, alpha=alpha, thresholds=given)
    assert torch.equal(bits(got), bits(ties_literal(base, models, k, alpha, given)))


def test_kth_smallest_is_kthvalue():
    g = torch.Generator().manual_seed(9)
    n = 300_000
    cases = {
        "normal": torch.randn(n, generator=g).abs(),
        "mostly zero": torch.where(torch.rand(n, generator=g) < 0.9, 0.0, torch.rand(n, generator=g)),
        "sorted": torch.linspace(0, 1, n),
        "few values": torch.randint(0, 5, (n,), generator=g).float(),
        "sample misses": torch.ones(n).index_fill_(0, torch.arange(0, n, n // int((4 * n) ** (2 / 3))), 0.0),
    }
    for name, x in cases.items():
        for k in (1, n // 5, int(0.8 * n), n - 1, n):
            assert tv.kth_smallest(x, k).item() == torch.kthvalue(x, k).values.item(), (name, k)
    assert tv.kth_smallest(torch.randn(50, 7, generator=g), 100).shape == ()


def test_trim_delta_leaves_its_input_alone():
    d = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    before = d.clone()
    tv.trim_delta(d, 0.5)
    assert torch.equal(d, before)


def test_dare_drops_rescales_and_is_seeded():
    d = torch.ones(20000)
    out = tv.dare(d, 0.5, torch.Generator().manual_seed(3))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert abs(float((out == 0).float().mean()) - 0.5) < 0.02
    assert torch.equal(out, tv.dare(d, 0.5, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, tv.dare(d, 0.5, torch.Generator().manual_seed(4)))
    assert tv.dare(d, 0.0, torch.Generator()) is d
    # equal, bit for bit, to its literal formula (signed zeros included)
    x = awkward((300, 200), torch.Generator().manual_seed(5))
    for p in (0.3, 0.7, 0.1):
        keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(6)) >= p
        want = torch.where(keep, x / (1 - p), 0.0)
        assert torch.equal(bits(tv.dare(x, p, torch.Generator().manual_seed(6))), bits(want))


def test_linear_hand_computed_and_identity():
    long, short = T([4.0, 0.0]), T([0.0, 8.0])
    assert torch.equal(fn("linear")(None, [long, short], alpha=0.25), T([1.0, 6.0]))
    assert torch.equal(fn("linear")(None, [long, short], alpha=1.0), long)


def test_lore_hand_computed_one_iteration_from_the_mean():
    """The paper's start (init=mean), three participants, α = 0.6."""
    m1 = T([[3.0, 0.0], [0.0, 0.0]])
    zero = torch.zeros(2, 2)
    # θ0' = mean = diag(1,0); δ1 = SVT_.5(diag(2,0)) = diag(1.5,0); δ2 = δ3 = SVT_.5(diag(-1,0)) = diag(-.5,0)
    # θ0' = mean(θ_i - δ_i) = diag(2.5/3, 0); θ = θ0' + 0.6 Σ δ = diag(2.5/3 + 0.6 * 0.5, 0)
    out = fn("lore")(zero, [m1, zero, zero], mu=0.5, iters=1, alpha=0.6, init="mean")
    assert torch.allclose(out, T([[2.5 / 3 + 0.3, 0.0], [0.0, 0.0]]), atol=1e-6)


def test_lore_base_and_one_finetune_hand_computed():
    """Long-to-short: participants [θ_0, θ_1], the estimate started at θ_0. One iteration with
    Δ = θ_1 − θ_0 = diag(3, 1), μ = 0.5: δ_0 = 0, δ_1 = SVT_.5(Δ) = diag(2.5, .5),
    θ_0' = θ_0 + ½(Δ − δ_1) = diag(.25, .25) (θ_0 = 0); θ = θ_0' + α δ_1. Converged: δ_1 = SVT_2μ(Δ)."""
    base, ft = torch.zeros(2, 2), T([[3.0, 0.0], [0.0, 1.0]])
    one = fn("lore")(base, [base, ft], mu=0.5, iters=1, alpha=0.8)
    assert torch.allclose(one, T([[0.25 + 0.8 * 2.5, 0.0], [0.0, 0.25 + 0.8 * 0.5]]), atol=1e-6)
    conv = fn("lore")(base, [base, ft], mu=0.5, iters=60, alpha=0.8)
    low = T([[2.0, 0.0], [0.0, 0.0]])  # SVT_1(diag(3, 1))
    assert torch.allclose(conv, 0.5 * (ft - low) + 0.8 * low, atol=1e-6)
    # the average plus (α − ½) times the low-rank part: the average only at α = ½
    assert torch.allclose(conv - fn("average")(None, [base, ft]), (0.8 - 0.5) * low, atol=1e-6)
    assert torch.allclose(fn("lore")(base, [base, ft], mu=0.5, iters=60, alpha=0.5), 0.5 * ft, atol=1e-6)
    # the paper's mean start is the average, whatever μ and α (why l2s starts from the base)
    for mu, alpha in ((0.5, 0.8), (0.1, 1.7)):
        assert torch.allclose(fn("lore")(base, [base, ft], mu=mu, iters=5, alpha=alpha, init="mean"),
                              0.5 * ft, atol=1e-6)


def test_lore_vectors_are_one_row_matrices():
    """A bias or norm weight: SVT of a one-row matrix shrinks its L2 norm by μ."""
    base, ft = T([1.0, 1.0]), T([4.0, 5.0])  # Δ = (3, 4), ‖Δ‖ = 5
    got = fn("lore")(base, [base, ft], mu=0.5, iters=1, alpha=0.8)
    d1 = T([3.0, 4.0]) * (4.5 / 5)  # SVT_.5(Δ)
    want = base + 0.5 * (T([3.0, 4.0]) - d1) + 0.8 * d1
    assert got.shape == (2,) and torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(svd.svt(T([[3.0, 4.0]]), 1.0), T([[3.0, 4.0]]) * 0.8, atol=1e-6)


def test_lore_coordinate_descent_lowers_its_objective():
    """½‖θ_0' + δ_i − θ_i‖² + μ‖δ_i‖_* (the objective whose exact δ-step is SVT at the paper's μ)
    falls along the iterations, from either start."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(6, 4, generator=g)
    models = [base + torch.randn(6, 4, generator=g) for _ in range(3)]

    def objective(iters, init, mu=0.7):
        theta0 = base.clone() if init == "base" else sum(models) / 3
        for _ in range(iters):
            deltas = [svd.svt(m - theta0, mu) for m in models]
            theta0 = sum(m - d for m, d in zip(models, deltas)) / 3
        return sum(0.5 * (theta0 + d - m).pow(2).sum() + mu * torch.linalg.svdvals(d).sum()
                   for m, d in zip(models, deltas))

    for init in ("base", "mean"):
        values = [float(objective(i, init)) for i in (1, 2, 5, 20)]
        assert all(a >= b - 1e-6 for a, b in zip(values, values[1:])) and values[-1] < values[0], init


def test_twin_hand_computed():
    out = fn("twin")(torch.zeros(2, 2), [T([[3.0, 0.0], [0.0, 1.0]])], r=1, alpha=0.5)
    # shared = diag(1.5, .5); rank-1 of diag(1.5, .5) = diag(1.5, 0)
    assert torch.allclose(out, T([[3.0, 0.0], [0.0, 0.5]]))
    assert torch.allclose(fn("twin")(T([0.0]), [T([2.0])], r=1, alpha=0.5), T([2.0]))


def test_twin_two_models_hand_computed():
    """Two models, α = 0.3, r = 1: θ* = 0.3 (θ_1 + θ_2); θ = θ* + ½ Σ_i SVD_1(θ_i − θ*)."""
    m1, m2 = T([[4.0, 0.0], [0.0, 1.0]]), T([[0.0, 0.0], [0.0, 2.0]])
    shared = 0.3 * (m1 + m2)  # diag(1.2, 0.9)
    v1, v2 = m1 - shared, m2 - shared  # diag(2.8, 0.1), diag(-1.2, 1.1)
    r1 = T([[2.8, 0.0], [0.0, 0.0]])
    r2 = T([[-1.2, 0.0], [0.0, 0.0]])  # |−1.2| > 1.1
    assert torch.allclose(v1 - r1, T([[0.0, 0.0], [0.0, 0.1]])) and torch.allclose(v2 - r2, T([[0.0, 0.0], [0.0, 1.1]]))
    out = fn("twin")(torch.zeros(2, 2), [m1, m2], r=1, alpha=0.3)
    assert torch.allclose(out, shared + (r1 + r2) / 2, atol=1e-6)


def test_twin_defaults_are_the_authors_generative_config():
    p = MergeConfig(method="twin", base="b", models=["m"], out="o").resolved_params()
    assert p == {"r": 8, "alpha": 0.3}


def test_aim_hand_computed():
    imp = activation.aim_importance(T([2.0, -4.0]))
    assert torch.equal(imp, T([0.5, 1.0]))
    out = fn("aim")(torch.zeros(2, 2), T([[1.0, 1.0], [2.0, 2.0]]), imp, omega=0.4)
    assert torch.allclose(out, T([[0.7, 0.4], [1.4, 0.8]]))
    assert torch.allclose(fn("aim")(torch.zeros(2), T([1.0, 1.0]), imp, omega=1.0), T([1.0, 1.0]))


def test_sens_coefficients_hand_computed():
    alpha = activation.sens_task_scaling(T([3.0, 4.0]))
    assert torch.allclose(alpha, T([0.6, 0.8]))
    tau = activation.sens_cross_task_scaling(T([[9.0, 1.0], [3.0, 9.0]]))
    assert torch.allclose(tau, T([0.25, 0.75]))
    a = T([[0.6, 0.8], [0.8, 0.6]])
    for temperature in (1.0, 3.0, 0.5):  # layer 0: logits 0.15 (model 0) and 0.6 (model 1), over T
        sigma = activation.sens_coefficients(a, tau, temperature)
        want0 = 1 / (1 + math.exp((0.6 - 0.15) / temperature))
        assert sigma[0, 0].item() == pytest.approx(want0, rel=1e-6), temperature
        assert torch.allclose(sigma.sum(0), torch.ones(2))
    assert torch.allclose(fn("sens")(T([1.0]), [T([3.0])], alpha=0.5, coefficients=[1.2]), T([2.2]))
    # two participants, the base first (δ = 0): θ = θ_0 + α Σ_i c_i δ_i
    got = fn("sens")(T([1.0, 2.0]), [T([1.0, 2.0]), T([3.0, 0.0]), T([0.0, 4.0])], alpha=0.4,
                     coefficients=[0.5, 1.2, 1.3])
    assert torch.allclose(got, T([1.0 + 0.4 * (1.2 * 2.0 + 1.3 * -1.0), 2.0 + 0.4 * (1.2 * -2.0 + 1.3 * 2.0)]))


def test_method_strings_and_aliases():
    assert parse_method("dare_ties").name == "dare+ties"
    assert parse_method("aim+dare+ties") == parse_method("dare+aim+ties")
    assert parse_method("sens_merging").core == "sens"
    assert parse_method("aim").name == "aim+ties" and parse_method("dare").name == "dare+average"
    assert parse_method("dare+ta").name == "dare+task_arithmetic"
    assert parse_method("aim+dare_ties").name == "aim+dare+ties"
    for bad, msg in [("foo", "unknown merge method"), ("ties+dare", "core method"), ("dare+lore", "dare applies"),
                     ("aim+linear", "no base")]:
        with pytest.raises(ValueError, match=msg):
            parse_method(bad)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(method="tiez"), "unknown merge method"),
    (dict(params={"kk": 0.8}), "unknown parameter 'kk'"),
    (dict(params={"k": 1.5}), r"k=1.5 .*out of range"),
    (dict(params={"alpha": -1}), "out of range"),
    (dict(method="dare+ties", params={"p": 1.0}), "out of range"),
    (dict(method="aim+ties", params={"omega": -0.1}, calibration=["x"]), "out of range"),
    (dict(params={"trim": "layer"}), "out of range"),
    (dict(base=None), "needs a base"),
    (dict(method="linear", models=["a", "b"]), "does not use a base"),
    (dict(method="linear", base=None), "exactly 2"),
    (dict(method="lore"), "needs parameter 'mu'"),
    (dict(method="lore", params={"mu": 0.1, "include_base": False}), "at least 2 merged models"),
    (dict(method="lore", params={"mu": 0.1, "init": "zero"}), "out of range"),
    (dict(method="twin", params={"r": 0}), "out of range"),
    (dict(method="aim+ties", params={"framing": "lines"}, calibration=["x"]), "out of range"),
    (dict(method="aim+ties"), "needs calibration"),
    (dict(method="sens", calibration=["a", "b", "c"]), "one per merged model"),
    (dict(dtype="int8"), "dtype"),
    (dict(tokenizer_source="elsewhere"), "tokenizer_source"),
])
def test_config_validation_errors(tmp_path, kwargs, msg):
    fields = dict(method="ties", base="b", models=["m"], out=str(tmp_path / "out"))
    fields.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        MergeConfig(**fields).validate()


def test_config_defaults_are_table7():
    p = MergeConfig(method="dare+ties", base="b", models=["m"], out="o").resolved_params()
    assert p == {"p": 0.3, "k": 0.8, "alpha": 1.0, "trim": "tensor"}
    assert MergeConfig(method="ta", base="b", models=["m"], out="o").resolved_params() == {"alpha": 0.7}
