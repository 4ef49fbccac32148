"""Scan kernels. Each op has a `reference` (plain loop, the executable spec) and fast paths
with the same signature and autograd. Import from the submodules:

    from ssmlab.ops.selective_scan import selective_scan        # Mamba-1 / S6 (fused default)
    from ssmlab.ops.linear_recurrence import linear_recurrence  # h_t = a_t h_{t-1} + b_t
    from ssmlab.ops.ssd import ssd                              # Mamba-2 scalar decay (chunked)
    from ssmlab.ops.attention_lens import gate_matrix, implied_attention, ssd_implied_attention
    from ssmlab.ops.segsum import segsum, causal_mask

See docs/ops.md for the equations, backends, the fused kernel's backward and its vmap rule."""
