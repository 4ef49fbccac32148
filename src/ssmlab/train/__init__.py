"""One trainer for every experiment (GD / SGD / Adam; hinge / BCE / CE / MSE), seed ensembles."""
