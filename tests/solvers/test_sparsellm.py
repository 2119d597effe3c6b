"""SparseLLM's updates against brute force and direct solves (ReLU, SwiGLU and GeGLU FFNs: GeGLU's
derivative is GELU's own, the z update is the exact minimiser, the s step never raises its
objective), and the safe s step on large activations."""
import torch
import torch.nn.functional as F

from prunekit.solvers import sparsellm as S


def test_z_relu_update_is_the_elementwise_minimum():
    g = torch.Generator().manual_seed(1)
    p, m = torch.randn(200, generator=g) * 2, torch.randn(200, generator=g) * 2
    alpha, gamma = 0.3, 0.7
    z = S.update_z_relu(p, m, alpha, gamma)
    grid = torch.linspace(-8, 8, 160001, dtype=torch.float64).unsqueeze(0)
    p, m, z = p.double().unsqueeze(1), m.double().unsqueeze(1), z.double().unsqueeze(1)
    best = (gamma * (p - F.relu(grid)) ** 2 + alpha * (grid - m) ** 2).min(dim=1).values
    got = (gamma * (p - F.relu(z)) ** 2 + alpha * (z - m) ** 2).squeeze(1)
    assert (got <= best + 1e-6).all()


def test_z_swiglu_update_is_the_elementwise_minimum():
    g = torch.Generator().manual_seed(2)
    p, m, s = (torch.randn(100, generator=g) for _ in range(3))
    z = S.update_z_swiglu(p, m, s, 5.0, 5.0)
    grid = torch.linspace(-10, 10, 200001, dtype=torch.float64).unsqueeze(0)
    a = F.silu(s).double().unsqueeze(1)
    p, m, z = p.double().unsqueeze(1), m.double().unsqueeze(1), z.double().unsqueeze(1)
    best = (5 * (grid - m) ** 2 + 5 * (p - a * grid) ** 2).min(dim=1).values
    got = (5 * (z - m) ** 2 + 5 * (p - a * z) ** 2).squeeze(1)
    assert (got <= best + 1e-5).all() and (got >= best - 1e-3).all()


def test_p_update_equals_direct_least_squares():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(6, 10, generator=g, dtype=torch.float64)       # down: [d=6, f=10]
    Y, A = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 10, generator=g, dtype=torch.float64)
    beta, gamma = 2.0, 0.5
    p = S.update_p(W, Y, A, beta, gamma)
    for t in range(5):   # stack [sqrt(b) W; sqrt(g) I] p = [sqrt(b) y; sqrt(g) a]
        lhs = torch.cat([beta ** 0.5 * W, gamma ** 0.5 * torch.eye(10, dtype=torch.float64)])
        rhs = torch.cat([beta ** 0.5 * Y[t], gamma ** 0.5 * A[t]])
        direct = torch.linalg.lstsq(lhs, rhs.unsqueeze(1)).solution.squeeze(1)
        assert torch.allclose(p[t], direct, atol=1e-10)


def test_ridge_fit_approaches_least_squares():
    g = torch.Generator().manual_seed(4)
    A = torch.randn(300, 8, generator=g, dtype=torch.float64)
    W_true = torch.randn(5, 8, generator=g, dtype=torch.float64)
    B = A @ W_true.T
    assert torch.allclose(S.ridge_fit(A, B, 1e-12), W_true, atol=1e-8)


def test_s_update_lowers_its_objective():
    g = torch.Generator().manual_seed(5)
    s, m, z, p = (torch.randn(2500, 7, generator=g) for _ in range(4))
    obj = lambda s: 5 * ((s - m) ** 2).sum() + 5 * ((p - F.silu(s) * z) ** 2).sum()
    assert obj(S.update_s_swiglu(s, m, z, p, 5.0, 5.0)) < obj(s)


def test_reference_s_step_diverges_on_large_activations_and_the_safe_step_does_not():
    g = torch.Generator().manual_seed(6)
    s, m = torch.randn(3000, 4, generator=g), torch.randn(3000, 4, generator=g)
    z = torch.randn(3000, 4, generator=g) * 100            # massive activations
    p = F.silu(m) * z + torch.randn(3000, 4, generator=g)
    per_elem = lambda s: S.s_objective(s, m, z, p, 5.0, 5.0)
    ref = S.update_s_swiglu(s, m, z, p, 5.0, 5.0, safeguard=False)
    safe = S.update_s_swiglu(s, m, z, p, 5.0, 5.0, safeguard=True)
    assert per_elem(ref).sum() > 10 * per_elem(s).sum()     # the fixed step overshoots
    assert (per_elem(safe) <= per_elem(s) + 1e-3).all()      # never worse, element by element
    assert per_elem(safe).sum() < per_elem(s).sum()
    # on ordinary activations the two steps agree (bar the rare element where a plain step would go uphill)
    z1 = torch.randn(3000, 4, generator=g) * 0.5
    a = S.update_s_swiglu(s, m, z1, p * 0.005, 5.0, 5.0, safeguard=False)
    b = S.update_s_swiglu(s, m, z1, p * 0.005, 5.0, 5.0, safeguard=True)
    assert ((a - b).abs() < 1e-7).float().mean() > 0.999 and (a - b).abs().max() < 1e-3


def test_gelu_tanh_gradient_is_autograds():
    s = torch.linspace(-6, 6, 401, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.gelu(s, approximate="tanh").sum(), s)
    assert torch.allclose(S.gelu_tanh_grad(s.detach()), g, atol=1e-12)
    assert torch.equal(S.gelu_tanh(s.detach()), F.gelu(s.detach(), approximate="tanh"))


def test_geglu_z_update_is_the_exact_minimiser():
    g = torch.Generator().manual_seed(0)
    p, m, s = (torch.randn(50, 7, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    alpha, gamma = 5.0, 2.0
    z = S.update_z_swiglu(p, m, s, alpha, gamma, S.gelu_tanh)
    cost = lambda z: alpha * (z - m) ** 2 + gamma * (p - S.gelu_tanh(s) * z) ** 2
    for eps in (1e-3, -1e-3, 0.1, -0.1):
        assert (cost(z) <= cost(z + eps) + 1e-12).all()
    # with SiLU's output it would be another point: the activation is really used
    assert not torch.allclose(z, S.update_z_swiglu(p, m, s, alpha, gamma))


def test_geglu_s_step_lowers_the_objective_and_never_raises_it():
    g = torch.Generator().manual_seed(1)
    s, m, z, p = (torch.randn(300, 16, generator=g) * 3 for _ in range(4))
    before = S.s_objective(s, m, z, p, 5.0, 5.0, S.gelu_tanh)
    new = S.update_s_swiglu(s, m, z, p, 5.0, 5.0, act=S.gelu_tanh, act_grad=S.gelu_tanh_grad)
    after = S.s_objective(new, m, z, p, 5.0, 5.0, S.gelu_tanh)
    assert (after <= before).all() and after.sum() < 0.99 * before.sum()
