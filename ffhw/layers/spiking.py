"""Spiking FF layer: Linear -> snnTorch Leaky (LIF) neurons over T time steps.

- Input: analog [S, N, D] (the encoded image, or rates from a previous layer) is encoded over T steps:
  `direct` feeds the same (normalised) input every step, so its current is computed once; `rate` draws
  Bernoulli spikes with probability = input intensity clamped to [0, 1] (seeded by the trainer's per-epoch
  RNG, or an explicit generator). Spike trains [S, N, T, D] from a previous spiking layer pass straight in.
- The Linear runs once over all T*N rows (one matmul), not once per step; only the membrane update loops.
- Membrane state is explicit (`init_hidden=False`): no hidden state is kept between calls.
- Goodness reads the firing rates [S, N, U] (mean spikes over T): thresholds are in rate units, so with
  sum goodness and theta per unit the threshold is theta * width in squared-rate units.
- The next layer receives the spike trains (default) or the rates. Spikes are never normalised (they
  would stop being binary); the input normalisation option applies to analog inputs only.
- Surrogate-gradient BPTT runs through the T steps inside the layer; inputs are detached by the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from ..config import AT_LEAST_ONE, POSITIVE, Range

from ..errors import ExportError
from .base import FFLayer, LayerOutput, NirPart, register
from .ops import affine, affine_label_sets, affine_labels, init_std, linear_module, normalize, seed_normal

# Two summation orders (torch's kernels, onnxruntime's) can leave a membrane within float rounding of the
# threshold on either side; the flipped spike's reset then carries into later steps of that unit. A wrong
# weight, threshold or reset flips far more than 1 entry in 10,000.
SPIKE_PARITY_TOLERANCE = 1e-4


@dataclass
class SpikingOptions:
    steps: int = 8  # T
    beta: float = 0.5  # membrane decay per step
    threshold: float = 1.0  # firing threshold of the membrane
    reset: str = "subtract"  # subtract | zero
    surrogate: str = "fast_sigmoid"  # fast_sigmoid | atan
    slope: float = 2.0  # surrogate sharpness (fast_sigmoid slope, atan alpha); broad works best for FF (measured)
    encoding: str = "direct"  # direct | rate: how an analog input becomes T steps
    next_input: str = "spikes"  # spikes | rates: what the next layer receives
    # Data-dependent init: before training, scale each seed's weights so that the layer fires at this mean
    # rate on the first training images (0: off). Without it a spike-fed layer's current shrinks with its
    # input rate, so deep layers start silent, and with goodness on rates a silent layer gets no gradient.
    init_rate: float = 0.0
    # Conv blocks only: where the 2x2 pool acts. current: average-pool the input current, neurons at the pooled
    # size; spikes: max-pool each step's spikes (a logical OR: it saturates and loses the count; measured
    # worse at longer training, docs/layer-types.md).
    conv_pool: str = "current"
    RANGES: ClassVar[dict] = {"steps": AT_LEAST_ONE, "beta": Range(0, 1), "threshold": POSITIVE, "slope": POSITIVE,
                              "init_rate": Range(0, 1, high_open=True)}

    def __post_init__(self):
        for name, value, allowed in (("reset", self.reset, ("subtract", "zero")),
                                     ("surrogate", self.surrogate, ("fast_sigmoid", "atan")),
                                     ("encoding", self.encoding, ("direct", "rate")),
                                     ("next_input", self.next_input, ("spikes", "rates")),
                                     ("conv_pool", self.conv_pool, ("spikes", "current"))):
            if value not in allowed:
                raise ValueError(f"{name} = {value!r} is not one of {', '.join(allowed)}")
        if self.steps < 1:
            raise ValueError(f"steps = {self.steps} must be at least 1")


def rate_encode(x: torch.Tensor, steps: int, generator: torch.Generator | list[torch.Generator] | None = None,
                time_dim: int = -2) -> torch.Tensor:
    """Bernoulli spike trains of intensities clamped to [0, 1], with a new time axis of length T at `time_dim`:
    [..., D] -> [..., T, D] by default; images [S, N, C, H, W] with time_dim=2 -> [S, N, T, C, H, W].
    A list of generators is one per seed (the leading axis), so each seed draws its own spikes."""
    p = x.clamp(0.0, 1.0).unsqueeze(time_dim)
    shape = list(p.shape)
    shape[time_dim] = steps
    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.bernoulli(p[s].expand(shape[1:]), generator=g) for s, g in enumerate(generator)])
    return torch.bernoulli(p.expand(shape), generator=generator)


def make_lif(options: "SpikingOptions") -> snn.Leaky:
    grad = (surrogate.fast_sigmoid(slope=options.slope) if options.surrogate == "fast_sigmoid"
            else surrogate.atan(alpha=options.slope))
    return snn.Leaky(beta=options.beta, threshold=options.threshold, spike_grad=grad,
                     reset_mechanism=options.reset, init_hidden=False)


def nir_neurons(o: SpikingOptions, units: int | tuple[int, ...], dt: float) -> tuple[dict, list, str, str]:
    """The LIF neurons as NIR nodes (nodes, edges, entry, exit), exact under forward Euler at step dt:
    tau = dt / (1 - beta) and r = tau / dt give v <- beta v + I. NIR's LIF resets to v_reset, which is
    reset = "zero". NIR has no subtractive reset, so reset = "subtract" is written as its definition: a leaky
    integrator (LI), a Threshold, and a recurrent Scale that feeds -threshold x the previous step's spikes
    back into the integrator (mem = beta mem + I - threshold spike[t-1])."""
    import nir
    import numpy as np
    if o.beta >= 1:
        raise ExportError("beta = 1 (no leak) has no LIF time constant; NIR export needs beta < 1")
    ones = np.ones(units)
    tau = ones * dt / (1 - o.beta)
    if o.reset == "zero":
        lif = nir.LIF(tau=tau, r=tau / dt, v_leak=0 * ones, v_threshold=o.threshold * ones, v_reset=0 * ones)
        return {"lif": lif}, [], "lif", "lif"
    nodes = {"li": nir.LI(tau=tau, r=tau / dt, v_leak=0 * ones), "spike": nir.Threshold(threshold=o.threshold * ones),
             "reset": nir.Scale(scale=-o.threshold * ones)}
    return nodes, [("li", "spike"), ("spike", "reset"), ("reset", "li")], "li", "spike"


class Normalize(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        return normalize(x, self.kind)


class SpikingExport(nn.Module):
    """One seed's spiking layer with the time loop unrolled for T steps and explicit membrane state.

    The LIF update is snnTorch's (reset from the previous membrane): subtract: mem = beta*mem + I - reset*thr;
    zero: mem = beta*(1 - reset)*mem + I; spike = mem > thr. The projection (Linear or Conv) runs once over
    all T*N rows; conv blocks max-pool the spikes of every step.
    """

    def __init__(self, norm: nn.Module, project: nn.Module, opts: SpikingOptions, analog_input: bool,
                 pool: nn.Module | None = None):
        super().__init__()
        self.norm, self.project, self.pool = norm, project, pool or nn.Identity()
        self.opts, self.analog_input = opts, analog_input

    def forward(self, x):
        o = self.opts
        if self.analog_input:  # direct encoding: the same current every step
            currents = [self.project(self.norm(x))] * o.steps
        else:  # spike trains [N, T, ...]
            n = x.shape[0]
            current = self.project(x.reshape(n * o.steps, *x.shape[2:]))
            current = current.reshape(n, o.steps, *current.shape[1:])
            currents = [current[:, t] for t in range(o.steps)]
        mem = torch.zeros_like(currents[0])
        spikes = []
        for cur in currents:
            reset = (mem > o.threshold).float()
            if o.reset == "subtract":
                mem = o.beta * mem + cur - reset * o.threshold
            else:
                mem = o.beta * ((1 - reset) * mem) + cur
            spikes.append(self.pool((mem > o.threshold).float()))
        spikes = torch.stack(spikes, dim=1)
        rates = spikes.mean(1)
        return rates, (spikes if o.next_input == "spikes" else rates)


@register("spiking")
class SpikingLayer(FFLayer):
    # The time loop's neuron updates fuse when compiled, so compiling pays at every size measured
    # (benchmarks/results/train_bench.json, section compile).
    compile_max_values = float("inf")
    Options = SpikingOptions

    @classmethod
    def describe(cls, options: SpikingOptions) -> dict:
        return {"weight_bits": 32, "act_bits": 1, "steps": options.steps, "label": f"spikes, T={options.steps}"}

    @classmethod
    def values_per_unit(cls, options: SpikingOptions) -> int:
        return options.steps  # membrane and spikes per time step

    def __init__(self, index, in_features, out_features, seeds, model, options: SpikingOptions, generators):
        super().__init__(index, in_features, out_features, seeds, model, options, generators)
        self.weight = nn.Parameter(seed_normal((in_features, out_features), init_std(out_features), generators))
        self.bias = nn.Parameter(torch.zeros(seeds, 1, out_features))
        self.lif = make_lif(options)

    @property
    def steps(self) -> int:
        return self.options.steps

    def needs_calibration(self) -> bool:
        return self.options.init_rate > 0

    @torch.no_grad()
    def calibrate(self, run, inp: torch.Tensor) -> None:
        """Scale each seed's weights (geometric bisection of one gain per seed) until its mean firing rate on
        the calibration inputs is `init_rate`. The scale is part of the initial weights: nothing to fold."""
        target = self.options.init_rate
        if target <= 0:
            return
        low = torch.full((self.seeds,), 1 / 256, device=self.weight.device)
        high = torch.full_like(low, 256.0)
        original = self.weight.detach().clone()
        shape = (-1, *[1] * (original.dim() - 1))  # one gain per seed, FC [S, D, U] or conv [S, O, C, 3, 3]
        for _ in range(24):  # the rate grows with the gain; 24 halvings of log2(65536) = 16 octaves
            gain = (low * high).sqrt()
            self.weight.copy_(original * gain.view(shape))
            rate = run(inp).act.flatten(1).mean(1)
            low, high = torch.where(rate < target, gain, low), torch.where(rate < target, high, gain)
        self.weight.copy_(original * (low * high).sqrt().view(shape))

    def integrate(self, current: torch.Tensor, constant: bool) -> LayerOutput:
        """Run the LIF neurons on input currents [S, N, T, ...] (or [S, N, ...], constant over T)."""
        mem = torch.zeros_like(current if constant else current[:, :, 0])
        spikes = []
        for t in range(self.steps):
            spk, mem = self.lif(current if constant else current[:, :, t], mem)
            spikes.append(spk)
        spikes = self.pool_spikes(torch.stack(spikes, dim=2))  # [S, N, T, ...]
        rates = spikes.mean(2)
        return LayerOutput(act=rates, out=spikes if self.options.next_input == "spikes" else rates)

    def pool_spikes(self, spikes: torch.Tensor) -> torch.Tensor:
        return spikes

    def forward(self, x: torch.Tensor) -> LayerOutput:
        s, n = x.shape[:2]
        if x.dim() == 3 and self.options.encoding == "direct":
            return self.integrate(affine(x, self.weight, self.bias, self.norm), constant=True)
        if x.dim() == 3:  # rate-encode an analog input (intensities, not normalised)
            x = rate_encode(x, self.steps, self.noise_generators)
        # One matmul over all T*N rows of the spike trains.
        current = torch.baddbmm(self.bias, x.reshape(s, -1, x.shape[-1]), self.weight)
        return self.integrate(current.view(s, n, self.steps, -1), constant=False)

    def forward_labels(self, base, patterns, neutral=None):
        if self.options.encoding != "direct":
            return super().forward_labels(base, patterns, neutral)
        # the current is affine in the input: split image and label
        current, neutral_current = affine_labels(base, patterns, self.weight, self.bias, self.norm, neutral)
        return (self.integrate(current, constant=True),
                self.integrate(neutral_current, constant=True) if neutral_current is not None else None)

    def forward_label_sets(self, base, patterns, labels, frozen_labels=None):
        if self.options.encoding != "direct":
            return super().forward_label_sets(base, patterns, labels, frozen_labels)
        current, frozen_current = affine_label_sets(base, patterns, labels, self.weight, self.bias, self.norm,
                                                    frozen_labels)
        frozen = None
        if frozen_current is not None:
            with torch.no_grad():
                frozen = self.integrate(frozen_current, constant=True)
        return self.integrate(current, constant=True), frozen

    def hardware_stats(self, out: LayerOutput) -> dict[str, torch.Tensor]:
        rate = out.act.flatten(1).mean(-1)  # spikes per neuron per step
        return {"sparsity": 1.0 - rate, "spike_rate": rate, "unit_activity": self.unit_activity(out)}

    # ---- export ----
    def export_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_label_input():
            return x
        return rate_encode(x, self.steps, torch.Generator().manual_seed(0))  # seeded: parity inputs reproduce

    def analog_input(self) -> bool:
        """Whether this layer receives an analog input that it encodes directly."""
        first_or_rates = self.index == 0 or self.options.next_input == "rates"
        return first_or_rates and self.options.encoding == "direct"

    def op_counts(self, input_density: float) -> dict:
        """Analog input (direct encoding): one dense MAC pass, the current is reused for T steps. Spike
        input: synaptic operations (accumulates) = input spikes x fan-out, from the measured spike rate."""
        t, n_in, n_out = self.steps, self.in_features, self.out_features
        updates = t * n_out  # membrane: beta * mem + current, once per neuron per step
        if self.analog_input():
            macs = n_in * n_out
            return {"macs": macs, "mac_kind": "fp32_mac", "nonzero_macs": macs * input_density, "acs": 0.0,
                    "neuron_updates": updates, "bops": None}
        return {"macs": 0, "mac_kind": "fp32_mac", "nonzero_macs": 0.0, "acs": input_density * n_in * t * n_out,
                "neuron_updates": updates, "bops": None}

    def export_module(self, seed: int) -> nn.Module:
        return SpikingExport(Normalize(self.norm), linear_module(self.weight[seed].detach(), self.bias[seed].detach()),
                             self.options, self.analog_input())

    def nir_encoding(self) -> str:
        if self.analog_input():
            return "repeat"
        return "bernoulli" if self.index == 0 else "spikes"  # deeper layers fed rates have no NIR form

    def check_nir(self) -> None:
        if self.index > 0 and self.options.next_input == "rates":
            raise ExportError("NIR graphs pass spikes between layers; this network passes firing rates "
                              "(model.layer.next_input = rates): train with next_input = spikes to export NIR")

    def export_nir(self, seed: int, dt: float) -> NirPart:
        import nir
        self.check_nir()
        nodes, edges, entry, exit_ = nir_neurons(self.options, self.out_features, dt)
        affine_node = nir.Affine(weight=self.weight[seed].detach().t().contiguous().numpy(),
                                 bias=self.bias[seed].detach().reshape(-1).numpy())
        return NirPart({"affine": affine_node, **nodes}, [("affine", entry), *edges], "affine", exit_,
                       (self.in_features,), (self.out_features,), self.nir_encoding(),
                       self.norm if self.analog_input() else "none")

    def nir_input(self, x: torch.Tensor) -> torch.Tensor:
        self.check_nir()
        if x.dim() == 3:  # spike trains [N, T, D]
            return x
        if self.analog_input():  # direct encoding: the normalised input, every step
            return normalize(x, self.norm).unsqueeze(1).expand(-1, self.steps, -1).contiguous()
        return self.export_input(x)

    def takes_label_input(self) -> bool:
        # Rate encoding samples spikes: the caller encodes (seeded Bernoulli of the label-embedded image).
        return self.options.encoding == "direct"

    def export_meta(self) -> dict:
        o = self.options
        return {"steps": o.steps, "beta": o.beta, "threshold": o.threshold, "reset": o.reset,
                "encoding": o.encoding, "next_input": o.next_input,
                "input": "analog, repeated over T steps" if self.analog_input() else "spike trains [N, T, D]"}

    def parity(self, reference: torch.Tensor, exported: torch.Tensor, seed: int = 0) -> dict:
        """Spike trains must match: the share of (sample, step, unit) entries that differ, at most
        SPIKE_PARITY_TOLERANCE."""
        differ = (reference != exported).float().mean().item()
        return {"metric": "share of differing spikes", "value": differ, "tolerance": SPIKE_PARITY_TOLERANCE,
                "ok": differ <= SPIKE_PARITY_TOLERANCE}
