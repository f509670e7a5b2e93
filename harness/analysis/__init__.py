"""Analysis of stored run directories: wire measurements from pcaps, time series, comparison,
the paper's figures (Fig. 2a-e) and the QKD capacity model (Fig. 2d).

Everything here is pure: it reads files a ``qiot run`` left behind and writes derived files next to
them; nothing imports Mininet or needs root. The run-directory layout is documented in
``docs/results.md``. Modules: ``rundir`` (reading a run), ``pcap`` and ``keyresponse`` (captures),
``wire`` (app records vs captures), ``series`` (per-interval time series), ``stats`` (the one
statistics module: what one sample is, 95% CIs, differences and their tests), ``paper`` (the
paper's figures from experiments/paper.toml), ``analyze`` (writes the derived files), ``compare``,
``plots``, ``capacity``, and ``cli`` (click commands). The package itself imports nothing heavy, so registering the commands stays cheap.
"""
