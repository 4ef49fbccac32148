"""Built-in end-to-end experiment exercising config, sweep, store, figure, claim, report."""
