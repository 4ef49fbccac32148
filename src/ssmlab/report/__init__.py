"""Figures and the HTML / Markdown report with the claims table."""
