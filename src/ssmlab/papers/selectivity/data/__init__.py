"""The selectivity paper's tasks: piecewise functions (Haar), KEEP n-TH, MQAR, induction heads."""
