"""Shared contracts of Tally: the event, the HBase row key, the views and the typed config.

Everything that more than one layer must agree on is defined here, once.
"""

__version__ = "0.1.0"
