"""The papers: one package per paper, holding everything paper-specific (README.md with the
paper's setting and glossary, data, model, theory, probes, experiments/).

Importing `ssmlab.papers.<id>` registers that paper's experiments. The core (ops, layers, models,
data, train, runner, report) never imports these packages; the runner finds them by name
(`ssmlab.runner.registry`), and a paper outside this repository joins through the entry point
group `ssmlab.papers` (docs/adding-a-paper.md).
"""
