"""Real Mamba / Mamba-2 checkpoints in ssmlab: load (transformers directories, mamba_ssm state
dicts), export (transformers directories) and probe the papers' quantities on them.

Submodules (import from them; this file re-exports nothing):
    deps        lazy imports of the optional `hf` extra (safetensors, tokenizers, transformers)
    spec        MambaSpec: the architecture numbers of a checkpoint, parsed from its config
    checkpoint  load_checkpoint / save_transformers: tensors <-> ssmlab's CausalLM
    lens        vectorised quantities: channel-mean implied attention, memory factors, ρ_A
    probe       probe(): every quantity per layer for one input
    results     ProbeResult / LayerProbe: the probe's numbers as plain data, JSON-ready
    report      the probe's HTML page, figures and JSON file
    cli         probe_command(), the work behind `ssmlab probe`
    testing     test support: tiny specs, hidden states, keep_float64 (transformers' casts)

docs/interop.md has the definitions, the measured equivalence errors and the probe's timings.
"""
