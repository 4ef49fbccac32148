"""Scan kernels. Each op has a `reference` (plain loop, the executable spec) and fast paths
with the same signature and autograd:

    from ssmlab.ops import selective_scan      # Mamba-1 / S6 (fused default)
    from ssmlab.ops import linear_recurrence   # h_t = a_t h_{t-1} + b_t
    from ssmlab.ops import delta_t_scan        # Mamba-ΔT (decays input-dependent along N)
    from ssmlab.ops import ssd                 # Mamba-2 scalar decay (chunked)
    from ssmlab.ops import gated_linear_attention   # RetNet / GLA decays (chunked, recurrent)
    from ssmlab.ops import gate_matrix, implied_attention, ssd_implied_attention
    from ssmlab.ops import segsum, causal_mask

See docs/ops.md for the equations, backends, the fused kernel's backward and its vmap rule."""

from ssmlab.ops.attention_lens import gate_matrix, implied_attention, ssd_implied_attention
from ssmlab.ops.delta_t_scan import delta_t_scan
from ssmlab.ops.gated_linear import gated_linear_attention
from ssmlab.ops.linear_recurrence import linear_recurrence
from ssmlab.ops.segsum import causal_mask, segsum
from ssmlab.ops.selective_scan import selective_scan
from ssmlab.ops.ssd import ssd

__all__ = ["causal_mask", "delta_t_scan", "gate_matrix", "gated_linear_attention", "implied_attention", "linear_recurrence", "segsum",
           "selective_scan", "ssd", "ssd_implied_attention"]
