"""Mininet topologies of qiot (the network edge: only this package and harness.network import Mininet).

Importing Mininet's logging module has a process-wide side effect: ``mininet.log`` installs its
``MininetLogger`` as the class of every logger created afterwards, giving each library logger its
own handler and level and hiding its records from the root logger (and from pytest's ``caplog``).
This package imports it first and restores the standard logger class.
"""

import logging

import mininet.log  # noqa: F401  (imported for its side effect, undone below)

logging.setLoggerClass(logging.Logger)
