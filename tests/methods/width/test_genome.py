"""Width genomes: crossover, the lattice kept by initialisation, mutation and crossover."""
import torch

from prunekit.methods.width.genome import Shape, Space, crossover, snap


def test_crossover_takes_every_gene_from_one_parent():
    shape = Shape(4, 64, 4, 2, 16, 128)
    g = torch.Generator().manual_seed(0)
    space = Space.build(shape, 0.7, [torch.rand(2, 8, generator=g) for _ in range(4)],
                        [torch.rand(128, generator=g) for _ in range(4)], False)
    a = space.mutate(space.initial(0.7), 0, 1.0, 1.0, g)
    b = space.mutate(space.initial(0.7), 0, 1.0, 1.0, g)
    for _ in range(10):
        c = crossover(a, b, g)
        for i in range(4):
            assert torch.equal(c.attn[i], a.attn[i]) or torch.equal(c.attn[i], b.attn[i])
            assert torch.equal(c.mlp[i], a.mlp[i]) or torch.equal(c.mlp[i], b.mlp[i])


def _space(shape, keep=0.7, multiple=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Space.build(shape, keep, [torch.rand(shape.kv_heads, shape.pairs, generator=g) for _ in range(shape.layers)],
                       [torch.rand(shape.intermediate, generator=g) for _ in range(shape.layers)], False,
                       multiple=multiple)


def test_lattice_is_kept_by_initialisation_mutation_and_crossover():
    shape = Shape(6, 64, 4, 2, 32, 256)
    space = _space(shape, multiple=16)
    step = shape.unit_step(16)
    assert step == 8 and all(c % 8 == 0 for cs in space.attn_choices for c in cs)
    assert all(c % 16 == 0 for cs in space.mlp_choices for c in cs) and len(space.mlp_choices[0]) > 3
    g = torch.Generator().manual_seed(0)
    pop = [space.initial(0.7, 0.02)]
    for _ in range(300):
        a = pop[int(torch.randint(len(pop), (), generator=g))]
        b = pop[int(torch.randint(len(pop), (), generator=g))]
        pop.append(space.mutate(a, 0.0, 0.5, 0.5, g) if float(torch.rand((), generator=g)) < 0.7 else crossover(a, b, g))
    for genome in pop:
        w = genome.widths(shape)
        assert all(d % 16 == 0 for d in w["head_dim"]) and all(m % 16 == 0 for m in w["mlp"])


def test_initialisation_steps_off_uniform_when_the_lattice_is_coarse():
    shape = Shape(4, 64, 4, 2, 16, 128)
    space = _space(shape, multiple=32)
    uniform = space.initial(0.7)                      # no band: every block rounded alike
    assert len(set(uniform.widths(shape)["mlp"])) == 1
    kept = lambda g: g.params(shape) / shape.dense_params
    assert abs(kept(uniform) - 0.7) > 0.03
    fitted = space.initial(0.7, 0.03)
    assert abs(kept(fitted) - 0.7) <= 0.03 and all(m % 32 == 0 for m in fitted.widths(shape)["mlp"])
    # the blocks that moved one step toward the target are those gaining the largest share of
    # their MLP scores by it (or, shrinking, losing the smallest)
    u, f = uniform.widths(shape)["mlp"], fitted.widths(shape)["mlp"]
    step = 32 if kept(uniform) < 0.7 else -32
    moved = [b for b in range(4) if f[b] != u[b]]
    assert moved and all(f[b] == u[b] + step for b in moved) and len(moved) < 4
    share = lambda b: space._moved_share(b, u[b] + step, u[b]) * (1 if step > 0 else -1)
    assert min(share(b) for b in moved) >= max(share(c) for c in range(4) if c not in moved)
    assert snap(100, 32, 128) == 96 and snap(127, 32, 128) == 128 and snap(10, 32, 128) == 32
