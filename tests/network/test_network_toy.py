"""The toy network and time embeddings: protocol shapes, s-independence at init, frequencies."""

import torch

from soundvcm.network.embeddings import TimeEmbedder, sinusoidal_embedding, sinusoidal_frequencies


def test_frequencies_follow_mmaudio_parameterisation():
    f = sinusoidal_frequencies(256, 1e4)
    assert f[0] == 1.0 and abs(f[-1].item() - 10 ** (-4 * 254 / 256)) < 1e-9  # [1.07e-4, 1] for F=256 (B.2)
    f1 = sinusoidal_frequencies(256, 1.0)  # MMAudio-v2's max_period = 1 scales every frequency up 1e4x
    torch.testing.assert_close(f1, f * 1e4)
    emb = sinusoidal_embedding(torch.tensor([0.0, 0.5]), f)
    assert torch.equal(emb[0, :128], torch.ones(128)) and torch.equal(emb[0, 128:], torch.zeros(128))  # cos first


def test_offset_embedder_starts_at_zero():
    emb = TimeEmbedder(16, 8, zero_output=True)
    assert torch.equal(emb(torch.rand(5)), torch.zeros(5, 16))


def test_toy_net_shapes_and_s_independence_at_init(tiny_net):
    labels = torch.tensor([0, 1, 2, 1])
    prepared = tiny_net.prepare(tiny_net.one_hot(labels))
    x, t = torch.randn(4, 3), torch.rand(4)
    u1 = tiny_net(x, t, t, prepared)
    u2 = tiny_net(x, t, t * 0.3, prepared)
    assert u1.shape == x.shape
    torch.testing.assert_close(u1, u2)  # a fresh network ignores s (zero-initialised offset embedder)
    null = tiny_net.null_conditions(4)
    assert null["class"].shape == (4, 3) and null["class"].requires_grad  # learned null condition


def test_null_condition_receives_gradient(tiny_net):
    from soundvcm.conditions import ConditionDropout
    from soundvcm.objectives import Batch, FlowMatching, FlowMatchingConfig

    objective = FlowMatching(FlowMatchingConfig(dropout=ConditionDropout(row_prob=0.5)))
    opt = torch.optim.Adam(tiny_net.parameters(), lr=1e-2)
    for _ in range(3):  # zero-initialised adaLN layers block the condition path at init
        labels = torch.randint(0, 3, (64,))
        out = objective.loss(tiny_net, Batch(torch.randn(64, 3), tiny_net.one_hot(labels)), 0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert tiny_net.null_class.grad is not None and tiny_net.null_class.grad.abs().sum() > 0
