"""The selectivity paper's closed forms: the Haar-wavelet S6 construction and explicit MQAR solutions."""
