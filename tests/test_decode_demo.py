"""The decoding demo (experiments/decoding/char_lm.py): its model's step logits equal the
full forward's at every position, and generation by steps and by recomputing the prefix
give the same text.  Small and untrained, so it runs in a second."""

from __future__ import annotations

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo():
    path = os.path.join(ROOT, "experiments", "decoding", "char_lm.py")
    spec = importlib.util.spec_from_file_location("char_lm_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_logits_equal_forward_and_generation_agrees():
    demo = _demo()
    torch.manual_seed(0)
    model = demo.CharLM(d_model=16, n_layers=2, l_max=64, kernel_dim=4).eval()
    tokens = torch.randint(0, 256, (2, 90), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = model(tokens)                                           # (B, L, 256)
        logits, states = model.prefill(tokens[:, :17])
        stepped = [logits]
        for t in range(17, 90):
            logit, states = model.step(tokens[:, t], states)
            stepped.append(logit[:, None])
    stepped = torch.cat(stepped, 1)
    scale = full.abs().max()
    # float32: both within rounding of the exact model (2e-7 relative measured)
    assert (stepped - full).abs().max() <= 1e-5 * scale
    prompt = tokens[:1, :20]
    uniforms = torch.rand(25, 1, 1, generator=torch.Generator().manual_seed(2))
    by_step, seen = demo.generate_step(model, prompt, 25, uniforms, 0.8)
    by_recompute = demo.generate_recompute(model, prompt, 25, uniforms, 0.8)
    assert torch.equal(by_step, by_recompute)
    with torch.inference_mode():
        reference = model(torch.cat([prompt, by_step], 1))[:, 19:-1]
    assert (torch.stack(seen, 1) - reference).abs().max() <= 1e-5 * reference.abs().max()
