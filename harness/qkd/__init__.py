"""Emulated QKD link (Clavis2-like Alice and Bob): physical layer, post-processing, key buffer, UDP key extraction.

Modules: :mod:`config` (settings), :mod:`rate` (rate models and calibration), :mod:`physical`
(detection events), :mod:`cascade` (error correction), :mod:`privacy` (verification and privacy
amplification), :mod:`channel` (authenticated classical channel), :mod:`postproc` (the block
protocol between Alice and Bob), :mod:`keybuffer`, :mod:`clavis` (UDP key extraction),
:mod:`node` (one end as a process), :mod:`link` (both ends in one process), :mod:`cli`.
"""
