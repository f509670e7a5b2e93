"""``qiot qkd``: run the emulated QKD link on its own, and ``qiot qkd calibrate``: show the calibration fit.

The lead registers the group with ``cli.add_command(qkd)``. The standalone run starts Alice and
Bob (the same :class:`~harness.qkd.node.QkdNode` components as the node processes) in one process
over a loopback TCP socket, free-running unless ``--time-scale`` is given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from harness.clock import EmulatedClock
from harness.links import FibreSettings
from harness.qkd.config import Calibration, QkdConfigError, QkdLinkConfig
from harness.qkd.link import run_link
from harness.qkd.rate import (detection_rate, fit_physical, fit_two_constant, model_qber,
                              secret_key_rate)
from harness.scenario import DEFAULT_SCENARIO


def _fibre_loss_max() -> float:
    """The scenarios' bound on ``[fibre] loss_db`` (defined once, in :class:`FibreSettings`)."""
    return next(f for f in dataclasses.fields(FibreSettings) if f.name == "loss_db").metadata["maximum"]


def _config(scenario: str, loss_db: float | None, protocol: str | None, eve: float | None,
            model: str | None) -> tuple[QkdLinkConfig, int]:
    """Link config of a scenario with command-line overrides, and the scenario's ``[run] seed``;
    errors as ClickException."""
    from harness.scenario import ScenarioError, load

    try:
        try:
            loaded = load(scenario)
        except ScenarioError as exc:
            raise click.ClickException(str(exc)) from None
        config = QkdLinkConfig.from_scenario(loaded.section("qkd"), loaded.section("fibre"))
        changes = {}
        if loss_db is not None:
            changes["loss_db"] = loss_db
        if protocol is not None:
            changes["protocol"] = protocol
        if eve is not None:
            changes["eve_intercept_fraction"] = eve
        if model is not None:
            changes["calibration"] = Calibration(**{**config.calibration.__dict__, "model": model})
        config = config.replace(**changes)
        secret_key_rate(config.loss_db, config.calibration, config)  # a calibration that gives no rate fails here
        return config, loaded.settings.run.seed
    except QkdConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _writable_out(out: Path | None) -> None:
    """Create ``--out`` (and the per-node folders) now, so a bad path is one error line, not a traceback."""
    if out is None:
        return
    try:
        for sub in ("alice", "bob"):
            (out / sub).mkdir(parents=True, exist_ok=True)
            probe = out / sub / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as exc:
        raise click.ClickException(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


@click.group(invoke_without_command=True)
@click.option("--loss-db", type=click.FloatRange(0, _fibre_loss_max()),
              help="quantum-channel loss, dB; overrides [fibre] loss_db of the scenario")
@click.option("--seconds", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="emulated seconds to run")
@click.option("--scenario", default=DEFAULT_SCENARIO, show_default=True,
              help="scenario name or .toml path: its [fibre] loss and [qkd] settings")
@click.option("--protocol", type=click.Choice(["BB84", "SARG04"]), help="overrides [qkd] protocol of the scenario")
@click.option("--eve", type=click.FloatRange(0, 1),
              help="intercept-resend fraction; overrides [qkd] eve_intercept_fraction of the scenario")
@click.option("--model", type=click.Choice(["two_constant", "physical"]),
              help="calibration model; overrides [qkd.calibration] model of the scenario")
@click.option("--seed", type=int, default=None, help="overrides [run] seed of the scenario")
@click.option("--time-scale", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="emulated seconds per wall second (0: as fast as possible; the scenario's [run] "
                   "time_scale is not used)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="write blocks.csv/buffer.csv here")
@click.pass_context
def qkd(ctx: click.Context, loss_db, seconds, scenario, protocol, eve, model, seed, time_scale, out) -> None:
    """Run the emulated QKD link (Alice and Bob) without the IoT part; print rate, QBER, buffer fill."""
    if ctx.invoked_subcommand is not None:
        return
    config, scenario_seed = _config(scenario, loss_db, protocol, eve, model)
    seed = scenario_seed if seed is None else seed
    _writable_out(out)
    clock = EmulatedClock.starting_now(time_scale) if time_scale > 0 else None
    click.echo(f"QKD link: {config.protocol}, loss {config.loss_db:g} dB, calibration {config.calibration.model}, "
               f"Eve {config.eve_intercept_fraction:g}, {seconds:g} emulated s, seed {seed}")
    result = run_link(config, seconds, seed, out, clock)
    blocks = result.blocks
    buffer = result.alice.buffer
    capacity = config.buffer_keys
    click.echo(f"{'t_s':>7} {'secret_bps':>10} {'qber_est':>8} {'keys':>6} {'fill_%':>6}")
    step = max(1, len(blocks) // 10)
    final_bits = 0
    for i, stats in enumerate(blocks):
        final_bits += stats.final_bits
        if (i + 1) % step == 0 or i == len(blocks) - 1:
            click.echo(f"{stats.t_end:7.0f} {final_bits / stats.t_end:10.1f} {stats.qber_est:8.4f} "
                       f"{stats.keys_stored:6d} {100.0 * stats.keys_stored / capacity:6.1f}")
    aborted = sum(1 for s in blocks if s.aborted)
    predicted = secret_key_rate(config.loss_db, config.calibration, config)
    click.echo(f"blocks {len(blocks)} (aborted {aborted}); detections {sum(s.raw for s in blocks) / seconds:.0f}/s, "
               f"sifted {result.sifted_rate_bps:.0f} bit/s")
    click.echo(f"secret key rate {result.secret_rate_bps:.1f} bit/s (model without Eve {predicted:.1f} bit/s); "
               f"QBER {result.qber_est:.4f} estimated, {result.qber:.4f} corrected (model "
               f"{model_qber(config.loss_db, config):.4f}); f_EC {result.f_ec:.3f}")
    click.echo(f"keys produced {buffer.produced}, evicted {buffer.evicted}; buffer {buffer.stored}/{capacity} keys "
               f"({100.0 * buffer.stored / capacity:.1f}%); Alice and Bob identical: "
               f"{all(buffer.get(i) == result.bob.buffer.get(i) for i in buffer.ids())}")
    if aborted:
        reasons = sorted({s.aborted for s in blocks if s.aborted})
        click.echo(f"aborted blocks, e.g.: {reasons[0]}")


@qkd.command()
@click.option("--scenario", default=DEFAULT_SCENARIO, show_default=True,
              help="scenario name or .toml path: its [qkd] settings and [qkd.calibration] targets")
@click.option("--emulate", "emulate_s", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="also run the emulated link this many seconds at each target loss (0: skip)")
@click.option("--model", type=click.Choice(["two_constant", "physical"]),
              help="calibration model to emulate; overrides [qkd.calibration] model of the scenario")
@click.option("--seed", type=int, default=None, help="overrides [run] seed of the scenario")
def calibrate(scenario, emulate_s, model, seed) -> None:
    """Fit the rate models to the calibration targets and print fits and residuals."""
    config, scenario_seed = _config(scenario, None, None, None, model)
    seed = scenario_seed if seed is None else seed
    cal = config.calibration
    losses, targets = cal.target_loss_db, cal.target_rate_bps
    click.echo("targets (paper, Mavromatis et al. 2018): " +
               ", ".join(f"{r:g} bit/s @ {L:g} dB" for L, r in zip(losses, targets)))
    fits = [fit_two_constant(losses, targets)]
    try:
        fits.append(fit_physical(losses, targets, config))
    except ValueError as exc:
        click.echo(f"physical fit: {exc}")
    for fit in fits:
        params = ", ".join(f"{k} = {v:.4g}" for k, v in fit.params.items())
        click.echo(f"fit {fit.model}: {params}")
        for L, t, f, r in zip(fit.loss_db, fit.target_bps, fit.fitted_bps, fit.residuals_pct):
            click.echo(f"    {L:5.1f} dB  target {t:8.1f}  fitted {f:8.1f}  residual {r:+6.2f}%")
    click.echo(f"configured calibration ({cal.model}): " +
               (f"a_s = {cal.a_s:.4g}, b_s = {cal.b_s:.4g}" if cal.model == "two_constant" else
                f"duty_cycle = {cal.duty_cycle:.4g}, dead_time_eff_s = {cal.dead_time_eff_s:.4g}"))
    click.echo(f"{'loss_dB':>7} {'det/s':>8} {'QBER':>7} {'model_bps':>9}")
    for L in sorted(set(losses) | {0.0, 10.0, 14.0}):
        cfg = config.replace(loss_db=L)
        click.echo(f"{L:7.1f} {detection_rate(L, cfg):8.0f} {model_qber(L, cfg):7.4f} "
                   f"{secret_key_rate(L, cal, cfg):9.1f}")
    if emulate_s > 0:
        click.echo(f"emulated ({emulate_s:g} s per point, seed {seed}):")
        for L, target in zip(losses, targets):
            run = run_link(config.replace(loss_db=L), emulate_s, seed)
            click.echo(f"    {L:5.1f} dB  emulated {run.secret_rate_bps:8.1f} bit/s  residual "
                       f"{100.0 * (run.secret_rate_bps - target) / target:+6.2f}%  QBER {run.qber:.4f}  "
                       f"f_EC {run.f_ec:.3f}")
