"""Scan kernels. Each op has a `reference` (plain loop, the executable spec) and fast paths
with the same signature and autograd. Import from the submodules, e.g.
`from ssmlab.ops.selective_scan import selective_scan`."""
