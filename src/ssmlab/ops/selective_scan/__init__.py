"""Selective scan (Mamba S6): reference loop and fast CPU paths with one signature."""
