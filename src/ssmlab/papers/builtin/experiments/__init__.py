"""Built-in end-to-end experiment exercising config, sweep, store, figure, claim, report.

Importing registers `builtin/mixers` (S6 vs S4D vs linear attention on selective copying).
"""

from ssmlab.papers.builtin.experiments import mixers as _mixers  # noqa: F401 - registers
