"""Built-in end-to-end experiments exercising config, sweep, store, figures, claims and report.

Importing this package registers its experiments; README.md beside it states the setting."""

from ssmlab.papers.builtin import experiments  # noqa: F401 - registers
