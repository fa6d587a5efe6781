"""The hand-written inner AdamW equals torch.optim.AdamW step for step, to the bit."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from trainers.inner_opt import AdamW
from trainers.model import build_model


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_torch_adamw_bit_for_bit_over_several_steps(weight_decay):
    torch.manual_seed(0)
    ours, theirs = build_model("tiny", 64, 0), build_model("tiny", 64, 0)
    theirs.load_state_dict(ours.state_dict())
    opt_ours = AdamW(ours.parameters(), lr=3e-3, weight_decay=weight_decay)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=3e-3, weight_decay=weight_decay)
    for step in range(6):
        x = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(step))
        y = torch.roll(x, -1, dims=1)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad(set_to_none=True)
            _, loss = model(x, y)
            loss.backward()
            opt.step()
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            assert torch.equal(a, b), f"{name} differs after step {step + 1}"


def test_a_parameter_without_grad_is_left_alone():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = AdamW([p, q], lr=0.1)
    (p * 2).sum().backward()
    opt.step()
    assert torch.equal(q, torch.ones(3)) and not torch.equal(p, torch.ones(3))


def test_bad_hyper_parameters_are_refused():
    with pytest.raises(ValueError):
        AdamW([torch.nn.Parameter(torch.ones(1))], lr=-1.0)


def test_the_learner_never_imports_torch_dynamo():
    code = ("import sys, torch\nfrom trainers.inner_opt import AdamW\nfrom trainers.model import build_model\n"
            "m = build_model('tiny', 32, 0)\nopt = AdamW(m.parameters(), lr=1e-3)\n"
            "x = torch.randint(0, 256, (2, 32))\n_, loss = m(x, x)\nloss.backward()\nopt.step()\n"
            "import trainers.learner\nprint('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
